"""Every primitive is one complete record (engine/primitive.py), and an incomplete one cannot be declared.

The record of a primitive holds its implementation, shape/dtype rule, derivative rules, batching
rule, plan spelling and algebraic properties; the interpreters, the optimiser and the plan
compiler read nothing else. These tests enumerate every declared primitive (including those a
graph document cannot name) and check each record, then check that `declare` refuses records
with a part missing or inconsistent, at declaration rather than when a transformation needs it.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine.numpy as jnp
from engine import primitives as P
from engine.core import ShapedArray
from engine.custom import custom_jvp_call_p, custom_vjp_call_p
from engine.expr import FUNCTIONS
from engine.primitive import (
    DECLARED,
    PRIMITIVES,
    Algebra,
    Facade,
    Linear,
    PerInput,
    Plan,
    PrimitiveDeclarationError,
    WholeEquation,
    declare,
    record_problems,
)

EVERY = sorted(DECLARED, key=lambda p: p.name)


def test_every_primitive_is_declared_and_registered_once() -> None:
    names = [p.name for p in DECLARED]
    assert len(names) == len(set(names))
    assert set(PRIMITIVES) <= set(names)
    assert all(PRIMITIVES[name] is prim for prim in DECLARED for name in [prim.name] if name in PRIMITIVES)
    # The two calls of Python code are declared too; only custom_vjp_call is in the catalogue
    # (a graph reader refuses it by its record), custom_jvp_call is kept out of it altogether.
    assert custom_vjp_call_p in DECLARED and custom_jvp_call_p in DECLARED
    assert "custom_jvp_call" not in PRIMITIVES
    assert [p.name for p in DECLARED if p.python_code] == ["custom_vjp_call", "custom_jvp_call"]


@pytest.mark.parametrize("prim", EVERY, ids=[p.name for p in EVERY])
def test_record_is_complete(prim: P.Primitive) -> None:
    assert record_problems(prim) == []
    assert callable(prim.impl) and callable(prim.abstract) and callable(prim.batch)
    assert isinstance(prim.plan, Plan) and isinstance(prim.algebra, Algebra)
    assert prim.doc and isinstance(prim.attr_names, tuple)
    operands = range(prim.arity if prim.arity is not None else 4)
    for mode in ("vjp", "jvp"):
        rules = getattr(prim, mode)
        if isinstance(rules, PerInput):
            # a rule (or an explicit None: no derivative through that operand) for every operand
            assert all(rules.rule(i) is None or callable(rules.rule(i)) for i in operands)
            assert any(callable(rules.rule(i)) or rules.rule(i) is None for i in operands)
        elif isinstance(rules, WholeEquation):
            assert prim.multiple_results and callable(rules.fn)
        else:
            assert rules is None or (isinstance(rules, Linear) and mode == "jvp")
    if prim.facade is not None:
        assert getattr(jnp, prim.facade.name) is not None and prim.facade.name in FUNCTIONS


def test_primitives_without_derivatives_have_non_differentiable_results() -> None:
    """A primitive declared without a reverse-mode rule (vjp=None) must have a result that carries
    no derivative (booleans, integers), or hold Python code with only a forward rule missing."""
    f32 = ShapedArray((2,), np.dtype("float32"))
    for prim in EVERY:
        if prim.vjp is not None or prim.python_code:
            continue
        if prim.name in ("not", "reduce_and", "reduce_or", "and", "or", "xor"):
            avals = [ShapedArray((2,), np.dtype(bool))] * (prim.arity or 1)
        elif prim.name == "floor_divide_int":
            avals = [ShapedArray((2,), np.dtype("int32"))] * 2
        else:
            avals = [f32] * (prim.arity or 1)
        attrs = {"axes": (0,)} if "axes" in prim.attr_names else {"axis": 0} if "axis" in prim.attr_names else {}
        out = prim.abstract(*avals, **attrs)
        assert out.dtype.kind in "biu", prim.name


def test_ring_roles_and_identities_are_those_of_arithmetic() -> None:
    roles = {p.name: p.algebra.ring for p in EVERY if p.algebra.ring}
    assert roles == {"add": "add", "sub": "sub", "neg": "neg", "mul": "mul", "integer_pow": "integer_pow"}
    assert P.add_p.algebra.left_identity == P.add_p.algebra.right_identity == 0
    assert P.mul_p.algebra.left_identity == P.mul_p.algebra.right_identity == 1
    assert P.sub_p.algebra.left_identity is None and P.sub_p.algebra.right_identity == 0
    assert P.div_p.algebra.left_identity is None and P.div_p.algebra.right_identity == 1
    commutative = {p.name for p in EVERY if p.algebra.commutative}
    assert commutative == {"add", "mul", "max", "min", "eq", "ne", "and", "or", "xor", "hypot"}
    # commutative means it: swapping the operands changes nothing
    rng = np.random.default_rng(0)
    for name in commutative:
        prim = PRIMITIVES[name]
        x, y = (rng.uniform(-2, 2, 5) > 0, rng.uniform(-2, 2, 5) > 0) if name in ("and", "or", "xor") else \
            (rng.uniform(-2, 2, 5), rng.uniform(-2, 2, 5))
        np.testing.assert_array_equal(prim.impl(x, y), prim.impl(y, x))


# ----------------------------------------------------------------------------- declaring


def _parts(**overrides):
    parts = dict(impl=np.negative, abstract=lambda x: x, vjp=PerInput(lambda g, ans, x: -g),
                 jvp=PerInput(lambda t, ans, x: -t), batch=lambda *a: None, plan=Plan(), algebra=Algebra(),
                 arity=1, doc="a test primitive", register=False)
    parts.update(overrides)
    return parts


def test_a_rule_left_out_is_an_error_at_declaration() -> None:
    for missing in ("impl", "abstract", "vjp", "jvp", "batch", "plan", "algebra", "arity", "doc"):
        parts = _parts()
        del parts[missing]
        with pytest.raises(TypeError, match=missing):
            declare(f"incomplete_{missing}", **parts)


@pytest.mark.parametrize("overrides, message", [
    ({"vjp": PerInput(lambda g, ans, x: g, None)}, "2 rule"),
    ({"arity": 2, "abstract": lambda x, y: x}, "1 rule"),
    ({"vjp": Linear()}, "Linear is a forward-mode rule"),
    ({"jvp": WholeEquation(lambda *a: [])}, "WholeEquation"),
    ({"vjp": lambda g, ans, x: g}, "must be PerInput"),
    ({"plan": {"ufunc": np.negative}}, "must be a Plan"),
    ({"algebra": Algebra(ring="power")}, "algebra.ring"),
    ({"algebra": Algebra(commutative=True)}, "binary"),
    ({"doc": ""}, "doc"),
    ({"batch": None}, "batch"),
    ({"facade": Facade("negate", promote="int")}, "facade.promote"),
    ({"multiple_results": True, "vjp": None, "jvp": None, "plan": Plan(ufunc=np.negative)}, "ufunc"),
], ids=["too many rules", "too few rules", "linear vjp", "whole-equation rule", "bare function", "plan",
        "ring role", "commutative unary", "no doc", "no batching rule", "facade promotion", "ufunc of several"])
def test_an_inconsistent_record_is_refused(overrides: dict, message: str) -> None:
    before = list(DECLARED)
    with pytest.raises(PrimitiveDeclarationError, match=message):
        declare("inconsistent", **_parts(**overrides))
    assert DECLARED == before  # nothing half-declared is left behind


def test_a_name_cannot_be_declared_twice() -> None:
    with pytest.raises(PrimitiveDeclarationError, match="declared twice"):
        declare("add", **_parts())
    with pytest.raises(PrimitiveDeclarationError, match="declared twice"):
        declare("custom_jvp_call", **_parts())
