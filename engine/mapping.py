"""vmap: a function of one example turned into a function of a batch, with JAX's semantics.

The function is traced once on one example's shapes (only the mapped values become graph inputs;
unmapped ones are passed as they are, so Python control flow on them works as in JAX), and the
graph is evaluated batched (engine.batching): every operation runs once on the whole batch.
An operation its batching rule cannot do in one pass runs once per example instead (correct, but a loop).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import engine.numpy as jnp
from engine.array import Array
from engine.batching import eval_batched
from engine.core import ShapedArray, ShapeDtypeStruct, Tracer, end_trace, new_trace
from engine.errors import BatchAxisError
from engine.transforms import _as_leaf
from engine.tree_util import (
    SequenceKey,
    broadcast_prefix,
    keystr,
    tree_flatten,
    tree_flatten_with_path,
    tree_unflatten,
)


def _is_none(x: Any) -> bool:
    return x is None


def _check_axes_spec(spec: Any, name: str) -> None:
    """Every leaf of in_axes/out_axes is an int or None."""
    for leaf in tree_flatten(spec, is_leaf=_is_none)[0]:
        if leaf is not None and (isinstance(leaf, bool) or not isinstance(leaf, int)):
            raise BatchAxisError(f"vmap {name} must be an int, None, or a container (tuple, list, dict) of "
                                 f"them, but it holds {leaf!r} of type {type(leaf).__name__}")


def _param_names(fun: Callable[..., Any]) -> list[str]:
    try:
        return [p.name for p in inspect.signature(fun).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return []


def _describe_argument(path: tuple, params: list[str]) -> str:
    """'argument 2 (inputs)', "argument 0 (params) at ['W']" or "keyword argument y", from a
    path into (args, kwargs)."""
    if path[0] == SequenceKey(1):  # kwargs
        where = f"keyword argument {path[1].key}"
        rest = path[2:]
    else:
        index = path[1].idx
        where = f"argument {index}" + (f" ({params[index]})" if index < len(params) else "")
        rest = path[2:]
    return where + (f" at {keystr(rest)}" if rest else "")


def _type_str(x: Any) -> str:
    return ShapedArray(tuple(x.shape), x.dtype).str_short()


def _as_array(x: Any) -> Any:
    return x if isinstance(x, (Array, Tracer, ShapeDtypeStruct)) else jnp.asarray(x)


def _prefix_error(e: ValueError, name: str, what: str) -> BatchAxisError:
    return BatchAxisError(f"vmap {name} must be a prefix of the {what}' structure (one entry per argument, "
                          f"or one per part of it): {e}")


def vmap(fun: Callable[..., Any], in_axes: Any = 0, out_axes: Any = 0, *,
         axis_size: int | None = None) -> Callable[..., Any]:
    """f -> a function of a batch: each argument mapped along its `in_axes` entry (None: shared
    by every example), the results stacked along `out_axes`.

    in_axes is an int, None, or a tuple with one entry per positional argument, each a pytree
    prefix of its argument (a top-level list is read as a tuple, as JAX does); keyword arguments
    are always mapped along axis 0. Negative axes count from the end. out_axes is an int, None (the
    result must not depend on the mapped axis) or a pytree prefix of the result. axis_size gives
    the batch size when nothing is mapped (every result is then broadcast to it).
    """
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    _check_axes_spec(in_axes, "in_axes")
    _check_axes_spec(out_axes, "out_axes")
    if axis_size is not None and (isinstance(axis_size, bool) or not isinstance(axis_size, int) or axis_size < 0):
        raise BatchAxisError(f"vmap axis_size must be a non-negative int, got {axis_size!r}")
    params = _param_names(fun)

    @functools.wraps(fun)
    def batched(*args: Any, **kwargs: Any) -> Any:
        if isinstance(in_axes, tuple) and len(in_axes) != len(args):
            raise BatchAxisError(
                f"vmap in_axes has {len(in_axes)} entries but the function was called with {len(args)} positional "
                f"argument{'s' if len(args) != 1 else ''}: give one entry per argument (None for one shared by "
                "every example), or a single int for all of them")
        full = (tuple(args), dict(kwargs))
        try:
            axes = broadcast_prefix((in_axes, {k: 0 for k in kwargs}), full, is_leaf=_is_none)
        except ValueError as e:
            raise _prefix_error(e, "in_axes", "arguments") from None
        path_leaves, in_tree = tree_flatten_with_path(full)
        leaves = [leaf for _, leaf in path_leaves]

        mapped: list[tuple[int, Any]] = []  # (leaf index, value with the mapped axis first)
        sizes: dict[int, str] = {}  # each batch size seen -> the first place it was seen
        for k, ((path, x), axis) in enumerate(zip(path_leaves, axes)):
            if axis is None:
                continue
            x = _as_array(x)
            where = _describe_argument(path, params)
            if x.ndim == 0:
                raise BatchAxisError(f"vmap was asked to map {where} along axis {axis}, but it is a scalar "
                                     f"({_type_str(x)}): map arrays of at least one dimension, or give it "
                                     "in_axes None to share it between examples")
            if not -x.ndim <= axis < x.ndim:
                raise BatchAxisError(f"vmap in_axes {axis} is out of range for {where} of type {_type_str(x)} "
                                     f"(valid axes are {-x.ndim}..{x.ndim - 1})")
            axis %= x.ndim
            sizes.setdefault(int(x.shape[axis]), f"axis {axis} of {where} of type {_type_str(x)}")
            if axis != 0:
                x = jnp.moveaxis(x, axis, 0)
            mapped.append((k, x))
        if axis_size is not None:
            sizes.setdefault(axis_size, "axis_size")
        if len(sizes) > 1:
            listed = "; ".join(f"size {n}: {where}" for n, where in sizes.items())
            raise BatchAxisError(f"vmap got mapped axes of different sizes ({listed}); every mapped axis (and "
                                 "axis_size, if given) must have the same size, the number of examples")
        if not sizes:
            raise BatchAxisError("vmap needs at least one mapped argument: in_axes is None for every argument. "
                                 "Map one of them (an int in in_axes), or give axis_size to broadcast to a size")
        n = next(iter(sizes))

        graph, out_tree = _trace_one_example(fun, leaves, mapped, in_tree)
        outs, flags = eval_batched(graph, [x for _, x in mapped], [True] * len(mapped), n,
                                   per_example_fallback=True)
        return _place_results(outs, flags, out_tree, out_axes, n)

    return batched


def _trace_one_example(fun: Callable[..., Any], leaves: list[Any], mapped: list[tuple[int, Any]],
                       in_tree: Any) -> tuple[Any, Any]:
    """The graph of fun on one example: mapped leaves (batch axis first) become its inputs."""
    trace = new_trace(concrete=False)
    try:
        example = list(leaves)
        for k, x in mapped:
            example[k] = trace.new_input(ShapedArray(tuple(x.shape[1:]), x.dtype))
        args, kwargs = tree_unflatten(in_tree, example)
        out_leaves, out_tree = tree_flatten(fun(*args, **kwargs))
        graph = trace.to_graph([_as_leaf(o, "vmap: the function's output") for o in out_leaves])
    finally:
        end_trace(trace)
    return graph, out_tree


def _place_results(outs: list[Any], flags: list[bool], out_tree: Any, out_axes: Any, n: int) -> Any:
    try:
        axes = broadcast_prefix(out_axes, tree_unflatten(out_tree, [0] * len(outs)), is_leaf=_is_none)
    except ValueError as e:
        raise _prefix_error(e, "out_axes", "function's results") from None
    paths = [p for p, _ in tree_flatten_with_path(tree_unflatten(out_tree, list(range(len(outs)))))[0]]
    placed = []
    for out, batched, axis, path in zip(outs, flags, axes, paths):
        where = f"the result at {keystr(path)}" if path else "the result"
        if axis is None:
            if batched:
                raise BatchAxisError(f"vmap out_axes is None for {where}, but it depends on the mapped arguments, "
                                     "so it differs between examples: give it an axis to stack them along")
            placed.append(out)
            continue
        if not batched:
            out = jnp.broadcast_to(jnp.reshape(out, (1,) + tuple(out.shape)), (n,) + tuple(out.shape))
        if not -out.ndim <= axis < out.ndim:
            raise BatchAxisError(f"vmap out_axes {axis} is out of range for {where}, which has {out.ndim - 1} "
                                 f"dimension(s) per example (valid axes are {-out.ndim}..{out.ndim - 1})")
        axis %= out.ndim
        placed.append(jnp.moveaxis(out, 0, axis) if axis != 0 else out)
    return tree_unflatten(out_tree, placed)
