"""Keys in any SQLAlchemy database: SQLite, PostgreSQL, MariaDB/MySQL.

The tables and every operation are written once, as functions over a
SQLAlchemy ``Connection``. ``SQLKeyStore`` runs them on a sync engine;
``AsyncSQLKeyStore`` runs the very same functions on an async engine through
``AsyncConnection.run_sync``, so the event loop never blocks and no query is
written twice.

Two rules are the database's to enforce, so that processes racing cannot
both win: a unique index on the digest, and a unique index on ``user_slot``,
which holds ``org + user`` for the one active user key of that pair and NULL
otherwise (revoked keys and keys in a rotation grace period let go of it).
NULLs never collide in a unique index on any of the three databases, which
is why this works where a partial index would not (MariaDB has none).

Every call is bounded by ``store_timeout`` on the client side (see
``keystile.stores._bounded``): over it, or on a dropped connection, the
caller gets ``StoreUnavailable`` (a 503) and the connection is thrown away,
never returned to the pool half-read; the next call reconnects by itself.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from keystile._outage import cause_of
from keystile._redact import redact_url
from keystile.errors import KeyConflict, StoreUnavailable
from keystile.stores._bounded import READ_ONLY, Call, current_call, lost_connection, run_op, watch
from keystile.stores._sql_schema import (
    SCHEMA_TIMEOUT,
    SCHEMA_VERSION,
    audit_table,
    create_schema,
    keys_table,
    metadata,
)
from keystile.stores._sql_usage import OPS, usage_table

__all__ = [
    "SCHEMA_VERSION",
    "AsyncSQLKeyStore",
    "SQLKeyStore",
    "audit_table",
    "keys_table",
    "metadata",
    "usage_table",
]

# The writes behind (last_used_at, usage counts, audit events) run off the
# request path, in one transaction a flush, and a busy flush (10,000 usage
# counters are 50 statements) may take longer than one request's store call
# should: they get this bound instead. The server's statement_timeout still
# bounds each statement by store_timeout.
BACKGROUND_OPS = frozenset({"touch", "add_usage", "audit"})
BACKGROUND_TIMEOUT = 30.0


def _timeout_of(op: str, timeout: float) -> float:
    return max(timeout, BACKGROUND_TIMEOUT) if op in BACKGROUND_OPS else timeout


# Connections per engine (the pool's size plus its overflow); a sync store
# runs at most this many calls at once, one worker thread per connection.
POOL_SIZE = 5
POOL_OVERFLOW = 10


# -- engines ------------------------------------------------------------------

_SYNC_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
_EXTRAS = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def driver_url(url: str, *, use_async: bool) -> sa.URL:
    """The URL with the driver keystile uses for this backend, sync or async."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    table = _ASYNC_DRIVERS if use_async else _SYNC_DRIVERS
    if backend not in table:
        raise StoreUnavailable(f"unsupported store URL scheme {parsed.drivername!r}")
    return parsed.set(drivername=table[backend])


def _connect_args(url: sa.URL, timeout: float, *, use_async: bool) -> dict[str, Any]:
    """Driver settings: the URL's own query options, and keystile's where the URL is silent.

    SQLAlchemy lets ``connect_args`` override the URL's query, so a setting
    keystile passes would silently replace the user's (PostgreSQL's
    ``options=-csearch_path=app`` lost its schema that way). PostgreSQL's
    ``options`` are merged instead: keystile's ``statement_timeout`` first,
    then the user's, so a ``statement_timeout`` the URL sets still wins.
    """
    ours = _driver_settings(url, timeout, use_async=use_async)
    query = url.query
    merged = {name: value for name, value in ours.items() if name not in query}
    if "options" in ours and "options" in query:
        given = query["options"]
        given = given if isinstance(given, str) else " ".join(given)
        merged["options"] = f"{ours['options']} {given}"
    return merged


def _driver_settings(url: sa.URL, timeout: float, *, use_async: bool) -> dict[str, Any]:
    """keystile's settings; the bound on a call is the client-side deadline, not these.

    They only make a connection that keystile has already given up on end
    sooner on its own, and keep idle pooled connections alive through NATs
    and firewalls that silently drop quiet flows (a dropped one would cost a
    request its whole store_timeout before it is found dead).
    """
    backend = url.get_backend_name()
    whole = max(1, math.ceil(timeout))
    if backend == "postgresql":
        # libpq counts connect_timeout in whole seconds (psycopg makes it at
        # least 2); statement_timeout stops a query the server is running.
        return {
            "connect_timeout": whole,
            "options": f"-c statement_timeout={int(timeout * 1000)}",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
    if backend in ("mysql", "mariadb"):
        if use_async:
            return {"connect_timeout": timeout}
        # PyMySQL's read_timeout also covers the server's greeting, so it is
        # what ends a connect that a hung server accepted.
        return {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
    if backend == "sqlite":
        return {"timeout": max(timeout, 5.0)}
    return {}


def _engine_options(url: sa.URL, timeout: float, *, use_async: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"connect_args": _connect_args(url, timeout, use_async=use_async)}
    if url.get_backend_name() != "sqlite":
        # No pool_pre_ping: keystile pings in its own checkout hook, where the
        # ping is part of a bounded call (see _watch).
        options.update(pool_timeout=timeout, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    return options


def _wrap(exc: Exception, url: str) -> Exception:
    if isinstance(exc, (KeyConflict, StoreUnavailable)):
        return exc
    outage = (
        sa_exc.DBAPIError,
        sa_exc.DisconnectionError,
        sa_exc.TimeoutError,
        OSError,
        asyncio.TimeoutError,
    )
    if isinstance(exc, outage):
        # The cause in a few words (keystile._outage reads it from the
        # driver's exception without repeating a query's values); the whole
        # exception stays chained for debugging.
        cause = cause_of(exc, secrets=[_password(url)])
        return StoreUnavailable(f"key store {redact_url(url)} unavailable: {cause}")
    return exc


def _over_time(url: str, timeout: float) -> StoreUnavailable:
    return StoreUnavailable(
        f"key store {redact_url(url)} unavailable: no answer within {timeout:g}s"
    )


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except sa_exc.ArgumentError:
        return None


def _import_driver_or_explain(url: sa.URL) -> None:
    try:
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        extra = _EXTRAS.get(url.get_backend_name())
        hint = f": pip install 'keystile[{extra}]'" if extra else ""
        raise StoreUnavailable(f"the driver for {url.drivername} is not installed{hint}") from exc


class SQLKeyStore:
    """The key store over a sync SQLAlchemy engine.

    >>> store = SQLKeyStore("sqlite:///keys.db")   # doctest: +SKIP

    Tables are created on first use (or by ``keystile db init``). Each call
    on a networked database runs on a worker thread and is abandoned at
    ``timeout`` (see ``keystile.stores._bounded``); SQLite runs in the caller's
    thread, bounded by its own busy timeout.
    """

    def __init__(self, url: str, *, timeout: float = 1.0, create: bool = True) -> None:
        self.url = url
        self.timeout = timeout
        target = driver_url(url, use_async=False)
        _import_driver_or_explain(target)
        self.engine: Engine = sa.create_engine(
            target, **_engine_options(target, timeout, use_async=False)
        )
        watch(self.engine)
        self._networked = target.get_backend_name() != "sqlite"
        self._workers: ThreadPoolExecutor | None = None
        self._workers_lock = threading.Lock()
        self._create = create
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLKeyStore({redact_url(self.url)!r})"

    def init_schema(self) -> None:
        self._bounded(create_schema, (), max(self.timeout, SCHEMA_TIMEOUT))
        self._ready = True

    def execute(self, op: str, *args: Any) -> Any:
        if not self._ready and self._create:
            self.init_schema()
        return self._bounded(OPS[op], args, _timeout_of(op, self.timeout))

    def _bounded(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        call = Call(read_only=fn in READ_ONLY)
        try:
            if not self._networked:
                return self._attempt(call, fn, args)
            try:
                future = self._pool_of_workers().submit(self._attempt, call, fn, args)
            except RuntimeError:
                # The interpreter is exiting: when the main thread ends,
                # concurrent.futures stops every thread pool for good (its
                # hook runs before any atexit function), yet the engine's
                # atexit flush of last_used_at still has to reach the
                # database. So it runs here, on the calling thread, bounded
                # only by the drivers' own timeouts (connect_timeout, and
                # statement_timeout or read_timeout). Running the flush
                # earlier instead (threading._register_atexit) would lean on
                # a private hook whose order against concurrent.futures'
                # depends on import order, and would run while non-daemon
                # request threads may still note uses; a thread of our own
                # is no way out either, as Python 3.12 refuses to start one
                # from an atexit function.
                return self._attempt(call, fn, args)
            try:
                return future.result(timeout)
            except TimeoutError:
                future.cancel()  # still queued: it never runs
                call.abandon()
                raise _over_time(self.url, timeout) from None
        except (KeyConflict, StoreUnavailable):
            raise
        except Exception as exc:
            raise _wrap(exc, self.url) from exc

    def _pool_of_workers(self) -> ThreadPoolExecutor:
        # Made on first use (and again after close(), as the engine's pool is).
        workers = self._workers
        if workers is None:
            with self._workers_lock:
                if self._workers is None:
                    self._workers = ThreadPoolExecutor(
                        POOL_SIZE + POOL_OVERFLOW, thread_name_prefix="keystile-store"
                    )
                workers = self._workers
        return workers

    def _attempt(self, call: Call, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        token = current_call.set(call)
        try:
            try:
                with self.engine.connect() as conn:
                    return run_op(conn, call, fn, args)
            except Exception as exc:
                if not lost_connection(call, exc):
                    raise
            with self.engine.connect() as conn:  # a new connection: the pool dropped the old
                return run_op(conn, call, fn, args)
        finally:
            current_call.reset(token)

    def close(self) -> None:
        with self._workers_lock:
            workers, self._workers = self._workers, None
        if workers is not None:
            # Not waiting: a worker can only still be busy with an abandoned
            # call, stuck connecting (bounded by connect_timeout); the
            # checkout hook refuses it the connection, which is then closed.
            workers.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


class AsyncSQLKeyStore:
    """The same store on an async engine; each call is bounded by ``timeout``.

    A call runs as a task of its own; at the deadline the caller gets
    ``StoreUnavailable`` without waiting for the task to unwind (a cancelled
    psycopg query would first try to cancel on the server, for up to many
    seconds when that server hangs); the task's socket is shut instead and it
    ends by itself.
    """

    def __init__(self, url: str, *, timeout: float = 1.0, create: bool = True) -> None:
        self.url = url
        self.timeout = timeout
        target = driver_url(url, use_async=True)
        _import_driver_or_explain(target)
        self.engine: AsyncEngine = create_async_engine(
            target, **_engine_options(target, timeout, use_async=True)
        )
        watch(self.engine.sync_engine)
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._create = create
        self._ready = False

    def __repr__(self) -> str:
        return f"AsyncSQLKeyStore({redact_url(self.url)!r})"

    async def aexecute(self, op: str, *args: Any) -> Any:
        try:
            if not self._ready and self._create:
                await self._bounded(create_schema, (), max(self.timeout, SCHEMA_TIMEOUT))
                self._ready = True
            return await self._bounded(OPS[op], args, _timeout_of(op, self.timeout))
        except (KeyConflict, StoreUnavailable):
            raise
        except Exception as exc:
            raise _wrap(exc, self.url) from exc

    async def _bounded(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        call = Call(read_only=fn in READ_ONLY)
        task = asyncio.ensure_future(self._attempt(call, fn, args))
        try:
            await asyncio.wait((task,), timeout=timeout)
        finally:  # over time, or the caller itself was cancelled
            if not task.done():
                if not call.abandon():
                    # Still waiting for the pool or connecting: cancelling is
                    # safe there and frees the pool's slot now, not at
                    # connect_timeout. Mid-query it is not (psycopg would try
                    # to cancel on the hung server first), hence the severing.
                    task.cancel()
                self._abandoned.add(task)
                task.add_done_callback(self._forget)
        if not task.done():
            raise _over_time(self.url, timeout)
        return task.result()

    async def _attempt(self, call: Call, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        current_call.set(call)  # the task's own context; the pool hooks read it
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(run_op, call, fn, args)
        except Exception as exc:
            if not lost_connection(call, exc):
                raise
        async with self.engine.connect() as conn:  # a new connection: the pool dropped the old
            return await conn.run_sync(run_op, call, fn, args)

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller was already told

    async def aclose(self) -> None:
        # An abandoned call holds no live socket (it was shut), but one may
        # still be connecting: cancel it rather than wait out connect_timeout.
        for task in self._abandoned:
            task.cancel()
        if self._abandoned:
            await asyncio.wait(set(self._abandoned), timeout=SCHEMA_TIMEOUT)
        await self.engine.dispose()
