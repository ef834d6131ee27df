"""`nabla serve`'s connections: several uvicorn workers answer keep-alive requests as fast as one.

With NABLA_WORKERS > 1 uvicorn hands its workers a socket whose accepted connections lacked
TCP_NODELAY, so each keep-alive response waited for the client's delayed ACK (~40 ms, against
~1.3 ms with one worker). Measured side by side in one test, as a ratio: the bug gave ~35x.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

BODY = {"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0, 3.0]]}


def _median_ms(url: str, n: int = 40) -> float:
    with httpx.Client(timeout=30) as client:  # one keep-alive connection
        for _ in range(10):
            assert client.post(url + "/v1/grad", json=BODY).status_code == 200
        times = []
        for _ in range(n):
            start = time.perf_counter()
            client.post(url + "/v1/grad", json=BODY)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_two_workers_answer_keep_alive_requests_as_fast_as_one(start_server: Callable[..., Any]) -> None:
    one = _median_ms(start_server({"NABLA_WORKERS": "1"}).url)
    two = _median_ms(start_server({"NABLA_WORKERS": "2"}).url)
    assert two < 4 * one + 5, f"median {two:.1f} ms with 2 workers against {one:.1f} ms with 1"
