"""How a limiter call to the Redis family waits its turn and is bounded.

``limiter.timeout`` is meant to catch a sick server, and nothing else. Two
things used to make a healthy server look sick under load, and this module
keeps both out of the bound:

- **Waiting for a connection.** A process keeps at most ``max_connections``
  (default 50) pooled connections per client; more concurrent calls than
  that wait for a slot (``Slots`` for threads, ``AsyncSlots`` for tasks)
  without a clock, because how long a call queues behind the others is the
  process's own load: a healthy Redis frees a slot within a round trip. A
  waiter gives up only when a call that held a slot failed while it waited,
  so a stalled Redis still turns a queue into prompt 503s instead of one
  that grows for as long as the outage lasts.
- **Scheduling.** On threads the Redis client's own socket timeouts bound
  each connect and each read in the kernel, where a thread waiting for the
  GIL is not counted. On an event loop every timer measures the loop, not
  the socket: a loop busy with a burst (each request's own work, new
  connections being opened) or blocked by another task runs a call's
  replies late, and a timeout around the whole call then fires on a call
  that is only waiting for its turn, or cancels one whose reply is already
  in, a request that Redis has counted. So ``answered_within`` bounds what
  a socket timeout bounds, the wait for each answer: the time since the
  call last resumed (its connect completed, a reply came in), judged only
  after the loop has polled for I/O once more and run the tasks that poll
  woke.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar

from keystile.errors import LimiterUnavailable

__all__ = ["AsyncSlots", "Slots", "answered_within"]

T = TypeVar("T")


class _Counts:
    """The state both kinds of slots share: how many are free, how many calls failed."""

    __slots__ = ("failures", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self.failures = 0

    def take(self, seen: int) -> bool:
        """Take a slot if one is free; give up if a call failed since ``seen``."""
        if self.failures != seen:
            raise LimiterUnavailable(
                "limiter storage unavailable: a call failed while this one waited for a connection"
            )
        if self.free:
            self.free -= 1
            return True
        return False

    def give_back(self, exc_type: type[BaseException] | None) -> bool:
        """Return a slot; True when the call failed (a cancelled one did not)."""
        self.free += 1
        failed = exc_type is not None and issubclass(exc_type, Exception)
        if failed:
            self.failures += 1
        return failed


class Slots:
    """At most ``size`` concurrent calls from threads; the others queue without a clock.

    >>> slots = Slots(50)
    >>> with slots:
    ...     pass  # one call on one pooled connection
    """

    def __init__(self, size: int) -> None:
        self._counts = _Counts(size)
        self._changed = threading.Condition(threading.Lock())

    def __enter__(self) -> None:
        counts = self._counts
        with self._changed:
            seen = counts.failures
            while not counts.take(seen):
                self._changed.wait()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        with self._changed:
            if self._counts.give_back(exc_type):
                self._changed.notify_all()  # every waiter can give up now
            else:
                self._changed.notify()


class AsyncSlots:
    """The same for the tasks of one event loop (made on, and used by, that loop only).

    One loop runs one task at a time, so the counts need no lock; only a
    waiter has a future, which a returned slot (or a failure) resolves.
    """

    def __init__(self, size: int) -> None:
        self._counts = _Counts(size)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        counts = self._counts
        seen = counts.failures
        while not counts.take(seen):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # this waiter was woken, then cancelled: pass it on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._counts.give_back(exc_type):
            for waiter in self._waiters:  # every waiter can give up now
                if not waiter.done():
                    waiter.set_result(None)
        else:
            self._wake_one()

    def _wake_one(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return


async def answered_within(timeout: float, call: Awaitable[T]) -> T:
    """Await ``call`` in this task; ``TimeoutError`` once it has waited ``timeout`` for an answer.

    >>> reply = await answered_within(0.25, client.evalsha(sha, 1, "k"))  # doctest: +SKIP

    Every time the task resumes inside ``call`` (something it awaited came:
    a connection, a reply) the clock starts again, as a socket timeout does
    for each read.
    """
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("answered_within() must be awaited from a task")
    steps = _Resumes(call)
    watch = _Watch(task, timeout, steps)
    try:
        return await steps
    except asyncio.CancelledError:
        if watch.expired and _uncancel(task) == 0:
            raise TimeoutError("no answer within limiter.timeout") from None
        raise
    finally:
        watch.stop()


class _Resumes(Generic[T]):
    """Runs an awaitable as ``await`` would, noting when the task last resumed it."""

    __slots__ = ("_call", "last")

    def __init__(self, call: Awaitable[T]) -> None:
        self._call = call
        self.last = time.monotonic()

    def __await__(self) -> Generator[Any, Any, T]:
        # ``yield from``, written out so that each resume is seen.
        inner = self._call.__await__()
        message: Any = None
        error: BaseException | None = None
        while True:
            self.last = time.monotonic()
            try:
                pending = inner.send(message) if error is None else inner.throw(error)
            except StopIteration as done:
                result: T = done.value
                return result
            try:
                message, error = (yield pending), None
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # a cancellation: the call cleans up
                message, error = None, exc


class _Watch:
    """The deadline of one call, whose verdict waits for the answers already in.

    When ``timeout`` has passed since the call last resumed, the watch
    schedules a zero-delay timer, which runs only after the loop has polled
    for I/O once more (whichever order a loop runs its timers and its poll
    in); that callback queues the verdict behind the callbacks already
    queued, among them the wake-up of a task whose reply the poll read. The
    verdict cancels the call only if it has still not resumed: the server
    had not answered in time. Checked on asyncio's loop and on uvloop.
    """

    __slots__ = ("_handle", "_loop", "_resumes", "_task", "_timeout", "done", "expired")

    def __init__(self, task: asyncio.Task[Any], timeout: float, resumes: _Resumes[Any]) -> None:
        self._task = task
        self._loop = task.get_loop()
        self._timeout = timeout
        self._resumes = resumes
        self.done = False
        self.expired = False
        self._handle: asyncio.Handle = self._loop.call_later(timeout, self._at_deadline)

    def _at_deadline(self) -> None:
        self._handle = self._loop.call_later(0, self._after_poll)

    def _after_poll(self) -> None:
        self._handle = self._loop.call_soon(self._verdict)

    def _verdict(self) -> None:
        if self.done:
            return
        waited = time.monotonic() - self._resumes.last
        if waited < self._timeout:  # it resumed since: wait for its next answer
            self._handle = self._loop.call_later(self._timeout - waited, self._at_deadline)
        else:
            self.expired = True
            self._task.cancel()

    def stop(self) -> None:
        self.done = True
        self._handle.cancel()


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Withdraw our cancellation; what remains is someone else's (Python 3.11+)."""
    if sys.version_info >= (3, 11):
        return task.uncancel()
    return 0  # pragma: no cover - Python 3.10 cannot tell the two apart
