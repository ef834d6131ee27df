"""Errors a caller of the HTTP API can act on: integer inputs to a derivative and non-scalar
outputs of grad are answered with advice in the service's terms (JSON numbers, $array, argnums,
sum(...), /v1/jacobian), chosen by the engine's exception type and its attributes, never by
its message, whose Python advice (astype, allow_int, jacrev) is for engine users."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _service_support import assert_error, b64, expr
from fastapi.testclient import TestClient

import engine as jax
import engine.numpy as jnp
from engine.errors import DifferentiationError, IntegerInputError, NonScalarOutputError
from service.error_map import to_api_error

PYTHON_ADVICE = ("astype", "allow_int", "jacrev", ".sum()", "jnp.")


def post(client: TestClient, transform: str, function: dict[str, Any], *args: Any, **options: Any) -> Any:
    return client.post(f"/v1/{transform}", json={"function": function, "args": list(args), **options})


def i32(values: Any) -> dict[str, Any]:
    return b64(np.asarray(values, np.int32))


def assert_no_python_advice(error: dict[str, Any]) -> None:
    for fragment in PYTHON_ADVICE:
        assert fragment not in error["message"], (fragment, error["message"])


# ----------------------------------------------------------------------------- the engine's side


def test_integer_input_error_carries_argnum_dtype_path_and_parameter_name() -> None:
    def loss(x: Any, params: Any) -> Any:
        return jnp.sum(params["layers"][1]["W"] * x)

    params = {"layers": [{"W": jnp.ones(2)}, {"W": jnp.arange(2)}]}
    with pytest.raises(IntegerInputError) as info:
        jax.grad(loss, argnums=1)(2.0, params)
    e = info.value
    assert isinstance(e, DifferentiationError) and jax.IntegerInputError is IntegerInputError
    assert (e.argnum, e.dtype, e.path, e.param, e.transform) == (1, np.dtype("int32"), ("layers", 1, "W"), "params",
                                                                   "grad")
    # the Python-facing message is as it was
    assert "argument 1 at leaf ['layers'][1]['W'] has dtype int32" in str(e) and "allow_int=True" in str(e)


def test_an_expression_names_its_parameters_and_jacrev_raises_the_same_type() -> None:
    program = jax.compile_expression("x * n", ["x", "n"])
    with pytest.raises(IntegerInputError) as info:
        jax.jacrev(program, argnums=(0, 1))(jnp.ones(2), jnp.arange(2))
    assert (info.value.argnum, info.value.param, info.value.path, info.value.transform) == (1, "n", (), "jacrev")
    # a function without named positional parameters: no name, still the position
    with pytest.raises(IntegerInputError) as info:
        jax.grad(lambda *args: jnp.sum(args[0] * 1.0))(jnp.arange(2))
    assert (info.value.argnum, info.value.param) == (0, None)


def test_non_scalar_output_error_carries_shape_and_dtype() -> None:
    with pytest.raises(NonScalarOutputError) as info:
        jax.value_and_grad(lambda x: x * 2)(jnp.ones((2, 3)))
    assert (info.value.shape, info.value.dtype) == ((2, 3), np.dtype("float32"))
    assert isinstance(info.value, DifferentiationError) and jax.NonScalarOutputError is NonScalarOutputError
    assert "Reduce it to a scalar (e.g. `.sum()`" in str(info.value)  # unchanged for engine users


def test_the_service_reads_attributes_not_messages() -> None:
    error = to_api_error(IntegerInputError("any text at all", argnum=2, dtype=np.dtype("int64"),
                                           path=("layers", 0, "W"), param="params"))
    assert error is not None and (error.status, error.type) == (422, "not_differentiable")
    assert error.message == ("params.layers[0].W has dtype int64 and has no derivative: send it as JSON numbers "
                             "or a float $array, or leave params out of argnums")
    assert error.detail == {"argnum": 2, "dtype": "int64", "path": "params.layers[0].W"}
    error = to_api_error(IntegerInputError("", argnum=1, dtype=np.dtype("bool"), path=("a b",)))
    assert error is not None and error.message.startswith("args[1]['a b'] has dtype bool")
    error = to_api_error(NonScalarOutputError("any text", shape=(4, 1), dtype=np.dtype("float32")))
    assert error is not None and error.type == "not_differentiable"
    assert error.message == ("the output has shape f32[4,1]; grad needs a scalar: wrap the expression in sum(...), "
                             "or use /v1/jacobian or /v1/vjp")
    assert error.detail == {"shape": [4, 1], "dtype": "float32"}
    # other differentiation errors keep the generic row
    generic = to_api_error(DifferentiationError("with has_aux=True the function must return a pair"))
    assert generic is not None and generic.type == "not_differentiable" and "pair" in generic.message


# ----------------------------------------------------------------------------- over HTTP


def test_integer_input_is_named_by_its_parameter(client: TestClient) -> None:
    response = post(client, "grad", expr("sum(x)", ["x"]), i32([1, 2]))
    error = assert_error(response, 422, "not_differentiable",
                         "x has dtype int32 and has no derivative: send it as JSON numbers or a float $array, "
                         "or leave it out of argnums", {"argnum": 0, "dtype": "int32", "path": "x"})
    assert_no_python_advice(error)


def test_integer_leaf_inside_a_pytree_parameter(client: TestClient) -> None:
    response = post(client, "grad", expr("sum(params['W']) * y", ["params", "y"]), {"W": i32([1, 2]), "b": 1.0}, 2.0)
    error = assert_error(response, 422, "not_differentiable",
                         "params.W has dtype int32 and has no derivative: send it as JSON numbers or a float "
                         "$array, or leave params out of argnums", {"argnum": 0, "dtype": "int32", "path": "params.W"})
    assert_no_python_advice(error)


def test_booleans_and_a_later_argnum_and_the_jacobian(client: TestClient) -> None:
    assert_error(post(client, "grad", expr("sum(x)", ["x"]), [True, False]), 422, "not_differentiable",
                 "x has dtype bool and has no derivative", {"argnum": 0, "dtype": "bool"})
    assert_error(post(client, "value_and_grad", expr("sum(x * y)", ["x", "y"]), [1.0], i32([3]), argnums=[0, 1]),
                 422, "not_differentiable", "y has dtype int32", {"argnum": 1, "path": "y"})
    error = assert_error(post(client, "jacobian", expr("x * n", ["x", "n"]), [1.0, 2.0], i32([1, 2]), argnums=[0, 1]),
                         422, "not_differentiable", "n has dtype int32 and has no derivative", {"argnum": 1})
    assert_no_python_advice(error)
    # leaving it out of argnums, as advised, works
    response = post(client, "grad", expr("sum(x * y)", ["x", "y"]), [1.0], i32([3]), argnums=0)
    assert response.status_code == 200 and response.json()["grad"] == [3.0], response.text


def test_integer_input_of_a_graph_function_is_named_by_its_position(client: TestClient) -> None:
    graph = {"format": "nabla.graph/1", "params": ["x"],
             "nodes": [{"id": "s", "op": "reduce_sum", "inputs": ["x"], "attrs": {"axes": [0]}}], "outputs": ["s"]}
    assert_error(post(client, "grad", {"graph": graph}, i32([1, 2])), 422, "not_differentiable",
                 "args[0] has dtype int32 and has no derivative", {"argnum": 0, "path": "args[0]"})


def test_non_scalar_output_of_grad(client: TestClient) -> None:
    error = assert_error(post(client, "grad", expr("x * 2", ["x"]), [1.0, 2.0]), 422, "not_differentiable",
                         "the output has shape f64[2]; grad needs a scalar: wrap the expression in sum(...), "
                         "or use /v1/jacobian or /v1/vjp", {"shape": [2], "dtype": "float64"})
    assert_no_python_advice(error)
    assert_error(post(client, "value_and_grad", expr("x * 2", ["x"]), [[1.0, 2.0]], dtype="float32"), 422,
                 "not_differentiable", "the output has shape f32[1,2]", {"shape": [1, 2], "dtype": "float32"})
    # the advice works: the sum is a scalar, and the jacobian takes the vector as it is
    assert post(client, "grad", expr("sum(x * 2)", ["x"]), [1.0, 2.0]).json()["grad"] == [2.0, 2.0]
    jacobian = post(client, "jacobian", expr("x * 2", ["x"]), [1.0, 2.0]).json()["jacobian"]
    assert jacobian == [[2.0, 0.0], [0.0, 2.0]]
