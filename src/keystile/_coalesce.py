"""One store lookup per digest at a time: concurrent cache misses share it.

When a busy key's cache entry expires, every request in flight with that
key misses the cache at the same moment. Without coalescing each of them
asks the store for the same row: a burst of identical queries (32 of them
under 32 connections), queued behind the pool and, on an event loop, behind
each other's callbacks; measured with SQLite under uvicorn, those requests
waited about 100 ms each. Here the first miss asks the store and the others
wait for its answer, the same answer they would have got, so nothing is
served staler than the cache TTL allows.

A failure is shared too: if the store is down, every waiting request gets
the same ``StoreUnavailable`` (a 503) within the one call's timeout.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["AsyncCoalescer", "Coalescer"]

T = TypeVar("T")


class Coalescer:
    """Threads asking for the same key at once share one call of ``fn``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, Future[Any]] = {}

    def run(self, key: str, fn: Callable[[], T]) -> T:
        with self._lock:
            pending = self._pending.get(key)
            leader = pending is None
            if pending is None:
                pending = self._pending[key] = Future()
        if not leader:
            # The leader's call is bounded (store_timeout), so is this wait.
            return pending.result()  # type: ignore[no-any-return]
        try:
            value = fn()
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set_result(value)
            return value
        finally:
            with self._lock:
                del self._pending[key]


class AsyncCoalescer:
    """Tasks of one event loop asking for the same key at once share one await."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]
        ] = weakref.WeakKeyDictionary()

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        pending_of = self._loops.get(loop)
        if pending_of is None:
            pending_of = self._loops[loop] = {}
        while (pending := pending_of.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                # The leader was cancelled (its client went away): ask again,
                # unless this task is the one being cancelled.
                if not pending.cancelled() or _cancelling():
                    raise
        pending = pending_of[key] = loop.create_future()
        try:
            value = await fn()
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved here: no "never retrieved" warning without waiters
            raise
        else:
            pending.set_result(value)
            return value
        finally:
            del pending_of[key]


def _cancelling() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return bool(cancelling()) if cancelling is not None else False
