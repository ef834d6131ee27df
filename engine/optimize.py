"""Optimisation passes over graphs: constant folding, algebraic simplification, common-
subexpression elimination and dead-code elimination.

Differentiation produces many multiplications by one, additions of zero, and repeats of the same
subexpression (the n-th derivative of tanh recomputes tanh and its powers over and over); these
passes take the graph of the n-th derivative from exponential to polynomial size in n.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.core import Eqn, Graph, Literal, Tracer, Var

# Folding a constant expression must not materialise something huge (e.g. broadcast_to a
# scalar to a large shape): fold only results up to this many elements.
MAX_FOLDED_ELEMENTS = 1 << 16


def optimize(graph: Graph, *, max_rounds: int = 8) -> Graph:
    """The graph with every pass applied until nothing changes (a new graph; the input is kept)."""
    g = Graph(list(graph.invars), list(graph.constvars), list(graph.consts), list(graph.eqns),
              list(graph.outvars))
    for _ in range(max_rounds):
        before = (len(g.eqns), len(g.constvars))
        g = eliminate_dead_code(eliminate_common_subexpressions(simplify(fold_constants(g))))
        if (len(g.eqns), len(g.constvars)) == before:
            break
    for attr in ("in_tree", "out_tree"):
        if hasattr(graph, attr):
            setattr(g, attr, getattr(graph, attr))
    return g


def _substitute(atom: Any, subst: dict[Var, Any]) -> Any:
    while isinstance(atom, Var) and atom in subst:
        atom = subst[atom]
    return atom


def _rebuild(graph: Graph, eqns: list[Eqn], subst: dict[Var, Any],
             constvars: list[Var] | None = None, consts: list[Any] | None = None) -> Graph:
    new_eqns = [Eqn(e.prim, [_substitute(a, subst) for a in e.inputs], e.outputs, e.attrs) for e in eqns]
    outvars = [_substitute(a, subst) for a in graph.outvars]
    return Graph(graph.invars, graph.constvars if constvars is None else constvars,
                 graph.consts if consts is None else consts, new_eqns, outvars)


# ----------------------------------------------------------------------------- dead code


def eliminate_dead_code(graph: Graph) -> Graph:
    live: set[Var] = {a for a in graph.outvars if isinstance(a, Var)}
    kept: list[Eqn] = []
    for eqn in reversed(graph.eqns):
        if any(v in live for v in eqn.outputs):
            kept.append(eqn)
            live.update(a for a in eqn.inputs if isinstance(a, Var))
    kept.reverse()
    pairs = [(v, c) for v, c in zip(graph.constvars, graph.consts) if v in live]
    return Graph(graph.invars, [v for v, _ in pairs], [c for _, c in pairs], kept, list(graph.outvars))


# ----------------------------------------------------------------------------- CSE


def _atom_key(atom: Any) -> Any:
    if isinstance(atom, Literal):
        value = np.asarray(atom.value)
        return ("lit", value.dtype.str, value.tobytes())
    return atom


def _attrs_key(attrs: dict[str, Any]) -> Any:
    try:
        key = tuple(sorted(attrs.items()))
        hash(key)
        return key
    except TypeError:
        return None  # unhashable attributes: never merged


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    seen: dict[Any, list[Var]] = {}
    subst: dict[Var, Any] = {}
    kept: list[Eqn] = []
    # Identical constants bound twice become one.
    const_seen: dict[Any, Var] = {}
    for v, c in zip(graph.constvars, graph.consts):
        if isinstance(c, np.ndarray) and c.size <= MAX_FOLDED_ELEMENTS:
            key = (c.dtype.str, c.shape, c.tobytes())
            if key in const_seen:
                subst[v] = const_seen[key]
            else:
                const_seen[key] = v
    for eqn in graph.eqns:
        inputs = [_substitute(a, subst) for a in eqn.inputs]
        attrs_key = _attrs_key(eqn.attrs)
        if attrs_key is None:
            kept.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
            continue
        key = (eqn.prim.name, tuple(_atom_key(a) for a in inputs), attrs_key)
        previous = seen.get(key)
        if previous is not None:
            for old, new in zip(eqn.outputs, previous):
                subst[old] = new
            continue
        seen[key] = eqn.outputs
        kept.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
    return _rebuild(graph, kept, subst)


# ----------------------------------------------------------------------------- constant folding


def fold_constants(graph: Graph) -> Graph:
    """Evaluate equations whose inputs are all known constants."""
    values: dict[Var, np.ndarray] = {
        v: c for v, c in zip(graph.constvars, graph.consts) if not isinstance(c, Tracer)
    }
    subst: dict[Var, Any] = {}
    kept: list[Eqn] = []
    constvars = list(graph.constvars)
    consts = list(graph.consts)

    def const_value(atom: Any) -> Any:
        if isinstance(atom, Literal):
            return atom.value
        return values.get(atom)

    for eqn in graph.eqns:
        inputs = [_substitute(a, subst) for a in eqn.inputs]
        raw = [const_value(a) for a in inputs]
        foldable = (
            all(r is not None for r in raw)
            and not eqn.prim.multiple_results
            and eqn.outputs[0].aval.size <= MAX_FOLDED_ELEMENTS
            and eqn.prim.name != "custom_vjp_call"
        )
        if foldable:
            with np.errstate(all="ignore"):
                result = np.asarray(eqn.prim.impl(*raw, **eqn.attrs))
            out = eqn.outputs[0]
            if result.ndim == 0:
                subst[out] = Literal(result.astype(out.aval.dtype)[()])
            else:
                values[out] = result
                constvars.append(out)
                consts.append(result)
            continue
        kept.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
    return _rebuild(graph, kept, subst, constvars, consts)


# ----------------------------------------------------------------------------- simplification


def _literal_equals(atom: Any, number: float) -> bool:
    if not isinstance(atom, Literal):
        return False
    value = np.asarray(atom.value)
    return value.ndim == 0 and value.item() == number


def _same_type(atom: Any, out: Var) -> bool:
    return atom.aval.shape == out.aval.shape and atom.aval.dtype == out.aval.dtype


def _identity_operand(eqn: Eqn, inputs: list[Any]) -> Any:
    """The operand this equation merely passes through, if it is an identity; else None."""
    name = eqn.prim.name
    out = eqn.outputs[0]
    if name in ("mul",):
        for i, j in ((0, 1), (1, 0)):
            if _literal_equals(inputs[i], 1) and _same_type(inputs[j], out):
                return inputs[j]
    elif name == "add":
        for i, j in ((0, 1), (1, 0)):
            if _literal_equals(inputs[i], 0) and _same_type(inputs[j], out):
                return inputs[j]
    elif name in ("sub",):
        if _literal_equals(inputs[1], 0) and _same_type(inputs[0], out):
            return inputs[0]
    elif name == "div":
        if _literal_equals(inputs[1], 1) and _same_type(inputs[0], out):
            return inputs[0]
    elif name == "integer_pow":
        if eqn.attrs["y"] == 1:
            return inputs[0]
    elif name in ("reshape", "broadcast_to", "convert_element_type", "transpose"):
        if _same_type(inputs[0], out) and (name != "transpose" or
                                           tuple(eqn.attrs["perm"]) == tuple(range(out.aval.ndim))):
            return inputs[0]
    elif name == "reduce_sum":
        if not eqn.attrs["axes"]:
            return inputs[0]
    return None


def simplify(graph: Graph) -> Graph:
    subst: dict[Var, Any] = {}
    producers: dict[Var, Eqn] = {}
    kept: list[Eqn] = []
    for eqn in graph.eqns:
        inputs = [_substitute(a, subst) for a in eqn.inputs]
        if not eqn.prim.multiple_results:
            passthrough = _identity_operand(eqn, inputs)
            if passthrough is not None:
                subst[eqn.outputs[0]] = passthrough
                continue
            # neg(neg(x)) -> x; reshape(reshape(x)) -> reshape(x)
            first = inputs[0] if inputs else None
            inner = producers.get(first) if isinstance(first, Var) else None
            if inner is not None and eqn.prim.name == "neg" and inner.prim.name == "neg":
                subst[eqn.outputs[0]] = inner.inputs[0]
                continue
            if inner is not None and eqn.prim.name == "reshape" and inner.prim.name == "reshape":
                inputs = [inner.inputs[0]]
                if _same_type(inner.inputs[0], eqn.outputs[0]):
                    subst[eqn.outputs[0]] = inner.inputs[0]
                    continue
        new = Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs)
        for v in eqn.outputs:
            producers[v] = new
        kept.append(new)
    return _rebuild(graph, kept, subst)
