"""Cold path: a cache miss against 1,000,000 keys in PostgreSQL.

    python benchmarks/bench_cold_path.py [--keys 1000000] [--lookups 5000]

Fills a database of its own (`keystile_bench`, created if missing) with
--keys rows through COPY, then times the store's `find_by_digest` (one
indexed query) for random known digests and for unknown ones, sync and
async, and prints p50/p99 beside the floor measured in the same run: the
same indexed SELECT sent by psycopg alone on one open connection. Also
shows the verified-key cache's memory at its configured size. Goal (issue
6): p99 at most 2 ms on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import time
import tracemalloc
from datetime import datetime, timezone

import psycopg

from keystile.cache import KeyCache
from keystile.stores.base import KeyRecord
from keystile.stores.sql import AsyncSQLKeyStore, SQLKeyStore

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
DB = "keystile_bench"
URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"


def ensure_database() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {DB}")


def fill(n: int) -> list[str]:
    """COPY n rows (if the table does not hold them yet); return a sample of digests."""
    store = SQLKeyStore(URL, timeout=30)
    store.init_schema()
    store.close()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB}") as conn:
        have = conn.execute("SELECT count(*) FROM keystile_keys").fetchone()[0]  # type: ignore[index]
        if have < n:
            conn.execute("TRUNCATE keystile_keys")
            start = time.perf_counter()
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            with conn.cursor().copy(
                "COPY keystile_keys (id, digest, prefix, last4, name, scopes, org, kind, type,"
                " allowed_origins, restrictions, meta, created_at) FROM STDIN"
            ) as copy:
                for i in range(n):
                    copy.write_row(
                        (
                            f"key_{i:020d}",
                            secrets.token_hex(32),
                            "sk_xxxxxxxxxxx",
                            "abcd",
                            f"k{i}",
                            "[]",
                            f"org{i % 1000}",
                            "bot",
                            "secret",
                            "[]",
                            "{}",
                            "{}",
                            now,
                        )
                    )
            conn.execute("ANALYZE keystile_keys")
            conn.commit()
            print(f"filled {n} keys in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        rows = conn.execute(
            "SELECT digest FROM keystile_keys TABLESAMPLE SYSTEM (1) LIMIT 20000"
        ).fetchall()
    return [r[0] for r in rows]


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def time_floor(digests: list[str]) -> list[float]:
    """The same indexed query through psycopg alone, autocommit, one open connection."""
    out = []
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB}", autocommit=True) as conn:
        query = "SELECT * FROM keystile_keys WHERE digest = %s"
        conn.execute(query, ("warm",), prepare=True)
        for digest in digests:
            t = time.perf_counter()
            conn.execute(query, (digest,), prepare=True).fetchone()
            out.append(time.perf_counter() - t)
    return out


def time_sync(digests: list[str]) -> list[float]:
    store = SQLKeyStore(URL, timeout=1.0)
    store.execute("ping")
    out = []
    for digest in digests:
        t = time.perf_counter()
        store.execute("find_by_digest", digest)
        out.append(time.perf_counter() - t)
    store.close()
    return out


async def time_async(digests: list[str]) -> list[float]:
    store = AsyncSQLKeyStore(URL, timeout=1.0)
    await store.aexecute("ping")
    out = []
    for digest in digests:
        t = time.perf_counter()
        await store.aexecute("find_by_digest", digest)
        out.append(time.perf_counter() - t)
    await store.aclose()
    return out


def cache_memory(size: int) -> float:
    record = KeyRecord(
        id="key_x",
        digest="d",
        prefix="sk_",
        last4="abcd",
        name="n",
        scopes=("events:read",),
        org="acme",
        owner=None,
        kind="bot",
        type="secret",
        created_at=datetime.now(timezone.utc),
    )
    cache = KeyCache(60, size=size)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(size * 3):  # three times the size: the bound must hold
        cache.put(secrets.token_hex(32), record.replace(id=f"key_{i}"))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(cache) <= size
    return used / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=5000)
    args = parser.parse_args()
    ensure_database()
    known = fill(args.keys)
    sample = random.sample(known, min(args.lookups, len(known)))
    unknown = [secrets.token_hex(32) for _ in range(args.lookups)]
    print(f"{args.keys} keys in PostgreSQL ({os.uname().nodename}), loopback")
    for name, run in (
        ("psycopg floor", lambda: time_floor(sample)),
        ("sync  known", lambda: time_sync(sample)),
        ("sync  unknown", lambda: time_sync(unknown)),
        ("async known", lambda: asyncio.run(time_async(sample))),
        ("async unknown", lambda: asyncio.run(time_async(unknown))),
    ):
        times = run()
        print(
            f"{name:<14} p50 {pct(times, 0.50):.3f} ms  p99 {pct(times, 0.99):.3f} ms  "
            f"mean {statistics.mean(times) * 1000:.3f} ms"
        )
    for size in (10_000, 100_000):
        print(f"cache of {size} entries, filled 3x over: {cache_memory(size):.1f} MB")


if __name__ == "__main__":
    main()
