"""Load and soak, bounded and loopback only: two uvicorn workers, 64 clients.

The app (tests/soak_app.py) runs behind keystile with PostgreSQL as the key
store and Redis as the limiter, in two worker processes. Clients send a mix
of valid, made-up (well formed, so each costs a store lookup), revoked and
over-limit keys. What must hold: no 5xx, every kind of key gets its answer,
the hot key's ``20/minute`` admits exactly 20 across both workers, and the
workers' resident memory does not keep growing. The minute-long version is
``python benchmarks/soak.py --seconds 60``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PEPPER, POSTGRES_URL, REDIS_URL, _reset_sql
from tests.soak_app import HOT_LIMIT, run_soak

SECONDS = 12.0
CLIENTS = 64
RSS_GROWTH_MB = 20.0
RSS_GROWTH_RATIO = 0.20


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(90)
def test_two_workers_under_64_clients_answer_right_without_5xx_or_over_admission(
    tmp_path: Path,
) -> None:
    _reset_sql(POSTGRES_URL)
    result = run_soak(
        seconds=SECONDS,
        clients=CLIENTS,
        store=POSTGRES_URL,
        redis_url=REDIS_URL,
        pepper=PEPPER,
        workdir=tmp_path,
    )
    summary = result.report()
    assert result.requests > CLIENTS * 10, summary
    assert result.transport_errors == 0, summary
    assert result.server_errors == 0, summary
    assert result.unexpected == {}, summary
    assert result.hot_admitted == HOT_LIMIT, summary  # exactly: none over, none lost
    assert len(result.pids) == 2, summary  # both workers served
    assert "Traceback" not in result.server_log, result.server_log[-4000:]
    for pid in result.rss_kb:
        start, end = result.rss_thirds(pid)
        growth_mb = (end - start) / 1024
        assert growth_mb < RSS_GROWTH_MB or end < start * (1 + RSS_GROWTH_RATIO), summary
