"""Store calls that can be walked away from: the deadline of every SQL store call.

``SQLKeyStore`` and ``AsyncSQLKeyStore`` (``keystile.stores.sql``) run each
operation as a ``Call``; this module holds what makes such a call
boundable and recoverable, the same for both: the pool hooks that learn
which connection a call holds and check it is alive, the severing of that
connection's socket when the caller gives up, and the one retry of a read
whose pooled connection had died.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from keystile.errors import StoreUnavailable
from keystile.stores._sql_usage import OPS

__all__ = ["READ_ONLY", "Call", "current_call", "lost_connection", "run_op", "watch"]

# store_timeout is enforced here, on the client, because nothing else bounds
# every way a call can hang: libpq counts connect_timeout in whole seconds
# (psycopg makes it at least 2), statement_timeout is the server's and does
# nothing when the server never reads the query, and TCP keepalives and
# tcp_user_timeout are answered by the peer's kernel even when the database
# behind it is hung. So a call runs where it can be walked away from (a
# worker thread for a sync store, a task for an async one); at the deadline
# the caller gets StoreUnavailable at once, and the socket of the connection
# the call holds is shut down, so that the driver fails now rather than
# whenever the network decides, the pool throws that connection away instead
# of keeping one with a reply still owed on it, and the worker is free again.
#
# Which connection a call holds is learnt in the pool's checkout hook (a
# context variable names the call), which is also where the liveness ping
# runs: SQLAlchemy's own pool_pre_ping runs before any hook could see the
# connection, so a ping hung on a stalled server could never be cut short.
#
# One-statement reads (a cache miss is one) skip that ping: it is a round
# trip on every call to guard against a connection that died while pooled,
# and for a read the same guard costs nothing until it is needed. The read
# runs on the pooled connection; if the driver reports that connection lost
# (SQLAlchemy then discards every connection of that pool generation), the
# read runs once more on a new one, inside the same deadline. Writes keep
# the ping: a write is never sent twice.


class Call:
    """One store call in flight: the DBAPI connection it holds, if any."""

    __slots__ = ("_held", "_identity", "_lock", "abandoned", "read_only")

    def __init__(self, read_only: bool = False) -> None:
        self._lock = threading.Lock()
        self._held: Any = None
        self._identity: Any = None
        self.abandoned = False
        self.read_only = read_only  # no checkout ping; one retry on a lost connection

    def hold(self, dbapi_conn: Any) -> None:
        with self._lock:
            if self.abandoned:  # the caller left while this call waited to connect
                raise StoreUnavailable("the store call was abandoned at its deadline")
            self._held, self._identity = dbapi_conn, _socket_identity(dbapi_conn)

    def release(self, dbapi_conn: Any) -> None:
        # Called (under the lock) before the driver may close the connection,
        # so abandon() never shuts a socket number the OS has handed on.
        with self._lock:
            if self._held is dbapi_conn:
                self._held = self._identity = None

    def abandon(self) -> bool:
        """Give the call up; True if it held a connection (now severed)."""
        with self._lock:
            self.abandoned = True
            held, identity, self._held, self._identity = self._held, self._identity, None, None
            if held is not None:
                _sever(held, identity)
        return held is not None


current_call: ContextVar[Call | None] = ContextVar("keystile_store_call", default=None)


def _driver(dbapi_conn: Any) -> Any:
    return getattr(dbapi_conn, "driver_connection", dbapi_conn)  # async engines adapt it


def _socket_identity(dbapi_conn: Any) -> Any:
    """What tells a psycopg connection's socket from a later one with its number: its inode."""
    pgconn = getattr(_driver(dbapi_conn), "pgconn", None)
    if pgconn is None:
        return None
    with contextlib.suppress(Exception):
        return os.fstat(pgconn.socket).st_ino
    return None


def _sever(dbapi_conn: Any, identity: Any) -> None:
    """Shut the connection's socket so a blocked read or write returns at once.

    Only ``shutdown``, never ``close``: the driver still owns the descriptor
    and closes it when the pool discards the connection. A psycopg socket is
    reached by number (and libpq closes it by itself on a lost connection),
    so it is shut only if that number still names the same socket.
    """
    driver = _driver(dbapi_conn)
    with contextlib.suppress(Exception):
        pgconn = getattr(driver, "pgconn", None)
        if pgconn is not None:  # psycopg, sync or async
            fd = pgconn.socket
            if identity is not None and os.fstat(fd).st_ino == identity:
                sock = socket.socket(fileno=fd)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.detach()
        elif isinstance(getattr(driver, "_sock", None), socket.socket):  # PyMySQL
            driver._sock.shutdown(socket.SHUT_RDWR)
        elif getattr(driver, "_writer", None) is not None:  # aiomysql, on its own loop
            driver._writer.transport.abort()


def watch(engine: Engine) -> None:
    """Install the checkout hook: name the held connection, then ping it."""
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    def _fresh(dbapi_conn: Any, record: Any) -> None:
        record.info["keystile_fresh"] = True

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        call = current_call.get()
        if call is not None:
            call.hold(dbapi_conn)
        if record.info.pop("keystile_fresh", False):
            return  # just connected: alive
        if call is not None and call.read_only:
            return  # a lost connection is found by the read itself, and retried
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            if call is not None and call.abandoned:
                raise StoreUnavailable("the store call was abandoned at its deadline") from exc
            # A connection that died while pooled: the pool replaces it and
            # runs this hook again on the new one.
            raise sa_exc.DisconnectionError() from exc

    def _release(dbapi_conn: Any, *_: Any) -> None:
        call = current_call.get()
        if call is not None:
            call.release(dbapi_conn)

    for name in ("checkin", "invalidate", "close"):
        event.listen(engine, name, _release)


# One-statement reads that need no transaction. On PostgreSQL they run in
# autocommit (a client-side switch in psycopg), which saves the BEGIN and
# COMMIT round trips on every cache miss; MySQL drivers would spend a round
# trip on the switch itself, so they keep the transaction.
READ_ONLY = frozenset(
    {
        OPS[name]
        for name in (
            "get",
            "find_by_digest",
            "find_by_digests",
            "find_imported",
            "ping",
            "read_usage",
            "audit_events",
            "list_all",
            "overrides",
        )
    }
)


def lost_connection(call: Call, exc: BaseException) -> bool:
    """Whether a read failed only because its pooled connection had died: retry it once."""
    return (
        call.read_only
        and not call.abandoned
        and isinstance(exc, sa_exc.DBAPIError)
        and exc.connection_invalidated
    )


def run_op(conn: Connection, call: Call, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        if fn in READ_ONLY and conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return fn(conn, *args)
        with conn.begin():
            return fn(conn, *args)
    except BaseException:
        if call.abandoned and not conn.invalidated:
            conn.invalidate()  # never back into the pool with a reply still owed
        raise
