"""Small requests computed inline, on the event loop, and the direct compute routes.

A compute request is answered inline only once everything it needs is cached in the server
process and known to be cheap (service.inline): the first one of its kind is answered by a
compute worker, which shows how long its plan takes to build and run; the server then repeats
it once in a thread of its own, and the next ones are answered at once. These tests pin where
each request is answered (`nabla_compute_answers_total{where}`), that the answers are the same
bytes wherever they are computed, and that whatever is unknown or slow still goes to a worker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

TUTORIAL = {"args": [[0.1, 0.2, 0.3], 0.5], "argnums": [0, 1]}
EXPRESSION = {"function": {"expr": "sum(sin(x) * x ** 2)", "params": ["x"]}, "args": [[0.5, 1.5, -2.0]]}


def answered(client: TestClient) -> dict[str, int]:
    series = re.findall(r'nabla_compute_answers_total\{where="(\w+)"\} (\S+)', client.get("/metrics").text)
    return {where: int(float(n)) for where, n in series}


def without_timing(body: bytes) -> dict[str, Any]:
    """The answer without the fields that say how and how fast it was computed."""
    reply = orjson.loads(body)
    for key in ("elapsed_ms", "cache_hit"):
        reply["meta"].pop(key, None)
    return reply


def until_inline(client: TestClient, post: Callable[[], Any], tries: int = 100) -> list[Any]:
    """Send the request until one is answered inline (the warm-up runs in the background)."""
    replies = []
    for _ in range(tries):
        before = answered(client).get("inline", 0)
        replies.append(post())
        if answered(client).get("inline", 0) > before:
            return replies
        time.sleep(0.02)
    raise AssertionError(f"no request was answered inline after {tries} tries: {answered(client)}")


@pytest.fixture
def server(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(compute_isolation="process", compute_threads=1)


def test_the_first_request_goes_to_a_worker_and_later_ones_are_answered_inline(server: TestClient) -> None:
    def post() -> Any:
        return server.post("/v1/models/tutorial_logreg/grad", json=TUTORIAL)

    replies = until_inline(server, post)
    counts = answered(server)
    assert counts["worker"] >= 1 and counts["inline"] == 1
    assert all(r.status_code == 200 for r in replies)
    # the same numbers, to the last bit, wherever they were computed
    assert len({orjson.dumps(without_timing(r.content)) for r in replies}) == 1
    for _ in range(5):
        post()
    assert answered(server)["inline"] == 6


def test_inline_expressions_and_errors_are_answered_like_worker_ones(server: TestClient) -> None:
    first = server.post("/v1/grad", json=EXPRESSION)
    replies = until_inline(server, lambda: server.post("/v1/grad", json=EXPRESSION))
    assert without_timing(replies[-1].content) == without_timing(first.content)
    # a bad argument to a function answered inline is refused inline, in the usual error form
    bad = server.post("/v1/grad", json={**EXPRESSION, "args": [[0.5, "x", 1.0]]})
    assert bad.status_code == 422
    assert {"type", "message", "detail"} <= set(bad.json()["error"])


def test_a_body_over_the_inline_limit_always_goes_to_a_worker(make_client: Callable[..., TestClient]) -> None:
    server = make_client(compute_isolation="process", compute_threads=1, inline_max_body_bytes=16)
    for _ in range(10):
        assert server.post("/v1/models/tutorial_logreg/grad", json=TUTORIAL).status_code == 200
        time.sleep(0.02)
    assert answered(server) == {"worker": 10}


def test_a_plan_slower_than_the_inline_limit_is_never_run_inline(make_client: Callable[..., TestClient]) -> None:
    server = make_client(compute_isolation="process", compute_threads=1, inline_max_ms=0)
    for _ in range(10):
        assert server.post("/v1/models/tutorial_logreg/grad", json=TUTORIAL).status_code == 200
        time.sleep(0.02)
    assert answered(server) == {"worker": 10}
    # nor is it built in the server process: it could never be run there
    assert len(server.app.state.service.plans) == 0


def test_check_grads_has_no_plan_and_always_goes_to_a_worker(server: TestClient) -> None:
    body = {**EXPRESSION, "check": {"order": 1, "modes": ["rev"]}}
    for _ in range(5):
        assert server.post("/v1/check_grads", json=body).status_code == 200
        time.sleep(0.02)
    assert answered(server) == {"worker": 5}


def test_a_deleted_model_is_not_answered_from_the_inline_caches(server: TestClient) -> None:
    model = {"name": "square", "function": {"expr": "sum(x ** 2)", "params": ["x"]}}
    assert server.post("/v1/models", json=model).status_code == 201
    body = {"args": [[1.0, 2.0]]}
    replies = until_inline(server, lambda: server.post("/v1/models/square/grad", json=body))
    assert replies[-1].json()["grad"] == [2.0, 4.0]
    assert server.delete("/v1/models/square").status_code == 200
    gone = server.post("/v1/models/square/grad", json=body)
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"


def test_a_registry_refresh_that_is_due_is_made_off_the_event_loop(make_client: Callable[..., TestClient]) -> None:
    server = make_client(compute_isolation="process", compute_threads=1, registry_refresh_s=0.2)
    model = {"name": "cube", "function": {"expr": "sum(x ** 3)", "params": ["x"]}}
    assert server.post("/v1/models", json=model).status_code == 201
    post = lambda: server.post("/v1/models/cube/grad", json={"args": [[1.0, 2.0]]})  # noqa: E731
    until_inline(server, post)
    time.sleep(0.3)  # the view of the registry is now due for a refresh: that call goes to a worker
    before = answered(server)
    assert post().json()["grad"] == [3.0, 12.0]
    assert answered(server)["worker"] == before["worker"] + 1
    until_inline(server, post)


def test_thread_isolation_answers_small_requests_inline_too(make_client: Callable[..., TestClient]) -> None:
    server = make_client(compute_isolation="thread")
    until_inline(server, lambda: server.post("/v1/models/tutorial_logreg/grad", json=TUTORIAL))
    assert answered(server)["thread"] >= 1


# ----------------------------------------------------------------------------- direct routes


def test_direct_routes_are_labelled_by_their_route_in_the_metrics(client: TestClient) -> None:
    assert client.post("/v1/models/tutorial_logreg/grad", json=TUTORIAL).status_code == 200
    assert client.post("/v1/models/tutorial_logreg/curl", json=TUTORIAL).status_code == 404
    assert client.post("/v1/echo", json=TUTORIAL).status_code == 200
    text = client.get("/metrics").text
    assert 'route="/v1/models/{name}/grad",status="200"' in text
    assert 'route="/v1/models/{name}/{transform}",status="404"' in text
    assert 'route="/v1/echo",status="200"' in text
    assert "tutorial_logreg" not in text.split("nabla_http_requests_total", 1)[1].split("# HELP", 1)[0]


def test_direct_routes_refuse_query_parameters_and_other_content_types(client: TestClient) -> None:
    reply = client.post("/v1/grad?fast=1", json=EXPRESSION)
    assert reply.status_code == 400
    assert reply.json()["error"]["detail"] == {"query": ["fast"], "allowed": []}
    reply = client.post("/v1/grad", content=orjson.dumps(EXPRESSION), headers={"content-type": "text/plain"})
    assert reply.status_code == 415
    assert reply.json()["error"]["detail"]["expected"] == "application/json"


def test_direct_routes_ask_for_a_key_when_the_server_has_keys(make_client: Callable[..., TestClient]) -> None:
    server = make_client(api_keys="k1")
    assert server.post("/v1/grad", json=EXPRESSION).status_code == 401
    assert server.post("/v1/grad", json=EXPRESSION, headers={"authorization": "Bearer k2"}).status_code == 401
    assert server.post("/v1/grad", json=EXPRESSION, headers={"authorization": "bearer k1"}).status_code == 200
    assert server.post("/v1/echo", json=EXPRESSION).status_code == 401


def test_other_methods_and_longer_paths_fall_through_to_the_router(client: TestClient) -> None:
    assert client.get("/v1/grad").status_code == 405
    assert client.post("/v1/grad/", json=EXPRESSION).status_code == 404
    assert client.post("/v1/models/a/b/c", json=EXPRESSION).status_code in (404, 405)


def test_one_slow_run_here_does_not_keep_a_plan_off_the_event_loop(server: TestClient) -> None:
    def post() -> Any:
        return server.post("/v1/models/tutorial_logreg/grad", json=TUTORIAL)

    until_inline(server, post)
    for plan in server.app.state.service.plans._plans.values():
        plan.run_s = 1.0  # as if its last run here had been slowed down by a busy core
    before = answered(server)
    post()  # the worker answers it, and its runs of the plan say how long it really takes
    assert answered(server)["worker"] == before["worker"] + 1
    post()
    assert answered(server)["inline"] == before["inline"] + 1
