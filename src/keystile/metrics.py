"""Optional Prometheus metrics (``pip install 'keystile[metrics]'``).

    from prometheus_client import make_asgi_app
    from keystile.metrics import install

    metrics = install(ks)                      # the default registry
    app.mount("/metrics", make_asgi_app())     # scrape it (keep it off the public API)

Exposed:

- ``keystile_decisions_total{outcome, code}``: admitted requests
  (``outcome="admitted"``, ``code=""``) and refusals by code (``UNAUTHORIZED``,
  ``INSUFFICIENT_SCOPE``, ``RATE_LIMITED``, ``UNAVAILABLE``, ...);
- ``keystile_backend_seconds{backend}``: the latency of each store call
  (``store``), limiter call (``limiter``) and imported-hash check
  (``imported_hash``) a request made. A request answered from the cache
  makes no store call, so the store histogram shows cache misses only.

Labels never carry a key, a key id or an org: their number stays bounded.
Every series, its labels, PromQL and a Grafana dashboard: docs/metrics.md.
Timing costs two clock reads per backend call, and only once installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from keystile.pipeline import Decision, Refusal

if TYPE_CHECKING:
    from keystile.engine import Keystile

__all__ = ["PrometheusMetrics", "install"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class PrometheusMetrics:
    """The counters and histograms one engine reports to."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = REGISTRY if registry is None else registry
        self.decisions = Counter(
            "keystile_decisions",
            "Requests keystile admitted, and refused by code.",
            ["outcome", "code"],
            registry=registry,
        )
        self.backend = Histogram(
            "keystile_backend_seconds",
            "Latency of the store, limiter and imported-hash calls made by requests.",
            ["backend"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def __repr__(self) -> str:
        return "PrometheusMetrics()"

    def observe_decision(self, decision: Decision) -> None:
        if isinstance(decision, Refusal):
            self.decisions.labels("refused", decision.code).inc()
        else:
            self.decisions.labels("admitted", "").inc()

    def observe_call(self, backend: str, seconds: float) -> None:
        self.backend.labels(backend).observe(seconds)


def install(ks: Keystile, registry: CollectorRegistry | None = None) -> PrometheusMetrics:
    """Start reporting ``ks``'s decisions and backend latencies; returns the metrics."""
    metrics = PrometheusMetrics(registry)
    ks.metrics = metrics
    return metrics
