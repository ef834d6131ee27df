"""The request pipeline: admission figures, the plan cache's byte budget, one deadline over
decoding, computing and encoding, bugs answered as JSON 500s, and the HTTP adapter's own
protections (content type, admission queue, slow clients, JSON logs, bounded metric labels)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from _service_support import assert_error
from fastapi.testclient import TestClient

from engine.core import Graph, Var
from service import admission
from service.admission import Budget
from service.compute import Plan, PlanCache

IDENTITY = {"expr": "x", "params": ["x"]}


def expr(source: str, params: list[str]) -> dict[str, Any]:
    return {"expr": source, "params": params}


# ----------------------------------------------------------------------------- admission figures


def test_json_bytes_count_every_list_node_not_only_numbers() -> None:
    f64 = np.dtype("float64")
    # shape [65536, 65536, 0]: no element, but 1 + 65536 + 65536**2 lists of 3 bytes ("[]" and a comma)
    assert admission.json_bytes([65536, 65536, 0], f64) == 3 * (1 + 65536 + 65536**2)
    assert admission.json_bytes([], f64) == 25  # a scalar: one number
    assert admission.json_bytes([4, 3], f64) == 12 * 25 + 3 * (1 + 4)
    # exact integers: np.prod would wrap around in int64 here
    assert admission.elements([2**40, 2**40]) == 2**80


def test_base64_bytes_follow_the_raw_size() -> None:
    assert admission.base64_bytes([3], np.dtype("float64")) == 4 * 8 + 96 + 21
    assert admission.base64_bytes([10**6], np.dtype("float32")) == 4 * -(-4 * 10**6 // 3) + 96 + 21


def test_predicted_result_shapes_of_each_transform() -> None:
    out, ins, diff = [[]], [[5], [2, 3]], [[5]]
    assert admission.predicted_result("value", out, ins, diff) == [[]]
    assert admission.predicted_result("grad", out, ins, diff) == [[5]]
    assert admission.predicted_result("vjp", [[7]], ins, diff) == [[7], [5], [2, 3]]
    assert admission.predicted_result("jacobian", [[7]], ins, [[5], [2, 3]]) == [[7, 5], [7, 2, 3]]
    assert admission.predicted_result("hessian", [[]], ins, [[5], [2]]) == [[5, 5], [5, 2], [2, 5], [2, 2]]


def test_plan_peak_counts_live_intermediates_only() -> None:
    # y = x + x; z = y * y; w = z + z: at most two 1000-element float64 intermediates are alive
    import engine

    graph = engine.make_graph(lambda x: ((x + x) * (x + x)) + 1.0)(np.ones(1000))
    peak = admission.plan_peak_bytes(graph)
    assert 8000 <= peak <= 3 * 8000


def test_refusals_name_the_setting_and_the_figures() -> None:
    budget = Budget(max_array_elements=100, max_response_bytes=1000, max_request_bytes=10_000)
    with pytest.raises(Exception) as info:
        admission.check_response([((1000,), np.dtype("float64"))], "json", budget)
    assert info.value.detail == {"limit": "NABLA_MAX_RESPONSE_BYTES", "requested": 25 * 1000 + 3,
                                 "maximum": 1000}
    assert "base64" in info.value.message
    with pytest.raises(Exception) as info:
        admission.check_memory(4000, 4000, 4000, 0, budget)
    assert info.value.detail["limit"] == "NABLA_MAX_REQUEST_BYTES" and info.value.detail["requested"] == 12_000


# ----------------------------------------------------------------------------- plan cache


def _plan(size: int) -> Plan:
    return Plan(Graph([Var.__new__(Var)][:0], [], [], [], []), None, lambda xs: xs, 0, [], size)


def test_plan_cache_is_bounded_by_bytes_and_count() -> None:
    cache = PlanCache(size=10, max_bytes=1000)
    for i in range(5):
        cache.put(("k", i), _plan(300))
    assert len(cache) == 3 and cache.bytes == 900  # the two oldest were evicted
    assert cache.get(("k", 0)) is None and cache.get(("k", 4)) is not None
    cache.put(("huge",), _plan(5000))  # larger than the whole budget: never kept
    assert cache.get(("huge",)) is None and cache.bytes == 900
    counted = PlanCache(size=2, max_bytes=10**9)
    for i in range(4):
        counted.put(i, _plan(1))
    assert len(counted) == 2


def test_plan_cache_setting_bounds_a_real_server(make_client: Callable[..., TestClient]) -> None:
    client = make_client(plan_cache_bytes=200_000)
    for n in range(1, 30):
        ok = client.post("/v1/grad", json={"function": expr(f"sum(sin(x) * {n})", ["x"]), "args": [[0.5] * 100]})
        assert ok.status_code == 200, ok.text
    # The bound holds per compute worker; calls in sequence all go to the same one.
    held = [line for line in client.get("/metrics").text.splitlines() if line.startswith("nabla_plan_cache_bytes ")]
    assert 0 < float(held[0].split()[1]) <= 200_000


# ----------------------------------------------------------------------------- one deadline


def test_the_deadline_covers_encoding(make_client: Callable[..., TestClient]) -> None:
    """A response that takes longer to write than the time left is stopped inside the encoder."""
    client = make_client(compute_timeout_s=0.05, max_array_elements=10**7)
    start = time.perf_counter()
    response = client.post("/v1/value", json={"function": expr("sin(arange(4000000) * 1.0)", []), "args": []})
    assert_error(response, 408, "timeout", "NABLA_COMPUTE_TIMEOUT_S")
    assert time.perf_counter() - start < 5


def test_the_deadline_covers_decoding(make_client: Callable[..., TestClient]) -> None:
    client = make_client(compute_timeout_s=0.01, max_body_bytes=64 * 1024 * 1024)
    rows = [[float(i)] * 100 for i in range(40_000)]
    assert_error(client.post("/v1/value", json={"function": IDENTITY, "args": [rows]}), 408, "timeout")


# ----------------------------------------------------------------------------- bugs are JSON 500s


def test_a_bug_is_a_json_500_with_the_request_id_counted_and_logged(make_client: Callable[..., TestClient],
                                                                     caplog: pytest.LogCaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()
    pipeline = client.app.state.service

    def broken(*args: Any) -> Any:
        raise RuntimeError("a deliberate bug")

    monkeypatch.setattr(pipeline, "list_models", broken)
    response = client.get("/v1/models", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "internal_error" and error["request_id"] == "bug-1"
    assert "RuntimeError" == error["detail"]["exception"]
    metrics = client.get("/metrics").text
    assert 'nabla_errors_total{type="internal_error"} 1.0' in metrics
    assert 'nabla_http_requests_total{method="GET",route="/v1/models",status="500"} 1.0' in metrics


def test_a_bug_in_a_compute_rule_is_a_500_not_a_client_error(make_client: Callable[..., TestClient],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The error table maps only the engine's own exception types: a ZeroDivisionError from our
    code is a bug, not the caller's fault. (Compute runs in threads here, so that the patch
    reaches it; a worker process is patched by nobody.)"""
    client = make_client(compute_isolation="thread")
    import service.compute as compute

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a deliberate bug")

    monkeypatch.setattr(compute, "compile_plan", broken)
    response = client.post("/v1/grad", json={"function": expr("sum(x ** 2)", ["x"]), "args": [[1.0, 2.0]]})
    assert response.status_code == 500 and response.json()["error"]["type"] == "internal_error"


# ----------------------------------------------------------------------------- the HTTP adapter


def test_post_bodies_must_be_json(client: TestClient) -> None:
    body = json.dumps({"function": IDENTITY, "args": [1.0]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        response = client.post("/v1/value", content=body, headers={"content-type": content_type})
        assert_error(response, 415, "unsupported_media_type", "application/json")
    ok = client.post("/v1/value", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
    # a cross-site "simple" request cannot register a model on a keyless server
    form = client.post("/v1/models", content="name=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(form, 415, "unsupported_media_type")


def test_metric_labels_come_from_fixed_sets(client: TestClient) -> None:
    for i in range(50):
        client.request(f"FROB{i}", "/v1/grad")
        client.get(f"/no/such/path/{i}")
    text = client.get("/metrics").text
    assert "FROB" not in text and "/no/such" not in text
    assert 'method="other"' in text and 'route="unmatched"' in text


def test_the_admission_queue_is_bounded(start_server: Callable[..., Any]) -> None:
    server = start_server({"NABLA_COMPUTE_THREADS": "1", "NABLA_ADMISSION_QUEUE": "1",
                           "NABLA_COMPUTE_TIMEOUT_S": "3"})
    slow = {"function": expr("x = ones((700, 700))\ny = x\n" + "y = tanh(y @ x / 700)\n" * 60 + "sum(y)", []),
            "args": []}
    statuses: list[int] = []
    headers: list[Any] = []

    def send() -> None:
        r = httpx.post(server.url + "/v1/value", json=slow, timeout=30)
        statuses.append(r.status_code)
        headers.append(r.headers)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert 503 in statuses, statuses
    assert all(s in (200, 408, 503) for s in statuses), statuses
    refused = [h for s, h in zip(statuses, headers) if s == 503]
    assert all(h.get("retry-after") for h in refused)


def test_half_sent_headers_are_cut_off(start_server: Callable[..., Any]) -> None:
    server = start_server({"NABLA_HEADER_TIMEOUT_S": "1"})
    port = int(server.url.rsplit(":", 1)[1])
    conns = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/value HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        conns.append(s)
    start = time.monotonic()
    for s in conns:
        s.settimeout(5)
        assert s.recv(1024) == b""  # closed by the server
        s.close()
    assert time.monotonic() - start < 4
    assert httpx.get(server.url + "/livez").status_code == 200


def test_a_body_that_never_arrives_times_out(start_server: Callable[..., Any]) -> None:
    server = start_server({"NABLA_BODY_TIMEOUT_S": "1"})
    port = int(server.url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/value HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    s.settimeout(5)
    reply = b""
    while b"NABLA_BODY_TIMEOUT_S" not in reply:
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    s.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"NABLA_BODY_TIMEOUT_S" in reply, reply


def test_every_log_line_is_json(start_server: Callable[..., Any]) -> None:
    server = start_server({"NABLA_LOG_LEVEL": "info"})
    httpx.post(server.url + "/v1/value", json={"function": IDENTITY, "args": [1.0]})
    httpx.post(server.url + "/v1/value", content=b"{", headers={"content-type": "application/json"})
    server.stop()
    lines = [line for line in server.output().splitlines() if line.strip()]
    assert lines, "the server wrote no log"
    for line in lines:
        entry = json.loads(line)
        assert {"ts", "level", "message"} <= set(entry)
    assert any(json.loads(line).get("status") == 400 for line in lines)
