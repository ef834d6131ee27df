"""Prometheus metrics: HTTP requests and latency per route, errors by type, compute and cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
        self.answered = Counter("nabla_compute_answers_total", "Compute requests by where they were answered: "
                                "inline (on the event loop), worker (a compute worker) or thread",
                                ["where"], registry=self.registry)
        self.cached_plans = Gauge("nabla_plan_cache_entries", "Compiled plans held", registry=self.registry)
        self.cached_plan_bytes = Gauge("nabla_plan_cache_bytes", "Estimated bytes held by compiled plans",
                                       registry=self.registry)
        self.worker_rss = Gauge("nabla_compute_worker_resident_bytes",
                                "Resident memory of the compute workers (as last reported)", registry=self.registry)
        self.worker_replacements = Gauge("nabla_compute_worker_replacements",
                                         "Compute workers replaced since start: recycled for memory, killed past "
                                         "their deadline", ["reason"], registry=self.registry)

        # Each request observes a few series; finding a labelled series in prometheus_client takes
        # a lock and a tuple of strings each time, so the series are kept here once found.
        self._series: dict[tuple, Any] = {}
        self._muted = threading.local()

    def _series_of(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Observe nothing in this thread meanwhile (work repeated for the server's own sake)."""
        self._muted.on = True
        try:
            yield
        finally:
            self._muted.on = False

    def _is_muted(self) -> bool:
        return getattr(self._muted, "on", False)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Labels come from fixed sets only: a client must not be able to mint new series.
        method = method if method in METHODS else "other"
        self._series_of(self.requests, method, route, str(status)).inc()
        self._series_of(self.latency, method, route).observe(seconds)

    def observe_error(self, error_type: str) -> None:
        if not self._is_muted():
            self._series_of(self.errors, error_type).inc()

    def observe_compute(self, transform: str, seconds: float) -> None:
        if not self._is_muted():
            self._series_of(self.compute, transform).observe(seconds)

    def observe_answered(self, where: str) -> None:
        self._series_of(self.answered, where).inc()

    def observe_cache(self, cache_hit: bool) -> None:
        if not self._is_muted():
            self._series_of(self.cache, "hit" if cache_hit else "miss").inc()

    def render(self, plan_entries: int, plan_bytes: int, workers: Any = None) -> tuple[bytes, str]:
        """The exposition text; gauges are read now (plans and workers live in worker processes)."""
        self.cached_plans.set(plan_entries)
        self.cached_plan_bytes.set(plan_bytes)
        if workers is not None:
            self.worker_rss.set(workers.resident_bytes())
            self.worker_replacements.labels("recycled").set(workers.recycled)
            self.worker_replacements.labels("killed").set(workers.killed)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
