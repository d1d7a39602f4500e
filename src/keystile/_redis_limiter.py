"""The Redis-family limiter: every limit of a request in one Lua script.

``limits`` checks and spends one limit per call. Over several limits that is
test-all-then-hit-all, and between the test and the hit another process can
spend the same counters: across processes, more requests get in than the
limit allows. Here one script (``keystile/lua/<strategy>.lua``) receives all
of a request's limits, checks every one, spends all of them only if none
refuses, and returns each limit's remaining count and reset time, all in one
round trip and under Redis's single-threaded script execution. So 100
concurrent requests against ``5/minute`` admit exactly 5, from any number of
processes.

Redis Cluster runs a script on one node only, with all its keys in one hash
slot. Every key carries its spec's ``slot_tag`` as a hash tag (``{org:acme}``,
``{auth:10.0.0.1}``): the limits of one request share it, so they live in
one slot and the script stays atomic, while different orgs spread over the
cluster.

``limiter.timeout`` bounds the server's answer, not the process's own
scheduling nor a wait for a free connection (``keystile._limiter_calls``),
and ``warm_up`` does the first-use work (connect, learn a cluster's slot
map, load the script on every primary) at start, so a healthy Redis never
causes a 503, not under a burst and not on the first requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from keystile._limiter_calls import AsyncSlots, Slots, answered_within
from keystile._outage import cause_of, masked_uri
from keystile._redis_clients import RedisTarget, async_client, parse_redis_uri, sync_client
from keystile.config import LimiterConfig
from keystile.errors import LimiterUnavailable
from keystile.limiting import LimitCall, LimitResult, LimitState

__all__ = ["RedisLimiter"]

_SCRIPTS = {
    "fixed-window": ("fixed_window.lua", "fw"),
    "moving-window": ("moving_window.lua", "mw"),
    "sliding-window-counter": ("sliding_window_counter.lua", "swc"),
}


def _failure_types() -> tuple[type[BaseException], ...]:
    # RedisClusterException is not a RedisError; OSError covers a reset
    # socket, and TimeoutError (an OSError) a socket timeout or the async
    # bound (answered_within).
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


class RedisLimiter:
    """All-or-nothing counting on Redis, Valkey, a Redis Cluster or Sentinel.

    >>> limiter = RedisLimiter(LimiterConfig(storage="redis://127.0.0.1:6379"))  # doctest: +SKIP

    WSGI calls ``hit_all`` (a blocking client, safe across threads); ASGI
    awaits ``ahit_all`` (a ``redis.asyncio`` client per event loop, so the
    loop never waits on a socket). Each call is one ``EVALSHA`` whose answer
    is bounded by ``limiter.timeout``; on any failure it raises
    ``LimiterUnavailable``. ``warm_up`` / ``awarm_up`` prepare at start what
    the first call would otherwise do.
    """

    in_process = False
    refunds = True

    def __init__(self, config: LimiterConfig, *, key_prefix: str | None = None) -> None:
        self.config = config
        self.target: RedisTarget = parse_redis_uri(config.storage)
        self.prefix = key_prefix or self.target.key_prefix
        self.timeout = config.timeout
        name, self._short = _SCRIPTS[config.strategy]
        self._two_keys = config.strategy == "sliding-window-counter"
        self.script = (files("keystile") / "lua" / name).read_text(encoding="utf-8")
        self.sha = hashlib.sha1(self.script.encode()).hexdigest()
        self._failures = _failure_types()
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        self._sync_failures = 0  # failed attempts to build the client (a cluster connects)
        self._slots = Slots(self.target.connections)
        self._loops = _LoopClients(
            lambda: async_client(self.target), self.target.connections, self.timeout
        )

    def __repr__(self) -> str:
        return f"RedisLimiter({self.target!r}, {self.config.strategy})"

    # -- the request, in Redis's terms (one copy for sync and async) -----------------

    def keys_and_args(self, call: LimitCall) -> tuple[list[str], list[str | int]]:
        """The script's KEYS and ARGV for a call (pure; shared by both paths).

        Refunds come first, then guards, then the limits counted, as the
        scripts expect (``keystile/lua/*.lua`` say the layout).
        """
        keys: list[str] = []
        args: list[str | int] = ["1" if call.peek else "0", len(call.refund), len(call.guard)]
        for spec in (*call.refund, *call.guard, *call.specs):
            item = spec.item
            window_ms = int(item.get_expiry() * 1000)
            base = (
                f"{self.prefix}:{{{spec.slot_tag}}}:{self._short}:{spec.bucket}"
                f":{item.amount}/{window_ms}"
            )
            keys += [f"{base}:prev", f"{base}:cur"] if self._two_keys else [base]
            args += [int(item.amount), window_ms]
        return keys, args

    @staticmethod
    def result_of(call: LimitCall, reply: Sequence[Any]) -> LimitResult:
        """Turn the script's ``{admitted, now, guarded, remaining, reset, ...}`` into a result."""
        admitted = int(reply[0]) == 1
        guarded = int(reply[2]) == 1
        states = []
        for i, spec in enumerate((*call.guard, *call.specs)):
            remaining = int(reply[3 + 2 * i])
            reset = int(reply[4 + 2 * i]) / 1000
            states.append(LimitState(spec, max(0, remaining), reset, remaining <= 0))
        if guarded:
            return LimitResult(False, tuple(states[: len(call.guard)]), guarded=True)
        return LimitResult(admitted, tuple(states[len(call.guard) :]))

    def parts(self, call: LimitCall) -> list[tuple[str, LimitCall]]:
        """``call`` as the scripts it takes, each with its role: one, unless a cluster splits it.

        A Redis Cluster runs a script on one node, over one hash slot. A
        request's own limits share their org's slot, but its failed-auth
        guard or refund lives in the address's slot: on a cluster those go
        first as scripts of their own (a refund, then a peek at the guard),
        and the limits follow only if the guard had room.
        """
        if self.target.kind != "cluster" or not (call.guard or call.refund):
            return [("whole", call)]
        out = []
        if call.refund:
            out.append(("refund", LimitCall((), refund=call.refund)))
        if call.guard:
            out.append(("guard", LimitCall(call.guard, peek=True)))
        out.append(("limits", LimitCall(call.specs, peek=call.peek)))
        return out

    @staticmethod
    def joined(results: list[tuple[str, LimitResult]]) -> LimitResult:
        """The result of a split call, from the results of its parts, in order."""
        for role, result in results:
            if role == "guard" and not result.admitted:
                return LimitResult(False, result.states, guarded=True)
            if role in ("whole", "limits"):
                return result
        return LimitResult(True, ())

    # -- sync (WSGI) -------------------------------------------------------------------

    def _client(self) -> Any:
        if self._sync is None:
            seen = self._sync_failures
            with self._sync_lock:
                if self._sync is None:
                    # A cluster client learns the slot map here; its socket
                    # timeouts bound each step, as they bound every call.
                    # Calls that waited while an attempt failed give up
                    # rather than queue for one attempt each.
                    _give_up_if_failed_since(seen, self._sync_failures)
                    try:
                        self._sync = sync_client(self.target, self.timeout)
                    except Exception:
                        self._sync_failures += 1
                        raise
        return self._sync

    def warm_up(self) -> None:
        """Connect, learn a cluster's slots and load the script, now rather than on a request."""
        with self._failures_as_outage(), self._slots:
            self._client().script_load(self.script)  # on every primary of a cluster

    def hit_all(self, call: LimitCall) -> LimitResult:
        """Check and spend every limit of ``call`` in one round trip (blocking)."""
        results = []
        for role, part in self.parts(call):
            result = self._hit_one(part)
            results.append((role, result))
            if role == "guard" and not result.admitted:
                break
        return self.joined(results)

    def _hit_one(self, call: LimitCall) -> LimitResult:
        if call.empty:
            return LimitResult(True, ())
        keys, args = self.keys_and_args(call)
        with self._failures_as_outage(), self._slots:
            reply = self._eval(self._client(), keys, args)
        return self.result_of(call, reply)

    def _eval(self, client: Any, keys: list[str], args: list[str | int]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # first use on this server, or after SCRIPT FLUSH
            return client.eval(self.script, len(keys), *keys, *args)

    @contextlib.contextmanager
    def _failures_as_outage(self) -> Iterator[None]:
        try:
            yield
        except self._failures as exc:
            raise self._unavailable(exc) from exc

    # -- async (ASGI) ------------------------------------------------------------------

    async def awarm_up(self) -> None:
        """``warm_up`` for the running event loop's client (ASGI lifespan startup)."""
        with self._failures_as_outage():
            entry = await self._loops.get()
            async with entry.slots:
                await answered_within(self.timeout, entry.client.script_load(self.script))

    async def ahit_all(self, call: LimitCall) -> LimitResult:
        """Check and spend every limit of ``call`` in one round trip, never blocking the loop."""
        results = []
        for role, part in self.parts(call):
            result = await self._ahit_one(part)
            results.append((role, result))
            if role == "guard" and not result.admitted:
                break
        return self.joined(results)

    async def _ahit_one(self, call: LimitCall) -> LimitResult:
        if call.empty:
            return LimitResult(True, ())
        keys, args = self.keys_and_args(call)
        with self._failures_as_outage():
            entry = await self._loops.get()
            async with entry.slots:
                reply = await answered_within(self.timeout, self._aeval(entry.client, keys, args))
        return self.result_of(call, reply)

    async def _aeval(self, client: Any, keys: list[str], args: list[str | int]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.script, len(keys), *keys, *args)

    def _unavailable(self, exc: BaseException) -> LimiterUnavailable:
        cause = cause_of(exc, secrets=[urlsplit(self.config.storage).password])
        return LimiterUnavailable(
            f"limiter storage {masked_uri(self.config.storage)} unavailable: {cause}"
        )

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the blocking client (async clients close with their loop)."""
        with self._sync_lock:
            client, self._sync = self._sync, None
        if client is not None:
            client.close()
            # A cluster client's close() leaves its nodes' pools connected.
            for node in getattr(client, "get_nodes", list)():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()

    async def aclose(self) -> None:
        """Close the running loop's async client."""
        await self._loops.close_current()


@dataclass
class _LoopEntry:
    client: Any
    keeper: AsyncGenerator[None, None]
    slots: AsyncSlots
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    failures: int = 0  # failed attempts to prepare the client


class _LoopClients:
    """One async client per event loop, closed when that loop shuts down.

    A ``redis.asyncio`` connection belongs to the loop that opened it, and
    servers and tests may run several loops (one per thread, or
    ``asyncio.run`` per call). Each client is tied to its loop through an
    async generator: the loop's ``shutdown_asyncgens()`` (which
    ``asyncio.run`` and uvicorn call) closes the generator, whose ``finally``
    closes the client on its own loop, so no socket outlives it.

    The first caller on a loop also prepares the client (a cluster client
    learns the slot map, each step bounded by ``timeout``) while the others
    wait: redis-py's async cluster client, hit by many tasks before it has
    initialised, races on its connections. Each loop also has its own
    connection slots, as its client has its own pool.
    """

    def __init__(self, factory: Callable[[], Any], connections: int, timeout: float) -> None:
        self._factory = factory
        self._connections = connections
        self._timeout = timeout
        self._entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEntry] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self) -> _LoopEntry:
        loop = asyncio.get_running_loop()
        entry = self._entries.get(loop)
        if entry is None:
            client = self._factory()
            # Stored before the first await so concurrent tasks share one client.
            entry = self._entries[loop] = _LoopEntry(
                client, _closed_with_loop(client), AsyncSlots(self._connections)
            )
            await entry.keeper.__anext__()  # runs to its yield: now the loop tracks it
        if not entry.ready:
            seen = entry.failures
            async with entry.lock:
                if not entry.ready:
                    _give_up_if_failed_since(seen, entry.failures)
                    initialize = getattr(entry.client, "initialize", None)
                    try:
                        if initialize is not None:
                            await answered_within(self._timeout, initialize())
                    except Exception:
                        entry.failures += 1
                        raise
                    entry.ready = True
        return entry

    async def close_current(self) -> None:
        entry = self._entries.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.keeper.aclose()


def _give_up_if_failed_since(seen: int, failures: int) -> None:
    if failures != seen:
        raise LimiterUnavailable(
            "limiter storage unavailable: it could not be reached while this call waited"
        )


async def _closed_with_loop(client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()
