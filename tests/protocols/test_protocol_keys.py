"""On a server with API keys, the protocol routes ask for the same Bearer key as /v1 (and refuse in
each protocol's own error form); the health routes that probes call stay open."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

KEY = {"Authorization": "Bearer key-one"}  # copied per call: tritonclient adds its own headers to the dict


def test_protocol_routes_need_the_api_key_and_health_does_not(start_server: Callable[..., Any]) -> None:
    server = start_server({"NABLA_API_KEYS": "key-one"})
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()

    with pytest.raises(InferenceServerException) as refused:
        client.get_model_metadata("rosenbrock")
    assert refused.value.status() == "401" and "API key" in refused.value.message()
    assert client.get_model_metadata("rosenbrock", headers=dict(KEY))["inputs"][0]["name"] == "x"
    x = triton.InferInput("x", [2], "FP64")
    x.set_data_from_numpy(np.array([1.0, 1.0]))
    assert client.infer("rosenbrock", [x], headers=dict(KEY)).as_numpy("value") == 0.0

    body = {"name": "rosenbrock", "input": [[1.0, 1.0]]}
    denied = httpx.post(server.url + "/umbridge/Evaluate", json=body, timeout=10)
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "Unauthorized" and "API key" in denied.json()["error"]["message"]
    allowed = httpx.post(server.url + "/umbridge/Evaluate", json=body, headers=dict(KEY), timeout=10)
    assert allowed.status_code == 200 and allowed.json() == {"output": [[0.0]]}
