"""``last_used_at`` written behind (keystile._last_used): batched, timed, never lost."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from keystile import StoreUnavailable
from keystile._last_used import LastUsed

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


class Store:
    def __init__(self) -> None:
        self.down = False
        self.writes: list[dict[str, datetime]] = []

    def touch(self, pending: dict[str, datetime]) -> None:
        if self.down:
            raise StoreUnavailable("down (test)")
        self.writes.append(dict(pending))


def test_many_uses_become_one_write_with_the_newest_time_per_key() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=60)
    for i in range(100):
        last_used.note("key_a", T0 + timedelta(seconds=i))
    last_used.note("key_b", T0)
    last_used.close()
    assert store.writes == [{"key_a": T0 + timedelta(seconds=99), "key_b": T0}]


def test_a_failed_write_is_kept_for_the_next_one() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=60)
    last_used.note("key_a", T0)
    last_used.note("key_b", T0)
    store.down = True
    last_used.flush()  # logged, and kept
    last_used.note("key_a", T0 + timedelta(seconds=5))  # a newer use wins over the kept one
    store.down = False
    last_used.close()
    assert store.writes == [{"key_a": T0 + timedelta(seconds=5), "key_b": T0}]


def test_the_timer_writes_without_being_asked() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=0.05)
    last_used.note("key_a", T0)
    deadline = time.monotonic() + 5
    while not store.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.writes == [{"key_a": T0}]
    last_used.close()


def test_after_close_no_timer_starts_but_a_flush_still_writes() -> None:
    store = Store()
    last_used = LastUsed(store.touch, interval=0.01)
    last_used.close()
    last_used.note("key_a", T0)
    time.sleep(0.05)
    assert store.writes == []
    last_used.flush()
    assert store.writes == [{"key_a": T0}]
