"""Why a backing service failed, in a few words: the cause an outage error names.

"OperationalError" is what a DNS typo, a stopped server, a missing database
and a wrong password all look like from their class alone, yet each needs a
different fix. Each driver says which it was its own way: an ``OSError``
under the driver's exception (PyMySQL, redis-py), a MySQL error number, a
PostgreSQL SQLSTATE, or only libpq's text (psycopg reports every failure to
connect as an ``OperationalError`` with no SQLSTATE). So the cause is read
from those, in that order, and put in the words of SPEC section 11:
connection refused, unknown host, unknown database, authentication failed.

A message is never passed on whole: a query's error can quote the values it
was given, and SQLAlchemy's own adds the statement and its parameters. Only
the first line of a connection-level error is, with any password that the
caller names masked out; any other error is named by its class and code.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterable, Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = ["cause_of", "masked_uri"]

# MySQL and MariaDB error numbers (the first argument of PyMySQL's and
# aiomysql's errors).
_MYSQL_CODES = {
    1044: "access denied to the database",
    1045: "authentication failed",
    1049: "unknown database",
    1698: "authentication failed",
    2005: "unknown host",
    2006: "connection lost",
    2013: "connection lost",
}

# PostgreSQL SQLSTATEs, for the errors that carry one.
_SQLSTATES = {
    "3D000": "unknown database",
    "28000": "authentication failed",
    "28P01": "authentication failed",
    "53300": "too many connections",
    "57P01": "the server is shutting down",
    "57P03": "the server is starting up",
}

# libpq's words (and the system's, quoted in them), for psycopg's errors that
# carry no SQLSTATE. Checked in order: the first that matches names the cause.
_TEXTS = [
    (r"connection refused|connect call failed", "connection refused"),
    (
        r"failed to resolve host|could not translate host name|name or service not known"
        r"|nodename nor servname|temporary failure in name resolution|no address associated",
        "unknown host",
    ),
    (r'database "[^"]*" does not exist|unknown database', "unknown database"),
    (r'role "[^"]*" does not exist', "authentication failed (unknown user)"),
    (r"authentication failed|no pg_hba\.conf entry|access denied", "authentication failed"),
    (r"queuepool limit", "every pooled connection is busy"),
    (r"timeout expired|timed out|\btimeout (reading|writing|connecting)", "timed out"),
    (
        r"server closed the connection|connection reset|broken pipe|lost connection",
        "connection lost",
    ),
]
_PATTERNS = [(re.compile(pattern, re.IGNORECASE), cause) for pattern, cause in _TEXTS]

# Exceptions whose message is about reaching the service, never about a
# query's values: the first line of theirs may be shown.
_CONNECTION_LEVEL = frozenset(
    {"OperationalError", "InterfaceError", "ConnectionError", "RedisClusterException"}
)

_LONGEST = 160
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")


def cause_of(exc: BaseException, *, secrets: Iterable[str | None] = ()) -> str:
    """A short, password-free cause of ``exc``: ``"connection refused"``, ``"unknown host"``..."""
    chain = list(_chain(exc))
    for link in chain:
        cause = _from_os_error(link) or _from_code(link)
        if cause:
            return cause
    for link in chain:
        name = type(link).__name__
        if name == "AuthenticationError":  # redis-py
            return "authentication failed"
        if name == "MasterNotFoundError":  # redis-py's Sentinel
            return "no master found for the service"
        text = " ".join(str(arg) for arg in link.args)
        for pattern, cause in _PATTERNS:
            if pattern.search(text):
                return cause
        if name == "TimeoutError":  # redis-py's, SQLAlchemy's pool
            return "timed out"
    # The driver's own exception: SQLAlchemy's wrapper adds the statement.
    driver = next((x for x in chain if not type(x).__module__.startswith("sqlalchemy")), exc)
    return _described(driver, secrets)


def masked_uri(uri: str) -> str:
    """``uri`` with the password in its user part replaced by ``***``."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        user = parts.username or ""
        hosts = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
    except ValueError:
        return "(unparsable URI)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver's exception SQLAlchemy wraps, and what each was raised from."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 10:
        link = todo.pop(0)
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        orig = getattr(link, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None]
        todo += [link.__cause__, link.__context__]


def _from_os_error(link: BaseException) -> str | None:
    if isinstance(link, socket.gaierror):
        return "unknown host"
    if isinstance(link, ConnectionRefusedError):
        return "connection refused"
    if isinstance(link, (TimeoutError, socket.timeout, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(link, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "connection lost"
    return None


def _from_code(link: BaseException) -> str | None:
    sqlstate = getattr(link, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _SQLSTATES:
        return _SQLSTATES[sqlstate]
    code = link.args[0] if link.args else None
    if isinstance(code, int) and not isinstance(link, OSError):
        return _MYSQL_CODES.get(code)
    return None


def _described(link: BaseException, secrets: Iterable[str | None]) -> str:
    """The first line of a connection-level error's message, else its class and code."""
    name = type(link).__name__
    if not _CONNECTION_LEVEL.intersection(c.__name__ for c in type(link).__mro__):
        code = getattr(link, "sqlstate", None) or (link.args[0] if link.args else None)
        return f"{name} {code}" if isinstance(code, int) or _SQLSTATE.fullmatch(str(code)) else name
    args = link.args[1:] if link.args and isinstance(link.args[0], int) else link.args
    text = " ".join(str(arg) for arg in args).strip()
    line = " ".join(text.splitlines()[0].split()) if text else ""
    for secret in secrets:
        if secret:  # as given, and as a URL spells it (percent-encoded) or not
            for form in {secret, quote(secret, safe=""), unquote(secret)}:
                line = line.replace(form, "***")
    if not line:
        return name
    if len(line) > _LONGEST:
        line = line[: _LONGEST - 1] + "…"
    return f"{name}: {line}"
