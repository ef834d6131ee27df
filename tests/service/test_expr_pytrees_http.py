"""Pytree parameters in expressions over HTTP: the JAX tutorial's pytree section (loss2 of
params = {'W': W, 'b': b}) sent as an expression, and its errors as 422 answers with line and
column."""

from __future__ import annotations

from typing import Any

import numpy as np
from _service_support import B_BITS, B_GRAD, INPUTS, LOSS, TARGETS, W_BITS, W_GRAD, arr, assert_error, expr
from fastapi.testclient import TestClient

# The tutorial's loss2, with params_dict['W'] / params_dict['b'] written as params['W'] / params['b'].
LOSS2 = """\
preds = 0.5 * (tanh((inputs @ params['W'] + params['b']) / 2) + 1)
label_probs = preds * targets + (1 - preds) * (1 - targets)
-sum(log(label_probs))
"""
PARAMS = ["params", "inputs", "targets"]

# The page's W and b (the float32 values JAX draws), as JSON numbers: float64, exactly those values.
W = np.array(W_BITS, np.uint32).view(np.float32).astype(np.float64).tolist()
B = float(np.array(B_BITS, np.uint32).view(np.float32))

# grad(loss2) in float64 at those W and b, derived with JAX (jax_enable_x64) and agreeing with the
# closed form inputs.T @ (sigmoid(z) - targets), sum(sigmoid(z) - targets) to 1e-15.
W_GRAD_F64 = [-0.16965579566097413, -0.8774645393693132, -1.4901344900120512]
B_GRAD_F64 = -0.2922723786776545
LOSS_F64 = 3.0519384776868415


def post(client: TestClient, transform: str, source: str, params: list[str], *args: Any,
         **options: Any) -> Any:
    return client.post(f"/v1/{transform}", json={"function": expr(source, params), "args": list(args), **options})


def tutorial_args(params: Any = None) -> list[Any]:
    return [params if params is not None else {"W": W, "b": B}, INPUTS, TARGETS]


def test_the_tutorials_pytree_gradient_over_http(client: TestClient) -> None:
    response = post(client, "grad", LOSS2, PARAMS, *tutorial_args())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["grad"]) == {"W", "b"}  # the gradient in the argument's structure
    assert body["meta"]["dtype"] == "float64"
    # float64 agrees with the page's float32 printout to its precision, and with float64 to rounding
    np.testing.assert_allclose(arr(body["grad"]["W"]), W_GRAD, rtol=1e-6)
    np.testing.assert_allclose(arr(body["grad"]["b"]), B_GRAD, rtol=1e-6)
    np.testing.assert_allclose(arr(body["grad"]["W"]), W_GRAD_F64, rtol=1e-12)
    np.testing.assert_allclose(arr(body["grad"]["b"]), B_GRAD_F64, rtol=1e-12)
    assert np.shape(body["grad"]["W"]) == (3,) and isinstance(body["grad"]["b"], float)


def test_value_and_grad_and_double_quoted_keys(client: TestClient) -> None:
    response = post(client, "value_and_grad", LOSS2.replace("'", '"'), PARAMS, *tutorial_args())
    assert response.status_code == 200, response.text
    body = response.json()
    np.testing.assert_allclose(body["value"], LOSS, rtol=1e-6)
    np.testing.assert_allclose(body["value"], LOSS_F64, rtol=1e-12)
    np.testing.assert_allclose(arr(body["grad"]["W"]), W_GRAD_F64, rtol=1e-12)


def test_a_list_of_layers_with_names_bound_to_parts(client: TestClient) -> None:
    source = "layers = params['layers']\nlast = layers[-1]\nsum(tanh(x @ layers[0]['W']) * last['w']) + last['c']"
    params = {"layers": [{"W": [[1.0, 0.0], [0.0, 2.0]]}, {"w": [3.0, 4.0], "c": 0.5}]}
    x = [[0.1, 0.2]]
    response = post(client, "grad", source, ["params", "x"], params, x)
    assert response.status_code == 200, response.text
    grad = response.json()["grad"]
    assert list(grad) == ["layers"] and len(grad["layers"]) == 2 and set(grad["layers"][1]) == {"w", "c"}
    h = np.tanh(np.array(x) @ np.array([[1.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(arr(grad["layers"][1]["w"]), h[0], rtol=1e-12)
    assert grad["layers"][1]["c"] == 1.0
    dz = (1 - h**2) * np.array([3.0, 4.0])
    np.testing.assert_allclose(arr(grad["layers"][0]["W"]), np.array(x).T @ dz, rtol=1e-12)


def test_has_aux_returns_a_part_of_the_pytree(client: TestClient) -> None:
    response = post(client, "grad", "(sum(params['W'] ** 2), params['W'])", ["params"], {"W": [1.0, 2.0], "b": 0.0},
                    has_aux=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["grad"] == {"W": [2.0, 4.0], "b": 0.0}
    assert body["aux"] == [1.0, 2.0]


def test_a_missing_key_is_a_422_with_line_and_column(client: TestClient) -> None:
    source = LOSS2.replace("params['b']", "params['bias']")
    column = source.index("params['bias']") + 1  # 1-based, on the first line: 45
    error = assert_error(post(client, "grad", source, PARAMS, *tutorial_args()), 422, "invalid_function",
                         "params['bias']: no key 'bias'; params has keys ['W', 'b']",
                         {"line": 1, "column": column, "kind": "invalid"})
    assert column == 45 and error["message"].startswith("line 1, column 45: ")


def test_an_index_out_of_range_and_a_whole_dict_used_as_an_array(client: TestClient) -> None:
    assert_error(post(client, "value", "xs[3]", ["xs"], [{"a": 1.0}, {"a": 2.0}]), 422, "invalid_function",
                 "xs[3]: index 3 is out of range; xs is a list of 2 entries", {"line": 1, "column": 1})
    assert_error(post(client, "grad", "sum(params * 2)", ["params"], {"W": W, "b": B}), 422, "invalid_function",
                 "params is an object with keys ['W', 'b'], not an array: index it, e.g. params['W']",
                 {"line": 1, "column": 5, "kind": "invalid"})
    assert_error(post(client, "value", "x['W']", ["x"], [1.0, 2.0]), 422, "invalid_function",
                 "x is an array of shape (2,) and dtype float64, not an object", {"line": 1, "column": 1})
