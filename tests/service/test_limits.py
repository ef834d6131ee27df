"""Every limit, with small custom settings: body bytes, array and total elements, graph nodes,
expression length, derivative order, pytree depth, constants, intermediates refused by shape
inference before anything is allocated, and the compute deadline on a real uvicorn server (while
/livez keeps answering)."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from _service_support import assert_error, b64, expr
from fastapi.testclient import TestClient

IDENTITY = expr("x", ["x"])


def chain_graph(n: int) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "op": "neg", "inputs": ["x" if i == 0 else f"n{i - 1}"]} for i in range(n)]
    return {"graph": {"format": "nabla.graph/1", "params": ["x"], "nodes": nodes, "outputs": [f"n{n - 1}"]}}


def test_body_size(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=2000)
    ok = client.post("/v1/value", json={"function": IDENTITY, "args": [[1.0] * 100]})
    assert ok.status_code == 200
    big = {"function": IDENTITY, "args": [[1.0] * 1000]}
    error = assert_error(client.post("/v1/value", json=big), 413, "limit_exceeded", "over the limit of 2000",
                         {"limit": "NABLA_MAX_BODY_BYTES", "maximum": 2000})
    assert "NABLA_MAX_BODY_BYTES" in error["message"]

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for _ in range(50):
            yield b" " * 100

    assert_error(client.post("/v1/value", content=chunks(), headers={"content-type": "application/json"}), 413,
                 "limit_exceeded", "over the limit of 2000")
    assert_error(client.post("/v1/models", content=b" " * 3000), 413, "limit_exceeded")
    assert 'nabla_errors_total{type="limit_exceeded"} 3.0' in client.get("/metrics").text


def test_array_elements_and_total_elements(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_array_elements=1000, max_total_elements=1500)
    assert client.post("/v1/value", json={"function": IDENTITY, "args": [[1.0] * 1000]}).status_code == 200
    assert_error(client.post("/v1/value", json={"function": IDENTITY, "args": [[1.0] * 1001]}), 413,
                 "limit_exceeded", "x: an array of 1001 elements is over the limit of 1000",
                 {"path": "x", "limit": "NABLA_MAX_ARRAY_ELEMENTS", "requested": 1001, "maximum": 1000})
    # a nested leaf is named by its path
    assert_error(client.post("/v1/value", json={"function": IDENTITY, "args": [{"a": [None, [[1.0] * 40] * 30]}]}),
                 413, "limit_exceeded", "x.a[1]", {"path": "x.a[1]"})
    # a $array's shape is checked before its data is decoded
    huge = {"$array": {"dtype": "float32", "shape": [10**6, 10**6], "data": ""}}
    assert_error(client.post("/v1/value", json={"function": IDENTITY, "args": [huge]}), 413, "limit_exceeded",
                 "1000000000000 elements")
    two = expr("x + y", ["x", "y"])
    assert client.post("/v1/value", json={"function": two, "args": [[1.0] * 700, [1.0] * 700]}).status_code == 200
    assert_error(client.post("/v1/value", json={"function": two, "args": [[1.0] * 800, [1.0] * 800]}), 413,
                 "limit_exceeded", "1600 elements, over the limit of 1500 (NABLA_MAX_TOTAL_ELEMENTS)",
                 {"path": "y", "limit": "NABLA_MAX_TOTAL_ELEMENTS", "maximum": 1500})
    # tangents count towards the request's total
    assert_error(client.post("/v1/jvp", json={"function": IDENTITY, "args": [[1.0] * 800],
                                              "tangents": [[1.0] * 800]}), 413, "limit_exceeded",
                 "NABLA_MAX_TOTAL_ELEMENTS", {"path": "tangents.x"})


def test_graph_nodes(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_graph_nodes=20)
    assert client.post("/v1/value", json={"function": chain_graph(10), "args": [1.0]}).json()["value"] == 1.0
    assert_error(client.post("/v1/value", json={"function": chain_graph(30), "args": [1.0]}), 413,
                 "limit_exceeded", "the number of nodes is 30, over the limit of 20",
                 {"limit": "NABLA_MAX_GRAPH_NODES", "requested": 30, "maximum": 20})
    long_program = "\n".join(f"x{i} = x{i - 1} + 1" if i else "x0 = x" for i in range(15)) + "\nx14"
    assert_error(client.post("/v1/value", json={"function": expr(long_program, ["x"]), "args": [1.0]}), 413,
                 "limit_exceeded", "more than 20 syntax nodes", {"kind": "limit"})
    assert_error(client.post("/v1/models", json={"name": "big", "function": chain_graph(30)}), 413,
                 "limit_exceeded", "number of nodes")


def test_expression_length(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_expression_chars=100)
    assert client.post("/v1/value", json={"function": expr("x" + " " * 90, ["x"]), "args": [1.0]}).status_code == 200
    assert_error(client.post("/v1/value", json={"function": expr("x" + " " * 100, ["x"]), "args": [1.0]}), 413,
                 "limit_exceeded", "the source has 101 characters, over the limit of 100", {"kind": "limit"})


def test_derivative_order(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_order=2)
    assert client.post("/v1/grad", json={"function": expr("x ** 3", ["x"]), "args": [1.0],
                                         "order": 2}).json()["grad"] == 6.0
    assert_error(client.post("/v1/grad", json={"function": expr("x ** 3", ["x"]), "args": [1.0], "order": 3}),
                 413, "limit_exceeded", "order 3 is above the limit of 2 (NABLA_MAX_ORDER)",
                 {"limit": "NABLA_MAX_ORDER", "requested": 3, "maximum": 2})
    assert_error(client.post("/v1/check_grads", json={"function": expr("x ** 3", ["x"]), "args": [1.0],
                                                      "check": {"order": 3}}),
                 413, "limit_exceeded", "order 3 is above the limit of 2 (NABLA_MAX_ORDER)",
                 {"limit": "NABLA_MAX_ORDER", "requested": 3, "maximum": 2})


def test_pytree_and_expression_depth(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_depth=6, max_expression_depth=8)
    ok = {"a": {"b": [{"c": [1.0]}]}}
    assert client.post("/v1/value", json={"function": IDENTITY, "args": [ok]}).json()["value"] == ok
    deep: Any = [1.0]
    for _ in range(8):
        deep = {"k": [deep, None]}
    assert_error(client.post("/v1/value", json={"function": IDENTITY, "args": [deep]}), 413, "limit_exceeded",
                 "nested more than 6 levels deep (NABLA_MAX_DEPTH)",
                 {"path": "x", "limit": "NABLA_MAX_DEPTH", "maximum": 6})
    assert_error(client.post("/v1/value", json={"function": expr("-(-(-(-(-(-(-(-x)))))))", ["x"]),
                                                "args": [1.0]}),
                 413, "limit_exceeded", "nested", {"kind": "limit"})
    # a JSON body nested beyond the parser's recursion is refused too
    assert_error(client.post("/v1/value", content=b"[" * 50_000 + b"]" * 50_000,
                             headers={"content-type": "application/json"}), 413, "limit_exceeded")


def test_constant_elements(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_constant_elements=100)
    body = {"name": "consts", "function": expr("sum(x * c)", ["x", "c"])}
    assert client.post("/v1/models", json={**body, "constants": {"c": [1.0] * 100}}).status_code == 201
    assert_error(client.post("/v1/models", json={**body, "constants": {"c": [1.0] * 101}}), 413,
                 "limit_exceeded", "constants['c']: the request's arrays hold 101 elements, over the limit of "
                 "100 (NABLA_MAX_CONSTANT_ELEMENTS)")
    graph = {"format": "nabla.graph/1", "params": ["x"], "constants": {"c": {"data": [1.0] * 101}},
             "nodes": [{"id": "y", "op": "mul", "inputs": ["x", "c"]}], "outputs": ["y"]}
    assert_error(client.post("/v1/value", json={"function": {"graph": graph}, "args": [1.0]}), 413,
                 "limit_exceeded", "constants.c")


def test_intermediates_over_the_element_budget_are_refused_before_allocation(client: TestClient) -> None:
    """Default budget (10M elements per array): a 10**4 x 10**4 outer product (10**8 elements, 400 MB)
    is refused by shape inference, in every transform and in /v1/shapes, without allocating it."""
    outer = expr("sum(ones((10**4, 1)) * ones((1, 10**4)) * x)", ["x"])
    from_input = expr("sum(x[:, None] * x[None, :])", ["x"])
    x = b64(np.ones(10**4, np.float32))
    tracemalloc.start()
    try:
        start = time.perf_counter()
        for transform in ("value", "grad", "hessian"):
            assert_error(client.post(f"/v1/{transform}", json={"function": outer, "args": [1.0]}), 413,
                         "limit_exceeded", "(10000, 10000): 100000000 elements, over the limit of 10000000",
                         {"kind": "limit", "line": 1})
        assert_error(client.post("/v1/grad", json={"function": from_input, "args": [x]}), 413, "limit_exceeded",
                     "100000000 elements")
        assert_error(client.post("/v1/check_grads", json={"function": from_input, "args": [x]}), 413,
                     "limit_exceeded", "100000000 elements")
        assert_error(client.post("/v1/shapes", json={"function": from_input, "args": [{"shape": [10**4]}]}), 413,
                     "limit_exceeded", "100000000 elements")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB were allocated"
    assert elapsed < 10
    # the same program at an allowed size computes
    small = expr("sum(ones((100, 1)) * ones((1, 100)) * x)", ["x"])
    assert client.post("/v1/value", json={"function": small, "args": [2.0]}).json()["value"] == 20000.0


def test_the_element_budget_follows_the_setting(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_array_elements=1000)
    f = expr("sum(x[:, None] * x[None, :])", ["x"])
    assert client.post("/v1/value", json={"function": f, "args": [[1.0] * 31]}).json()["value"] == 961.0
    assert_error(client.post("/v1/value", json={"function": f, "args": [[1.0] * 32]}), 413, "limit_exceeded",
                 "1024 elements, over the limit of 1000")
    graph = {"format": "nabla.graph/1", "params": ["x"],
             "nodes": [{"id": "big", "op": "broadcast_to", "inputs": ["x"], "attrs": {"shape": [40, 40]}},
                       {"id": "s", "op": "reduce_sum", "inputs": ["big"], "attrs": {"axes": [0, 1]}}],
             "outputs": ["s"]}
    assert_error(client.post("/v1/value", json={"function": {"graph": graph}, "args": [1.0]}), 413,
                 "limit_exceeded", "node 'big'", {"node": "big"})


SLOW_PROGRAM = "a = ones((2000, 2000)) * x\n" + "a = sin(a) * 1.0001\n" * 300 + "sum(a)"
SLOW_GRAPH = {"graph": {
    "format": "nabla.graph/1", "params": ["x"],
    "nodes": [{"id": "a0", "op": "broadcast_to", "inputs": ["x"], "attrs": {"shape": [1000, 1000]}}]
    + [{"id": f"a{i}", "op": "sin", "inputs": [f"a{i - 1}"]} for i in range(1, 300)]
    + [{"id": "s", "op": "reduce_sum", "inputs": ["a299"], "attrs": {"axes": [0, 1]}}],
    "outputs": ["s"]}}
LONG_PROGRAM = "a = x\n" + "a = sin(a) * cos(a) + a\n" * 400 + "sum(a)"  # slow to trace and optimise


@pytest.mark.parametrize("transform,function,arg", [
    ("value", SLOW_GRAPH, 1.0),
    ("check_grads", expr(SLOW_PROGRAM.replace("2000", "1000"), ["x"]), 1.0),
    ("grad", expr(LONG_PROGRAM, ["x"]), [0.1, 0.2]),  # the deadline covers building the plan too
    ("hessian", expr(LONG_PROGRAM, ["x"]), [0.1, 0.2]),
], ids=["graph_value", "check_grads", "grad_of_a_long_program", "hessian_of_a_long_program"])
def test_compute_timeout_in_every_phase(make_client: Callable[..., TestClient], transform: str,
                                        function: dict[str, Any], arg: Any) -> None:
    client = make_client(compute_timeout_s=0.2)
    start = time.perf_counter()
    response = client.post(f"/v1/{transform}", json={"function": function, "args": [arg]})
    elapsed = time.perf_counter() - start
    assert_error(response, 408, "timeout", "ran past its time limit")
    assert elapsed < 1.5, elapsed


def test_compute_timeout_while_livez_answers(start_server: Callable[..., Any], data_dir: Any) -> None:
    """A request past NABLA_COMPUTE_TIMEOUT_S is stopped with a 408 long before it would finish (300
    passes over 4M elements), and /livez answers within 100 ms all the while."""
    server = start_server({"NABLA_DATA_DIR": str(data_dir), "NABLA_COMPUTE_TIMEOUT_S": "0.5"})
    result: dict[str, Any] = {}

    def slow_request() -> None:
        start = time.perf_counter()
        response = httpx.post(server.url + "/v1/value", json={"function": expr(SLOW_PROGRAM, ["x"]), "args": [1.0]},
                              headers={"X-Request-ID": "slow-1"}, timeout=60)
        result["response"], result["seconds"] = response, time.perf_counter() - start

    worker = threading.Thread(target=slow_request)
    latencies: list[float] = []
    with httpx.Client(base_url=server.url, timeout=5) as probe:
        probe.get("/livez")  # connect first: measure answers, not TCP handshakes
        worker.start()
        while worker.is_alive():
            start = time.perf_counter()
            assert probe.get("/livez").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.01)
        worker.join()
        response = result["response"]
        error = assert_error(response, 408, "timeout", "ran past its time limit")
        assert "NABLA_COMPUTE_TIMEOUT_S" in error["message"] and error["request_id"] == "slow-1"
        assert result["seconds"] < 5, result["seconds"]
        assert len(latencies) >= 5, latencies
        assert max(latencies) < 0.1, sorted(latencies)[-5:]
        # the server goes on computing
        ok = probe.post("/v1/grad", json={"function": expr("x ** 2", ["x"]), "args": [3.0]})
        assert ok.status_code == 200 and ok.json()["grad"] == 6.0
        assert 'nabla_errors_total{type="timeout"} 1.0' in probe.get("/metrics").text
