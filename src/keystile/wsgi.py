"""The WSGI door: wraps Flask, Django or any WSGI application.

It translates an environ into a ``RequestView``, runs the one decision with
blocking I/O, and either answers the refusal or calls the app with the
principal in ``environ["keystile.api_key"]`` and the rate-limit headers
added to its ``start_response``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from keystile.asgi import _warn_memory_limiter
from keystile.engine import Keystile, engine_for
from keystile.pipeline import Refusal
from keystile.responses import render_refusal
from keystile.sansio import RESERVED_HEADER_PREFIX, RequestView, strip_query_param

__all__ = ["ENVIRON_KEY", "KeystileMiddleware", "view_from_environ"]

ENVIRON_KEY = "keystile.api_key"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_RESERVED = "HTTP_" + RESERVED_HEADER_PREFIX.upper().replace("-", "_")
_CGI_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def view_from_environ(environ: dict[str, Any]) -> RequestView:
    headers: dict[str, list[str]] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in _CGI_HEADERS:
            name = _CGI_HEADERS[key]
        else:
            continue
        # The server joined repeated headers with commas; the credential
        # check refuses a comma, so a repeat can never be split into a key.
        headers[name] = [value]
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return RequestView(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=environ.get("PATH_INFO", "/").encode("latin-1", "replace") or b"/",
        path_encoded=False,
        raw_uri=raw_uri.encode("latin-1", "replace") if raw_uri else None,
        query_string=environ.get("QUERY_STRING", "").encode("latin-1", "replace"),
        headers=headers,
        client=environ.get("REMOTE_ADDR"),
    )


class KeystileMiddleware:
    """Authenticate, authorize and rate-limit every request to a WSGI app.

    >>> app.wsgi_app = KeystileMiddleware(app.wsgi_app, config="keystile.yaml")  # doctest: +SKIP

    ``config`` is a YAML path, a mapping or a ``Keystile`` engine. Pending
    ``last_used_at`` writes are flushed at interpreter exit, since WSGI has no
    shutdown event.

    Security caveat: the raw request target (``RAW_URI``/``REQUEST_URI``) is
    checked for encoded slashes when the server provides it; servers that
    provide neither have already decoded ``%2F`` into ``/`` before keystile
    sees the path, exactly as the app will see it.
    """

    def __init__(self, app: WSGIApp, config: Any = None, *, engine: Keystile | None = None) -> None:
        self.app = app
        self.ks = engine_for(config, engine)
        self.errors = self.ks.config.errors
        _warn_memory_limiter(self.ks)

    def __repr__(self) -> str:
        return f"KeystileMiddleware({self.ks!r})"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        view = view_from_environ(environ)
        decision = self.ks.decide(view)
        if isinstance(decision, Refusal):
            status, headers, body = render_refusal(decision, self.errors)
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [body]
        environ[ENVIRON_KEY] = decision.principal
        if view.has_reserved_headers():
            for name in [k for k in environ if k.startswith(_RESERVED)]:
                del environ[name]
        if decision.strip_embed_token:
            environ["QUERY_STRING"] = strip_query_param(
                environ.get("QUERY_STRING", "").encode("latin-1"), "token"
            ).decode("latin-1")
            environ.pop("HTTP_X_EMBED_TOKEN", None)
        extra = list(decision.headers)
        if not extra:
            return self.app(environ, start_response)

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, start_with_headers)
