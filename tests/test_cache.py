"""The verified-key cache: TTLs, negative entries, a hard size bound."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import event

from keystile.cache import KeyCache
from keystile.stores.base import KeyRecord
from tests.conftest import make_engine
from tests.doors import DOORS, Door
from tests.test_reliability import door_store_engine


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def record(i: int) -> KeyRecord:
    return KeyRecord(
        id=f"key_{i}",
        digest=f"d{i}",
        prefix="sk_",
        last4="abcd",
        name="k",
        scopes=(),
        org="acme",
        owner=None,
        kind="bot",
        type="secret",
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )


def test_entries_live_for_the_ttl_and_negative_ones_for_less() -> None:
    clock = Clock()
    cache = KeyCache(2.0, negative_ttl=0.5, clock=clock)
    cache.put("d1", record(1))
    cache.put("unknown", None)
    assert cache.get("unknown") is None and cache.get("d1") == record(1)
    clock.now += 0.6
    assert cache.get("unknown") is KeyCache.MISSING
    assert cache.get("d1") == record(1)
    clock.now += 1.5
    assert cache.get("d1") is KeyCache.MISSING


def test_size_is_bounded_oldest_first() -> None:
    cache = KeyCache(60, size=100, clock=Clock())
    for i in range(1000):
        cache.put(f"d{i}", record(i))
        assert len(cache) <= 100
    assert cache.get("d999") == record(999)
    assert cache.get("d0") is KeyCache.MISSING
    assert len(cache._ids) <= 100  # the id index shrinks with it


def test_forget_by_id_and_by_digest() -> None:
    cache = KeyCache(60, clock=Clock())
    cache.put("d1", record(1))
    cache.put("d2", record(2))
    cache.forget_id("key_1")
    cache.forget_digest("d2")
    assert cache.get("d1") is KeyCache.MISSING and cache.get("d2") is KeyCache.MISSING


def test_a_zero_ttl_or_size_disables_caching() -> None:
    for cache in (KeyCache(0, clock=Clock()), KeyCache(60, size=0, clock=Clock())):
        cache.put("d1", record(1))
        assert cache.get("d1") is KeyCache.MISSING


# -- a flood of unknown keys never evicts known ones -----------------------------------

FLOOD = 10_500


def _flood(cache: KeyCache, start: int, count: int) -> None:
    for i in range(start, start + count):
        cache.put(f"unknown-{i}", None)


def _flood_after(cache: KeyCache, known: int) -> None:
    for i in range(known):
        cache.put(f"d{i}", record(i))
    _flood(cache, 0, FLOOD)


def _flood_interleaved(cache: KeyCache, known: int) -> None:
    for i in range(known):
        cache.put(f"d{i}", record(i))
        _flood(cache, i * FLOOD, FLOOD // known + 1)


def _flood_twice_over(cache: KeyCache, known: int) -> None:
    # More unknown keys than both bounds together: still only the unknown half turns over.
    for i in range(known):
        cache.put(f"d{i}", record(i))
    _flood(cache, 0, 3 * FLOOD)


def _flood_then_known_looked_up_as_unknown(cache: KeyCache, known: int) -> None:
    # A known key first answered "unknown" (made a moment after a lookup):
    # its record replaces that answer, and the flood does not take it back.
    for i in range(known):
        cache.put(f"d{i}", None)
        cache.put(f"d{i}", record(i))
    _flood(cache, 0, FLOOD)


@pytest.mark.parametrize(
    "flood",
    [
        pytest.param(_flood_after, id="flood-after-known-keys"),
        pytest.param(_flood_interleaved, id="flood-between-known-keys"),
        pytest.param(_flood_twice_over, id="flood-past-both-bounds"),
        pytest.param(_flood_then_known_looked_up_as_unknown, id="known-key-first-cached-unknown"),
    ],
)
def test_a_flood_of_unknown_keys_never_evicts_known_ones(
    flood: Callable[[KeyCache, int], None],
) -> None:
    known = 100
    cache = KeyCache(60, size=known, negative_size=1_000, clock=Clock())
    flood(cache, known)
    assert [cache.get(f"d{i}") for i in range(known)] == [record(i) for i in range(known)]
    assert len(cache) <= known + 1_000  # the unknown half keeps its own, smaller bound


def test_unknown_keys_can_be_turned_off_alone() -> None:
    cache = KeyCache(60, negative_size=0, clock=Clock())
    cache.put("unknown", None)
    cache.put("d1", record(1))
    assert cache.get("unknown") is KeyCache.MISSING and cache.get("d1") == record(1)


@pytest.mark.parametrize("kind", DOORS)
def test_known_keys_stay_cached_through_a_flood_of_random_keys_on_a_door(
    kind: str, tmp_path: Path
) -> None:
    ks = make_engine(
        f"sqlite:///{tmp_path / 'keys.db'}", cache={"ttl": "60s", "negative_ttl": "60s"}
    )
    try:
        secrets = [ks.keys.create(name=f"k{i}", org="acme").secret for i in range(3)]
        fmt = ks.formats["secret"]
        with Door(kind, ks) as door:
            assert [door("GET", "/api/v1/events", key=s).status for s in secrets] == [200] * 3
            # Random keys that pass the checksum: each costs a lookup, then
            # is remembered as unknown, as 10,000 more are here directly.
            flood = [fmt.generate() for _ in range(50)]
            assert {door("GET", "/api/v1/events", key=s).status for s in flood} == {401}
            for i in range(FLOOD):
                ks.cache.put(ks.digest(f"{flood[0]}{i}"), None)
            statements: list[str] = []
            event.listen(
                door_store_engine(door),
                "before_cursor_execute",
                lambda *args: statements.append(args[2]),
            )
            assert [door("GET", "/api/v1/events", key=s).status for s in secrets] == [200] * 3
            assert statements == []  # every known key answered from the cache
    finally:
        ks.close()
