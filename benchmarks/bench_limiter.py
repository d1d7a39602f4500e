"""Per-request cost of the limiter: memory and Redis, one limit and four, sync and async.

A plain script, not a test:

    python benchmarks/bench_limiter.py [redis://127.0.0.1:6379/0]

It prints microseconds per request (one ``hit_all`` / ``ahit_all`` with all
of a request's limits) and two baselines measured in the same run: the
Redis PING round trip, and for each Redis row one round trip of the same
size, an ``EVALSHA`` of a script that returns at once, sent by the same
client with the same KEYS and ARGV. The goal (issue 6): with Redis, the
limits of a request add at most one round trip, however many there are; the
``x rt`` column is the call over that round trip.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

from keystile.config import LimiterConfig
from keystile.limiter import open_limiter
from keystile.limiting import LimitCall, LimitSpec, parse_limits

N = 5000


def call(n_limits: int, key: str) -> LimitCall:
    texts = ["1000000/minute", "2000000/hour", "3000000/day", "4000000/minute"][:n_limits]
    kinds = ["route", "key", "plan", "org"]
    return LimitCall(
        tuple(
            LimitSpec(parse_limits(t)[0], f"{kinds[i]}:{key}", kinds[i], f"org:{key}")
            for i, t in enumerate(texts)
        )
    )


def per_request_us(fn: Any, n: int = N) -> float:
    fn()  # warm up (loads the script, opens the connection)
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


async def aper_request_us(fn: Any, n: int = N) -> float:
    await fn()
    started = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - started) / n * 1e6


def measure(limiter: Any, c: LimitCall) -> tuple[float, float]:
    """µs per request through ``hit_all`` and through ``ahit_all`` (on one loop)."""
    sync_us = per_request_us(lambda: limiter.hit_all(c))

    async def run() -> float:
        try:
            return await aper_request_us(lambda: limiter.ahit_all(c))
        finally:
            await limiter.aclose()

    return sync_us, asyncio.run(run())


def round_trip_us(limiter: Any, c: LimitCall) -> float:
    """One EVALSHA of a do-nothing script with ``c``'s KEYS and ARGV, on the limiter's client."""
    client = limiter._client()
    keys, args = limiter.keys_and_args(c)
    sha = client.script_load("return 0")
    return per_request_us(lambda: client.evalsha(sha, len(keys), *keys, *args))


def main(redis_url: str) -> None:
    import redis

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    ping_client = redis.Redis.from_url(redis_url)
    ping = per_request_us(ping_client.ping)
    print(f"Redis PING round trip (sync): {ping:8.1f} µs")

    async def aping() -> float:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await aper_request_us(client.ping)
        finally:
            await client.aclose()

    aping_us = asyncio.run(aping())
    print(f"Redis PING round trip (async): {aping_us:7.1f} µs\n")
    print(
        f"{'storage':<8} {'strategy':<24} {'limits':>6} {'sync µs':>9} {'async µs':>9}"
        f" {'1 rt µs':>9} {'x rt':>6}"
    )
    for storage in ("memory://", f"{redis_url}?key_prefix={prefix}"):
        for strategy in ("fixed-window", "moving-window", "sliding-window-counter"):
            limiter = open_limiter(LimiterConfig(storage=storage, strategy=strategy, timeout=5))
            for n_limits in (1, 4):
                c = call(n_limits, uuid.uuid4().hex[:6])
                sync_us, async_us = measure(limiter, c)
                name = storage.split("://")[0]
                line = f"{name:<8} {strategy:<24} {n_limits:>6} {sync_us:>9.1f} {async_us:>9.1f}"
                if name != "memory":
                    rt = round_trip_us(limiter, c)
                    line += f" {rt:>9.1f} {sync_us / rt:>6.2f}"
                print(line)
            limiter.close()
    keys = list(ping_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        ping_client.delete(*keys)
    ping_client.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0")
