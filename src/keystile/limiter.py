"""Limiter backends: count a request against all its limits, all or nothing.

``limits`` counts one limit per call, and a test-then-hit over several
limits leaves a gap in which another request can slip through (and a
refused request could spend some limits before another one refuses). Each
backend here closes that gap its own way:

- ``memory://``: ``limits``' ``MemoryStorage`` and strategies, with the
  test-all-then-hit-all done under one lock, so threads and tasks of one
  process see one consistent count.
- any other ``limits`` storage: the same, through ``limits``' strategies,
  serialised per process; exact within one process only, which the start-up
  warning says.

A limiter call that raises or exceeds ``limiter.timeout`` becomes
``LimiterUnavailable``; the pipeline then fails closed (503) or open, as
the config says.
"""

from __future__ import annotations

import threading

import limits.strategies
from limits.storage import storage_from_string

from keystile.config import LimiterConfig
from keystile.errors import LimiterUnavailable
from keystile.limiting import LimitCall, LimitResult, LimitState

__all__ = ["StrategyLimiter", "open_limiter"]

_STRATEGIES: dict[str, type[limits.strategies.RateLimiter]] = {
    "fixed-window": limits.strategies.FixedWindowRateLimiter,
    "moving-window": limits.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}


class StrategyLimiter:
    """All-or-nothing counting over one ``limits`` storage, under a process lock."""

    def __init__(self, config: LimiterConfig) -> None:
        self.config = config
        try:
            self.storage = storage_from_string(config.storage)
            self.strategy = _STRATEGIES[config.strategy](self.storage)
        except NotImplementedError as exc:
            from keystile.errors import ConfigError

            raise ConfigError(
                f"limiter storage {config.storage.split('://')[0]}:// does not support "
                f"the {config.strategy} strategy"
            ) from exc
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StrategyLimiter({self.config.storage.split('://')[0]}://, {self.config.strategy})"

    def hit_all(self, call: LimitCall) -> LimitResult:
        if not call.specs:
            return LimitResult(True, ())
        strategy = self.strategy
        try:
            with self._lock:
                admitted = all(strategy.test(s.item, s.bucket) for s in call.specs)
                if admitted and not call.peek:
                    for spec in call.specs:
                        strategy.hit(spec.item, spec.bucket)
                states = []
                for spec in call.specs:
                    stats = strategy.get_window_stats(spec.item, spec.bucket)
                    states.append(
                        LimitState(spec, stats.remaining, stats.reset_time, stats.remaining <= 0)
                    )
        except Exception as exc:
            raise LimiterUnavailable(
                f"limiter storage unavailable: {type(exc).__name__}"
            ) from exc
        return LimitResult(admitted, tuple(states))

    async def ahit_all(self, call: LimitCall) -> LimitResult:
        # The memory storage never waits, so the lock is held for
        # microseconds and the loop is not blocked.
        return self.hit_all(call)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def open_limiter(config: LimiterConfig) -> StrategyLimiter:
    return StrategyLimiter(config)
