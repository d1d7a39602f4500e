"""The in-process limiter's refunds and guards (the failed-auth budget, pipeline step 10).

A refund gives one request back to each of its limits (the newest hit), and
a bucket left counting nothing goes; a guard must have room for the call to
be admitted and is never spent. Each with a clock the test controls.
"""

from __future__ import annotations

import pytest

from keystile._memory_limiter import MemoryLimiter
from keystile.limiting import LimitCall, LimitSpec
from tests.test_memory_limiter import Clock, hits, spec

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]


def remaining(limiter: MemoryLimiter, limit: tuple[LimitSpec, ...]) -> int:
    return limiter.hit_all(LimitCall(limit, peek=True)).states[0].remaining


# Each case spends requests of a 5/minute limit (at, how many), gives one
# back at `at`, then finds `left` requests left and `kept` buckets (0: the
# bucket counts nothing any more, so it is gone, with its expiry).
REFUNDS = [
    pytest.param("fixed-window", [(600.0, 3)], 610.0, 3, 1, id="fixed-one-of-three"),
    pytest.param("fixed-window", [(600.0, 2)], 610.0, 4, 1, id="fixed-one-of-two"),
    pytest.param("fixed-window", [(600.0, 1)], 610.0, 5, 0, id="fixed-the-only-hit"),
    pytest.param("fixed-window", [(600.0, 2)], 660.0, 5, 0, id="fixed-at-the-window-end"),
    pytest.param("fixed-window", [(600.0, 2)], 700.0, 5, 0, id="fixed-after-the-window"),
    pytest.param("moving-window", [(600.0, 1), (630.0, 2)], 640.0, 3, 1, id="moving-newest"),
    pytest.param("moving-window", [(600.0, 1)], 610.0, 5, 0, id="moving-the-only-hit"),
    pytest.param(
        "moving-window", [(600.0, 1), (630.0, 1)], 660.0, 5, 0, id="moving-the-rest-aged-out"
    ),
    pytest.param("moving-window", [(600.0, 2)], 670.0, 5, 0, id="moving-all-aged-out"),
    # The sliding counter gives back from the current window first, then from
    # the previous one, whose weight is what still counts of it. At 690 s the
    # previous window weighs half: a hit of the current window given back
    # frees a request, half a hit of the previous one may not.
    pytest.param(
        "sliding-window-counter", [(600.0, 3), (690.0, 2)], 690.0, 3, 1, id="sliding-current"
    ),
    pytest.param(
        "sliding-window-counter", [(600.0, 3), (690.0, 1)], 690.0, 4, 1, id="sliding-current-last"
    ),
    pytest.param("sliding-window-counter", [(600.0, 3)], 690.0, 4, 1, id="sliding-previous"),
    pytest.param("sliding-window-counter", [(600.0, 1)], 660.0, 5, 0, id="sliding-previous-last"),
    pytest.param(
        "sliding-window-counter",
        [(600.0, 1), (660.0, 1)],
        660.0,
        4,
        1,
        id="sliding-current-given-previous-kept",
    ),
    pytest.param("sliding-window-counter", [(630.0, 2)], 630.0, 4, 1, id="sliding-one-of-two"),
    pytest.param("sliding-window-counter", [(630.0, 1)], 640.0, 5, 0, id="sliding-the-only-hit"),
    pytest.param("sliding-window-counter", [(600.0, 3)], 730.0, 5, 0, id="sliding-two-windows-on"),
]


@pytest.mark.parametrize(("strategy", "spending", "at", "left", "kept"), REFUNDS)
def test_a_refund_gives_back_the_newest_hit_and_drops_an_empty_bucket(
    strategy: str, spending: list[tuple[float, int]], at: float, left: int, kept: int
) -> None:
    clock = Clock()
    limiter = MemoryLimiter(strategy, clock=clock)
    assert limiter.refunds  # the engine relies on it for the exact failed-auth budget
    auth = (spec("5/minute", "auth:a"),)
    for when, count in spending:
        clock.now = when
        assert hits(limiter, auth, count) == [True] * count
    clock.now = at
    given_back = limiter.hit_all(LimitCall((), refund=auth))
    assert given_back.admitted and given_back.states == ()
    assert (len(limiter._buckets), len(limiter._windows)) == (kept, kept)
    assert remaining(limiter, auth) == left


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refund_gives_one_request_back_to_each_limit(strategy: str) -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter(strategy, clock=clock)
    auth, other = spec("3/minute", "auth:a"), spec("5/minute", "auth:b")
    assert hits(limiter, (auth, other), 4) == [True] * 3 + [False]
    clock.now += 10
    limiter.hit_all(LimitCall((), refund=(auth, other)))
    assert (remaining(limiter, (auth,)), remaining(limiter, (other,))) == (1, 3)
    assert hits(limiter, (auth,), 2) == [True, False]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refund_of_a_limit_with_nothing_counted_changes_nothing(strategy: str) -> None:
    limiter = MemoryLimiter(strategy, clock=Clock(600.0))
    auth = (spec("3/minute", "auth:a"),)
    for _ in range(3):  # never below zero: three refunds do not make six requests
        limiter.hit_all(LimitCall((), refund=auth))
    assert "buckets=0" in repr(limiter)
    assert hits(limiter, auth, 4) == [True] * 3 + [False]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refund_is_counted_before_the_limits_of_the_same_call(strategy: str) -> None:
    limiter = MemoryLimiter(strategy, clock=Clock(600.0))
    auth = (spec("3/minute", "auth:a"),)
    assert hits(limiter, auth, 3) == [True] * 3
    assert limiter.hit_all(LimitCall(auth, refund=auth)).admitted  # one back, then one spent
    assert remaining(limiter, auth) == 0


def test_a_fixed_window_refund_after_the_window_ended_gives_nothing_to_the_next() -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter("fixed-window", clock=clock)
    auth = (spec("3/minute", "auth:a"),)
    assert hits(limiter, auth, 2) == [True, True]
    clock.now += 60  # the window of those two is over: nothing of it to give back
    limiter.hit_all(LimitCall((), refund=auth))
    assert hits(limiter, auth, 4) == [True] * 3 + [False]


def test_a_moving_window_refund_takes_back_the_newest_hit() -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter("moving-window", clock=clock)
    auth = (spec("2/minute", "auth:a"),)
    assert hits(limiter, auth, 1) == [True]
    clock.now = 630.0
    assert hits(limiter, auth, 2) == [True, False]
    limiter.hit_all(LimitCall((), refund=auth))  # the hit of 630 goes; the one of 600 stays
    clock.now = 640.0
    assert hits(limiter, auth, 1) == [True]
    refused = limiter.hit_all(LimitCall(auth))
    assert (refused.admitted, refused.states[0].reset) == (False, 660.0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_guard_with_room_admits_and_is_never_spent(strategy: str) -> None:
    limiter = MemoryLimiter(strategy, clock=Clock(600.0))
    auth, key = (spec("3/minute", "auth:a"),), (spec("10/minute", "key:k"),)
    unguarded = limiter.hit_all(LimitCall(key, guard=auth))  # no bucket yet: room
    assert unguarded.admitted and not unguarded.guarded
    assert hits(limiter, auth, 2) == [True, True]
    for _ in range(3):
        result = limiter.hit_all(LimitCall(key, guard=auth))
        assert result.admitted and not result.guarded
        assert [s.spec for s in result.states] == [key[0]]  # the headers speak of the key
    assert remaining(limiter, auth) == 1
    assert remaining(limiter, key) == 6


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_guard_without_room_refuses_and_spends_nothing(strategy: str) -> None:
    clock = Clock(600.0)
    limiter = MemoryLimiter(strategy, clock=clock)
    auth, key = (spec("3/minute", "auth:a"),), (spec("10/minute", "key:k"),)
    assert hits(limiter, auth, 3) == [True] * 3
    refused = limiter.hit_all(LimitCall(key, guard=auth))
    assert (refused.admitted, refused.guarded) == (False, True)
    (state,) = refused.states
    assert (state.spec, state.remaining, state.exceeded) == (auth[0], 0, True)
    assert state.reset == 660.0
    assert remaining(limiter, key) == 10


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refusing_guard_reports_its_other_limits_unspent(strategy: str) -> None:
    # A budget of two limits ("3/minute;10/hour"): the minute's runs out first,
    # and the hour's still has 7 left, none of them spent by the refused call.
    limiter = MemoryLimiter(strategy, clock=Clock(600.0))
    auth = (spec("3/minute", "auth:a"), spec("10/hour", "auth:a"))
    assert hits(limiter, auth, 3) == [True] * 3
    refused = limiter.hit_all(LimitCall((spec("10/minute", "key:k"),), guard=auth))
    assert refused.guarded
    assert [(s.remaining, s.exceeded) for s in refused.states] == [(0, True), (7, False)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refund_makes_room_for_the_guard_of_the_same_call(strategy: str) -> None:
    limiter = MemoryLimiter(strategy, clock=Clock(600.0))
    auth, key = (spec("3/minute", "auth:a"),), (spec("10/minute", "key:k"),)
    assert hits(limiter, auth, 3) == [True] * 3
    assert limiter.hit_all(LimitCall(key, guard=auth, refund=auth)).admitted
    assert remaining(limiter, auth) == 1
