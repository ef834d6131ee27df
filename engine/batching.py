"""Batching a graph along a leading axis of some of its inputs (a graph-level vmap).

Jacobians need one derivative pass per basis vector; batching the derivative graph runs all of
them at once as array operations: jacfwd pushes the whole tangent basis through one forward-mode
graph, jacrev pulls the whole cotangent basis through one reverse-mode graph.

A batched value carries the batch as its leading axis. Every primitive's record has a batching
rule (`Primitive.batch`, declared with it in engine/primitives.py) saying how to apply it when
some operands are batched. A rule that cannot do a particular case in one pass (indexing with a
batched index array) raises NotBatchable; the equation then runs once per example, or the
caller (a jacobian) takes its own loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.array import Array
from engine.core import Graph, Literal, ShapedArray, Var, _LocalStack, aval_of, bind
from engine.errors import NotBatchable
from engine.limits import LimitExceeded
from engine.primitives import stack, zeros

__all__ = ["PER_EXAMPLE_LIMIT", "NotBatchable", "eval_batched", "per_example_budget"]

PER_EXAMPLE_LIMIT = "max_per_example_operations"
_per_example_budget = _LocalStack(None)


class per_example_budget:  # noqa: N801 - used as a context manager
    """Within this context, equations without a batching rule may be run once per example at most
    `limit` times in all (each run is one more operation in a traced program); past it they raise
    LimitExceeded (limit PER_EXAMPLE_LIMIT) before running."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def __enter__(self) -> per_example_budget:
        _per_example_budget.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _per_example_budget.pop()


def _per_example(eqn: Any, vals: list[Any], flags: list[bool], n: int) -> list[Any]:
    """An equation its batching rule cannot do in one pass, applied to each example in turn and
    the results stacked."""
    budget = _per_example_budget[-1]
    if budget is not None:
        budget.used += n
        if budget.used > budget.limit:
            raise LimitExceeded(
                f"`{eqn.prim.name}` has no batching rule, so it would run once per example: {budget.used} runs in "
                f"all, over the limit of {budget.limit}", limit=PER_EXAMPLE_LIMIT, value=budget.used,
                maximum=budget.limit)

    if n == 0:  # nothing to apply it to: the results' shapes come from the shape rule
        avals = [ShapedArray(tuple(aval_of(v).shape[1:]), aval_of(v).dtype) if f else aval_of(v)
                 for v, f in zip(vals, flags)]
        out_avals = eqn.prim.abstract(*avals, **eqn.attrs)
        out_avals = out_avals if eqn.prim.multiple_results else [out_avals]
        return [zeros((0,) + tuple(av.shape), av.dtype) for av in out_avals]
    per_output: list[list[Any]] = []
    for i in range(n):
        out = bind(eqn.prim, tuple(v[i] if f else v for v, f in zip(vals, flags)), eqn.attrs)
        outs = list(out) if eqn.prim.multiple_results else [out]
        if not per_output:
            per_output = [[] for _ in outs]
        for column, o in zip(per_output, outs):
            column.append(o)
    return [stack(column) for column in per_output]


def eval_batched(graph: Graph, args: list[Any], batched_inputs: list[bool], n: int, *,
                 per_example_fallback: bool = False) -> tuple[list[Any], list[bool]]:
    """Evaluate `graph` where args[i] carries a leading batch axis of size n when batched_inputs[i].

    Runs on arrays or tracers like `eval_graph`; returns the outputs and which are batched.
    An equation whose batching rule cannot do it in one pass raises NotBatchable, or with
    `per_example_fallback` runs once per example (correct, but a loop: vmap uses it, jacobians
    prefer their own loop). A rule of a multiple-result primitive returns every output batched.
    """
    env: dict[Var, Any] = dict(zip(graph.invars, args))
    is_batched: dict[Var, bool] = dict(zip(graph.invars, batched_inputs))
    for v, c in zip(graph.constvars, graph.consts):
        env[v] = c if not isinstance(c, np.ndarray) else Array(c)
        is_batched[v] = False

    def read(atom: Any) -> tuple[Any, bool]:
        if isinstance(atom, Literal):
            return Array(atom.value), False
        return env[atom], is_batched[atom]

    for eqn in graph.eqns:
        vals, flags = zip(*[read(a) for a in eqn.inputs]) if eqn.inputs else ((), ())
        if not any(flags):
            out = bind(eqn.prim, tuple(vals), eqn.attrs)
            outs = list(out) if eqn.prim.multiple_results else [out]
            for v, o in zip(eqn.outputs, outs):
                env[v], is_batched[v] = o, False
            continue
        try:
            out = eqn.prim.batch(eqn.prim, list(vals), list(flags), eqn.attrs, n)
            outs = list(out) if eqn.prim.multiple_results else [out]
        except NotBatchable:
            if not per_example_fallback:
                raise
            outs = _per_example(eqn, list(vals), list(flags), n)
        for v, o in zip(eqn.outputs, outs):
            env[v], is_batched[v] = o, True
    outs = [read(a) for a in graph.outvars]
    return [o for o, _ in outs], [b for _, b in outs]
