"""Derivatives applied to vectors, without forming the derivative matrix.

Hessian-vector products (`hvp`) are computed forward over reverse, as JAX's autodiff cookbook
does: the jvp of the gradient. A request costs a few gradients whatever the argument's size, and
the n x n Hessian is never built. Semantics follow `jax.jvp(jax.grad(f, argnums), ...)` with the
arguments outside `argnums` held fixed: `tangents` holds one entry per differentiated argument
(in `argnums` order), and the result has the gradient's structure: for an int `argnums` it is
H v shaped like that argument, for a list entry i is sum_j H[i][j] v[j] (H[i][j] being the block
of `/v1/hessian` with the same argnums). The gradient and the value come with it at no cost.

Batches of vectors (`batched_tangents` for jvp and hvp, `batched_cotangent` for vjp): every
tangent or cotangent leaf carries a leading batch axis of the same size B, and the answer holds B
products in one compiled plan: a Jacobian-matrix product J T (jvp), a matrix-Jacobian product
C J (vjp), H V (hvp). This is `jax.vmap` of the single-vector derivative over its vectors: the
derivative is traced once for one vector and the engine's graph-level batching
(engine.batching) runs it for all rows at once. What does not depend on the vectors (the value,
the gradient, aux) is computed once and returned without a batch axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import engine
import engine.numpy as jnp
from engine.batching import NotBatchable, eval_batched
from engine.core import ShapedArray, aval_of, trace_flat
from engine.tree_util import (
    DictKey,
    SequenceKey,
    tree_flatten,
    tree_flatten_with_path,
    tree_leaves,
    tree_structure,
    tree_unflatten,
)
from service.errors import InvalidArgument, InvalidFunction, InvalidRequest
from service.json_trees import TreeBudget, decode_tree
from service.model_schema import join, notation, with_float_dtype

BATCH_OPTIONS = {"jvp": "batched_tangents", "hvp": "batched_tangents", "vjp": "batched_cotangent"}

# ----------------------------------------------------------------------------- requests


def is_batched(transform: str, request: Any) -> bool:
    option = BATCH_OPTIONS.get(transform)
    return bool(option and getattr(request, option, False))


def takes_vectors(transform: str, request: Any) -> bool:
    """The requests whose tangents or cotangent this module decodes (the plain jvp and vjp keep
    the pipeline's own decoding)."""
    return transform == "hvp" or is_batched(transform, request)


def differentiated(argnums: int | Sequence[int], nargs: int) -> list[int]:
    """The positions `argnums` names, each in range and named once."""
    chosen = [argnums] if isinstance(argnums, int) else list(argnums)
    for a in chosen:
        if not -nargs <= a < nargs:
            raise InvalidRequest(f"argnums {a} is out of range: the function takes {nargs} argument(s)",
                                 {"argnums": argnums, "arguments": nargs})
    positions = [a % nargs for a in chosen]
    if len(set(positions)) != len(positions):
        raise InvalidRequest(f"argnums {chosen} names an argument twice; list each argument once",
                             {"argnums": chosen})
    return positions


def decode_vectors(transform: str, request: Any, function: Any, args: list[Any], budget: TreeBudget) -> list[Any]:
    """The tangents of an hvp or a batched jvp, or the batched cotangent of a vjp, as arrays,
    checked against the arguments they go with (their structure and shapes, and one batch size
    across all leaves)."""
    batched = is_batched(transform, request)
    float_dtype = np.dtype(request.dtype or "float64")
    if transform == "vjp":
        cotangent = decode_tree(request.cotangent, float_dtype, "cotangent", budget)
        leaves = _paths_and_leaves(cotangent, "cotangent")
        if not leaves:
            raise InvalidRequest("batched_cotangent needs a cotangent with at least one array")
        _same_batch(leaves, "batched_cotangent")
        return [cotangent]
    chosen = differentiated(request.argnums, len(args)) if transform == "hvp" else list(range(len(args)))
    names = [function.params[i] for i in chosen]
    if len(request.tangents) != len(chosen):
        which = (f"the differentiated argument(s) {names} (argnums)" if transform == "hvp"
                 else f"argument(s) {names}")
        raise InvalidRequest(f"{transform} needs one tangent per entry of {which}: {len(chosen)} expected, "
                             f"{len(request.tangents)} given", {"expected": names, "got": len(request.tangents)})
    tangents = []
    for name, position, value in zip(names, chosen, request.tangents):
        spec = function.spec(name)  # plain numbers take the argument's declared dtype
        if spec is not None and request.dtype is not None:
            spec = with_float_dtype(spec, request.dtype)
        tangent = decode_tree(value, float_dtype, f"tangents.{name}", budget, spec, override=request.dtype is not None)
        _same_structure(args[position], tangent, name)
        tangents.append(tangent)
    if batched:
        leaves = [leaf for name, t in zip(names, tangents) for leaf in _paths_and_leaves(t, f"tangents.{name}")]
        if not leaves:
            raise InvalidRequest("batched_tangents needs at least one tangent array to take the batch size from")
        _same_batch(leaves, "batched_tangents")
    return [_like_primal(args[position], t, name, batched) for name, position, t in zip(names, chosen, tangents)]


def _paths_and_leaves(tree: Any, root: str) -> list[tuple[str, Any]]:
    out = []
    for path, leaf in tree_flatten_with_path(tree)[0]:
        where = root
        for key in path:
            where = join(where, key.key if isinstance(key, DictKey) else key.idx if isinstance(key, SequenceKey)
                         else str(key))
        out.append((where, leaf))
    return out


def _same_batch(leaves: list[tuple[str, Any]], option: str) -> int:
    """The batch size: the leading axis of every leaf, which must agree."""
    first_path, first = leaves[0]
    for where, leaf in leaves:
        if np.ndim(leaf) == 0:
            raise InvalidRequest(f"{where}: with {option} every leaf needs a leading batch axis, got a scalar "
                                 f"{notation((), np.asarray(leaf).dtype)}", {"path": where})
        if np.shape(leaf)[0] != np.shape(first)[0]:
            raise InvalidRequest(f"{where}: batch size {np.shape(leaf)[0]} differs from {np.shape(first)[0]} in "
                                 f"{first_path}; every leaf must have the same leading (batch) axis",
                                 {"path": where, "batch_size": int(np.shape(leaf)[0]),
                                  "expected": int(np.shape(first)[0]), "first": first_path})
    return int(np.shape(first)[0])


def _same_structure(primal: Any, tangent: Any, name: str) -> None:
    where = f"tangents.{name}"
    primal_tree, tangent_tree = tree_structure(primal), tree_structure(tangent)
    if primal_tree != tangent_tree:
        raise InvalidArgument(f"{where}: expected the structure of {name}, {primal_tree}, got {tangent_tree}",
                              {"path": where, "expected": str(primal_tree), "got": str(tangent_tree)})


def _like_primal(primal: Any, tangent: Any, name: str, batched: bool) -> Any:
    """The tangent with its argument's shapes (after a leading batch axis when batched) and float
    dtype: a tangent sent in another precision is converted, as its argument's was."""
    out = []
    for p, (where, t) in zip(tree_leaves(primal), _paths_and_leaves(tangent, f"tangents.{name}")):
        t = np.asarray(t)
        shape = tuple(np.shape(t))[1:] if batched else tuple(np.shape(t))
        if shape != tuple(np.shape(p)):
            expected = notation(((np.shape(t)[0],) if batched else ()) + tuple(np.shape(p)), t.dtype)
            got = notation(np.shape(t), t.dtype)
            shaped = f"a batch of {name}'s shape" if batched else f"shaped like {name}"
            raise InvalidArgument(f"{where}: expected {expected} ({shaped}), got {got}",
                                  {"path": where, "expected": expected, "got": got})
        dtype = np.asarray(p).dtype
        out.append(t.astype(dtype) if dtype.kind == "f" and t.dtype != dtype else t)
    return tree_unflatten(tree_structure(tangent), out)


def batch_size(transform: str, extra: list[Any], main_outputs: int) -> int | None:
    """B of a batched request (None for one vector), for admission before anything is traced.

    A cotangent for an output of several equally shaped arrays arrives stacked (JSON has one
    array for a list of equal shapes), with the batch axis second."""
    leaves = tree_leaves(extra)
    if not leaves:
        return None
    first = leaves[0]
    if transform == "vjp" and len(leaves) == 1 and main_outputs > 1 and np.ndim(first) >= 2 \
            and np.shape(first)[0] == main_outputs:
        return int(np.shape(first)[1])
    return int(np.shape(first)[0])


def main_output_count(out_tree: Any, has_aux: bool) -> int:
    if has_aux and out_tree.children():
        return out_tree.children()[0].num_leaves
    return out_tree.num_leaves


# ----------------------------------------------------------------------------- traced functions


def hvp(fn: Callable[..., Any], argnums: int | tuple[int, ...], has_aux: bool, nargs: int,
        batched: bool) -> Callable[..., Any]:
    """The function a plan traces: (*args, *tangents) -> {value, grad, hvp[, aux]}."""
    chosen = differentiated(argnums, nargs)
    value_and_grad = engine.value_and_grad(fn, argnums, has_aux=has_aux)

    def one(args: list[Any], tangents: list[Any]) -> dict[str, Any]:
        def of_differentiated(*primals: Any) -> Any:
            full = list(args)
            for position, primal in zip(chosen, primals):
                full[position] = primal
            if has_aux:
                (value, aux), grads = value_and_grad(*full)
                return (value, grads), aux
            return value_and_grad(*full)

        out = engine.jvp(of_differentiated, tuple(args[i] for i in chosen), tuple(tangents), has_aux=has_aux)
        (value, grads), (_, products) = out[0], out[1]
        result = {"value": value, "grad": _listed(grads), "hvp": _listed(products)}
        if has_aux:
            result["aux"] = out[2]
        return result

    return _runner(one, nargs, batched, "hvp")


def jvp(fn: Callable[..., Any], has_aux: bool, nargs: int) -> Callable[..., Any]:
    """A batch of jvps: (*args, *tangents) -> {value, jvp[, aux]}, jvp with the batch axis."""
    def one(args: list[Any], tangents: list[Any]) -> dict[str, Any]:
        out = engine.jvp(fn, tuple(args), tuple(tangents), has_aux=has_aux)
        result = {"value": out[0], "jvp": out[1]}
        if has_aux:
            result["aux"] = out[2]
        return result

    return _runner(one, nargs, True, "jvp")


def vjp(fn: Callable[..., Any], has_aux: bool, nargs: int) -> Callable[..., Any]:
    """A batch of vjps: (*args, cotangent) -> {value, vjp[, aux]}, vjp with the batch axis."""
    def one(args: list[Any], cotangents: list[Any]) -> dict[str, Any]:
        out = engine.vjp(fn, *args, has_aux=has_aux)
        result = {"value": out[0], "vjp": list(out[1](_as_output(cotangents[0], out[0])))}
        if has_aux:
            result["aux"] = out[2]
        return result

    def run(*flat: Any) -> dict[str, Any]:
        args = list(flat[:nargs])
        graph = engine.make_graph(fn)(*args)  # the output's structure, to read the cotangent by
        out_tree = graph.out_tree.children()[0] if has_aux and graph.out_tree.children() else graph.out_tree
        outputs = [v.aval for v in graph.outvars[:out_tree.num_leaves]]
        return _over_batch(one, args, [_batch_first(flat[nargs], outputs)], "vjp")

    return run


def _runner(one: Callable[[list[Any], list[Any]], dict[str, Any]], nargs: int, batched: bool,
            batched_key: str) -> Callable[..., Any]:
    def run(*flat: Any) -> dict[str, Any]:
        args, vectors = list(flat[:nargs]), list(flat[nargs:])
        return _over_batch(one, args, vectors, batched_key) if batched else one(args, vectors)
    return run


def _listed(tree: Any) -> Any:
    return list(tree) if isinstance(tree, tuple) else tree


def _over_batch(one: Callable[[list[Any], list[Any]], dict[str, Any]], args: list[Any], vectors: list[Any],
                batched_key: str) -> dict[str, Any]:
    """one(args, vectors) for every row of the vectors' leaves at once: traced for one row, then
    evaluated by the engine's graph-level batching. Only `batched_key` carries the batch axis."""
    arg_leaves, arg_tree = tree_flatten(tuple(args))
    vector_leaves, vector_tree = tree_flatten(tuple(vectors))
    n = int(vector_leaves[0].shape[0])
    layout: list[tuple[str, Any, int]] = []

    def flat_one(*flat: Any) -> list[Any]:
        row_args = tree_unflatten(arg_tree, flat[:len(arg_leaves)])
        row_vectors = tree_unflatten(vector_tree, flat[len(arg_leaves):])
        result = one(list(row_args), list(row_vectors))
        layout.clear()
        leaves: list[Any] = []
        for key in sorted(result):
            key_leaves, key_tree = tree_flatten(result[key])
            layout.append((key, key_tree, len(key_leaves)))
            leaves.extend(jnp.asarray(x) for x in key_leaves)
        return leaves

    avals = [aval_of(x) for x in arg_leaves] + [ShapedArray(tuple(x.shape[1:]), x.dtype) for x in vector_leaves]
    graph, _ = trace_flat(flat_one, avals)
    try:
        outs, flags = eval_batched(graph, [*arg_leaves, *vector_leaves],
                                   [False] * len(arg_leaves) + [True] * len(vector_leaves), n)
    except NotBatchable as e:
        raise InvalidFunction(f"the function cannot be applied to a batch of vectors ({e}); send one vector per "
                              "request instead", {"reason": str(e)}) from None
    result: dict[str, Any] = {}
    start = 0
    for key, key_tree, count in layout:
        values = outs[start:start + count]
        if key == batched_key:  # a product that does not depend on the vectors is the same for every row
            values = [v if b else jnp.broadcast_to(v, (n,) + tuple(v.shape))
                      for v, b in zip(values, flags[start:start + count])]
        result[key] = tree_unflatten(key_tree, values)
        start += count
    return result


def _batch_first(cotangent: Any, outputs: list[ShapedArray]) -> Any:
    """A batched cotangent in the output's structure, each leaf (B, *output.shape); checked."""
    leaves = tree_leaves(cotangent)
    if len(leaves) == 1 and len(outputs) > 1 and leaves[0].ndim >= 2 and leaves[0].shape[0] == len(outputs):
        # Sent as a list of equally shaped batches, read as one array: one batch per output.
        leaves = [leaves[0][i] for i in range(len(outputs))]
    if len(leaves) != len(outputs):
        raise InvalidArgument(f"cotangent: {len(leaves)} array(s), but the function's output has {len(outputs)}: "
                              "send one batch per output, each shaped like it with a leading batch axis",
                              {"path": "cotangent"})
    n = leaves[0].shape[0] if leaves[0].ndim else None
    for i, (c, o) in enumerate(zip(leaves, outputs)):
        where = "cotangent" if len(leaves) == 1 else f"cotangent[{i}]"
        if c.ndim == 0 or c.shape[0] != n:
            raise InvalidRequest(f"{where}: with batched_cotangent every leaf needs the same leading batch axis "
                                 f"({n}), got {notation(c.shape, c.dtype)}", {"path": where})
        if tuple(c.shape[1:]) != tuple(o.shape):
            expected, got = notation((n,) + tuple(o.shape), o.dtype), notation(c.shape, c.dtype)
            raise InvalidArgument(f"{where}: expected {expected} (a batch of the output's shape), got {got}",
                                  {"path": where, "expected": expected, "got": got})
    return leaves


def _as_output(rows: list[Any], output: Any) -> Any:
    """One row of each cotangent leaf, in the output's structure and dtype."""
    leaves = [r if r.dtype == o.dtype or o.dtype.kind not in "fc" else r.astype(o.dtype)
              for r, o in zip(rows, tree_leaves(output))]
    return tree_unflatten(tree_structure(output), leaves)


__all__ = ["BATCH_OPTIONS", "batch_size", "decode_vectors", "hvp", "is_batched", "jvp", "main_output_count",
           "takes_vectors", "vjp"]
