"""Django conveniences: a middleware for ``MIDDLEWARE``.

Either wrap the WSGI application (``keystile.wsgi.KeystileMiddleware``), or
list this class in settings::

    MIDDLEWARE = ["keystile.django.KeystileMiddleware", ...]
    KEYSTILE_CONFIG = BASE_DIR / "keystile.yaml"     # read once, at start

The principal is ``request.api_key`` (and ``request.META["keystile.api_key"]``).
The config is read once, when Django builds its middleware chain; a bad
config raises ``ConfigError`` there, at start.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from keystile.asgi import _scrub_scope
from keystile.engine import Keystile
from keystile.pipeline import Refusal, route_of
from keystile.responses import render_refusal
from keystile.wsgi import ENVIRON_KEY, _scrub_environ, view_from_environ

__all__ = ["KeystileMiddleware"]

_engines: dict[str, Keystile] = {}


def _engine() -> Keystile:
    source: Any = getattr(settings, "KEYSTILE_CONFIG", None) or os.environ.get(
        "KEYSTILE_CONFIG", "keystile.yaml"
    )
    if isinstance(source, Keystile):
        return source
    key = str(source)
    if key not in _engines:
        _engines[key] = Keystile(source)
    return _engines[key]


class KeystileMiddleware:
    """Authenticate, authorize and rate-limit each request before the view runs."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.ks = _engine()
        self.ks.warm_up()  # Django builds its middleware once, at start

    def __call__(self, request: HttpRequest) -> HttpResponse:
        decision = self.ks.decide(view_from_environ(request.META))
        if isinstance(decision, Refusal):
            status, headers, body = render_refusal(decision, self.ks.config.errors)
            response = HttpResponse(body, status=status, reason=HTTPStatus(status).phrase)
            for name, value in headers:
                response[name] = value
            return response
        request.META[ENVIRON_KEY] = decision.principal
        request.api_key = decision.principal
        # What the WSGI door hides, hidden the same way, in the same dicts:
        # under WSGI, META is the server's environ itself.
        if _scrub_environ(request.META, decision):
            # Django parses GET and headers from META once; an earlier
            # middleware may have read them already, so let them be read again.
            request.__dict__.pop("GET", None)
            request.__dict__.pop("headers", None)
            scope = getattr(request, "scope", None)
            if scope is not None:
                # Served over ASGI, META is a copy: the server logs from its scope.
                _scrub_scope(scope, decision)
        response = self.get_response(request)
        for name, value in decision.headers:
            response[name] = value
        if decision.principal is not None and self.ks.counting:
            self.ks.count_use(decision.principal.id, route_of(decision), response.status_code)
        return response
