"""SPEC sections 4 and 5, as a hostile review probed the ASGI and WSGI doors.

Every form of request target gets the path checks (SPEC 4 step 3).

Requests are built with ``tests.doors.scope_for`` / ``environ_for``, so that
the test keeps the server's own dict and looks at it after the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keystile import Keystile
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware
from tests.conftest import PEPPER
from tests.doors import (
    call_asgi,
    call_wsgi,
    environ_for,
    recording_apps,
    scope_for,
)

WIDGET = "/embed/friday-night-spring-2026/standings"
ORIGIN = ("origin", "https://rhumby.example")
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "scopes": {"known": ["events:read"]},
    "routes": [
        {"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]},
        {"path": "/embed/{event}/{view}", "methods": ["GET"], "embed": True},
    ],
    "default": "deny",
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Keystile]:
    ks = Keystile(CONFIG, pepper=PEPPER)
    yield ks
    ks.close()


@pytest.fixture(scope="module")
def embed(engine: Keystile) -> str:
    return str(
        engine.keys.create(
            name="widget",
            type="embed",
            org="acme",
            allowed_origins=["rhumby.example"],
            restrictions={"event": ["friday-night-spring-2026"], "view": ["standings"]},
        ).secret
    )


@pytest.fixture(scope="module")
def reader(engine: Keystile) -> str:
    return str(engine.keys.create(name="reader", scopes=["events:read"], org="acme").secret)


# -- 3. every form of request target gets the path checks ------------------------------

# (RAW_URI, REQUEST_URI, PATH_INFO as a WSGI server would decode it, status with a valid
# key). 403 is what a route-less path gets under ``default: deny``.
WSGI_TARGETS = [
    pytest.param("/api%2Fv1/events", None, "/api/v1/events", 400, id="origin-form-encoded-slash"),
    pytest.param("http://h.example/api%2Fv1/events", None, "/api/v1/events", 400, id="absolute"),
    pytest.param(
        None, "http://h.example/api%2Fv1/events", "/api/v1/events", 400, id="absolute-request-uri"
    ),
    pytest.param(
        "HTTPS://h.example:443/api%2fv1/events?x=1", None, "/api/v1/events", 400, id="upper-https"
    ),
    pytest.param(
        "http://u:p@h.example/api%2Fv1/events", None, "/api/v1/events", 400, id="with-userinfo"
    ),
    # A server may tidy PATH_INFO (decode, drop dot-segments, merge slashes): the
    # raw target still shows what the client sent, and is refused for it.
    pytest.param("http://h.example/api%5Cv1/events", None, "/api/v1/events", 400, id="backslash"),
    pytest.param(
        "http://h.example/api/v1/x/%2e%2e/events", None, "/api/v1/events", 400, id="dot-segment"
    ),
    pytest.param(
        "http://h.example//api/v1/events", None, "/api/v1/events", 400, id="empty-segment"
    ),
    pytest.param("http://h.example/api/v1/events", None, "/api/v1/events", 200, id="absolute-ok"),
    pytest.param("http://h.example?a=%2F", None, "/", 403, id="absolute-no-path"),
    pytest.param("*", None, "*", 400, id="asterisk-form"),
    pytest.param("h.example:443", None, "/", 403, id="authority-form"),
    pytest.param("api%2Fv1/events", None, "/api/v1/events", 400, id="no-known-form"),
    pytest.param("mailto:a%2Fb", None, "/api/v1/events", 400, id="scheme-without-authority"),
]


@pytest.mark.parametrize(("raw_uri", "request_uri", "path_info", "status"), WSGI_TARGETS)
def test_wsgi_request_target_of_every_form_is_checked(
    engine: Keystile,
    reader: str,
    raw_uri: str | None,
    request_uri: str | None,
    path_info: str,
    status: int,
) -> None:
    environ = environ_for(path_info, [("authorization", f"Bearer {reader}")])
    for key, value in (("RAW_URI", raw_uri), ("REQUEST_URI", request_uri)):
        if value is None:
            del environ[key]
        else:
            environ[key] = value
    assert call_wsgi(WSGIMiddleware(recording_apps({})[1], engine=engine), environ) == status


# (raw_path, path): uvicorn's h11 server hands an absolute-form target over as
# raw_path whole, httptools only its path; the app routes on ``path`` either way.
ASGI_TARGETS = [
    pytest.param(b"/api%2Fv1/events", "/api/v1/events", 400, id="origin-form-encoded-slash"),
    pytest.param(
        b"http://h.example/api%2Fv1/events",
        "http://h.example/api/v1/events",
        400,
        id="absolute-as-h11-gives-it",
    ),
    pytest.param(
        b"http://h.example/api/v1/events",
        "http://h.example/api/v1/events",
        400,
        id="absolute-the-app-cannot-route",
    ),
    pytest.param(b"/api/v1/events", "/api/v1/events", 200, id="absolute-as-httptools-gives-it"),
    pytest.param(b"*", "*", 400, id="asterisk-form"),
]


@pytest.mark.parametrize(("raw_path", "path", "status"), ASGI_TARGETS)
def test_asgi_request_target_of_every_form_is_checked(
    engine: Keystile, reader: str, raw_path: bytes, path: str, status: int
) -> None:
    scope = scope_for(raw_path, [("authorization", f"Bearer {reader}")])
    scope["path"] = path
    assert call_asgi(ASGIMiddleware(recording_apps({})[0], engine=engine), scope) == status
