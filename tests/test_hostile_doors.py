"""SPEC sections 4 and 5, as a hostile review probed the ASGI and WSGI doors.

Three things: an embed token taken from ``?token=`` is gone from the
server's own scope or environ (which its access log reads), not only from a
copy the app gets (the Django door: ``test_django.py``); no repr of
keystile's shows a credential, a traceback's captured locals included; and
every form of request target gets the path checks.

Requests are built with ``tests.doors.scope_for`` / ``environ_for``, so that
the test keeps the server's own dict and looks at it after the call.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import keystile
from keystile import Keystile
from keystile._mypyc import compiled
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.asgi import view_from_scope
from keystile.pipeline import Refusal
from keystile.sansio import read_credential
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware
from keystile.wsgi import view_from_environ
from tests.conftest import PEPPER
from tests.doors import (
    DOORS,
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


# -- 1. the embed token leaves the server's own dict -----------------------------------

EMBED_TOKEN_TRICKS = [
    pytest.param("token={t}&theme=dark", [], "theme=dark", id="query-first"),
    pytest.param("theme=dark&token={t}", [], "theme=dark", id="query-last"),
    pytest.param("token={t}", [], "", id="query-alone"),
    pytest.param("%74oken={t}&theme=dark", [], "theme=dark", id="query-name-percent-encoded"),
    pytest.param("a=%ff&token={t}&b=c+d&flag", [], "a=%ff&b=c+d&flag", id="others-kept-verbatim"),
    pytest.param("theme=dark", [("x-embed-token", "{t}")], "theme=dark", id="x-embed-token"),
]


@pytest.mark.parametrize(("query", "headers", "left"), EMBED_TOKEN_TRICKS)
@pytest.mark.parametrize("door", DOORS)
def test_embed_token_is_gone_from_the_servers_own_request(
    engine: Keystile,
    embed: str,
    door: str,
    query: str,
    headers: list[tuple[str, str]],
    left: str,
) -> None:
    seen: dict[str, Any] = {}
    asgi_app, wsgi_app = recording_apps(seen)
    sent = [ORIGIN, *[(n, v.format(t=embed)) for n, v in headers]]
    if door == "asgi":
        scope = scope_for(WIDGET.encode(), sent, query.format(t=embed))
        assert call_asgi(ASGIMiddleware(asgi_app, engine=engine), scope) == 200
        # The server's scope itself: uvicorn's access log prints its query_string.
        assert scope["query_string"] == left.encode()
        assert scope["raw_path"] == WIDGET.encode()
        after = repr({k: v for k, v in scope.items() if k != "state"})
    else:
        environ = environ_for(WIDGET, sent, query.format(t=embed))
        assert call_wsgi(WSGIMiddleware(wsgi_app, engine=engine), environ) == 200
        target = WIDGET + (f"?{left}" if left else "")
        assert (environ["QUERY_STRING"], environ["RAW_URI"], environ["REQUEST_URI"]) == (
            left,
            target,
            target,
        )
        after = repr(environ)
    assert seen["query"] == left
    assert embed not in seen["text"] and embed not in after
    assert "x-embed-token" not in after.lower().replace("_", "-")


@pytest.mark.parametrize(
    ("raw_uri", "request_uri"),
    [
        pytest.param("{p}?token={t}&theme=dark", None, id="raw-uri-only"),
        pytest.param(None, "{p}?token={t}&theme=dark", id="request-uri-only"),
        pytest.param("http://w.example{p}?token={t}&theme=dark", None, id="raw-uri-absolute-form"),
        pytest.param(
            "HTTPS://w.example:443{p}?theme=dark&token={t}",
            "HTTPS://w.example:443{p}?theme=dark&token={t}",
            id="both-absolute-form",
        ),
    ],
)
def test_wsgi_target_copies_lose_the_embed_token(
    engine: Keystile, embed: str, raw_uri: str | None, request_uri: str | None
) -> None:
    seen: dict[str, Any] = {}
    environ = environ_for(WIDGET, [ORIGIN], f"token={embed}&theme=dark")
    for key, value in (("RAW_URI", raw_uri), ("REQUEST_URI", request_uri)):
        if value is None:
            del environ[key]
        else:
            environ[key] = value.format(p=WIDGET, t=embed)
    assert call_wsgi(WSGIMiddleware(recording_apps(seen)[1], engine=engine), environ) == 200
    assert embed not in repr(environ) and embed not in seen["text"]
    for key in ("RAW_URI", "REQUEST_URI"):
        if key in environ:
            assert environ[key].endswith(f"{WIDGET}?theme=dark")


def test_asgi_raw_path_that_carries_the_query_loses_the_token(engine: Keystile, embed: str) -> None:
    # The ASGI spec keeps the query out of raw_path; a server that does not
    # must not get the token back into its log through it.
    seen: dict[str, Any] = {}
    scope = scope_for(f"{WIDGET}?token={embed}".encode(), [ORIGIN], f"token={embed}")
    scope["path"] = WIDGET
    assert call_asgi(ASGIMiddleware(recording_apps(seen)[0], engine=engine), scope) == 200
    assert scope["raw_path"] == WIDGET.encode() and scope["query_string"] == b""
    assert embed not in seen["text"]


SERVER = """\
import json, os, sys
import uvicorn
from keystile import Keystile
from keystile.asgi import KeystileMiddleware

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["query_string"]})

engine = Keystile(json.loads(os.environ["TEST_CONFIG"]))
uvicorn.run(KeystileMiddleware(app, engine=engine), fd=int(sys.argv[1]), access_log=True,
            log_level="info", lifespan="off")
"""


def test_uvicorn_access_log_never_prints_the_embed_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**CONFIG, "store": f"sqlite:///{tmp_path / 'keys.db'}"}
    with Keystile(config, pepper=PEPPER) as ks:
        token = ks.keys.create(
            name="w", type="embed", org="acme", allowed_origins=["rhumby.example"]
        ).secret
    (tmp_path / "server.py").write_text(SERVER, encoding="utf-8")
    src = str(Path(keystile.__file__).resolve().parents[1])  # the keystile under test
    env = {
        **os.environ,
        "TEST_CONFIG": json.dumps(config),
        "KEYSTILE_PEPPER": PEPPER.decode(),
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    # The test binds the socket, so the request waits in its backlog until
    # uvicorn accepts: no port race and no polling for readiness.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, str(tmp_path / "server.py"), str(listener.fileno())],
            pass_fds=[listener.fileno()],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", f"{WIDGET}?token={token}&theme=dark", headers=dict([ORIGIN]))
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"theme=dark")
            conn.close()
        finally:
            server.terminate()
            try:
                log = server.communicate(timeout=20)[0].decode()
            except subprocess.TimeoutExpired:
                server.kill()
                log = server.communicate()[0].decode()
    assert f'"GET {WIDGET}?theme=dark HTTP/1.1" 200' in log, log
    assert token not in log


# -- 2. no repr of keystile's shows a credential ---------------------------------------

CREDENTIAL_WAYS = [
    pytest.param("/api/v1/events", [("authorization", "Bearer {s}")], "", 200, id="bearer"),
    pytest.param("/api/v1/events", [("x-api-key", "{s}")], "", 200, id="x-api-key"),
    pytest.param(WIDGET, [ORIGIN], "theme=dark&token={e}", 200, id="query-token"),
    pytest.param(WIDGET, [ORIGIN, ("x-embed-token", "{e}")], "", 200, id="x-embed-token"),
    pytest.param(
        "/api/v1/events", [("authorization", "Bearer {s},{s}")], "", 400, id="malformed-bearer"
    ),
]


def _keystile_objects(root: object, depth: int = 4) -> Iterator[object]:
    """``root`` and what it holds, down to ``depth``: the objects of keystile's own types."""
    seen: set[int] = set()
    todo = [(root, 0)]
    while todo:
        obj, level = todo.pop()
        if id(obj) in seen or level > depth or isinstance(obj, str | bytes | int | float):
            continue
        seen.add(id(obj))
        if type(obj).__module__.startswith("keystile"):
            yield obj
        if isinstance(obj, dict):
            children = [*obj.keys(), *obj.values()]
        elif isinstance(obj, list | tuple | set | frozenset):
            children = list(obj)
        else:
            names = [*getattr(type(obj), "__slots__", ()), *getattr(obj, "__dict__", {})]
            children = [getattr(obj, n) for n in names if hasattr(obj, n)]
        todo.extend((child, level + 1) for child in children)


@pytest.mark.parametrize(("path", "headers", "query", "status"), CREDENTIAL_WAYS)
@pytest.mark.parametrize("door", DOORS)
def test_no_repr_reachable_from_a_request_shows_the_credential(
    engine: Keystile,
    reader: str,
    embed: str,
    door: str,
    path: str,
    headers: list[tuple[str, str]],
    query: str,
    status: int,
) -> None:
    sent = [(n, v.format(s=reader, e=embed)) for n, v in headers]
    query = query.format(e=embed)
    if door == "asgi":
        view = view_from_scope(scope_for(path.encode(), sent, query))
    else:
        view = view_from_environ(environ_for(path, sent, query))
    objects: list[object] = [view]
    try:
        objects.append(read_credential(view, engine.config.credentials, embed_route=path == WIDGET))
    except Exception as exc:  # BadCredential: its message must not quote the value
        objects.append(exc)
    decision = engine.decide(view)
    objects.append(decision)
    assert (decision.status if isinstance(decision, Refusal) else 200) == status
    shown = [f(o) for root in objects for o in _keystile_objects(root) for f in (repr, str)]
    assert len(shown) >= 6  # the view, its headers, the credential, the decision...
    for text in shown:
        assert reader not in text and embed not in text
        assert reader[-12:] not in text and embed[-12:] not in text  # nor a piece of it


@pytest.mark.parametrize(("path", "headers", "query", "status"), CREDENTIAL_WAYS[:4])
@pytest.mark.parametrize("door", DOORS)
def test_a_traceback_with_locals_shows_no_credential_when_the_app_raises(
    engine: Keystile,
    reader: str,
    embed: str,
    door: str,
    path: str,
    headers: list[tuple[str, str]],
    query: str,
    status: int,
) -> None:
    """What an error tracker records: the locals of each keystile frame, by repr."""

    class AppFailed(Exception):
        pass

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        raise AppFailed

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        raise AppFailed

    sent = [(n, v.format(s=reader, e=embed)) for n, v in headers]
    query = query.format(e=embed)
    with pytest.raises(AppFailed) as info:
        if door == "asgi":
            call_asgi(
                ASGIMiddleware(asgi_app, engine=engine), scope_for(path.encode(), sent, query)
            )
        else:
            call_wsgi(WSGIMiddleware(wsgi_app, engine=engine), environ_for(path, sent, query))
    frames = traceback.TracebackException.from_exception(info.value, capture_locals=True).stack
    ours = [f for f in frames if "/keystile/" in f.filename and f.locals]
    door_class = ASGIMiddleware if door == "asgi" else WSGIMiddleware
    if not compiled(sys.modules[door_class.__module__]):
        # Compiled (the compiled build), a door leaves no frame and no locals at all.
        assert ours, "the middleware's own frame is in the traceback"
    for frame in ours:
        for name, text in (frame.locals or {}).items():
            if name in ("scope", "environ"):
                continue  # the server's own request, as the server built it
            assert reader not in text and embed not in text, (frame.name, name)


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
