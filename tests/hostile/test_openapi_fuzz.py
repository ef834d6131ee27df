"""A bounded schemathesis run over the whole OpenAPI document, against a real server.

Every operation of /openapi.json gets up to EXAMPLES_PER_OPERATION generated requests (positive and
negative data, the document's examples first), each sent and checked for: not a server error,
status code conformance, content-type conformance, response schema conformance. Failures are
collected (not raised at the first one) and reported grouped by operation and check, with an
example; the requests sent are counted and must reach MIN_REQUESTS.

Deterministic (hypothesis derandomized, no database, no shrinking) and bounded (generation stops
after TIME_BUDGET_S). Generation is CPU-bound, so the operations are split over two worker
processes (`_fuzz_worker.py`)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from _hostile import DEADLINE_S, MARGIN_S, HostileServer

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES_PER_OPERATION = 100
MIN_REQUESTS = 2000
TIME_BUDGET_S = 150.0
WORKERS = 2


@pytest.fixture(scope="module")
def fuzz(server: HostileServer, note: Callable[[str], None]) -> dict[str, Any]:
    from _fuzz_worker import fuzz_operations

    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", timeout=30)
    labels = [result.ok().label for result in schema.get_all_operations()]
    assert labels, "the OpenAPI document has no operations"
    groups = [labels[i::WORKERS] for i in range(WORKERS)]
    start = time.monotonic()
    with ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fuzz_operations, server.url, group, EXAMPLES_PER_OPERATION, TIME_BUDGET_S,
                               DEADLINE_S + MARGIN_S) for group in groups]
        results = [f.result() for f in futures]
    server.timeline.append((start, time.monotonic(), "openapi fuzz"))
    sent = {label: n for r in results for label, n in r["sent"].items()}
    failed = sum(n for r in results for n in r["failures"].values())
    note(f"openapi fuzz: {sum(sent.values())} requests over {len(labels)} operations in "
         f"{time.monotonic() - start:.0f} s, {failed} failed checks")
    return {"labels": labels, "sent": sent, "total": sum(sent.values()), "seconds": time.monotonic() - start,
            "failures": {key: n for r in results for key, n in r["failures"].items()},
            "samples": {key: s for r in results for key, s in r["samples"].items()}}


def _per_operation(fuzz: dict[str, Any]) -> str:
    return ", ".join(f"{label} {fuzz['sent'].get(label, 0)}" for label in fuzz["labels"])


def test_openapi_fuzz_finds_nothing(fuzz: dict[str, Any]) -> None:
    failures, samples = fuzz["failures"], fuzz["samples"]
    report = "\n".join(f"  {n:4d} x {key}\n         e.g. {samples[key]}" for key, n in sorted(failures.items()))
    assert not failures, (f"{sum(failures.values())} failed checks in {fuzz['total']} requests "
                          f"({fuzz['seconds']:.0f} s):\n{report}\n  requests per operation: {_per_operation(fuzz)}")


def test_openapi_fuzz_request_count(fuzz: dict[str, Any]) -> None:
    assert fuzz["total"] >= MIN_REQUESTS, (
        f"only {fuzz['total']} requests were generated within {TIME_BUDGET_S:g} s (at least {MIN_REQUESTS} "
        f"wanted): {_per_operation(fuzz)}")


def test_server_stayed_healthy(server: HostileServer, assert_healthy: Any) -> None:
    assert_healthy(server)
