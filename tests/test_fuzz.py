"""A bounded fuzz run over raw ASGI scopes and WSGI environs.

Whatever the method, path and headers, a protected route is never reached
without a valid key, and nothing raises (no 500).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keystile import Keystile
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware
from tests.conftest import PEPPER
from tests.doors import echo_asgi, echo_wsgi

CONFIG = {
    "store": "memory://",
    "limits": {"key": None, "failed_auth": None},
    "routes": [
        {"path": "/health", "public": True},
        {"path": "/api/{rest:path}", "scopes": ["read"]},
        {"path": "/embed/{event}", "methods": ["GET"], "embed": True},
    ],
    "default": "authenticated",
}

_segment = st.sampled_from(
    [
        "api",
        "health",
        "embed",
        "..",
        ".",
        "",
        "%2e%2e",
        "%2F",
        "%00",
        "a%ffb",
        "%5c",
        "x",
        "\\",
        "HEALTH",
        "health%20",
        "%68ealth",
        ";",
        "api;x=1",
    ]
)
_paths = st.lists(_segment, max_size=5).map(lambda parts: ("/" + "/".join(parts)).encode())
_methods = st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "DELETE", "get", "FOO", "TRACE"])
_header_names = st.sampled_from(
    [
        "authorization",
        "x-api-key",
        "x-embed-token",
        "origin",
        "access-control-request-method",
        "x-forwarded-for",
        "x-http-method-override",
        "x-original-url",
        "host",
        "referer",
    ]
)
_header_values = st.one_of(
    st.sampled_from(
        ["Bearer sk_x", "Basic abc", "bearer", "GET", "https://a.example", "/health", "1.2.3.4", ""]
    ),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=40),
)
_headers = st.lists(st.tuples(_header_names, _header_values), max_size=4)
_queries = st.sampled_from(["", "token=abc", "token=emb_x&token=y", "a=%ff"])


@pytest.fixture(scope="module")
def engine() -> Iterator[Keystile]:
    ks = Keystile(CONFIG, pepper=PEPPER)
    yield ks
    ks.close()


def _public_or_preflight(path: bytes, method: str, headers: list[tuple[str, str]]) -> bool:
    names = {n for n, _ in headers}
    preflight = method == "OPTIONS" and {"origin", "access-control-request-method"} <= names
    from urllib.parse import unquote_to_bytes

    # /%68ealth is /health as the app routes it: public too.
    return preflight or unquote_to_bytes(path).rstrip(b"/") == b"/health"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=_methods, path=_paths, headers=_headers, query=_queries)
def test_asgi_never_admits_without_a_key(
    engine: Keystile, method: str, path: bytes, headers: list[tuple[str, str]], query: str
) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get("state", {}).get("api_key"))
        await echo_asgi(scope, receive, send)

    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    scope = {
        "type": "http",
        "method": method,
        "path": path.decode("latin-1"),
        "raw_path": path,
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(n.encode(), v.encode("latin-1")) for n, v in headers],
        "client": ("127.0.0.1", 1),
    }
    asyncio.run(ASGIMiddleware(app, engine)(scope, receive, send))
    assert statuses and statuses[0] < 500
    if seen and seen[0] is None:
        assert _public_or_preflight(path, method, headers)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=_methods, path=_paths, headers=_headers, query=_queries)
def test_wsgi_never_admits_without_a_key(
    engine: Keystile, method: str, path: bytes, headers: list[tuple[str, str]], query: str
) -> None:
    from urllib.parse import unquote_to_bytes

    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ.get("keystile.api_key"))
        return echo_wsgi(environ, start_response)

    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "RAW_URI": path.decode("latin-1"),
        "QUERY_STRING": query,
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    statuses: list[str] = []
    WSGIMiddleware(app, engine)(environ, lambda status, hdrs, exc=None: statuses.append(status))
    assert statuses and int(statuses[0].split()[0]) < 500
    if seen and seen[0] is None:
        assert _public_or_preflight(path, method, headers)
