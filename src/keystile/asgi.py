"""The ASGI door: a pure ASGI middleware (Starlette, FastAPI, any ASGI app).

It translates a scope into a ``RequestView``, awaits the one decision, and
either answers the refusal itself or calls the app with the principal in
``scope["state"]["api_key"]`` and the rate-limit headers added to the
response start. The body is never touched, so streaming responses stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from keystile.engine import Keystile, engine_for
from keystile.pipeline import Refusal
from keystile.responses import render_refusal
from keystile.sansio import RESERVED_HEADER_PREFIX, RequestView, strip_query_param

__all__ = ["KeystileMiddleware", "view_from_scope"]

logger = logging.getLogger("keystile")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_RESERVED = RESERVED_HEADER_PREFIX.encode("latin-1")
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def view_from_scope(scope: Scope) -> RequestView:
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        values = headers.get(name)
        if values is None:
            headers[name] = [raw_value.decode("latin-1")]
        else:
            values.append(raw_value.decode("latin-1"))
    raw_path = scope.get("raw_path")
    if raw_path:
        path, encoded = bytes(raw_path), True
    else:
        path, encoded = scope.get("path", "/").encode("utf-8", "surrogateescape"), False
    client = scope.get("client")
    websocket = scope["type"] == "websocket"
    return RequestView(
        "GET" if websocket else scope.get("method", "GET"),
        path,
        encoded,
        scope.get("root_path", ""),
        None,  # raw_uri: a WSGI notion; ASGI's raw_path is the path itself
        scope.get("query_string", b""),
        headers,
        client[0] if client else None,
        websocket,
    )


class KeystileMiddleware:
    """Authenticate, authorize and rate-limit every HTTP and websocket request.

    >>> app.add_middleware(KeystileMiddleware, config="keystile.yaml")  # doctest: +SKIP

    ``config`` is a YAML path, a mapping of the same shape, or a
    ``Keystile`` engine (to share one engine between apps and tests). The
    config is validated here, at start: a bad one raises ``ConfigError``.

    Security caveat: behind a proxy, list it in ``trusted_proxies``, or every
    client shares the proxy's failed-auth budget.
    """

    def __init__(self, app: ASGIApp, config: Any = None, *, engine: Keystile | None = None) -> None:
        self.app = app
        self.ks = engine_for(config, engine)
        self.errors = self.ks.config.errors
        _warn_memory_limiter(self.ks)

    def __repr__(self) -> str:
        return f"KeystileMiddleware({self.ks!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self._lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        view = view_from_scope(scope)
        decision = await self.ks.adecide(view)
        if isinstance(decision, Refusal):
            await self._refuse(scope, send, decision)
            return
        if view.has_reserved_headers():
            scope = dict(scope)
            scope["headers"] = [
                (n, v) for n, v in scope["headers"] if not n.lower().startswith(_RESERVED)
            ]
        if decision.principal is not None:
            # The server hands each request a scope of its own, so it is
            # ours to write; the state dict in it is copied rather than
            # written, so a server that shared one between requests (the
            # ASGI spec says to copy it) could never leak a principal.
            state = scope.get("state")
            scope["state"] = (
                {**state, "api_key": decision.principal}
                if state
                else {"api_key": decision.principal}
            )
        if decision.strip_embed_token:
            scope = _without_embed_token(scope)
        if not decision.headers or kind != "http":
            await self.app(scope, receive, send)
            return
        extra = [(_header_name(n), v.encode("latin-1")) for n, v in decision.headers]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, scope: Scope, send: Send, refusal: Refusal) -> None:
        status, headers, body = render_refusal(refusal, self.errors)
        raw = [(_header_name(n), v.encode("latin-1")) for n, v in headers]
        if scope["type"] == "websocket":
            if "websocket.http.response" in scope.get("extensions", {}):
                await send(
                    {"type": "websocket.http.response.start", "status": status, "headers": raw}
                )
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                # 1008: policy violation, the closest close code to a 401/403.
                await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                # Connect the limiter on the server's loop before the first
                # request, so no request pays for it.
                await self.ks.awarm_up()
            elif message.get("type") == "lifespan.shutdown":
                # Write pending last_used_at and close this loop's store
                # connections before the server exits.
                await self.ks.arelease()
            return message

        return wrapped


# The names keystile adds to responses most often, encoded once.
_HEADER_NAMES = {
    name: name.lower().encode("latin-1")
    for name in (
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "RateLimit-Policy",
        "RateLimit",
        "Retry-After",
    )
}


def _header_name(name: str) -> bytes:
    return _HEADER_NAMES.get(name) or name.lower().encode("latin-1")


def _without_embed_token(scope: Scope) -> Scope:
    scope = dict(scope)
    scope["query_string"] = strip_query_param(scope.get("query_string", b""), "token")
    scope["headers"] = [
        (n, v) for n, v in scope.get("headers", ()) if n.lower() != b"x-embed-token"
    ]
    return scope


def _warn_memory_limiter(engine: Keystile) -> None:
    from keystile.limiter import memory_limiter_warning

    message = memory_limiter_warning(engine.config.limiter)
    if message:
        logger.warning("%s", message)
