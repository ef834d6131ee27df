"""Typed models: each parameter's structure, shape (with named dimensions) and dtype, given or
inferred at registration, shown by the model endpoints, published as JSON Schema, and checked on
every call with one notation (`f64[3]`, `params.W`); and the registry operations around them
(one version deleted, pagination, unknown query parameters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
import numpy as np
import pytest
from _service_support import assert_error
from fastapi.testclient import TestClient


def expr(source: str, params: list[str]) -> dict[str, Any]:
    return {"expr": source, "params": params}


def register(client: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post("/v1/models", json=body)
    assert response.status_code == status, response.text
    return response.json()


# ----------------------------------------------------------------------------- built-in schemas


def test_builtin_models_declare_their_parameters(client: TestClient) -> None:
    info = client.get("/v1/models/rosenbrock").json()
    assert info["schema"] == {"x": {"shape": ["n"], "dtype": "float64"}}
    assert info["signature"] == "x: f64[n]"
    tutorial = client.get("/v1/models/tutorial_logreg").json()
    assert tutorial["signature"] == "W: f32[3], b: f32[]"
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["rosenbrock"]["signature"] == "x: f64[n]"


def test_a_call_that_does_not_fit_names_the_path_expected_and_received(client: TestClient) -> None:
    response = client.post("/v1/models/tutorial_logreg/grad", json={"args": [[1.0, 2.0, 3.0, 4.0], 0.0]})
    assert_error(response, 422, "invalid_argument", "W: expected f32[3], got f32[4]",
                 {"path": "W", "expected": "f32[3]", "got": "f32[4]"})
    response = client.post("/v1/models/rosenbrock/value", json={"args": [[[1.0, 2.0]]]})
    assert_error(response, 422, "invalid_argument", "x: expected f64[n], got f64[1,2]")
    response = client.post("/v1/models/rosenbrock/value", json={"args": [{"a": 1.0}]})
    assert_error(response, 422, "invalid_argument", "x: expected f64[n], got an object with keys ['a']")


def test_named_dimensions_bind_across_parameters(client: TestClient) -> None:
    ok = {"args": [[1.0, -1.0], 0.5, [[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]], [1.0, 0.0, 1.0]]}
    assert client.post("/v1/models/logistic_regression/value", json=ok).status_code == 200
    bad = {"args": [[1.0, -1.0], 0.5, [[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]], [1.0, 0.0]]}
    assert_error(client.post("/v1/models/logistic_regression/value", json=bad), 422, "invalid_argument",
                 "targets: expected f64[n], got f64[2]; n is 3 in inputs", {"path": "targets"})


def test_booleans_and_integers_take_the_declared_float_dtype(client: TestClient) -> None:
    body = {"args": [[0.5, -0.5], 0.1, [[1.0, 2.0], [3.0, 4.0]], [True, False]]}
    with_bools = client.post("/v1/models/logistic_regression/value", json=body).json()["value"]
    body["args"][3] = [1, 0]
    assert client.post("/v1/models/logistic_regression/value", json=body).json()["value"] == with_bools


# ----------------------------------------------------------------------------- registered schemas


def test_a_schema_is_inferred_from_example_arguments(client: TestClient) -> None:
    out = register(client, {"name": "affine", "function": expr("sum(W @ x + b)", ["W", "x", "b"]),
                            "example_args": [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [1.0, 1.0], [0.0, 0.0, 0.0]]})
    assert out["signature"] == "W: f64[3,2], x: f64[2], b: f64[3]"
    info = client.get("/v1/models/affine").json()
    assert info["schema"]["W"] == {"shape": [3, 2], "dtype": "float64"}
    assert_error(client.post("/v1/models/affine/value", json={"args": [[[1.0, 2.0]], [1.0, 1.0], [0.0]]}), 422,
                 "invalid_argument", "W: expected f64[3,2], got f64[1,2]")
    value = client.post("/v1/models/affine/value",
                        json={"args": [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [1.0, 1.0], [0.0, 0.0, 0.0]]})
    assert value.json()["value"] == 21.0


def test_examples_that_do_not_fit_the_function_are_refused_at_registration(client: TestClient) -> None:
    body = {"name": "bad_examples", "function": expr("sum(W @ x)", ["W", "x"]),
            "example_args": [[[1.0, 2.0]], [1.0, 2.0, 3.0]]}
    response = client.post("/v1/models", json=body)
    assert_error(response, 422, "shape_error", "matmul")
    assert client.get("/v1/models/bad_examples").status_code == 404


def test_an_explicit_schema_with_named_dimensions(client: TestClient) -> None:
    x_spec = {"shape": ["n", "d"], "dtype": "float64"}
    out = register(client, {"name": "typed", "function": expr("sum(x * y)", ["x", "y"]),
                            "schema": {"x": x_spec, "y": {"shape": ["n", "d"], "dtype": "float32"}}})
    assert out["signature"] == "x: f64[n,d], y: f32[n,d]"
    assert_error(client.post("/v1/models/typed/value", json={"args": [[[1.0, 2.0]], [[1.0, 2.0, 3.0]]]}), 422,
                 "invalid_argument", "y: expected f32[n,d], got f32[1,3]; d is 2 in x")
    out = client.post("/v1/models/typed/value", json={"args": [[[1.0, 2.0]], [[0.5, 0.25]]]}).json()
    assert out["value"] == 1.0


@pytest.mark.parametrize("schema, fragment", [
    ({"x": {"shape": [-1]}}, "shape must be a list"),
    ({"x": {"shape": ["n m"]}}, "shape must be a list"),
    ({"x": {"shape": [], "dtype": "complex64"}}, "unsupported dtype"),
    ({"nope": {"shape": []}}, "not free parameters"),
    ({"x": 5}, "a schema is a"),
])
def test_bad_schemas_are_refused(client: TestClient, schema: Any, fragment: str) -> None:
    response = client.post("/v1/models", json={"name": "m", "function": expr("x", ["x"]), "schema": schema})
    assert_error(response, 400, "invalid_request", fragment)


def test_schema_and_example_args_together_are_refused(client: TestClient) -> None:
    body = {"name": "m", "function": expr("x", ["x"]), "schema": {"x": {"shape": []}}, "example_args": [1.0]}
    assert_error(client.post("/v1/models", json=body), 400, "invalid_request", "either schema or example_args")


def test_the_request_schema_endpoint_is_json_schema_that_validates_requests(client: TestClient) -> None:
    register(client, {"name": "pair", "function": expr("sum(x) * y", ["x", "y"]),
                      "schema": {"x": {"shape": [2], "dtype": "float64"}, "y": {"shape": [], "dtype": "float64"}}})
    doc = client.get("/v1/models/pair/schema").json()
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    good = {"args": [[1.0, 2.0], 3.0]}
    assert validator.is_valid(good)
    assert client.post("/v1/models/pair/value", json=good).json()["value"] == 9.0
    for bad in ({"args": [[1.0, 2.0, 3.0], 3.0]}, {"args": [[1.0, 2.0]]}, {"args": [[1.0, 2.0], [3.0]]},
                {"args": [[1.0, 2.0], 3.0], "bogus": 1}):
        assert not validator.is_valid(bad), bad
        assert client.post("/v1/models/pair/value", json=bad).status_code in (400, 422)
    # with in_axes the arguments are batches, typed one example at a time by the server
    batched = {"args": [[[1.0, 2.0], [3.0, 4.0]], 3.0], "in_axes": [0, None]}
    assert validator.is_valid(batched)
    assert client.post("/v1/models/pair/value", json=batched).json()["value"] == [9.0, 21.0]
    rosen = client.get("/v1/models/rosenbrock/schema").json()
    assert jsonschema.Draft202012Validator(rosen).is_valid({"args": [[1.0, 2.0, 3.0]], "dtype": "float32"})


# ----------------------------------------------------------------------------- registry operations


def test_one_version_can_be_deleted(client: TestClient) -> None:
    for k in (1, 2, 3):
        register(client, {"name": "quad", "function": expr(f"{k} * sum(x ** 2)", ["x"])})
    response = client.delete("/v1/models/quad/versions/2")
    assert response.status_code == 200 and response.json() == {"name": "quad", "deleted_versions": 1, "version": 2}
    assert client.get("/v1/models/quad").json()["versions"] == [1, 3]
    assert_error(client.delete("/v1/models/quad/versions/2"), 404, "not_found", "no version 2")
    assert client.post("/v1/models/quad/value", json={"args": [[1.0]], "version": 1}).json()["value"] == 1.0
    assert_error(client.post("/v1/models/quad/value", json={"args": [[1.0]], "version": 2}), 404, "not_found")
    # the number is never handed out again
    assert register(client, {"name": "quad", "function": expr("sum(x)", ["x"])})["version"] == 4


def test_unknown_query_parameters_are_refused(client: TestClient) -> None:
    register(client, {"name": "quad", "function": expr("sum(x ** 2)", ["x"])})
    assert_error(client.delete("/v1/models/quad?version=1"), 400, "invalid_request", "unknown query parameter")
    assert client.get("/v1/models/quad").status_code == 200  # nothing was deleted
    assert_error(client.post("/v1/grad?fast=1", json={"function": expr("x", ["x"]), "args": [1.0]}), 400,
                 "invalid_request", "['fast']")
    assert_error(client.get("/v1/models?limit=0"), 400, "invalid_request", "limit")


def test_the_model_list_is_paginated(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for i in range(7):
        register(client, {"name": f"m{i:02d}", "function": expr(f"x * {i}", ["x"])})
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/models", params=query).json()
        assert len(page["models"]) <= 4
        names += [m["name"] for m in page["models"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = [m["name"] for m in client.get("/v1/models", params={"limit": 1000}).json()["models"]]
    assert names == everything == sorted(everything)
    assert {f"m{i:02d}" for i in range(7)} <= set(names) and pages == -(-len(everything) // 4)


def test_float64_numbers_reach_a_typed_float32_parameter_as_float32(client: TestClient) -> None:
    w = [-0.36838785, -2.275689, 0.01144757]
    out = client.post("/v1/models/tutorial_logreg/grad", json={"args": [w, 0.8535516], "argnums": 1}).json()
    assert out["meta"]["dtype"] == "float32"
    np.testing.assert_allclose(out["grad"], -0.29227245, rtol=2e-6)
