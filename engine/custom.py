"""custom_vjp: functions that supply their own reverse-mode derivative."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.array import Array
from engine.core import Tracer, aval_of, eval_graph
from engine.errors import DifferentiationError
from engine.primitives import defprim
from engine.tree_util import tree_flatten, tree_unflatten


def _call_impl(*args: Any, fn: "custom_vjp", in_tree: Any, out_tree: Any) -> list[Any]:
    outs = fn._flat_call(in_tree, [Array(a) for a in args])
    return [np.asarray(o._value) for o in outs]


def _call_abstract(*avals: Any, fn: "custom_vjp", in_tree: Any, out_tree: Any) -> list[Any]:
    graph, _ = fn._graph_for(in_tree, avals)
    return [v.aval for v in graph.outvars]


def _call_vjp_all(g: tuple, ans: tuple, needed: list[bool], *args: Any, fn: "custom_vjp", in_tree: Any,
                  out_tree: Any) -> list[Any]:
    import engine.numpy as jnp

    primals = tree_unflatten(in_tree, list(args))
    _, residuals = fn.fwd(*primals)
    cts = [c if c is not None else jnp.zeros(a.shape, a.dtype) for c, a in zip(g, ans)]
    result = fn.bwd(residuals, tree_unflatten(out_tree, cts))
    if not isinstance(result, tuple) or len(result) != len(primals):
        raise DifferentiationError(
            f"custom_vjp: the backward function of {fn.__name__} must return a tuple with one "
            f"cotangent per positional argument ({len(primals)}), got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, tuple) else "")
        )
    ct_leaves = []
    for r, p in zip(result, primals):
        p_leaves = tree_flatten(p)[0]
        if r is None:
            ct_leaves.extend([None] * len(p_leaves))
        else:
            r_leaves = tree_flatten(r)[0]
            if len(r_leaves) != len(p_leaves):
                raise DifferentiationError(
                    f"custom_vjp: {fn.__name__}'s backward function returned a cotangent whose "
                    "structure differs from its argument's"
                )
            ct_leaves.extend(jnp.asarray(c) for c in r_leaves)
    return ct_leaves


custom_vjp_call_p = defprim(
    "custom_vjp_call", _call_impl, _call_abstract, None, None, multiple_results=True,
    attrs=("fn", "in_tree", "out_tree"),
    doc="a Python function with its own VJP; exists only in memory (never serialised)",
)
custom_vjp_call_p.extra["vjp_all"] = _call_vjp_all


class custom_vjp:  # noqa: N801 - JAX's name
    """Decorate a function, then give its derivative with `f.defvjp(fwd, bwd)`.

    `fwd(*args)` returns `(output, residuals)`; `bwd(residuals, output_cotangent)` returns a tuple
    with one cotangent per positional argument. Only reverse mode uses the rule; forward mode
    through the function raises.
    """

    def __init__(self, fun: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        self._graphs: dict[Any, Any] = {}

    def defvjp(self, fwd: Callable[..., Any], bwd: Callable[..., Any]) -> None:
        self.fwd = fwd
        self.bwd = bwd

    def _graph_for(self, in_tree: Any, avals: tuple) -> tuple[Any, Any]:
        """The function's own graph for these argument types, and its output tree (cached)."""
        from engine.core import end_trace, new_trace

        key = (in_tree, tuple(avals))
        cached = self._graphs.get(key)
        if cached is None:
            trace = new_trace(concrete=False)
            try:
                tracers = [trace.new_input(av) for av in avals]
                out_leaves, out_tree = tree_flatten(self.fun(*tree_unflatten(in_tree, tracers)))
                cached = (trace.to_graph(out_leaves), out_tree)
            finally:
                end_trace(trace)
            self._graphs[key] = cached
        return cached

    def _flat_call(self, in_tree: Any, leaves: list[Any]) -> list[Any]:
        graph, _ = self._graph_for(in_tree, tuple(aval_of(x) for x in leaves))
        return eval_graph(graph, leaves)

    def __call__(self, *args: Any) -> Any:
        if self.fwd is None or self.bwd is None:
            raise DifferentiationError(f"custom_vjp function {self.__name__} has no rule: call "
                                       f"{self.__name__}.defvjp(fwd, bwd) first")
        import engine.numpy as jnp

        leaves, in_tree = tree_flatten(args)
        leaves = [x if isinstance(x, (Array, Tracer)) else jnp.asarray(x) for x in leaves]
        if not any(isinstance(x, Tracer) for x in leaves):
            return self.fun(*args)
        _, out_tree = self._graph_for(in_tree, tuple(aval_of(x) for x in leaves))
        outs = custom_vjp_call_p(*leaves, fn=self, in_tree=in_tree, out_tree=out_tree)
        return tree_unflatten(out_tree, list(outs))
