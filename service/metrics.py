"""Prometheus metrics: HTTP requests and latency per route, errors by type, compute and cache.

Every request observes five series. prometheus_client's own counters and histograms take a lock
and do a few attribute lookups per observation (7 µs a request, a twentieth of a small gradient's
CPU time), so the per-request series are tallies of plain numbers (`Tally`): an observation is a
dictionary update, and the Prometheus families are built from the tallies only when /metrics is
read. The exposition is the same, without the `_created` series.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BUCKET_NAMES = [floatToGoString(b) for b in _BUCKETS] + ["+Inf"]


class Tally:
    """A counter (`histogram=False`) or a histogram over _BUCKETS, by label values, as plain
    numbers; `family()` is its Prometheus metric family as of now."""

    def __init__(self, name: str, documentation: str, labels: list[str], lock: threading.Lock, *,
                 histogram: bool = False) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.histogram = histogram
        self._lock = lock
        # label values -> count; for a histogram, [count in each bucket (not cumulative)..., sum]
        self._values: dict[tuple[str, ...], Any] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + 1

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            counts = self._values.get(labels)
            if counts is None:
                counts = self._values[labels] = [0] * (len(_BUCKETS) + 1) + [0.0]
            counts[bisect.bisect_left(_BUCKETS, value)] += 1  # the first bucket whose bound is >= value
            counts[-1] += value

    def family(self) -> Any:
        with self._lock:
            values = {k: (list(v) if self.histogram else v) for k, v in self._values.items()}
        if not self.histogram:
            counter = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
            for labels, count in values.items():
                counter.add_metric(list(labels), float(count))
            return counter
        histogram = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, counts in values.items():
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_NAMES, counts[:-1]):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            histogram.add_metric(list(labels), buckets, counts[-1])
        return histogram


class _Tallies:
    """The tallies as a prometheus_client collector."""

    def __init__(self, tallies: list[Tally]) -> None:
        self.tallies = tallies

    def collect(self) -> Iterator[Any]:
        for tally in self.tallies:
            yield tally.family()


class Metrics:
    def __init__(self) -> None:
        # A registry per app keeps several apps in one process (tests) from colliding.
        self.registry = CollectorRegistry()
        lock = threading.Lock()
        self.requests = Tally("nabla_http_requests", "HTTP requests", ["method", "route", "status"], lock)
        self.latency = Tally("nabla_http_request_seconds", "HTTP request latency", ["method", "route"], lock,
                             histogram=True)
        self.errors = Tally("nabla_errors", "Error responses by error type", ["type"], lock)
        self.compute = Tally("nabla_compute_seconds", "Time to answer a transform request", ["transform"], lock,
                             histogram=True)
        self.cache = Tally("nabla_plan_cache", "Compiled-plan lookups", ["result"], lock)
        self.answered = Tally("nabla_compute_answers", "Compute requests by where they were answered: inline (on "
                              "the event loop), worker (a compute worker) or thread", ["where"], lock)
        self.registry.register(_Tallies([self.requests, self.latency, self.errors, self.compute, self.cache,
                                         self.answered]))
        self.cached_plans = Gauge("nabla_plan_cache_entries", "Compiled plans held", registry=self.registry)
        self.cached_plan_bytes = Gauge("nabla_plan_cache_bytes", "Estimated bytes held by compiled plans",
                                       registry=self.registry)
        self.worker_rss = Gauge("nabla_compute_worker_resident_bytes",
                                "Resident memory of the compute workers (as last reported)", registry=self.registry)
        self.worker_replacements = Gauge("nabla_compute_worker_replacements",
                                         "Compute workers replaced since start: recycled for memory, killed past "
                                         "their deadline", ["reason"], registry=self.registry)
        self._muted = threading.local()

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
        self.requests.inc((method, route, str(status)))
        self.latency.observe((method, route), seconds)

    def observe_error(self, error_type: str) -> None:
        if not self._is_muted():
            self.errors.inc((error_type,))

    def observe_compute(self, transform: str, seconds: float) -> None:
        if not self._is_muted():
            self.compute.observe((transform,), seconds)

    def observe_answered(self, where: str) -> None:
        self.answered.inc((where,))

    def observe_cache(self, cache_hit: bool) -> None:
        if not self._is_muted():
            self.cache.inc(("hit" if cache_hit else "miss",))

    def render(self, plan_entries: int, plan_bytes: int, workers: Any = None) -> tuple[bytes, str]:
        """The exposition text; gauges are read now (plans and workers live in worker processes)."""
        self.cached_plans.set(plan_entries)
        self.cached_plan_bytes.set(plan_bytes)
        if workers is not None:
            self.worker_rss.set(workers.resident_bytes())
            self.worker_replacements.labels("recycled").set(workers.recycled)
            self.worker_replacements.labels("killed").set(workers.killed)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
