"""The WSGI door: wraps Flask, Django or any WSGI application.

It translates an environ into a ``RequestView``, runs the one decision with
blocking I/O, and either answers the refusal or calls the app with the
principal in ``environ["keystile.api_key"]`` and the rate-limit headers
added to its ``start_response``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from keystile._mypyc import mypyc_attr
from keystile.asgi import _warn_memory_limiter
from keystile.engine import Keystile, engine_for
from keystile.errors import ServiceUnavailable
from keystile.pipeline import Admit, Refusal, route_of
from keystile.responses import render_refusal
from keystile.sansio import (
    RESERVED_HEADER_PREFIX,
    RequestView,
    strip_query_param,
    strip_target_param,
)

__all__ = ["ENVIRON_KEY", "EnvironHeaders", "KeystileMiddleware", "view_from_environ"]

ENVIRON_KEY = "keystile.api_key"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_RESERVED = "HTTP_" + RESERVED_HEADER_PREFIX.upper().replace("-", "_")
_CGI_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}
_CGI_KEYS = {name: key for key, name in _CGI_HEADERS.items()}


@lru_cache(maxsize=256)
def _environ_key(name: str) -> str:
    """``x-api-key`` -> ``HTTP_X_API_KEY`` (the names asked are keystile's own)."""
    return _CGI_KEYS.get(name) or "HTTP_" + name.upper().replace("-", "_")


class EnvironHeaders(Mapping[str, tuple[str]]):
    """The request headers of a WSGI environ, read on demand.

    A server puts every header in the environ already; copying them all into
    a dict per request would cost more than the few that keystile reads.
    Each value is a 1-tuple: the server joined repeated headers with commas,
    and the credential check refuses a comma, so a repeat can never be split
    into a key.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> tuple[str]:
        return (self._environ[_environ_key(name)],)

    def get(self, name: str, default: Any = None) -> Any:
        value = self._environ.get(_environ_key(name))
        return default if value is None else (value,)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _environ_key(name) in self._environ

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in _CGI_HEADERS:
                yield _CGI_HEADERS[key]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"EnvironHeaders({sorted(self)!r})"  # names only: values hold credentials


def view_from_environ(environ: dict[str, Any]) -> RequestView:
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    query = environ.get("QUERY_STRING")
    return RequestView(  # by position: a request's worth of keyword matching saved
        environ.get("REQUEST_METHOD", "GET").upper(),
        environ.get("PATH_INFO", "/").encode("latin-1", "replace") or b"/",
        False,  # path_encoded: PATH_INFO is decoded
        "",  # root_path: SCRIPT_NAME is not part of PATH_INFO
        raw_uri.encode("latin-1", "replace") if raw_uri else None,
        query.encode("latin-1", "replace") if query else b"",
        EnvironHeaders(environ),
        environ.get("REMOTE_ADDR"),
    )


@mypyc_attr(allow_interpreted_subclasses=True)  # apps may subclass it, compiled or not
class KeystileMiddleware:
    """Authenticate, authorize and rate-limit every request to a WSGI app.

    >>> app.wsgi_app = KeystileMiddleware(app.wsgi_app, config="keystile.yaml")  # doctest: +SKIP

    ``config`` is a YAML path, a mapping or a ``Keystile`` engine. WSGI has
    no start or shutdown event, so building the middleware is the app's
    start: a bad config or a missing pepper raises ``ConfigError``, and a key
    store that does not answer ``StoreUnavailable`` (checked when the
    middleware builds the engine itself; an engine handed in is its maker's
    to check). Pending ``last_used_at`` writes are flushed at interpreter
    exit.

    Security caveat: the raw request target (``RAW_URI``/``REQUEST_URI``) is
    checked for encoded slashes when the server provides it; servers that
    provide neither have already decoded ``%2F`` into ``/`` before keystile
    sees the path, exactly as the app will see it.
    """

    def __init__(self, app: WSGIApp, config: Any = None, *, engine: Keystile | None = None) -> None:
        self.app = app
        self.ks = engine_for(config, engine)
        if engine is None and not isinstance(config, Keystile):
            _check_store(self.ks)
        self.errors = self.ks.config.errors
        _warn_memory_limiter(self.ks)
        self.ks.warm_up()  # WSGI has no startup event: being built is the start

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
        _scrub_environ(environ, decision)
        extra = decision.headers
        principal = decision.principal
        count = principal is not None and self.ks.counting
        if not (extra or count):
            return self.app(environ, start_response)
        ks = self.ks

        def start_with_headers(
            # Any sequence of pairs: servers take a tuple as well as the list
            # PEP 3333 asks for (and compiled, an annotation is enforced).
            status: str,
            headers: Sequence[tuple[str, str]],
            exc_info: Any = None,
        ) -> Any:
            if count and principal is not None:
                ks.count_use(principal.id, route_of(decision), _status_code(status))
            return start_response(status, [*headers, *extra] if extra else headers, exc_info)

        return self.app(environ, start_with_headers)


# The copies of the request target a server keeps beside QUERY_STRING
# (uWSGI and others set REQUEST_URI, gunicorn RAW_URI); access logs print them.
_TARGET_KEYS = ("REQUEST_URI", "RAW_URI")


def _scrub_environ(environ: MutableMapping[str, Any], decision: Admit) -> bool:
    """Remove, in place, what neither the app nor the server's logs may see; True if any.

    The reserved ``X-Keystile-*`` headers, and on embed routes the embed
    token (``?token=`` in every copy of the target, ``X-Embed-Token``). The
    server's own environ is written, not a copy: gunicorn's access log reads
    ``RAW_URI`` from it after the app returns. The Django door uses this too,
    on ``request.META``.
    """
    changed = False
    # One join and one search, in C, over the environ's keys (a server sets
    # twenty or more); only when the prefix is found is each key looked at.
    if _RESERVED in "\n".join(environ):
        reserved = [k for k in environ if k.startswith(_RESERVED)]
        for name in reserved:
            del environ[name]
        changed = bool(reserved)
    if decision.strip_embed_token:
        if environ.get("QUERY_STRING"):
            environ["QUERY_STRING"] = strip_query_param(environ["QUERY_STRING"], "token")
        for key in _TARGET_KEYS:
            if environ.get(key):
                environ[key] = strip_target_param(environ[key], "token")
        environ.pop("HTTP_X_EMBED_TOKEN", None)
        changed = True
    return changed


def _status_code(line: str) -> int:
    try:
        return int(line[:3])
    except ValueError:  # a malformed status line: the server will refuse it anyway
        return 500


def _check_store(ks: Keystile) -> None:
    """Raise ``StoreUnavailable`` now if the key store does not answer (its tables are made).

    The connections the check opened are let go at once: a server that
    forks its workers after loading the app (gunicorn ``--preload``) must
    not hand one socket, or a thread pool whose threads stayed behind, to
    every worker. Each worker opens its own on its first request.
    """
    store = ks.store
    try:
        store.execute("ping")
    except ServiceUnavailable:
        ks.close()
        raise
    store.close()
