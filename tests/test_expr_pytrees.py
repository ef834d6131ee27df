"""Pytree parameters in the expression language (docs/FORMATS.md, "Pytree parameters").

A parameter may be a dict, list or tuple of arrays, nested. Programs subscript it with string keys
and integer indices, directly (`params['layers'][0]['W']`) or through names bound to its parts;
keys are resolved when the program is called or traced. Values and gradients are checked
against closed forms; every misuse is an ExprError with its line, column and kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import engine as jax
import engine.numpy as jnp
from engine.expr import ExprError, compile_expression
from engine.limits import Limits
from engine.tree_util import tree_leaves, tree_structure

INPUTS = np.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
TARGETS = np.array([True, True, False, True])
W = np.array([-0.36838785, -2.275689, 0.01144757])
B = np.float64(0.8535516)

# The tutorial's pytree section: loss2(params) with params = {'W': W, 'b': b}.
TUTORIAL = """\
preds = 0.5 * (tanh((inputs @ params['W'] + params['b']) / 2) + 1)
label_probs = preds * targets + (1 - preds) * (1 - targets)
-sum(log(label_probs))
"""


@pytest.fixture(autouse=True)
def x64() -> Iterator[None]:
    """float64 throughout, so closed forms can be compared to 1e-12."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def a(x: Any) -> Any:
    return jnp.asarray(np.asarray(x, dtype=np.float64))


def tutorial_closed_form(w: np.ndarray, b: float) -> tuple[float, np.ndarray, float]:
    """Loss and gradient of the logistic regression: d loss / dz = sigmoid(z) - targets."""
    t = TARGETS.astype(np.float64)
    p = 1 / (1 + np.exp(-(INPUTS @ w + b)))
    loss = -np.sum(np.log(p * t + (1 - p) * (1 - t)))
    return loss, INPUTS.T @ (p - t), float(np.sum(p - t))


def expr_error(source: str, params: list[str], *args: Any, abstract: bool = False) -> ExprError:
    program = compile_expression(source, params)  # valid syntax: keys are resolved when it is called
    with pytest.raises(ExprError) as info:
        if abstract:
            jax.make_graph(program)(*args)
        else:
            program(*args)
    return info.value


def assert_at(error: ExprError, line: int, col: int, message: str, kind: str = "invalid") -> None:
    assert re.search(message, str(error)), str(error)
    assert (error.line, error.col, error.kind) == (line, col, kind), str(error)
    assert str(error).startswith(f"line {line}, column {col}: ")


# ----------------------------------------------------------------------------- values and gradients


def test_the_tutorials_pytree_loss_and_gradient_match_the_closed_form() -> None:
    program = compile_expression(TUTORIAL, ["params", "inputs", "targets"])
    params = {"W": a(W), "b": a(B)}
    loss, dw, db = tutorial_closed_form(W, B)
    np.testing.assert_allclose(float(program(params, a(INPUTS), TARGETS)), loss, rtol=1e-12)
    grads = jax.grad(program)(params, a(INPUTS), TARGETS)
    assert set(grads) == {"W", "b"}  # the argument's structure
    np.testing.assert_allclose(np.asarray(grads["W"]), dw, rtol=1e-12)
    np.testing.assert_allclose(float(grads["b"]), db, rtol=1e-12)
    assert grads["W"].shape == (3,) and grads["b"].shape == ()


def test_double_quoted_keys_and_value_and_grad() -> None:
    program = compile_expression(TUTORIAL.replace("'", '"'), ["params", "inputs", "targets"])
    (value, grads) = jax.value_and_grad(program)({"W": a(W), "b": a(B)}, a(INPUTS), TARGETS)
    loss, dw, db = tutorial_closed_form(W, B)
    np.testing.assert_allclose(float(value), loss, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads["W"]), dw, rtol=1e-12)


def test_names_bound_to_parts_nested_lists_and_dicts_and_negative_indices() -> None:
    # loss = sum(tanh(x @ W0 + b0) @ W1) + b1 ; the second layer is reached as layers[-1].
    source = """\
layers = params['layers']
first = layers[0]
h = tanh(x @ first['W'] + first['b'])
sum(h @ layers[-1]['W']) + params['layers'][1]['b']
"""
    rng = np.random.default_rng(0)
    w0, b0, w1, x = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(4,)), rng.normal(size=(5, 3))
    params = {"layers": [{"W": a(w0), "b": a(b0)}, {"W": a(w1), "b": a(0.25)}], "unused": a([1.0, 2.0])}
    program = compile_expression(source, ["params", "x"])
    h = np.tanh(x @ w0 + b0)
    np.testing.assert_allclose(float(program(params, a(x))), np.sum(h @ w1) + 0.25, rtol=1e-12)

    grads = jax.grad(program)(params, a(x))
    assert tree_structure(grads) == tree_structure(params)
    dz = (1 - h**2) * w1  # d/dz of sum(tanh(z) @ w1), per row
    np.testing.assert_allclose(np.asarray(grads["layers"][0]["W"]), x.T @ dz, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads["layers"][0]["b"]), dz.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads["layers"][1]["W"]), h.sum(axis=0), rtol=1e-12)
    assert float(grads["layers"][1]["b"]) == 1.0  # added once, to the sum
    np.testing.assert_array_equal(np.asarray(grads["unused"]), [0.0, 0.0])


def test_indices_may_be_constant_expressions_and_tuples_index_like_lists() -> None:
    program = compile_expression("n = 2\nxs[n - 1] * xs[0] + xs[-1 * 2]", ["xs"])
    assert float(program((a(3.0), a(5.0)))) == 18.0
    grads = jax.grad(program)((a(3.0), a(5.0)))
    assert isinstance(grads, tuple)
    np.testing.assert_allclose([float(g) for g in grads], [5.0 + 1.0, 3.0])


def test_array_indexing_keeps_its_meaning_after_a_key_and_on_arrays() -> None:
    program = compile_expression("m = params['M']\n(m[0], m[1:, 0], m[None], m[..., -1])", ["params"])
    m = np.arange(6.0).reshape(2, 3)
    first, column, expanded, last = program({"M": a(m)})
    np.testing.assert_array_equal(np.asarray(first), m[0])
    np.testing.assert_array_equal(np.asarray(column), m[1:, 0])
    assert expanded.shape == (1, 2, 3)
    np.testing.assert_array_equal(np.asarray(last), m[..., -1])
    # a literal list in the program is still an array literal, indexed as one
    assert float(compile_expression("[x, 2 * x][1]", ["x"])(a(1.5))) == 3.0


def test_gradient_of_an_entry_picked_by_an_array_index_after_a_key() -> None:
    program = compile_expression("params['W'][1] ** 2", ["params"])
    grads = jax.grad(program)({"W": a([1.0, 3.0, 5.0])})
    np.testing.assert_array_equal(np.asarray(grads["W"]), [0.0, 6.0, 0.0])


def test_whole_pytrees_can_be_returned_and_used_as_aux() -> None:
    program = compile_expression("(sum(params['W'] ** 2), params, params['W'])", ["params"])
    params = {"W": a([1.0, 2.0]), "b": a(0.0)}
    loss, back, w = program(params)
    assert float(loss) == 5.0 and set(back) == {"W", "b"} and w.shape == (2,)
    grads, aux = jax.grad(compile_expression("(sum(params['W'] ** 2), params)", ["params"]), has_aux=True)(params)
    np.testing.assert_array_equal(np.asarray(grads["W"]), [2.0, 4.0])
    assert float(grads["b"]) == 0.0
    np.testing.assert_array_equal(np.asarray(aux["W"]), [1.0, 2.0])
    assert compile_expression("params", ["params"])(params) is params  # returned as it came


def test_jacobian_and_abstract_tracing_of_a_pytree_program() -> None:
    program = compile_expression("params['W'] * params['b']", ["params"])
    jac = jax.jacrev(program)({"W": a([1.0, 2.0]), "b": a(3.0)})
    np.testing.assert_array_equal(np.asarray(jac["W"]), 3.0 * np.eye(2))
    np.testing.assert_array_equal(np.asarray(jac["b"]), [1.0, 2.0])
    graph = jax.make_graph(program)({"W": jax.ShapeDtypeStruct((2,), np.float64),
                                     "b": jax.ShapeDtypeStruct((), np.float64)})
    assert graph.outvars[0].aval.shape == (2,)


# ----------------------------------------------------------------------------- errors


def test_a_missing_key_names_the_path_and_the_keys_that_exist() -> None:
    error = expr_error("z = 1\nsum(params['V']) + z", ["params"], {"W": a([1.0]), "b": a(0.0)})
    assert_at(error, 2, 5, re.escape("params['V']: no key 'V'; params has keys ['W', 'b']"))
    assert error.bare_message == "params['V']: no key 'V'; params has keys ['W', 'b']"


def test_a_missing_key_is_found_while_tracing_abstractly_too() -> None:
    spec = {"W": jax.ShapeDtypeStruct((2,), np.float64)}
    error = expr_error("sum(params['b'])", ["params"], spec, abstract=True)
    assert_at(error, 1, 5, re.escape("params['b']: no key 'b'; params has keys ['W']"))


def test_a_nested_missing_key_through_names_names_the_full_path() -> None:
    params = {"layers": [{"W": a([1.0]), "b": a(0.0)}]}
    error = expr_error("p = params['layers']\nlayer = p[0]\nlayer['X'] * 2", ["params"], params)
    assert_at(error, 3, 1, re.escape("params['layers'][0]['X']: no key 'X'; params['layers'][0] has keys ['W', 'b']"))


def test_an_index_out_of_range_names_the_length() -> None:
    params = {"layers": [a(1.0), a(2.0)]}
    error = expr_error("params['layers'][2] + 1", ["params"], params)
    assert_at(error, 1, 1, re.escape("params['layers'][2]: index 2 is out of range; params['layers'] is a list "
                                     "of 2 entries: valid indices are 0..1, or -2..-1 from the end"))
    assert_at(expr_error("x = 1\nx + xs[-3]", ["xs"], [a(1.0), a(2.0)]), 2, 5, re.escape("xs[-3]: index -3"))
    assert_at(expr_error("xs[0]", ["xs"], []), 1, 1, "xs is a list of 0 entries: it is empty")


def test_the_wrong_kind_of_key() -> None:
    params = {"W": a([1.0, 2.0]), "layers": [a(1.0)]}
    assert_at(expr_error("params['layers']['W']", ["params"], params), 1, 1,
              re.escape("params['layers']['W']: params['layers'] is a list of 1 entry; index it with an integer"))
    assert_at(expr_error("params[0]", ["params"], params), 1, 1,
              re.escape("params[0]: no key 0; params has keys ['W', 'layers']"))
    assert_at(expr_error("params['layers'][0:1]", ["params"], params), 1, 1,
              re.escape("params['layers']: a list of 1 entry is indexed by one key at a time"))
    assert_at(expr_error("params['layers'][0.5]", ["params"], params), 1, 1,
              re.escape("is indexed by a key string or an integer constant, e.g. params['layers'][0]; got float 0.5"))


def test_an_index_that_is_not_known_until_run_time_is_refused() -> None:
    error = expr_error("xs[sum(i)]", ["xs", "i"], [a(1.0), a(2.0)], jnp.asarray(np.array([1])), abstract=True)
    assert_at(error, 1, 1, "is indexed by a key string or an integer constant.*got an array of shape \\(\\)")


def test_a_string_key_on_an_array_leaf_is_an_error() -> None:
    params = {"W": a([1.0, 2.0, 3.0])}
    assert_at(expr_error("params['W']['x']", ["params"], params), 1, 1,
              re.escape("params['W'] is an array of shape (3,) and dtype float64, not an object: it has no key 'x'"))
    assert_at(expr_error("y = x * 2\ny['a']", ["x"], a([1.0])), 2, 1,
              re.escape("y is an array of shape (1,) and dtype float64, not an object"))


@pytest.mark.parametrize("source,line,col", [
    ("params * 2", 1, 1),
    ("sin(params)", 1, 5),
    ("-params", 1, 2),
    ("params < 1", 1, 1),
    ("sum(x=params)", 1, 7),
    ("sum([params['W'], params])", 1, 19),
    ("params['W'][params]", 1, 13),
    ("y = 2\ny * params", 2, 5),
])
def test_a_whole_dict_where_an_array_is_needed_points_at_the_name(source: str, line: int, col: int) -> None:
    params = {"W": a([1.0, 2.0]), "b": a(0.0)}
    error = expr_error(source, ["params"], params)
    assert_at(error, line, col, re.escape("params is an object with keys ['W', 'b'], not an array: index it, "
                                          "e.g. params['W']"))


def test_a_whole_list_or_a_bound_part_where_an_array_is_needed() -> None:
    params = {"layers": [a(1.0), a(2.0)]}
    error = expr_error("p = params['layers']\nsum(p)", ["params"], params)
    assert_at(error, 2, 5, re.escape("p (params['layers']) is a list of 2 entries, not an array: index it, e.g. p[0]"))
    error = expr_error("exp(params['layers'])", ["params"], params, abstract=True)
    assert_at(error, 1, 5, re.escape("params['layers'] is a list of 2 entries, not an array"))
    # today's message was "TypeError: cannot convert dict to an array of numbers"; nothing of it is left
    assert "TypeError" not in str(expr_error("params * 2", ["params"], {"W": a(1.0)}))


def test_a_long_key_list_is_cut_short() -> None:
    params = {f"k{i:03d}": a(1.0) for i in range(100)}
    message = str(expr_error("params['nope']", ["params"], params))
    assert "'k000', 'k001'" in message and "... (100 keys)]" in message and "'k099'" not in message
    message = str(expr_error("params['nope']", ["params"], {"k" * 10_000: a(1.0)}))
    assert len(message) < 200 and "'kkkk" in message


def test_strings_are_keys_only_as_a_whole_subscript_and_within_the_string_limit() -> None:
    compile_expression("x['a']", ["x"])  # a key: resolved when called
    for source, col in [("params['W', 'b']", 13), ("params['W':'b']", 12), ("params[0]['a' * 2]", 11)]:
        with pytest.raises(ExprError, match="a string is only allowed as a function argument") as info:
            compile_expression(source, ["params"])
        assert (info.value.line, info.value.col) == (1, col), str(info.value)
    with pytest.raises(ExprError, match="limited to 64 characters"):
        compile_expression("params['" + "k" * 65 + "']", ["params"])


def test_subscript_depth_is_bounded_by_max_depth() -> None:
    limits = Limits(max_depth=16)
    compile_expression("p" + "[0]" * 12, ["p"], limits)
    with pytest.raises(ExprError) as info:
        compile_expression("p" + "[0]" * 20, ["p"], limits)
    assert info.value.kind == "limit" and "max_depth" in str(info.value)


def test_nested_lists_deep_as_the_limit_allows_resolve() -> None:
    tree: Any = a(2.0)
    for _ in range(12):
        tree = [tree]
    program = compile_expression("p" + "[0]" * 12 + " * 3", ["p"], Limits(max_depth=16))
    assert float(program(tree)) == 6.0
    grads = jax.grad(program)(tree)
    assert tree_structure(grads) == tree_structure(tree)
    assert [float(g) for g in tree_leaves(grads)] == [3.0]
