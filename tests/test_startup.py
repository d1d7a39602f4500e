"""A bad config, a missing pepper or an unreachable store fails the server's start.

ASGI: the lifespan startup is answered with ``lifespan.startup.failed`` and
the reason, also when Starlette builds the middleware lazily inside that
very lifespan call (``app.add_middleware``), where an exception would read
as "lifespan unsupported" and turn into a 500 on every request. WSGI, which
has no start event: building the middleware raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from keystile import ConfigError, Keystile, StoreUnavailable
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware
from tests.conftest import PEPPER
from tests.doors import echo_asgi, echo_wsgi

ROUTES = [{"path": "/api/{rest:path}", "scopes": []}]
NO_PEPPER = "KEYSTILE_TEST_PEPPER_NOT_SET"  # an environment variable no one sets


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _faults(tmp_path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Config mappings that cannot start, and the words their reason must contain."""
    sqlite = f"sqlite:///{tmp_path / 'keys.db'}"
    return {
        "missing-pepper": (
            {"store": sqlite, "pepper_env": NO_PEPPER, "routes": ROUTES},
            f"environment variable {NO_PEPPER} is not set",
        ),
        "bad-config": (
            {"store": sqlite, "routes": [{"path": "/a", "methods": ["FETCH"]}]},
            "FETCH",
        ),
        "unreachable-store": (
            {
                "store": f"postgresql+psycopg://postgres@127.0.0.1:{_unused_port()}/test",
                "store_timeout": "2s",
                "routes": ROUTES,
            },
            "unavailable: connection refused",
        ),
    }


FAULTS = ["missing-pepper", "bad-config", "unreachable-store"]
LIFESPAN = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}


async def _lifespan(app: Any, *messages: str) -> list[dict[str, Any]]:
    """Run the lifespan as a server does: send ``messages``, return what the app answered."""
    inbox = [{"type": f"lifespan.{m}"} for m in messages]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app(dict(LIFESPAN), receive, send)
    return sent


@pytest.mark.parametrize("fault", FAULTS)
def test_a_starlette_app_that_cannot_start_keystile_fails_its_lifespan_startup(
    fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    config, reason = _faults(tmp_path)[fault]
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        started.append("app")
        yield

    app = Starlette(middleware=[Middleware(ASGIMiddleware, config=config)], lifespan=lifespan)
    sent = asyncio.run(_lifespan(app, "startup", "shutdown"))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert sent[0]["message"].startswith("keystile: ")
    assert reason in sent[0]["message"]
    assert started == []  # the app never started on a keystile that could not


def test_an_engine_handed_to_the_asgi_door_has_its_store_checked_at_startup(
    tmp_path: Path,
) -> None:
    config, reason = _faults(tmp_path)["unreachable-store"]
    with Keystile(config, pepper=PEPPER) as ks:
        sent = asyncio.run(_lifespan(ASGIMiddleware(_never, config=ks), "startup"))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert reason in sent[0]["message"]


def test_a_request_to_an_asgi_door_that_could_not_start_raises_the_reason(
    tmp_path: Path,
) -> None:
    # Only a server that runs no lifespan gets this far.
    config, reason = _faults(tmp_path)["missing-pepper"]

    async def build() -> ASGIMiddleware:
        return ASGIMiddleware(echo_asgi, config=config)  # inside a server's event loop

    door = asyncio.run(build())
    scope = {"type": "http", "method": "GET", "path": "/api/x", "headers": []}
    with pytest.raises(ConfigError, match=reason):
        asyncio.run(door(scope, _never, _never))


async def _never(*_: Any) -> Any:
    raise AssertionError("not reached")


def test_keystile_is_ready_before_the_app_starts_and_startup_completes_once(
    tmp_path: Path,
) -> None:
    ks = Keystile({"store": f"sqlite:///{tmp_path / 'keys.db'}", "routes": ROUTES}, pepper=PEPPER)
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        events.append("app starts")
        yield
        events.append("app stops")

    app = Starlette(middleware=[Middleware(ASGIMiddleware, config=ks)], lifespan=lifespan)
    sent = asyncio.run(_lifespan(app, "startup", "shutdown"))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["app starts", "app stops"]
    ks.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_wsgi_door_that_cannot_start_keystile_raises_when_built(
    fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    config, reason = _faults(tmp_path)[fault]
    error = StoreUnavailable if fault == "unreachable-store" else ConfigError
    with pytest.raises(error) as info:
        WSGIMiddleware(echo_wsgi, config=config)
    assert reason in str(info.value)


_UVICORN_APP = """
from starlette.applications import Starlette
from keystile.asgi import KeystileMiddleware

app = Starlette()
app.add_middleware(KeystileMiddleware, config="keystile.yaml")
"""


def test_uvicorn_without_the_pepper_exits_at_start_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "keystile.yaml").write_text(
        f"store: 'sqlite:///{tmp_path / 'keys.db'}'\nroutes:\n  - {{path: /api/x, scopes: []}}\n"
    )
    (tmp_path / "app.py").write_text(_UVICORN_APP)
    env = {k: v for k, v in os.environ.items() if k != "KEYSTILE_PEPPER"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    port = str(_unused_port())
    command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", port]
    started = time.monotonic()
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = server.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        _, stderr = server.communicate()
        pytest.fail(f"uvicorn was still serving after 15s:\n{stderr}")
    assert server.returncode != 0
    assert time.monotonic() - started < 15
    assert "environment variable KEYSTILE_PEPPER is not set" in stderr
    assert "lifespan' protocol appears unsupported" not in stderr
