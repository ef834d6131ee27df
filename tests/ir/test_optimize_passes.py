"""Each optimisation pass of engine.optimize, on graphs built by hand.

Every test builds a small graph from the IR's variables and equations (tests/_graphs.py), runs
one pass, and checks both what the pass did to the graph (which equations remain) and that the
graph still computes the same numbers. What a pass may assume about a primitive comes from its
record (`Primitive.algebra`).
"""

from __future__ import annotations

import numpy as np
import pytest
from _graphs import Builder, lit, ops, run, var

import engine as jax
import engine.numpy as jnp
from engine import primitives as P
from engine.core import Literal
from engine.optimize import (
    MAX_FOLDED_ELEMENTS,
    canonicalize_arithmetic,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fold_constants,
    optimize,
    simplify,
)

RNG = np.random.default_rng(3)
X = RNG.uniform(0.5, 2.0, 3)
Y = RNG.uniform(0.5, 2.0, 3)


def same_values(before, after, *args) -> None:
    for a, b in zip(run(before, *args), run(after, *args)):
        np.testing.assert_allclose(b, a, rtol=1e-15)


# ----------------------------------------------------------------------------- dead code


def test_dead_code_drops_unused_equations_and_constants() -> None:
    x = var()
    b = Builder(x)
    used, unused = b.const(np.ones(3)), b.const(np.zeros(3))
    s = b.apply(P.sin_p, x)
    b.apply(P.cos_p, x)  # its result is never used
    b.apply(P.mul_p, s, unused)  # neither is this one, which is unused's only use
    out = b.apply(P.add_p, s, used)
    g = b.graph(out)
    pruned = eliminate_dead_code(g)
    assert ops(pruned) == ["sin", "add"]
    assert pruned.constvars == [used]
    same_values(g, pruned, X)


# ----------------------------------------------------------------------------- common subexpressions


def test_cse_merges_repeats_and_commutative_operand_orders_only() -> None:
    x, y = var(), var()
    b = Builder(x, y)
    xy, yx = b.apply(P.mul_p, x, y), b.apply(P.mul_p, y, x)  # one node: mul is commutative
    d1, d2 = b.apply(P.sub_p, x, y), b.apply(P.sub_p, y, x)  # two nodes: sub is not
    s1, s2 = b.apply(P.sin_p, x), b.apply(P.sin_p, x)  # one node: a repeat
    g = b.graph(b.apply(P.add_p, xy, yx), d1, d2, b.apply(P.add_p, s1, s2))
    merged = eliminate_dead_code(eliminate_common_subexpressions(g))
    assert ops(merged).count("mul") == 1 and ops(merged).count("sub") == 2 and ops(merged).count("sin") == 1
    same_values(g, merged, X, Y)


def test_cse_merges_equal_constants_but_never_equations_with_unhashable_attributes() -> None:
    x = var()
    b = Builder(x)
    c1, c2 = b.const(np.arange(3.0)), b.const(np.arange(3.0))
    r1 = b.apply(P.reshape_p, x, shape=[3])  # a list: unhashable attributes are never merged
    r2 = b.apply(P.reshape_p, x, shape=[3])
    g = b.graph(b.apply(P.add_p, b.apply(P.mul_p, r1, c1), b.apply(P.mul_p, r2, c2)))
    merged = eliminate_dead_code(eliminate_common_subexpressions(g))
    assert len(merged.constvars) == 1
    assert ops(merged).count("reshape") == 2 and ops(merged).count("mul") == 2
    same_values(g, merged, X)


# ----------------------------------------------------------------------------- constant folding


def test_constant_folding_evaluates_equations_of_constants() -> None:
    x = var()
    b = Builder(x)
    c = b.const(np.array([0.1, 0.2, 0.3]))
    folded_array = b.apply(P.exp_p, c)  # becomes a constant
    folded_scalar = b.apply(P.mul_p, lit(2.0), lit(3.0))  # becomes the literal 6.0
    big = b.apply(P.broadcast_p, lit(1.0), shape=(MAX_FOLDED_ELEMENTS + 1,))  # too large to fold
    g = b.graph(b.apply(P.mul_p, x, folded_array), b.apply(P.mul_p, x, folded_scalar),
                b.apply(P.reduce_sum_p, big, axes=(0,)))
    folded = eliminate_dead_code(fold_constants(g))
    assert ops(folded) == ["broadcast_to", "mul", "mul", "reduce_sum"]
    by_scalar = folded.eqns[2]
    assert isinstance(by_scalar.inputs[1], Literal) and by_scalar.inputs[1].value == 6.0
    np.testing.assert_array_equal(folded.consts[-1], np.exp([0.1, 0.2, 0.3]))
    same_values(g, folded, X)


# ----------------------------------------------------------------------------- algebraic simplification


IDENTITIES = [
    ("x * 1", lambda b, x: b.apply(P.mul_p, x, lit(1.0)), "mul"),
    ("1 * x", lambda b, x: b.apply(P.mul_p, lit(1.0), x), "mul"),
    ("x + 0", lambda b, x: b.apply(P.add_p, x, lit(0.0)), "add"),
    ("0 + x", lambda b, x: b.apply(P.add_p, lit(0.0), x), "add"),
    ("x - 0", lambda b, x: b.apply(P.sub_p, x, lit(0.0)), "sub"),
    ("x / 1", lambda b, x: b.apply(P.div_p, x, lit(1.0)), "div"),
    ("x ** 1", lambda b, x: b.apply(P.integer_pow_p, x, y=1), "integer_pow"),
    ("reshape to its own shape", lambda b, x: b.apply(P.reshape_p, x, shape=(3,)), "reshape"),
    ("broadcast to its own shape", lambda b, x: b.apply(P.broadcast_p, x, shape=(3,)), "broadcast_to"),
    ("convert to its own dtype", lambda b, x: b.apply(P.convert_p, x, dtype="float64"), "convert_element_type"),
    ("sum over no axes", lambda b, x: b.apply(P.reduce_sum_p, x, axes=()), "reduce_sum"),
    ("x[:]", lambda b, x: b.apply(P.gather_p, x, index=(("slice", None, None, None),)), "gather"),
    ("x[0:3]", lambda b, x: b.apply(P.gather_p, x, index=(("slice", 0, 3, 1),)), "gather"),
    ("x[...]", lambda b, x: b.apply(P.gather_p, x, index=(("ellipsis",),)), "gather"),
    ("transpose by the identity", lambda b, x: b.apply(P.transpose_p, x, perm=(0,)), "transpose"),
]
NOT_IDENTITIES = [
    ("0 - x", lambda b, x: b.apply(P.sub_p, lit(0.0), x)),
    ("1 / x", lambda b, x: b.apply(P.div_p, lit(1.0), x)),
    ("x * 2", lambda b, x: b.apply(P.mul_p, x, lit(2.0))),
    ("x ** 2", lambda b, x: b.apply(P.integer_pow_p, x, y=2)),
    ("x[1:]", lambda b, x: b.apply(P.gather_p, x, index=(("slice", 1, None, None),))),
    ("x * ones((2, 3)): broadcasts, a new shape", lambda b, x: b.apply(P.mul_p, x, b.const(np.ones((2, 3))))),
]


@pytest.mark.parametrize("build, prim", [c[1:] for c in IDENTITIES], ids=[c[0] for c in IDENTITIES])
def test_simplify_removes_identities(build, prim: str) -> None:
    x = var()
    b = Builder(x)
    g = b.graph(b.apply(P.sin_p, build(b, x)))
    assert prim in ops(g)
    simple = eliminate_dead_code(simplify(g))
    assert ops(simple) == ["sin"] and simple.eqns[0].inputs == [x]
    same_values(g, simple, X)


@pytest.mark.parametrize("build", [c[1] for c in NOT_IDENTITIES], ids=[c[0] for c in NOT_IDENTITIES])
def test_simplify_keeps_what_is_not_an_identity(build) -> None:
    x = var()
    b = Builder(x)
    g = b.graph(build(b, x))
    simple = simplify(g)
    assert ops(simple) == ops(g)
    same_values(g, simple, X)


def test_simplify_cancels_involutions_and_composes_nested_applications() -> None:
    x = var((2, 3))
    b = Builder(x)
    neg2 = b.apply(P.neg_p, b.apply(P.neg_p, x))  # -(-x) is x
    r = b.apply(P.reshape_p, b.apply(P.reshape_p, x, shape=(3, 2)), shape=(6,))  # one reshape of x
    t_back = b.apply(P.transpose_p, b.apply(P.transpose_p, x, perm=(1, 0)), perm=(1, 0))  # x itself
    x3 = b.apply(P.reshape_p, x, shape=(1, 2, 3))
    t_comp = b.apply(P.transpose_p, b.apply(P.transpose_p, x3, perm=(1, 2, 0)), perm=(2, 0, 1))  # identity
    t_two = b.apply(P.transpose_p, b.apply(P.transpose_p, x3, perm=(1, 2, 0)), perm=(1, 0, 2))
    r_same = b.apply(P.reshape_p, b.apply(P.reshape_p, x, shape=(6,)), shape=(2, 3))  # back to x
    g = b.graph(neg2, r, t_back, t_comp, t_two, r_same)
    simple = eliminate_dead_code(simplify(g))
    assert simple.outvars[0] is x and simple.outvars[2] is x and simple.outvars[5] is x
    assert "neg" not in ops(simple)
    reshape_of_x = [e for e in simple.eqns if e.outputs[0] is simple.outvars[1]]
    assert reshape_of_x[0].inputs == [x] and reshape_of_x[0].attrs["shape"] == (6,)
    composed = [e for e in simple.eqns if e.outputs[0] is simple.outvars[4]][0]
    assert composed.prim is P.transpose_p and composed.attrs == {"perm": (2, 1, 0)}
    assert composed.inputs[0] is x3 or composed.inputs[0] in [e.outputs[0] for e in simple.eqns]
    same_values(g, simple, RNG.uniform(-1, 1, (2, 3)))


# ----------------------------------------------------------------------------- canonical sums and products


def test_canonical_forms_merge_equal_expressions_built_in_different_orders() -> None:
    x, y = var(), var()
    b = Builder(x, y)
    xy = b.apply(P.mul_p, x, y)
    yx = b.apply(P.mul_p, y, x)
    total = b.apply(P.add_p, b.apply(P.add_p, xy, yx), b.apply(P.neg_p, b.apply(P.mul_p, lit(2.0), xy)))
    g = b.graph(total, b.apply(P.sub_p, b.apply(P.add_p, x, y), b.apply(P.add_p, y, x)))
    canon = eliminate_dead_code(canonicalize_arithmetic(g))
    # xy and yx are one monomial, so 2xy - 2xy is xy * 0, and (x + y) - (y + x) is x * 0 + y * 0: the
    # cancelled terms are kept multiplied by zero, because as written these are NaN for an infinite x
    assert ops(canon).count("mul") == 4 and len(canon.eqns) == 5  # x*y, (x*y)*0, x*0, y*0, and their sum
    assert all(np.all(v == 0) and v.shape == (3,) for v in run(canon, X, Y))
    infinite = np.array([np.inf, 1.0, np.nan])
    with np.errstate(invalid="ignore"):
        as_written = run(g, infinite, Y)
        for got, want in zip(run(canon, infinite, Y), as_written):
            np.testing.assert_array_equal(got, want)  # NaN where x is inf or NaN, 0 elsewhere
    square = Builder(x)
    sq = square.apply(P.mul_p, x, x)
    g2 = square.graph(square.apply(P.mul_p, sq, square.apply(P.integer_pow_p, x, y=3)))  # x*x * x**3 = x**5
    canon2 = eliminate_dead_code(canonicalize_arithmetic(g2))
    assert ops(canon2) == ["integer_pow"] and canon2.eqns[0].attrs == {"y": 5}
    same_values(g2, canon2, X)


def test_optimize_runs_every_pass_and_keeps_the_trees() -> None:
    graph = jax.make_graph(jax.grad(jax.grad(jax.grad(lambda v: jnp.tanh(v["a"])))))({"a": 0.3})
    small = optimize(graph)
    assert small.num_nodes < graph.num_nodes
    assert small.in_tree == graph.in_tree and small.out_tree == graph.out_tree
    assert float(small({"a": 0.3})["a"]) == pytest.approx(float(graph({"a": 0.3})["a"]), rel=1e-6)
