"""SPEC section 4 step 11: 100 concurrent requests against 5/minute admit exactly 5.

With threads over WSGI, with asyncio tasks over ASGI, on memory and on
Redis (every strategy), and from three processes sharing Redis.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keystile import Keystile
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from tests.conftest import PEPPER
from tests.doors import Door, echo_asgi
from tests.test_limits import LIMITER_BACKENDS, STRATEGIES, redis_storage

N = 100
LIMIT = "5/minute"


def config(storage: str, strategy: str, store: str = "memory://") -> dict[str, Any]:
    return {
        "store": store,
        # The default limiter.timeout: 100 simultaneous requests on a cold
        # start must not read as an outage (SPEC section 11).
        "limiter": {"storage": storage, "strategy": strategy},
        "limits": {"key": LIMIT},
        "routes": [{"path": "/api/v1/events", "methods": ["GET"]}],
        "default": "deny",
    }


@pytest.fixture(params=LIMITER_BACKENDS)
def storage(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield "memory://"
    else:
        yield from redis_storage()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_threads_over_wsgi_admit_exactly_the_limit(storage: str, strategy: str) -> None:
    with Keystile(config(storage, strategy), pepper=PEPPER) as ks:
        secret = ks.keys.create(name="hot", org="acme").secret
        door = Door("wsgi", ks)
        start = threading.Barrier(N)

        def one(_: int) -> int:
            start.wait()
            return door("GET", "/api/v1/events", key=secret).status

        with ThreadPoolExecutor(N) as pool:
            statuses = Counter(pool.map(one, range(N)))
    assert statuses == {200: 5, 429: 95}


async def _asgi_get(app: Any, secret: str) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": None,
        "headers": [(b"authorization", f"Bearer {secret}".encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_asyncio_tasks_over_asgi_admit_exactly_the_limit(storage: str, strategy: str) -> None:
    with Keystile(config(storage, strategy), pepper=PEPPER) as ks:
        secret = str(ks.keys.create(name="hot", org="acme").secret)
        app = ASGIMiddleware(echo_asgi, ks)

        async def burst() -> list[int]:
            try:
                return list(await asyncio.gather(*(_asgi_get(app, secret) for _ in range(N))))
            finally:
                await ks.arelease()

        statuses = Counter(asyncio.run(burst()))
    assert statuses == {200: 5, 429: 95}


# -- three processes, one Redis -----------------------------------------------------------------


def _process(cfgs: list[dict[str, Any]], secret: str, count: int, start: Any, out: Any) -> None:
    """One worker process: per strategy, ``count`` simultaneous requests via its own engine."""
    for cfg in cfgs:
        with Keystile(cfg, pepper=PEPPER) as ks:
            door = Door("wsgi", ks)
            door("GET", "/health")  # warm up before the start line
            gate = threading.Barrier(count)

            def one(_: int, door: Door = door, gate: threading.Barrier = gate) -> int:
                gate.wait()
                return door("GET", "/api/v1/events", key=secret).status

            start.wait()  # all three processes at once
            with ThreadPoolExecutor(count) as pool:
                out.put((cfg["limiter"]["strategy"], list(pool.map(one, range(count)))))


@pytest.mark.redis
def test_three_processes_sharing_redis_admit_exactly_the_limit(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    prefixes = [redis_storage() for _ in STRATEGIES]
    try:
        cfgs = [
            config(next(prefix), strategy, store=store)
            for prefix, strategy in zip(prefixes, STRATEGIES, strict=True)
        ]
        with Keystile(cfgs[0], pepper=PEPPER) as ks:
            ks.init_store()
            secret = str(ks.keys.create(name="shared", org="acme").secret)
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Barrier(3), ctx.Queue()
        shares = [34, 33, 33]
        procs = [ctx.Process(target=_process, args=(cfgs, secret, n, start, out)) for n in shares]
        for proc in procs:
            proc.start()
        try:
            results: dict[str, Counter[int]] = {s: Counter() for s in STRATEGIES}
            for _ in range(len(procs) * len(STRATEGIES)):
                strategy, statuses = out.get(timeout=60)
                results[strategy].update(statuses)
        finally:
            for proc in procs:
                proc.join(timeout=30)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert results == {s: {200: 5, 429: 95} for s in STRATEGIES}
    finally:
        for prefix in prefixes:
            next(prefix, None)  # deletes its keys
