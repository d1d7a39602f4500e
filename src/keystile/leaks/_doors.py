"""The two doors of the leak-report endpoint: raw ASGI and raw WSGI.

They only translate: a scope or an environ into a ``LeakRequest``, the body
read at most ``ReadBody.limit`` bytes from the stream, and the endpoint's
answer into a response. No framework is needed for one POST route, and the
doors stay as thin as the management API's.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING

from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import get_input_stream

from keystile.leaks._core import (
    IDENTIFIER_HEADER,
    SIGNATURE_HEADER,
    Feedback,
    LeakEndpoint,
    LeakRequest,
    bad_report,
    run_async,
    run_sync,
)
from keystile.pipeline import Refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from starlette.types import Receive, Scope, Send

__all__ = ["LeaksASGIApp", "LeaksWSGIApp"]

CHUNK = 64 * 1024


class _Disconnected(Exception):
    """The client left before its body was read: nobody to answer."""


def _single(values: list[str]) -> str | None:
    # A signature header sent twice is not GitHub's: treat it as missing.
    return values[0] if len(values) == 1 else None


class LeaksASGIApp:
    """The endpoint as an ASGI app (see ``keystile.leaks.asgi_app``)."""

    def __init__(self, endpoint: LeakEndpoint) -> None:
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"LeaksASGIApp({self.endpoint!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        found: dict[str, list[str]] = {IDENTIFIER_HEADER: [], SIGNATURE_HEADER: []}
        content_length = None
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            if name in found:
                found[name].append(raw_value.decode("latin-1"))
            elif name == "content-length":
                content_length = raw_value.decode("latin-1")
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # ASGI paths include the mount point
            path = path[len(root) :]
        request = LeakRequest(
            method=scope.get("method", "GET"),
            path=path,
            identifier=_single(found[IDENTIFIER_HEADER]),
            signature=_single(found[SIGNATURE_HEADER]),
            content_length=content_length,
        )

        async def read_body(limit: int) -> bytes:
            body = bytearray()
            while len(body) < limit:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            return bytes(body[:limit])

        try:
            answer = await run_async(self.endpoint, request, read_body)
        except _Disconnected:
            return
        status, headers, body = self.endpoint.render(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Served on its own, the app has nothing to start or stop: acknowledge both."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class LeaksWSGIApp:
    """The endpoint as a WSGI callable (see ``keystile.leaks.wsgi_app``)."""

    def __init__(self, endpoint: LeakEndpoint) -> None:
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"LeaksWSGIApp({self.endpoint!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = LeakRequest(
            method=environ.get("REQUEST_METHOD", "GET"),
            path=environ.get("PATH_INFO", ""),
            # A repeated header reaches WSGI joined by commas: never valid base64 DER.
            identifier=environ.get("HTTP_GITHUB_PUBLIC_KEY_IDENTIFIER"),
            signature=environ.get("HTTP_GITHUB_PUBLIC_KEY_SIGNATURE"),
            content_length=environ.get("CONTENT_LENGTH") or None,
        )

        def read_body(limit: int) -> bytes:
            # Bounded by CONTENT_LENGTH, or the server's end of a chunked body
            # (wsgi.input_terminated); no more than `limit` bytes are read.
            stream = get_input_stream(environ)
            body = bytearray()
            while len(body) < limit:
                chunk = stream.read(min(CHUNK, limit - len(body)))
                if not chunk:
                    break
                body += chunk
            return bytes(body)

        answer: Feedback | Refusal
        try:
            answer = run_sync(self.endpoint, request, read_body)
        except ClientDisconnected:
            answer = bad_report("the request body ended early")
        status, headers, body = self.endpoint.render(answer)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]
