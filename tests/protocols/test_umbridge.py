"""Nabla speaks UM-Bridge 1.0: the `umbridge` package's own client, `umbridge.HTTPModel`, finds the
models, and `__call__`, `gradient`, `apply_jacobian` and `apply_hessian` give what /v1 gives and
what the closed forms say, for rosenbrock, the tutorial's model and registered models with
pytree parameters and vector outputs (their inputs flattened in schema order). Bad requests get
UM-Bridge's error body, {"error": {"type", "message"}}, with a 4xx."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import umbridge
from _protocol_support import (
    TUTORIAL_B,
    TUTORIAL_W,
    rosenbrock,
    rosenbrock_grad,
    rosenbrock_hessian,
    spring_grad,
    tanh_layer_parts,
    tutorial_grad,
    tutorial_hessian,
    tutorial_loss,
    v1,
)

X = [0.5, -1.25, 2.0, 0.75]
W, B = TUTORIAL_W.tolist(), float(TUTORIAL_B)
TANH_A = np.array([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]])
TANH_C, TANH_X = np.array([0.05, -0.1]), np.array([0.8, -0.3, 0.45])
TANH_INPUT = [TANH_A.ravel().tolist(), TANH_C.tolist(), TANH_X.tolist()]


@pytest.fixture(scope="module")
def bridge(server: Any) -> str:
    return server.url + "/umbridge"


def model(bridge: str, name: str) -> umbridge.HTTPModel:
    return umbridge.HTTPModel(bridge, name)


def test_the_server_lists_the_typed_models_and_supports_every_operation(bridge: str) -> None:
    names = umbridge.supported_models(bridge)
    assert {"rosenbrock", "tutorial_logreg", "logistic_regression", "spring", "tanh_layer"} <= set(names)
    # untyped parameters have no sizes, integer labels are not real vectors: not UM-Bridge models
    assert "linear_regression" not in names and "mlp_classifier" not in names
    rosen = model(bridge, "rosenbrock")
    assert rosen.supports_evaluate() and rosen.supports_gradient()
    assert rosen.supports_apply_jacobian() and rosen.supports_apply_hessian()


def test_sizes_come_from_the_schema_and_config_for_free_dimensions(bridge: str) -> None:
    assert model(bridge, "tutorial_logreg").get_input_sizes() == [3, 1]
    assert model(bridge, "tutorial_logreg").get_output_sizes() == [1]
    assert model(bridge, "tanh_layer").get_input_sizes() == [6, 2, 3]
    assert model(bridge, "tanh_layer").get_output_sizes() == [2]
    rosen = model(bridge, "rosenbrock")
    assert rosen.get_input_sizes({"n": 5}) == [5] and rosen.get_output_sizes({"n": 5}) == [1]
    assert model(bridge, "spring").get_input_sizes({"n": 2}) == [2, 2, 2]


def test_rosenbrock_matches_v1_and_its_closed_forms(server: Any, bridge: str) -> None:
    rosen = model(bridge, "rosenbrock")
    x = np.array(X)
    assert rosen([X]) == [[rosenbrock(x)]]
    assert rosen([X])[0][0] == v1(server.url, "rosenbrock", "value", {"args": [X]})["value"]
    gradient = rosen.gradient(0, 0, [X], [2.5])
    np.testing.assert_allclose(gradient, 2.5 * rosenbrock_grad(x), rtol=1e-14)
    np.testing.assert_array_equal(gradient, 2.5 * np.array(v1(server.url, "rosenbrock", "grad", {"args": [X]})["grad"]))
    v = [1.0, 0.5, -2.0, 0.25]
    assert rosen.apply_jacobian(0, 0, [X], v) == [pytest.approx(rosenbrock_grad(x) @ v, rel=1e-14)]
    hessian = rosen.apply_hessian(0, 0, 0, [X], [0.5], v)
    np.testing.assert_allclose(hessian, 0.5 * rosenbrock_hessian(x) @ v, rtol=1e-14)
    reference = v1(server.url, "rosenbrock", "hvp", {"args": [X], "tangents": [v]})["hvp"]
    np.testing.assert_allclose(hessian, 0.5 * np.array(reference), rtol=1e-15)


def test_the_tutorial_model_matches_v1_and_its_closed_forms(server: Any, bridge: str) -> None:
    tutorial = model(bridge, "tutorial_logreg")
    inputs = [W, [B]]  # the scalar b is a vector of one
    [[loss]] = tutorial(inputs)
    assert loss == pytest.approx(tutorial_loss(W, B), rel=1e-6)
    assert loss == v1(server.url, "tutorial_logreg", "value", {"args": [W, B]})["value"]  # float32, as /v1
    w_grad, b_grad = tutorial_grad(W, B)
    np.testing.assert_allclose(tutorial.gradient(0, 0, inputs, [1.0]), w_grad, rtol=1e-5)
    assert tutorial.gradient(0, 1, inputs, [1.0]) == [pytest.approx(-0.29227245, rel=1e-6)]
    assert tutorial.gradient(0, 1, inputs, [1.0])[0] == pytest.approx(b_grad, rel=1e-5)
    full = tutorial_hessian(W, B)
    v = [0.5, -1.0, 2.0]
    assert tutorial.apply_jacobian(0, 0, inputs, v) == [pytest.approx(w_grad @ v, rel=1e-5)]
    np.testing.assert_allclose(tutorial.apply_hessian(0, 0, 0, inputs, [1.0], v), full[:3, :3] @ v, rtol=1e-5)
    np.testing.assert_allclose(tutorial.apply_hessian(0, 0, 1, inputs, [2.0], [1.0]), 2.0 * full[:3, 3], rtol=1e-5)
    assert tutorial.apply_hessian(0, 1, 0, inputs, [1.0], v) == [pytest.approx(full[3, :3] @ v, rel=1e-5)]


def test_pytree_parameters_are_flattened_in_schema_order(bridge: str) -> None:
    k, x0, x = np.array([2.0, 0.5]), np.array([0.1, -0.4]), np.array([0.7, 0.2])
    spring = model(bridge, "spring")
    g = spring_grad(k, x0, x)
    inputs = [k.tolist(), x0.tolist(), x.tolist()]
    for index, key in enumerate(("k", "x0", "x")):
        np.testing.assert_allclose(spring.gradient(0, index, inputs, [1.0]), g[key], rtol=1e-14)
    v = [1.0, -3.0]
    np.testing.assert_allclose(spring.apply_hessian(0, 2, 2, inputs, [1.0], v), (k + 2 * x) * v, rtol=1e-14)
    # d/dx (d f / dk . v) = diag(x - x0) v: a mixed block, between two leaves of different parameters
    np.testing.assert_allclose(spring.apply_hessian(0, 2, 0, inputs, [1.0], v), (x - x0) * v, rtol=1e-14)


def test_vector_outputs_take_sensitivities_through_every_derivative(bridge: str) -> None:
    layer = model(bridge, "tanh_layer")
    t, slope, curvature = tanh_layer_parts(TANH_A, TANH_C, TANH_X)
    np.testing.assert_allclose(layer(TANH_INPUT)[0], t, rtol=1e-15)
    sens = [1.5, -0.5]
    np.testing.assert_allclose(layer.gradient(0, 2, TANH_INPUT, sens), TANH_A.T @ (sens * slope), rtol=1e-14)
    np.testing.assert_allclose(layer.gradient(0, 0, TANH_INPUT, sens), np.outer(sens * slope, TANH_X).ravel(),
                               rtol=1e-14)
    v = [0.5, -1.0, 2.0]
    np.testing.assert_allclose(layer.apply_jacobian(0, 2, TANH_INPUT, v), slope * (TANH_A @ v), rtol=1e-14)
    # sum_o sens_o d2 f_o / dx2 v = A^T diag(sens * tanh'') A v
    np.testing.assert_allclose(layer.apply_hessian(0, 2, 2, TANH_INPUT, sens, v),
                               TANH_A.T @ (np.asarray(sens) * curvature * (TANH_A @ v)), rtol=1e-13)
    # the block between x and c: d/dx (sens . f)' in c . w = A^T diag(sens * tanh'') w
    w = [1.0, -2.0]
    np.testing.assert_allclose(layer.apply_hessian(0, 2, 1, TANH_INPUT, sens, w),
                               TANH_A.T @ (np.asarray(sens) * curvature * np.asarray(w)), rtol=1e-13)


# ----------------------------------------------------------------------------- errors


def bridge_error(bridge: str, route: str, body: dict[str, Any], status: int = 400) -> dict[str, str]:
    answer = httpx.post(f"{bridge}/{route}", json=body, timeout=30)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error"} and set(error["error"]) == {"type", "message"}, error
    return error["error"]


def test_bad_requests_get_umbridge_errors_with_a_4xx(bridge: str) -> None:
    with pytest.raises(Exception, match="no_such_model not supported by server"):
        umbridge.HTTPModel(bridge, "no_such_model")
    assert bridge_error(bridge, "Evaluate", {"name": "no_such_model", "input": [[1.0]]})["type"] == "ModelNotFound"

    rosen = model(bridge, "rosenbrock")
    with pytest.raises(Exception, match="InvalidInput: model 'rosenbrock' takes 1 input vector"):
        rosen([X, [1.0]])
    with pytest.raises(Exception, match=r"InvalidInput: Vector sens has invalid length! Expected 1 but got 2"):
        rosen.gradient(0, 0, [X], [1.0, 2.0])
    with pytest.raises(Exception, match=r"InvalidInput: Invalid outWrt index!"):
        rosen.apply_jacobian(1, 0, [X], X)
    with pytest.raises(Exception, match=r"InvalidInput: Vector vec has invalid length! Expected 4 but got 2"):
        rosen.apply_hessian(0, 0, 0, [X], [1.0], [1.0, 2.0])
    with pytest.raises(Exception, match=r"InvalidInput: Input parameter 0 \(W\) has invalid length! Expected 3"):
        model(bridge, "tutorial_logreg")([[1.0, 2.0], [B]])

    free = bridge_error(bridge, "InputSizes", {"name": "rosenbrock"})
    assert free["type"] == "InvalidInput" and "send their sizes in config" in free["message"]
    config = bridge_error(bridge, "InputSizes", {"name": "rosenbrock", "config": {"m": 3}})
    assert "not dimensions of model 'rosenbrock'" in config["message"]
    untyped = bridge_error(bridge, "Evaluate", {"name": "linear_regression", "input": [[1.0]]})
    assert "untyped parameter(s)" in untyped["message"]
    assert bridge_error(bridge, "Evaluate", {"name": "rosenbrock", "input": [["a"]]})["type"] == "InvalidInput"
    assert bridge_error(bridge, "Evaluate", {"name": "rosenbrock"})["message"].startswith("Evaluate: input")
