"""The engine side of service hardening (issue 10): each test states one behaviour.

1. Expression language: integers are exact 64-bit values up to ±2**53 and refused beyond; every
   integer that becomes a size, count, index or exponent is checked before NumPy sees it.
2. JSON graphs: values their dtype cannot hold are refused when the graph is registered, and
   everything the serialiser writes is strict JSON that reads back exactly.
3. einsum: malformed subscripts are typed engine errors in every front end.
4. The optimiser stays linear on long chains (5,000 nodes) and handles (x - x) ** 2.
5. Duplicate argnums are refused, as JAX refuses them.
6. x.at[idx].multiply(y) with repeated indices refuses its derivative in y.
7. Error types: limits are LimitExceeded, graph shape/dtype faults ShapeError/DtypeError, so a
   caller maps them by type, never by message text.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import numpy as np
import pytest

import engine
import engine.numpy as jnp
from engine.array import Array
from engine.core import element_budget
from engine.errors import (
    DifferentiationError,
    DtypeError,
    EngineError,
    InvalidArgumentError,
    ShapeError,
)
from engine.expr import ExprDtypeError, ExprError, ExprLimitError, ExprShapeError, compile_expression
from engine.limits import LimitExceeded, Limits
from engine.optimize import optimize
from engine.serialize import (
    GraphDtypeError,
    GraphFormatError,
    GraphFunction,
    GraphLimitError,
    GraphShapeError,
    load_graph,
)

X5 = np.arange(5.0, dtype=np.float32)



def run(source: str, *args: Any, params: tuple[str, ...] = ("x",), limits: Limits | None = None) -> Any:
    return compile_expression(source, list(params), limits or Limits())(*(args or (X5,)))


def refused(source: str, *args: Any, params: tuple[str, ...] = ("x",)) -> ExprError:
    with pytest.raises(ExprError) as info:
        run(source, *args, params=params)
    return info.value


def doc(*nodes: dict[str, Any], constants: dict[str, Any] | None = None, params: Any = ("x",)) -> dict[str, Any]:
    d = {"format": "nabla.graph/1", "params": list(params), "nodes": list(nodes), "outputs": [nodes[-1]["id"]]}
    if constants is not None:
        d["constants"] = constants
    return d


def node(id: str, op: str, *inputs: Any, **attrs: Any) -> dict[str, Any]:
    return {"id": id, "op": op, "inputs": list(inputs), "attrs": attrs}


ADD_C = node("a", "add", "x", "c")

# ----------------------------------------------------------------------------- 1. the expression language


def test_integer_constant_arithmetic_is_exact_beyond_int32():
    """2**32 was computed in int32 and wrapped to 0; integers are now exact (int64)."""
    np.testing.assert_array_equal(np.asarray(run("2**32 + x")), np.float32(2**32) + X5)
    out = run("2**32")
    assert (out.dtype, int(out)) == (np.dtype("int64"), 2**32)
    assert int(run("(2**31 + 1) * 3 - 7 // 2 + 10 % 4")) == (2**31 + 1) * 3 - 3 + 2
    np.testing.assert_array_equal(np.asarray(run("-(2**53) + x")), np.float32(-(2**53)) + X5)  # was 0 + x


@pytest.mark.parametrize("source, line, col", [
    ("x + 2**60", 1, 5), ("x + 2**30 * 2**30", 1, 5), ("y = x\nz = 2**53 + 1\ny + z", 2, 5),
    ("x * (-(2**53) - 1)", 1, 6), ("x + 9007199254740993", 1, 5),
])
def test_integers_beyond_2_to_the_53_are_refused_at_their_line_and_column(source, line, col):
    error = refused(source)
    assert (error.kind, error.line, error.col) == ("value", line, col), str(error)
    assert "2**53" in str(error)


def test_integer_division_by_zero_is_a_value_error():
    assert refused("x + 7 // 0").kind == "value"
    assert refused("x + 7 % 0").kind == "value"


@pytest.mark.parametrize("source", ["x[2**53]", "x[2**32]", "x[[2**32]]", "take(x, array([2**32]))",
                                    "x[array([1, 2**40])]"])
def test_an_index_beyond_int32_is_out_of_bounds_not_wrapped_to_zero(source):
    """x[2**53] returned x[0]: index arrays were narrowed to int32 before their bounds were checked."""
    error = refused(source)
    assert isinstance(error, ExprShapeError) and isinstance(error, ShapeError)
    assert re.search(r"index \d{10,} is out of bounds for axis 0 with size 5", str(error)), str(error)


def test_index_arrays_are_checked_before_they_are_narrowed_in_python_too():
    for index in (np.array([2**32]), np.asarray(2**40), Array(np.asarray([3, 2**33], np.int64))):
        with pytest.raises(IndexError, match=r"index \d{10,} is out of bounds"):
            jnp.asarray(X5)[index]
    np.testing.assert_array_equal(np.asarray(jnp.asarray(X5)[np.array([-5, 4])]), [0.0, 4.0])


def test_integer_data_beyond_int32_becomes_int64_arrays():
    out = run("array([2**40, 1])")
    assert out.dtype == np.int64 and out.tolist() == [2**40, 1]
    out = run("arange(2**40, 2**40 + 3)")
    assert out.dtype == np.int64 and out.tolist() == [2**40, 2**40 + 1, 2**40 + 2]


@pytest.mark.parametrize("source, col", [("power(x, 2**53)", 10), ("float_power(x, 5000)", 16), ("x ** (2**40)", 7),
                                         ("n = 2**53\nx ** n", 6)])
def test_huge_integer_exponents_are_limit_errors(source, col):
    """power(x, 2**53) gave ones (the exponent wrapped to 0)."""
    error = refused(source)
    assert isinstance(error, ExprLimitError) and isinstance(error, LimitExceeded)
    assert (error.kind, error.limit, error.maximum, error.col) == ("limit", "max_integer_power", 1000, col)


@pytest.mark.parametrize("source, kind, limit", [
    ("zeros((2**53, 4, 0))", "limit", "max_array_elements"),  # had shape [0, 4, 0] (2**62: refused as a value)
    ("zeros((10**7, 10**7, 0))", "limit", "max_array_elements"),
    ("ones((" + "1, " * 33 + "))", "limit", "max_dimensions"),
    ("broadcast_to(x, (10**8, 0, 5))", "limit", "max_array_elements"),
    ("eye(2**32, 0)", "limit", "max_array_elements"),
    ("zeros((-3,))", "value", None),
    ("zeros(2.5)", "value", None),
    ("reshape(x, (-2, 1))", "value", None),
    ("eye(-1)", "value", None),
    ("linspace(0, 1, -5)", "value", None),
    ("nn.one_hot(x, -1)", "value", None),
    ("repeat(x, 2**32)", "limit", "max_repeats"),  # 2**32 was 0: an empty result
    ("tile(x, 2**32)", "limit", "max_repeats"),
])
def test_shape_dimensions_and_counts_are_checked_before_allocation(source, kind, limit):
    error = refused(source)
    assert (error.kind, error.line, error.col) == (kind, 1, 1), str(error)
    assert isinstance(error, LimitExceeded) == (kind == "limit")
    if limit is not None:
        assert error.limit == limit


def test_valid_shapes_and_counts_still_work():
    assert run("zeros((3, 0, 2))").shape == (3, 0, 2)
    assert run("reshape(x, (-1, 1))").shape == (5, 1)
    assert run("zeros(argmax(x))").shape == (4,)
    assert run("ones((" + "1, " * 32 + "))").ndim == 32
    assert run("eye(3, 2)").shape == (3, 2)


# ----------------------------------------------------------------------------- 2. the graph format


@pytest.mark.parametrize("dtype, data, shown", [
    ("int8", [1, 1000], "1000 at [1]"),
    ("uint8", [[0], [-1]], "-1 at [1, 0]"),
    ("int64", [2**63], "9223372036854775808 at [0]"),
    ("uint64", [2**64], "18446744073709551616 at [0]"),
    ("int32", ["Infinity"], "Infinity at [0]"),
    ("int32", [1.5], "1.5 at [0]"),
    ("float32", [10**400], r"1000000000\d*\.\.\. \(401 digits\) at \[0\]"),
    ("float32", [1.0, 1e39], r"1e\+39 at \[1\]"),
    ("float16", 70000, "70000"),
    ("bool", [True, 2], "2 at [1]"),
])
def test_constants_outside_their_dtype_are_refused_at_registration(dtype, data, shown):
    """NumPy raised OverflowError (a crash), wrapped (int64 2**63) or overflowed to infinity later."""
    with pytest.raises(GraphFormatError) as info:
        GraphFunction(doc(ADD_C, constants={"c": {"dtype": dtype, "data": data}}))
    error = info.value
    assert (error.node, error.field) == (None, "constants.c")
    pattern = shown if "\\" in shown else re.escape(shown)
    assert re.search(rf"constants\.c: {pattern} does not fit {dtype}", str(error)), str(error)


@pytest.mark.parametrize("literal", [{"literal": 1000, "dtype": "int8"}, {"literal": -1, "dtype": "uint8"},
                                     {"literal": 2**63, "dtype": "int64"}, {"literal": "Infinity", "dtype": "int32"},
                                     {"literal": 10**400, "dtype": "float32"}, {"literal": 1e5, "dtype": "float16"},
                                     10**400])
def test_literals_outside_their_dtype_are_refused_at_registration(literal):
    with pytest.raises(GraphFormatError, match=r"node 'a': input 1: .* does not fit") as info:
        GraphFunction(doc(node("a", "add", "x", literal)))
    assert (info.value.node, info.value.field) == ("a", "inputs[1]")


def test_the_extremes_of_each_dtype_are_accepted():
    constants = {"i": {"dtype": "int64", "data": [2**63 - 1, -2**63]}, "u": {"dtype": "uint64", "data": [2**64 - 1]},
                 "h": {"dtype": "float16", "data": [65504, "Infinity", "-Infinity", "NaN"]},
                 "b": {"dtype": "bool", "data": [True, 0]}, "f": {"dtype": "float32", "data": [3.4e38, 1e-45]}}
    fn = GraphFunction(doc(node("a", "neg", "x"), constants=constants))
    assert fn.constants["i"].tolist() == [2**63 - 1, -2**63] and fn.constants["u"].tolist() == [2**64 - 1]
    assert fn.constants["h"][0] == 65504 and np.isnan(fn.constants["h"][3])


def test_an_untyped_literal_that_does_not_fit_the_operands_is_a_dtype_error_when_run():
    """A literal without a dtype takes its operands' dtype, known only when the graph runs."""
    fn = GraphFunction(doc(node("a", "add", "x", 1000)))
    assert float(fn(np.float32(1.0))) == 1001.0
    with pytest.raises(GraphDtypeError, match=r"node 'a': input 1: 1000 does not fit int8") as info:
        fn(jnp.asarray(np.ones(2, np.int8)))
    assert isinstance(info.value, DtypeError) and (info.value.node, info.value.field) == ("a", "inputs[1]")


def test_a_constant_with_33_dimensions_is_a_limit_error():
    for spec in ({"$array": {"dtype": "float32", "shape": [1] * 33, "data": "AAAAAA=="}},
                 {"dtype": "float32", "data": json.loads("[" * 33 + "1" + "]" * 33)}):
        with pytest.raises(GraphLimitError) as info:
            GraphFunction(doc(ADD_C, constants={"c": spec}))
        assert (info.value.limit, info.value.maximum, info.value.field) == ("max_dimensions", 32, "constants.c")


def test_a_zero_size_shape_with_an_absurd_dimension_is_a_limit_error():
    """As in the expression language: [2**62, 4, 0] is refused, not an array of shape [2**62, 4, 0]."""
    spec = {"$array": {"dtype": "float32", "shape": [2**62, 4, 0], "data": ""}}
    with pytest.raises(GraphLimitError, match=r"product of the non-zero dimensions") as info:
        GraphFunction(doc(ADD_C, constants={"c": spec}))
    assert info.value.limit == "max_array_elements"
    with pytest.raises(GraphLimitError, match=r"product of the non-zero dimensions is 100000000000000") as info:
        GraphFunction(doc(node("b", "broadcast_to", "x", shape=[10**7, 10**7, 0])))
    assert (info.value.node, info.value.field, info.value.limit) == ("b", "attrs.shape", "max_array_elements")
    assert GraphFunction(doc(node("b", "broadcast_to", "x", shape=[10**7, 0])))(np.float32(1)).shape == (10**7, 0)


def _special_values(x):
    c = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    y = jnp.where(x > 0, x * c + jnp.float32(np.nan) * 0, -np.inf)
    h = jnp.asarray(np.array([np.inf, 2.0], np.float16))
    return y, jnp.logical_and(x > 0, True), jnp.float32(np.inf), h * 2


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_non_finite_values_are_written_as_strict_json_and_read_back_exactly(encoding):
    """NaN and infinities in constants, literals and outputs (and a bool literal) round-trip."""
    graph = engine.make_graph(_special_values)(jnp.ones(4))
    document = graph.to_json(encoding=encoding)
    text = json.dumps(document, allow_nan=False)  # no bare NaN/Infinity tokens anywhere
    loaded = load_graph(json.loads(text))
    assert json.dumps(loaded.to_json(encoding=encoding), allow_nan=False) == text
    for got, want in zip(loaded(jnp.ones(4)), graph(jnp.ones(4)), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


# ----------------------------------------------------------------------------- 3. einsum


@pytest.mark.parametrize("spec, error, message", [
    ("..", InvalidArgumentError, r"'\.' appears only as one '\.\.\.' per operand and output"),
    ("...i...", InvalidArgumentError, r"'\.' appears only as one '\.\.\.'"),
    ("...ijk", ShapeError, r"operand 0 has 2 dimension\(s\), fewer than the 3"),
    ("ij$", InvalidArgumentError, r"'\$' cannot appear"),
    ("ij->j->i", InvalidArgumentError, r"at most one '->'"),
    ("ij->ii", InvalidArgumentError, r"output subscript\(s\) 'i' appear more than once"),
    ("ij->k", InvalidArgumentError, r"output subscript\(s\) 'k' name no axis"),
    ("ij,jk->ik", ShapeError, r"names 2 operand\(s\), but got 1"),
    ("ijk", ShapeError, r"operand 0 has 2 dimension\(s\) but its subscripts 'ijk' name 3"),
])
def test_malformed_einsum_subscripts_are_typed_engine_errors(spec, error, message):
    """einsum('...', x) raised NotImplementedError, untyped."""
    with pytest.raises(error, match=message) as info:
        jnp.einsum(spec, jnp.ones((2, 3)))
    assert isinstance(info.value, EngineError) and isinstance(info.value, ValueError)


def test_einsum_errors_in_programs_and_graphs():
    assert refused("einsum('..', x)").kind == "value"
    assert run("einsum('...ij->...ji', x)", jnp.ones((4, 2, 3))).shape == (4, 3, 2)  # '...' since issue 15
    assert isinstance(refused("einsum('ijk', x)"), ExprShapeError)
    for spec, inputs, message in [("ij->ii", ["x"], "repeats a letter"), ("ii->i", ["x"], "repeats a letter"),
                                  ("ij,jk->ik", ["x"], r"names 2 operand\(s\), but the node has 1 input"),
                                  ("ij->k", ["x"], r"output letter\(s\) 'k'")]:
        with pytest.raises(GraphFormatError, match=message) as info:
            GraphFunction(doc(node("e", "einsum", *inputs, spec=spec)))
        assert (info.value.node, info.value.field) == ("e", "attrs.spec")
    fn = GraphFunction(doc(node("e", "einsum", "x", spec="ijk->i")))
    with pytest.raises(GraphShapeError, match=r"node 'e' \(einsum\)"):
        fn(jnp.ones((2, 3)))
    assert run("einsum('ij->ji', x)", jnp.ones((2, 3))).shape == (3, 2)


# ----------------------------------------------------------------------------- 4. long chains and the optimiser


def chain(n: int, step: Any) -> GraphFunction:
    """x -> step -> step -> ... n nodes; step(k, previous id) gives the k-th node's op and inputs."""
    nodes, prev = [], "x"
    for k in range(n):
        op, inputs = step(k, prev)
        nodes.append(node(f"n{k}", op, *inputs))
        prev = f"n{k}"
    return GraphFunction(doc(*nodes))


def optimised_grad(fn: Any, x: Any, order: int = 1) -> tuple[Any, float]:
    """The gradient as the service computes it: a traced graph, optimised, then run."""
    g = fn
    for _ in range(order):
        g = engine.grad(g)
    graph = engine.make_graph(g)(x)
    start = time.perf_counter()
    optimised = optimize(graph)
    return optimised(x), time.perf_counter() - start


def test_grad_of_a_5000_node_sin_chain_matches_the_closed_form_and_finite_differences(x64):
    """The canonicaliser carried a monomial as long as the chain (quadratic: minutes); its forms
    are bounded now, so a 5,000-node chain is optimised in linear time."""
    fn, x = chain(5000, lambda k, a: ("sin", [a])), 0.3
    a, closed = x, 1.0
    for _ in range(5000):
        closed *= math.cos(a)
        a = math.sin(a)
    eager = float(engine.grad(fn)(np.float64(x)))
    optimised, seconds = optimised_grad(fn, np.float64(x))
    h = 1e-6
    fd = (float(fn(np.float64(x + h))) - float(fn(np.float64(x - h)))) / (2 * h)
    np.testing.assert_allclose([eager, float(optimised)], closed, rtol=1e-10)
    np.testing.assert_allclose(fd, closed, rtol=1e-6)
    assert seconds < 30, seconds  # was 66-92 s on the same machine


@pytest.mark.parametrize("step, closed", [
    (lambda k, a: ("mul", [a, "x"]), lambda x: 5001 * x ** 5000),  # x * x * ... = x**5001
    (lambda k, a: ("add", [a, "x"]), lambda x: 5001.0),  # 5001 x
    (lambda k, a: ("mul", [a, 0.999]) if k % 2 else ("add", [a, "x"]), None),  # a <- 0.999 a + x
], ids=["x**5001", "5001x", "affine"])
def test_grad_of_5000_node_arithmetic_chains_is_right(x64, step, closed):
    """x * x * ... gave an integer_pow of 5001, over max_integer_power: the optimised graph could
    not be sent back as JSON; powers in canonical forms are bounded by it now."""
    fn, x = chain(5000, step), np.float64(0.999)
    eager = float(engine.grad(fn)(x))
    optimised, _ = optimised_grad(fn, x)
    np.testing.assert_allclose(float(optimised), eager, rtol=1e-9)
    if closed is not None:
        np.testing.assert_allclose(eager, closed(0.999), rtol=1e-9)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # 2**5000 is infinite
def test_a_squaring_chain_does_not_overflow_the_optimiser(x64):
    """Squaring along a chain made exponents of 2**5000: OverflowError in the canonicaliser."""
    fn = chain(5000, lambda k, a: ("mul", [a, a]))  # x ** (2 ** 5000)
    graph = optimize(engine.make_graph(engine.grad(fn))(np.float64(1.0)))
    assert all(abs(e.attrs["y"]) <= Limits().max_integer_power for e in graph.eqns if e.prim.name == "integer_pow")
    assert float(graph(np.float64(1.0))) == float(engine.grad(fn)(np.float64(1.0))) == math.inf  # 2**5000
    loaded = load_graph(json.loads(json.dumps(graph.to_json(), allow_nan=False)))
    assert float(loaded(np.float64(1.0))) == math.inf


def test_second_derivatives_of_a_1000_node_chain_stay_bounded_in_time(x64):
    fn = chain(1000, lambda k, a: ("sin", [a]))
    x = np.float64(0.3)
    optimised, seconds = optimised_grad(fn, x, order=2)
    np.testing.assert_allclose(float(optimised), float(engine.grad(engine.grad(fn))(x)), rtol=1e-9)
    assert seconds < 30, seconds


def test_jit_of_x_minus_x_squared():
    """The canonicaliser's _factor returned None for the zero polynomial: a TypeError."""
    assert float(engine.jit(lambda x: (x - x) ** 2)(1.0)) == 0.0
    assert float(engine.jit(lambda x: (x - x) ** 3 + 3 * x)(2.0)) == 6.0
    assert float(engine.jit(engine.grad(lambda x: (x - x) ** 2 + x * x))(2.0)) == 4.0


# ----------------------------------------------------------------------------- 5. duplicate argnums


@pytest.mark.parametrize("transform", [engine.grad, engine.value_and_grad, engine.jacrev, engine.jacfwd,
                                       engine.hessian])
@pytest.mark.parametrize("argnums", [(0, 0), (0, 1, 0), (1, -1)])
def test_duplicate_argnums_are_refused_as_jax_refuses_them(transform, argnums):
    """grad(f, argnums=(0, 0)) returned (0.0, 3.0); JAX raises (a TypeError), and so do we,
    saying what is wrong."""
    name = transform.__name__
    with pytest.raises(DifferentiationError, match=rf"{name}: argnums .* names argument \d more than once"):
        transform(lambda x, y: x * y, argnums=argnums)(2.0, 3.0)


def test_distinct_argnums_in_any_order_still_work():
    dx, dy = engine.grad(lambda x, y: x * y, argnums=(1, 0))(2.0, 3.0)
    assert (float(dx), float(dy)) == (2.0, 3.0)


# ----------------------------------------------------------------------------- 6. multiply at repeated indices

_DUPS = np.array([1, 3, 1, 1])


@pytest.mark.parametrize("derivative", [
    lambda f, x, y: engine.grad(lambda v: jnp.sum(f(x, v)))(y),
    lambda f, x, y: engine.jvp(lambda v: f(x, v), (y,), (y,)),
    lambda f, x, y: engine.jacrev(lambda v: f(x, v))(y),
    lambda f, x, y: engine.jacfwd(lambda v: f(x, v))(y),
    lambda f, x, y: engine.hessian(lambda v: jnp.sum(f(x, v)))(y),
])
def test_multiply_at_repeated_indices_refuses_the_derivative_in_the_values(derivative):
    x, y = jnp.arange(1.0, 5.0), jnp.full((4,), 2.0)
    with pytest.raises(DifferentiationError, match=r"x.at\[idx\].multiply\(y\) cannot be differentiated with "
                                                   r"respect to y when idx selects an element more than once"):
        derivative(lambda x, y: x.at[_DUPS].multiply(y), x, y)
    np.testing.assert_array_equal(np.asarray(x.at[_DUPS].multiply(y)), [1.0, 16.0, 3.0, 8.0])  # computing is fine
    # JAX: [1, 8, 1, 2] for the derivative in x
    np.testing.assert_array_equal(np.asarray(engine.grad(lambda x: jnp.sum(x.at[_DUPS].multiply(y)))(x)),
                                  [1.0, 8.0, 1.0, 2.0])


def test_multiply_at_unique_or_unknowable_indices():
    x, y = jnp.arange(1.0, 5.0), jnp.full((3,), 2.0)
    unique = np.array([3, 0, -3])  # -3 is 1: distinct elements
    np.testing.assert_array_equal(np.asarray(engine.grad(lambda v: jnp.sum(x.at[unique].multiply(v)))(y)),
                                  [4.0, 1.0, 2.0])
    traced = engine.jit(engine.grad(lambda v, i: jnp.sum(x.at[i].multiply(v))))
    with pytest.raises(DifferentiationError, match=r"idx is traced, so whether it selects an element more than once "
                                                   r"cannot be checked"):
        traced(y, jnp.asarray(unique))


# ----------------------------------------------------------------------------- 7. error types


def test_graph_error_classes_are_also_the_engine_classes_of_their_kind():
    assert issubclass(GraphLimitError, GraphFormatError) and issubclass(GraphLimitError, LimitExceeded)
    assert issubclass(GraphShapeError, GraphFormatError) and issubclass(GraphShapeError, ShapeError)
    assert issubclass(GraphDtypeError, GraphFormatError) and issubclass(GraphDtypeError, DtypeError)
    assert issubclass(ExprLimitError, ExprError) and issubclass(ExprLimitError, LimitExceeded)
    assert issubclass(ExprShapeError, ShapeError) and issubclass(ExprDtypeError, DtypeError)
    error = GraphLimitError("m", limit="max_nodes", value=7, maximum=5, node="n", field="nodes")
    assert (str(error), error.limit, error.value, error.maximum, error.node, error.field) == \
        ("m", "max_nodes", 7, 5, "n", "nodes")


@pytest.mark.parametrize("case, limit", [
    (lambda: GraphFunction(doc(*[node(f"n{k}", "exp", "x") for k in range(6)]), Limits(max_nodes=5)), "max_nodes"),
    (lambda: GraphFunction(doc(node("a", "add", "x", json.loads("[" * 70 + "]" * 70)))), "max_depth"),
    (lambda: GraphFunction(doc(ADD_C, constants={"c": {"data": [0.0] * 20}}), Limits(max_constant_elements=10)),
     "max_constant_elements"),
    (lambda: GraphFunction(doc(node("p", "integer_pow", "x", y=10**10))), "max_integer_power"),
    (lambda: GraphFunction(doc(node("r", "reshape", "x", shape=[1] * 40))), "max_dimensions"),
    (lambda: GraphFunction(doc(node("r", "broadcast_to", "x", shape=[2, 10**8]))), "max_array_elements"),
    (lambda: GraphFunction(doc(node("b", "broadcast_to", "x", shape=[10**6, 10**6])))(np.float32(1)),
     "max_array_elements"),
])
def test_every_graph_limit_is_a_graph_limit_error(case, limit):
    """The service mapped graph errors to 413 by finding "limit" in the message; now by type."""
    with pytest.raises(GraphLimitError) as info:
        case()
    assert isinstance(info.value, LimitExceeded) and info.value.limit == limit


def test_an_enclosing_element_budget_in_a_graph_is_a_graph_limit_error_naming_the_node():
    fn = GraphFunction(doc(node("c", "reshape", "x", shape=[3, 1]), node("m", "mul", "c", "x")))
    with element_budget(5), pytest.raises(GraphLimitError) as info:
        fn(jnp.ones(3))
    error = info.value
    assert (error.node, error.limit, error.value, error.maximum) == ("m", "max_array_elements", 9, 5)


def test_graph_shape_and_dtype_faults_are_shape_and_dtype_errors():
    with pytest.raises(GraphShapeError) as info:
        GraphFunction(doc(node("m", "mul", "x", "y"), params=["x", "y"]))(jnp.ones(3), jnp.ones(4))
    assert isinstance(info.value, ShapeError) and info.value.node == "m"
    with pytest.raises(GraphDtypeError) as info:
        GraphFunction(doc(node("a", "add", "x", {"literal": 1, "dtype": "int32"})))(jnp.ones(2))
    assert isinstance(info.value, DtypeError) and info.value.node == "a"
    declared = doc(node("a", "neg", "x"), params=[{"name": "x", "shape": [2], "dtype": "float32"}])
    with pytest.raises(GraphShapeError):
        GraphFunction(declared)(jnp.ones(3))
    with pytest.raises(GraphDtypeError):
        GraphFunction(declared)(jnp.ones(2, jnp.int32))


@pytest.mark.parametrize("source, limits, limit", [
    ("x + " * 10 + "x", Limits(max_source_chars=20), "max_source_chars"),
    ("-" * 100 + "x", None, "max_depth"),
    ("x + x + x + x", Limits(max_nodes=5), "max_nodes"),
    ("x ** 5000", None, "max_integer_power"),
    ("repeat(x, 10**6)", None, "max_repeats"),
    ("zeros((10**4, 10**4))", None, "max_array_elements"),
    ("outer(x, x)", Limits(max_array_elements=10), "max_array_elements"),  # the element budget in core
])
def test_every_program_limit_is_a_limit_exceeded_with_its_name(source, limits, limit):
    with pytest.raises(ExprLimitError) as info:
        run(source, limits=limits)
    error = info.value
    assert isinstance(error, LimitExceeded) and (error.kind, error.limit) == ("limit", limit)
    assert error.value > error.maximum


def test_program_shape_faults_are_shape_errors():
    error = refused("a = x + 1\na * y", X5, np.ones(3, np.float32), params=("x", "y"))
    assert isinstance(error, ExprShapeError) and (error.kind, error.line, error.col) == ("shape", 2, 1)

