"""Batching a graph along a leading axis of some of its inputs (a graph-level vmap).

Jacobians need one derivative pass per basis vector; batching the derivative graph runs all of
them at once as array operations: jacfwd pushes the whole tangent basis through one forward-mode
graph, jacrev pulls the whole cotangent basis through one reverse-mode graph.

A batched value carries the batch as its leading axis. Each primitive has a rule saying how to
apply it when some operands are batched; most rules only shift axes in the attributes, because
NumPy's own broadcasting handles the extra leading axis once operands are aligned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.core import Graph, Literal, Var, bind
from engine.errors import EngineError


class NotBatchable(EngineError):
    """A primitive has no batching rule; callers fall back to one pass per basis vector."""


def _align(x: Any, batched: bool, rank: int, n: int) -> Any:
    """x as an array of rank 1 + rank with the batch leading (size 1 when x is unbatched)."""
    import engine.numpy as jnp

    if batched:
        extra = rank - (x.ndim - 1)
        if extra > 0:
            x = jnp.reshape(x, (x.shape[0],) + (1,) * extra + tuple(x.shape[1:]))
        return x
    extra = rank - x.ndim
    return jnp.reshape(x, (1,) * (1 + extra) + tuple(x.shape))


def _full(x: Any, batched: bool, n: int) -> Any:
    """x with its batch axis materialised (unbatched values are broadcast to n copies)."""
    import engine.numpy as jnp

    if batched:
        return x
    return jnp.broadcast_to(jnp.reshape(x, (1,) + tuple(x.shape)), (n,) + tuple(x.shape))


def _elementwise(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    rank = max(a.ndim - (1 if b else 0) for a, b in zip(args, batched))
    aligned = [_align(a, b, rank, n) for a, b in zip(args, batched)]
    return bind(prim, tuple(aligned), attrs)


def _shift_axes(name: str) -> Callable[..., Any]:
    def rule(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
        new = dict(attrs)
        if "axes" in new:
            new["axes"] = tuple(a + 1 for a in new["axes"])
        if "axis" in new:
            new["axis"] = new["axis"] + 1 if new["axis"] >= 0 else new["axis"]
        return bind(prim, (args[0],), new)
    return rule


def _reshape(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    return bind(prim, (args[0],), {"shape": (n,) + tuple(attrs["shape"])})


def _transpose(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    return bind(prim, (args[0],), {"perm": (0,) + tuple(p + 1 for p in attrs["perm"])})


def _broadcast(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    shape = tuple(attrs["shape"])
    x = _align(args[0], True, len(shape), n)
    return bind(prim, (x,), {"shape": (n,) + shape})


def _concatenate(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    full = [_full(a, b, n) for a, b in zip(args, batched)]
    return bind(prim, tuple(full), {"axis": attrs["axis"] + 1})


def _indexed(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    index = attrs["index"]
    first_array = prim.name == "gather" and 1 or 2
    if any(batched[first_array:]):
        raise NotBatchable("batched index arrays")
    kinds = [item[0] for item in index]
    has_arrays = "array" in kinds
    advanced = [i for i, k in enumerate(kinds) if k == "array" or (has_arrays and k == "int")]
    if advanced and advanced != list(range(advanced[0], advanced[-1] + 1)):
        raise NotBatchable("separated advanced indices move the batch axis")
    new_attrs = dict(attrs)
    new_attrs["index"] = (("slice", None, None, None),) + tuple(index)
    if prim.name == "gather":
        return bind(prim, (args[0],) + tuple(args[1:]), new_attrs)
    x = _full(args[0], batched[0], n)
    y = args[1]
    if batched[1]:
        from engine.numpy.indexing import indexed_shape

        target = indexed_shape(tuple(args[0].shape[1:] if batched[0] else args[0].shape), index,
                               [tuple(a.shape) for a in args[2:]])
        y = _align(y, True, len(target), n)
    else:
        y = _align(y, False, y.ndim, n)
    return bind(prim, (x, y) + tuple(args[2:]), new_attrs)


def _matmul(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    """A batch of matrix products against one fixed matrix is folded into a single product."""
    import engine.numpy as jnp

    a, b = args
    if batched == [False, True] and a.ndim == 2 and b.ndim == 3 and b.shape[2] == 1:
        # A batch of matrix-vector products: (n, k, 1) -> (k, n) is a transposed view, no copy.
        cols = jnp.transpose(jnp.reshape(b, (n, b.shape[1])), (1, 0))
        out = bind(prim, (a, cols), attrs)  # (m, n)
        return jnp.reshape(jnp.transpose(out, (1, 0)), (n, a.shape[0], 1))
    if batched == [False, True] and a.ndim == 2 and b.ndim == 3:
        k, p = b.shape[1], b.shape[2]
        wide = jnp.reshape(jnp.transpose(b, (1, 0, 2)), (k, n * p))
        out = bind(prim, (a, wide), attrs)
        return jnp.transpose(jnp.reshape(out, (a.shape[0], n, p)), (1, 0, 2))
    if batched == [True, False] and a.ndim == 3 and b.ndim == 2:
        tall = jnp.reshape(a, (n * a.shape[1], a.shape[2]))
        return jnp.reshape(bind(prim, (tall, b), attrs), (n, a.shape[1], b.shape[1]))
    return _matmul_like(prim, args, batched, attrs, n)


def _matmul_like(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    # Leading (batch) dimensions broadcast in matmul and NumPy's linalg: align their ranks.
    rank = max(a.ndim - (1 if b else 0) for a, b in zip(args, batched))
    aligned = [_align(a, b, rank, n) if b else a for a, b in zip(args, batched)]
    return bind(prim, tuple(aligned), attrs)


def _square_matrix(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    return bind(prim, (args[0],), attrs)


def _einsum(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    lhs, _, out = attrs["spec"].partition("->")
    terms = lhs.split(",")
    used = set(attrs["spec"])
    letter = next(c for c in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in used)
    terms = [letter + t if b else t for t, b in zip(terms, batched)]
    return bind(prim, tuple(args), {"spec": ",".join(terms) + "->" + letter + out})


_ELEMENTWISE = {
    "neg", "exp", "expm1", "log", "log1p", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
    "asinh", "acosh", "atanh", "sqrt", "logistic", "abs", "sign", "floor", "ceil", "round", "erf", "trunc",
    "integer_pow", "add", "sub", "mul", "div", "pow", "max", "min", "atan2", "rem", "eq", "ne", "lt", "le", "gt",
    "ge", "and", "or", "xor", "not", "isfinite", "isnan", "select", "convert_element_type", "stop_gradient",
    "floor_divide_int",
}
RULES: dict[str, Callable[..., Any]] = {name: _elementwise for name in _ELEMENTWISE}
RULES.update({
    "reduce_sum": _shift_axes("reduce_sum"), "reduce_max": _shift_axes("reduce_max"),
    "reduce_min": _shift_axes("reduce_min"), "reduce_prod": _shift_axes("reduce_prod"),
    "reduce_and": _shift_axes("reduce_and"), "reduce_or": _shift_axes("reduce_or"),
    "argmax": _shift_axes("argmax"), "argmin": _shift_axes("argmin"), "cumsum": _shift_axes("cumsum"),
    "reshape": _reshape, "transpose": _transpose, "broadcast_to": _broadcast, "concatenate": _concatenate,
    "gather": _indexed, "index_update": _indexed, "matmul": _matmul, "solve": _matmul_like,
    "inv": _square_matrix, "det": _square_matrix, "logabsdet": _square_matrix, "det_sign": _square_matrix,
    "cholesky": _square_matrix, "einsum": _einsum,
})


def eval_batched(graph: Graph, args: list[Any], batched_inputs: list[bool], n: int) -> tuple[list[Any], list[bool]]:
    """Evaluate `graph` where args[i] carries a leading batch axis of size n when batched_inputs[i].

    Runs on arrays or tracers like `eval_graph`; returns the outputs and which are batched.
    """
    from engine.array import Array

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
        rule = RULES.get(eqn.prim.name)
        if rule is None or eqn.prim.multiple_results:
            raise NotBatchable(f"`{eqn.prim.name}` has no batching rule")
        env[eqn.outputs[0]] = rule(eqn.prim, list(vals), list(flags), eqn.attrs, n)
        is_batched[eqn.outputs[0]] = True
    outs = [read(a) for a in graph.outvars]
    return [o for o, _ in outs], [b for _, b in outs]
