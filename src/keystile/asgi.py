"""The ASGI door: a pure ASGI middleware (Starlette, FastAPI, any ASGI app).

It translates a scope into a ``RequestView``, awaits the one decision, and
either answers the refusal itself or calls the app with the principal in
``scope["state"]["api_key"]`` (None when it passed without a key) and the
rate-limit headers added to the response start. The body is never touched,
so streaming responses stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from itertools import repeat
from typing import Any

from keystile._mypyc import mypyc_attr
from keystile.engine import Keystile, engine_for
from keystile.errors import ServiceUnavailable
from keystile.pipeline import Admit, Refusal, route_of
from keystile.responses import render_refusal
from keystile.sansio import (
    RESERVED_HEADER_PREFIX,
    HeaderMap,
    RequestView,
    strip_query_param,
    strip_target_param,
)

__all__ = ["KeystileMiddleware", "ScopeHeaders", "view_from_scope"]

logger = logging.getLogger("keystile")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_RESERVED = RESERVED_HEADER_PREFIX.encode("latin-1")
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ScopeHeaders(Mapping[str, tuple[str]]):
    """The headers of an ASGI scope, each decoded only when keystile reads it.

    Used when every name comes once and in lower case, as ASGI servers give
    them: ``dict(scope["headers"])`` (one call in C) then holds them all,
    and a browser's dozen headers (its cookies too) are not all decoded for
    the two or three that keystile reads. Otherwise (a repeated header, a
    name in capitals) the view gets a ``HeaderMap`` of every value.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: dict[bytes, bytes]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> tuple[str]:
        return (self._raw[name.encode("latin-1")].decode("latin-1"),)

    def get(self, name: str, default: Any = None) -> Any:
        value = self._raw.get(name.encode("latin-1"))
        return default if value is None else (value.decode("latin-1"),)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.encode("latin-1") in self._raw

    def __iter__(self) -> Iterator[str]:
        return map(bytes.decode, self._raw, repeat("latin-1"))

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"ScopeHeaders({sorted(self)!r})"  # names only: values hold credentials


def _headers_of(scope: Scope) -> tuple[ScopeHeaders | HeaderMap, bool]:
    """The scope's headers, and whether a name is reserved (``X-Keystile-*``)."""
    raw = scope.get("headers", ())
    if type(raw) is list or type(raw) is tuple:
        fast = dict(raw)
        names = b"".join(fast)
        if len(fast) == len(raw) and names.isascii() and names.islower():
            # The joined names hold the prefix whenever a name starts with it
            # (and, rarely, across two names: then each name is looked at).
            # ``find``, as ``in`` on bytes first tries the needle as an int
            # and raises and clears a TypeError: twice the instructions.
            reserved = names.find(_RESERVED) >= 0 and any(n.startswith(_RESERVED) for n in fast)
            return ScopeHeaders(fast), reserved
    headers = HeaderMap()
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        values = headers.get(name)
        if values is None:
            headers[name] = [raw_value.decode("latin-1")]
        else:
            values.append(raw_value.decode("latin-1"))
    return headers, any(name.startswith(RESERVED_HEADER_PREFIX) for name in headers)


def view_from_scope(scope: Scope) -> RequestView:
    headers, reserved = _headers_of(scope)
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
        reserved,
    )


@mypyc_attr(allow_interpreted_subclasses=True)  # apps may subclass it, compiled or not
class KeystileMiddleware:
    """Authenticate, authorize and rate-limit every HTTP and websocket request.

    >>> app.add_middleware(KeystileMiddleware, config="keystile.yaml")  # doctest: +SKIP

    ``config`` is a YAML path, a mapping of the same shape, or a
    ``Keystile`` engine (to share one engine between apps and tests). A bad
    config, a missing pepper or a key store that does not answer fails the
    server's start: the lifespan startup is answered with
    ``lifespan.startup.failed`` and the reason, and only once keystile is
    ready does the app see the startup. Built outside a running server (at
    import), a bad config or pepper raises ``ConfigError`` at once.

    Security caveat: behind a proxy, list it in ``trusted_proxies``, or every
    client shares the proxy's failed-auth budget.
    """

    ks: Keystile
    errors: str

    def __init__(self, app: ASGIApp, config: Any = None, *, engine: Keystile | None = None) -> None:
        self.app = app
        self._failure: Exception | None = None
        try:
            self.ks = engine_for(config, engine)
        except Exception as exc:
            if not _in_event_loop():
                raise
            # Built inside a running server: Starlette builds its middleware
            # on the first call it gets, the lifespan's, so an exception here
            # would be the app's answer to the lifespan, which uvicorn takes
            # for "lifespan unsupported" before answering 500 to every
            # request. Kept, it fails the lifespan startup with its reason.
            # (Outside an event loop, at import, raising stops any server.)
            self._failure = exc
            return
        self.errors = self.ks.config.errors
        _warn_memory_limiter(self.ks)

    def __repr__(self) -> str:
        if self._failure is not None:
            return f"KeystileMiddleware(failed: {type(self._failure).__name__})"
        return f"KeystileMiddleware({self.ks!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if self._failure is not None:
            # A server that ran no lifespan: every request says why.
            raise self._failure.with_traceback(None)
        view = view_from_scope(scope)
        decision = self.ks.decide_in_memory(view)
        if decision is None:
            decision = await self.ks.adecide_flow(view)
        if isinstance(decision, Refusal):
            await self._refuse(scope, send, decision)
            return
        if decision.strip_embed_token or view.reserved:  # always known: the view is ours
            _scrub_scope(scope, decision)
        # The server hands each request a scope of its own, so it is ours to
        # write; the state dict in it is copied rather than written, so a
        # server that shared one between requests (the ASGI spec says to copy
        # it) could never leak a principal. None on a request passed without
        # a key, as the WSGI door's environ says: so the app (and
        # keystile.fastapi) can tell "passed without a key" from "keystile
        # never saw this request".
        principal = decision.principal
        state = scope.get("state")
        scope["state"] = {**state, "api_key": principal} if state else {"api_key": principal}
        count = principal is not None and self.ks.counting
        if kind != "http" or not (decision.headers or count):
            if count and principal is not None:  # a websocket: counted as admitted
                self.ks.count_use(principal.id, route_of(decision), 101)
            await self.app(scope, receive, send)
            return
        names = _HEADER_NAMES
        extra = [
            (names.get(n) or n.lower().encode("latin-1"), v.encode("latin-1"))
            for n, v in decision.headers
        ]
        ks = self.ks

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if extra:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *extra]
                if count and principal is not None:
                    ks.count_use(principal.id, route_of(decision), message["status"])
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

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start keystile before the app: a failed start is the server's failed start."""
        pending: Message | None = await receive()
        if pending is not None and pending.get("type") == "lifespan.startup":
            failure = self._failure or await self._store_failure()
            if failure is not None:
                await send({"type": "lifespan.startup.failed", "message": f"keystile: {failure}"})
                return
            # Connect the limiter on the server's loop before the first
            # request, so no request pays for it.
            await self.ks.awarm_up()

        async def app_receive() -> Message:
            nonlocal pending
            if pending is not None:
                message, pending = pending, None  # the startup keystile read first
            else:
                message = await receive()
            if message.get("type") == "lifespan.shutdown":
                # Write pending last_used_at and close this loop's store
                # connections before the server exits.
                await self.ks.arelease()
            return message

        await self.app(scope, app_receive, send)

    async def _store_failure(self) -> Exception | None:
        """Why the key store does not answer, if it does not (its tables are made if missing)."""
        try:
            await self.ks.astore.aexecute("ping")
        except ServiceUnavailable as exc:
            return exc
        return None


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


def _scrub_scope(scope: Scope, decision: Admit) -> None:
    """Remove, from the server's own scope, what neither the app nor the logs may see.

    The reserved ``X-Keystile-*`` headers, and on embed routes the embed
    token (``?token=``, ``X-Embed-Token``). The scope is written in place,
    not copied: the server's access log reads this very dict (uvicorn
    prints ``raw_path`` and ``query_string`` from it once the response
    starts), so a copy would leave the token in the log.
    """
    drop_embed = decision.strip_embed_token
    scope["headers"] = [
        (n, v)
        for n, v in scope.get("headers", ())
        if not (n.lower().startswith(_RESERVED) or (drop_embed and n.lower() == b"x-embed-token"))
    ]
    if drop_embed:
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        scope["query_string"] = strip_query_param(query, "token").encode("latin-1")
        raw_path = scope.get("raw_path")
        if raw_path and b"?" in raw_path:
            # The ASGI spec keeps the query out of raw_path; a server that
            # leaves it in would print the token with the path.
            scope["raw_path"] = strip_target_param(
                bytes(raw_path).decode("latin-1"), "token"
            ).encode("latin-1")


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _warn_memory_limiter(engine: Keystile) -> None:
    from keystile.limiter import memory_limiter_warning

    message = memory_limiter_warning(engine.config.limiter)
    if message:
        logger.warning("%s", message)
