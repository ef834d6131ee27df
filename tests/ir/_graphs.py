"""Building graphs by hand for the optimiser, plan compiler and batching tests: variables,
literals and equations of the IR directly, without tracing a Python function."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.array import Array
from engine.core import Eqn, Graph, Literal, ShapedArray, Var, eval_graph

F64 = np.dtype("float64")


def var(shape: tuple[int, ...] = (3,), dtype: Any = F64) -> Var:
    return Var(ShapedArray(tuple(shape), np.dtype(dtype)))


def lit(value: float, dtype: Any = F64) -> Literal:
    return Literal(np.asarray(value, dtype)[()])


class Builder:
    """Appends equations; `b.apply(prim, *inputs, **attrs)` returns the new output variable(s)."""

    def __init__(self, *invars: Var) -> None:
        self.invars = list(invars)
        self.constvars: list[Var] = []
        self.consts: list[Any] = []
        self.eqns: list[Eqn] = []

    def const(self, value: np.ndarray) -> Var:
        v = var(np.shape(value), np.asarray(value).dtype)
        self.constvars.append(v)
        self.consts.append(np.asarray(value))
        return v

    def apply(self, prim: Any, *inputs: Any, **attrs: Any) -> Any:
        out_avals = prim.abstract(*[a.aval for a in inputs], **attrs)
        outs = [Var(av) for av in out_avals] if prim.multiple_results else [Var(out_avals)]
        self.eqns.append(Eqn(prim, list(inputs), outs, attrs))
        return outs if prim.multiple_results else outs[0]

    def graph(self, *outvars: Any) -> Graph:
        return Graph(list(self.invars), list(self.constvars), list(self.consts), list(self.eqns), list(outvars))


def run(graph: Graph, *args: np.ndarray) -> list[np.ndarray]:
    """The graph's outputs on NumPy arguments, as NumPy arrays."""
    return [np.asarray(o._value) for o in eval_graph(graph, [Array(np.asarray(a)) for a in args])]


def ops(graph: Graph) -> list[str]:
    return [e.prim.name for e in graph.eqns]
