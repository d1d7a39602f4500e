"""The in-process limiter: each strategy's arithmetic, with a fake clock."""

from __future__ import annotations

import pytest

from keystile._memory_limiter import SWEEP_EVERY, MemoryLimiter
from keystile.limiting import LimitCall, LimitSpec, parse_limits


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spec(limit: str, bucket: str = "key:k") -> LimitSpec:
    return LimitSpec(parse_limits(limit)[0], bucket, "key")


def hits(limiter: MemoryLimiter, specs: tuple[LimitSpec, ...], n: int) -> list[bool]:
    return [limiter.hit_all(LimitCall(specs)).admitted for _ in range(n)]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_admits_exactly_the_amount_then_refuses(strategy: str) -> None:
    limiter = MemoryLimiter(strategy, clock=Clock())
    assert hits(limiter, (spec("5/minute"),), 7) == [True] * 5 + [False] * 2
    result = limiter.hit_all(LimitCall((spec("5/minute"),)))
    assert result.states[0].remaining == 0 and result.states[0].exceeded


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_several_limits_on_one_bucket_each_count_once(strategy: str) -> None:
    # "key: 10/second;100/hour" gives two limits on the same bucket ("key:k"):
    # a request spends one of each, never two of either.
    specs = tuple(LimitSpec(item, "key:k", "key") for item in parse_limits("10/second;100/hour"))
    limiter = MemoryLimiter(strategy, clock=Clock())
    assert hits(limiter, specs, 12) == [True] * 10 + [False] * 2
    second, hour = limiter.hit_all(LimitCall(specs, peek=True)).states
    assert (second.remaining, hour.remaining) == (0, 90)


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_a_refused_request_spends_none_of_its_limits(strategy: str) -> None:
    limiter = MemoryLimiter(strategy, clock=Clock())
    key, org = spec("10/minute", "key:a"), spec("2/minute", "org:acme")
    assert hits(limiter, (key, org), 3) == [True, True, False]
    states = limiter.hit_all(LimitCall((key,), peek=True)).states
    assert states[0].remaining == 8  # two admitted requests spent two, the refusal none


def test_peek_counts_nothing() -> None:
    limiter = MemoryLimiter("moving-window", clock=Clock())
    for _ in range(5):
        assert limiter.hit_all(LimitCall((spec("1/minute"),), peek=True)).admitted
    assert hits(limiter, (spec("1/minute"),), 2) == [True, False]


def test_fixed_window_resets_when_its_window_ends() -> None:
    clock = Clock()
    limiter = MemoryLimiter("fixed-window", clock=clock)
    assert hits(limiter, (spec("2/minute"),), 3) == [True, True, False]
    assert limiter.hit_all(LimitCall((spec("2/minute"),), peek=True)).states[0].reset == (
        clock.now + 60
    )
    clock.now += 60
    assert hits(limiter, (spec("2/minute"),), 3) == [True, True, False]


def test_moving_window_frees_room_as_the_oldest_hit_ages_out() -> None:
    clock = Clock()
    limiter = MemoryLimiter("moving-window", clock=clock)
    first = clock.now
    assert hits(limiter, (spec("2/minute"),), 1) == [True]
    clock.now += 30
    assert hits(limiter, (spec("2/minute"),), 2) == [True, False]
    refused = limiter.hit_all(LimitCall((spec("2/minute"),)))
    assert refused.states[0].reset == first + 60
    clock.now = first + 60  # the first hit ages out; the second is still in the window
    assert hits(limiter, (spec("2/minute"),), 2) == [True, False]


def test_sliding_counter_weighs_the_previous_window() -> None:
    clock = Clock(600.0)  # on a window boundary for 1-minute windows
    limiter = MemoryLimiter("sliding-window-counter", clock=clock)
    assert hits(limiter, (spec("10/minute"),), 10) == [True] * 10
    clock.now += 60 + 30  # half way into the next window: previous weighs 50%
    assert hits(limiter, (spec("10/minute"),), 6) == [True] * 5 + [False]
    clock.now += 30  # next window: previous (5 hits) weighs 100% at its start
    assert hits(limiter, (spec("10/minute"),), 6) == [True] * 5 + [False]


def test_sweep_forgets_idle_buckets() -> None:
    clock = Clock()
    limiter = MemoryLimiter("moving-window", clock=clock)
    for i in range(100):
        limiter.hit_all(LimitCall((spec("5/second", f"key:{i}"),)))
    assert len(limiter._buckets) == 100
    clock.now += 10
    for _ in range(SWEEP_EVERY):
        limiter.hit_all(LimitCall((spec("5/second", "key:busy"),), peek=True))
    assert len(limiter._buckets) == 0
