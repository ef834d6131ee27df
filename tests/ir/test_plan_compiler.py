"""The plan compiler (engine.plan) on graphs built by hand: what it writes, and that it computes
what the graph computes.

A plan writes each equation as one line of Python, as the primitive's record spells it
(`Primitive.plan`): a ufunc that may write into a dying operand's buffer, a Python operator, or a
call of the implementation. These tests check buffer reuse (only buffers the plan owns, of the
result's shape and dtype, dead after the equation, and never one a view still reads), that inputs,
constants and outputs are never overwritten, when deadlines are checked, and that dead variables
are deleted.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _graphs import Builder, lit, run, var

from engine import primitives as P
from engine.core import deadline
from engine.errors import DeadlineExceeded
from engine.plan import DEADLINE_EVERY
from engine.plan import compile_plan as compile_with_chains

RNG = np.random.default_rng(11)
X = RNG.uniform(0.5, 2.0, 4)
Y = RNG.uniform(0.5, 2.0, 4)


def compile_plan(graph, **options):
    """The plan as the generator writes it, one line per equation (float64 elementwise chains
    would otherwise become single calls: engine/fused.py)."""
    return compile_with_chains(graph, chains=False, **options)


def lines(plan) -> list[str]:
    return [line.strip() for line in plan.source.splitlines()[1:]]


def matches_graph(graph, plan, *args: np.ndarray) -> None:
    copies = [a.copy() for a in args]
    got = plan(list(args))
    for g, want in zip(got, run(graph, *copies)):
        np.testing.assert_array_equal(g, want)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)  # the arguments were not written into


def test_a_chain_of_ufuncs_reuses_one_buffer() -> None:
    x, y = var((4,)), var((4,))
    b = Builder(x, y)
    t = b.apply(P.mul_p, x, y)  # a new buffer, owned by the plan
    u = b.apply(P.sin_p, t)  # t dies here: sin writes into it
    w = b.apply(P.exp_p, u)  # and so on
    g = b.graph(b.apply(P.add_p, w, x))
    plan = compile_plan(g)
    body = lines(plan)
    assert body[0] == "v2 = v0 * v1"  # arithmetic as an operator
    assert body[1] == "v3 = u_sin(v2, out=v2)" and body[3] == "v4 = u_exp(v3, out=v3)"
    assert "v5 = u_add(v4, v0, out=v4)" in body  # an input (v0) is read, never written
    matches_graph(g, plan, X, Y)


def test_by_default_a_float64_chain_is_one_call_with_the_same_bits() -> None:
    x, y = var((4,)), var((4,))
    b = Builder(x, y)
    t = b.apply(P.mul_p, x, y)
    g = b.graph(b.apply(P.add_p, b.apply(P.exp_p, b.apply(P.sin_p, t)), x))
    chained = compile_with_chains(g)
    assert lines(chained) == ["v2 = f0(v0, v1)", "_check_deadline()", "return [v2]"]  # one call, then a check
    for args in ([X, Y], [np.array([0.0, -0.0, np.inf, np.nan]), np.array([np.inf, 1.0, -1e308, 2.0])]):
        want, got = compile_plan(g)(list(args))[0], chained(list(args))[0]
        assert want.tobytes() == got.tobytes()


def test_inputs_constants_and_outputs_are_never_overwritten() -> None:
    x = var((4,))
    b = Builder(x)
    c = b.const(np.arange(4.0))
    s = b.apply(P.sin_p, x)  # operand: a graph input
    k = b.apply(P.cos_p, c)  # operand: a constant
    out1 = b.apply(P.exp_p, s)  # s dies: reused
    out2 = b.apply(P.neg_p, out1)  # out1 is an output: not reused
    g = b.graph(out1, out2, b.apply(P.add_p, k, c))
    plan = compile_plan(g)
    src = plan.source
    assert "u_sin(v0, out=" not in src and "u_cos(c0, out=" not in src
    assert re.search(r"= u_exp\(v\d+, out=v\d+\)", src)  # sin's result, owned, was reused
    assert "out=" not in [line for line in lines(plan) if "u_neg" in line or "-v" in line][0]
    constant = np.arange(4.0)
    matches_graph(g, plan, X)
    np.testing.assert_array_equal(g.consts[0], constant)


def test_a_buffer_a_view_still_reads_is_not_overwritten() -> None:
    x = var((4,))
    b = Builder(x)
    t = b.apply(P.mul_p, x, x)
    view = b.apply(P.reshape_p, t, shape=(2, 2))  # a view of t's buffer
    later = b.apply(P.exp_p, t)  # t's last use, but the view is still read below
    g = b.graph(b.apply(P.add_p, b.apply(P.reshape_p, later, shape=(2, 2)), view))
    plan = compile_plan(g)
    assert "u_exp(v1, out=v1)" not in plan.source
    matches_graph(g, plan, X)


def test_reuse_needs_the_same_shape_and_dtype_and_one_use_in_the_equation() -> None:
    x, s = var((4,)), var(())
    b = Builder(x, s)
    small = b.apply(P.mul_p, s, s)  # a 0-d result: NumPy scalars are immutable
    wide = b.apply(P.add_p, small, x)  # broadcast to (4,): small's buffer is too small
    sq = b.apply(P.mul_p, wide, lit(2.0))
    both = b.apply(P.mul_p, sq, sq)  # sq twice in one equation: not reused
    half = b.apply(P.convert_p, both, dtype="float32")  # another dtype: a call, never `out=`
    g = b.graph(half)
    body = lines(compile_plan(g))
    assert body[:2] == ["v2 = v1 * v1", "v3 = v2 + v0"]  # neither 0-d v2 nor input v0 is overwritten
    assert "v4 = u_mul(v3, k0, out=v3)" in body  # wide, of the result's shape and dtype, is
    assert "v5 = v4 * v4" in body and "v6 = f4(v5, dtype=t4_0)" in body  # attributes as keywords
    matches_graph(g, compile_plan(g), X, np.float64(1.5))


def test_dead_variables_are_deleted_after_their_last_use() -> None:
    x = var((4,))
    b = Builder(x)
    t = b.apply(P.reshape_p, x, shape=(2, 2))
    u = b.apply(P.reduce_sum_p, t, axes=(0,))
    g = b.graph(b.apply(P.integer_pow_p, u, y=2))
    body = lines(compile_plan(g))
    assert body.index("del v1") == body.index("v2 = f1(v1, axes=t1_0)") + 1
    assert "v3 = v2 * v2" in body  # x ** 2 as a product
    assert not any(line.startswith("del") and "v0" in line for line in body)  # inputs are the caller's


def test_deadlines_are_checked_after_superlinear_equations_and_every_few_others() -> None:
    a = var((3, 3))
    b = Builder(a)
    m = b.apply(P.matmul_p, a, a)  # superlinear: checked right after
    acc = m
    for _ in range(DEADLINE_EVERY + 1):
        acc = b.apply(P.sin_p, acc)
    g = b.graph(acc)
    body = lines(compile_plan(g))
    checks = [i for i, line in enumerate(body) if line == "_check_deadline()"]
    assert checks[0] == 1  # after the matmul
    assert len(checks) == 2  # and once after DEADLINE_EVERY equations
    assert "_check_deadline()" not in compile_plan(g, check_deadlines=False).source
    m33 = RNG.uniform(-1, 1, (3, 3))
    with deadline(0.0):
        with pytest.raises(DeadlineExceeded):
            compile_plan(g)([m33])
    with deadline(None):
        np.testing.assert_array_equal(compile_plan(g)([m33])[0], run(g, m33)[0])


def test_every_spelling_computes_what_the_implementation_computes() -> None:
    """For each primitive spelled as a ufunc or an operator, the plan and the interpreter agree."""
    for prim in (p for p in P.DECLARED if p.plan.ufunc is not None or p.plan.operator is not None):
        operands = [var((4,)) for _ in range(prim.arity)]
        b = Builder(*operands)
        attrs = {"y": 3} if prim is P.integer_pow_p else {}
        t = b.apply(P.mul_p, operands[0], lit(1.5))  # owned, so a ufunc may write into it
        g = b.graph(b.apply(prim, t, *operands[1:], **attrs))
        args = [X, Y][:prim.arity]
        np.testing.assert_array_equal(compile_plan(g)(list(args))[0], run(g, *args)[0], err_msg=prim.name)


def test_a_graph_capturing_a_tracer_cannot_be_compiled() -> None:
    import engine

    def f(x):
        inner = engine.make_graph(lambda y: y * x)(1.0)  # captures the tracer x
        with pytest.raises(ValueError, match="captures traced values"):
            compile_plan(inner)
        return x

    engine.grad(f)(2.0)
