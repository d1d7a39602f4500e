"""The Redis-family limiter: outages, timeouts, one round trip, Cluster, URIs.

Outages are real: the limiter talks to Redis through a loopback TCP proxy
(tests/tcp_proxy.py) that the test cuts or stalls. The Cluster tests run on
three ``redis-server`` nodes of the tests' own (tests/redis_cluster.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from keystile import Keystile
from keystile._redis_clients import parse_redis_uri
from keystile._redis_limiter import RedisLimiter
from keystile.config import LimiterConfig
from keystile.errors import ConfigError
from keystile.limiting import LimitCall, LimitSpec, parse_limits
from tests.conftest import PEPPER, REDIS_URL
from tests.doors import DOORS, Door
from tests.tcp_proxy import TcpProxy
from tests.test_limits import STRATEGIES, make_ks, redis_storage
from tests.test_limits_exact import _asgi_get

REDIS = urlsplit(REDIS_URL)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy(REDIS.hostname or "127.0.0.1", REDIS.port or 6379) as running:
        yield running


def through(proxy: TcpProxy) -> Iterator[str]:
    for url in redis_storage():
        yield url.replace(f"{REDIS.hostname}:{REDIS.port}", f"127.0.0.1:{proxy.port}")


# -- outages -----------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_redis_cut_fails_closed_with_503_then_recovers_without_restart(
    kind: str, proxy: TcpProxy
) -> None:
    for storage in through(proxy):
        ks = make_ks(storage, {"key": "100/minute"}, limiter={"timeout": "200ms"})
        with ks, Door(kind, ks) as door:
            secret = ks.keys.create(name="k", org="acme").secret
            assert door("GET", "/api/v1/events", key=secret).header("x-ratelimit-remaining") == "99"
            proxy.cut()
            down = door("GET", "/api/v1/events", key=secret)
            assert down.status == 503 and down.json["code"] == "UNAVAILABLE"
            assert int(down.header("retry-after") or 0) >= 1
            proxy.restore()
            back = door("GET", "/api/v1/events", key=secret)
            assert back.status == 200 and back.header("x-ratelimit-remaining") == "98"


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_redis_cut_fails_open_without_headers_and_logs_the_outage(
    kind: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    for storage in through(proxy):
        ks = make_ks(storage, {"key": "100/minute"}, limiter={"on_error": "open"})
        with ks, Door(kind, ks) as door:
            secret = ks.keys.create(name="k", org="acme").secret
            proxy.cut()
            with caplog.at_level(logging.ERROR, logger="keystile"):
                passed = door("GET", "/api/v1/events", key=secret)
            assert passed.status == 200 and passed.seen["key"] is not None
            assert not any(n.startswith(("x-ratelimit", "ratelimit")) for n in passed.headers)
            assert any("rate limiter unavailable" in r.getMessage() for r in caplog.records)
            proxy.restore()
            assert door("GET", "/api/v1/events", key=secret).header("x-ratelimit-limit") == "100"


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
def test_a_hung_redis_is_an_outage_within_the_timeout(kind: str, proxy: TcpProxy) -> None:
    for storage in through(proxy):
        ks = make_ks(storage, {"key": "100/minute"}, limiter={"timeout": "200ms"})
        with ks, Door(kind, ks) as door:
            secret = ks.keys.create(name="k", org="acme").secret
            assert door("GET", "/api/v1/events", key=secret).status == 200
            proxy.stall()
            started = time.monotonic()
            assert door("GET", "/api/v1/events", key=secret).status == 503
            assert time.monotonic() - started < 1.0  # bounded, not a hang
            proxy.restore()
            assert door("GET", "/api/v1/events", key=secret).status == 200


# -- one round trip per request, however many limits ------------------------------------


def _count_commands(client: Any, seen: list[tuple[Any, ...]]) -> None:
    real: Any = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        seen.append(args[:1])
        return real(*args, **options)

    client.execute_command = counting


@pytest.mark.redis
@pytest.mark.parametrize("kind", DOORS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_four_limits_cost_one_command(kind: str, strategy: str, redis_url: str) -> None:
    limits = {"key": "50/minute", "org": "90/minute", "plans": {"free": "70/minute"}}
    ks = make_ks(redis_url, limits, limiter={"strategy": strategy})
    with ks, Door(kind, ks) as door:
        secret = ks.keys.create(name="k", org="acme", plan="free").secret
        post = ("POST", "/api/v1/events/e1/results")  # the route's own limit is the fourth
        assert door(*post, key=secret).status == 200  # loads the script once
        limiter = ks.limiter
        assert isinstance(limiter, RedisLimiter)
        if kind == "wsgi":
            client = limiter._client()
        else:
            assert door._loop is not None
            client = door._loop.run_until_complete(limiter._loops.get()).client
        seen: list[tuple[Any, ...]] = []
        _count_commands(client, seen)
        reply = door(*post, key=secret)
        assert reply.status == 200 and reply.header("x-ratelimit-remaining") == "0"
        assert seen == [("EVALSHA",)]


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from redis_storage()


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_room_frees_up_when_the_window_passes(strategy: str, redis_url: str) -> None:
    limiter = RedisLimiter(LimiterConfig(storage=redis_url, strategy=strategy))
    specs = (LimitSpec(parse_limits("3/second")[0], "key:aging", "key"),)
    try:
        assert [limiter.hit_all(LimitCall(specs)).admitted for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        time.sleep(2.05)  # past the window, and past the sliding counter's previous one
        after = limiter.hit_all(LimitCall(specs))
        assert after.admitted and after.states[0].remaining == 2
    finally:
        limiter.close()


@pytest.mark.redis
def test_the_sliding_counter_names_no_later_reset_on_the_millisecond_its_window_ends(
    redis_url: str,
) -> None:
    # The current counter's window ends when its TTL reads one window: the
    # room it holds frees now, not a window later. A transaction runs the
    # PEXPIRE and the script on one frozen clock, so the TTL reads exactly that.
    limiter = RedisLimiter(
        LimiterConfig(storage=redis_url, strategy="sliding-window-counter", timeout=2)
    )
    spec = LimitSpec(parse_limits("5/minute")[0], "key:edge", "key")
    peek = LimitCall((spec,), peek=True)
    (previous, current), args = limiter.keys_and_args(peek)
    try:
        assert [limiter.hit_all(LimitCall((spec,))).admitted for _ in range(6)] == [True] * 5 + [
            False
        ]
        with limiter._client().pipeline(transaction=True) as pipe:
            pipe.pexpire(current, 60_000)
            pipe.eval(limiter.script, 2, previous, current, *args)
            _, reply = pipe.execute()
        result = limiter.result_of(peek, reply)
        assert not result.admitted
        assert result.states[0].reset == int(reply[1]) / 1000  # the script's own "now"
        time.sleep(0.01)  # some milliseconds on (and under 12 s), the window has moved
        later = limiter.hit_all(LimitCall((spec,)))
        assert later.admitted and later.states[0].remaining == 0
    finally:
        limiter.close()


@pytest.mark.redis
def test_the_moving_window_drops_hits_that_left_it_and_counts_the_rest(redis_url: str) -> None:
    limiter = RedisLimiter(LimiterConfig(storage=redis_url, strategy="moving-window"))
    call = LimitCall((LimitSpec(parse_limits("3 per 2 seconds")[0], "key:moving", "key"),))
    (key,), _ = limiter.keys_and_args(call)
    try:
        assert [limiter.hit_all(call).admitted for _ in range(2)] == [True, True]
        time.sleep(1.2)
        assert [limiter.hit_all(call).admitted for _ in range(2)] == [True, False]
        time.sleep(1.2)  # the first two hits have left the window, the third has not
        result = limiter.hit_all(call)
        assert result.admitted and result.states[0].remaining == 1
        assert limiter._client().llen(key) == 2  # only the window's hits are kept
        assert [limiter.hit_all(call).admitted for _ in range(2)] == [True, False]
    finally:
        limiter.close()


# -- Redis Cluster: three nodes of our own -------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cluster_admits_exactly_the_limit_from_threads_and_tasks(
    cluster: str, strategy: str
) -> None:
    storage = f"{cluster}?key_prefix=exact-{time.time_ns()}"
    limits = {"key": "5/minute", "org": "50/minute"}  # two limits, one slot
    ks = make_ks(storage, limits, limiter={"strategy": strategy})
    with ks, Door("wsgi", ks) as door:
        hot = ks.keys.create(name="threads", org="acme").secret
        gate = threading.Barrier(100)

        def one(_: int) -> int:
            gate.wait()
            return door("GET", "/api/v1/events", key=hot).status

        with ThreadPoolExecutor(100) as pool:
            assert Counter(pool.map(one, range(100))) == {200: 5, 429: 95}

        from keystile.asgi import KeystileMiddleware
        from tests.doors import echo_asgi

        app = KeystileMiddleware(echo_asgi, ks)
        other = str(ks.keys.create(name="tasks", org="globex").secret)

        async def burst() -> list[int]:
            try:
                return list(await asyncio.gather(*(_asgi_get(app, other) for _ in range(100))))
            finally:
                await ks.arelease()

        assert Counter(asyncio.run(burst())) == {200: 5, 429: 95}


@pytest.mark.redis
def test_cluster_refusal_spends_nothing_and_orgs_spread_over_slots(cluster: str) -> None:
    from redis.crc import key_slot

    storage = f"{cluster}?key_prefix=aon-{time.time_ns()}"
    limiter = RedisLimiter(LimiterConfig(storage=storage))
    minute = parse_limits("10/minute")[0]
    three = parse_limits("3/minute")[0]

    def call(org: str, key_id: str) -> LimitCall:
        shard = f"org:{org}"
        return LimitCall(
            (
                LimitSpec(minute, f"key:{key_id}", "key", shard),
                LimitSpec(three, f"org:{org}", "org", shard),
            )
        )

    try:
        assert [limiter.hit_all(call("acme", k)).admitted for k in "aab"] == [True] * 3
        assert not limiter.hit_all(call("acme", "a")).admitted
        key_a = limiter.hit_all(LimitCall(call("acme", "a").specs[:1], peek=True))
        assert key_a.states[0].remaining == 8  # the org's refusal spent none of the key's
        slots = {
            org: {key_slot(k.encode()) for k in limiter.keys_and_args(call(org, "x"))[0]}
            for org in ("acme", "globex")
        }
        assert all(len(s) == 1 for s in slots.values())  # one request, one slot
        assert slots["acme"] != slots["globex"]  # orgs spread over the cluster
    finally:
        limiter.close()


# -- storage URIs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "kind", "where"),
    [
        pytest.param("redis://:pw@h:6380/2", "single", "redis://:pw@h:6380/2", id="redis"),
        pytest.param("rediss://h:6380", "single", "rediss://h:6380", id="tls"),
        pytest.param("valkey://h:6379/1", "single", "redis://h:6379/1", id="valkey"),
        pytest.param("redis+unix:///run/r.sock", "single", "unix:///run/r.sock", id="unix"),
        pytest.param("async+redis://h:1", "single", "redis://h:1", id="limits-async-spelling"),
        pytest.param(
            "redis://h:1/0?key_prefix=app1&ssl_cert_reqs=none",
            "single",
            "redis://h:1/0?ssl_cert_reqs=none",
            id="prefix-removed",
        ),
        pytest.param(
            "redis://h:1/0?max_connections=7&ssl_cert_reqs=none",
            "single",
            "redis://h:1/0?ssl_cert_reqs=none",
            id="max-connections-removed",
        ),
        pytest.param("redis+cluster://a:1,b:2", "cluster", (("a", 1), ("b", 2)), id="cluster"),
        pytest.param("valkey+cluster://a:1", "cluster", (("a", 1),), id="valkey-cluster"),
        pytest.param(
            "redis+sentinel://u:pw@s1:26379,s2:26380/mymaster",
            "sentinel",
            (("s1", 26379), ("s2", 26380)),
            id="sentinel",
        ),
    ],
)
def test_storage_uris_parse_as_limits_reads_them(uri: str, kind: str, where: Any) -> None:
    target = parse_redis_uri(uri)
    assert target.kind == kind
    assert (target.url if kind == "single" else target.locations) == where
    assert target.key_prefix == ("app1" if "key_prefix" in uri else "keystile")
    assert target.connections == (7 if "max_connections" in uri else 50)
    if kind == "sentinel":
        assert (target.service, target.username, target.password) == ("mymaster", "u", "pw")
    assert "pw" not in repr(target)


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("redis+sentinel://s1:26379", id="sentinel-without-service"),
        pytest.param("redis+cluster://a,b:2", id="cluster-host-without-port"),
        pytest.param("memcached://h:11211", id="not-redis"),
        pytest.param("redis://h:1?max_connections=0", id="no-connections"),
        pytest.param("redis+cluster://a:1?max_connections=many", id="connections-not-a-number"),
    ],
)
def test_bad_redis_uris_are_config_errors(uri: str) -> None:
    with pytest.raises(ConfigError):
        parse_redis_uri(uri)


def test_sentinel_uri_builds_a_master_client_without_connecting() -> None:
    limiter = RedisLimiter(LimiterConfig(storage="redis+sentinel://127.0.0.1:1/mymaster"))
    client = limiter._client()  # lazily discovers the master: no connection yet
    assert type(client).__name__ == "Redis"
    assert client.connection_pool.service_name == "mymaster"
    limiter.close()


def test_a_redis_storage_picks_the_lua_limiter_and_memcached_the_library() -> None:
    from keystile._memory_limiter import MemoryLimiter
    from keystile.limiter import StrategyLimiter, open_limiter

    assert isinstance(open_limiter(LimiterConfig(storage="redis://127.0.0.1:1")), RedisLimiter)
    assert isinstance(open_limiter(LimiterConfig(storage="memory://")), MemoryLimiter)
    memcached = open_limiter(
        LimiterConfig(storage="memcached://127.0.0.1:1", strategy="fixed-window")
    )
    assert isinstance(memcached, StrategyLimiter)
    ks = Keystile({"store": "memory://", "limiter": {"storage": "nosuch://x"}}, pepper=PEPPER)
    with pytest.raises(ConfigError), ks:
        assert ks.limiter is None
