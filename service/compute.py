"""Running a transform for a request: options, compiled plans, limits and deadlines.

A plan is the optimised graph of (function, transform, argnums, order, has_aux, argument
shapes and dtypes): traced once under the element budget, so shapes are inferred and oversized
intermediates refused before anything is allocated, then reused by every request that matches.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import engine
from engine.array import Array
from engine.core import Graph, aval_of, deadline, element_budget
from engine.errors import (
    ConcretizationError,
    DeadlineExceeded,
    DifferentiationError,
    DtypeError,
    EngineError,
    ShapeError,
)
from engine.expr import ExprError
from engine.limits import LimitExceeded
from engine.plan import compile_plan
from engine.serialize import GraphFormatError
from engine.tree_util import tree_flatten, tree_map
from service.errors import (
    APIError,
    ComputeError,
    ComputeTimeout,
    DtypeMismatch,
    InvalidArgument,
    InvalidRequest,
    NotDifferentiable,
    ShapeMismatch,
)
from service.functions import Function, function_error

TRANSFORMS = ("value", "grad", "value_and_grad", "jvp", "vjp", "jacobian", "hessian", "check_grads")

# Which request options each transform accepts (besides function, args, dtype, encoding).
OPTIONS: dict[str, set[str]] = {
    "value": set(),
    "grad": {"argnums", "has_aux", "order"},
    "value_and_grad": {"argnums", "has_aux"},
    "jvp": {"tangents", "has_aux"},
    "vjp": {"cotangent", "has_aux"},
    "jacobian": {"argnums", "has_aux", "mode"},
    "hessian": {"argnums", "has_aux"},
    "check_grads": {"check"},
}
COMMON = {"function", "args", "dtype", "encoding"}


@dataclass
class Options:
    transform: str
    argnums: int | tuple[int, ...] = 0
    has_aux: bool = False
    order: int = 1
    mode: str = "rev"
    check: dict[str, Any] | None = None

    def key(self) -> tuple:
        return (self.transform, self.argnums, self.has_aux, self.order, self.mode)


def parse_options(transform: str, body: dict[str, Any], max_order: int) -> Options:
    if transform not in TRANSFORMS:
        raise InvalidRequest(f"unknown transform {transform!r}; use one of {', '.join(TRANSFORMS)}",
                             {"transform": transform})
    allowed = OPTIONS[transform] | COMMON
    unknown = sorted(set(body) - allowed)
    if unknown:
        applies = sorted(t for t, opts in OPTIONS.items() if set(unknown) <= opts)
        raise InvalidRequest(
            f"option(s) {unknown} do not apply to {transform}" + (f" (they apply to {', '.join(applies)})"
                                                                  if applies else ""),
            {"options": unknown, "transform": transform, "allowed": sorted(allowed)})
    opts = Options(transform)
    if "argnums" in body:
        argnums = body["argnums"]
        if isinstance(argnums, bool) or not (isinstance(argnums, int) or (
                isinstance(argnums, list) and argnums and all(isinstance(a, int) and not isinstance(a, bool)
                                                              for a in argnums))):
            raise InvalidRequest("argnums must be an integer or a non-empty list of integers",
                                 {"argnums": argnums})
        opts.argnums = argnums if isinstance(argnums, int) else tuple(argnums)
    if "has_aux" in body:
        if not isinstance(body["has_aux"], bool):
            raise InvalidRequest("has_aux must be true or false")
        opts.has_aux = body["has_aux"]
    if "order" in body:
        order = body["order"]
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise InvalidRequest("order must be a positive integer", {"order": order})
        if order > max_order:
            raise InvalidRequest(f"order {order} is above the limit of {max_order} (NABLA_MAX_ORDER)",
                                 {"order": order, "limit": max_order}, status=413, type="limit_exceeded")
        opts.order = order
    if "mode" in body:
        if body["mode"] not in ("rev", "fwd"):
            raise InvalidRequest("mode must be 'rev' or 'fwd'", {"mode": body["mode"]})
        opts.mode = body["mode"]
    if transform == "check_grads":
        check = body.get("check", {})
        if not isinstance(check, dict):
            raise InvalidRequest("check must be an object {order, modes, eps, atol, rtol}")
        unknown = sorted(set(check) - {"order", "modes", "eps", "atol", "rtol"})
        if unknown:
            raise InvalidRequest(f"unknown check option(s) {unknown}")
        order = check.get("order", 1)
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= max_order:
            raise InvalidRequest(f"check.order must be an integer from 1 to {max_order}", {"order": order})
        modes = check.get("modes", ["fwd", "rev"])
        if not isinstance(modes, list) or not modes or any(m not in ("fwd", "rev") for m in modes):
            raise InvalidRequest("check.modes must be a non-empty list of 'fwd' and 'rev'")
        for name in ("eps", "atol", "rtol"):
            value = check.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise InvalidRequest(f"check.{name} must be a positive number")
        opts.check = {"order": order, "modes": tuple(modes), "eps": check.get("eps"),
                      "atol": check.get("atol"), "rtol": check.get("rtol")}
    return opts


def _argnums_tuple(argnums: int | tuple[int, ...]) -> tuple[int, ...]:
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def check_argnums(opts: Options, nargs: int) -> None:
    for a in _argnums_tuple(opts.argnums):
        if not -nargs <= a < nargs:
            raise InvalidRequest(f"argnums {a} is out of range: the function takes {nargs} argument(s)",
                                 {"argnums": opts.argnums, "arguments": nargs})


def _as_pair(fn: Callable[..., Any]) -> Callable[..., Any]:
    """With has_aux, a function returning (out, a, b, ...) means (out, (a, b, ...))."""
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
    from engine.tree_util import tree_leaves, tree_structure, tree_unflatten

    target = tree_structure(output)
    leaves = tree_leaves(cotangent)
    if len(leaves) == 1 and target.num_leaves > 1 and leaves[0].shape[:1] == (target.num_leaves,):
        leaves = list(leaves[0])
    if len(leaves) != target.num_leaves:
        raise InvalidRequest(f"the cotangent has {len(leaves)} array(s), but the function's output has "
                             f"{target.num_leaves}: send one array per output, shaped like it")
    return tree_unflatten(target, leaves)


def result_structure(result: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Gradients for a tuple argnums come back as a list, one entry per argument."""
    if opts.transform in ("grad", "value_and_grad", "jacobian", "hessian") and not isinstance(opts.argnums, int):
        for name in ("grad",):
            if name in result and isinstance(result[name], tuple):
                result[name] = list(result[name])
    return result


class PlanCache:
    """Compiled graphs of transformed functions, least recently used evicted first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._plans: OrderedDict[tuple, tuple[Graph, Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: tuple,
                     build: Callable[[], tuple[Graph, Any, Any]]) -> tuple[tuple[Graph, Any, Any], bool]:
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                return plan, True
        plan = build()
        with self._lock:
            self.misses += 1
            if self.size:
                self._plans[key] = plan
                while len(self._plans) > self.size:
                    self._plans.popitem(last=False)
        return plan, False


def _signature(leaves: list[Any]) -> tuple:
    return tuple((tuple(x.shape), x.dtype.str) for x in leaves)


def cast_floats(tree: Any, dtype: np.dtype) -> Any:
    def cast(x: Any) -> Any:
        arr = np.asarray(x)
        return arr.astype(dtype) if arr.dtype.kind == "f" and arr.dtype != dtype else arr
    return tree_map(cast, tree)


@dataclass
class Outcome:
    result: dict[str, Any]
    graph_nodes: int | None
    cache_hit: bool


def run(function: Function, opts: Options, args: list[Any], extra: list[Any], *, plans: PlanCache,
        max_elements: int, timeout_s: float) -> Outcome:
    """Compute a transform. `extra` holds tangents (jvp) or the cotangent (vjp)."""
    nargs = len(args)
    if nargs != len(function.params):
        raise InvalidRequest(
            f"the function takes {len(function.params)} argument(s) {function.params}, got {nargs}",
            {"expected": function.params, "got": nargs})
    if "argnums" in OPTIONS[opts.transform]:
        check_argnums(opts, nargs)
    try:
        with deadline(timeout_s):
            if opts.transform == "check_grads":
                return _check(function, opts, args, max_elements)
            inputs = [tree_map(_to_array, a) for a in args + extra]
            leaves, in_tree = tree_flatten(tuple(inputs))
            key = (function.key, opts.key(), in_tree, _signature(leaves))

            def build() -> tuple[Graph, Any, Any]:
                fn = transformed(function.fn, opts, nargs)
                with element_budget(max_elements):
                    graph = engine.make_graph(fn)(*inputs)
                optimised = engine.optimize(graph)
                return optimised, graph.out_tree, compile_plan(optimised)

            (graph, out_tree, plan), hit = plans.get_or_build(key, build)
            outs = [Array(o) for o in plan([x._value for x in leaves])]
            from engine.tree_util import tree_unflatten

            result = tree_unflatten(out_tree, outs)
            return Outcome(result_structure(result, opts), graph.num_nodes, hit)
    except APIError:
        raise
    except Exception as e:  # engine errors become 4xx; anything else is a bug (500)
        raise translate(e) from None


def _to_array(x: Any) -> Any:
    return Array(x) if isinstance(x, np.ndarray) else x


def _check(function: Function, opts: Options, args: list[Any], max_elements: int) -> Outcome:
    from engine.test_util import check_gradients

    c = opts.check
    inputs = tuple(tree_map(_to_array, a) for a in args)
    with element_budget(max_elements), np.errstate(all="ignore"):
        # Abstract tracing first: shapes and the element budget are checked before computing.
        engine.make_graph(function.fn)(*inputs)
        results = check_gradients(function.fn, inputs, c["order"], c["modes"], c["atol"], c["rtol"], c["eps"])
    # errors can be NaN or infinite (a function undefined near its point): JSON has them as strings
    report = [{k: _json_float(v) for k, v in r.as_dict().items()} for r in results]
    return Outcome({"check": {"passed": all(r["passed"] for r in report), "results": report}}, None, False)


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return "NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def translate(e: Exception) -> APIError:
    """An engine exception as the API error a client should see."""
    if isinstance(e, DeadlineExceeded):
        return ComputeTimeout(str(e) + " (NABLA_COMPUTE_TIMEOUT_S)")
    if isinstance(e, (ExprError, GraphFormatError, LimitExceeded)):
        err = function_error(e)
        text = str(e).lower()
        if (isinstance(e, GraphFormatError) and err.type != "limit_exceeded" and "node" in text
                and ("shape" in text or "broadcast" in text)):
            return ShapeMismatch(str(e), err.detail)
        return err
    if isinstance(e, ShapeError):
        return ShapeMismatch(str(e))
    if isinstance(e, DtypeError):
        return DtypeMismatch(str(e))
    if isinstance(e, (DifferentiationError, ConcretizationError)):
        return NotDifferentiable(str(e))
    if isinstance(e, EngineError):
        return ComputeError(str(e))
    # AttributeError, KeyError: a built-in (Python) model given arguments of the wrong structure
    if isinstance(e, (ValueError, TypeError, IndexError, AttributeError, KeyError, np.linalg.LinAlgError)):
        return InvalidArgument(f"{type(e).__name__}: {e}")
    raise e


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def abstract_shapes(function: Function, args: list[Any], max_elements: int) -> Any:
    """Shape and dtype of the function's output for arguments of the given shapes, computing nothing."""
    try:
        with element_budget(max_elements):
            graph = engine.make_graph(function.fn)(*args)
    except APIError:
        raise
    except Exception as e:
        raise translate(e) from None
    from engine.tree_util import tree_unflatten

    outs = [{"shape": list(v.aval.shape), "dtype": v.aval.dtype.name} for v in graph.outvars]
    return tree_unflatten(graph.out_tree, outs), graph.num_nodes


__all__ = ["TRANSFORMS", "Options", "PlanCache", "abstract_shapes", "aval_of", "parse_options", "run"]
