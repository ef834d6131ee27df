"""Compute worker processes (service/workers.py): what they guarantee to the server around them.

- a request that runs past its deadline and past the grace period is ended by killing its
  worker: the caller gets a 408, and a fresh worker serves the next request;
- a worker that dies mid-request is a logged, counted 500 and is replaced;
- a worker whose memory passed NABLA_WORKER_MAX_RSS_BYTES is replaced after its answer;
- a model registered or deleted through this server is seen by every worker at once;
- the workers' metrics reach /metrics.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _service_support import assert_error, expr
from fastapi.testclient import TestClient

import service.workers as workers_module


def _worker_pids(client: TestClient) -> set[int]:
    pool = client.app.state.workers
    return {w.process.pid for w in pool._workers.values()}


def _metric(client: TestClient, prefix: str) -> float:
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    assert lines, f"no metric {prefix}"
    return float(lines[0].split()[-1])


# A single 4000x4000 matrix product: one C call of over a second here (3000x3000 takes 0.5 s),
# with no deadline check inside.
ONE_LONG_C_CALL = expr("a = ones((4000, 4000)) * x\nsum(a @ a)", ["x"])
BIG_ENOUGH = {"max_array_elements": 16_000_000, "max_total_elements": 64_000_000}


def test_compute_runs_in_worker_processes_by_default(client: TestClient) -> None:
    pids = _worker_pids(client)
    assert len(pids) == 2 and os.getpid() not in pids
    assert client.post("/v1/grad", json={"function": expr("sum(x ** 2)", ["x"]), "args": [[1.0, 2.0]]}).json()[
        "grad"] == [2.0, 4.0]


def test_a_request_past_its_deadline_and_the_grace_is_ended_by_killing_its_worker(
        make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "KILL_GRACE_S", 0.0)  # read by the server side of the pool
    client = make_client(compute_timeout_s=0.05, **BIG_ENOUGH)
    before = _worker_pids(client)
    start = time.perf_counter()
    response = client.post("/v1/value", json={"function": ONE_LONG_C_CALL, "args": [1.0]})
    assert time.perf_counter() - start < 0.5  # the product alone takes longer
    assert_error(response, 408, "timeout", "NABLA_COMPUTE_TIMEOUT_S")
    assert response.json()["error"]["detail"]["limit"] == "NABLA_COMPUTE_TIMEOUT_S"
    assert _worker_pids(client) != before and len(_worker_pids(client)) == 2
    assert _metric(client, 'nabla_compute_worker_replacements{reason="killed"}') == 1.0
    ok = client.post("/v1/value", json={"function": expr("x + 1", ["x"]), "args": [1.0]})
    assert ok.status_code == 200 and ok.json()["value"] == 2.0


def test_a_worker_that_dies_mid_request_is_a_logged_500_and_is_replaced(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client(compute_timeout_s=20, **BIG_ENOUGH)
    outcome: dict[str, Any] = {}

    def long_request() -> None:
        outcome["response"] = client.post("/v1/value", json={"function": ONE_LONG_C_CALL, "args": [1.0]},
                                          headers={"X-Request-ID": "dies-1"})

    thread = threading.Thread(target=long_request)
    thread.start()
    busy: set[int] = set()
    deadline = time.monotonic() + 10
    while not busy and time.monotonic() < deadline:  # the worker doing the product uses a core
        time.sleep(0.05)
        busy = {pid for pid in _worker_pids(client) if _cpu_ticks(pid) > 20}
    assert busy, "no worker picked up the request"
    os.kill(busy.pop(), signal.SIGKILL)
    thread.join(30)
    response = outcome["response"]
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "internal_error" and error["request_id"] == "dies-1"
    assert error["detail"]["exitcode"] == -signal.SIGKILL
    assert _metric(client, 'nabla_errors_total{type="internal_error"}') == 1.0
    ok = client.post("/v1/value", json={"function": expr("x * 3", ["x"]), "args": [2.0]})
    assert ok.status_code == 200 and ok.json()["value"] == 6.0


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_worker_over_its_memory_limit_is_replaced_after_answering(
        make_client: Callable[..., TestClient]) -> None:
    # 16 MiB is below any worker's resident size: every answer retires its worker.
    client = make_client(worker_max_rss_bytes=16 * 1024 * 1024)
    seen: set[int] = set()
    for n in range(3):
        seen |= _worker_pids(client)
        response = client.post("/v1/value", json={"function": expr("sum(ones((1000, 1000)) * x)", ["x"]),
                                                  "args": [float(n)]})
        assert response.status_code == 200 and response.json()["value"] == 1e6 * n
    assert len(seen | _worker_pids(client)) >= 5
    assert _metric(client, 'nabla_compute_worker_replacements{reason="recycled"}') == 3.0


def test_every_worker_sees_a_registration_or_a_delete_at_once(client: TestClient) -> None:
    """Two workers, each with its own cache of models: what one registers, the next call sees,
    whichever worker takes it."""
    def register(body: str) -> None:
        r = client.post("/v1/models", json={"name": "scaled", "function": expr(body, ["x"])})
        assert r.status_code == 201, r.text

    def call_both_workers() -> list[float]:
        # Two at once: each worker takes one.
        results: list[float] = []

        def one() -> None:
            r = client.post("/v1/models/scaled/value", json={"args": [1.0]})
            results.append(r.json()["value"] if r.status_code == 200 else r.status_code)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    register("x * 2")
    assert call_both_workers() == [2.0] * 4
    register("x * 3")
    assert call_both_workers() == [3.0] * 4
    assert client.delete("/v1/models/scaled").status_code == 200
    assert call_both_workers() == [404] * 4


def test_the_workers_metrics_reach_the_server(client: TestClient) -> None:
    body = {"function": expr("sum(sin(x))", ["x"]), "args": [[0.1, 0.2]]}
    for _ in range(3):
        assert client.post("/v1/grad", json=body).status_code == 200
    assert client.post("/v1/grad", json={"function": expr("sum(x)", ["y"]), "args": [1.0]}).status_code == 422
    assert _metric(client, 'nabla_compute_seconds_count{transform="grad"}') == 3.0
    assert _metric(client, 'nabla_plan_cache_total{result="hit"}') == 2.0
    assert _metric(client, 'nabla_plan_cache_entries') == 1.0
    assert _metric(client, 'nabla_compute_worker_resident_bytes') > 0
    assert _metric(client, 'nabla_errors_total{type="invalid_function"}') == 1.0


def test_thread_isolation_computes_in_the_server_process(make_client: Callable[..., TestClient]) -> None:
    client = make_client(compute_isolation="thread")
    assert client.app.state.workers is None
    assert client.post("/v1/value", json={"function": expr("x + 1", ["x"]), "args": [1.0]}).json()["value"] == 2.0
