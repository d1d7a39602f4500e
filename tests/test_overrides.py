"""SPEC section 10: org limit overrides at runtime (``ks.limits``).

An override replaces ``limits.org`` for one org, is kept in the key store
(every store), is audited, and reaches other processes as a revocation
does: within a second over Redis, within the cache TTL without it.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from keystile import KeyInputError, Keystile
from tests.conftest import PEPPER, REDIS_URL
from tests.doors import DOORS, Door


def engine(store: str, **config: Any) -> Keystile:
    return Keystile(
        {
            "store": store,
            "default": "authenticated",
            "limits": {"key": None, "org": "3/minute"},
            **config,
        },
        pepper=PEPPER,
    )


@pytest.fixture(params=DOORS)
def door_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_an_override_replaces_the_org_limit_for_that_org_only(door_kind: str) -> None:
    with engine("memory://") as ks, Door(door_kind, ks) as door:
        acme = ks.keys.create(name="a", org="acme").secret
        other = ks.keys.create(name="o", org="other").secret
        assert [door("GET", "/x", key=acme).status for _ in range(4)] == [200, 200, 200, 429]
        ks.limits.set_override(org="acme", limit="5/minute")
        replies = [door("GET", "/x", key=acme) for _ in range(6)]
        assert [r.status for r in replies] == [200] * 5 + [429]
        assert replies[0].header("x-ratelimit-limit") == "5"
        # Another org keeps the config's limit.
        assert [door("GET", "/x", key=other).status for _ in range(4)] == [200, 200, 200, 429]
        assert ks.limits.clear_override(org="acme") is True
        assert ks.limits.clear_override(org="acme") is False  # nothing left to clear
        # Back to limits.org, whose window still holds this org's three requests.
        assert door("GET", "/x", key=acme).status == 429


def test_overrides_are_kept_in_every_store_and_audited(store_url: str) -> None:
    with engine(store_url) as ks:
        ks.limits.set_override(org="acme", limit="100000/day")
        ks.limits.set_override(org="beta", limit="10/second;1000/hour")
        ks.limits.set_override(org="acme", limit="200000/day")  # a second set replaces
        assert ks.limits.clear_override(org="beta") is True
        ks.audit.flush()
        restart = engine(store_url) if store_url != "memory://" else ks  # memory:// has none
    with restart as again:
        assert again.limits.overrides() == {"acme": "200000/day"}
        events = again.audit.events(days=1)
        kinds = [(e.event, e.org, e.reason) for e in reversed(events)]
        assert kinds == [
            ("org.limit_override", "acme", "org limit is 100000/day"),
            ("org.limit_override", "beta", "org limit is 10/second;1000/hour"),
            ("org.limit_override", "acme", "org limit is 200000/day"),
            ("org.limit_cleared", "beta", "org limit from the config"),
        ]


@pytest.mark.parametrize(
    ("org", "limit", "field"),
    [
        pytest.param("acme", "lots", "limit", id="not-a-limit"),
        pytest.param("acme", "", "limit", id="empty-limit"),
        pytest.param("acme", 100, "limit", id="a-number"),
        pytest.param("acme", "10/fortnight", "limit", id="unknown-unit"),
        pytest.param("", "10/minute", "org", id="empty-org"),
        pytest.param("a\x00b", "10/minute", "org", id="control-character"),
        pytest.param("x" * 300, "10/minute", "org", id="too-long"),
        pytest.param(None, "10/minute", "org", id="no-org"),
    ],
)
def test_bad_input_is_refused_naming_the_field(org: Any, limit: Any, field: str) -> None:
    with engine("memory://") as ks:
        with pytest.raises(KeyInputError) as caught:
            ks.limits.set_override(org=org, limit=limit)
        assert caught.value.field == field
        assert ks.limits.overrides() == {}


@pytest.mark.anyio
async def test_async_twins() -> None:
    ks = engine("memory://")
    await ks.limits.aset_override(org="acme", limit="9/minute")
    assert await ks.limits.aoverrides() == {"acme": "9/minute"}
    assert await ks.limits.aclear_override(org="acme") is True
    assert await ks.limits.aoverrides() == {}
    await ks.aclose()


def _serve(store: str, storage: str, secret: str, ready: Any, go: Any, out: Any) -> None:
    with engine(store, limiter={"storage": storage}, cache={"ttl": "60s"}) as ks:
        door = Door("wsgi", ks)
        assert ks.invalidator is not None
        door("GET", "/x", key=secret)  # cached now, for a minute
        ks.invalidator.subscribed.wait(10)
        ready.set()
        go.wait(30)
        # The override was set in the other process: within a second, this
        # one applies it to a key it still holds in its cache.
        deadline = time.monotonic() + 1.0
        seen = None
        while time.monotonic() < deadline:
            seen = door("GET", "/x", key=secret).header("x-ratelimit-limit")
            if seen == "50":
                break
            time.sleep(0.02)
        out.put((seen, time.monotonic() - (deadline - 1.0)))


@pytest.mark.redis
def test_an_override_reaches_another_process_within_a_second_over_redis(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    storage = f"{REDIS_URL}?key_prefix=ovr{uuid.uuid4().hex[:8]}"
    with engine(store, limiter={"storage": storage}) as ks:
        secret = str(ks.keys.create(name="k", org="acme").secret)
        ctx = multiprocessing.get_context("spawn")
        ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
        other = ctx.Process(target=_serve, args=(store, storage, secret, ready, go, out))
        other.start()
        try:
            assert ready.wait(30)
            ks.limits.set_override(org="acme", limit="50/minute")
            go.set()
            seen, took = out.get(timeout=30)
        finally:
            other.join(10)
    assert seen == "50", f"the other process still applied limit {seen} after {took:.2f} s"
    assert took < 1.0
