"""keystile._limiter_calls: how a limiter call waits for a connection and for answers.

The doors' tests (test_limits_redis_load.py) show the behaviour on a real
Redis; these pin down the edges of the two mechanisms with asyncio alone:
an ``asyncio.sleep`` stands in for the server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from keystile._limiter_calls import AsyncSlots, Slots, answered_within
from keystile.errors import LimiterUnavailable


async def answers(*waits: float) -> str:
    """A call that waits for several answers in turn (a connect, then a reply...)."""
    for wait in waits:
        await asyncio.sleep(wait)
    return "reply"


def test_each_answer_has_the_whole_timeout_not_the_call() -> None:
    # Three answers of 0.15s each: 0.45s in all, each well within 0.25s.
    assert asyncio.run(answered_within(0.25, answers(0.15, 0.15, 0.15))) == "reply"


def test_an_answer_that_does_not_come_times_out_soon_after_the_timeout() -> None:
    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await answered_within(0.1, answers(0.05, 5))
        return time.monotonic() - started

    assert 0.15 <= asyncio.run(main()) < 0.5


def test_a_reply_that_came_while_the_loop_was_blocked_is_read() -> None:
    # The reply reaches the socket at once; then another task blocks the loop
    # for 0.3s, past the 0.1s timeout. After the block the loop sees the
    # reply and the deadline in the same turn: the reply must win.
    here, there = socket.socketpair()

    async def main() -> bytes:
        reader, writer = await asyncio.open_connection(sock=here)

        async def server_then_blocker() -> None:
            await asyncio.sleep(0.005)  # the call is waiting for its reply now
            there.sendall(b"counted")
            time.sleep(0.3)

        blocking = asyncio.ensure_future(server_then_blocker())
        try:
            return await answered_within(0.1, reader.read(7))
        finally:
            await blocking
            writer.close()

    try:
        assert asyncio.run(main()) == b"counted"
    finally:
        there.close()


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    # An ASGI server cancels the request of a client that went away: that is
    # not the server timing out, and must not be reported as one.
    async def main() -> None:
        task = asyncio.ensure_future(answered_within(0.05, answers(5)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_async_slots_queue_without_a_clock_and_give_up_when_a_call_fails() -> None:
    async def main() -> list[Any]:
        slots = AsyncSlots(1)

        async def ok(hold: float) -> str:
            async with slots:
                await asyncio.sleep(hold)
            return "ok"

        async def fails() -> str:
            async with slots:
                await asyncio.sleep(0.05)
                raise ConnectionError("server gone")

        # Queued behind 0.3s of holders, far longer than any timeout: fine.
        assert list(await asyncio.gather(ok(0.1), ok(0.1), ok(0.1))) == ["ok"] * 3
        # Queued behind a call that fails: both waiters give up with it.
        return list(await asyncio.gather(fails(), ok(0), ok(0), return_exceptions=True))

    first, *waiters = asyncio.run(main())
    assert isinstance(first, ConnectionError)
    assert all(isinstance(w, LimiterUnavailable) for w in waiters)


def test_an_async_waiter_cancelled_after_its_wake_up_passes_it_on() -> None:
    async def main() -> str:
        slots = AsyncSlots(1)
        await slots.__aenter__()
        first = asyncio.ensure_future(slots.__aenter__())
        second = asyncio.ensure_future(slots.__aenter__())
        await asyncio.sleep(0)  # both wait now
        await slots.__aexit__(None)  # wakes the first waiter...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(second, 1)  # the slot went to the second
        return "passed on"

    assert asyncio.run(main()) == "passed on"


def test_thread_slots_let_a_waiter_give_up_when_a_call_fails() -> None:
    slots = Slots(1)
    holding, waiting = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def failing_call() -> None:
        with pytest.raises(ConnectionError), slots:
            holding.set()
            waiting.wait(1)
            time.sleep(0.05)  # let the waiter block on the slot
            raise ConnectionError("server gone")

    def waiter() -> None:
        holding.wait(1)
        waiting.set()
        try:
            with slots:
                outcome.append(None)
        except LimiterUnavailable as exc:
            outcome.append(exc)

    threads = [threading.Thread(target=failing_call), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2)
    assert len(outcome) == 1 and isinstance(outcome[0], LimiterUnavailable)
    with slots:  # and the slot is free again for the next call
        pass
