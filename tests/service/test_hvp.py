"""POST /v1/hvp: Hessian-vector products, forward over reverse (the jvp of the gradient), never
forming the Hessian. Checked against closed-form Hessians, against `hessian @ v` from
/v1/hessian, and against central differences of /v1/grad; argnums (the gradient's arguments,
one tangent each), pytree arguments, a model route, has_aux, errors, and admission's refusal
before the work."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _service_support import INPUTS, TARGETS, TUTORIAL_EXPR, W_PRINTED, arr, assert_error, b64, expr, strict_json
from closed_forms import rosenbrock, rosenbrock_grad, rosenbrock_hessian
from fastapi.testclient import TestClient

from service.functions import compile_spec
from service.settings import Settings

RNG = np.random.default_rng(20240613)


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return strict_json(response.text)




# ----------------------------------------------------------------------------- closed forms


def test_the_hvp_of_rosenbrock_is_its_hessian_times_v_with_the_value_and_gradient(client: TestClient) -> None:
    x, v = RNG.normal(size=7), RNG.normal(size=7)
    out = post(client, "/v1/hvp", {"function": {"model": "rosenbrock"}, "args": [x.tolist()],
                                   "tangents": [v.tolist()]})
    np.testing.assert_allclose(arr(out["hvp"]), rosenbrock_hessian(x) @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(arr(out["grad"]), rosenbrock_grad(x), rtol=1e-12, atol=1e-12)
    assert out["value"] == pytest.approx(rosenbrock(x), rel=1e-14)
    assert out["meta"]["transform"] == "hvp" and out["meta"]["dtype"] == "float64"


def test_the_hvp_of_a_sum_of_cubes_is_6_x_v(client: TestClient) -> None:
    x, v = RNG.normal(size=5), RNG.normal(size=5)
    out = post(client, "/v1/hvp", {"function": expr("sum(x ** 3)", ["x"]), "args": [x.tolist()],
                                   "tangents": [v.tolist()]})
    np.testing.assert_allclose(arr(out["hvp"]), 6.0 * x * v, rtol=1e-13)
    np.testing.assert_allclose(arr(out["grad"]), 3.0 * x ** 2, rtol=1e-13)


def test_the_hvp_of_a_pytree_argument_comes_back_in_its_structure(client: TestClient) -> None:
    # f(p) = s |w|^2 + sum(sin w): d2f/dw2 = diag(2 s - sin w), d2f/dw ds = 2 w, d2f/ds2 = 0.
    w, s, vw, vs = RNG.normal(size=4), 0.7, RNG.normal(size=4), -1.3
    out = post(client, "/v1/hvp", {
        "function": expr("sum(p['w'] ** 2) * p['s'] + sum(sin(p['w']))", ["p"]),
        "args": [{"w": w.tolist(), "s": s}], "tangents": [{"w": vw.tolist(), "s": vs}]})
    assert set(out["hvp"]) == {"w", "s"} and set(out["grad"]) == {"w", "s"}
    np.testing.assert_allclose(arr(out["hvp"]["w"]), (2 * s - np.sin(w)) * vw + 2 * w * vs, rtol=1e-13)
    assert out["hvp"]["s"] == pytest.approx(2 * w @ vw, rel=1e-13)
    np.testing.assert_allclose(arr(out["grad"]["w"]), 2 * s * w + np.cos(w), rtol=1e-13)


def test_a_scalar_argument_gives_a_scalar_product(client: TestClient) -> None:
    out = post(client, "/v1/hvp", {"function": expr("exp(2 * x)", ["x"]), "args": [0.5], "tangents": [3.0]})
    assert out["hvp"] == pytest.approx(4 * np.exp(1.0) * 3.0, rel=1e-14)


# ----------------------------------------------------------------------------- against other endpoints


TUTORIAL_BODY = {"function": expr(TUTORIAL_EXPR, ["W", "b", "inputs", "targets"]),
                 "args": [W_PRINTED, 0.8535516, INPUTS, TARGETS]}


def test_the_hvp_equals_the_hessian_endpoint_times_v(client: TestClient) -> None:
    v = RNG.normal(size=3)
    hessian = arr(post(client, "/v1/hessian", TUTORIAL_BODY)["hessian"])
    assert hessian.shape == (3, 3)
    out = post(client, "/v1/hvp", {**TUTORIAL_BODY, "tangents": [v.tolist()]})
    np.testing.assert_allclose(arr(out["hvp"]), hessian @ v, rtol=1e-12, atol=1e-14)


def test_the_hvp_matches_central_differences_of_the_gradient_endpoint(client: TestClient) -> None:
    f = expr("sum(sin(x) * exp(x / 3)) * sum(x ** 2)", ["x"])
    x, v = RNG.normal(size=6), RNG.normal(size=6)
    eps = 1e-5

    def grad_at(point: np.ndarray) -> np.ndarray:
        return arr(post(client, "/v1/grad", {"function": f, "args": [point.tolist()]})["grad"])

    differences = (grad_at(x + eps * v) - grad_at(x - eps * v)) / (2 * eps)
    out = post(client, "/v1/hvp", {"function": f, "args": [x.tolist()], "tangents": [v.tolist()]})
    np.testing.assert_allclose(arr(out["hvp"]), differences, rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------- argnums


F_XY = expr("sum(x ** 2 * y) + y ** 3", ["x", "y"])  # H_xx = 2y I, H_xy = 2x, H_yy = 6y


def test_argnums_chooses_the_arguments_of_the_gradient_and_the_tangents_follow_them(client: TestClient) -> None:
    x, y, vx, vy = np.array([1.0, -2.0, 0.5]), 1.5, np.array([0.3, 0.1, -0.2]), 2.0
    only_y = post(client, "/v1/hvp", {"function": F_XY, "args": [x.tolist(), y], "argnums": 1, "tangents": [vy]})
    assert only_y["hvp"] == pytest.approx(6 * y * vy, rel=1e-14)
    assert only_y["grad"] == pytest.approx(x @ x + 3 * y ** 2, rel=1e-14)
    both = post(client, "/v1/hvp", {"function": F_XY, "args": [x.tolist(), y], "argnums": [0, 1],
                                    "tangents": [vx.tolist(), vy]})
    np.testing.assert_allclose(arr(both["hvp"][0]), 2 * y * vx + 2 * x * vy, rtol=1e-14)
    assert both["hvp"][1] == pytest.approx(2 * x @ vx + 6 * y * vy, rel=1e-14)
    swapped = post(client, "/v1/hvp", {"function": F_XY, "args": [x.tolist(), y], "argnums": [1, -2],
                                       "tangents": [vy, vx.tolist()]})
    assert swapped["hvp"][0] == both["hvp"][1] and swapped["hvp"][1] == both["hvp"][0]


def test_the_hvp_with_a_list_of_argnums_is_the_hessian_blocks_times_the_tangents(client: TestClient) -> None:
    x, y = RNG.normal(size=3), 0.8
    vx, vy = RNG.normal(size=3), 0.4
    body = {"function": F_XY, "args": [x.tolist(), y], "argnums": [0, 1]}
    blocks = post(client, "/v1/hessian", body)["hessian"]
    h = [[arr(blocks[i][j]) for j in range(2)] for i in range(2)]
    out = post(client, "/v1/hvp", {**body, "tangents": [vx.tolist(), vy]})
    np.testing.assert_allclose(arr(out["hvp"][0]), h[0][0] @ vx + h[0][1] * vy, rtol=1e-13)
    assert out["hvp"][1] == pytest.approx(float(h[1][0] @ vx + h[1][1] * vy), rel=1e-13)


# ----------------------------------------------------------------------------- models, dtypes, aux


def test_the_model_route_answers_like_the_function_route(client: TestClient) -> None:
    x, v = [1.0, 2.0, 3.0], [1.0, 0.0, -1.0]
    by_path = post(client, "/v1/models/rosenbrock/hvp", {"args": [x], "tangents": [v]})
    by_body = post(client, "/v1/hvp", {"function": {"model": "rosenbrock"}, "args": [x], "tangents": [v]})
    assert by_path["hvp"] == by_body["hvp"] == [402.0, 400.0, -200.0]
    assert by_path["meta"]["model"] == {"name": "rosenbrock", "version": 1}


def test_a_float32_model_answers_in_float32_close_to_float64(client: TestClient) -> None:
    v = [0.5, -1.0, 2.0]
    body = {"args": [W_PRINTED, 0.8535516], "tangents": [v]}
    single = post(client, "/v1/models/tutorial_logreg/hvp", body)
    double = post(client, "/v1/models/tutorial_logreg/hvp", {**body, "dtype": "float64"})
    assert single["meta"]["dtype"] == "float32" and double["meta"]["dtype"] == "float64"
    np.testing.assert_allclose(arr(single["hvp"]), arr(double["hvp"]), rtol=2e-5)


def test_has_aux_returns_the_auxiliary_output_once(client: TestClient) -> None:
    out = post(client, "/v1/hvp", {"function": expr("p = x * 2\n(sum(p ** 3), p)", ["x"]), "args": [[1.0, -1.0]],
                                   "tangents": [[1.0, 1.0]], "has_aux": True})
    # f = sum(8 x^3): H = diag(48 x)
    assert out["aux"] == [2.0, -2.0] and out["hvp"] == [48.0, -48.0] and out["value"] == 0.0


def test_a_repeated_request_reuses_the_compiled_plan(client: TestClient) -> None:
    body = {"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0]], "tangents": [[1.0, 1.0]]}
    first, second = post(client, "/v1/hvp", body), post(client, "/v1/hvp", {**body, "tangents": [[2.0, 2.0]]})
    assert first["meta"]["cache_hit"] is False and second["meta"]["cache_hit"] is True
    assert arr(second["hvp"]) == pytest.approx(2 * arr(first["hvp"]))


# ----------------------------------------------------------------------------- errors


def test_a_non_scalar_output_is_refused_like_grad(client: TestClient) -> None:
    body = {"function": expr("x ** 2", ["x"]), "args": [[1.0, 2.0]]}
    grad = client.post("/v1/grad", json=body).json()["error"]
    error = assert_error(client.post("/v1/hvp", json={**body, "tangents": [[1.0, 0.0]]}), 422, "not_differentiable",
                         "scalar")
    assert error["message"] == grad["message"] and error["detail"] == grad["detail"]


def test_a_tangent_not_shaped_like_its_argument_names_the_path(client: TestClient) -> None:
    body = {"function": F_XY, "args": [[1.0, 2.0], 3.0]}
    assert_error(client.post("/v1/hvp", json={**body, "tangents": [[1.0, 2.0, 3.0]]}), 422, "invalid_argument",
                 "tangents.x: expected f64[2]", {"path": "tangents.x", "got": "f64[3]"})
    assert_error(client.post("/v1/hvp", json={**body, "argnums": 1, "tangents": [[1.0]]}), 422, "invalid_argument",
                 "tangents.y: expected f64[]")
    pytree = {"function": expr("sum(p['w'] ** 2)", ["p"]), "args": [{"w": [1.0, 2.0]}]}
    assert_error(client.post("/v1/hvp", json={**pytree, "tangents": [[1.0, 2.0]]}), 422, "invalid_argument",
                 "tangents.p: expected the structure of p")


def test_missing_or_miscounted_tangents_are_400(client: TestClient) -> None:
    body = {"function": F_XY, "args": [[1.0, 2.0], 3.0]}
    assert_error(client.post("/v1/hvp", json=body), 400, "invalid_request", "hvp needs tangents",
                 {"errors": [{"path": "tangents", "problem": "Field required", "kind": "missing"}]})
    assert_error(client.post("/v1/hvp", json={**body, "tangents": [[1.0, 2.0], 1.0]}), 400, "invalid_request",
                 "one tangent per entry of the differentiated argument(s) ['x'] (argnums): 1 expected, 2 given")
    assert_error(client.post("/v1/hvp", json={**body, "argnums": 2, "tangents": [1.0]}), 400, "invalid_request",
                 "argnums 2 is out of range: the function takes 2 argument(s)")
    assert_error(client.post("/v1/hvp", json={**body, "argnums": [1, -1], "tangents": [1.0, 1.0]}), 400,
                 "invalid_request", "names an argument twice")


def test_an_integer_argument_has_no_hessian(client: TestClient) -> None:
    response = client.post("/v1/hvp", json={"function": expr("sum(x ** 2)", ["x"]),
                                            "args": [b64(np.array([1, 2], np.int32))], "tangents": [[1.0, 1.0]]})
    assert_error(response, 422, "not_differentiable", "x has dtype int32 and has no derivative", {"path": "x"})


def test_an_option_of_another_transform_is_refused(client: TestClient) -> None:
    response = client.post("/v1/hvp", json={"function": F_XY, "args": [[1.0], 2.0], "tangents": [[1.0]],
                                            "mode": "fwd"})
    assert_error(response, 400, "invalid_request", "do not apply to hvp")


# ----------------------------------------------------------------------------- admission


def test_a_second_order_plan_over_budget_is_refused_from_its_prediction(make_client: Any) -> None:
    """The traced Hessian-vector product is predicted at 16x the function's operations (x4 per
    order): with room for a gradient (4x) but not for that, hvp is refused before it is traced."""
    source = "sum(tanh(x) * exp(x / 3) + sin(x) ** 2)"
    operations = len(_graph_of(source).eqns)
    client = make_client(max_plan_nodes=3 * operations)  # before optimising: 4 x 3 x operations
    body = {"function": expr(source, ["x"]), "args": [[0.1, 0.2, 0.3]]}
    assert client.post("/v1/grad", json=body).status_code == 200
    assert_error(client.post("/v1/hvp", json={**body, "tangents": [[1.0, 0.0, 0.0]]}), 413, "limit_exceeded",
                 "NABLA_MAX_PLAN_NODES",
                 {"limit": "NABLA_MAX_PLAN_NODES", "requested": 16 * operations, "maximum": 12 * operations})


def test_a_response_over_budget_is_refused_with_its_figures(make_client: Any) -> None:
    # value (25 bytes), gradient and product of 100 float64s each (25 bytes a number, plus brackets)
    client = make_client(max_response_bytes=4000)
    body = {"function": expr("sum(x ** 3)", ["x"]), "args": [[0.5] * 100], "tangents": [[1.0] * 100]}
    error = assert_error(client.post("/v1/hvp", json=body), 413, "limit_exceeded", "NABLA_MAX_RESPONSE_BYTES")
    assert error["detail"]["requested"] == 25 + 2 * (100 * 25 + 3) and error["detail"]["maximum"] == 4000
    out = post(client, "/v1/hvp", {**body, "encoding": "base64"})  # the advice works
    np.testing.assert_allclose(arr(out["hvp"]), 3.0 * np.ones(100))


def _graph_of(source: str) -> Any:
    import engine

    fn, _, _ = compile_spec(expr(source, ["x"]), Settings().engine_limits())
    return engine.make_graph(fn)(engine.ShapeDtypeStruct((3,), "float64"))
