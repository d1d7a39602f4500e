"""The doors themselves: start-up, outages, streaming, a non-blocking event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from keystile import ConfigError, Keystile
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.stores.memory import MemoryKeyStore
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware
from tests.conftest import PEPPER
from tests.doors import DOORS, Door, echo_asgi, echo_wsgi

ROUTES = [{"path": "/api/{rest:path}", "scopes": ["read"]}]


@pytest.mark.parametrize("door", DOORS)
def test_store_outage_is_503_never_401(door: str) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused.
    ks = Keystile(
        {
            "store": "postgresql+psycopg://postgres@127.0.0.1:1/test",
            "routes": ROUTES,
            "store_timeout": "1s",
        },
        pepper=PEPPER,
    )
    secret = ks.formats["secret"].generate()
    with Door(door, ks) as send:
        reply = send("GET", "/api/x", key=secret)
    assert reply.status == 503
    body = reply.json
    assert body == {
        "error": "the key store is unavailable; try again shortly",
        "code": "UNAVAILABLE",
        "status": 503,
    }
    assert reply.header("retry-after") == "5"
    assert reply.header("cache-control") == "no-store"
    assert secret not in reply.body.decode()
    ks.close()


@pytest.mark.parametrize("middleware", [ASGIMiddleware, WSGIMiddleware])
def test_bad_config_refuses_to_start_with_file_and_line(middleware: Any, tmp_path: Path) -> None:
    config = tmp_path / "keystile.yaml"
    config.write_text("store: 'memory://'\nroutes:\n  - {path: /a, methods: [FETCH]}\n")
    with pytest.raises(ConfigError) as info:
        middleware(echo_asgi, config=str(config))
    assert str(info.value).startswith(f"{config}:3:")


def test_config_mapping_is_accepted_by_both_doors() -> None:
    pairs: list[tuple[Any, Any]] = [(ASGIMiddleware, echo_asgi), (WSGIMiddleware, echo_wsgi)]
    for middleware, app in pairs:
        door = middleware(app, config={"store": "memory://", "routes": ROUTES})
        assert door.ks.config.routes[0].path == "/api/{rest:path}"


def test_streaming_response_streams_through_the_asgi_door() -> None:
    ks = Keystile({"store": "memory://", "routes": ROUTES}, pepper=PEPPER)
    key = ks.keys.create(name="s", scopes=["read"]).secret

    async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/s",
        "raw_path": b"/api/s",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {key}".encode())],
        "client": ("1.1.1.1", 1),
    }
    asyncio.run(ASGIMiddleware(streaming_app, ks)(scope, receive, send))
    assert [m.get("body") for m in sent[1:]] == [b"one", b"two", b"three", b""]
    assert (b"x-ratelimit-limit", b"1000") in sent[0]["headers"]
    ks.close()


class _GatedStore(MemoryKeyStore):
    """A memory store whose lookup of one digest waits until the test opens a gate.

    ``parked`` is set once that lookup is waiting at the gate, so a test
    knows the slow request is in the store, not merely scheduled.
    """

    def __init__(self) -> None:
        super().__init__()
        self.slow_digest = ""
        self.gate: asyncio.Event | None = None
        self.parked: asyncio.Event | None = None

    async def aexecute(self, op: str, *args: Any) -> Any:
        if op == "find_by_digest" and args[0] == self.slow_digest and self.gate is not None:
            assert self.parked is not None
            self.parked.set()
            await asyncio.wait_for(self.gate.wait(), timeout=5)
        return self.execute(op, *args)


def test_a_slow_lookup_does_not_delay_a_request_with_a_cached_key() -> None:
    store = _GatedStore()
    ks = Keystile({"store": "memory://", "routes": ROUTES}, pepper=PEPPER, store=store)
    cached = ks.keys.create(name="cached", scopes=["read"]).secret
    slow = ks.keys.create(name="slow", scopes=["read"]).secret
    store.slow_digest = ks.digest(slow)
    middleware = ASGIMiddleware(echo_asgi, ks)
    finished: list[str] = []

    async def request(name: str, key: str) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/x",
            "raw_path": b"/api/x",
            "query_string": b"",
            "root_path": "",
            "client": ("1.1.1.1", 1),
            "headers": [(b"authorization", f"Bearer {key}".encode())],
        }
        statuses: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        await middleware(scope, receive, send)
        finished.append(f"{name}:{statuses[0]}")

    async def scenario() -> None:
        await request("warm", cached)  # the cached key is now in the cache
        store.gate, store.parked = asyncio.Event(), asyncio.Event()
        slow_task = asyncio.create_task(request("slow", slow))
        await asyncio.wait_for(store.parked.wait(), timeout=5)  # the lookup waits on the store
        await request("cached", cached)
        assert finished == ["warm:200", "cached:200"]  # done while the lookup waits
        store.gate.set()
        await slow_task

    asyncio.run(scenario())
    assert finished == ["warm:200", "cached:200", "slow:200"]
    ks.close()


def test_django_works_by_wrapping_its_wsgi_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import sys

    from werkzeug.test import Client

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEYSTILE_PEPPER", PEPPER.decode())
    examples = Path(__file__).resolve().parent.parent / "examples"
    spec = importlib.util.spec_from_file_location(
        "keystile_example_django_wrap", examples / "django_app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from django.conf import settings

    # Without the Django middleware: keystile wraps the WSGI application instead.
    settings.MIDDLEWARE = []
    from django.core.wsgi import get_wsgi_application

    ks = Keystile(
        {
            "store": "memory://",
            "routes": [
                {"path": "/health", "public": True},
                {"path": "/api/v1/events", "scopes": ["events:read"]},
            ],
        },
        pepper=PEPPER,
    )
    key = ks.keys.create(name="dj", scopes=["events:read"], org="acme").secret

    try:
        client = Client(WSGIMiddleware(get_wsgi_application(), ks))
        assert client.get("/health").status_code == 200
        assert client.get("/api/v1/events").status_code == 401
        reply = client.get("/api/v1/events", headers={"x-api-key": key})
        body: Any = reply.json
        assert reply.status_code == 200 and body["org"] == "acme"
        assert reply.headers["X-RateLimit-Limit"] == "1000"
    finally:
        ks.close()
        settings.MIDDLEWARE = ["keystile.django.KeystileMiddleware"]
