"""The WSGI door of the dashboard: a werkzeug ``Request`` in, the flow's answer out.

This module only translates: the environ into a ``PageRequest``, the flow's
effects into blocking calls, and the rendered answer into a response.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

from keystile.dashboard._answers import Effect, PageRequest
from keystile.dashboard._core import Dashboard, run_sync
from keystile.management._effects import Authenticate, ReadBody
from keystile.management._wsgi import _read_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["DashboardWSGIApp", "SyncAuthenticate"]

SyncAuthenticate = Callable[[Request], "tuple[str, str, bool] | None"]


class DashboardWSGIApp:
    """The key dashboard as a WSGI callable (see ``keystile.dashboard.wsgi_app``)."""

    def __init__(self, dashboard: Dashboard, authenticate: SyncAuthenticate) -> None:
        self.dashboard = dashboard
        self.authenticate = authenticate

    def __repr__(self) -> str:
        return f"DashboardWSGIApp({self.dashboard!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        query = request.query_string.decode("latin-1")
        full = request.script_root + request.path
        view = PageRequest(
            method=request.method,
            path=request.path,
            base=request.script_root.rstrip("/"),
            query=tuple(request.args.items(multi=True)),
            target=full + (f"?{query}" if query else ""),
            host=request.headers.get("Host"),
            origin=request.headers.get("Origin"),
            content_type=request.headers.get("Content-Type"),
        )
        dashboard = self.dashboard
        result = run_sync(dashboard.handle(view), dashboard.ks, self._answerer(request))
        status, headers, body = dashboard.render(result)
        return Response(body, status=status, headers=headers)(environ, start_response)

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
