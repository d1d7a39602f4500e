"""The ASGI door of the management API: Starlette routing around ``KeyAPI``.

This module only translates: a Starlette request into an ``ApiRequest``,
the flow's effects into awaits, and the flow's answer into a response.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keystile.management._core import KeyAPI
from keystile.management._effects import (
    Authenticate,
    Effect,
    ReadBody,
    run_async,
)
from keystile.management._input import (
    PATH_NOT_FOUND,
    ApiRequest,
    api_paths,
    bad_request,
    body_too_large,
)
from keystile.pipeline import Refusal

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = ["AsyncAuthenticate", "build_asgi_app"]

AsyncAuthenticate = Callable[[Request], "tuple[str, str, bool] | Awaitable[Any] | None"]


class _Endpoint:
    """One path under ``prefix`` (``name``): an ASGI app, so every method reaches the flow.

    (A function endpoint would get Starlette's plain-text 405 for methods
    outside a fixed list; the flow answers 405 itself, as JSON.)
    """

    def __init__(self, api: KeyAPI, authenticate: AsyncAuthenticate, name: str) -> None:
        self.api = api
        self.authenticate = authenticate
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers = request.headers
        view = ApiRequest(
            method=request.method,
            query=tuple(request.query_params.multi_items()),
            endpoint=self.name,
            content_type=headers.get("content-type"),
            carries_api_key=ApiRequest.sent_api_key(
                headers.get("authorization"), headers.get("x-api-key")
            ),
        )

        async def answer(effect: Effect) -> Any:
            if isinstance(effect, Authenticate):
                identity = self.authenticate(request)
                # A sync callback runs on the event loop: fine for a cookie
                # check, while one that does I/O should be `async def`.
                return await identity if inspect.isawaitable(identity) else identity
            if isinstance(effect, ReadBody):
                return await _read_body(request, effect.limit)
            raise TypeError(f"unknown effect {effect!r}")

        result = await run_async(self.api.handle(view), self.api.ks, answer)
        await _respond(self.api, result, scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise bad_request("invalid Content-Length")
        if int(declared) > limit:  # refuse before reading a byte of it
            raise body_too_large(limit)
    body = bytearray()
    async for chunk in request.stream():  # chunked bodies have no length up front
        body += chunk
        if len(body) > limit:
            raise body_too_large(limit)
    return bytes(body)


async def _respond(api: KeyAPI, result: Any, scope: Scope, receive: Receive, send: Send) -> None:
    status, headers, body = api.render(result)
    response = Response(body, status_code=status, headers=dict(headers))
    await response(scope, receive, send)


def build_asgi_app(ks: Keystile, authenticate: AsyncAuthenticate, prefix: str) -> Starlette:
    api = KeyAPI(ks)
    routes = [Route(path, _Endpoint(api, authenticate, name)) for path, name in api_paths(prefix)]

    async def refuse(request: Request, exc: Exception) -> Response:
        # Routing misses (404) come here: keep them JSON like every answer.
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        refusal = PATH_NOT_FOUND if status == 404 else Refusal(status, "BAD_REQUEST", "refused")
        code, headers, body = api.render(refusal)
        return Response(body, status_code=code, headers=dict(headers))

    app = Starlette(routes=routes, exception_handlers={HTTPException: refuse})
    # A redirect to the slash-less path would drop the body of a POST in some
    # clients; both spellings are routed instead.
    app.router.redirect_slashes = False
    return app
