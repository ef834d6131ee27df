"""Specification of the function formats: the JSON graph format `nabla.graph/1`, the expression
language, and the limits that guard both (docs/FORMATS.md describes them for clients).

1. Round trips: a function traced with make_graph, written with `to_json`, sent through
   `json.dumps`/`json.loads` and read back with `load_graph` computes exactly what the original
   computes, differentiates to exactly the same derivatives, prints the same and serialises again
   to the identical document (plain and base64 encodings); every document matches the published
   JSON Schema (engine/schemas/graph-v1.json).
2. Documents written by hand, as a client in another language would write them, evaluate and
   differentiate.
3. The tutorial's loss written in the expression language equals the traced Python version, in
   value and gradient.
4. A table of malicious and malformed programs and graphs: each is rejected with its own message
   (and, for programs, the line and column at fault), structural faults when the program or graph
   is constructed, before anything runs, and size faults by shape inference, before anything big
   is allocated. An audit hook checks that nothing is executed, imported or opened meanwhile.
5. The size of the graph of the n-th derivative of tanh and of the tutorial's polynomial, before
   and after `engine.optimize` (the table in docs/FORMATS.md comes from `python3
   tests/test_formats.py`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import engine as jax
import engine.numpy as jnp
from engine.core import element_budget
from engine.expr import ExprError, compile_expression
from engine.limits import LimitExceeded, Limits
from engine.serialize import SCHEMA_PATH, GraphFormatError, GraphFunction, load_graph
from engine.tree_util import tree_flatten, tree_unflatten

SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def x64():
    """float64 by default for the test (jax_enable_x64), restoring the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def same(actual: Any, expected: Any) -> None:
    """Bit-for-bit equal trees of arrays: same structure, shapes, dtypes and values (NaN == NaN)."""
    a_leaves, a_tree = tree_flatten(actual)
    e_leaves, e_tree = tree_flatten(expected)
    assert a_tree == e_tree
    for a, e in zip(a_leaves, e_leaves, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_array_equal(a, e)


def through_json(doc: dict[str, Any]) -> dict[str, Any]:
    """What a client receives: strict JSON text (no NaN/Infinity tokens), parsed again."""
    return json.loads(json.dumps(doc, allow_nan=False))


def assert_valid(doc: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


# ----------------------------------------------------------------------------- 1. round trips

TUTORIAL_INPUTS = jnp.array([[0.52, 1.12, 0.77],
                             [0.88, -1.08, 0.15],
                             [0.52, 0.06, -1.30],
                             [0.74, -2.49, 1.39]])
TUTORIAL_TARGETS = jnp.array([True, True, False, True])


def tutorial_params() -> tuple[Any, Any]:
    key = jax.random.key(0)
    key, W_key, b_key = jax.random.split(key, 3)
    return jax.random.normal(W_key, (3,)), jax.random.normal(b_key, ())


def tutorial_sigmoid(x):
    return 0.5 * (jnp.tanh(x / 2) + 1)


def tutorial_loss(W, b):
    """The tutorial's loss: its 4x3 inputs and targets are closure constants of the graph."""
    preds = tutorial_sigmoid(jnp.dot(TUTORIAL_INPUTS, W) + b)
    label_probs = preds * TUTORIAL_TARGETS + (1 - preds) * (1 - TUTORIAL_TARGETS)
    return -jnp.sum(jnp.log(label_probs))


MLP_PARAMS = {
    "layer1": {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.1, -0.2, 0.3, 0.0])},
    "layer2": {"w": jnp.linspace(0.5, -0.5, 8).reshape(4, 2), "b": jnp.array([0.05, -0.05])},
}
MLP_X = jnp.array([[0.3, -0.7, 1.1], [1.5, 0.2, -0.4]])


def mlp(params, x):
    h = jnp.tanh(x @ params["layer1"]["w"] + params["layer1"]["b"])
    out = h @ params["layer2"]["w"] + params["layer2"]["b"]
    return jnp.mean(jax.nn.log_softmax(out)[:, 0])


def indexing_and_friends(x, y):
    """gather, index_update (set/add/mul), einsum, concatenate, cumsum, where, reductions with keepdims."""
    idx = jnp.array([2, 0, 1])
    picked = x[idx, 1:]
    flipped = x[None, ..., ::-1]
    u = x.at[0, :].add(y[1:])
    u = u.at[1].set(2.0)
    u = u.at[idx, 0].mul(3.0)
    e = jnp.einsum("ij,kj->ik", x, u)
    c = jnp.concatenate([x, u, flipped[0]], axis=1)
    cs = jnp.cumsum(c, axis=1)
    w = jnp.where(cs > 0, cs, -0.5 * cs)
    r = (jnp.sum(w, axis=0, keepdims=True) + jnp.max(w, axis=1, keepdims=True).sum()
         + jnp.mean(e, axis=(0, 1), keepdims=True))
    return jnp.sum(r * r) / 100 + jnp.sum(picked ** 2) + jnp.prod(jnp.min(x, axis=0)) + jnp.sum(y[::2] ** 3)


INDEX_ARGS = (jnp.arange(12.0).reshape(3, 4) / 7 - 0.6, jnp.linspace(-1.0, 1.0, 5))


def float64_function(x, m):
    return jnp.sum(jnp.sin(x) * x ** 2) + jnp.log1p(jnp.vdot(x, m @ x)) + jnp.exp(-x[0]) / 3


@dataclass
class RoundTrip:
    name: str
    fun: Callable[..., Any]
    args: tuple[Any, ...]
    argnums: tuple[int, ...]
    x64: bool = False


def _round_trips() -> list[RoundTrip]:
    W, b = tutorial_params()
    leaves, tree = tree_flatten((MLP_PARAMS, MLP_X))

    def mlp_flat(*flat):
        return mlp(*tree_unflatten(tree, list(flat)))

    return [
        RoundTrip("tutorial_loss", tutorial_loss, (W, b), (0, 1)),
        RoundTrip("mlp", mlp_flat, tuple(leaves), tuple(range(len(leaves)))),
        RoundTrip("indexing", indexing_and_friends, INDEX_ARGS, (0, 1)),
        RoundTrip("float64", float64_function,
                  (np.array([0.3, -1.2, 0.7]), np.array([[2.0, 0.1, 0.0], [0.1, 1.0, 0.3], [0.0, 0.3, 1.5]])),
                  (0,), x64=True),
    ]


ROUND_TRIPS = _round_trips()


@pytest.fixture(params=ROUND_TRIPS, ids=[c.name for c in ROUND_TRIPS])
def case(request):
    c = request.param
    if not c.x64:
        yield c
        return
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield RoundTrip(c.name, c.fun, tuple(jnp.asarray(a) for a in c.args), c.argnums, True)
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_round_trip_evaluates_and_differentiates_like_the_original(case, encoding):
    graph = jax.make_graph(case.fun)(*case.args)
    doc = graph.to_json(encoding=encoding)
    assert_valid(doc)
    if case.x64:
        assert {p["dtype"] for p in doc["params"]} == {"float64"}
    loaded = load_graph(through_json(doc))

    same(loaded(*case.args), case.fun(*case.args))
    same(loaded(*case.args), graph(*case.args))
    same(jax.grad(loaded, case.argnums)(*case.args), jax.grad(case.fun, case.argnums)(*case.args))
    same(jax.jacrev(loaded, case.argnums[0])(*case.args), jax.jacrev(case.fun, case.argnums[0])(*case.args))
    if case.name != "mlp":  # the MLP's Hessian is 10 x 10 blocks; one block is enough
        same(jax.hessian(loaded)(*case.args), jax.hessian(case.fun)(*case.args))
    else:
        same(jax.hessian(loaded, 4)(*case.args), jax.hessian(case.fun, 4)(*case.args))


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_loaded_graph_prints_and_serialises_to_the_identical_document(case, encoding):
    graph = jax.make_graph(case.fun)(*case.args)
    doc = through_json(graph.to_json(encoding=encoding))
    loaded = load_graph(doc)
    assert str(loaded) == str(graph)
    again = loaded.to_json(encoding=encoding)
    assert again == doc
    assert_valid(again)
    # and once more through the other encoding and back
    other = "json" if encoding == "base64" else "base64"
    assert load_graph(through_json(loaded.to_json(encoding=other))).to_json(encoding=encoding) == doc


def test_documents_name_their_parts():
    W, b = tutorial_params()
    doc = jax.make_graph(tutorial_loss)(W, b).to_json()
    assert doc["format"] == "nabla.graph/1"
    assert doc["params"] == [{"name": "p0", "shape": [3], "dtype": "float32"},
                             {"name": "p1", "shape": [], "dtype": "float32"}]
    assert doc["constants"]["c0"] == {"dtype": "float32", "shape": [4, 3],
                                      "data": np.asarray(TUTORIAL_INPUTS).tolist()}
    assert [n["id"] for n in doc["nodes"]] == [f"n{k}" for k in range(len(doc["nodes"]))]
    assert doc["outputs"] == [doc["nodes"][-1]["id"]]
    # a graph read from a document with named params keeps the names
    named = {**doc, "params": [{**doc["params"][0], "name": "W"}, {**doc["params"][1], "name": "b"}],
             "nodes": [{**n, "inputs": [{"p0": "W", "p1": "b"}.get(i, i) if isinstance(i, str) else i
                                        for i in n["inputs"]]} for n in doc["nodes"]]}
    assert [p["name"] for p in load_graph(named).to_json()["params"]] == ["W", "b"]


def test_base64_leaves_are_little_endian_bytes():
    W, b = tutorial_params()
    doc = jax.make_graph(tutorial_loss)(W, b).to_json(encoding="base64")
    leaf = doc["constants"]["c0"]["$array"]
    assert leaf["dtype"] == "float32" and leaf["shape"] == [4, 3]
    raw = base64.b64decode(leaf["data"])
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(4, 3), np.asarray(TUTORIAL_INPUTS))


SPECIALS = np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)


def with_specials(x):
    c = jnp.asarray(SPECIALS)
    finite = jnp.where(jnp.isfinite(c), x * c, -x)
    return finite + jnp.minimum(x, jnp.inf) + jnp.where(x > 100, jnp.nan, 0.0), c * x


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_nan_and_infinities_survive_both_encodings(encoding):
    x = jnp.array([1.0, 2.0, -3.0, 200.0])
    graph = jax.make_graph(with_specials)(x)
    doc = graph.to_json(encoding=encoding)
    text = json.dumps(doc, allow_nan=False)  # strict JSON: no NaN or Infinity tokens
    if encoding == "json":
        assert doc["constants"]["c0"]["data"] == [1.5, "NaN", "Infinity", "-Infinity"]
    literals = [i["literal"] for n in doc["nodes"] for i in n["inputs"] if isinstance(i, dict)]
    assert "Infinity" in literals and "NaN" in literals
    assert_valid(doc)
    loaded = load_graph(json.loads(text))
    same(loaded(x), with_specials(x))
    assert np.isnan(np.asarray(loaded(x)[0])[3]) and np.isnan(np.asarray(loaded(x)[1])[1])
    assert loaded.to_json(encoding=encoding) == json.loads(text)


def test_integer_and_boolean_constants_round_trip(x64):
    table = np.array([[1, -2], [3, 4]], dtype=np.int64)
    mask = np.array([True, False])

    def f(x):
        return jnp.sum(jnp.where(mask, x * table[0], x[::-1])) + jnp.sum(x[table[1] - 3])

    x = jnp.array([0.5, -1.25])
    for encoding in ("json", "base64"):
        doc = jax.make_graph(f)(x).to_json(encoding=encoding)
        assert_valid(doc)
        loaded = load_graph(through_json(doc))
        same(loaded(x), f(x))
        same(jax.grad(loaded)(x), jax.grad(f)(x))


def test_optimised_graphs_round_trip_too():
    W, b = tutorial_params()
    hess = jax.optimize(jax.make_graph(jax.hessian(tutorial_loss))(W, b))
    assert_valid(hess.to_json())
    loaded = load_graph(through_json(hess.to_json()))
    same(loaded(W, b), hess(W, b))
    assert loaded.to_json() == hess.to_json()


def test_constant_outputs_round_trip_as_zero_dimensional_constants():
    third = nth_derivative(tutorial_polynomial, 3)  # the constant 6
    graph = jax.make_graph(third)(jnp.float32(1.0))
    for encoding in ("json", "base64"):
        doc = graph.to_json(encoding=encoding)
        assert_valid(doc)
        assert doc["outputs"] == ["c0"]
        loaded = load_graph(through_json(doc))
        same(loaded(jnp.float32(2.0)), third(jnp.float32(2.0)))
        assert loaded.to_json(encoding=encoding) == doc


def test_generated_names_never_shadow_parameter_names():
    doc = {"format": "nabla.graph/1",
           "params": [{"name": "n0", "shape": [2]}, {"name": "c0", "shape": [2]}],
           "constants": {"k": {"data": [1.0, 2.0]}},
           "nodes": [{"id": "a", "op": "mul", "inputs": ["n0", "k"]}, {"id": "b", "op": "add", "inputs": ["a", "c0"]}],
           "outputs": ["b"]}
    again = load_graph(doc).to_json()
    assert list(again["constants"]) == ["c0_"] and [n["id"] for n in again["nodes"]] == ["n0_", "n1"]
    x, y = jnp.array([1.0, 1.0]), jnp.array([0.5, 0.25])
    same(load_graph(through_json(again))(x, y), GraphFunction(doc)(x, y))
    assert load_graph(through_json(again)).to_json() == again


def test_custom_vjp_cannot_be_serialised():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))
    with pytest.raises(GraphFormatError, match=r"custom_vjp function holds Python code"):
        jax.make_graph(f)(jnp.array(1.0)).to_json()


# ----------------------------------------------------------------------------- 2. hand-written documents

HAND_WRITTEN_LOSS = {
    "format": "nabla.graph/1",
    "description": "the tutorial's logistic-regression loss, written by hand",
    "params": ["W", "b"],
    "constants": {
        "inputs": {"dtype": "float32", "shape": [4, 3],
                   "data": [[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]]},
        "targets": {"data": [1, 1, 0, 1]},
    },
    "nodes": [
        {"id": "W_col", "op": "reshape", "inputs": ["W"], "attrs": {"shape": [3, 1]}},
        {"id": "xw", "op": "matmul", "inputs": ["inputs", "W_col"]},
        {"id": "z0", "op": "reshape", "inputs": ["xw"], "attrs": {"shape": [4]}},
        {"id": "z", "op": "add", "inputs": ["z0", "b"]},
        {"id": "half_z", "op": "div", "inputs": ["z", 2]},
        {"id": "t", "op": "tanh", "inputs": ["half_z"]},
        {"id": "t1", "op": "add", "inputs": ["t", 1]},
        {"id": "preds", "op": "mul", "inputs": [0.5, "t1"]},
        {"id": "hit", "op": "mul", "inputs": ["preds", "targets"]},
        {"id": "miss_p", "op": "sub", "inputs": [1, "preds"]},
        {"id": "miss_t", "op": "sub", "inputs": [{"literal": 1.0}, "targets"]},
        {"id": "miss", "op": "mul", "inputs": ["miss_p", "miss_t"]},
        {"id": "label_probs", "op": "add", "inputs": ["hit", "miss"]},
        {"id": "logs", "op": "log", "inputs": ["label_probs"]},
        {"id": "total", "op": "reduce_sum", "inputs": ["logs"], "attrs": {"axes": [0]}},
        {"id": "loss", "op": "neg", "inputs": ["total"]},
    ],
    "outputs": ["loss"],
}


def test_hand_written_loss_evaluates_and_differentiates():
    assert_valid(HAND_WRITTEN_LOSS)
    loss = GraphFunction(HAND_WRITTEN_LOSS)
    assert loss.params == ["W", "b"] and loss.num_nodes == 16
    W, b = tutorial_params()
    same(loss(W, b), tutorial_loss(W, b))
    same(jax.grad(loss, (0, 1))(W, b), jax.grad(tutorial_loss, (0, 1))(W, b))
    np.testing.assert_allclose(np.asarray(jax.hessian(loss)(W, b)),
                               np.asarray(jax.hessian(tutorial_loss)(W, b)), rtol=1e-6)
    # the same function works for any argument shapes that fit
    assert loss(jnp.zeros(3), jnp.array(0.0)).shape == ()


def test_hand_written_document_with_several_outputs_and_literals():
    doc = {
        "format": "nabla.graph/1",
        "params": ["x", {"name": "y", "shape": [3], "dtype": "float32"}],
        "nodes": [
            {"id": "xy", "op": "mul", "inputs": ["x", "y"]},
            {"id": "sq", "op": "integer_pow", "inputs": ["xy"], "attrs": {"y": 2}},
            {"id": "s", "op": "reduce_sum", "inputs": ["sq"], "attrs": {"axes": [0]}},
            {"id": "capped", "op": "min", "inputs": ["xy", {"literal": "Infinity"}]},
            {"id": "cum", "op": "cumsum", "inputs": ["capped"], "attrs": {"axis": 0, "reverse": True}},
            {"id": "first", "op": "gather", "inputs": ["cum"], "attrs": {"index": [["int", 0]]}},
            {"id": "out", "op": "add", "inputs": ["s", "first"]},
        ],
        "outputs": ["out", "cum"],
    }
    assert_valid(doc)
    f = GraphFunction(doc)
    x, y = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, -1.0, 2.0])
    out, cum = f(x, y)
    np.testing.assert_allclose(np.asarray(cum), [4.5, 4.0, 6.0])
    np.testing.assert_allclose(float(out), 0.25 + 4 + 36 + 4.5)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda x, y: f(x, y)[0])(x, y)),
                               2 * np.asarray(x * y * y) + np.asarray(y))
    jac = jax.jacrev(lambda x: f(x, y)[1])(x)
    np.testing.assert_allclose(np.asarray(jac), np.triu(np.ones((3, 3))) * np.asarray(y))
    # graphs with declared params load into a Graph; undeclared ones need GraphFunction
    with pytest.raises(GraphFormatError, match=r"params \['x'\] declare no shape/dtype"):
        load_graph(doc)
    with pytest.raises(GraphFormatError, match=r"parameter 'y' is declared f32\[3\] but the argument is float32\[4\]"):
        f(x, jnp.ones(4))


def test_hand_written_document_serialises_after_loading():
    doc = {**HAND_WRITTEN_LOSS, "params": [{"name": "W", "shape": [3]}, {"name": "b", "shape": []}]}
    graph = load_graph(doc)
    text = str(graph)
    assert "tanh" in text and "reduce_sum[axes=(0,)]" in text
    again = graph.to_json()
    assert [p["name"] for p in again["params"]] == ["W", "b"]
    assert_valid(again)
    W, b = tutorial_params()
    same(load_graph(through_json(again))(W, b), GraphFunction(HAND_WRITTEN_LOSS)(W, b))


# ----------------------------------------------------------------------------- 3. the expression language

TUTORIAL_PROGRAM = """
z = inputs @ W + b
p = sigmoid(z)
-sum(log(p * targets + (1 - p) * (1 - targets)))
"""


def python_loss(W, b, inputs, targets):
    """The same loss written the same way in Python."""
    z = inputs @ W + b
    p = jax.nn.sigmoid(z)
    return -jnp.sum(jnp.log(p * targets + (1 - p) * (1 - targets)))


def test_tutorial_loss_in_the_expression_language_matches_python():
    program = compile_expression(TUTORIAL_PROGRAM, ["W", "b", "inputs", "targets"])
    W, b = tutorial_params()
    args = (W, b, TUTORIAL_INPUTS, TUTORIAL_TARGETS)
    value, (gW, gb) = jax.value_and_grad(program, (0, 1))(*args)
    expected_value, (eW, eb) = jax.value_and_grad(python_loss, (0, 1))(*args)
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gW), np.asarray(eW), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(gb), float(eb), rtol=1e-6)
    # and it is the tutorial's own loss (sigmoid written with tanh) up to float32 rounding
    np.testing.assert_allclose(float(value), float(tutorial_loss(W, b)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gW), np.asarray(jax.grad(tutorial_loss)(W, b)), rtol=1e-5, atol=1e-6)


def test_tanh_form_of_the_loss_is_the_traced_tutorial_exactly():
    source = TUTORIAL_PROGRAM.replace("sigmoid(z)", "0.5 * (tanh(z / 2) + 1)").replace("inputs @ W", "dot(inputs, W)")
    program = compile_expression(source, ["W", "b", "inputs", "targets"])
    W, b = tutorial_params()

    def loss(W, b):
        return program(W, b, TUTORIAL_INPUTS, TUTORIAL_TARGETS)

    same(loss(W, b), tutorial_loss(W, b))
    same(jax.grad(loss, (0, 1))(W, b), jax.grad(tutorial_loss, (0, 1))(W, b))


def test_has_aux_program_returns_a_tuple():
    source = TUTORIAL_PROGRAM.replace("-sum", "loss = -sum") + "(loss, p)\n"
    program = compile_expression(source, ["W", "b", "inputs", "targets"])
    W, b = tutorial_params()
    args = (W, b, TUTORIAL_INPUTS, TUTORIAL_TARGETS)
    (gW, gb), preds = jax.grad(program, (0, 1), has_aux=True)(*args)
    same((gW, gb), jax.grad(python_loss, (0, 1))(*args))
    np.testing.assert_allclose(np.asarray(preds), np.asarray(jax.nn.sigmoid(TUTORIAL_INPUTS @ W + b)), rtol=1e-6)


def test_programs_trace_into_graphs_that_round_trip():
    program = compile_expression(TUTORIAL_PROGRAM, ["W", "b", "inputs", "targets"])
    W, b = tutorial_params()
    args = (W, b, TUTORIAL_INPUTS, TUTORIAL_TARGETS.astype(jnp.float32))
    graph = jax.make_graph(program)(*args)
    loaded = load_graph(through_json(graph.to_json()))
    same(loaded(*args), program(*args))
    same(jax.grad(loaded, (0, 1))(*args), jax.grad(program, (0, 1))(*args))


def test_expression_language_conveniences():
    x = jnp.array([1.0, -2.0, 3.0])
    cases = {
        "jnp.sum(x ** 2)": 14.0,
        "np.max(abs(x))": 3.0,
        "einsum('i,i->', x, x)": 14.0,
        "sum(where(x > 0, x, 0))": 4.0,
        "y = x[::-1]\nsum(y[1:] * pi) / pi": -1.0,
        "sum(x, dtype='float32')": 2.0,
        "nn.relu(x)[2] + special.expit(0.0)": 3.5,
        "linalg.norm(x) ** 2": 14.0,
        "mean(x[None, :], axis=1)[0]": 2.0 / 3,
    }
    for source, expected in cases.items():
        np.testing.assert_allclose(float(compile_expression(source, ["x"])(x)), expected, rtol=1e-6,
                                   err_msg=source)


# ----------------------------------------------------------------------------- 4. rejections

# Everything the process does is recorded while a rejection is being tested: parsing the program
# (the "compile" event of ast.parse) is the only event allowed. exec, import, open, os.system,
# subprocess and the like would show up here. (On a syntax error CPython's parser tries to read the
# offending line from the "file" named "<unknown>"; that open is not the program's doing.)
_AUDIT: list[list[str]] = []


def _audit_hook(event: str, args: tuple) -> None:
    if _AUDIT and not (event == "open" and args and args[0] == "<unknown>"):
        _AUDIT[-1].append(event)


sys.addaudithook(_audit_hook)
ALLOWED_EVENTS = {"compile", "builtins.id"}


@contextlib.contextmanager
def nothing_executed(max_bytes: int = 16 << 20):
    """Assert that no code is executed, nothing imported or opened, and little memory is allocated."""
    events: list[str] = []
    tracemalloc.start()
    _AUDIT.append(events)
    try:
        yield
    finally:
        _AUDIT.pop()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert set(events) <= ALLOWED_EVENTS, sorted(set(events) - ALLOWED_EVENTS)
    assert peak < max_bytes, f"{peak} bytes were allocated"


@dataclass
class BadProgram:
    id: str
    source: str
    message: str  # a regex searched in the message
    line: int | None
    col: int | None
    kind: str = "invalid"  # ExprError.kind: "invalid", "value" or "limit"
    when: str = "compile"  # "compile": compile_expression rejects it; "run": calling (tracing) it does
    params: list[str] = field(default_factory=lambda: ["x"])
    limits: Limits | None = None


BAD_PROGRAMS = [
    # --- escaping into Python
    BadProgram("__import__", "__import__('os')", r"dunder name in '__import__' is not allowed", 1, 1),
    BadProgram("__import__ on line 2", "y = x\n__import__('os').system('ls')",
               r"only functions can be called, by name", 2, 1),
    BadProgram("class of a tuple", "().__class__", r"attribute access is not allowed", 1, 1),
    BadProgram("dict of a param", "x.__dict__", r"attribute access is not allowed", 1, 1),
    BadProgram("attribute T", "x.T", r"attribute access is not allowed", 1, 1),
    BadProgram("subclasses walk", "y = x\n[].__class__.__base__.__subclasses__()",
               r"only functions can be called, by name", 2, 1),
    BadProgram("dunder method call", "linalg.solve.__call__(x, x)",
               r"dunder name in 'linalg.solve.__call__' is not allowed", 1, 1),
    BadProgram("dunder name", "__builtins__", r"dunder name '__builtins__' is not allowed", 1, 1),
    BadProgram("dunder keyword", "exp(x, __globals__=1)", r"keyword '__globals__' is not allowed", 1, 1),
    BadProgram("getattr", "getattr(x, 'y')", r"unknown function 'getattr'", 1, 1),
    BadProgram("eval", "eval('1')", r"unknown function 'eval'", 1, 1),
    BadProgram("exec", "y = x\nexec('import os')", r"unknown function 'exec'", 2, 1),
    BadProgram("open", "open('f')", r"unknown function 'open'", 1, 1),
    BadProgram("os.system", "os.system('ls')", r"unknown function 'os.system'", 1, 1),
    BadProgram("call of a call", "exp(x)(1)", r"only functions can be called, by name", 1, 1),
    BadProgram("call of a param", "x(1)", r"unknown function 'x'", 1, 1),
    # --- syntax outside the language
    BadProgram("lambda", "y = lambda: 1\ny", r"lambda is not allowed", 1, 5),
    BadProgram("list comprehension", "sum([v for v in x])", r"a list comprehension is not allowed", 1, 5),
    BadProgram("dict comprehension", "{v: v for v in x}", r"a dict comprehension is not allowed", 1, 1),
    BadProgram("set comprehension", "{v for v in x}", r"a set comprehension is not allowed", 1, 1),
    BadProgram("generator", "sum(v for v in x)", r"a generator expression is not allowed", 1, 4),
    BadProgram("import", "import os\nx", r"import is not allowed; lines must be `name = expression`", 1, 1),
    BadProgram("from-import", "from os import system", r"import is not allowed", 1, 1),
    BadProgram("def", "def f(v):\n    return v\nf(x)", r"a function definition is not allowed", 1, 1),
    BadProgram("class", "class A:\n    pass\nx", r"a class definition is not allowed", 1, 1),
    BadProgram("f-string", "y = f'{x}'\nx", r"an f-string is not allowed", 1, 5),
    BadProgram("walrus", "exp((y := x))", r"':=' is not allowed", 1, 6),
    BadProgram("starred", "sum(*x)", r"unpacking with \* is not allowed", 1, 5),
    BadProgram("**kwargs", "sum(x, **{'axis': 0})", r"\*\*kwargs unpacking is not allowed", 1, 1),
    BadProgram("conditional expression", "x if x else -x", r"a conditional expression \(use where", 1, 1),
    BadProgram("and", "x and x", r"'and'/'or' \(use logical_and/logical_or\)", 1, 1),
    BadProgram("or", "y = 1\nx or y", r"'and'/'or'", 2, 1),
    BadProgram("chained comparison", "0 < x < 1", r"chained comparisons are not allowed", 1, 1),
    BadProgram("is", "x is None", r"comparison Is is not allowed", 1, 1),
    BadProgram("shift", "x << 2", r"operator LShift is not allowed", 1, 1),
    BadProgram("dict literal", "sum({'a': x})", r"a dict is not allowed", 1, 5),
    BadProgram("while", "y = x\nwhile y:\n    pass\ny", r"a while loop is not allowed", 2, 1),
    BadProgram("for", "for i in x:\n    pass\nx", r"a for loop is not allowed", 1, 1),
    BadProgram("if", "if x:\n    y = 1\nx", r"an if statement is not allowed", 1, 1),
    BadProgram("with", "with open('f') as f:\n    pass\nx", r"with is not allowed", 1, 1),
    BadProgram("augmented assignment", "x += 1\nx", r"augmented assignment is not allowed", 1, 1),
    BadProgram("subscript assignment", "x[0] = 1\nx", r"assign to a single name", 1, 1),
    BadProgram("tuple assignment", "a, b = x, x\na", r"assign to a single name", 1, 1),
    BadProgram("assignment to a function name", "exp = x\nexp", r"'exp' cannot be assigned: it is reserved", 1, 1),
    BadProgram("statements on the last line", "a = 1; b = 2",
               r"the last line must be an expression: the function's output", 1, 8),
    BadProgram("last line an assignment", "y = x", r"the last line must be an expression", 1, 1),
    BadProgram("bare expression before the end", "x\nx", r"only the last line may be a bare expression", 1, 1),
    BadProgram("empty program", "", r"the program is empty", None, None),
    BadProgram("return", "return x", r"return is not allowed", 1, 1),
    BadProgram("string output", "y = x\n'rm -rf /'", r"a string is only allowed as a function argument", 2, 1),
    # pytree parameters take string keys; an array has none
    BadProgram("string index", "x['a']", r"x is an array of shape \(3,\) and dtype float32, not an object: it has "
               r"no key 'a'", 1, 1, when="run"),
    BadProgram("bytes", "b'abc'", r"constant b'abc' is not allowed \(numbers only\)", 1, 1),
    BadProgram("complex", "x * 1j", r"constant 1j is not allowed", 1, 5),
    BadProgram("long string", "einsum('" + "i" * 100 + "', x)", r"string arguments are limited to 64 characters",
               1, 8),
    BadProgram("huge integer literal", "x * 100000000000000000000",
               r"integer literal 100000000000000000000 is too large", 1, 5, "value"),
    BadProgram("syntax error", "y = x\nx +* 2", r"syntax error: invalid syntax", 2, 4),
    BadProgram("undeclared name", "y = x + z\ny", r"undeclared name 'z'; declared parameters are \['x'\]", 1, 9),
    BadProgram("function used as a value", "y = exp\ny(x)", r"undeclared name 'exp' \(it is a function: call it\)",
               1, 5),
    BadProgram("unknown function", "y = x\nfrobnicate(y)", r"unknown function 'frobnicate'", 2, 1),
    # columns count characters, not UTF-8 bytes: "é" is one column (two bytes)
    BadProgram("column after a non-ASCII character", "é = x\né + frobnicate(é)",
               r"unknown function 'frobnicate'", 2, 5),
    BadProgram("dunder parameter", "x", r"'__class__' cannot be a parameter name", None, None, params=["__class__"]),
    BadProgram("string argument at run time", "sum(x, 'axis')", r"sum does not take string arguments", 1, 1,
               when="run"),
    BadProgram("dtype object", "sum(x, dtype='object')", r"dtype must be one of float16", 1, 1, when="run"),
    # --- size limits
    BadProgram("200 nested minus signs", "-" * 200 + "x",
               r"the expression is nested 65 levels deep, over the limit of 64 \(max_depth\)", 1, 64, "limit"),
    BadProgram("200 nested parentheses", "(" * 200 + "x" + "+1)" * 200, r"nested \d+ levels deep.*\(max_depth\)",
               1, None, "limit"),
    BadProgram("201 nested parentheses", "(" * 201 + "x" + ")" * 201, r"syntax error: too many nested parentheses",
               1, 201),
    BadProgram("nested calls", "exp(" * 70 + "x" + ")" * 70, r"nested 65 levels deep", 1, None, "limit"),
    BadProgram("10000 minus signs", "-" * 10000 + "x",
               r"nested too deeply to parse|too many nested|too complex|nested \d+ levels", None, None, "limit"),
    BadProgram("10**10 exponent", "x ** 10**10", r"exponent 10000000000 is larger than 1000 \(max_integer_power\)",
               1, 6, "limit"),
    BadProgram("x ** (10**10)", "x ** (10**10)", r"exponent 10000000000 is larger than 1000", 1, 7, "limit"),
    BadProgram("float exponent 1e10", "y = x\ny ** -1e10", r"exponent -10000000000 is larger than 1000", 2, 6, "limit"),
    BadProgram("computed exponent", "n = 1001\nx ** n", r"exponent 1001 is larger than 1000", 2, 6, "limit",
               when="run"),
    BadProgram("too long", "x + " * 6000 + "x",
               r"the source has 24001 characters, over the limit of 20000 \(max_source_chars\)", None, None, "limit"),
    BadProgram("too many nodes", "sum(array([" + "x, " * 5000 + "x]))",
               r"the program has more than 10000 syntax nodes \(max_nodes\)", None, None, "limit"),
    BadProgram("too many nodes (custom limits)", "y = x + x + x\ny * y * y",
               r"more than 8 syntax nodes \(max_nodes\)", None, None, "limit", limits=Limits(max_nodes=8)),
    BadProgram("zeros((10**6, 10**6))", "zeros((10**6, 10**6))",
               r"zeros would allocate 1000000000000 elements, over the limit of 10000000 \(max_array_elements\)",
               1, 1, "limit", when="run"),
    BadProgram("eye(10**6)", "y = x\neye(10**6)", r"eye would allocate 1000000000000 elements", 2, 1, "limit",
               when="run"),
    BadProgram("arange(10**9)", "arange(10**9)", r"arange would allocate 1000000000 elements", 1, 1, "limit",
               when="run"),
    BadProgram("tile(x, 10**9)", "tile(x, 10**9)", r"tile count 1000000000 is larger than 100000 \(max_repeats\)",
               1, 1, "limit", when="run"),
    BadProgram("tile(x, (1, 10**9))", "sum(tile(x, (1, 10**9)))", r"tile count 1000000000 is larger than 100000",
               1, 5, "limit", when="run"),
    BadProgram("repeat(x, 10**9)", "repeat(x, 10**9)", r"repeat count 1000000000 is larger than 100000 \(max_repeats\)",
               1, 1, "limit", when="run"),
    BadProgram("repeat counts adding up", "repeat(x, array([10**5, 10**5, 10**5]) * 100)",
               r"repeat counts add up to more than 10000000 \(max_array_elements\)", 1, 1, "limit", when="run"),
    BadProgram("tile within max_repeats but too big", "sum(tile(x, (10**4, 10**4)))",
               r"the result of `broadcast_to` would have shape \(10000, 1, 10000, 3\): 300000000 elements, over the "
               r"limit of 10000000 \(max_array_elements\)", 1, 5, "limit", when="run"),
    BadProgram("broadcast_to (10**7, 3)", "y = x * 2\nsum(broadcast_to(y, (10**7, 3)))",
               r"the result of `broadcast_to` would have shape \(10000000, 3\)", 2, 5, "limit", when="run"),
    BadProgram("outer product too big (custom limits)", "sum(outer(x, ones(100)))",
               r"would have shape \(3, 100\): 300 elements, over the limit of 100", 1, 5, "limit", when="run",
               limits=Limits(max_array_elements=100)),
]


@pytest.mark.parametrize("bad", BAD_PROGRAMS, ids=[b.id for b in BAD_PROGRAMS])
def test_bad_program_is_rejected_with_its_message_and_position(bad):
    limits = bad.limits or Limits()
    x = jnp.array([1.0, 2.0, 3.0])
    with nothing_executed():
        if bad.when == "compile":
            with pytest.raises(ExprError) as info:
                compile_expression(bad.source, bad.params, limits)
        else:
            program = compile_expression(bad.source, bad.params, limits)  # valid syntax: accepted
            with pytest.raises(ExprError) as info:
                jax.make_graph(program)(x)  # rejected by shape inference, while tracing abstractly
    error = info.value
    assert re.search(bad.message, str(error)), str(error)
    assert (error.line, error.kind) == (bad.line, bad.kind), str(error)
    if bad.col is not None:
        assert error.col == bad.col, str(error)
    if error.line is not None:
        assert str(error).startswith(f"line {error.line}, column {error.col}: ")
    if bad.when == "run":  # evaluated on concrete arrays it is refused before allocation too
        with nothing_executed(), pytest.raises(ExprError, match=bad.message):
            program(x)


def test_program_limits_and_errors_are_engine_value_errors():
    with pytest.raises(ValueError):
        compile_expression("x.y", ["x"])
    with pytest.raises(jax.EngineError):
        compile_expression("x ** 5000", ["x"])
    assert issubclass(LimitExceeded, ValueError) and issubclass(GraphFormatError, ValueError)


# --- graph documents


def graph_doc(*nodes: dict[str, Any], params: Any = ("x",), outputs: list[Any] | None = None,
              constants: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    doc = {"format": "nabla.graph/1", "params": list(params), "nodes": list(nodes),
           "outputs": outputs if outputs is not None else [nodes[-1]["id"]]}
    if constants is not None:
        doc["constants"] = constants
    doc.update(top)
    return doc


def node(id: Any, op: str, *inputs: Any, **attrs: Any) -> dict[str, Any]:
    return {"id": id, "op": op, "inputs": list(inputs), "attrs": attrs}


def f32(shape: list[int], data: Any) -> dict[str, Any]:
    return {"dtype": "float32", "shape": shape, "data": data}


@dataclass
class BadGraph:
    id: str
    doc: Any
    error: type
    message: str  # a regex searched in the message
    node: str | None = None  # the node id the error names (GraphFormatError.node)
    when: str = "load"  # "load": GraphFunction(doc) rejects it; "trace": tracing it on `args` does
    limits: Limits | None = None
    args: tuple[Any, ...] = ()


X3 = jnp.array([1.0, 2.0, 3.0])
BAD_GRAPHS = [
    BadGraph("not an object", [1, 2], GraphFormatError, r"a graph document must be a JSON object"),
    BadGraph("wrong format", {**graph_doc(node("a", "exp", "x")), "format": "nabla.graph/2"}, GraphFormatError,
             r"unsupported graph format 'nabla.graph/2'; this server reads 'nabla.graph/1'"),
    BadGraph("missing format", {k: v for k, v in graph_doc(node("a", "exp", "x")).items() if k != "format"},
             GraphFormatError, r"unsupported graph format None"),
    BadGraph("unknown top-level field", graph_doc(node("a", "exp", "x"), code="import os"), GraphFormatError,
             r"unknown top-level field\(s\) \['code'\]"),
    BadGraph("self cycle", graph_doc(node("a", "add", "x", "a")), GraphFormatError,
             r"node 'a': input 1 refers to 'a', but .*graphs cannot have cycles", "a"),
    BadGraph("cycle through a later node", graph_doc(node("a", "add", "x", "b"), node("b", "exp", "a")),
             GraphFormatError, r"node 'a': input 1 refers to 'b', but it is defined by a later node", "a"),
    BadGraph("dangling reference", graph_doc(node("a", "exp", "x"), node("b", "add", "a", "nowhere")),
             GraphFormatError,
             r"node 'b': input 1 refers to 'nowhere', but no parameter, constant or earlier node has that name", "b"),
    BadGraph("dangling output", graph_doc(node("a", "exp", "x"), outputs=["zz"]), GraphFormatError,
             r"outputs\[0\] refers to \"zz\", which is not a parameter, constant or node"),
    BadGraph("unknown op", graph_doc(node("a", "system", "x")), GraphFormatError,
             r"node 'a': unknown op 'system'", "a"),
    BadGraph("op not a string", graph_doc({"id": "a", "op": ["exp"], "inputs": ["x"]}), GraphFormatError,
             r"node 'a': unknown op \['exp'\]", "a"),
    BadGraph("custom_vjp_call", graph_doc(node("a", "custom_vjp_call", "x", fn="os.system", in_tree=None,
                                               out_tree=None)),
             GraphFormatError, r"node 'a': unknown op 'custom_vjp_call'", "a"),
    BadGraph("wrong arity", graph_doc(node("a", "exp", "x"), node("s", "add", "a")), GraphFormatError,
             r"node 's': op 'add' takes 2 inputs, got 1", "s"),
    BadGraph("no inputs for a variadic op", graph_doc(node("c", "concatenate", axis=0)), GraphFormatError,
             r"node 'c': op 'concatenate' takes 1 to 64 inputs, got 0", "c"),
    BadGraph("missing attribute", graph_doc(node("r", "reduce_sum", "x")), GraphFormatError,
             r"node 'r': op 'reduce_sum' takes attributes \['axes'\]; missing \['axes'\]", "r"),
    BadGraph("unknown attribute", graph_doc(node("e", "exp", "x", fn="eval")), GraphFormatError,
             r"node 'e': op 'exp' takes attributes none; unknown \['fn'\]", "e"),
    BadGraph("axes as a string", graph_doc(node("r", "reduce_sum", "x", axes="0")), GraphFormatError,
             r"node 'r': attribute 'axes' must be a list of integers", "r"),
    BadGraph("axis as a bool", graph_doc(node("c", "cumsum", "x", axis=True, reverse=False)), GraphFormatError,
             r"node 'c': attribute 'axis' must be an integer, got true", "c"),
    BadGraph("negative shape", graph_doc(node("r", "reshape", "x", shape=[-1, 3])), GraphFormatError,
             r"node 'r': attribute 'shape'\[0\] = -1 is out of range", "r"),
    BadGraph("too many dimensions", graph_doc(node("r", "reshape", "x", shape=[1] * 40)), GraphFormatError,
             r"node 'r': attribute 'shape' has 40 entries; at most 32 dimensions", "r"),
    BadGraph("einsum spec with ...", graph_doc(node("e", "einsum", "x", "x", spec="...i,...i->...")),
             GraphFormatError, r"node 'e': attribute 'spec' must be an explicit einsum spec like 'ij,jk->ik'", "e"),
    BadGraph("einsum spec with code", graph_doc(node("e", "einsum", "x", spec="__import__('os')")),
             GraphFormatError, r"node 'e': attribute 'spec' must be an explicit einsum spec", "e"),
    BadGraph("reverse not a bool", graph_doc(node("c", "cumsum", "x", axis=0, reverse="yes")), GraphFormatError,
             r"node 'c': attribute 'reverse' must be true or false", "c"),
    BadGraph("dtype attribute object", graph_doc(node("c", "convert_element_type", "x", dtype="object")),
             GraphFormatError, r"node 'c': attribute 'dtype' must be one of float16", "c"),
    BadGraph("huge integer power", graph_doc(node("p", "integer_pow", "x", y=10 ** 10)), GraphFormatError,
             r"node 'p': attribute 'y' = 10000000000 is out of range \[-1000, 1000\]", "p"),
    BadGraph("index_update mode", graph_doc(node("u", "index_update", "x", 1.0, index=[["int", 0]], mode="exec")),
             GraphFormatError, r"node 'u': attribute 'mode' must be 'set', 'add' or 'mul'", "u"),
    BadGraph("unknown index item", graph_doc(node("g", "gather", "x", index=[["eval", "x"]])), GraphFormatError,
             r"node 'g': attribute 'index'\[0\]: unknown index item \[\"eval\", \"x\"\]", "g"),
    BadGraph("slice step zero", graph_doc(node("g", "gather", "x", index=[["slice", None, None, 0]])),
             GraphFormatError, r"node 'g': attribute 'index'\[0\]: slice step cannot be zero", "g"),
    BadGraph("string literal", graph_doc(node("a", "add", "x", {"literal": "1e5"})), GraphFormatError,
             r"node 'a': input 1 must be a name or a number, got \{\"literal\": \"1e5\"\}", "a"),
    BadGraph("boolean literal", graph_doc(node("a", "add", "x", True)), GraphFormatError,
             r"node 'a': input 1 must be a name or a number, got true", "a"),
    BadGraph("unknown node field", graph_doc({**node("a", "exp", "x"), "python": "os.system('ls')"}),
             GraphFormatError, r"node 'a': unknown field\(s\) \['python'\]", "a"),
    BadGraph("duplicate node id", graph_doc(node("a", "exp", "x"), node("a", "log", "a")), GraphFormatError,
             r"node 'a': the id is already used by a parameter, constant or earlier node", "a"),
    BadGraph("node id of a param", graph_doc(node("x", "exp", "x")), GraphFormatError,
             r"node 'x': the id is already used", "x"),
    BadGraph("duplicate param", graph_doc(node("a", "exp", "x"), params=["x", "x"]), GraphFormatError,
             r"params\[1\]: duplicate parameter name 'x'"),
    BadGraph("invalid node id", graph_doc(node("a b", "exp", "x")), GraphFormatError,
             r"nodes\[0\]: id must be a name string, got \"a b\"", "#0"),
    BadGraph("node id not a string", graph_doc(node(7, "exp", "x")), GraphFormatError,
             r"nodes\[0\]: id must be a name string, got 7", "#0"),
    BadGraph("invalid param name", graph_doc(node("a", "exp", "x"), params=["x", "__class__.__init__ x"]),
             GraphFormatError, r"params\[1\]: '__class__.__init__ x' is not a valid name"),
    BadGraph("invalid constant name", graph_doc(node("a", "exp", "x"), constants={"a b": f32([1], [1.0])}),
             GraphFormatError, r"constant name 'a b' is not a valid name"),
    BadGraph("constant named like a param", graph_doc(node("a", "exp", "x"), constants={"x": f32([1], [1.0])}),
             GraphFormatError, r"constant 'x' has the name of a parameter"),
    BadGraph("constant dtype object", graph_doc(node("a", "add", "x", "c"),
                                                constants={"c": {"dtype": "object", "data": [1]}}),
             GraphFormatError, r"constants.c: unknown dtype 'object'"),
    BadGraph("non-rectangular data", graph_doc(node("a", "add", "x", "c"), constants={"c": {"data": [[1, 2], [3]]}}),
             GraphFormatError, r"constants.c: data is not a rectangular array of numbers"),
    BadGraph("code in data", graph_doc(node("a", "add", "x", "c"), constants={"c": {"data": ["__import__('os')"]}}),
             GraphFormatError, r"constants.c: .*unexpected string \"__import__\('os'\)\" in numeric data"),
    BadGraph("data and shape disagree", graph_doc(node("a", "add", "x", "c"), constants={"c": f32([4], [1, 2, 3])}),
             GraphFormatError, r"constants.c: data has shape \[3\] but shape says \[4\]"),
    BadGraph("data nested 33 deep", graph_doc(node("a", "add", "x", "c"),
                                              constants={"c": {"data": json.loads("[" * 33 + "1" + "]" * 33)}}),
             GraphFormatError, r"constants.c: .*nested more than 32 levels deep"),
    BadGraph("document nested 1000 deep", graph_doc(node("a", "add", "x", json.loads("[" * 900 + "]" * 900))),
             LimitExceeded, r"the nesting depth of the document is 65, over the limit of 64 \(max_depth\)"),
    BadGraph("bad base64", graph_doc(node("a", "add", "x", "c"),
                                     constants={"c": {"$array": {"dtype": "float32", "shape": [2],
                                                                 "data": "!!not base64!!"}}}),
             GraphFormatError, r"constants.c: data is not valid base64"),
    BadGraph("base64 length mismatch", graph_doc(node("a", "add", "x", "c"),
                                                 constants={"c": {"$array": {"dtype": "float32", "shape": [3],
                                                                             "data": "AAAAAAAAAAA="}}}),
             GraphFormatError, r"constants.c: base64 data has 8 bytes, but shape \[3\] of float32 needs 12"),
    BadGraph("base64 without a shape", graph_doc(node("a", "add", "x", "c"),
                                                 constants={"c": {"dtype": "float32", "data": "AAAAAA=="}}),
             GraphFormatError, r"constants.c: base64 data needs an explicit shape"),
    BadGraph("huge constant (custom limits)", graph_doc(node("a", "add", "x", "c"),
                                                        constants={"c": f32([20], [0.0] * 20)}),
             LimitExceeded,
             r"constants.c: the number of elements is 20, over the limit of 10 \(max_constant_elements\)",
             limits=Limits(max_constant_elements=10)),
    BadGraph("huge base64 constant, shape checked before decoding",
             graph_doc(node("a", "add", "x", "c"),
                       constants={"c": {"$array": {"dtype": "float32", "shape": [10 ** 6, 10 ** 6], "data": "AAAA"}}}),
             LimitExceeded, r"constants.c: the number of elements is 1000000000000, over the limit of 1000000"),
    BadGraph("constants adding up (custom limits)",
             graph_doc(node("a", "add", "c1", "c2"), constants={"c1": f32([6], [0.0] * 6), "c2": f32([6], [0.0] * 6)}),
             LimitExceeded, r"the total number of constant elements is 12, over the limit of 10",
             limits=Limits(max_constant_elements=10)),
    BadGraph("too many nodes (custom limits)", graph_doc(*[node(f"n{k}", "exp", "x") for k in range(6)]),
             LimitExceeded, r"the number of nodes is 6, over the limit of 5 \(max_nodes\)",
             limits=Limits(max_nodes=5)),
    BadGraph("nodes not a list", graph_doc(node("a", "exp", "x")) | {"nodes": {"a": "exp"}}, GraphFormatError,
             r"nodes must be a list"),
    # --- found by shape inference, while tracing abstractly
    BadGraph("shape mismatch", graph_doc(node("xy", "mul", "x", "y"), node("s", "reduce_sum", "xy", axes=[0]),
                                         params=["x", "y"]),
             GraphFormatError, r"node 'xy' \(mul\): `mul` got operands of shapes \(3,\) and \(4,\), which do not "
                               r"broadcast together", "xy", when="trace", args=(X3, jnp.ones(4))),
    BadGraph("matmul mismatch", graph_doc(node("m", "matmul", "x", "x"), params=["x"]),
             GraphFormatError, r"node 'm' \(matmul\)", "m", when="trace", args=(jnp.ones((2, 3)),)),
    BadGraph("reshape to the wrong size", graph_doc(node("r", "reshape", "x", shape=[2, 2])),
             GraphFormatError, r"node 'r' \(reshape\): cannot reshape an array of shape \(3,\)", "r",
             when="trace", args=(X3,)),
    BadGraph("gather out of range", graph_doc(node("g", "gather", "x", index=[["int", 7]])),
             GraphFormatError, r"node 'g' \(gather\): .*7", "g", when="trace", args=(X3,)),
    BadGraph("declared shape mismatch", graph_doc(node("a", "exp", "x"), params=[{"name": "x", "shape": [2]}]),
             GraphFormatError, r"parameter 'x' is declared f32\[2\] but the argument is float32\[3\]",
             when="trace", args=(X3,)),
    BadGraph("broadcast_to (10**6, 10**6)",
             graph_doc(node("one", "reshape", "x", shape=[1, 1]),
                       node("big", "broadcast_to", "one", shape=[10 ** 6, 10 ** 6]),
                       node("s", "reduce_sum", "big", axes=[0, 1])),
             GraphFormatError, r"node 'big' \(broadcast_to\): the result of `broadcast_to` would have shape "
                               r"\(1000000, 1000000\): 1000000000000 elements, over the limit of 10000000 "
                               r"\(max_array_elements\)", "big", when="trace", args=(jnp.ones(1),)),
    BadGraph("outer product over a custom budget",
             graph_doc(node("c", "reshape", "x", shape=[3, 1]), node("r", "reshape", "x", shape=[1, 3]),
                       node("m", "mul", "c", "r")),
             GraphFormatError, r"node 'm' \(mul\): the result of `mul` would have shape \(3, 3\): 9 elements, over "
                               r"the limit of 8", "m", when="trace", args=(X3,), limits=Limits(max_array_elements=8)),
]


@pytest.mark.parametrize("bad", BAD_GRAPHS, ids=[b.id for b in BAD_GRAPHS])
def test_bad_graph_is_rejected_with_its_message(bad):
    limits = bad.limits or Limits()
    with nothing_executed():
        if bad.when == "load":
            with pytest.raises(bad.error) as info:
                GraphFunction(bad.doc, limits)
        else:
            fn = GraphFunction(bad.doc, limits)  # structurally valid: accepted
            with pytest.raises(bad.error) as info:
                jax.make_graph(fn)(*bad.args)  # shapes are inferred, nothing is computed
    error = info.value
    assert re.search(bad.message, str(error)), str(error)
    if bad.node is not None:
        assert error.node == bad.node
        assert re.search(rf"\b{re.escape(bad.node)}\b", str(error)) or bad.node.startswith("#")
    if bad.when == "trace":
        # evaluated on concrete arrays, the same error comes before anything big is allocated
        with nothing_executed(), pytest.raises(bad.error, match=bad.message):
            fn(*bad.args)


def test_enough_malicious_and_malformed_cases():
    assert len(BAD_PROGRAMS) >= 40 and len(BAD_GRAPHS) >= 40
    assert len({b.id for b in BAD_PROGRAMS}) == len(BAD_PROGRAMS)
    assert len({b.id for b in BAD_GRAPHS}) == len(BAD_GRAPHS)


def test_oversized_results_are_refused_when_loading_declared_graphs():
    doc = graph_doc(node("big", "broadcast_to", "x", shape=[10 ** 6, 10 ** 6]),
                    node("s", "reduce_sum", "big", axes=[0, 1]), params=[{"name": "x", "shape": []}])
    with nothing_executed(), pytest.raises(GraphFormatError, match=r"node 'big' .*1000000000000 elements") as info:
        load_graph(doc)
    assert info.value.node == "big"


def test_an_enclosing_element_budget_is_respected():
    doc = graph_doc(node("c", "reshape", "x", shape=[3, 1]), node("r", "reshape", "x", shape=[1, 3]),
                    node("m", "mul", "c", "r"))
    fn = GraphFunction(doc)
    assert fn(X3).shape == (3, 3)
    with element_budget(5), pytest.raises(GraphFormatError, match=r"node 'm' .*over the limit of 5"):
        fn(X3)
    program = compile_expression("outer(x, x)", ["x"])
    with element_budget(5), pytest.raises(ExprError, match=r"over the limit of 5") as info:
        jax.make_graph(program)(X3)
    assert info.value.kind == "limit"


def test_schema_rejects_what_it_can_express():
    """The schema is the structural half of validation: it catches malformed fields and names
    (the loader adds references, cycles, arity, attributes per op, limits and shapes)."""
    for bad in ("wrong format", "unknown top-level field", "invalid node id", "node id not a string",
                "axes as a string", "negative shape", "einsum spec with ...", "reverse not a bool",
                "index_update mode", "boolean literal", "unknown node field", "constant dtype object",
                "invalid param name", "nodes not a list", "string literal"):
        doc = next(b.doc for b in BAD_GRAPHS if b.id == bad)
        assert not VALIDATOR.is_valid(doc), bad
    for good in ("self cycle", "dangling reference", "wrong arity", "shape mismatch"):
        doc = next(b.doc for b in BAD_GRAPHS if b.id == good)
        assert VALIDATOR.is_valid(doc), good
    assert VALIDATOR.is_valid(HAND_WRITTEN_LOSS)


# ----------------------------------------------------------------------------- 5. node counts


def tutorial_polynomial(x):
    return x ** 3 + 2 * x ** 2 - 3 * x + 1


def nth_derivative(f: Callable[[Any], Any], n: int) -> Callable[[Any], Any]:
    for _ in range(n):
        f = jax.grad(f)
    return f


def node_counts(f: Callable[[Any], Any], n: int, x: Any = None) -> tuple[Any, Any]:
    graph = jax.make_graph(nth_derivative(f, n))(jnp.float32(0.5) if x is None else x)
    return graph, jax.optimize(graph)


COUNTED = {"tanh": jnp.tanh, "x**3 + 2*x**2 - 3*x + 1": tutorial_polynomial}
POINTS = (-1.5, -0.3, 0.0, 0.7, 2.0)


@pytest.mark.parametrize("name", list(COUNTED))
def test_optimised_derivative_graphs_stay_polynomial_and_compute_the_same(name):
    f = COUNTED[name]
    after = []
    for n in range(1, 7):
        graph, optimised = node_counts(f, n)
        after.append(optimised.num_nodes)
        assert optimised.num_nodes <= graph.num_nodes
        assert optimised.num_nodes <= 5 * n ** 3, (n, optimised.num_nodes)
        for p in POINTS:
            x = jnp.float32(p)
            expected = float(nth_derivative(f, n)(x))
            assert float(graph(x)) == expected
            # the passes reassociate sums and products: equal up to float32 rounding
            np.testing.assert_allclose(float(optimised(x)), expected, rtol=5e-5, atol=5e-5 * max(1.0, abs(expected)))
        # and serialised, the optimised graph is the same function
        assert_valid(optimised.to_json())
        loaded = load_graph(through_json(optimised.to_json()))
        same(loaded(jnp.float32(0.7)), optimised(jnp.float32(0.7)))
    if name == "tanh":
        assert after == sorted(after)


def test_optimised_derivatives_agree_closely_in_float64(x64):
    for n in range(1, 7):
        graph, optimised = node_counts(jnp.tanh, n, jnp.float64(0.5))
        for p in POINTS:
            x = jnp.float64(p)
            np.testing.assert_allclose(float(optimised(x)), float(graph(x)), rtol=1e-12, atol=1e-12)


def node_count_table() -> str:
    lines = ["| n | tanh: before | tanh: after | polynomial: before | polynomial: after |",
             "|---|---|---|---|---|"]
    for n in range(1, 7):
        cells = []
        for f in COUNTED.values():
            graph, optimised = node_counts(f, n)
            cells += [str(graph.num_nodes), str(optimised.num_nodes)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DOCS = Path(__file__).resolve().parent.parent / "docs" / "FORMATS.md"


def test_node_count_table_in_the_docs_is_current():
    assert node_count_table() in DOCS.read_text(encoding="utf-8")


def test_the_documented_example_document_works():
    example = json.loads(re.search(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1))
    assert_valid(example)
    W, b = tutorial_params()
    loss = GraphFunction(example)
    np.testing.assert_allclose(float(loss(W, b)), float(tutorial_loss(W, b)), rtol=1e-6)
    for got, want in zip(jax.grad(loss, (0, 1))(W, b), jax.grad(tutorial_loss, (0, 1))(W, b), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


if __name__ == "__main__":  # the table of docs/FORMATS.md
    print(node_count_table())
