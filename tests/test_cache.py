"""The verified-key cache: TTLs, negative entries, a hard size bound."""

from __future__ import annotations

from datetime import datetime, timezone

from keystile.cache import KeyCache
from keystile.stores.base import KeyRecord


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
