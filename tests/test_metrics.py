"""The optional Prometheus metrics: decisions by code, backend latencies, on both doors."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from keystile import Keystile
from keystile.metrics import install
from tests.conftest import PEPPER
from tests.doors import DOORS, Door

CONFIG = {
    "store": "memory://",
    "limits": {"key": "2/minute"},
    "routes": [{"path": "/api/v1/events", "scopes": ["events:read"]}],
}


@pytest.mark.parametrize("door", DOORS)
def test_decisions_and_backend_calls_are_counted(door: str) -> None:
    ks = Keystile(CONFIG, pepper=PEPPER)
    registry = CollectorRegistry()
    install(ks, registry)
    reader = ks.keys.create(name="r", scopes=["events:read"], org="acme").secret
    other = ks.keys.create(name="o", scopes=["results"], org="acme").secret
    with Door(door, ks) as send:
        statuses = [send("GET", "/api/v1/events", key=reader).status for _ in range(3)]
        statuses.append(send("GET", "/api/v1/events").status)
        statuses.append(send("GET", "/api/v1/events", key=other).status)
    assert statuses == [200, 200, 429, 401, 403]

    def decisions(outcome: str, code: str) -> float | None:
        return registry.get_sample_value(
            "keystile_decisions_total", {"outcome": outcome, "code": code}
        )

    assert decisions("admitted", "") == 2
    assert decisions("refused", "RATE_LIMITED") == 1
    assert decisions("refused", "UNAUTHORIZED") == 1
    assert decisions("refused", "INSUFFICIENT_SCOPE") == 1
    # Two keys, each looked up once (then cached); three limiter calls for `reader`.
    assert registry.get_sample_value("keystile_backend_seconds_count", {"backend": "store"}) == 2
    assert registry.get_sample_value("keystile_backend_seconds_count", {"backend": "limiter"}) == 3
    dump = repr(list(registry.collect()))
    assert reader not in dump and "key_" not in dump  # no key or key id in any label
    ks.close()


def test_without_install_no_metrics_are_kept() -> None:
    ks = Keystile(CONFIG, pepper=PEPPER)
    assert ks.metrics is None
    ks.close()
