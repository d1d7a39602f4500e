"""Redis-family storage URIs (limits' syntax) to redis-py clients, sync and async.

keystile reads the same URIs ``limits`` does, so a config moves between the
two unchanged:

- ``redis://[user:password@]host:port[/db]``, ``rediss://`` (TLS),
  ``redis+unix:///path/to/sock``;
- ``redis+cluster://[user:password@]host:port,host:port``;
- ``redis+sentinel://[user:password@]host:port,host:port/service_name``;
- the same with ``valkey`` in place of ``redis``: Valkey speaks the Redis
  protocol, so the ``redis`` client talks to it (no second driver needed).

keystile reads two query options itself and removes them before the URI
reaches redis-py: ``key_prefix`` (default ``keystile``), so several apps can
share a Redis without sharing counters, and ``max_connections`` (default
50), the connections one client keeps (per process, and per event loop).

Every client is built for a bounded call and no automatic retry. A retry is
wrong here twice over: it multiplies the time a request waits on a sick
server, and a script whose reply was lost may already have spent the
limits, so running it again would count the request twice. The blocking
client bounds each connect and each read with a socket timeout; the
``redis.asyncio`` client has none of its own, because its timeouts are event
loop timers that count the loop's own delays: the limiter bounds each async
call itself (``keystile._limiter_calls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from keystile.errors import ConfigError

__all__ = ["REDIS_SCHEMES", "RedisTarget", "async_client", "parse_redis_uri", "sync_client"]

REDIS_SCHEMES = frozenset(
    f"{server}{suffix}"
    for server in ("redis", "valkey")
    for suffix in ("", "s", "+unix", "+cluster", "+sentinel")
)
DEFAULT_PREFIX = "keystile"
DEFAULT_CONNECTIONS = 50  # redis-py's BlockingConnectionPool default
_OURS = ("key_prefix", "max_connections")


@dataclass(frozen=True)
class RedisTarget:
    """Where the limiter's counters live, parsed once from the storage URI."""

    kind: str  # "single" | "cluster" | "sentinel"
    url: str = ""  # a redis-py URL (kind "single")
    locations: tuple[tuple[str, int], ...] = ()  # cluster nodes or sentinels
    service: str = ""  # the sentinel service name
    username: str | None = None
    password: str | None = None
    db: int = 0
    key_prefix: str = DEFAULT_PREFIX
    connections: int = DEFAULT_CONNECTIONS

    def __repr__(self) -> str:  # never show the password
        where = (
            self.url.split("@")[-1] if self.url else ",".join(f"{h}:{p}" for h, p in self.locations)
        )
        return f"RedisTarget({self.kind}, {where})"


def parse_redis_uri(uri: str) -> RedisTarget:
    """Parse a Redis-family storage URI; a malformed one is a ``ConfigError``."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme.startswith("async+"):  # limits' async spelling of the same storage
        scheme = scheme[len("async+") :]
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(f"limiter storage {scheme}:// is not a Redis storage")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "key_prefix"), DEFAULT_PREFIX) or DEFAULT_PREFIX
    connections = _connections(next((v for k, v in query if k == "max_connections"), None))
    rest = urlencode([(k, v) for k, v in query if k not in _OURS])
    server = "valkey" if scheme.startswith("valkey") else "redis"
    suffix = scheme[len(server) :]
    if suffix in ("", "s", "+unix"):
        new_scheme = {"": "redis", "s": "rediss", "+unix": "unix"}[suffix]
        # Built by hand: urlunsplit drops the "//" of a unix socket URL.
        url = f"{new_scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
        return RedisTarget("single", url=url, key_prefix=prefix, connections=connections)
    locations = _locations(parts.netloc.rpartition("@")[2], uri)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if suffix == "+cluster":
        return RedisTarget(
            "cluster",
            locations=locations,
            username=username,
            password=password,
            key_prefix=prefix,
            connections=connections,
        )
    service = parts.path.strip("/")
    if not service:
        raise ConfigError(
            f"{scheme}:// needs the service name as its path: {scheme}://h:p/mymaster"
        )
    db = next((int(v) for k, v in query if k == "db" and v.isdigit()), 0)
    return RedisTarget(
        "sentinel",
        locations=locations,
        service=service,
        username=username,
        password=password,
        db=db,
        key_prefix=prefix,
        connections=connections,
    )


def _connections(value: str | None) -> int:
    if value is None:
        return DEFAULT_CONNECTIONS
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"limiter storage: max_connections must be a whole number >= 1, not {value!r}"
        )
    return int(value)


def _locations(netloc: str, uri: str) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for loc in netloc.split(","):
        sub = urlsplit(f"//{loc.strip()}")
        try:
            port = sub.port
        except ValueError:
            port = None
        if not sub.hostname or port is None:
            raise ConfigError(f"limiter storage: missing host or port in {loc!r}")
        out.append((sub.hostname, port))
    if not out:
        raise ConfigError(f"limiter storage {uri.split('://')[0]}:// lists no host")
    return tuple(out)


def _redis() -> Any:
    """The redis package, typed loosely (its client classes are partly untyped)."""
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.retry
        import redis.asyncio.sentinel
        import redis.backoff
        import redis.cluster
        import redis.retry
        import redis.sentinel
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "a redis:// limiter needs the redis client: pip install 'keystile[redis]'"
        ) from exc
    return redis


def _options(target: RedisTarget, retry: Any, timeout: float | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        **_timeouts(timeout),
        "retry": retry,
        "max_connections": target.connections,
    }
    if target.username:
        options["username"] = target.username
    if target.password:
        options["password"] = target.password
    return options


def _timeouts(timeout: float | None) -> dict[str, float | None]:
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def _auth(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("username", "password") if k in options}


def sync_client(target: RedisTarget, timeout: float) -> Any:
    """A blocking client (WSGI, threads); thread-safe through its pool.

    ``timeout`` is a socket timeout: it bounds each connect and each read in
    the kernel, so a thread that waits for the GIL is not counted.
    """
    redis = _redis()
    options = _options(target, redis.retry.Retry(redis.backoff.NoBackoff(), 0), timeout)
    if target.kind == "single":
        return redis.Redis.from_url(target.url, **options)
    if target.kind == "cluster":
        nodes = [redis.cluster.ClusterNode(h, p) for h, p in target.locations]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **options)
    sentinel = redis.sentinel.Sentinel(
        list(target.locations), sentinel_kwargs={**_auth(options), **_timeouts(timeout)}, **options
    )
    return sentinel.master_for(target.service, db=target.db)


def async_client(target: RedisTarget) -> Any:
    """A ``redis.asyncio`` client; it belongs to the event loop that first uses it.

    It has no timeouts of its own (see the module docstring): every await on
    it must be bounded by ``keystile._limiter_calls.answered_within``.
    """
    redis = _redis()
    aio = redis.asyncio
    options = _options(target, aio.retry.Retry(redis.backoff.NoBackoff(), 0), None)
    if target.kind == "single":
        return aio.Redis.from_url(target.url, **options)
    if target.kind == "cluster":
        nodes = [aio.cluster.ClusterNode(h, p) for h, p in target.locations]
        return aio.cluster.RedisCluster(startup_nodes=nodes, **options)
    sentinel = aio.sentinel.Sentinel(
        list(target.locations), sentinel_kwargs=_auth(options), **options
    )
    return sentinel.master_for(target.service, db=target.db)
