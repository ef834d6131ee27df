"""`in_axes`: a transform computed per example over a batch, in one request and one plan.

A request's `in_axes` has JAX's vmap semantics: one entry per argument, an int (the axis its
examples are stacked along, negative counting from the end), null (the argument is shared by
every example) or, for an argument that is a list or an object, a list or object of such entries
(a pytree prefix of the argument). The transform is computed for each example and the results
are stacked along axis 0: the plan is `engine.vmap` of the transformed function, traced and
compiled once, not a loop of requests.

Tangents of jvp and hvp are batched like the arguments they go with; the cotangent of vjp is
batched along axis 0 of each leaf, like the outputs it goes with (a list of equally shaped
per-output batches, which JSON delivers stacked, is split back per output).

Everything here is checked on shapes before anything is traced, and a mistake is a 400 naming the
argument: an entry list of the wrong length, an axis out of range, a structure that is not a
prefix of the argument, batch sizes that differ, or no argument mapped at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import engine
from engine.batching import PER_EXAMPLE_LIMIT, per_example_budget
from engine.limits import LimitExceeded
from engine.tree_util import tree_flatten_with_path, tree_leaves, tree_structure, tree_unflatten
from service.admission import Budget, refuse
from service.errors import InvalidRequest
from service.model_schema import is_leaf, join, notation

# With these options every tangent or cotangent already carries its own batch axis
# (service.vector_products); combined with in_axes its meaning would be ambiguous.
VECTOR_BATCH_OPTIONS = ("batched_tangents", "batched_cotangent")


def key(in_axes: list[Any] | None) -> Any:
    """A hashable form of in_axes for the plan cache key (lists and objects frozen, keys sorted)."""
    if in_axes is None:
        return None
    return _frozen(in_axes)


def _frozen(entry: Any) -> Any:
    if isinstance(entry, list):
        return ("list", tuple(_frozen(e) for e in entry))
    if isinstance(entry, dict):
        return ("dict", tuple(sorted((k, _frozen(v)) for k, v in entry.items())))
    return entry


def _path_str(where: str, path: tuple) -> str:
    for k in path:
        where = join(where, getattr(k, "key", getattr(k, "idx", k)))
    return where


def _leaf_axes(entry: Any, arg: Any, where: str, axes_where: str) -> list[tuple[str, Any, int | None]]:
    """(path, leaf, axis) for each array leaf of `arg`, the entry spread over it as a prefix."""
    if entry is None or (isinstance(entry, int) and not isinstance(entry, bool)):
        return [(_path_str(where, path), leaf, entry) for path, leaf in tree_flatten_with_path(arg)[0]]
    if isinstance(entry, list):
        if not isinstance(arg, (list, tuple)):
            raise InvalidRequest(
                f"{axes_where} is a list of {len(entry)} entries, but {where} is {_kind(arg)}: give one int (or null) "
                "for the whole of it", {"path": axes_where, "argument": where})
        if len(entry) != len(arg):
            raise InvalidRequest(f"{axes_where} has {len(entry)} entries but {where} is a list of {len(arg)}: give "
                                 "one entry per element", {"path": axes_where, "argument": where,
                                                           "expected": len(arg), "got": len(entry)})
        return [item for i, (e, a) in enumerate(zip(entry, arg))
                for item in _leaf_axes(e, a, join(where, i), join(axes_where, i))]
    if isinstance(entry, dict):
        if not isinstance(arg, dict):
            raise InvalidRequest(
                f"{axes_where} is an object, but {where} is {_kind(arg)}: give one int (or null) for the whole of it",
                {"path": axes_where, "argument": where})
        if set(entry) != set(arg):
            raise InvalidRequest(f"{axes_where} has keys {sorted(entry)} but {where} has keys {sorted(arg)}: give one "
                                 "entry per key", {"path": axes_where, "argument": where,
                                                   "expected": sorted(arg), "got": sorted(entry)})
        return [item for k in sorted(entry) for item in _leaf_axes(entry[k], arg[k], join(where, k),
                                                                    join(axes_where, k))]
    raise InvalidRequest(f"{axes_where} must be an integer axis, null, or a list or object of them",
                         {"path": axes_where})


# The batch dimension in a typed parameter's spec. Parentheses make it no valid dimension name of
# a schema, so it never clashes with one; being one name, every mapped axis binds the same size.
BATCH_DIMENSION = "batch(in_axes)"


def batched_spec(spec: Any, entry: Any) -> Any:
    """A typed parameter's spec for its batched argument: the batch dimension inserted at each
    mapped axis (`entry` is the argument's in_axes entry). Parts the entry does not fit are left
    as they are: `check` refuses those with a 400 naming the argument."""
    if entry is None or spec is None:
        return spec
    if isinstance(entry, int) and not isinstance(entry, bool):
        if is_leaf(spec):
            rank = len(spec["shape"])
            if not -(rank + 1) <= entry <= rank:
                return spec
            shape = list(spec["shape"])
            shape.insert(entry % (rank + 1), BATCH_DIMENSION)
            return {**spec, "shape": shape}
        if isinstance(spec, dict):
            return {k: batched_spec(v, entry) for k, v in spec.items()}
        if isinstance(spec, list):
            return [batched_spec(v, entry) for v in spec]
        return spec
    if isinstance(entry, dict) and isinstance(spec, dict) and set(entry) == set(spec):
        return {k: batched_spec(spec[k], entry[k]) for k in spec}
    if isinstance(entry, list) and isinstance(spec, list) and len(entry) == len(spec):
        return [batched_spec(s, e) for s, e in zip(spec, entry)]
    return spec


def _kind(arg: Any) -> str:
    if isinstance(arg, dict):
        return "an object"
    if isinstance(arg, (list, tuple)):
        return "a list"
    return f"an array {notation(np.shape(arg), np.asarray(arg).dtype)}"


def check(params: Sequence[str], in_axes: list[Any], args: list[Any], vectors_batched: bool = False) -> int:
    """The batch size of a request: every mapped axis in range and of the same size. 400 if not."""
    if vectors_batched:
        raise InvalidRequest("in_axes cannot be combined with batched_tangents or batched_cotangent: send the "
                             "examples' vectors batched like the arguments (in_axes), or a batch of vectors for one "
                             "example, not both", {"path": "in_axes", "options": list(VECTOR_BATCH_OPTIONS)})
    if len(in_axes) != len(args):
        raise InvalidRequest(f"in_axes has {len(in_axes)} entries but the function takes {len(args)} argument(s) "
                             f"{list(params)}: give one entry per argument (null for one shared by every example)",
                             {"path": "in_axes", "expected": list(params), "got": len(in_axes)})
    sizes: dict[int, str] = {}
    for i, (name, entry, arg) in enumerate(zip(params, in_axes, args)):
        for where, leaf, axis in _leaf_axes(entry, arg, name, f"in_axes[{i}]"):
            if axis is None:
                continue
            shape = np.shape(leaf)
            if not -len(shape) <= axis < len(shape) or not shape:
                valid = f"axes {-len(shape)}..{len(shape) - 1}" if shape else "no axis: it is a scalar"
                raise InvalidRequest(
                    f"in_axes maps {where} along axis {axis}, but {where} is "
                    f"{notation(shape, np.asarray(leaf).dtype)} ({valid}); map an axis it has, or give it null "
                    "to share it between examples",
                    {"path": f"in_axes[{i}]", "argument": where, "axis": axis, "shape": list(shape)})
            size = int(shape[axis % len(shape)])
            if size not in sizes and sizes:
                first_size, first = next(iter(sizes.items()))
                raise InvalidRequest(
                    f"in_axes: {where} has {size} examples along axis {axis} but {first} has {first_size}; every "
                    "mapped axis must have the same size (the number of examples)",
                    {"path": f"in_axes[{i}]", "argument": where, "batch_size": size,
                     "expected": first_size, "first": first})
            sizes.setdefault(size, f"{where} (axis {axis})")
    if not sizes:
        raise InvalidRequest("in_axes maps no argument (every entry is null): map at least one argument along an "
                             "axis, or leave in_axes out to compute for a single example",
                             {"path": "in_axes"})
    return next(iter(sizes))


def examples(in_axes: list[Any], args: list[Any]) -> list[Any]:
    """One example's arguments, as shapes only (each mapped axis removed), for predicting costs."""
    out = []
    for entry, arg in zip(in_axes, args):
        leaves = [_one_example(value, axis) for _, value, axis in _leaf_axes(entry, arg, "", "")]
        out.append(tree_unflatten(tree_structure(arg), leaves))
    return out


def _one_example(value: Any, axis: int | None) -> Any:
    if axis is None:  # shared by every example: its own shape, and its dtype kept (a bare float64
        # NumPy value would be traced as the engine's default float)
        return engine.ShapeDtypeStruct(np.shape(value), np.asarray(value).dtype)
    shape = list(np.shape(value))
    del shape[axis % len(shape)]
    return engine.ShapeDtypeStruct(tuple(shape), np.asarray(value).dtype)


def vmap_axes(transform: str, in_axes: list[Any], nargs: int, n_extra: int, argnums: Any) -> tuple[Any, ...]:
    """in_axes for the transformed function's flat inputs: the arguments, then the vectors."""
    entries = list(in_axes)
    if transform == "jvp":
        return tuple(entries + entries[:n_extra])
    if transform == "hvp":
        chosen = [argnums] if isinstance(argnums, int) else list(argnums)
        return tuple(entries + [entries[a % nargs] for a in chosen][:n_extra])
    return tuple(entries + [0] * n_extra)  # the cotangent of vjp: batched like the outputs


@contextlib.contextmanager
def per_example_operations(budget: Budget) -> Iterator[None]:
    """Bound the operations a batch without a batching rule adds: each example's run is one more
    operation of the plan (NABLA_MAX_PLAN_NODES), refused before it is traced."""
    try:
        with per_example_budget(budget.max_plan_nodes):
            yield
    except LimitExceeded as e:
        if e.limit != PER_EXAMPLE_LIMIT:
            raise
        raise refuse("the batch would run an operation without a batching rule once per example, and its number "
                     "of runs", e.value, e.maximum, "NABLA_MAX_PLAN_NODES",
                     "send fewer examples per request, or index with constants rather than a batched "
                     "index array") from None


def batched_cotangent(function: Any, example_args: list[Any], cotangent: Any, n: int, has_aux: bool) -> Any:
    """The cotangent of a vjp with in_axes: each leaf a batch (axis 0) of one output's cotangent.

    A list of equally shaped per-output batches arrives as one stacked array (k, n, ...); it is
    split back into one batch per output when the function has k outputs."""
    leaves = tree_leaves(cotangent)
    if len(leaves) == 1 and np.ndim(leaves[0]) >= 2:
        graph = engine.make_graph(function.fn)(*example_args)
        out_tree = graph.out_tree
        if has_aux and out_tree.children():
            out_tree = out_tree.children()[0]
        k = out_tree.num_leaves
        if k > 1 and np.shape(leaves[0])[0] == k:
            cotangent = list(leaves[0])
            leaves = cotangent
    for i, leaf in enumerate(leaves):
        where = "cotangent" if len(leaves) == 1 else f"cotangent[{i}]"
        shape = np.shape(leaf)
        if not shape or shape[0] != n:
            raise InvalidRequest(f"{where}: with in_axes the cotangent holds one per example along axis 0 ({n} "
                                 f"examples), got {notation(shape, np.asarray(leaf).dtype)}",
                                 {"path": where, "batch_size": n, "shape": list(shape)})
    return cotangent


__all__ = ["batched_cotangent", "check", "examples", "key", "per_example_operations", "vmap_axes"]
