"""SPEC section 8: several processes on one database sum exactly.

Two engines in two processes serve interleaved requests for the same keys,
each flushing its counts many times while the other does; after both have
flushed, the stored totals equal the requests served, to the request.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from keystile import Keystile
from tests.conftest import MYSQL_URL, PEPPER, POSTGRES_URL, _reset_sql
from tests.doors import Door

SHARED = [
    pytest.param(POSTGRES_URL, marks=pytest.mark.postgres, id="postgres"),
    pytest.param(MYSQL_URL, marks=pytest.mark.mysql, id="mysql"),
]
REQUESTS = 300
CONFIG: dict[str, Any] = {
    "default": "authenticated",
    "routes": [
        {"path": "/a", "methods": ["GET"]},
        {"path": "/b", "methods": ["GET"], "limit": "20/hour"},
    ],
    "limits": {"key": None},
}


def _serve(url: str, secrets: list[str], start: Any, out: Any) -> None:
    with Keystile({**CONFIG, "store": url}, pepper=PEPPER) as ks:
        door = Door("wsgi", ks)
        statuses: dict[str, int] = {}
        start.wait()
        for i in range(REQUESTS):
            path = "/a" if i % 3 else "/b"
            reply = door("GET", path, key=secrets[i % len(secrets)])
            statuses[f"{path} {reply.status}"] = statuses.get(f"{path} {reply.status}", 0) + 1
            if i % 25 == 0:
                ks.flush()  # many small upserts, racing the other process's
    out.put(statuses)  # after close: the last counts are written


@pytest.mark.slow
@pytest.mark.parametrize("url", SHARED)
def test_two_processes_on_one_database_sum_exactly(url: str) -> None:
    _reset_sql(url)
    with Keystile({**CONFIG, "store": url}, pepper=PEPPER) as ks:
        keys = [ks.keys.create(name=f"k{i}", org="acme") for i in range(2)]
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Barrier(2), ctx.Queue()
        workers = [
            ctx.Process(target=_serve, args=(url, [k.secret for k in keys], start, out))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        served: dict[str, int] = {}
        for _ in workers:
            for name, n in out.get(timeout=120).items():
                served[name] = served.get(name, 0) + n
        for worker in workers:
            worker.join(30)
            assert worker.exitcode == 0
        # /b has a limit of 20 an hour per key (in each process): some of its requests were 429s.
        assert served.get("/b 429", 0) > 0
        totals = ks.keys.usage_totals(org="acme", days=1)
        assert sum(totals.values()) == 2 * REQUESTS
        by_route_status: dict[str, int] = {}
        for key in keys:
            (today,) = ks.keys.usage(key.id, days=1)
            assert totals[key.id] == today.total == REQUESTS
            for route, n in today.by_route.items():
                by_route_status[route] = by_route_status.get(route, 0) + n
        assert by_route_status == {
            "/a": sum(n for name, n in served.items() if name.startswith("/a ")),
            "/b": sum(n for name, n in served.items() if name.startswith("/b ")),
        }
