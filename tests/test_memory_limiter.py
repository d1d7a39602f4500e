"""The in-process limiter: each strategy's arithmetic, with a clock the test controls."""

from __future__ import annotations

import asyncio

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
    results = [limiter.hit_all(LimitCall((spec("5/minute"),))) for _ in range(7)]
    assert [r.admitted for r in results] == [True] * 5 + [False] * 2
    # Each admitted hit reports what is left after it, the first one included.
    assert [r.states[0].remaining for r in results] == [4, 3, 2, 1, 0, 0, 0]
    assert [r.states[0].exceeded for r in results] == [False] * 5 + [True] * 2


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
    again = [limiter.hit_all(LimitCall((spec("2/minute"),))) for _ in range(3)]
    assert [r.admitted for r in again] == [True, True, False]
    assert [r.states[0].remaining for r in again] == [1, 0, 0]  # a new window, counted afresh
    assert {r.states[0].reset for r in again} == {clock.now + 60}


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


def sweep(limiter: MemoryLimiter) -> None:
    """Make enough calls that a sweep runs among them (peeks: they make no bucket)."""
    for _ in range(SWEEP_EVERY):
        limiter.hit_all(LimitCall((spec("5/second", "key:busy"),), peek=True))


# When each strategy's bucket, spent at 600 s, still counts: its hits are in
# the window, or (sliding counter) in the previous window that still weighs.
STILL_COUNTING = [
    pytest.param("fixed-window", 30, 0, id="fixed-window"),
    pytest.param("moving-window", 59, 0, id="moving-window"),
    pytest.param("sliding-window-counter", 60 + 30, 3, id="sliding-window-counter"),
]


@pytest.mark.parametrize(("strategy", "later", "remaining"), STILL_COUNTING)
def test_a_sweep_forgets_idle_buckets_and_keeps_the_ones_that_still_count(
    strategy: str, later: float, remaining: int
) -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter(strategy, clock=clock)
    for i in range(100):
        limiter.hit_all(LimitCall((spec("5/second", f"key:{i}"),)))
    spent = (spec("5/minute", "key:spent"),)
    assert hits(limiter, spent, 6) == [True] * 5 + [False]
    clock.now += later
    before = limiter.hit_all(LimitCall(spent, peek=True)).states[0]
    assert before.remaining == remaining
    sweep(limiter)
    assert list(limiter._buckets) == [spent[0].counter]  # the idle ones are gone
    after = limiter.hit_all(LimitCall(spent, peek=True)).states[0]
    assert after == before  # a sweep changes no answer
    assert hits(limiter, spent, remaining + 1) == [True] * remaining + [False]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_sweeps_keep_running_so_memory_follows_the_active_keys(strategy: str) -> None:
    clock = Clock()
    limiter = MemoryLimiter(strategy, clock=clock)
    for round_ in range(3):
        for i in range(100):
            limiter.hit_all(LimitCall((spec("5/second", f"key:{round_}:{i}"),)))
        assert len(limiter._buckets) == 100
        clock.now += 10  # two windows and more: every one of them is idle
        sweep(limiter)
        assert len(limiter._buckets) == 0, f"sweep {round_ + 1} did not run"
        assert len(limiter._windows) == 0


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_a_sweep_forgets_a_bucket_two_windows_after_its_last_hit(strategy: str) -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter(strategy, clock=clock)
    assert hits(limiter, (spec("5/second", "key:idle"),), 2) == [True, True]
    clock.now = 602.0  # two windows on, no strategy counts those hits any more
    sweep(limiter)
    assert limiter._buckets == {}
    assert limiter._windows == {}


# The instant each strategy's bucket, hit at 600 s with 1-second windows,
# stops counting: its window's end (fixed), its last hit's leaving (moving),
# the end of the window after it (sliding counter).
STOPS_COUNTING = [
    ("fixed-window", 601.0),
    ("moving-window", 601.0),
    ("sliding-window-counter", 602.0),
]


@pytest.mark.parametrize(("strategy", "at"), STOPS_COUNTING)
def test_a_sweep_forgets_a_bucket_at_the_instant_it_stops_counting(
    strategy: str, at: float
) -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter(strategy, clock=clock)
    idle = (spec("5/second", "key:idle"),)
    assert hits(limiter, idle, 2) == [True, True]
    clock.now = at
    sweep(limiter)  # before any look, which may empty a bucket itself
    assert limiter._buckets == {}
    assert limiter.hit_all(LimitCall(idle, peek=True)).states[0].remaining == 5  # as if kept


def test_a_sweep_forgets_a_sliding_bucket_once_the_window_it_rolled_into_is_over() -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter("sliding-window-counter", clock=clock)
    idle = (spec("5/second", "key:idle"),)
    assert hits(limiter, idle, 2) == [True, True]
    clock.now = 601.5  # the look rolls the bucket over: its 2 hits weigh half now
    assert limiter.hit_all(LimitCall(idle, peek=True)).states[0].remaining == 4
    sweep(limiter)
    assert list(limiter._buckets) == [idle[0].counter]
    clock.now = 602.0  # the window it rolled into is over, with no hit in it
    sweep(limiter)
    assert limiter._buckets == {}


def test_a_sweep_forgets_a_sliding_bucket_rolled_over_empty_and_keeps_one_counting() -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter("sliding-window-counter", clock=clock)
    old, fresh = (spec("5/second", "key:old"),), (spec("5/second", "key:fresh"),)
    assert hits(limiter, old, 2) == [True, True]
    clock.now = 602.5  # the look rolls "old" over to this window: nothing in it, none before
    assert limiter.hit_all(LimitCall(old, peek=True)).states[0].remaining == 5
    assert hits(limiter, fresh, 1) == [True]
    sweep(limiter)
    assert list(limiter._buckets) == [fresh[0].counter]


def test_a_sweep_runs_on_every_ten_thousandth_call_and_only_then() -> None:
    """A sweep costs a pass over every bucket, so it never runs per call; and
    an idle bucket is forgotten within 10,000 calls, which bounds memory."""
    clock = Clock(600.0)
    limiter = MemoryLimiter("fixed-window", clock=clock)
    idle = spec("5/second", "key:idle")
    limiter.hit_all(LimitCall((idle,)))  # call 1
    clock.now += 10
    busy = LimitCall((spec("5/second", "key:busy"),), peek=True)
    for _ in range(10_000 - 2):
        limiter.hit_all(busy)
    assert list(limiter._buckets) == [idle.counter]  # 9,999 calls: not swept yet
    limiter.hit_all(busy)
    assert limiter._buckets == {}


def test_it_does_no_io_so_an_event_loop_may_call_it_directly() -> None:
    limiter = MemoryLimiter("moving-window", clock=Clock())
    assert limiter.in_process  # the ASGI driver calls hit_all then, with no second coroutine
    limit = (spec("2/minute"),)

    async def three() -> list[bool]:
        return [(await limiter.ahit_all(LimitCall(limit))).admitted for _ in range(3)]

    assert asyncio.run(three()) == [True, True, False]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
@pytest.mark.parametrize("idle", [120.0, 150.0, 600.0])
def test_a_bucket_idle_for_two_windows_counts_nothing(strategy: str, idle: float) -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter(strategy, clock=clock)
    assert hits(limiter, (spec("5/minute"),), 6) == [True] * 5 + [False]
    clock.now += idle
    assert limiter.hit_all(LimitCall((spec("5/minute"),), peek=True)).states[0].remaining == 5
    results = [limiter.hit_all(LimitCall((spec("5/minute"),))) for _ in range(6)]
    assert [r.states[0].remaining for r in results] == [4, 3, 2, 1, 0, 0]
    assert [r.admitted for r in results] == [True] * 5 + [False]


# A refusal, then the instant its reset names: each strategy, and the sliding
# counter both when its current window refuses and when the previous one does.
REFUSALS = [
    pytest.param("fixed-window", [(600.0, 5)], id="fixed-window"),
    pytest.param("fixed-window", [(600.0, 2), (630.0, 3)], id="fixed-window-spread"),
    pytest.param("moving-window", [(600.0, 5)], id="moving-window"),
    pytest.param("moving-window", [(600.0, 2), (630.0, 3)], id="moving-window-spread"),
    pytest.param("sliding-window-counter", [(630.0, 5)], id="sliding-current-window"),
    pytest.param("sliding-window-counter", [(600.0, 5), (661.0, 1)], id="sliding-previous-drains"),
    pytest.param("sliding-window-counter", [(610.0, 4), (690.0, 3)], id="sliding-both-windows"),
    pytest.param("sliding-window-counter", [(600.0, 3), (665.0, 3)], id="sliding-previous-partly"),
]


@pytest.mark.parametrize(("strategy", "spending"), REFUSALS)
def test_reset_is_the_moment_a_refused_request_would_be_admitted(
    strategy: str, spending: list[tuple[float, int]]
) -> None:
    """``reset`` (and so ``Retry-After``) is neither in the past nor later than needed."""
    clock = Clock()
    limiter = MemoryLimiter(strategy, clock=clock)
    limit = (spec("5/minute"),)
    for at, count in spending:
        clock.now = at
        assert hits(limiter, limit, count) == [True] * count
    refused = limiter.hit_all(LimitCall(limit))
    assert not refused.admitted
    reset = refused.states[0].reset
    assert clock.now <= reset <= clock.now + 60  # "now" when room frees an instant from now
    clock.now = reset - 0.001
    assert not limiter.hit_all(LimitCall(limit, peek=True)).admitted
    clock.now = reset + 0.001
    assert limiter.hit_all(LimitCall(limit, peek=True)).admitted
