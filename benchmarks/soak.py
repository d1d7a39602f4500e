"""A minute of load on two uvicorn workers: keystile with PostgreSQL and Redis.

The same soak as tests/test_soak.py (tests/soak_app.py does the work), for
longer: 64 client threads on loopback send valid, made-up, revoked and
over-limit keys; the script prints requests, statuses, requests per second,
p50/p99 latency, the hot key's admissions against its limit, and each
worker's resident memory over the first and the last third of the run.
Run:

    python benchmarks/soak.py --seconds 60 [--clients 64]

It needs the PostgreSQL and Redis the tests use (``KEYSTILE_TEST_POSTGRES``,
``KEYSTILE_TEST_REDIS``); it adds 25 keys in org ``soak`` to that database
and deletes its Redis counters after. Exits 1 if a check the test makes fails.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.soak_app import HOT_LIMIT, run_soak

POSTGRES_URL = os.environ.get(
    "KEYSTILE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KEYSTILE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--store", default=POSTGRES_URL)
    parser.add_argument("--redis", default=REDIS_URL)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        result = run_soak(
            seconds=args.seconds,
            clients=args.clients,
            store=args.store,
            redis_url=args.redis,
            pepper=secrets.token_urlsafe(32).encode(),
            workdir=Path(workdir),
        )
    print(result.report())
    failed = (
        result.server_errors
        or result.transport_errors
        or result.unexpected
        or result.hot_admitted != HOT_LIMIT
        or "Traceback" in result.server_log
    )
    if "Traceback" in result.server_log:
        print(result.server_log[-4000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
