"""SPEC section 11: with the defaults, a healthy Redis never causes a 503.

Every test here keeps the default ``limiter.timeout`` (250ms). It bounds a
sick server, and the process's own load must never read as one: threads
that wait for the GIL, an event loop that another task blocks, a burst
larger than the connection pool, a cold start that connects, learns a
cluster's slots and loads the script. A stalled Redis still answers 503 in
time, burst or not, and service returns without a restart.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import pytest

from keystile import Keystile
from keystile.asgi import KeystileMiddleware as ASGIMiddleware
from keystile.wsgi import KeystileMiddleware as WSGIMiddleware
from tests.conftest import PEPPER
from tests.doors import DOORS, Door, echo_asgi
from tests.redis_cluster import node_answers, nodes_of
from tests.tcp_proxy import TcpProxy
from tests.test_limits import redis_storage
from tests.test_limits_exact import _asgi_get
from tests.test_limits_redis import REDIS, through

N = 100
EXACT = {200: 5, 429: 95}  # 100 requests against 5/minute


def config(storage: str, store: str = "memory://") -> dict[str, Any]:
    return {
        "store": store,
        "limiter": {"storage": storage},  # the default strategy and timeout
        "limits": {"key": "5/minute"},
        "routes": [{"path": "/api/v1/events", "methods": ["GET"]}],
        "default": "deny",
    }


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from redis_storage()


async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    """The echo app, which also answers the lifespan events as a framework does."""
    if scope["type"] != "lifespan":
        await echo_asgi(scope, receive, send)
        return
    while True:
        event = (await receive())["type"]
        await send({"type": f"{event}.complete"})
        if event == "lifespan.shutdown":
            return


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[None]:
    """Run the ASGI lifespan around a block, as a server does around its requests."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    running = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await running


def wsgi_burst(
    door: Door, secret: str, n: int, meanwhile: Callable[[], None] | None
) -> Counter[int]:
    """``n`` simultaneous requests from threads; ``meanwhile`` runs in one more thread."""
    start = threading.Barrier(n + (meanwhile is not None))

    def one(_: int) -> int:
        start.wait()
        return door("GET", "/api/v1/events", key=secret).status

    def other() -> None:
        start.wait()
        time.sleep(0.01)  # let the requests reach Redis first
        assert meanwhile is not None
        meanwhile()

    with ThreadPoolExecutor(n + 1) as pool:
        if meanwhile is not None:
            pool.submit(other)
        return Counter(pool.map(one, range(n)))


async def asgi_burst(
    app: Any, secret: str, n: int, meanwhile: Callable[[], None] | None
) -> Counter[int]:
    """``n`` simultaneous requests as tasks; ``meanwhile`` runs on the loop after they are sent."""

    async def other() -> int:
        assert meanwhile is not None
        meanwhile()
        return 0

    requests = [_asgi_get(app, secret) for _ in range(n)]
    statuses = await asyncio.gather(*requests, *([other()] if meanwhile else []))
    return Counter(statuses[:n])


def hold_the_gil(seconds: float) -> None:
    """Keep the GIL, as a C extension busy with CPU work does (``PyDLL`` never releases it)."""
    ctypes.PyDLL(None).usleep(int(seconds * 1_000_000))


def block_the_loop(seconds: float) -> None:
    """Block the running event loop, as a handler that makes a blocking call does."""
    time.sleep(seconds)


# -- a busy process ------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_a_busy_process_never_turns_a_counted_request_into_a_503(kind: str, redis_url: str) -> None:
    # The first burst fills the connection pool; during the second, another
    # thread holds the GIL (WSGI) or another task blocks the loop (ASGI) for
    # longer than limiter.timeout while the replies are coming in.
    with Keystile(config(redis_url), pepper=PEPPER) as ks:
        first, second = (str(ks.keys.create(name=n, org="acme").secret) for n in ("a", "b"))
        if kind == "wsgi":
            door = Door("wsgi", ks)
            assert wsgi_burst(door, first, N, None) == EXACT
            assert wsgi_burst(door, second, N, lambda: hold_the_gil(0.4)) == EXACT
            return
        app = ASGIMiddleware(lifespan_app, ks)

        async def main() -> list[Counter[int]]:
            async with serving(app):
                return [
                    await asgi_burst(app, first, N, None),
                    await asgi_burst(app, second, N, lambda: block_the_loop(0.4)),
                ]

        assert asyncio.run(main()) == [EXACT, EXACT]


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_more_concurrent_requests_than_connections_wait_their_turn(
    kind: str, redis_url: str
) -> None:
    storage = f"{redis_url}&max_connections=3"  # 100 requests share 3 connections
    with Keystile(config(storage), pepper=PEPPER) as ks:
        secret = str(ks.keys.create(name="hot", org="acme").secret)
        if kind == "wsgi":
            assert wsgi_burst(Door("wsgi", ks), secret, N, None) == EXACT
            return
        app = ASGIMiddleware(lifespan_app, ks)

        async def main() -> Counter[int]:
            async with serving(app):
                return await asgi_burst(app, secret, N, None)

        assert asyncio.run(main()) == EXACT


# -- a sick Redis is still caught in time ---------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_a_burst_during_a_stall_is_refused_in_time_and_service_returns(kind: str) -> None:
    with TcpProxy(REDIS.hostname or "127.0.0.1", REDIS.port or 6379) as proxy:
        for storage in through(proxy):
            # 10 connections for 100 requests: waiting in turn for a stalled
            # server would take 10 timeouts; the queue gives up at the first.
            cfg = config(f"{storage}&max_connections=10")
            with Keystile(cfg, pepper=PEPPER) as ks:
                secret = str(ks.keys.create(name="k", org="acme").secret)
                statuses, took = _stalled_burst(kind, ks, secret, proxy)
            assert statuses == {503: N}
            assert took < 1.0  # limiter.timeout is 250ms: one timeout and slack, not ten


def _stalled_burst(kind: str, ks: Keystile, secret: str, proxy: TcpProxy) -> tuple[Any, float]:
    """A burst while Redis hangs: its statuses and how long it took; before and after, a 200."""
    if kind == "wsgi":
        door = Door("wsgi", ks)
        assert door("GET", "/api/v1/events", key=secret).status == 200
        proxy.stall()
        started = time.monotonic()
        statuses = wsgi_burst(door, secret, N, None)
        took = time.monotonic() - started
        proxy.restore()
        assert door("GET", "/api/v1/events", key=secret).status == 200  # no restart needed
        return statuses, took
    app = ASGIMiddleware(lifespan_app, ks)

    async def main() -> tuple[Any, float]:
        async with serving(app):
            assert await _asgi_get(app, secret) == 200
            proxy.stall()
            started = time.monotonic()
            statuses = await asgi_burst(app, secret, N, None)
            took = time.monotonic() - started
            proxy.restore()
            assert await _asgi_get(app, secret) == 200
            return statuses, took

    return asyncio.run(main())


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_a_cluster_that_hangs_at_first_use_refuses_a_burst_in_time_then_serves(
    kind: str, cluster: str
) -> None:
    # The calls that wait while the first one tries to learn the slot map
    # give up with it, instead of trying in turn, one timeout each.
    with TcpProxy("127.0.0.1", nodes_of(cluster)[0]) as proxy:
        proxy.stall()
        storage = f"redis+cluster://127.0.0.1:{proxy.port}?key_prefix=hang-{time.time_ns()}"
        with Keystile(config(storage), pepper=PEPPER) as ks:
            secret = str(ks.keys.create(name="k", org="acme").secret)
            if kind == "wsgi":
                door = Door("wsgi", ks)  # its warm-up gets no answer: logged, start goes on
                started = time.monotonic()
                statuses = wsgi_burst(door, secret, N, None)
                took = time.monotonic() - started
                proxy.restore()
                after = door("GET", "/api/v1/events", key=secret).status
            else:
                app = ASGIMiddleware(lifespan_app, ks)

                async def main() -> tuple[Counter[int], float, int]:
                    started = time.monotonic()
                    statuses = await asgi_burst(app, secret, N, None)  # no lifespan: cold
                    took = time.monotonic() - started
                    proxy.restore()
                    return statuses, took, await _asgi_get(app, secret)

                statuses, took, after = asyncio.run(main())
    assert statuses == {503: N}
    assert took < 1.0  # one timeout and slack, not one per waiting call
    assert after == 200  # no restart needed


# -- a cold start on a Redis Cluster ----------------------------------------------------


def _cold_process(kind: str, storage: str, start: Any, out: Any) -> None:
    """One server process: build the engine and its door, then serve a burst at once."""
    start.wait()  # the three processes start together
    with Keystile(config(storage), pepper=PEPPER) as ks:
        secret = str(ks.keys.create(name="hot", org="acme").secret)  # this process's own
        if kind == "wsgi":
            door = Door("wsgi", ks)  # WSGIMiddleware warms the limiter when built
            out.put(list(wsgi_burst(door, secret, 30, None).elements()))
            return
        app = ASGIMiddleware(lifespan_app, ks)

        async def main() -> Counter[int]:
            async with serving(app):  # lifespan startup warms the limiter
                return await asgi_burst(app, secret, 30, None)

        out.put(list(asyncio.run(main()).elements()))


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_three_processes_starting_on_a_cluster_serve_their_first_burst_without_503(
    kind: str, cluster: str
) -> None:
    for port in nodes_of(cluster):  # a cluster that has never seen the script
        node_answers(port, "SCRIPT", "FLUSH")
    storage = f"{cluster}?key_prefix=cold-{time.time_ns()}"
    # Forked from a server that imported this module once: the processes
    # start with cold engines, without each paying for Python's imports.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    start, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_cold_process, args=(kind, storage, start, out)) for _ in range(3)]
    for proc in procs:
        proc.start()
    try:
        statuses = Counter(s for _ in procs for s in out.get(timeout=60))
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert statuses == {200: 3 * 5, 429: 3 * 25}  # each process's key: 5 of its 30


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_start_loads_the_script_on_every_primary_before_any_request(
    kind: str, cluster: str
) -> None:
    nodes = nodes_of(cluster)
    with Keystile(config(f"{cluster}?key_prefix=warm-{time.time_ns()}"), pepper=PEPPER) as ks:
        limiter: Any = ks.limiter
        for port in nodes:
            node_answers(port, "SCRIPT", "FLUSH")

        def loaded() -> list[bool]:
            return [bool(node_answers(port, "SCRIPT", "EXISTS", limiter.sha)[0]) for port in nodes]

        if kind == "wsgi":
            WSGIMiddleware(lambda environ, start_response: [], ks)
            assert loaded() == [True] * 3
            return

        async def main() -> list[bool]:
            async with serving(ASGIMiddleware(lifespan_app, ks)):
                return loaded()

        assert asyncio.run(main()) == [True] * 3
