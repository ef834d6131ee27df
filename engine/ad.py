"""Automatic differentiation of graphs: reverse mode (VJP) and forward mode (JVP) interpreters.

Both walk a graph's equations and call the primitives' rules. Run on Arrays they compute
derivatives at once; run on tracers (inside an enclosing trace) they record the derivative
computation as a new graph, which can itself be differentiated, optimised, cached or sent.
Cotangents and tangents that are known to be zero are never materialised (None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.array import Array
from engine.core import Graph, Literal, Tracer, Var, bind
from engine.errors import DifferentiationError
from engine.primitive import Linear, WholeEquation
from engine.primitives import broadcast_to, convert, zeros


def _read(env: dict[Var, Any], atom: Any) -> Any:
    if isinstance(atom, Literal):
        return Array(atom.value)
    return env[atom]


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


def _differentiable(var: Var) -> bool:
    return var.aval.dtype.kind in "fc"


def _check_defined(eqn: Any, vals: list[Any], wanted: list[bool]) -> None:
    """Let the primitive refuse a derivative its rules would get wrong for these operands."""
    if eqn.prim.guard is not None:
        eqn.prim.guard(vals, wanted, eqn.attrs)


def _cotangents(eqn: Any, g: Any, ans: Any, vals: list[Any], needed: list[bool]) -> list[Any]:
    """The equation's contribution to each operand's cotangent (None for zero or not needed)."""
    prim = eqn.prim
    rules = prim.vjp
    if isinstance(rules, WholeEquation):
        return rules.fn(g, ans, needed, *vals, **eqn.attrs)
    if rules is None:
        if not any(needed):
            return [None] * len(vals)
        raise DifferentiationError(
            f"`{prim.name}` has no reverse-mode derivative rule, but a value being differentiated "
            "flows through it. Wrap its input in `stop_gradient` if it should be treated as constant."
        )
    out = []
    for i, need in enumerate(needed):
        rule = rules.rule(i) if need else None
        out.append(rule(g, ans, *vals, **eqn.attrs) if rule is not None else None)
    return out


def _bind_env(graph: Graph, args: list[Any], consts: list[Any] | None) -> dict[Var, Any]:
    env: dict[Var, Any] = dict(zip(graph.invars, args))
    for v, c in zip(graph.constvars, graph.consts if consts is None else consts):
        env[v] = c if isinstance(c, (Array, Tracer)) else Array(c)
    return env


def vjp_graph(
    graph: Graph, args: list[Any], wrt: list[bool], known: dict[Var, Any] | None = None
) -> tuple[list[Any], Callable[[list[Any]], list[Any]]]:
    """Run `graph` forward on `args` and return its outputs and a backward function.

    `wrt[i]` says whether input i is differentiated. `known` holds values already computed for
    some variables (by a concrete trace), which the forward pass then reuses instead of recomputing.
    The backward function maps output cotangents (None for zero) to input cotangents (None for zero).
    """
    env = _bind_env(graph, args, None)
    active: set[Var] = {v for v, w in zip(graph.invars, wrt) if w and _differentiable(v)}
    for eqn in graph.eqns:
        outs = eqn.outputs
        if known is not None and outs[0] in known:
            for v in outs:
                env[v] = Array(known[v])
        else:
            result = bind(eqn.prim, tuple(_read(env, a) for a in eqn.inputs), eqn.attrs)
            if eqn.prim.multiple_results:
                env.update(zip(outs, result))
            else:
                env[outs[0]] = result
        if any(isinstance(a, Var) and a in active for a in eqn.inputs):
            for v in outs:
                if _differentiable(v):
                    active.add(v)
    outputs = [_read(env, a) for a in graph.outvars]

    def backward(cotangents: list[Any]) -> list[Any]:
        ct: dict[Var, Any] = {}
        for atom, c in zip(graph.outvars, cotangents):
            if c is not None and isinstance(atom, Var) and atom in active:
                ct[atom] = _add(ct.get(atom), c)
        for eqn in reversed(graph.eqns):
            outs = eqn.outputs
            if not any(v in ct for v in outs):
                continue
            prim = eqn.prim
            if prim.multiple_results:
                g = tuple(ct.pop(v, None) for v in outs)
                ans = tuple(env[v] for v in outs)
            else:
                g = ct.pop(outs[0])
                ans = env[outs[0]]
            vals = [_read(env, a) for a in eqn.inputs]
            needed = [isinstance(a, Var) and a in active for a in eqn.inputs]
            _check_defined(eqn, vals, needed)
            contributions = _cotangents(eqn, g, ans, vals, needed)
            for atom, need, c in zip(eqn.inputs, needed, contributions):
                if need and c is not None:
                    ct[atom] = _add(ct.get(atom), _match_dtype(c, atom))
        return [ct.get(v) if w else None for v, w in zip(graph.invars, wrt)]

    return outputs, backward


def _match_dtype(c: Any, var: Var) -> Any:
    if c.dtype != var.aval.dtype:
        c = convert(c, var.aval.dtype)
    if tuple(c.shape) != var.aval.shape:
        c = broadcast_to(c, var.aval.shape)
    return c


def jvp_graph(graph: Graph, args: list[Any], tangents: list[Any]) -> tuple[list[Any], list[Any]]:
    """Push tangents (None for zero) through `graph` alongside its values."""
    env = _bind_env(graph, args, None)
    tan: dict[Var, Any] = {v: t for v, t in zip(graph.invars, tangents) if t is not None and _differentiable(v)}
    for eqn in graph.eqns:
        vals = [_read(env, a) for a in eqn.inputs]
        result = bind(eqn.prim, tuple(vals), eqn.attrs)
        outs = eqn.outputs
        if eqn.prim.multiple_results:
            env.update(zip(outs, result))
        else:
            env[outs[0]] = result
        ts = [tan.get(a) if isinstance(a, Var) else None for a in eqn.inputs]
        if all(t is None for t in ts) or not any(_differentiable(v) for v in outs):
            continue
        _check_defined(eqn, vals, [t is not None for t in ts])
        prim = eqn.prim
        rules = prim.jvp
        if rules is None:
            raise DifferentiationError(
                f"`{prim.name}` has no forward-mode derivative rule, but a value being "
                "differentiated flows through it. Use reverse mode (grad, vjp, jacrev) instead."
            )
        if isinstance(rules, Linear):  # the primitive itself, applied to the tangents
            filled = [t if t is not None else zeros(v.shape, v.dtype) for t, v in zip(ts, vals)]
            tan[outs[0]] = bind(prim, tuple(filled), eqn.attrs)
            continue
        if isinstance(rules, WholeEquation):
            out_tangents = rules.fn(ts, result, *vals, **eqn.attrs)
            for v, t in zip(outs, out_tangents):
                if t is not None:
                    tan[v] = t
            continue
        total = None
        for i, t in enumerate(ts):
            if t is None:
                continue
            rule = rules.rule(i)
            if rule is None:
                continue
            contribution = rule(t, result, *vals, **eqn.attrs)
            total = _add(total, contribution)
        if total is not None:
            tan[outs[0]] = _match_dtype(total, outs[0])
    outputs = [_read(env, a) for a in graph.outvars]
    out_tangents = [tan.get(a) if isinstance(a, Var) else None for a in graph.outvars]
    return outputs, out_tangents


def zeros_for(x: Any) -> Any:
    """The zero derivative of x (float32 zeros for an integer or boolean x)."""
    dtype = x.dtype if x.dtype.kind in "fc" else np.dtype("float32")
    return zeros(x.shape, dtype)
