"""The ASGI door of the dashboard: a Starlette ``Request`` in, the flow's answer out.

This module only translates: the scope into a ``PageRequest``, the flow's
effects into awaits, and the rendered answer into ASGI messages.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from keystile.dashboard._answers import Effect, PageRequest
from keystile.dashboard._core import Dashboard, run_async
from keystile.management._asgi import _read_body
from keystile.management._effects import Authenticate, ReadBody

__all__ = ["AsyncAuthenticate", "DashboardASGIApp"]

AsyncAuthenticate = Callable[[Request], "tuple[str, str, bool] | Awaitable[Any] | None"]


class DashboardASGIApp:
    """The key dashboard as an ASGI app (see ``keystile.dashboard.asgi_app``)."""

    def __init__(self, dashboard: Dashboard, authenticate: AsyncAuthenticate) -> None:
        self.dashboard = dashboard
        self.authenticate = authenticate

    def __repr__(self) -> str:
        return f"DashboardASGIApp({self.dashboard!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served on its own: nothing to start
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: no page here
            await send({"type": "websocket.close", "code": 1000})
            return
        request = Request(scope, receive)
        path, root = scope["path"], scope.get("root_path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        view = PageRequest(
            method=request.method,
            # As Starlette's own routing reads it: the path below the mount point.
            path=path[len(root) :] if root and path.startswith(root) else path,
            base=root.rstrip("/"),
            query=tuple(request.query_params.multi_items()),
            target=path + (f"?{query}" if query else ""),
            host=request.headers.get("host"),
            origin=request.headers.get("origin"),
            content_type=request.headers.get("content-type"),
        )

        async def answer(effect: Effect) -> Any:
            if isinstance(effect, Authenticate):
                identity = self.authenticate(request)
                return await identity if inspect.isawaitable(identity) else identity
            if isinstance(effect, ReadBody):
                return await _read_body(request, effect.limit)
            raise TypeError(f"unknown effect {effect!r}")

        dashboard = self.dashboard
        result = await run_async(dashboard.handle(view), dashboard.ks, answer)
        status, headers, body = dashboard.render(result)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": b"" if view.method == "HEAD" else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
