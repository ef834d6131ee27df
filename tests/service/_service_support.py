"""Shared data and helpers of the service tests (imported by the test modules and conftest.py)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

PARAMS = ["W", "b", "inputs", "targets"]
INPUTS = [[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]]
TARGETS = [True, True, False, True]

# The tutorial's W and b: the exact float32 bits JAX draws (see tests/test_tutorial.py), and the
# decimals the page prints.
W_BITS = [3200032085, 3222381795, 1010536082]
B_BITS = 1062896220
W_PRINTED = [-0.36838785, -2.275689, 0.01144757]
B_PRINTED = 0.8535516

# What the tutorial page prints.
W_GRAD = [-0.16965583, -0.8774644, -1.4901346]
B_GRAD = -0.29227245
LOSS = 3.0519385
TANH_DERIVATIVES = {1: 0.070650816, 2: -0.13621868, 3: 0.25265405}  # of tanh at 2.0

TUTORIAL_EXPR = """\
z = inputs @ W + b
preds = 0.5 * (tanh(z / 2) + 1)
label_probs = preds * targets + (1 - preds) * (1 - targets)
-sum(log(label_probs))
"""


def tutorial_graph(with_constants: bool) -> dict[str, Any]:
    """The tutorial's loss as a nabla.graph/1 document: params W, b (and inputs, targets unless bound)."""
    nodes = [
        {"id": "W_col", "op": "reshape", "inputs": ["W"], "attrs": {"shape": [3, 1]}},
        {"id": "xw", "op": "matmul", "inputs": ["inputs", "W_col"]},  # matmul takes matrices
        {"id": "xw_flat", "op": "reshape", "inputs": ["xw"], "attrs": {"shape": [4]}},
        {"id": "z", "op": "add", "inputs": ["xw_flat", "b"]},
        {"id": "half_z", "op": "div", "inputs": ["z", 2.0]},
        {"id": "t", "op": "tanh", "inputs": ["half_z"]},
        {"id": "t1", "op": "add", "inputs": ["t", 1.0]},
        {"id": "preds", "op": "mul", "inputs": [0.5, "t1"]},
        {"id": "hit", "op": "mul", "inputs": ["preds", "targets"]},
        {"id": "miss_p", "op": "sub", "inputs": [1.0, "preds"]},
        {"id": "miss_t", "op": "sub", "inputs": [1.0, "targets"]},
        {"id": "miss", "op": "mul", "inputs": ["miss_p", "miss_t"]},
        {"id": "label_probs", "op": "add", "inputs": ["hit", "miss"]},
        {"id": "logs", "op": "log", "inputs": ["label_probs"]},
        {"id": "total", "op": "reduce_sum", "inputs": ["logs"], "attrs": {"axes": [0]}},
        {"id": "loss", "op": "neg", "inputs": ["total"]},
    ]
    doc: dict[str, Any] = {"format": "nabla.graph/1", "description": "the tutorial's loss", "nodes": nodes,
                           "outputs": ["loss"]}
    if with_constants:
        doc["params"] = ["W", "b"]
        doc["constants"] = {"inputs": {"dtype": "float32", "shape": [4, 3], "data": INPUTS},
                            "targets": {"dtype": "float32", "data": [1.0 if t else 0.0 for t in TARGETS]}}
    else:
        doc["params"] = list(PARAMS)
    return doc


def expr(source: str, params: list[str]) -> dict[str, Any]:
    return {"expr": source, "params": params}


def b64(value: Any, dtype: Any = None) -> dict[str, Any]:
    """A `$array` leaf holding value's exact bits."""
    arr = np.asarray(value, dtype=dtype)
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return {"$array": {"dtype": arr.dtype.name, "shape": list(arr.shape),
                       "data": base64.b64encode(data).decode("ascii")}}


def tutorial_w() -> dict[str, Any]:
    return b64(np.array(W_BITS, np.uint32).view(np.float32))


def tutorial_b() -> dict[str, Any]:
    return b64(np.array(B_BITS, np.uint32).view(np.float32))


def from_b64(leaf: dict[str, Any]) -> np.ndarray:
    spec = leaf["$array"]
    dtype = np.dtype(spec["dtype"])
    raw = base64.b64decode(spec["data"])
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(spec["shape"])


_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def arr(value: Any) -> np.ndarray:
    """A response leaf (JSON numbers, "NaN"/"Infinity" strings, or a `$array`) as a float64 array."""
    if isinstance(value, dict) and "$array" in value:
        return from_b64(value).astype(np.float64)

    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        return _SPECIAL.get(v, v) if isinstance(v, str) else v

    return np.asarray(fix(value), dtype=np.float64)


def strict_json(text: str) -> Any:
    """Parse a response body, failing on the non-standard NaN/Infinity tokens."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"the response is not strict JSON: it contains {token}")

    return json.loads(text, parse_constant=refuse)


def assert_error(response: Any, status: int, error_type: str, fragment: str = "",
                 detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response is a 4xx error body of the given type, naming what was wrong."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"type", "message", "detail", "request_id"} <= set(error), error
    assert error["type"] == error_type, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["detail"], dict)
    assert fragment.lower() in error["message"].lower(), (fragment, error["message"])
    for key, value in (detail or {}).items():
        assert error["detail"].get(key) == value, (key, value, error["detail"])
    assert error["request_id"] == response.headers["x-request-id"]
    return error
