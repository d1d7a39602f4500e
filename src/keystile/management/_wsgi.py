"""The WSGI door of the management API: werkzeug routing around ``KeyAPI``.

This module only translates: a werkzeug request into an ``ApiRequest``, the
flow's effects into blocking calls, and the flow's answer into a response.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import ClientDisconnected, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from keystile.management._core import KeyAPI
from keystile.management._effects import (
    Authenticate,
    Effect,
    ReadBody,
    run_sync,
)
from keystile.management._input import (
    PATH_NOT_FOUND,
    ApiRequest,
    api_paths,
    bad_request,
    body_too_large,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from keystile.engine import Keystile

__all__ = ["KeysWSGIApp", "SyncAuthenticate"]

SyncAuthenticate = Callable[[Request], "tuple[str, str, bool] | None"]


class KeysWSGIApp:
    """The management API as a WSGI callable (see ``keystile.management.wsgi_app``)."""

    def __init__(self, ks: Keystile, authenticate: SyncAuthenticate, prefix: str) -> None:
        self.api = KeyAPI(ks)
        self.authenticate = authenticate
        # No `methods` on the rules: every method reaches the flow, which
        # answers 405 as JSON. No slash redirects: both spellings are routed.
        rules = [Rule(path, endpoint=name) for path, name in api_paths(prefix)]
        self.url_map = Map(rules, strict_slashes=False, merge_slashes=False)

    def __repr__(self) -> str:
        return f"KeysWSGIApp(paths={[r.rule for r in self.url_map.iter_rules()]!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            name, _ = self.url_map.bind_to_environ(environ).match()
        except NotFound:
            name = None
        if name is not None:
            view = ApiRequest(
                method=request.method,
                query=tuple(request.args.items(multi=True)),
                endpoint=name,
                content_type=request.headers.get("Content-Type"),
                carries_api_key=ApiRequest.sent_api_key(
                    request.headers.get("Authorization"), request.headers.get("X-Api-Key")
                ),
            )
            result = run_sync(self.api.handle(view), self.api.ks, self._answerer(request))
        else:
            result = PATH_NOT_FOUND
        status, headers, body = self.api.render(result)
        response = Response(body, status=status, headers=headers)
        return response(environ, start_response)

    def _answerer(self, request: Request) -> Callable[[Effect], Any]:
        def answer(effect: Effect) -> Any:
            if isinstance(effect, Authenticate):
                identity = self.authenticate(request)
                if inspect.isawaitable(identity):
                    close = getattr(identity, "close", None)
                    if close is not None:
                        close()  # no "never awaited" warning for the host's mistake
                    raise TypeError("a WSGI app needs a sync authenticate(); use asgi_app")
                return identity
            if isinstance(effect, ReadBody):
                return _read_body(request, effect.limit)
            raise TypeError(f"unknown effect {effect!r}")

        return answer


def _read_body(request: Request, limit: int) -> bytes:
    request.max_content_length = limit
    try:
        # werkzeug checks Content-Length up front and counts chunked bodies
        # as they are read, so no more than `limit` bytes are ever buffered.
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise body_too_large(limit) from None
    except ClientDisconnected:
        raise bad_request("the request body ended early") from None
