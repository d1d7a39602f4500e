"""``memory://``: exact, all-or-nothing counting inside one process.

Why not ``limits``' ``MemoryStorage``: it is correct, but profiling the hot
path showed 70-90 µs for a request's two limits (one call each for test,
hit and window stats, every call building keys and taking a lock that its
expiry timer thread also holds), against a 20 µs budget for the whole
middleware. This module keeps the same three strategies with the same
semantics as ``limits`` (and as the Redis scripts), in a few dict and deque
operations under one lock, with no background thread: expired buckets are
swept lazily. ``limits`` still parses every limit string.

Semantics, for a limit of ``amount`` per ``window`` seconds:

- fixed-window: a window starts at a bucket's first hit and counts to
  ``amount``; the count resets when the window ends.
- moving-window: the hits of the last ``window`` seconds, one timestamp
  each; room frees up as the oldest one ages out.
- sliding-window-counter: windows aligned on multiples of ``window``; the
  previous window's count weighs in proportion to how much of it still
  overlaps the sliding window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from keystile.limiting import LimitCall, LimitResult, LimitSpec, LimitState

__all__ = ["MemoryLimiter"]

SWEEP_EVERY = 10_000  # calls between two sweeps of expired buckets


class MemoryLimiter:
    """All-or-nothing counting for one process; see the module docstring."""

    in_process = True  # no I/O: an event loop may call hit_all directly

    def __init__(self, strategy: str, *, clock: Callable[[], float] = time.time) -> None:
        self.strategy = strategy
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, Any] = {}
        self._expires: dict[str, float] = {}  # when a bucket holds nothing any more
        self._calls = 0
        count, spend = {
            "fixed-window": (self._fixed_count, self._fixed_spend),
            "moving-window": (self._moving_count, self._moving_spend),
            "sliding-window-counter": (self._sliding_count, self._sliding_spend),
        }[strategy]
        self._count: Callable[[LimitSpec, float, float], tuple[int, float]] = count
        self._spend: Callable[[LimitSpec, float, float], None] = spend

    def __repr__(self) -> str:
        return f"MemoryLimiter({self.strategy}, buckets={len(self._buckets)})"

    def hit_all(self, call: LimitCall) -> LimitResult:
        specs = call.specs
        count = self._count
        now = self._clock()
        with self._lock:
            counts = [count(spec, spec.window, now) for spec in specs]
            admitted = True
            for spec, (used, _) in zip(specs, counts, strict=True):
                if used >= spec.amount:
                    admitted = False
                    break
            spent = admitted and not call.peek
            if spent:
                spend, expires = self._spend, self._expires
                for spec in specs:
                    window = spec.window
                    spend(spec, window, now)
                    # Two windows covers the sliding counter's previous window too.
                    expires[spec.bucket] = now + window + window
            self._calls += 1
            if self._calls % SWEEP_EVERY == 0:
                self._sweep(now)
        taken = 1 if spent else 0
        states = [
            LimitState(spec, max(0, spec.amount - used - taken), reset, used >= spec.amount)
            for spec, (used, reset) in zip(specs, counts, strict=True)
        ]
        return LimitResult(admitted, tuple(states))

    async def ahit_all(self, call: LimitCall) -> LimitResult:
        return self.hit_all(call)  # no I/O: the lock is held for microseconds

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    # fixed window: bucket = [window_end, count]
    def _fixed_count(self, spec: LimitSpec, window: float, now: float) -> tuple[int, float]:
        bucket = self._buckets.get(spec.bucket)
        if bucket is None or bucket[0] <= now:
            return 0, now + window
        return int(bucket[1]), float(bucket[0])

    def _fixed_spend(self, spec: LimitSpec, window: float, now: float) -> None:
        bucket = self._buckets.get(spec.bucket)
        if bucket is None or bucket[0] <= now:
            self._buckets[spec.bucket] = [now + window, 1]
        else:
            bucket[1] += 1

    # moving window: bucket = deque of hit times, oldest first
    def _moving_count(self, spec: LimitSpec, window: float, now: float) -> tuple[int, float]:
        hits = self._buckets.get(spec.bucket)
        if not hits:
            return 0, now + window
        horizon = now - window
        while hits and hits[0] <= horizon:
            hits.popleft()
        if not hits:
            return 0, now + window
        return len(hits), hits[0] + window

    def _moving_spend(self, spec: LimitSpec, window: float, now: float) -> None:
        hits = self._buckets.get(spec.bucket)
        if hits is None:
            self._buckets[spec.bucket] = deque((now,))
        else:
            hits.append(now)

    # sliding window counter: bucket = [window_start, previous_count, current_count]
    def _sliding_state(self, spec: LimitSpec, window: float, now: float) -> list[float]:
        start = math.floor(now / window) * window
        bucket = self._buckets.get(spec.bucket)
        if bucket is None:
            return [start, 0, 0]
        if bucket[0] == start:
            return list(bucket)
        if bucket[0] == start - window:
            return [start, bucket[2], 0]
        return [start, 0, 0]

    def _sliding_count(self, spec: LimitSpec, window: float, now: float) -> tuple[int, float]:
        start, previous, current = self._sliding_state(spec, window, now)
        weight = (window - (now - start)) / window
        return math.floor(previous * weight + current), start + window

    def _sliding_spend(self, spec: LimitSpec, window: float, now: float) -> None:
        state = self._sliding_state(spec, window, now)
        state[2] += 1
        self._buckets[spec.bucket] = state

    def _sweep(self, now: float) -> None:
        """Forget buckets with nothing left in them, so memory follows active keys."""
        for name in [n for n, until in self._expires.items() if until <= now]:
            del self._expires[name]
            self._buckets.pop(name, None)
