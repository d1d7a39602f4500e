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


def test_the_metrics_page_names_every_series_and_label_and_no_other() -> None:
    """docs/metrics.md cannot drift from what ``keystile.metrics`` registers."""
    import json
    import re
    from pathlib import Path

    from keystile.metrics import PrometheusMetrics

    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    # One observation per series, so every sample (buckets, _created...) exists.
    metrics.decisions.labels("admitted", "").inc()
    metrics.observe_call("store", 0.001)
    samples = [s for family in registry.collect() for s in family.samples]
    names = {s.name for s in samples}
    labels = {label for s in samples for label in s.labels}
    page = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text("utf-8")
    assert names and {n for n in names if f"`{n}`" not in page} == set()
    assert labels and {label for label in labels if f"`{label}`" not in page} == set()
    assert set(re.findall(r"keystile_[a-z_]+", page)) - {"keystile_metrics"} <= names
    (dashboard,) = re.findall(r"^```json\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    assert len(json.loads(dashboard)["panels"]) >= 4
