"""custom_vjp and custom_jvp: functions that supply their own derivative rules.

A call of such a function on traced values becomes one equation (`custom_vjp_call` or
`custom_jvp_call`) whose primal value is the function's own graph, and whose derivative rules
call the user's rules. Both hold Python code (`python_code=True` in their records), so graphs
holding them are never serialised, never constant-folded, and a client's graph cannot name them:
`custom_jvp_call` is not in the PRIMITIVES table at all, and `custom_vjp_call` (which is) is
refused by the graph reader and left out of the service's catalogue.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

import engine.numpy as jnp
from engine.ad import zeros_for
from engine.array import Array
from engine.core import ShapedArray, Tracer, aval_of, end_trace, eval_graph, new_trace
from engine.errors import DifferentiationError
from engine.mapping import vmap
from engine.primitive import Algebra, Plan, WholeEquation, declare
from engine.primitives import with_batch_axis
from engine.transforms import vjp
from engine.tree_util import describe_mismatch, tree_flatten, tree_map, tree_unflatten

# ----------------------------------------------------------------------------- batching rules


def _jvp_call_batch(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> list[Any]:
    """A batch of calls is one call of the vmapped function, whose rule is the vmapped rule (so
    derivatives of the batch still use the custom rule). Unbatched operands are broadcast first,
    which keeps every tangent batched like its primal."""
    fn, in_tree, nondiff = attrs["fn"], attrs["in_tree"], attrs["nondiff"]

    def one(*leaves: Any) -> tuple:
        return tuple(tree_flatten(fn.fun(*fn._full_args(in_tree, list(leaves), nondiff)))[0])

    def one_rule(primals: tuple, tangents: tuple) -> tuple:
        primal_out = fn.jvp(*[v for _, v in nondiff], tuple(tree_unflatten(in_tree, list(primals))),
                            tuple(tree_unflatten(in_tree, list(tangents))))
        return tuple(tree_flatten(primal_out[0])[0]), tuple(tree_flatten(primal_out[1])[0])

    whole = custom_jvp(vmap(one))
    whole.__name__ = f"vmap({fn.__name__})"
    whole.defjvp(vmap(one_rule))
    return list(whole(*[with_batch_axis(a, b, n) for a, b in zip(args, batched)]))


def _vjp_call_batch(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> list[Any]:
    """A batch of calls is one call of the vmapped function, with the vmapped fwd and bwd."""
    fn, in_tree = attrs["fn"], attrs["in_tree"]

    def one(*leaves: Any) -> tuple:
        return tuple(tree_flatten(fn.fun(*tree_unflatten(in_tree, list(leaves))))[0])

    def one_fwd(*leaves: Any) -> tuple:
        out, residuals = fn.fwd(*tree_unflatten(in_tree, list(leaves)))
        return tuple(tree_flatten(out)[0]), residuals

    def one_bwd(residuals: Any, cts: tuple) -> tuple:
        primals_avals = [ShapedArray(tuple(a.shape[1:]), a.dtype) for a in full]
        primals = tree_unflatten(in_tree, primals_avals)
        result = fn.bwd(residuals, tree_unflatten(attrs["out_tree"], list(cts)))
        leaves = _cotangent_leaves(fn, primals, result)
        return tuple(c if c is not None else jnp.zeros(av.shape, av.dtype) for c, av in zip(leaves, primals_avals))

    full = [with_batch_axis(a, b, n) for a, b in zip(args, batched)]
    whole = custom_vjp(vmap(one))
    whole.__name__ = f"vmap({fn.__name__})"
    whole.defvjp(vmap(one_fwd), vmap(one_bwd))
    return list(whole(*full))


# ----------------------------------------------------------------------------- custom_vjp


def _call_impl(*args: Any, fn: "custom_vjp", in_tree: Any, out_tree: Any) -> list[Any]:
    outs = fn._flat_call(in_tree, [Array(a) for a in args])
    return [np.asarray(o._value) for o in outs]


def _call_abstract(*avals: Any, fn: "custom_vjp", in_tree: Any, out_tree: Any) -> list[Any]:
    graph, _ = fn._graph_for(in_tree, avals)
    return [v.aval for v in graph.outvars]


def _call_vjp_all(g: tuple, ans: tuple, needed: list[bool], *args: Any, fn: "custom_vjp", in_tree: Any,
                  out_tree: Any) -> list[Any]:
    primals = tree_unflatten(in_tree, list(args))
    _, residuals = fn.fwd(*primals)
    cts = [c if c is not None else jnp.zeros(a.shape, a.dtype) for c, a in zip(g, ans)]
    return _cotangent_leaves(fn, primals, fn.bwd(residuals, tree_unflatten(out_tree, cts)))


def _cotangent_leaves(fn: "custom_vjp", primals: Any, result: Any) -> list[Any]:
    """The backward function's result as one cotangent per argument leaf (None for zero)."""
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


custom_vjp_call_p = declare(
    "custom_vjp_call", impl=_call_impl, abstract=_call_abstract, vjp=WholeEquation(_call_vjp_all), jvp=None,
    batch=_vjp_call_batch, plan=Plan(), algebra=Algebra(), arity=None, attrs=("fn", "in_tree", "out_tree"),
    doc="a Python function with its own VJP; exists only in memory (never serialised)",
    multiple_results=True, python_code=True,
)


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
        leaves, in_tree = tree_flatten(args)
        leaves = [x if isinstance(x, (Array, Tracer)) else jnp.asarray(x) for x in leaves]
        if not any(isinstance(x, Tracer) for x in leaves):
            return self.fun(*args)
        _, out_tree = self._graph_for(in_tree, tuple(aval_of(x) for x in leaves))
        outs = custom_vjp_call_p(*leaves, fn=self, in_tree=in_tree, out_tree=out_tree)
        return tree_unflatten(out_tree, list(outs))


# ----------------------------------------------------------------------------- custom_jvp

# Graphs of a custom_jvp function kept per signature (argument structure, types, nondiff values).
_GRAPH_CACHE_SIZE = 64


def _jvp_call_impl(*args: Any, fn: "custom_jvp", in_tree: Any, out_tree: Any, nondiff: tuple) -> list[Any]:
    graph = fn._graph_for(in_tree, tuple(ShapedArray(np.shape(a), np.asarray(a).dtype) for a in args), nondiff)[0]
    return [np.asarray(o._value) for o in eval_graph(graph, [Array(np.asarray(a)) for a in args])]


def _jvp_call_abstract(*avals: Any, fn: "custom_jvp", in_tree: Any, out_tree: Any, nondiff: tuple) -> list[Any]:
    return [v.aval for v in fn._graph_for(in_tree, avals, nondiff)[0].outvars]


def _jvp_call_jvp_all(ts: list[Any], result: Any, *vals: Any, fn: "custom_jvp", in_tree: Any, out_tree: Any,
                      nondiff: tuple) -> list[Any]:
    tangents = [t if t is not None else zeros_for(v) for t, v in zip(ts, vals)]
    return fn._tangents_out(in_tree, out_tree, nondiff, list(vals), tangents)


def _jvp_call_vjp_all(g: tuple, ans: tuple, needed: list[bool], *vals: Any, fn: "custom_jvp", in_tree: Any,
                      out_tree: Any, nondiff: tuple) -> list[Any]:
    """Reverse mode from the JVP rule: the rule is linear in the tangents, so the cotangents are
    the VJP of tangents -> tangent_out (taken at zero tangents, with the primals held fixed).
    The rule runs on the engine's differentiable operations, so this is differentiable again."""
    wrt = [i for i, (v, need) in enumerate(zip(vals, needed)) if need and v.dtype.kind in "fc"]
    float_out = [j for j, a in enumerate(ans) if a.dtype.kind in "fc"]
    if not wrt or not float_out:
        return [None] * len(vals)

    def tangent_map(*wrt_tangents: Any) -> list[Any]:
        tangents = [zeros_for(v) for v in vals]
        for i, t in zip(wrt, wrt_tangents):
            tangents[i] = t
        outs = fn._tangents_out(in_tree, out_tree, nondiff, list(vals), tangents)
        return [outs[j] for j in float_out]

    zeros = [jnp.zeros(vals[i].shape, vals[i].dtype) for i in wrt]
    _, pullback = vjp(tangent_map, *zeros)
    cts = pullback([g[j] if g[j] is not None else jnp.zeros(ans[j].shape, ans[j].dtype) for j in float_out])
    out: list[Any] = [None] * len(vals)
    for i, c in zip(wrt, cts):
        out[i] = c
    return out


# Not in PRIMITIVES (see the module's docstring).
custom_jvp_call_p = declare(
    "custom_jvp_call", impl=_jvp_call_impl, abstract=_jvp_call_abstract, vjp=WholeEquation(_jvp_call_vjp_all),
    jvp=WholeEquation(_jvp_call_jvp_all), batch=_jvp_call_batch, plan=Plan(), algebra=Algebra(), arity=None,
    attrs=("fn", "in_tree", "out_tree", "nondiff"),
    doc="a Python function with its own JVP; exists only in memory (never serialised)",
    multiple_results=True, python_code=True, register=False,
)


def _resolve_kwargs(fun: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> tuple:
    """Keyword arguments moved into their positions, as JAX does for custom derivative functions."""
    if not kwargs:
        return args
    try:
        bound = inspect.signature(fun).bind(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{getattr(fun, '__name__', 'the function')}: {e}") from None
    bound.apply_defaults()
    if bound.kwargs:
        raise TypeError(f"keyword-only arguments {sorted(bound.kwargs)} cannot be passed to a custom_jvp "
                        "function; make them positional")
    return bound.args


class custom_jvp:  # noqa: N801 - JAX's name
    """Decorate a function, then give its forward-mode derivative with `f.defjvp(rule)`.

    `rule(primals, tangents)` gets two tuples (one entry per argument) and returns
    `(primal_out, tangent_out)`; the tangent must be linear in `tangents`. The function itself runs
    normally; jvp, grad (derived from the rule by transposing it), jacobians and hessians use the
    rule, at every order, since the rule is traced with the engine's operations. Arguments listed
    in `nondiff_argnums` are not differentiated: the rule receives them first,
    `rule(*nondiff_args, primals, tangents)`, with only the other arguments in primals/tangents.
    `f.defjvps(*rules)` gives one rule per argument instead, `rule(tangent, primal_out, *primals)`.
    """

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: tuple[int, ...] = ()) -> None:
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(sorted(int(i) for i in nondiff_argnums))
        self.jvp: Callable[..., Any] | None = None
        self._graphs: OrderedDict[Any, Any] = OrderedDict()

    def defjvp(self, jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Set the rule; returns it, so `@f.defjvp` can decorate the rule."""
        self.jvp = jvp
        return jvp

    def defjvps(self, *jvps: Callable[..., Any] | None) -> None:
        """One rule per argument, `rule(tangent, primal_out, *primals)` (None: that argument's
        tangent contributes nothing); the tangent out is the sum of their contributions."""
        if self.nondiff_argnums:
            raise TypeError("custom_jvp.defjvps cannot be used with nondiff_argnums; use defjvp")

        def jvp(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
            if len(jvps) != len(primals):
                raise DifferentiationError(f"custom_jvp: {self.__name__} takes {len(primals)} argument(s) but "
                                           f"defjvps was given {len(jvps)} rule(s); give one per argument")
            primal_out = self(*primals)
            total = None
            for rule, t in zip(jvps, tangents):
                if rule is None:
                    continue
                contribution = rule(t, primal_out, *primals)
                total = contribution if total is None else tree_map(lambda a, b: a + b, total, contribution)
            if total is None:
                total = tree_map(jnp.zeros_like, primal_out)
            return primal_out, total

        self.defjvp(jvp)

    # -- calling ---------------------------------------------------------------------------

    def _full_args(self, in_tree: Any, leaves: list[Any], nondiff: tuple) -> list[Any]:
        """The positional arguments: the differentiable ones from `leaves`, the others from `nondiff`."""
        diff = iter(tree_unflatten(in_tree, leaves))
        fixed = dict(nondiff)
        return [fixed[i] if i in fixed else next(diff) for i in range(len(in_tree.children()) + len(fixed))]

    def _graph_for(self, in_tree: Any, avals: tuple, nondiff: tuple) -> tuple[Any, Any]:
        """The function's own graph for these argument types, and its output tree (cached)."""
        key: Any = (in_tree, tuple(avals), nondiff)
        try:
            hash(key)
        except TypeError:
            key = None  # unhashable nondiff arguments (arrays): traced on every call
        cached = self._graphs.get(key) if key is not None else None
        if cached is not None:
            self._graphs.move_to_end(key)
            return cached
        trace = new_trace(concrete=False)
        try:
            tracers = [trace.new_input(av) for av in avals]
            out_leaves, out_tree = tree_flatten(self.fun(*self._full_args(in_tree, tracers, nondiff)))
            graph = trace.to_graph([o if isinstance(o, (Array, Tracer)) else jnp.asarray(o) for o in out_leaves])
        finally:
            end_trace(trace)
        if any(isinstance(c, Tracer) for c in graph.consts):
            raise DifferentiationError(
                f"custom_jvp function {self.__name__} uses a value that an enclosing transformation is tracing "
                "without taking it as an argument (a closure): pass that value as an argument instead")
        if key is not None:
            self._graphs[key] = (graph, out_tree)
            while len(self._graphs) > _GRAPH_CACHE_SIZE:
                self._graphs.popitem(last=False)
        return graph, out_tree

    def _tangents_out(self, in_tree: Any, out_tree: Any, nondiff: tuple, vals: list[Any],
                      tangents: list[Any]) -> list[Any]:
        """Run the rule; its tangent out as one leaf per output (None for non-float outputs)."""
        primals = tuple(tree_unflatten(in_tree, vals))
        tangent_args = tuple(tree_unflatten(in_tree, tangents))
        result = self.jvp(*[v for _, v in nondiff], primals, tangent_args)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise DifferentiationError(f"custom_jvp: the rule of {self.__name__} must return a pair "
                                       f"(primal_out, tangent_out), got {type(result).__name__}")
        t_leaves, t_tree = tree_flatten(result[1])
        if t_tree != out_tree:
            raise DifferentiationError(f"custom_jvp: the rule of {self.__name__} returned a tangent whose structure "
                                       f"differs from the function's output: {describe_mismatch(out_tree, t_tree)}")
        graph = self._graph_for(in_tree, tuple(aval_of(v) for v in vals), nondiff)[0]
        out = []
        for k, (t, var) in enumerate(zip(t_leaves, graph.outvars)):
            aval = var.aval
            if aval.dtype.kind not in "fc":
                out.append(None)
                continue
            t = t if isinstance(t, (Array, Tracer)) else jnp.asarray(t)
            if tuple(t.shape) != tuple(aval.shape):
                raise DifferentiationError(
                    f"custom_jvp: the rule of {self.__name__} returned a tangent of shape {tuple(t.shape)} for output "
                    f"{k}, whose shape is {tuple(aval.shape)}; each tangent must have its output's shape")
            out.append(t if t.dtype == aval.dtype else t.astype(aval.dtype))
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.jvp is None:
            raise DifferentiationError(f"custom_jvp function {self.__name__} has no rule: call "
                                       f"{self.__name__}.defjvp(rule) first")
        args = _resolve_kwargs(self.fun, args, kwargs)
        if any(not -len(args) <= i < len(args) for i in self.nondiff_argnums):
            raise TypeError(f"custom_jvp function {self.__name__}: nondiff_argnums {self.nondiff_argnums} "
                            f"names an argument it was not given (it was called with {len(args)})")
        fixed = {i % len(args) for i in self.nondiff_argnums}
        nondiff = tuple((i, args[i]) for i in sorted(fixed))
        if any(isinstance(x, Tracer) for _, v in nondiff for x in tree_flatten(v)[0]):
            raise DifferentiationError(
                f"custom_jvp function {self.__name__}: an argument in nondiff_argnums is being traced by a "
                "transformation; nondiff arguments must be fixed values (functions, numbers). Make it a "
                "differentiable argument and return a zero tangent for it instead")
        leaves, in_tree = tree_flatten(tuple(a for i, a in enumerate(args) if i not in fixed))
        leaves = [x if isinstance(x, (Array, Tracer)) else jnp.asarray(x) for x in leaves]
        if not any(isinstance(x, Tracer) for x in leaves):
            return self.fun(*args)
        _, out_tree = self._graph_for(in_tree, tuple(aval_of(x) for x in leaves), nondiff)
        outs = custom_jvp_call_p(*leaves, fn=self, in_tree=in_tree, out_tree=out_tree, nondiff=nondiff)
        return tree_unflatten(out_tree, list(outs))
