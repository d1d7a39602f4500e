"""SPEC section 4 step 4: the failed-auth budget, exact under concurrency and
free for clean callers, with addresses read as SPEC says (ports ignored, an
IPv6 address as its /64, a Unix socket peer never in a shared bucket).

Every request behaviour runs through the ASGI and the WSGI door, on the
memory limiter and on Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from passlib.context import CryptContext

from keystile import Keystile
from keystile.config import load_config
from keystile.errors import ConfigError
from keystile.stores.base import StoreCall
from tests.conftest import PEPPER
from tests.doors import DOORS, Door
from tests.test_limits import redis_storage

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
ROUTES: list[dict[str, Any]] = [{"path": "/api/v1/events", "methods": ["GET"]}]


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    ]
)
def storage(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    else:
        yield from redis_storage()


@pytest.fixture(params=DOORS)
def door_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opened() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for thing in reversed(made):
        thing.close()


def open_door(
    opened: list[Any],
    kind: str,
    storage: str,
    limits: dict[str, Any],
    strategy: str = "moving-window",
    **options: Any,
) -> tuple[Door, Keystile]:
    config = {
        "store": "memory://",
        "limiter": {"storage": storage, "strategy": strategy},
        "limits": {"key": None, **limits},
        "routes": ROUTES,
        "default": "deny",
        **options,
    }
    ks = Keystile(config, pepper=PEPPER)
    door = Door(kind, ks)
    opened += [ks, door]
    return door, ks


def slow_store_lookups(ks: Keystile, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the store's key lookups, each made to take 20 ms (as over a network).

    The store itself still answers; the delay only widens the window in
    which concurrent requests could all pass a check made before it.
    """
    seen: list[str] = []
    perform, aperform = ks._perform, ks._aperform

    def counted(effect: Any) -> Any:
        if isinstance(effect, StoreCall) and effect.op in ("find_by_digest", "find_imported"):
            seen.append(effect.op)
            time.sleep(0.02)
        return perform(effect)

    async def acounted(effect: Any) -> Any:
        if isinstance(effect, StoreCall) and effect.op in ("find_by_digest", "find_imported"):
            seen.append(effect.op)
            await asyncio.sleep(0.02)
        return await aperform(effect)

    monkeypatch.setattr(ks, "_perform", counted)
    monkeypatch.setattr(ks, "_aperform", acounted)
    return seen


# -- exact under concurrency ------------------------------------------------------------


def test_concurrent_unknown_keys_from_one_address_ask_the_store_at_most_the_budget(
    door_kind: str, storage: str, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    door, ks = open_door(opened, door_kind, storage, {"failed_auth": "20/minute"})
    lookups = slow_store_lookups(ks, monkeypatch)
    guesses = [ks.formats["secret"].generate() for _ in range(150)]
    replies = door.burst([{"key": g, "client": "10.1.2.3"} for g in guesses])
    assert len(lookups) == 20
    assert Counter(r.status for r in replies) == {401: 20, 429: 130}
    # Another address has its own budget.
    assert door("GET", "/api/v1/events", key=guesses[0], client="10.1.2.4").status == 401


def test_concurrent_guesses_of_an_imported_key_run_at_most_the_budget_of_slow_hashes(
    door_kind: str, storage: str, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    door, ks = open_door(
        opened, door_kind, storage, {"failed_auth": "5/minute"}, imported_keys=True
    )
    legacy = "Xyz98765.correct-horse-battery-staple-0000"
    hashed = CryptContext(schemes=["pbkdf2_sha256"]).hash(legacy)
    ks.keys.import_key("old", hash=hashed, lookup_prefix="Xyz98765", org="acme")
    hashes: list[str] = []
    verify = ks._verify_imported

    def counting(effect: Any) -> bool:
        hashes.append(effect.hash)
        return bool(verify(effect))

    monkeypatch.setattr(ks, "_verify_imported", counting)
    slow_store_lookups(ks, monkeypatch)
    guesses = [f"Xyz98765.guess-{i:04d}-{uuid.uuid4().hex}" for i in range(60)]
    replies = door.burst([{"key": g, "client": "10.1.2.3"} for g in guesses])
    assert len(hashes) <= 5
    assert Counter(r.status for r in replies) == {401: 5, 429: 55}


# -- a valid key gets its unit back; a spent address is refused all the same --------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_valid_keys_never_spend_the_budget_and_a_spent_address_is_refused(
    door_kind: str, storage: str, strategy: str, opened: list[Any]
) -> None:
    door, ks = open_door(opened, door_kind, storage, {"failed_auth": "3/minute"}, strategy)
    keys = [str(ks.keys.create(name=f"k{i}", org="acme").secret) for i in range(10)]
    # Ten keys the cache has never seen: each costs a lookup, none a unit.
    assert [door("GET", "/api/v1/events", key=k, client="10.0.0.9").status for k in keys] == [
        200
    ] * 10
    bad = keys[0][:-2] + "xx"
    failures = [door("GET", "/api/v1/events", key=bad, client="10.0.0.9") for _ in range(3)]
    assert [r.status for r in failures] == [401, 401, 401]
    assert [r.header("x-ratelimit-remaining") for r in failures] == ["2", "1", "0"]
    # Spent: a key the cache vouches for is refused, as is one it does not know.
    cached = door("GET", "/api/v1/events", key=keys[1], client="10.0.0.9")
    assert cached.status == 429 and "failed authentication" in cached.json["error"]
    assert cached.header("retry-after") is not None
    ks.cache.clear()
    assert door("GET", "/api/v1/events", key=keys[2], client="10.0.0.9").status == 429
    assert door("GET", "/api/v1/events", key=keys[2], client="10.0.0.10").status == 200


def test_a_valid_key_refused_for_scope_still_gets_its_unit_back(
    door_kind: str, storage: str, opened: list[Any]
) -> None:
    door, ks = open_door(
        opened,
        door_kind,
        storage,
        {"failed_auth": "2/minute"},
        routes=[{"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]}],
    )
    keys = [str(ks.keys.create(name=f"k{i}", org="acme").secret) for i in range(4)]
    assert [door("GET", "/api/v1/events", key=k, client="10.0.0.5").status for k in keys] == [
        403
    ] * 4
    # The budget is whole: two failures still pass as 401.
    assert [door("GET", "/api/v1/events", client="10.0.0.5").status for _ in range(3)] == [
        401,
        401,
        429,
    ]
    # And a key the cache vouches for, refused for scope, hears 429 first.
    assert door("GET", "/api/v1/events", key=keys[0], client="10.0.0.5").status == 429


# -- one round trip for a cached key, whatever is configured --------------------------------


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test's own, so that its command counts are this test's alone."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


# What the Lua scripts call (keystile/lua/*.lua); INFO counts those as well.
SCRIPT_COMMANDS = {
    "time", "get", "set", "incr", "decr", "pttl", "exists", "rename", "llen", "lindex",
    "lpush", "lpop", "ltrim", "pexpire",
}  # fmt: skip


def _command_calls(url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_admitted_request_with_a_cached_key_is_one_round_trip(
    door_kind: str, strategy: str, private_redis: str, opened: list[Any]
) -> None:
    import redis

    limits = {"failed_auth": "20/minute", "key": "1000/hour", "org": "10000/day"}
    door, ks = open_door(
        opened,
        door_kind,
        private_redis,
        limits,
        strategy,
        routes=[{"path": "/api/v1/events", "methods": ["GET"], "limit": "500/minute"}],
        # Every request below must find the key cached, however slow the machine.
        cache={"ttl": "10m"},
    )
    secret = str(ks.keys.create(name="hot", org="acme", plan="pro").secret)
    assert door("GET", "/api/v1/events", key=secret).status == 200
    # The invalidation channel, once subscribed, clears the cache (it may have
    # missed messages): wait for it, then cache the key for good.
    assert ks.invalidator is not None and ks.invalidator.subscribed.wait(10)
    assert door("GET", "/api/v1/events", key=secret).status == 200  # now cached
    client = redis.Redis.from_url(private_redis)
    client.config_resetstat()
    client.close()
    replies = [door("GET", "/api/v1/events", key=secret) for _ in range(100)]
    assert {r.status for r in replies} == {200}
    calls = _command_calls(private_redis)
    # Commands a script runs are counted too: anything else would be a
    # second round trip.
    # The counting client's own commands (its handshake, the reset, INFO) are not ours.
    harness = {"hello", "config|resetstat", "info", "client|setinfo"}
    ours = {n: c for n, c in calls.items() if n not in SCRIPT_COMMANDS | harness}
    assert ours == {"evalsha": 100}


# -- addresses: ports ignored, IPv6 as its /64, Unix sockets never shared -------------------

TRUSTED = ["10.9.0.0/16"]
# (first caller, second caller, trusted_proxies, whether they share one budget).
# A caller is (peer, X-Forwarded-For or None); None as peer is a Unix socket.
ADDRESS_CASES = [
    pytest.param((None, None), (None, None), [], False, id="unix-peers-never-share"),
    pytest.param(
        (None, "1.1.1.1"), (None, "1.1.1.1"), [], False, id="unix-peer-untrusted-xff-ignored"
    ),
    pytest.param(
        (None, "1.1.1.1"), (None, "2.2.2.2"), ["unix"], False, id="unix-trusted-reads-xff"
    ),
    pytest.param(
        (None, "1.1.1.1"), (None, "9.9.9.9, 1.1.1.1"), ["unix"], True, id="unix-trusted-same-client"
    ),
    pytest.param(
        ("10.9.0.1", "1.1.1.1:5678"),
        ("10.9.0.1", "2.2.2.2:443"),
        TRUSTED,
        False,
        id="xff-hop-with-port",
    ),
    pytest.param(
        ("10.9.0.1", "1.1.1.1:5678"),
        ("10.9.0.2", "1.1.1.1:80"),
        TRUSTED,
        True,
        id="xff-same-address-other-port",
    ),
    pytest.param(
        ("10.9.0.1", "[2001:db8:0:1::1]:443"),
        ("10.9.0.1", "[2001:db8:0:2::1]:443"),
        TRUSTED,
        False,
        id="xff-bracketed-ipv6-with-port",
    ),
    pytest.param(
        ("10.9.0.1", "[2001:db8:0:1::1]:443"),
        ("10.9.0.1", "2001:db8:0:1:ffff::9"),
        TRUSTED,
        True,
        id="xff-ipv6-same-64",
    ),
    pytest.param(
        ("2001:db8:0:1::1", None), ("2001:db8:0:1:abcd::2", None), [], True, id="ipv6-same-64"
    ),
    pytest.param(
        ("2001:db8:0:1::1", None), ("2001:db8:0:2::1", None), [], False, id="ipv6-other-64"
    ),
    pytest.param(("::ffff:1.2.3.4", None), ("1.2.3.4", None), [], True, id="ipv4-mapped-is-ipv4"),
    pytest.param(("1.2.3.4", None), ("1.2.3.5", None), [], False, id="ipv4-per-address"),
    pytest.param(
        ("10.9.0.1", "1.1.1.1"), ("10.9.0.1", "bogus"), TRUSTED, False, id="garbled-xff-is-proxy"
    ),
]


@pytest.mark.parametrize(("first", "second", "trusted", "shared"), ADDRESS_CASES)
def test_which_callers_share_a_failed_auth_budget(
    door_kind: str,
    opened: list[Any],
    first: tuple[str | None, str | None],
    second: tuple[str | None, str | None],
    trusted: list[str],
    shared: bool,
) -> None:
    door, _ = open_door(
        opened, door_kind, "memory://", {"failed_auth": "2/minute"}, trusted_proxies=trusted
    )

    def send(caller: tuple[str | None, str | None]) -> int:
        peer, forwarded = caller
        headers = [] if forwarded is None else [("X-Forwarded-For", forwarded)]
        return door("GET", "/api/v1/events", headers, client=peer).status

    assert [send(first), send(first)] == [401, 401]
    assert send(second) == (429 if shared else 401)


def test_a_unix_socket_peer_is_never_locked_out_by_another(
    door_kind: str, opened: list[Any]
) -> None:
    door, ks = open_door(opened, door_kind, "memory://", {"failed_auth": "20/minute"})
    secret = str(ks.keys.create(name="good", org="acme").secret)
    assert {door("GET", "/api/v1/events", client=None).status for _ in range(25)} == {401}
    assert door("GET", "/api/v1/events", key=secret, client=None).status == 200


@pytest.mark.parametrize(
    ("entries", "ok"),
    [
        pytest.param(["unix"], True, id="unix"),
        pytest.param(["unix", "10.0.0.0/8", "fd00::/8"], True, id="unix-and-cidrs"),
        pytest.param(["unix-socket"], False, id="not-unix"),
        pytest.param(["10.0.0.7/8"], False, id="host-bits"),
    ],
)
def test_trusted_proxies_take_cidrs_and_unix(tmp_path: Any, entries: list[str], ok: bool) -> None:
    path = tmp_path / "keystile.yaml"
    path.write_text(
        "store: memory://\ntrusted_proxies:\n" + "".join(f"  - {e!r}\n" for e in entries),
        encoding="utf-8",
    )
    if ok:
        config = load_config(path)
        assert config.trust_unix_socket is ("unix" in entries)
        assert len(config.trusted_proxies) == len(entries) - ("unix" in entries)
    else:
        with pytest.raises(ConfigError, match=r"keystile\.yaml:3"):
            load_config(path)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_unit_given_back_leaves_no_bucket_behind(strategy: str) -> None:
    from keystile._memory_limiter import MemoryLimiter
    from keystile.limiting import LimitCall, LimitSpec, parse_limits

    limiter = MemoryLimiter(strategy, clock=lambda: 1000.0)
    (item,) = parse_limits("3/minute")
    auth = (LimitSpec(item, "auth:10.0.0.1", "failed_auth"),)
    assert limiter.hit_all(LimitCall(auth)).states[0].remaining == 2
    assert limiter.hit_all(LimitCall((), refund=auth)).admitted
    # Nothing left to count: the bucket is gone, so a guard on it is one dict lookup.
    assert "buckets=0" in repr(limiter)
    assert limiter.hit_all(LimitCall(auth, peek=True)).states[0].remaining == 3


def test_a_burst_of_one_valid_key_at_a_cache_miss_spends_no_budget(
    door_kind: str, storage: str, opened: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 concurrent requests of one client's valid key, cold cache, a budget of 5: all 200.

    They share one store lookup (slowed to 50 ms inside it, so they overlap)
    and spend nothing of the address's failed-auth budget.
    """
    door, ks = open_door(opened, door_kind, storage, {"failed_auth": "5/minute"})
    secret = str(ks.keys.create(name="busy", org="acme").secret)
    store = ks.store
    execute = store.execute
    lookups: list[str] = []

    def slow(op: str, *args: Any) -> Any:
        if op == "find_by_digest":
            lookups.append(op)
            time.sleep(0.05)
        return execute(op, *args)

    async def aslow(op: str, *args: Any) -> Any:
        if op == "find_by_digest":
            lookups.append(op)
            await asyncio.sleep(0.05)
        return execute(op, *args)

    monkeypatch.setattr(store, "execute", slow)
    monkeypatch.setattr(store, "aexecute", aslow)
    replies = door.burst([{"key": secret, "client": "10.1.2.3"}] * 40)
    assert Counter(r.status for r in replies) == {200: 40}
    assert 1 <= len(lookups) < 40
    # The budget is whole: five failures still answer 401, the sixth 429.
    statuses = [door("GET", "/api/v1/events", client="10.1.2.3").status for _ in range(6)]
    assert statuses == [401] * 5 + [429]
