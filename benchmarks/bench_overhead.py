"""In-process overhead of keystile per request: wrapped minus bare, same run.

A known key (cache hit), the in-process limiter, key and org limits both
counted; ASGI and WSGI, each driven directly (no server, no socket), so the
figure is keystile's own cost. Run:

    python benchmarks/bench_overhead.py [--requests 20000] [--rounds 9]

Bare and wrapped rounds alternate, so a slow patch of a shared machine hits
both; the figure is the best wrapped round minus the best bare round, and
the median of the paired differences is printed beside it.

Goal (issue 6): at most 20 µs per request on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from keystile import Keystile

GOAL_US = 20

CONFIG = {
    "store": "memory://",
    "limiter": {"storage": "memory://", "strategy": "moving-window"},
    # Large enough never to refuse during the run: every request counts on both.
    "limits": {
        "key": os.environ.get("BENCH_KEY_LIMIT", "100000000/hour"),
        "org": os.environ.get("BENCH_ORG_LIMIT", "100000000/hour"),
    },
    "routes": [{"path": "/api/v1/events", "methods": ["GET"], "scopes": ["events:read"]}],
}


async def bare_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def bare_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def _time_asgi(app: Any, scope: dict[str, Any], n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
        return time.perf_counter() - start

    return asyncio.run(loop()) / n


def _time_wsgi(app: Any, environ: dict[str, Any], n: int) -> float:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        pass

    start = time.perf_counter()
    for _ in range(n):
        app(dict(environ), start_response)
    return (time.perf_counter() - start) / n


def _paired(
    bare: Callable[[], float], wrapped: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    """Best bare, best wrapped and the median paired difference, over alternating rounds."""
    pairs = [(bare(), wrapped()) for _ in range(rounds)]
    return (
        min(b for b, _ in pairs),
        min(w for _, w in pairs),
        statistics.median(w - b for b, w in pairs),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    n, rounds = args.requests, args.rounds

    from keystile.asgi import KeystileMiddleware as ASGIMiddleware
    from keystile.wsgi import KeystileMiddleware as WSGIMiddleware

    ks = Keystile(CONFIG, pepper=b"bench-pepper-0123456789abcdef")
    key = ks.keys.create(name="bench", scopes=["events:read"], org="acme").secret
    header = f"Bearer {key}"
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"authorization", header.encode())],
        "client": ("127.0.0.1", 5000),
    }
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/v1/events",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_AUTHORIZATION": header,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    wrapped_asgi = ASGIMiddleware(bare_asgi, ks)
    wrapped_wsgi = WSGIMiddleware(bare_wsgi, ks)
    # Warm the cache and the code paths.
    _time_asgi(wrapped_asgi, scope, 100)
    _time_wsgi(wrapped_wsgi, environ, 100)

    rows = []
    for name, bare, wrapped in (
        (
            "ASGI",
            lambda: _time_asgi(bare_asgi, scope, n),
            lambda: _time_asgi(wrapped_asgi, scope, n),
        ),
        (
            "WSGI",
            lambda: _time_wsgi(bare_wsgi, environ, n),
            lambda: _time_wsgi(wrapped_wsgi, environ, n),
        ),
    ):
        b, w, median = _paired(bare, wrapped, rounds)
        rows.append((name, b * 1e6, w * 1e6, (w - b) * 1e6, median * 1e6))
    print(
        f"requests per round: {n}, {rounds} alternating rounds; "
        "known key, key+org limits, memory limiter"
    )
    print(f"{'door':<6}{'bare µs':>10}{'wrapped µs':>12}{'overhead µs':>13}{'median µs':>11}")
    for name, b, w, o, m in rows:
        verdict = "meets" if o <= GOAL_US else "misses"
        print(f"{name:<6}{b:>10.2f}{w:>12.2f}{o:>13.2f}{m:>11.2f}  {verdict} the {GOAL_US} µs goal")
    ks.close()


if __name__ == "__main__":
    main()
