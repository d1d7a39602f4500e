"""Limiter backends: count a request against all its limits, all or nothing.

``limits`` counts one limit per call, and a test-then-hit over several
limits leaves a gap in which another request can slip through (and a
refused request could spend some limits before another one refuses). Each
backend here closes that gap its own way:

- Redis family (``redis://``, ``rediss://``, ``redis+unix://``,
  ``redis+cluster://``, ``redis+sentinel://``, ``valkey...``):
  ``RedisLimiter`` checks and spends all of a request's limits in one Lua
  script, one round trip, atomic across every process (``_redis_limiter``).
- ``memory://``: ``limits``' ``MemoryStorage`` and strategies, with the
  test-all-then-hit-all done under one lock, so threads and tasks of one
  process see one consistent count.
- any other ``limits`` storage (``memcached://``, ``mongodb://``): the same,
  through ``limits``' strategies, serialised per process; exact within one
  process only, as docs/rate-limits.md says.

A limiter call that raises or exceeds ``limiter.timeout`` becomes
``LimiterUnavailable``; the pipeline then fails closed (503) or open, as
the config says. ``warm_up`` (``awarm_up`` on an event loop) does at start
what a backend would otherwise do on its first request.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

import limits.strategies
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, storage_from_string

from keystile._outage import cause_of, masked_uri
from keystile._redis_clients import REDIS_SCHEMES
from keystile.config import LimiterConfig
from keystile.errors import ConfigError, LimiterUnavailable
from keystile.limiting import LimitCall, LimitResult, LimitSpec, LimitState

__all__ = [
    "Limiter",
    "StrategyLimiter",
    "memory_limiter_warning",
    "open_limiter",
    "refunds_on",
    "worker_processes",
]

_STRATEGIES: dict[str, type[limits.strategies.RateLimiter]] = {
    "fixed-window": limits.strategies.FixedWindowRateLimiter,
    "moving-window": limits.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}


class Limiter(Protocol):
    """What the engine needs of a limiter: answer a ``LimitCall``, sync or async.

    ``in_process`` says that ``hit_all`` never waits on I/O, so an event loop
    may call it directly. ``refunds`` says that it honours
    ``LimitCall.refund``, which the exact failed-auth budget needs (a unit
    spent before a lookup comes back when the key proves valid).
    ``warm_up`` / ``awarm_up`` prepare the backend at start (connections,
    scripts) and raise ``LimiterUnavailable`` when it cannot be reached.
    """

    in_process: bool
    refunds: bool

    def warm_up(self) -> None: ...

    async def awarm_up(self) -> None: ...

    def hit_all(self, call: LimitCall) -> LimitResult: ...

    async def ahit_all(self, call: LimitCall) -> LimitResult: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


class StrategyLimiter:
    """All-or-nothing counting over one ``limits`` storage, under a process lock.

    >>> StrategyLimiter(LimiterConfig(storage="memory://"))  # doctest: +SKIP

    Exact within one process; across processes only a shared storage with
    an atomic multi-limit operation (``RedisLimiter``) is.
    """

    def __init__(self, config: LimiterConfig) -> None:
        self.config = config
        scheme = config.storage.split("://")[0]
        try:
            self.storage = storage_from_string(config.storage)
            self.strategy = _STRATEGIES[config.strategy](self.storage)
        except NotImplementedError as exc:
            raise ConfigError(
                f"limiter storage {scheme}:// does not support the {config.strategy} strategy"
            ) from exc
        except ConfigurationError as exc:
            raise ConfigError(f"limiter storage {scheme}:// cannot be used: {exc}") from exc
        self._in_memory = isinstance(self.storage, MemoryStorage)
        self.in_process = self._in_memory
        # ``limits`` has no way to take a hit back on every storage: the
        # failed-auth budget here counts each 401 after the fact instead.
        self.refunds = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StrategyLimiter({self.config.storage.split('://')[0]}://, {self.config.strategy})"

    def warm_up(self) -> None:
        pass  # limits' storages connect on first use; nothing to load

    async def awarm_up(self) -> None:
        pass

    def hit_all(self, call: LimitCall) -> LimitResult:
        if not (call.specs or call.guard):
            return LimitResult(True, ())
        strategy = self.strategy
        started = time.monotonic()
        try:
            with self._lock:
                if call.guard and not all(strategy.test(s.item, s.bucket) for s in call.guard):
                    return LimitResult(False, self._states(call.guard), guarded=True)
                admitted = all(strategy.test(s.item, s.bucket) for s in call.specs)
                if admitted and not call.peek:
                    for spec in call.specs:
                        strategy.hit(spec.item, spec.bucket)
                states = self._states(call.specs)
        except Exception as exc:
            cause = cause_of(exc, secrets=[urlsplit(self.config.storage).password])
            where = masked_uri(self.config.storage)
            raise LimiterUnavailable(f"limiter storage {where} unavailable: {cause}") from exc
        if not self._in_memory and time.monotonic() - started > self.config.timeout:
            raise LimiterUnavailable("limiter storage over limiter.timeout")
        return LimitResult(admitted, states)

    def _states(self, specs: tuple[LimitSpec, ...]) -> tuple[LimitState, ...]:
        states = []
        for spec in specs:
            stats = self.strategy.get_window_stats(spec.item, spec.bucket)
            states.append(LimitState(spec, stats.remaining, stats.reset_time, stats.remaining <= 0))
        return tuple(states)

    async def ahit_all(self, call: LimitCall) -> LimitResult:
        if self._in_memory:
            # The memory storage never waits, so the lock is held for
            # microseconds and the loop is not blocked.
            return self.hit_all(call)
        # A networked storage (memcached, MongoDB) blocks: run the one sync
        # implementation in a worker thread rather than keep a drifting async
        # copy of it, and stop waiting at the timeout.
        import anyio
        import anyio.to_thread

        try:
            with anyio.fail_after(self.config.timeout):
                return await anyio.to_thread.run_sync(self.hit_all, call, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise LimiterUnavailable("limiter storage over limiter.timeout") from exc

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _scheme_of(storage: str) -> str:
    return urlsplit(storage).scheme.lower().removeprefix("async+")


def refunds_on(config: LimiterConfig) -> bool:
    """Whether the limiter ``open_limiter`` makes for ``config`` honours refunds.

    Known before the limiter is opened, so a policy can be compiled without
    connecting: our own memory and Redis limiters do, ``limits``' storages not.
    """
    scheme = _scheme_of(config.storage)
    return scheme in REDIS_SCHEMES or scheme == "memory"


def open_limiter(config: LimiterConfig) -> Limiter:
    """The backend for ``limiter.storage``: Lua on the Redis family, else ``limits``."""
    scheme = _scheme_of(config.storage)
    if scheme in REDIS_SCHEMES:
        from keystile._redis_limiter import RedisLimiter

        return RedisLimiter(config)
    if scheme == "memory":
        from keystile._memory_limiter import MemoryLimiter

        return MemoryLimiter(config.strategy)
    return StrategyLimiter(config)


_WORKER_FLAG = re.compile(r"(?:^|\s)(?:-w|--workers)(?:\s+|=)(\d+)")


def worker_processes(environ: Mapping[str, str] | None = None) -> int | None:
    """How many worker processes serve this app, when the server says so.

    Read from ``WEB_CONCURRENCY`` (gunicorn, Heroku, uvicorn),
    ``UVICORN_WORKERS`` and ``--workers``/``-w`` in ``GUNICORN_CMD_ARGS``.
    ``None`` when nothing tells.
    """
    env = os.environ if environ is None else environ
    for name in ("WEB_CONCURRENCY", "UVICORN_WORKERS"):
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    match = _WORKER_FLAG.search(env.get("GUNICORN_CMD_ARGS", ""))
    return int(match.group(1)) if match else None


def memory_limiter_warning(
    config: LimiterConfig, environ: Mapping[str, str] | None = None, *, spawned: bool | None = None
) -> str | None:
    """The start-up warning for ``memory://`` under several workers, or None.

    Each worker process counts on its own, so every limit is multiplied by
    the number of workers. Besides the server's settings, a process started
    by ``multiprocessing`` (uvicorn's ``--workers``, hypercorn) is taken as
    one worker of several.
    """
    if urlsplit(config.storage).scheme.lower() != "memory":
        return None
    workers = worker_processes(environ)
    if spawned is None:
        spawned = multiprocessing.parent_process() is not None
    if workers is not None and workers > 1:
        how_many = f"{workers} worker processes run"
    elif workers is None and spawned:
        how_many = "this process is a worker started by multiprocessing"
    else:
        return None
    return (
        f"limiter.storage is memory:// but {how_many}: each process counts on its own, so "
        "every limit is multiplied by the number of workers; use a shared storage such as "
        "redis:// (see docs/rate-limits.md)"
    )
