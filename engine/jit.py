"""jit: trace once per input signature, optimise, and reuse the compiled graph.

A call runs in one of two ways. The first call with a new signature flattens the arguments,
brings each leaf into the engine (`engine.numpy.asarray`), traces, optimises and compiles. Every
later call with arguments of the same kinds, shapes and dtypes takes a fast path: the arguments'
signature is a plain tuple (computed without flattening when every argument is an array or a
number), and each argument becomes the compiled plan's input by a converter chosen for its kind
when the path was recorded, computing exactly what `asarray` and the plan's own conversion would:
the same dtype rules (Python numbers and float64 data follow `jax_enable_x64`, which is part of
the signature), the same values, 0-d values as NumPy scalars.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine import dtypes
from engine._config import config
from engine.array import Array
from engine.core import Tracer, eval_graph
from engine.numpy._base import asarray
from engine.optimize import optimize
from engine.plan import FP_ERROR_STATE, compile_plan
from engine.transforms import trace_function
from engine.tree_util import tree_flatten, tree_structure, tree_unflatten

# The switches' own dict, updated in place by config.update: one lookup per call.
_SWITCHES: dict[str, Any] = config._values

_WEAK_TYPES = (bool, int, float, complex)
# NumPy arrays and scalars of these dtypes take the fast path (others, e.g. object or
# non-native byte order, always go through asarray).
_FAST_DTYPES = frozenset(np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4",
                                               "f8", "c8", "c16"))
_SCALAR_TYPES = frozenset(_WEAK_TYPES) | frozenset(d.type for d in _FAST_DTYPES)
# A NumPy argument up to this size is copied (as asarray does) rather than checked for whether the
# plan may read it in place: the copy is the cheaper of the two.
COPY_BELOW_ELEMENTS = 4096


def _static_key(x: Any) -> Any:
    try:
        hash(x)
    except TypeError:
        raise TypeError(f"static arguments must be hashable, got {type(x).__name__}") from None
    return x


def _leaf_signature(x: Any) -> Any:
    """What a fast call's converter of `x` depends on, or None when `x` takes the slow path."""
    t = type(x)
    if t is Array:
        v = x._value
        return (v.shape, v.dtype)
    if t is np.ndarray:
        return (t, x.shape, x.dtype)
    if t in _SCALAR_TYPES:
        return t
    return None


def jit(fun: Callable[..., Any], static_argnums: int | Sequence[int] = ()) -> Callable[..., Any]:
    """Compile `fun`: trace it once per (tree structure, shapes, dtypes, static arguments)."""
    statics = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    cache: dict[Any, Any] = {}
    # Fast calls by (x64, signature of each argument) when every argument is itself a leaf, and by
    # (tree structure, static arguments, x64, signature of each leaf) otherwise.
    flat_calls: dict[tuple, Callable[[Sequence[Any]], Any]] = {}
    tree_calls: dict[tuple, Callable[[Sequence[Any]], Any]] = {}
    switches = _SWITCHES

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not kwargs and not statics:
            key: list[Any] = [switches["jax_enable_x64"]]
            for x in args:
                t = type(x)
                if t is Array:
                    v = x._value
                    key.append((v.shape, v.dtype))
                elif t is np.ndarray:
                    key.append((t, x.shape, x.dtype))
                elif t in _SCALAR_TYPES:
                    key.append(t)
                else:
                    break
            else:
                fast = flat_calls.get(tuple(key))
                if fast is not None:
                    return fast(args)
        if kwargs:
            raise TypeError("jit-compiled functions take positional arguments only; bind keyword "
                            "arguments with functools.partial first")
        nums = tuple(i for i in range(len(args)) if i not in statics)
        static_values = tuple(_static_key(args[i]) for i in statics if i < len(args))
        leaves, in_tree = tree_flatten(tuple(args[i] for i in nums))
        x64 = switches["jax_enable_x64"]
        signature = tuple(_leaf_signature(x) for x in leaves)
        fast_key = None if any(s is None for s in signature) else (in_tree, static_values, x64, signature)
        if fast_key is not None:
            fast = tree_calls.get(fast_key)
            if fast is not None:
                return fast(leaves)
        leaves = [x if isinstance(x, (Array, Tracer)) else asarray(x) for x in leaves]
        # Plain tuples hash fast; the tree structure's own hash runs once per call.
        key = (in_tree, tuple((x.shape, x.dtype.str) for x in leaves), static_values)
        entry = cache.get(key)
        if entry is None:
            tf, _, _ = trace_function(fun, args, {}, nums, concrete=False)
            graph = optimize(tf.graph)
            if any(isinstance(c, Tracer) for c in graph.consts):
                # It closes over a value being traced by an enclosing transformation: that value
                # differs per call, so this graph is neither cached nor compiled.
                return tree_unflatten(tf.out_tree, eval_graph(graph, leaves))
            entry = (graph, tf.out_tree, _compile(graph))
            cache[key] = entry
        graph, out_tree, plan = entry
        if plan is not None and fast_key is not None:
            fast = _fast_call(plan, out_tree, signature)
            if fast is not None:
                tree_calls[fast_key] = fast
                if not statics and len(leaves) == len(args) and all(_leaf_signature(a) is not None for a in args):
                    flat_calls[(x64, *signature)] = fast
        if plan is not None and all(isinstance(x, Array) for x in leaves):
            outs = [Array(o) for o in plan([x._value for x in leaves])]
        else:
            outs = eval_graph(graph, leaves)
        return tree_unflatten(out_tree, outs)

    wrapped._cache = cache
    return wrapped


# ----------------------------------------------------------------------------- fast calls


def _fast_call(plan: Callable[[list[Any]], list[Any]], out_tree: Any,
               signature: tuple) -> Callable[[Sequence[Any]], Any] | None:
    """A function of the flat leaves computing what the slow path computes for leaves of this
    signature, or None when some leaf has no converter.

    It is generated as straight-line Python (from the signature only: names are x<i>, r<i>,
    and converters and the plan come in through the namespace), so a call costs the converters,
    the plan and one Array per output, and no loops over lists."""
    # A plan whose outputs may be its inputs gets copies, as asarray makes: no output Array
    # may see later changes to the caller's array.
    in_place = not getattr(plan, "may_share_inputs", True)
    converters = [_converter(s, in_place) for s in signature]
    n_out = out_tree.num_leaves
    if any(c is None for c in converters) or n_out == 0:
        return None
    namespace: dict[str, Any] = {"_Array": Array, "_tree": out_tree, "_unflatten": tree_unflatten}
    values = []
    for i, c in enumerate(converters):
        if c is _array_value:
            values.append(f"x{i}._value")
        elif c is _unchanged:
            values.append(f"x{i}")
        else:
            namespace[f"_c{i}"] = c
            values.append(f"_c{i}(x{i})")
    results = [f"r{i}" for i in range(n_out)]
    raw = getattr(plan, "plan", None)
    if raw is not None and getattr(plan, "call", None) is not None and FP_ERROR_STATE is not None:
        # A plan of our own, run with NumPy's floating-point warnings off as its `run` does.
        namespace["_plan"] = raw
        namespace["_set"], namespace["_reset"], namespace["_make"] = FP_ERROR_STATE
        body = (f"    _token = _set(_make(all='ignore'))\n"
                f"    try:\n        {', '.join(results)}, = _plan({', '.join(values)})\n"
                f"    finally:\n        _reset(_token)\n")
    else:  # another kind of plan (a blocked one) takes the list its run converts
        namespace["_plan"] = plan
        body = f"    {', '.join(results)}, = _plan([{', '.join(values)}])\n"
    arrays = ", ".join(f"_Array({r})" for r in results)
    if out_tree == tree_structure(0):
        built = arrays
    elif out_tree == tree_structure((0,) * n_out):
        built = f"({arrays},)"
    elif out_tree == tree_structure([0] * n_out):
        built = f"[{arrays}]"
    else:
        built = f"_unflatten(_tree, [{arrays}])"
    inputs = ", ".join(f"x{i}" for i in range(len(converters)))
    source = f"def fast(leaves):\n    {inputs}, = leaves\n{body}    return {built}\n" if converters else \
        f"def fast(leaves):\n{body}    return {built}\n"
    exec(compile(source, "<nabla jit call>", "exec"), namespace)  # noqa: S102 - from the signature only
    fast = namespace["fast"]
    fast.source = source  # type: ignore[attr-defined]
    return fast


_array_value = operator.attrgetter("_value")


def _unchanged(x: Any) -> Any:
    return x


def _array_scalar(x: Array) -> Any:
    v = x._value
    return v[()] if type(v) is np.ndarray else v


def _shared_or_copied(x: np.ndarray) -> np.ndarray:
    # The plan never writes into its inputs, so a C-ordered array with its own buffer (allocated
    # as asarray's copy would be) is read where it is; anything else is copied as asarray does.
    if x.size >= COPY_BELOW_ELEMENTS:
        flags = x.flags
        if flags.c_contiguous and flags.owndata:
            return x
    return x.copy()


def _converter(signature: Any, in_place: bool) -> Callable[[Any], Any] | None:
    """How a leaf of this signature becomes the plan's input, as asarray and the plan's run would
    make it."""
    # Recorded during a call with jax_enable_x64 == x64, so the engine's own dtype rules apply.
    if type(signature) is type:
        if signature in _WEAK_TYPES:
            target = dtypes.python_scalar_dtype(signature())
            if target == dtypes.float64 and signature is float:
                return np.float64  # the same value as asarray's np.asarray(x, dtype=float64)[()]
            return lambda x: np.asarray(x, dtype=target)[()]  # as asarray converts a Python number
        dtype = np.dtype(signature)  # a NumPy scalar type
        target = dtypes.canonicalize(dtype)
        if target == dtype:
            return _unchanged  # immutable: asarray's 0-d copy read back gives the same scalar
        return lambda x: np.asarray(x).astype(target)[()]
    if len(signature) == 2:  # an engine Array
        return _array_scalar if signature[0] == () else _array_value
    _, shape, dtype = signature  # a NumPy array
    if dtype not in _FAST_DTYPES:
        return None
    target = dtypes.canonicalize(dtype)
    if shape == ():
        return (lambda x: x[()]) if target == dtype else (lambda x: x.astype(target)[()])
    if target != dtype:
        return lambda x: x.astype(target)
    if not in_place:
        return lambda x: asarray(x)._value  # exactly asarray's read-only copy
    return _shared_or_copied


def _compile(graph: Any) -> Callable[[list[Any]], list[Any]] | None:
    return compile_plan(graph, check_deadlines=False)
