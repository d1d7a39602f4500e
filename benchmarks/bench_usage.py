"""The usage write-behind: one flush of 1,000 keys each used on 10 routes.

    python benchmarks/bench_usage.py [--stores sqlite,postgres,mysql] [--keys 1000] [--routes 10]

Counts 10,000 distinct (key, day, route, status) counters in the buffer, then
times one ``ks.flush()`` and counts the SQL statements it sent (a listener on
the store's engine). The goal (issue 15): a bounded number of batched
statements, never one per counter. As a yardstick, the same run times the
same rows written one statement each.

PostgreSQL and MariaDB are the ones the tests use (127.0.0.1, database test).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from keystile import Keystile
from keystile.stores._sql_usage import usage_table

STORES = {
    "sqlite": None,
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}


def run(url: str, keys: int, routes: int) -> tuple[float, int, float]:
    with Keystile({"store": url}, pepper=b"bench-pepper-0123456789abcdef") as ks:
        ks.init_store()
        engine: sa.Engine = ks.store.engine  # type: ignore[attr-defined]
        with engine.begin() as conn:
            conn.execute(sa.delete(usage_table))
        ids = [f"key_bench{i:06d}" for i in range(keys)]
        for key_id in ids:
            for r in range(routes):
                ks.count_use(key_id, f"/api/v1/route{r}", 200)
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        started = time.perf_counter()
        ks.flush()
        elapsed = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", seen)
        with engine.connect() as conn:
            stored = conn.execute(sa.select(sa.func.sum(usage_table.c.count))).scalar()
        assert stored == keys * routes, (stored, statements[:3])
        # The yardstick: the same rows, one INSERT each, in one transaction.
        with engine.begin() as conn:
            conn.execute(sa.delete(usage_table))
        rows = [
            {
                "key_id": k,
                "day": sa.func.current_date(),
                "route": f"/r{r}",
                "status": 200,
                "count": 1,
            }
            for k in ids
            for r in range(routes)
        ]
        started = time.perf_counter()
        with engine.begin() as conn:
            for row in rows:
                conn.execute(sa.insert(usage_table).values(row))
        one_by_one = time.perf_counter() - started
        with engine.begin() as conn:
            conn.execute(sa.delete(usage_table))
        return elapsed, len(statements), one_by_one


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", default="sqlite,postgres,mysql")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=10)
    args = parser.parse_args()
    counters = args.keys * args.routes
    print(f"one flush of {counters} counters ({args.keys} keys x {args.routes} routes)")
    print(f"{'store':<10}{'flush ms':>10}{'statements':>12}{'row-at-a-time ms':>18}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            url = STORES[name] or f"sqlite:///{tmp}/usage.db"
            elapsed, statements, one_by_one = run(url, args.keys, args.routes)
            print(
                f"{name:<10}{elapsed * 1000:>10.1f}{statements:>12}{one_by_one * 1000:>18.1f}"
                f"{elapsed / one_by_one:>8.2f}"
            )


if __name__ == "__main__":
    main()
