"""Bad requests: each one is a 4xx with {"error": {type, message, detail, request_id}} naming what
was wrong (argument, leaf path, node, line and column), and none is ever a 500."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from _service_support import assert_error, b64, expr, strict_json
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

E = expr
G_ADD = {"format": "nabla.graph/1", "params": ["x", "y"],
         "nodes": [{"id": "s", "op": "add", "inputs": ["x", "y"]},
                   {"id": "t", "op": "reduce_sum", "inputs": ["s"], "attrs": {"axes": [0]}}],
         "outputs": ["t"]}


def graph(nodes: list[dict[str, Any]], params: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"graph": {"format": "nabla.graph/1", "params": params or ["x"], "nodes": nodes,
                      "outputs": [nodes[-1]["id"]] if nodes else ["x"], **extra}}


def c(fn: dict[str, Any], *args: Any, **options: Any) -> dict[str, Any]:
    return {"function": fn, "args": list(args), **options}


# (id, path, body: dict | bytes, status, type, message fragment, detail subset)
CASES: list[tuple[str, str, Any, int, str, str, dict[str, Any]]] = [
    # --- the body
    ("malformed_json", "/v1/value", b'{"function": ', 400, "invalid_request", "not valid JSON", {}),
    ("not_utf8", "/v1/value", b"\xff\xfe\x00", 400, "invalid_request", "not valid JSON", {}),
    ("empty_body", "/v1/value", b"", 400, "invalid_request", "empty", {}),
    ("body_is_a_list", "/v1/grad", b"[1, 2]", 400, "invalid_request", "JSON object", {}),
    ("body_is_a_number", "/v1/grad", b"3", 400, "invalid_request", "JSON object", {}),
    ("json_nested_beyond_recursion", "/v1/value", b"[" * 100_000 + b"]" * 100_000, 413, "limit_exceeded",
     "nested more than 32 levels deep (NABLA_MAX_DEPTH)", {"limit": "NABLA_MAX_DEPTH"}),
    ("no_function", "/v1/value", {"args": [1.0]}, 400, "invalid_request", "needs a `function`", {}),
    ("no_args", "/v1/value", {"function": E("x", ["x"])}, 400, "invalid_request", "args must be a list", {}),
    ("args_not_a_list", "/v1/value", {"function": E("x", ["x"]), "args": {"x": 1.0}}, 400, "invalid_request",
     "args must be a list", {}),
    # --- the transform and its options
    ("unknown_transform", "/v1/frobnicate", c(E("x", ["x"]), 1.0), 404, "not_found", "not found", {}),
    ("unknown_transform_on_a_model", "/v1/models/rosenbrock/frobnicate", {"args": [[1.0, 2.0]]}, 404,
     "not_found", "unknown transform 'frobnicate'", {"transform": "frobnicate"}),
    ("order_on_value", "/v1/value", c(E("x", ["x"]), 1.0, order=2), 400, "invalid_request",
     "do not apply to value (they apply to grad)", {"options": ["order"], "transform": "value"}),
    ("mode_on_grad", "/v1/grad", c(E("x", ["x"]), 1.0, mode="fwd"), 400, "invalid_request",
     "do not apply to grad", {"options": ["mode"]}),
    ("tangents_on_vjp", "/v1/vjp", c(E("x", ["x"]), 1.0, tangents=[1.0], cotangent=1.0), 400, "invalid_request",
     "do not apply to vjp", {"options": ["tangents"]}),
    ("check_on_hessian", "/v1/hessian", c(E("x", ["x"]), 1.0, check={}), 400, "invalid_request",
     "do not apply to hessian", {"options": ["check"]}),
    ("argnums_on_check_grads", "/v1/check_grads", c(E("x", ["x"]), 1.0, argnums=0), 400, "invalid_request",
     "do not apply to check_grads", {}),
    ("unknown_option", "/v1/grad", c(E("x", ["x"]), 1.0, learning_rate=0.1), 400, "invalid_request",
     "['learning_rate'] do not apply", {}),
    ("version_outside_a_model_route", "/v1/grad", c({"model": "rosenbrock"}, [1.0, 2.0], version=1), 400,
     "invalid_request", "['version'] do not apply", {}),
    ("bad_dtype", "/v1/value", c(E("x", ["x"]), 1.0, dtype="int32"), 400, "invalid_request",
     "dtype must be 'float32' or 'float64'", {"dtype": "int32"}),
    ("bad_encoding", "/v1/value", c(E("x", ["x"]), 1.0, encoding="xml"), 400, "invalid_request",
     "encoding must be", {}),
    ("argnums_string", "/v1/grad", c(E("sum(x)", ["x"]), [1.0], argnums="0"), 400, "invalid_request",
     "argnums must be an integer", {"argnums": "0"}),
    ("argnums_bool", "/v1/grad", c(E("sum(x)", ["x"]), [1.0], argnums=True), 400, "invalid_request",
     "argnums must be an integer", {}),
    ("argnums_empty", "/v1/grad", c(E("sum(x)", ["x"]), [1.0], argnums=[]), 400, "invalid_request",
     "non-empty list", {}),
    ("argnums_out_of_range", "/v1/grad", c(E("sum(x)", ["x"]), [1.0], argnums=[0, 3]), 400, "invalid_request",
     "argnums 3 is out of range", {"arguments": 1}),
    ("has_aux_not_bool", "/v1/grad", c(E("sum(x)", ["x"]), [1.0], has_aux="yes"), 400, "invalid_request",
     "has_aux must be true or false", {}),
    ("order_zero", "/v1/grad", c(E("x", ["x"]), 1.0, order=0), 400, "invalid_request", "positive integer",
     {"order": 0}),
    ("order_string", "/v1/grad", c(E("x", ["x"]), 1.0, order="2"), 400, "invalid_request", "positive integer", {}),
    ("mode_unknown", "/v1/jacobian", c(E("x", ["x"]), 1.0, mode="sideways"), 400, "invalid_request",
     "mode must be 'rev' or 'fwd'", {"mode": "sideways"}),
    ("check_not_object", "/v1/check_grads", c(E("x", ["x"]), 1.0, check=[1]), 400, "invalid_request",
     "check must be an object", {}),
    ("check_unknown_key", "/v1/check_grads", c(E("x", ["x"]), 1.0, check={"bogus": 1}), 400, "invalid_request",
     "unknown check option", {}),
    ("check_bad_mode", "/v1/check_grads", c(E("x", ["x"]), 1.0, check={"modes": ["up"]}), 400, "invalid_request",
     "check.modes", {}),
    ("check_negative_eps", "/v1/check_grads", c(E("x", ["x"]), 1.0, check={"eps": -1}), 400, "invalid_request",
     "check.eps must be a positive number", {}),
    ("jvp_without_tangents", "/v1/jvp", c(E("x", ["x"]), 1.0), 400, "invalid_request", "jvp needs tangents", {}),
    ("jvp_tangent_shape", "/v1/jvp", c(E("x", ["x"]), [1.0, 2.0], tangents=[[1.0]]), 422, "invalid_argument",
     "tangents.x: expected f64[2] (the shape and dtype of x), got f64[1]", {"path": "tangents.x"}),
    ("jvp_tangent_dtype", "/v1/jvp", c(E("x", ["x"]), [1.0, 2.0], tangents=[
        {"$array": {"dtype": "float32", "shape": [2], "data": "AACAPwAAAEA="}}]), 422, "invalid_argument",
     "tangents.x: expected f64[2] (the shape and dtype of x), got f32[2]", {"path": "tangents.x", "got": "f32[2]"}),
    ("jvp_tangent_structure", "/v1/jvp", c(E("x", ["x"]), [1.0, 2.0], tangents=[{"a": [1.0, 2.0]}]), 422,
     "invalid_argument", "tangents.x: expected the structure of x", {"path": "tangents.x"}),
    ("vjp_without_cotangent", "/v1/vjp", c(E("x", ["x"]), 1.0), 400, "invalid_request", "vjp needs a cotangent",
     {}),
    ("vjp_cotangent_shape", "/v1/vjp", c(E("x * 2", ["x"]), [1.0, 2.0], cotangent=[1.0, 2.0, 3.0]), 422,
     "invalid_argument", "cotangent: expected f64[2] (the output's shape), got f64[3]", {"path": "cotangent"}),
    # --- the function
    ("function_not_object", "/v1/value", c("x * 2", 1.0), 422, "invalid_function", "function must be an object",
     {}),
    ("function_two_kinds", "/v1/value", c({"expr": "x", "params": ["x"], "graph": {}}, 1.0), 422,
     "invalid_function", "exactly one of expr, graph or model", {"keys": ["expr", "graph", "params"]}),
    ("expr_without_params", "/v1/value", c({"expr": "x"}, 1.0), 422, "invalid_function", "needs params", {}),
    ("expr_syntax_error", "/v1/value", c(E("a = x\nb = a +\nb", ["x"]), 1.0), 422, "invalid_function",
     "line 2", {"line": 2, "kind": "invalid"}),
    ("expr_undeclared_name", "/v1/value", c(E("x + y", ["x"]), 1.0), 422, "invalid_function",
     "undeclared name 'y'", {"line": 1, "column": 5}),
    ("expr_dunder", "/v1/value", c(E("__import__('os')", ["x"]), 1.0), 422, "invalid_function", "__import__",
     {"line": 1, "column": 1}),
    ("expr_attribute", "/v1/value", c(E("x.T", ["x"]), 1.0), 422, "invalid_function", "attribute access", {}),
    ("expr_unknown_function", "/v1/value", c(E("frob(x)", ["x"]), 1.0), 422, "invalid_function",
     "unknown function 'frob'", {}),
    ("graph_unknown_op", "/v1/value", c(graph([{"id": "a", "op": "frob", "inputs": ["x"]}]), 1.0), 422,
     "invalid_function", "node 'a': unknown op 'frob'", {"node": "a"}),
    ("graph_dangling_reference", "/v1/value", c(graph([{"id": "a", "op": "neg", "inputs": ["zz"]}]), 1.0), 422,
     "invalid_function", "refers to 'zz'", {"node": "a"}),
    ("graph_cycle", "/v1/value", c(graph([{"id": "a", "op": "neg", "inputs": ["b"]},
                                          {"id": "b", "op": "neg", "inputs": ["a"]}]), 1.0), 422,
     "invalid_function", "node 'a'", {"node": "a"}),
    ("graph_wrong_arity", "/v1/value", c(graph([{"id": "a", "op": "add", "inputs": ["x"]}]), 1.0), 422,
     "invalid_function", "node 'a'", {"node": "a"}),
    ("graph_bad_attr", "/v1/value", c(graph([{"id": "a", "op": "reduce_sum", "inputs": ["x"],
                                              "attrs": {"axes": "all"}}]), [1.0]), 422, "invalid_function",
     "node 'a'", {"node": "a"}),
    ("graph_format_version", "/v1/value", {"function": {"graph": {**G_ADD, "format": "nabla.graph/9"}},
                                           "args": [1.0, 1.0]}, 422, "invalid_function",
     "unsupported graph format", {"field": "format"}),
    ("unknown_model", "/v1/grad", c({"model": "no_such_model"}, 1.0), 404, "not_found",
     "no model named 'no_such_model'", {"model": "no_such_model"}),
    ("unknown_model_route", "/v1/models/no_such_model/grad", {"args": [1.0]}, 404, "not_found",
     "no model named 'no_such_model'", {"model": "no_such_model"}),
    ("builtin_version_2", "/v1/grad", c({"model": "rosenbrock", "version": 2}, [1.0, 2.0]), 404, "not_found",
     "only version 1", {"model": "rosenbrock", "version": 2}),
    ("model_version_zero", "/v1/grad", c({"model": "rosenbrock", "version": 0}, [1.0, 2.0]), 422,
     "invalid_function", "version must be a positive integer", {}),
    ("model_ref_extra_key", "/v1/grad", c({"model": "rosenbrock", "tag": "x"}, [1.0, 2.0]), 422,
     "invalid_function", "unknown field", {}),
    ("function_in_model_route", "/v1/models/rosenbrock/grad", c(E("x", ["x"]), [1.0, 2.0]), 400,
     "invalid_request", "named in the path", {}),
    # --- arguments and shapes
    ("wrong_argument_count", "/v1/grad", c(E("sum(x * y)", ["x", "y"]), [1.0]), 400, "invalid_request",
     "takes 2 argument(s) ['x', 'y'], got 1", {"expected": ["x", "y"], "got": 1}),
    ("too_many_arguments", "/v1/value", c(E("x", ["x"]), 1.0, 2.0), 400, "invalid_request", "got 2", {"got": 2}),
    ("non_scalar_grad", "/v1/grad", c(E("x * 2", ["x"]), [1.0, 2.0]), 422, "not_differentiable",
     "the output has shape f64[2]; grad needs a scalar", {}),
    ("non_scalar_value_and_grad", "/v1/value_and_grad", c(E("x * 2", ["x"]), [1.0, 2.0]), 422,
     "not_differentiable", "scalar", {}),
    ("int_input_to_grad", "/v1/grad", c(E("sum(x)", ["x"]), b64(np.array([1, 2], np.int32))), 422,
     "not_differentiable", "x has dtype int32 and has no derivative", {}),
    ("bool_input_to_grad", "/v1/grad", c(E("sum(x)", ["x"]), [True, False]), 422, "not_differentiable",
     "dtype bool", {}),
    ("has_aux_without_pair", "/v1/grad", c(E("sum(x)", ["x"]), [1.0], has_aux=True), 422, "not_differentiable",
     "must return a pair", {}),
    ("shape_mismatch_expr", "/v1/value", c(E("a = x + 1\nb = a * y\nsum(b)", ["x", "y"]), [1.0, 2.0],
                                           [1.0, 2.0, 3.0]), 422, "shape_error",
     "line 2, column 5", {"line": 2, "column": 5, "kind": "shape"}),
    ("shape_mismatch_matmul_expr", "/v1/grad", c(E("sum(A @ x)", ["A", "x"]), [[1.0, 2.0]], [1.0, 2.0, 3.0]),
     422, "shape_error", "matmul", {"line": 1}),
    ("shape_mismatch_graph", "/v1/value", {"function": {"graph": G_ADD}, "args": [[1.0, 2.0], [1.0, 2.0, 3.0]]},
     422, "shape_error", "node 's' (add)", {"node": "s"}),
    ("shape_mismatch_graph_matmul", "/v1/value", c(graph([{"id": "m", "op": "matmul", "inputs": ["x", "x"]}]),
                                                   [1.0, 2.0]), 422, "shape_error", "node 'm'", {"node": "m"}),
    ("shape_mismatch_model", "/v1/grad", c({"model": "tutorial_logreg"}, [1.0, 2.0], 0.0), 422, "invalid_argument",
     "W: expected f32[3], got f32[2]", {"path": "W", "expected": "f32[3]", "got": "f32[2]"}),
    ("builtin_model_missing_key", "/v1/grad", c({"model": "mlp_classifier"}, {"W1": [[1.0]]}, [[1.0]], [0.0]),
     422, "invalid_argument", "KeyError: 'b1'", {}),
    ("builtin_model_wrong_structure", "/v1/grad", c({"model": "mlp_classifier"}, [1.0], [[1.0]], [0.0]), 422,
     "invalid_argument", "AttributeError", {}),
    ("singular_matrix", "/v1/value", c(E("linalg.inv(x)", ["x"]), [[1.0, 2.0], [2.0, 4.0]]), 422,
     "invalid_argument", "Singular matrix", {}),
    ("string_leaf", "/v1/value", c(E("x", ["x"]), {"a": [1.0, "one"]}), 422, "invalid_argument",
     "x.a[1]: unexpected string 'one'", {"path": "x.a[1]"}),
    ("string_leaf_in_tangent", "/v1/jvp", c(E("x", ["x"]), 1.0, tangents=["one"]), 422, "invalid_argument",
     "tangents.x", {"path": "tangents.x"}),
    ("integer_too_large", "/v1/value", c(E("x", ["x"]), [1.0, 10**400]), 422, "invalid_argument",
     "too large", {"path": "x[1]"}),
    ("bad_base64", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "float32", "shape": [2],
                                                               "data": "!!not base64!!"}}), 422,
     "invalid_argument", "data is not valid base64", {"path": "x"}),
    ("array_bad_dtype", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "complex64", "shape": [1],
                                                                   "data": "AAAAAAAAAAA="}}), 422,
     "invalid_argument", "unsupported dtype 'complex64'", {"path": "x", "dtype": "complex64"}),
    ("array_missing_fields", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "float32"}}), 422,
     "invalid_argument", "has exactly dtype, shape and data", {"path": "x"}),
    ("array_extra_key", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "float32", "shape": [], "data": ""},
                                                        "x": 1}), 422, "invalid_argument", "only key", {}),
    ("array_bad_shape", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "float32", "shape": [-1],
                                                                   "data": ""}}), 422, "invalid_argument",
     "shape must be a list of non-negative integers", {}),
    ("array_byte_count", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "float32", "shape": [3],
                                                                    "data": base64.b64encode(b"\0" * 4).decode()}}),
     422, "invalid_argument", "4 bytes of data, but shape [3] of float32 needs 12", {"path": "x"}),
    ("array_unindexable_shape", "/v1/value", c(E("x", ["x"]), {"$array": {"dtype": "float32",
                                                                           "shape": [2**62, 4, 0], "data": ""}}),
     422, "invalid_argument", "not a valid array shape", {}),
    # --- shapes endpoint
    ("shapes_bad_spec", "/v1/shapes", {"function": E("x", ["x"]), "args": [5]}, 400, "invalid_request",
     "expected a shape spec", {}),
    ("shapes_bad_shape", "/v1/shapes", {"function": E("x", ["x"]), "args": [{"shape": [-1]}]}, 400,
     "invalid_request", "non-negative integers", {}),
    ("shapes_arg_count", "/v1/shapes", {"function": E("x", ["x"]), "args": []}, 400, "invalid_request",
     "takes 1 argument", {}),
    ("shapes_mismatch", "/v1/shapes", {"function": E("A @ x", ["A", "x"]),
                                       "args": [{"shape": [3, 2]}, {"shape": [3]}]}, 422, "shape_error",
     "contracted dimensions differ", {"line": 1}),
    ("shapes_extra_field", "/v1/shapes", {"function": E("x", ["x"]), "args": [{"shape": []}], "dtype": "float32"},
     400, "invalid_request", "unknown field", {}),
]


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("errors"), log_level="error"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("name,path,body,status,error_type,fragment,detail", CASES, ids=[c[0] for c in CASES])
def test_bad_request(shared_client: TestClient, name: str, path: str, body: Any, status: int, error_type: str,
                     fragment: str, detail: dict[str, Any]) -> None:
    if isinstance(body, bytes):
        response = shared_client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = shared_client.post(path, json=body)
    assert response.status_code != 500, response.text
    assert_error(response, status, error_type, fragment, detail)


def test_method_not_allowed_and_unknown_paths(client: TestClient) -> None:
    assert_error(client.get("/v1/grad"), 405, "method_not_allowed", "not allowed")
    assert_error(client.get("/v1/nothing/here"), 404, "not_found")
    assert_error(client.put("/v1/models/rosenbrock"), 405, "method_not_allowed")


def test_errors_carry_the_callers_request_id(client: TestClient) -> None:
    response = client.post("/v1/grad", json=c(E("x * 2", ["x"]), [1.0, 2.0]), headers={"X-Request-ID": "req-42.a_b"})
    error = assert_error(response, 422, "not_differentiable")
    assert error["request_id"] == "req-42.a_b" == response.headers["x-request-id"]
    # an unusable id is replaced by a fresh one
    response = client.post("/v1/value", content=b"{", headers={"X-Request-ID": "has spaces and / slashes",
                                                                 "content-type": "application/json"})
    error = assert_error(response, 400, "invalid_request")
    assert error["request_id"] != "has spaces and / slashes" and len(error["request_id"]) == 32


def test_error_counts_by_type_reach_the_metrics(client: TestClient) -> None:
    client.post("/v1/grad", json=c(E("x * 2", ["x"]), [1.0, 2.0]))
    client.post("/v1/grad", json=c({"model": "nope"}, 1.0))
    client.post("/v1/value", content=b"{", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    for error_type in ("not_differentiable", "not_found", "invalid_request"):
        assert f'nabla_errors_total{{type="{error_type}"}} 1.0' in text


# ----------------------------------------------------------------------------- no request is a 500

_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                  st.floats(allow_nan=False, allow_infinity=False),  # JSON has no infinities
                  st.text(max_size=4), st.sampled_from(["NaN", "Infinity", "$array", "float32", "x"]))
_KEYS = st.sampled_from(["$array", "dtype", "shape", "data", "expr", "params", "graph", "model", "version", "a",
                         "order", "modes", "eps"])
_JSON = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=10)
_ATOM = st.sampled_from(["x", "y", "1", "2.5", "0", "(2, 3)", "[0, 1]", "None", "True", "x[0]", "x[:, None]"])
_FUNCTIONS = ["sum", "exp", "log", "sqrt", "reshape", "matmul", "concatenate", "where", "take", "cumsum", "max",
              "linalg.inv", "linalg.solve", "einsum", "zeros", "one_hot", "logsumexp", "stop_gradient", "clip"]
_EXPR = st.recursive(_ATOM, lambda inner: st.one_of(
    st.builds(lambda f, args: f"{f}({', '.join(args)})", st.sampled_from(_FUNCTIONS), st.lists(inner, max_size=3)),
    st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(["+", "-", "*", "/", "**", "@", "%", "<"]),
              inner)), max_leaves=5)
_ARG = st.one_of(st.floats(-2, 2), st.lists(st.floats(-2, 2), min_size=1, max_size=3),
                 st.just([[1.0, 2.0], [3.0, 4.0]]), st.just(b64(np.array([0, 1], np.int32))), _JSON)
_OPTIONS = st.fixed_dictionaries({}, optional={
    "argnums": _JSON, "has_aux": _JSON, "order": st.one_of(st.integers(-1, 3), _JSON), "tangents": _JSON,
    "cotangent": _JSON, "mode": _JSON, "check": _JSON, "dtype": st.sampled_from(["float32", "float64", "x"]),
    "encoding": st.sampled_from(["json", "base64"])})
_TRANSFORMS = st.sampled_from(["value", "grad", "value_and_grad", "jvp", "vjp", "jacobian", "hessian", "check_grads"])
_MODELS = st.sampled_from([{"model": m} for m in ("rosenbrock", "mlp_classifier", "tutorial_logreg",
                                                  "linear_regression", "logistic_regression")])


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(transform=_TRANSFORMS, function=st.one_of(st.builds(lambda e: {"expr": e, "params": ["x", "y"]}, _EXPR),
                                                  _MODELS, _JSON),
       args=st.lists(_ARG, max_size=3), options=_OPTIONS)
def test_no_request_is_a_500(shared_client: TestClient, transform: str, function: Any, args: list[Any],
                             options: dict[str, Any]) -> None:
    response = shared_client.post(f"/v1/{transform}", json={"function": function, "args": args, **options})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error(response, response.status_code, response.json()["error"]["type"])
    else:
        strict_json(response.text)
