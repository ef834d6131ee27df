"""Running a transform for a request: options, compiled plans, limits and deadlines.

A plan is the optimised graph of (function, transform, argnums, order, has_aux, argument
shapes and dtypes): traced once under the element budget, so shapes are inferred and oversized
intermediates refused before anything is allocated, then reused by every request that matches.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import engine
from engine.array import Array
from engine.core import Graph, element_budget
from engine.plan import compile_plan
from engine.test_util import check_gradients
from engine.tree_util import tree_flatten, tree_leaves, tree_map, tree_structure, tree_unflatten
from service import admission, batch_axes, vector_products
from service.admission import Budget
from service.errors import InvalidArgument, InvalidFunction, InvalidRequest, LimitExceededError
from service.functions import Function
from service.inline import needs_worker
from service.model_schema import notation

TRANSFORMS = ("value", "grad", "value_and_grad", "jvp", "vjp", "jacobian", "hessian", "hvp", "check_grads")


@dataclass
class Options:
    transform: str
    argnums: int | tuple[int, ...] = 0
    has_aux: bool = False
    order: int = 1
    mode: str = "rev"
    check: dict[str, Any] | None = None
    batched: bool = False  # tangents or cotangents sent as a batch (service.vector_products)
    in_axes: list[Any] | None = None  # computed per example over a batch (service.batch_axes)

    def key(self) -> tuple:
        return (self.transform, self.argnums, self.has_aux, self.order, self.mode, self.batched,
                batch_axes.key(self.in_axes))

    @classmethod
    def from_request(cls, transform: str, request: Any, max_order: int) -> Options:
        """The options of a validated request; the derivative order is checked against its limit."""
        opts = cls(transform)
        argnums = getattr(request, "argnums", 0)
        opts.argnums = argnums if isinstance(argnums, int) else tuple(argnums)
        opts.has_aux = getattr(request, "has_aux", False)
        opts.mode = getattr(request, "mode", "rev")
        opts.order = getattr(request, "order", 1)
        opts.batched = vector_products.is_batched(transform, request)
        opts.in_axes = getattr(request, "in_axes", None)
        check = getattr(request, "check", None)
        if check is not None:
            opts.check = {"order": check.order, "modes": tuple(check.modes), "eps": check.eps,
                          "atol": check.atol, "rtol": check.rtol}
        order = max(opts.order, check.order if check is not None else 1)
        if order > max_order:
            raise LimitExceededError(f"derivative order {order} is above the limit of {max_order} (NABLA_MAX_ORDER)",
                                     {"limit": "NABLA_MAX_ORDER", "requested": order, "maximum": max_order})
        return opts


def _argnums_tuple(argnums: int | tuple[int, ...]) -> tuple[int, ...]:
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def check_argnums(opts: Options, nargs: int) -> None:
    chosen = _argnums_tuple(opts.argnums)
    for a in chosen:
        if not -nargs <= a < nargs:
            raise InvalidRequest(f"argnums {a} is out of range: the function takes {nargs} argument(s)",
                                 {"argnums": opts.argnums, "arguments": nargs})
    if len({a % nargs for a in chosen}) != len(chosen):
        raise InvalidRequest(f"argnums {list(chosen)} names an argument twice; list each argument once",
                             {"argnums": list(chosen)})


def _as_pair(fn: Callable[..., Any]) -> Callable[..., Any]:
    """With has_aux, a function returning (out, a, b, ...) means (out, (a, b, ...))."""
    @functools.wraps(fn)  # keeps the parameter names that error messages quote
    def paired(*args: Any) -> Any:
        out = fn(*args)
        if isinstance(out, tuple) and len(out) > 2:
            return out[0], out[1:]
        return out
    return paired


def transformed(fn: Callable[..., Any], opts: Options, nargs: int) -> Callable[..., Any]:
    """The Python function a plan traces: args (and tangents/cotangent) in, a result dict out."""
    t = opts.transform
    if opts.has_aux:
        fn = _as_pair(fn)
    if t == "value":
        return lambda *args: {"value": fn(*args)}
    if t == "grad":
        g = fn
        for _ in range(opts.order):
            g = engine.grad(g, opts.argnums, has_aux=opts.has_aux)

        def run_grad(*args: Any) -> Any:
            out = g(*args)
            return {"grad": out[0], "aux": out[1]} if opts.has_aux else {"grad": out}
        return run_grad
    if t == "value_and_grad":
        vg = engine.value_and_grad(fn, opts.argnums, has_aux=opts.has_aux)

        def run_vg(*args: Any) -> Any:
            value, grads = vg(*args)
            if opts.has_aux:
                (value, aux) = value
                return {"value": value, "grad": grads, "aux": aux}
            return {"value": value, "grad": grads}
        return run_vg
    if t == "hvp":
        return vector_products.hvp(fn, opts.argnums, opts.has_aux, nargs, opts.batched)
    if t == "jvp" and opts.batched:
        return vector_products.jvp(fn, opts.has_aux, nargs)
    if t == "vjp" and opts.batched:
        return vector_products.vjp(fn, opts.has_aux, nargs)
    if t == "jvp":
        def run_jvp(*flat: Any) -> Any:
            args, tangents = flat[:nargs], flat[nargs:]
            out = engine.jvp(fn, tuple(args), tuple(tangents), has_aux=opts.has_aux)
            result = {"value": out[0], "jvp": out[1]}
            if opts.has_aux:
                result["aux"] = out[2]
            return result
        return run_jvp
    if t == "vjp":
        def run_vjp(*flat: Any) -> Any:
            args, cotangent = flat[:nargs], flat[nargs]
            out = engine.vjp(fn, *args, has_aux=opts.has_aux)
            result = {"value": out[0], "vjp": list(out[1](_like(cotangent, out[0])))}
            if opts.has_aux:
                result["aux"] = out[2]
            return result
        return run_vjp
    if t == "jacobian":
        make = engine.jacrev if opts.mode == "rev" else engine.jacfwd
        jac = make(fn, opts.argnums, has_aux=opts.has_aux)

        def run_jac(*args: Any) -> Any:
            out = jac(*args)
            return {"jacobian": out[0], "aux": out[1]} if opts.has_aux else {"jacobian": out}
        return run_jac
    if t == "hessian":
        hess = engine.hessian(fn, opts.argnums, has_aux=opts.has_aux)

        def run_hess(*args: Any) -> Any:
            out = hess(*args)
            return {"hessian": out[0], "aux": out[1]} if opts.has_aux else {"hessian": out}
        return run_hess
    raise InvalidRequest(f"unknown transform {t!r}")


def _like(cotangent: Any, output: Any) -> Any:
    """The cotangent in the output's structure: JSON has no tuples, and a list of equal-shaped
    arrays arrives stacked, so both are matched to the output by their leaves."""
    target = tree_structure(output)
    leaves = tree_leaves(cotangent)
    if len(leaves) == 1 and target.num_leaves > 1 and leaves[0].shape[:1] == (target.num_leaves,):
        leaves = list(leaves[0])
    if len(leaves) != target.num_leaves:
        raise InvalidArgument(f"cotangent: {len(leaves)} array(s), but the function's output has "
                              f"{target.num_leaves}: send one array per output, shaped like it", {"path": "cotangent"})
    for i, (c, o) in enumerate(zip(leaves, tree_leaves(output))):
        if tuple(c.shape) != tuple(o.shape):  # both are traced: their shapes, not their values
            where = "cotangent" if len(leaves) == 1 else f"cotangent[{i}]"
            expected, got = notation(o.shape, o.dtype), notation(c.shape, c.dtype)
            raise InvalidArgument(f"{where}: expected {expected} (the output's shape), got {got}",
                                  {"path": where, "expected": expected, "got": got})
    return tree_unflatten(target, leaves)


def result_structure(result: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Gradients for a tuple argnums come back as a list, one entry per argument."""
    if opts.transform in ("grad", "value_and_grad", "jacobian", "hessian") and not isinstance(opts.argnums, int):
        for name in ("grad",):
            if name in result and isinstance(result[name], tuple):
                result[name] = list(result[name])
    return result


@dataclass
class Plan:
    """A compiled transform for one signature, with what admission needs to know about it."""

    graph: Graph
    out_tree: Any
    run: Callable[[list[Any]], list[Any]]
    peak_bytes: int  # most intermediate bytes alive at once
    results: list[tuple[tuple[int, ...], np.dtype]]  # shape and dtype of each output
    size_bytes: int  # what keeping it in the cache costs
    build_s: float = 0.0  # what tracing, optimising and compiling it took
    # (encoding, input bytes) pairs admitted already: admission depends on nothing else
    admitted: set[tuple[str, int]] = field(default_factory=set)

    @functools.cached_property
    def dtype(self) -> str | None:
        return computed_dtype([d for _, d in self.results])
    run_s: float = float("inf")  # its slowest recent run here, in seconds (service.inline)

    def timed_run(self, values: list[Any]) -> list[Any]:
        start = time.perf_counter()
        outs = self.run(values)
        seconds = time.perf_counter() - start
        # The slowest of the recent runs, decaying slowly: one run that happened to be fast does
        # not make a plan look cheap.
        self.run_s = seconds if self.run_s == float("inf") else max(seconds, 0.9 * self.run_s)
        return outs


class PlanCache:
    """Compiled plans, least recently used evicted first, bounded by count and by bytes."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> Plan | None:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
            return plan

    def put(self, key: tuple, plan: Plan) -> None:
        with self._lock:
            self.misses += 1
            if not self.size or plan.size_bytes > self.max_bytes or key in self._plans:
                return
            self._plans[key] = plan
            self.bytes += plan.size_bytes
            while len(self._plans) > self.size or self.bytes > self.max_bytes:
                _, old = self._plans.popitem(last=False)
                self.bytes -= old.size_bytes

    def __len__(self) -> int:
        return len(self._plans)


def computed_dtype(dtypes: list[np.dtype]) -> str | None:
    """The dtype a result is computed in, from its leaves' dtypes in order: the first float one,
    else the first; None for a result with no leaves."""
    floats = [d for d in dtypes if d.kind == "f"]
    return (floats or dtypes)[0].name if dtypes else None


def _signature(leaves: list[Any]) -> tuple:
    return tuple((tuple(x.shape), x.dtype.str) for x in leaves)


@dataclass
class Outcome:
    result: dict[str, Any]
    graph_nodes: int | None
    cache_hit: bool
    examples: int | None = None  # the batch size, with in_axes
    plan_s: tuple[float, float] | None = None  # seconds building its plan took, and its runs take
    dtype: str | None = None  # as Plan.dtype
    plan_key: tuple | None = None  # the plan's key in the PlanCache (service.replay keeps it)


def run(function: Function, opts: Options, args: list[Any], extra: list[Any], *, plans: PlanCache,
        budget: Budget, encoding: str, inline_max_s: float = 0.0) -> Outcome:
    """Admit and compute a transform. `extra` holds tangents (jvp) or the cotangent (vjp).

    Runs inside the request's deadline (engine.core.deadline); every refusal happens before the
    work it predicts. Inline (service.inline), only a cached plan whose runs here took at most
    `inline_max_s` is run."""
    nargs = len(args)
    if nargs != len(function.params):
        raise InvalidRequest(
            f"the function takes {len(function.params)} argument(s) {function.params}, got {nargs}",
            {"expected": function.params, "got": nargs})
    if opts.transform in ("grad", "value_and_grad", "jacobian", "hessian", "hvp"):
        check_argnums(opts, nargs)
    if opts.transform == "check_grads":
        needs_worker("check_grads has no compiled plan", warm=False)
        return _check(function, opts, args, budget.max_array_elements)
    examples = None  # the batch size, with in_axes
    if opts.in_axes is not None:
        examples = batch_axes.check(function.params, opts.in_axes, args, opts.batched)
        if opts.transform == "vjp":
            extra = [batch_axes.batched_cotangent(function, batch_axes.examples(opts.in_axes, args), extra[0],
                                                  examples, opts.has_aux)]
    inputs = [tree_map(_to_array, a) for a in args + extra]
    leaves, in_tree = tree_flatten(tuple(inputs))
    key = (function.key, opts.key(), in_tree, _signature(leaves))
    plan = plans.get(key)
    hit = plan is not None
    if plan is None:
        needs_worker("no compiled plan for this signature in this process yet")
        if examples is None:
            _predict(function, opts, inputs[:nargs], budget, encoding, inputs[nargs:])
        else:  # the function's shapes are one example's; every result gains the batch axis
            _predict(function, opts, batch_axes.examples(opts.in_axes, args), budget, encoding, examples=examples)
        built = time.perf_counter()
        plan = _build(function, opts, inputs, nargs, budget)
        plan.build_s = time.perf_counter() - built
    input_bytes = sum(x._value.nbytes for x in leaves)
    if (encoding, input_bytes) not in plan.admitted:
        result_bytes = sum(admission.nbytes(shape, dtype) for shape, dtype in plan.results)
        response_bytes = admission.check_response(plan.results, encoding, budget)
        admission.check_memory(input_bytes, plan.peak_bytes, result_bytes, response_bytes, budget)
        plan.admitted.add((encoding, input_bytes))
    if hit:
        _inline_if_quick(plan, inline_max_s)
    else:
        plans.put(key, plan)
    outcome = _run_plan(plan, [x._value for x in leaves], opts, hit, examples)
    outcome.plan_key = key
    return outcome


def run_cached(key: tuple, values: list[np.ndarray], opts: Options, *, plans: PlanCache, encoding: str,
               inline_max_s: float = 0.0) -> Outcome | None:
    """`run` for inputs already decoded to the plan's leaves, when the plan under `key` is cached
    and has admitted inputs of this size for this encoding (the caller checked their shapes and
    dtypes against the key); None when it is not, and `run` must decide."""
    plan = plans.get(key)
    if plan is None or (encoding, sum(v.nbytes for v in values)) not in plan.admitted:
        return None
    _inline_if_quick(plan, inline_max_s)
    return _run_plan(plan, values, opts, True, None)


def _inline_if_quick(plan: Plan, inline_max_s: float) -> None:
    if plan.run_s > inline_max_s:
        # The worker's runs of this plan, which answer the call, then tell how long it takes here.
        needs_worker("this plan's runs take longer than NABLA_INLINE_MAX_MS", warm=False, plan=plan)


def _run_plan(plan: Plan, values: list[np.ndarray], opts: Options, hit: bool, examples: int | None) -> Outcome:
    outs = [Array(o) for o in plan.timed_run(values)]
    result = tree_unflatten(plan.out_tree, outs)
    return Outcome(result_structure(result, opts), plan.graph.num_nodes, hit, examples, (plan.build_s, plan.run_s),
                   plan.dtype)


def _predict(function: Function, opts: Options, args: list[Any], budget: Budget, encoding: str,
             extra: list[Any] | None = None, examples: int | None = None) -> None:
    """Refuse a transform whose result would be over budget, knowing only the function's output
    shapes (one abstract trace of the function, not of its derivative)."""
    # Each order of differentiation multiplies a graph by about 4 before the optimiser shrinks it:
    # a 4th derivative of a 5,000-node function would be traced in over a million operations.
    order = {"grad": opts.order, "hessian": 2, "hvp": 2, "value": 0}.get(opts.transform, 1)
    if function.root is not None:  # a derived function ({"jvp": ...}): tracing it differentiates its root
        with element_budget(budget.max_array_elements):
            root = engine.make_graph(function.root.fn)(*args[:len(function.root.params)])
        admission.check_plan(len(root.eqns) * 4**(order + function.depth), budget, before_optimising=True)
    with element_budget(budget.max_array_elements):
        graph = engine.make_graph(function.fn)(*args)
    refuse_complex_outputs(graph)
    admission.check_plan(len(graph.eqns) * 4**order, budget, before_optimising=True)
    outs = [tuple(v.aval.shape) for v in graph.outvars]
    if opts.has_aux and outs:
        outs = outs[:1]  # the aux part is returned as is
    in_leaves = [tuple(np.shape(x)) for x in tree_leaves(args)]
    chosen = _argnums_tuple(opts.argnums)
    diff = [tuple(np.shape(x)) for i in chosen if -len(args) <= i < len(args) for x in tree_leaves(args[i])]
    batch = (vector_products.batch_size(opts.transform, extra or [], vector_products.main_output_count(
        graph.out_tree, opts.has_aux)) if opts.batched else None)
    shapes = admission.predicted_result(opts.transform, outs, in_leaves, diff, batch)
    if examples is not None:
        shapes = [[examples] + list(s) for s in shapes]
    for shape in shapes:
        admission.check_array(shape, f"the {opts.transform} result", budget)
    admission.check_response([(s, np.dtype("float64")) for s in shapes], encoding, budget)


def refuse_complex_outputs(graph: Graph) -> None:
    """Complex values may flow inside a function (jnp.fft), but the wire carries real arrays only
    (array_codec): a function with a complex output is refused before any work."""
    for i, v in enumerate(graph.outvars):
        if v.aval.dtype.kind == "c":
            raise InvalidFunction(
                f"output {i} of the function is complex ({v.aval.dtype.name}{list(v.aval.shape)}), and the service "
                "sends real arrays only. Return its parts instead: real(z) and imag(z), or abs(z).",
                {"output": i, "dtype": v.aval.dtype.name, "shape": list(v.aval.shape)})


def _build(function: Function, opts: Options, inputs: list[Any], nargs: int, budget: Budget) -> Plan:
    fn = transformed(function.fn, opts, nargs)
    if opts.in_axes is not None:  # one plan for the whole batch: vmap of the transformed function
        fn = engine.vmap(fn, batch_axes.vmap_axes(opts.transform, opts.in_axes, nargs, len(inputs) - nargs,
                                                  opts.argnums))
    with element_budget(budget.max_array_elements), batch_axes.per_example_operations(budget):
        graph = engine.make_graph(fn)(*inputs)
    admission.check_plan(len(graph.eqns), budget, before_optimising=True)  # optimising costs in proportion
    optimised = engine.optimize(graph)
    admission.check_plan(len(optimised.eqns), budget)
    results = [(tuple(v.aval.shape), v.aval.dtype) for v in optimised.outvars]
    return Plan(optimised, graph.out_tree, compile_plan(optimised), admission.plan_peak_bytes(optimised), results,
                admission.graph_bytes(optimised))


def _to_array(x: Any) -> Any:
    return Array(x) if isinstance(x, np.ndarray) else x


def _check(function: Function, opts: Options, args: list[Any], max_elements: int) -> Outcome:
    c = opts.check
    inputs = tuple(tree_map(_to_array, a) for a in args)
    with element_budget(max_elements), np.errstate(all="ignore"):
        # Abstract tracing first: shapes and the element budget are checked before computing.
        refuse_complex_outputs(engine.make_graph(function.fn)(*inputs))
        results = check_gradients(function.fn, inputs, c["order"], c["modes"], c["atol"], c["rtol"], c["eps"])
    # errors can be NaN or infinite (a function undefined near its point): JSON has them as strings
    report = [{k: _json_float(v) for k, v in r.as_dict().items()} for r in results]
    return Outcome({"check": {"passed": all(r["passed"] for r in report), "results": report}}, None, False)


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return "NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def abstract_shapes(function: Function, args: list[Any], max_elements: int) -> Any:
    """Shape and dtype of the function's output for arguments of the given shapes, computing nothing."""
    with element_budget(max_elements):
        graph = engine.make_graph(function.fn)(*args)
    outs = [{"shape": list(v.aval.shape), "dtype": v.aval.dtype.name} for v in graph.outvars]
    return tree_unflatten(graph.out_tree, outs), graph.num_nodes


__all__ = ["TRANSFORMS", "Options", "PlanCache", "abstract_shapes", "run"]
