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

Every strategy's ``reset`` is the moment a request refused now would be
admitted (with nothing else spent meanwhile), which ``Retry-After`` is made
from: the window's end (fixed), the oldest hit's leaving (moving), or the
next request's worth drained from the sliding counter, as ``limits`` and the
Redis scripts report it.
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

# What a strategy found for a call's limits: each limit's state as of now
# (what is left, when its window frees, whether it refuses), and each one's
# bucket as found (None when there is none), in the same order.
Look = tuple[list[LimitState], list[Any]]


class MemoryLimiter:
    """All-or-nothing counting for one process; see the module docstring.

    Each strategy is two functions over all of a request's limits: ``look``
    counts them (and finds each bucket once), ``take`` spends one request on
    each, reusing the buckets ``look`` found. Both run under one lock. The
    states ``look`` makes are the ones the answer reports, so a call makes
    one object per limit.
    """

    in_process = True  # no I/O: an event loop may call hit_all directly
    refunds = True

    def __init__(self, strategy: str, *, clock: Callable[[], float] = time.time) -> None:
        self.strategy = strategy
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, Any] = {}
        self._windows: dict[str, float] = {}  # each bucket's window, for the sweep
        self._calls = 0
        look, take, idle = {
            "fixed-window": (self._fixed_look, self._fixed_take, _fixed_idle),
            "moving-window": (self._moving_look, self._moving_take, _moving_idle),
            "sliding-window-counter": (self._sliding_look, self._sliding_take, _sliding_idle),
        }[strategy]
        self._look: Callable[[tuple[LimitSpec, ...], float], Look] = look
        self._take: Callable[[tuple[LimitSpec, ...], list[Any], float], None] = take
        # Whether a bucket (of ``window`` seconds) counts nothing at ``now``.
        self._idle: Callable[[Any, float, float], bool] = idle

    def __repr__(self) -> str:
        return f"MemoryLimiter({self.strategy}, buckets={len(self._buckets)})"

    def hit_all(self, call: LimitCall) -> LimitResult:
        specs = call.specs
        now = self._clock()
        with self._lock:
            if call.refund:
                self._give_back(call.refund, now)
            if call.guard:
                guarded = self._guard(call.guard, now)
                if guarded is not None:
                    return guarded
            # The states count this call's request as spent, as an admitted
            # call (nearly every one) reports them; a call that spends
            # nothing gives it back to each limit that had room.
            states, found = self._look(specs, now)
            admitted = True
            for state in states:
                if state.exceeded:
                    admitted = False
                    break
            if admitted and not call.peek:
                self._take(specs, found, now)
            else:
                _unspent(states)
            self._calls += 1
            if self._calls % SWEEP_EVERY == 0:
                self._sweep(now)
        return LimitResult(admitted, tuple(states))

    async def ahit_all(self, call: LimitCall) -> LimitResult:
        return self.hit_all(call)  # no I/O: the lock is held for microseconds

    def _guard(self, guard: tuple[LimitSpec, ...], now: float) -> LimitResult | None:
        """The refusal when a guard has no room left, else None (nothing spent)."""
        buckets = self._buckets
        for spec in guard:
            if spec.counter in buckets:
                break
        else:
            return None  # the common case: a caller with no recent failures
        states, _ = self._look(guard, now)
        if not any(state.exceeded for state in states):
            return None
        _unspent(states)  # a guard is never spent
        return LimitResult(False, tuple(states), guarded=True)

    def _give_back(self, specs: tuple[LimitSpec, ...], now: float) -> None:
        """Take one request off each limit (the newest hit), if it still counts any.

        A bucket left with nothing in it goes, so that a guard on it costs
        a dict lookup again (``_guard``'s fast path): one whose hits are all
        past their window counts nothing either.
        """
        buckets = self._buckets
        for spec in specs:
            bucket = buckets.get(spec.counter)
            if not bucket:
                continue
            if self.strategy == "moving-window":
                bucket.pop()  # newest last
            elif self.strategy == "fixed-window":
                bucket[1] -= 1
            else:  # sliding window counter: rolled over to now's window first
                _, (state,) = self._sliding_look((spec,), now)
                if state[2] > 0:
                    state[2] -= 1
                elif state[1] > 0:
                    state[1] -= 1
            if self._idle(bucket, spec.window, now):
                del buckets[spec.counter]
                del self._windows[spec.counter]

    def warm_up(self) -> None:
        pass  # nothing to connect to

    async def awarm_up(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    # fixed window: bucket = [window_end, count]
    def _fixed_look(self, specs: tuple[LimitSpec, ...], now: float) -> Look:
        buckets = self._buckets
        states: list[LimitState] = []
        found: list[Any] = []
        for spec in specs:
            bucket = buckets.get(spec.counter)
            if bucket is None or bucket[0] <= now:
                bucket = None
                used, reset = 0, now + spec.window
            else:
                used, reset = int(bucket[1]), float(bucket[0])
            states.append(_state(spec, used, reset))
            found.append(bucket)
        return states, found

    def _fixed_take(self, specs: tuple[LimitSpec, ...], found: list[Any], now: float) -> None:
        buckets = self._buckets
        for spec, bucket in zip(specs, found):  # noqa: B905 - look made one per limit
            if bucket is None:  # none yet, or its window is over: a new window
                buckets[spec.counter] = [now + spec.window, 1]
                self._windows[spec.counter] = spec.window
            else:
                bucket[1] += 1

    # moving window: bucket = deque of hit times, oldest first
    def _moving_look(self, specs: tuple[LimitSpec, ...], now: float) -> Look:
        buckets = self._buckets
        states: list[LimitState] = []
        found: list[Any] = []
        for spec in specs:
            window = spec.window
            hits = buckets.get(spec.counter)
            if hits:
                horizon = now - window
                while hits and hits[0] <= horizon:
                    hits.popleft()
            used = len(hits) if hits else 0
            reset = hits[0] + window if hits else now + window
            states.append(_state(spec, used, reset))
            found.append(hits)
        return states, found

    def _moving_take(self, specs: tuple[LimitSpec, ...], found: list[Any], now: float) -> None:
        buckets = self._buckets
        for spec, hits in zip(specs, found):  # noqa: B905 - look made one per limit
            if hits is None:
                buckets[spec.counter] = deque((now,))
                self._windows[spec.counter] = spec.window
            else:
                hits.append(now)

    # sliding window counter: bucket = [window_start, previous_count, current_count]
    def _sliding_look(self, specs: tuple[LimitSpec, ...], now: float) -> Look:
        buckets = self._buckets
        states: list[LimitState] = []
        found: list[Any] = []
        for spec in specs:
            window = spec.window
            start = math.floor(now / window) * window
            state = buckets.get(spec.counter)
            if state is None:
                state = [start, 0, 0]  # stored by _sliding_take, if the call spends
            elif state[0] != start:
                # A new window: the bucket rolls over in place, which changes
                # no count it reports (the window it left weighs what it did).
                previous = state[2] if state[0] == start - window else 0
                state[0], state[1], state[2] = start, previous, 0
            left = start + window - now  # of the current window
            previous = state[1]
            used = math.floor(previous * left / window + state[2])
            # The reset is when the weighted count next drops: the previous
            # window's weight drains one request's worth every window /
            # previous seconds; the current window's hits weigh less from
            # its end. The first comes sooner whenever there is a previous.
            reset = now + left % (window / previous) if previous else start + window
            states.append(_state(spec, used, reset))
            found.append(state)
        return states, found

    def _sliding_take(self, specs: tuple[LimitSpec, ...], found: list[Any], now: float) -> None:
        buckets = self._buckets
        for spec, state in zip(specs, found):  # noqa: B905 - look made one per limit
            if state[2] == 0:
                buckets[spec.counter] = state  # a new bucket, or one that rolled over
                self._windows[spec.counter] = spec.window
            state[2] += 1

    def _sweep(self, now: float) -> None:
        """Forget buckets that count nothing any more, so memory follows active keys."""
        buckets, windows, idle = self._buckets, self._windows, self._idle
        for name in [n for n, window in windows.items() if idle(buckets[n], window, now)]:
            del buckets[name], windows[name]


def _fixed_idle(bucket: Any, window: float, now: float) -> bool:
    # [window_end, count]: a bucket given back its last hit counts none either.
    return bool(bucket[0] <= now or bucket[1] <= 0)


def _moving_idle(hits: Any, window: float, now: float) -> bool:
    # Hit times, newest last.
    return not hits or bool(hits[-1] + window <= now)


def _sliding_idle(bucket: Any, window: float, now: float) -> bool:
    # [window_start, previous, current]: a look may have rolled it over in
    # place, to a window that counts nothing yet.
    start, previous, current = bucket
    if start + window <= now:  # its window is over: ``current`` weighs on, as the previous
        return bool(current == 0 or start + 2 * window <= now)
    return bool(previous == 0 and current == 0)


def _state(spec: LimitSpec, used: int, reset: float) -> LimitState:
    """A limit that counts ``used`` requests now (more than it allows, if it was
    lowered since), with what it has left once this call's request is spent."""
    exceeded = used >= spec.amount
    return LimitState(spec, 0 if exceeded else spec.amount - used - 1, reset, exceeded)


def _unspent(states: list[LimitState]) -> None:
    """Give the request back to each state with room: the call spent nothing."""
    for state in states:
        if not state.exceeded:
            state.remaining += 1
