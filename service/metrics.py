"""Prometheus metrics: HTTP requests and latency per route, errors by type, compute and cache."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        # A registry per app keeps several apps in one process (tests) from colliding.
        self.registry = CollectorRegistry()
        self.requests = Counter("nabla_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("nabla_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.errors = Counter("nabla_errors_total", "Error responses by error type", ["type"],
                              registry=self.registry)
        self.compute = Histogram("nabla_compute_seconds", "Time to answer a transform request", ["transform"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.cache = Counter("nabla_plan_cache_total", "Compiled-plan lookups", ["result"], registry=self.registry)
        self.cached_plans = Gauge("nabla_plan_cache_entries", "Compiled plans held", registry=self.registry)
        self.cached_plan_bytes = Gauge("nabla_plan_cache_bytes", "Estimated bytes held by compiled plans",
                                       registry=self.registry)
        self.worker_rss = Gauge("nabla_compute_worker_resident_bytes",
                                "Resident memory of the compute workers (as last reported)", registry=self.registry)
        self.worker_replacements = Gauge("nabla_compute_worker_replacements",
                                         "Compute workers replaced since start: recycled for memory, killed past "
                                         "their deadline", ["reason"], registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Labels come from fixed sets only: a client must not be able to mint new series.
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def observe_compute(self, transform: str, seconds: float) -> None:
        self.compute.labels(transform).observe(seconds)

    def observe_cache(self, cache_hit: bool) -> None:
        self.cache.labels("hit" if cache_hit else "miss").inc()

    def render(self, plan_entries: int, plan_bytes: int, workers: Any = None) -> tuple[bytes, str]:
        """The exposition text; gauges are read now (plans and workers live in worker processes)."""
        self.cached_plans.set(plan_entries)
        self.cached_plan_bytes.set(plan_bytes)
        if workers is not None:
            self.worker_rss.set(workers.resident_bytes())
            self.worker_replacements.labels("recycled").set(workers.recycled)
            self.worker_replacements.labels("killed").set(workers.killed)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
