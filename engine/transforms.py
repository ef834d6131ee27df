"""JAX's function transformations: grad, value_and_grad, jvp, vjp, jacfwd, jacrev, hessian,
make_graph. Each traces the user's function into a graph and runs an interpreter over it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import engine.numpy as jnp
from engine import ad
from engine.array import Array
from engine.batching import NotBatchable, eval_batched
from engine.core import (
    Graph,
    ShapedArray,
    ShapeDtypeStruct,
    Tracer,
    aval_of,
    concrete_value,
    end_trace,
    eval_graph,
    new_trace,
    trace_flat,
)
from engine.errors import DifferentiationError, IntegerInputError, NonScalarOutputError
from engine.numpy._base import asarray
from engine.tree_util import (
    DictKey,
    FlattenedIndexKey,
    GetAttrKey,
    SequenceKey,
    describe_mismatch,
    keystr,
    tree_flatten,
    tree_flatten_with_path,
    tree_structure,
    tree_unflatten,
)

# ----------------------------------------------------------------------------- tracing helpers


def _as_leaf(x: Any, where: str) -> Any:
    if isinstance(x, (Array, Tracer, ShapeDtypeStruct)):
        return x
    try:
        return asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{where}: {type(x).__name__} is not a valid array value ({e})") from None


def _leaf_paths(tree: Any) -> list[str]:
    return [keystr(p) for p, _ in tree_flatten_with_path(tree)[0]]


class TracedFunction:
    """The result of tracing a Python function on flat leaves: its graph and the output layout."""

    def __init__(self, graph: Graph, out_tree: Any, known: dict | None, n_main: int,
                 aux_tree: Any = None, aux_static: list | None = None) -> None:
        self.graph = graph
        self.out_tree = out_tree
        self.known = known
        self.n_main = n_main  # outputs before the aux leaves
        self.aux_tree = aux_tree
        self.aux_static = aux_static

    def known_values(self, leaves: list[Any]) -> dict | None:
        """Values the concrete trace computed, for the interpreters to reuse; None when they may
        not: an input is traced by an enclosing transformation, or the graph captured a tracer."""
        if all(isinstance(x, Array) for x in leaves) and not any(isinstance(c, Tracer) for c in self.graph.consts):
            return self.known
        return None


def trace_function(
    fun: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], argnums: tuple[int, ...],
    *, has_aux: bool = False, concrete: bool | None = None,
) -> tuple[TracedFunction, list[Any], Any]:
    """Trace `fun(*args, **kwargs)` as a function of the leaves of args[argnums].

    Returns the traced function, the flat input leaves (Arrays or tracers), and their tree.
    A concrete trace (the default when every input leaf has a value) computes values as it goes,
    so Python control flow on them works.
    """
    dyn = tuple(args[i] for i in argnums)
    leaves, in_tree = tree_flatten(dyn)
    leaves = [_as_leaf(x, f"argument {argnums[0] if len(argnums) == 1 else argnums}") for x in leaves]
    values = [concrete_value(x) for x in leaves]
    if concrete is None:
        concrete = all(v is not None for v in values)
    trace = new_trace(concrete=concrete)
    aux_tree = aux_static = None
    try:
        tracers = [trace.new_input(aval_of(x), v if concrete else None) for x, v in zip(leaves, values)]
        new_args = list(args)
        for i, sub in zip(argnums, tree_unflatten(in_tree, tracers)):
            new_args[i] = sub
        out = fun(*new_args, **kwargs)
        if has_aux:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise DifferentiationError(
                    "with has_aux=True the function must return a pair (output, auxiliary data), "
                    f"but it returned {type(out).__name__}"
                )
            out, aux = out
        out_leaves, out_tree = tree_flatten(out)
        out_leaves = [_as_leaf(x, "function output") for x in out_leaves]
        extra: list[Any] = []
        if has_aux:
            aux_leaves, aux_tree = tree_flatten(aux)
            # Array leaves of aux flow through the graph; anything else is passed back unchanged.
            aux_static = [None if isinstance(a, (Array, Tracer)) else a for a in aux_leaves]
            extra = [a for a in aux_leaves if isinstance(a, (Array, Tracer))]
        graph = trace.to_graph(out_leaves + extra)
        known = trace.values if concrete else None
    finally:
        end_trace(trace)
    return TracedFunction(graph, out_tree, known, len(out_leaves), aux_tree, aux_static), leaves, in_tree


def _rebuild_aux(tf: TracedFunction, aux_values: list[Any]) -> Any:
    it = iter(aux_values)
    leaves = [next(it) if s is None else s for s in tf.aux_static]
    return tree_unflatten(tf.aux_tree, leaves)


def _normalize_argnums(argnums: int | Sequence[int], nargs: int, fname: str) -> tuple[int, ...]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums:
        raise ValueError(f"{fname}: argnums must name at least one argument")
    out = []
    for n in nums:
        if not isinstance(n, (int, np.integer)):
            raise TypeError(f"{fname}: argnums must be ints, got {type(n).__name__}")
        if not -nargs <= n < nargs:
            raise DifferentiationError(
                f"{fname}: argnums {n} is out of range: the function was called with {nargs} "
                f"positional argument{'s' if nargs != 1 else ''} (valid argnums are 0..{nargs - 1}). "
                "Pass the argument positionally, or change argnums."
            )
        out.append(int(n) % nargs)
    if len(set(out)) != len(out):
        # JAX fails here too (with an unrelated TypeError); one derivative per argument is meant.
        twice = next(n for n in out if out.count(n) > 1)
        raise DifferentiationError(
            f"{fname}: argnums {tuple(int(n) for n in nums)} names argument {twice} more than once. "
            "List each argument once; to use one derivative in two places, copy it from the result."
        )
    return tuple(out)


def _check_differentiable_inputs(leaves: list[Any], in_tree: Any, argnums: tuple[int, ...],
                                 fname: str, allow_int: bool, fun: Callable[..., Any] | None = None) -> list[bool]:
    wrt = []
    paths = None
    for k, x in enumerate(leaves):
        ok = x.dtype.kind in "fc"
        if not ok and not allow_int:
            if paths is None:
                paths = [p for p, _ in tree_flatten_with_path(tree_unflatten(in_tree, leaves))[0]]
            # The first key picks the argument among args[argnums]; the rest is the path inside it.
            argnum = argnums[paths[k][0].idx]
            where = f"argument {argnum}"
            if len(paths[k]) > 1:
                where += f" at leaf {keystr(paths[k][1:])}"
            raise IntegerInputError(
                f"{fname} requires floating-point inputs, but {where} "
                f"has dtype {x.dtype}. Integer and boolean values have no derivative: convert the "
                "input with .astype(jnp.float32), move it out of argnums, or pass allow_int=True "
                "to get zeros for it.",
                argnum=argnum, dtype=x.dtype, path=tuple(_raw_key(p) for p in paths[k][1:]),
                param=_param_name(fun, argnum), transform=fname,
            )
        wrt.append(ok)
    return wrt


def _raw_key(key: Any) -> Any:
    """A key path entry as the plain key it stands for: a dict key, an index or an attribute name."""
    if isinstance(key, (DictKey, FlattenedIndexKey)):
        return key.key
    if isinstance(key, SequenceKey):
        return key.idx
    if isinstance(key, GetAttrKey):
        return key.name
    return key


def _param_name(fun: Callable[..., Any] | None, argnum: int) -> str | None:
    """The name of fun's positional parameter `argnum`, if its signature has one. Only an error
    needs it (so a caller that is not Python can name the argument), so it is looked up there."""
    if fun is None:
        return None
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return None
    if argnum < len(params) and params[argnum].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                        inspect.Parameter.POSITIONAL_OR_KEYWORD):
        return params[argnum].name
    return None


# ----------------------------------------------------------------------------- grad


def value_and_grad(fun: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False,
                   allow_int: bool = False) -> Callable[..., Any]:
    """f -> (x -> (f(x), ∇f(x))); with has_aux, ((f(x), aux), ∇f(x))."""
    return _value_and_grad(fun, argnums, has_aux, allow_int, "value_and_grad")


def _value_and_grad(fun: Callable[..., Any], argnums: int | Sequence[int], has_aux: bool, allow_int: bool,
                    fname: str) -> Callable[..., Any]:
    """value_and_grad, whose argnums errors name `fname` (grad is built on it too)."""

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        nums = _normalize_argnums(argnums, len(args), fname)
        tf, leaves, in_tree = trace_function(fun, args, kwargs, nums, has_aux=has_aux)
        wrt = _check_differentiable_inputs(leaves, in_tree, nums, "grad", allow_int, fun)
        if tf.n_main != 1 or tf.out_tree.num_leaves != 1:
            raise DifferentiationError(
                f"grad requires a function with a single scalar output, but it returned "
                f"{tf.out_tree}. Return one scalar (e.g. the sum of the values), pass has_aux=True if "
                "the function returns (loss, auxiliary data), or use jacrev / jacobian for several outputs."
            )
        out_aval = _graph_out_aval(tf.graph, 0)
        if out_aval.shape != ():
            raise NonScalarOutputError(
                f"grad requires a scalar-output function, but the output has shape {out_aval.shape} "
                f"(dtype {out_aval.dtype}). Reduce it to a scalar (e.g. `.sum()`, or index one "
                "element), or use jacrev/jacobian for a non-scalar output.",
                shape=tuple(out_aval.shape), dtype=out_aval.dtype,
            )
        if out_aval.dtype.kind not in "fc":
            raise DifferentiationError(
                f"grad requires a floating-point output, but the output has dtype {out_aval.dtype}"
            )
        _refuse_complex("grad", "output", [out_aval.dtype])
        outs, backward = ad.vjp_graph(tf.graph, leaves, wrt, tf.known_values(leaves))
        value = outs[0]
        cts = backward([jnp.ones((), value.dtype)] + [None] * (len(outs) - 1))
        grads = [c if c is not None else ad.zeros_for(x) for c, x in zip(cts, leaves)]
        grad_tree = tree_unflatten(in_tree, grads)
        grad_out = grad_tree[0] if isinstance(argnums, int) else tuple(grad_tree)
        if has_aux:
            aux = _rebuild_aux(tf, outs[1:])
            return (value, aux), grad_out
        return value, grad_out

    return wrapped


def _refuse_complex(fname: str, what: str, dtypes_seen: list[Any]) -> None:
    """As JAX: grad and jacrev need real outputs, jacfwd real inputs (their derivative of a
    complex value would silently drop its imaginary direction)."""
    for dtype in dtypes_seen:
        if np.dtype(dtype).kind == "c":
            raise DifferentiationError(
                f"{fname} requires real-valued {what}s, but an {what} has dtype {np.dtype(dtype)}. Differentiate "
                "a real function of it instead (jnp.real, jnp.imag or jnp.abs of the complex value), or use vjp "
                "or jvp directly, which follow JAX's convention for complex values."
            )


def _graph_out_aval(graph: Graph, i: int) -> ShapedArray:
    return graph.outvars[i].aval


def grad(fun: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False,
         allow_int: bool = False) -> Callable[..., Any]:
    """f -> ∇f: the gradient of a scalar-valued function with respect to args[argnums]."""
    vg = _value_and_grad(fun, argnums, has_aux, allow_int, "grad")

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if has_aux:
            (_, aux), g = vg(*args, **kwargs)
            return g, aux
        return vg(*args, **kwargs)[1]

    return wrapped


# ----------------------------------------------------------------------------- jvp / vjp


def jvp(fun: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any],
        has_aux: bool = False) -> Any:
    """(f, primals, tangents) -> (f(*primals), J f(primals) · tangents)."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise TypeError("jvp: primals and tangents must be tuples or lists of the function's arguments, "
                        f"got {type(primals).__name__} and {type(tangents).__name__}")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents were given; pass "
                         "one tangent per argument")
    p_tree = tree_structure(tuple(primals))
    t_leaves, t_tree = tree_flatten(tuple(tangents))
    if p_tree != t_tree:
        raise ValueError(f"jvp: primals and tangents must have the same tree structure; "
                         f"{describe_mismatch(p_tree, t_tree)}")
    nums = tuple(range(len(primals)))
    tf, leaves, _ = trace_function(fun, tuple(primals), {}, nums, has_aux=has_aux)
    tans = []
    for k, (x, t) in enumerate(zip(leaves, t_leaves)):
        t = asarray(t) if not isinstance(t, (Array, Tracer)) else t
        if tuple(t.shape) != tuple(x.shape):
            raise ValueError(f"jvp: tangent {k} has shape {tuple(t.shape)} but its primal has shape "
                             f"{tuple(x.shape)}; each tangent must match its primal's shape")
        if x.dtype.kind in "fc" and t.dtype != x.dtype:
            raise TypeError(f"jvp: tangent {k} has dtype {t.dtype} but its primal has dtype {x.dtype}; "
                            "tangents must match their primals' dtype")
        tans.append(t if x.dtype.kind in "fc" else None)
    outs, out_t = ad.jvp_graph(tf.graph, leaves, tans)
    n = tf.n_main
    out_t = [t if t is not None else ad.zeros_for(o) for t, o in zip(out_t[:n], outs[:n])]
    primal_out = tree_unflatten(tf.out_tree, outs[:n])
    tangent_out = tree_unflatten(tf.out_tree, out_t)
    if has_aux:
        return primal_out, tangent_out, _rebuild_aux(tf, outs[n:])
    return primal_out, tangent_out


def vjp(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> Any:
    """(f, *primals) -> (f(*primals), vjp_fun) where vjp_fun(ct) = ct · J f(primals)."""
    nums = tuple(range(len(primals)))
    tf, leaves, in_tree = trace_function(fun, primals, {}, nums, has_aux=has_aux)
    wrt = [x.dtype.kind in "fc" for x in leaves]
    outs, backward = ad.vjp_graph(tf.graph, leaves, wrt, tf.known_values(leaves))
    n = tf.n_main
    primal_out = tree_unflatten(tf.out_tree, outs[:n])

    def vjp_fun(cotangent: Any) -> tuple[Any, ...]:
        ct_leaves, ct_tree = tree_flatten(cotangent)
        if ct_tree != tf.out_tree:
                raise ValueError("vjp: the cotangent must have the structure of the function's output; "
                             f"{describe_mismatch(tf.out_tree, ct_tree)}")
        cts = []
        for k, (c, o) in enumerate(zip(ct_leaves, outs[:n])):
            c = asarray(c) if not isinstance(c, (Array, Tracer)) else c
            if tuple(c.shape) != tuple(o.shape):
                raise ValueError(f"vjp: cotangent leaf {k} has shape {tuple(c.shape)} but the output "
                                 f"has shape {tuple(o.shape)}")
            if o.dtype.kind in "fc" and c.dtype != o.dtype:
                c = asarray(c, o.dtype)
            cts.append(c if o.dtype.kind in "fc" else None)
        grads = backward(cts + [None] * (len(outs) - n))
        grads = [g if g is not None else ad.zeros_for(x) for g, x in zip(grads, leaves)]
        return tuple(tree_unflatten(in_tree, grads))

    if has_aux:
        return primal_out, vjp_fun, _rebuild_aux(tf, outs[n:])
    return primal_out, vjp_fun


# ----------------------------------------------------------------------------- jacobians


def _stack_rows(rows: list[Any], shape: tuple[int, ...], dtype: Any) -> Any:
    if not rows:
        return jnp.zeros(shape, dtype)
    return jnp.reshape(jnp.stack(rows), shape)


# Past this many elements in the basis, jacobians loop over basis vectors instead of batching.
MAX_BATCHED_BASIS = 4_000_000


def _identity_blocks(avals: list[ShapedArray], dtype_of: Callable[[ShapedArray], Any]) -> tuple[int, list[Any]]:
    """The identity basis over all elements of several arrays, one block of rows per array."""
    total = sum(av.size for av in avals)
    blocks, offset = [], 0
    for av in avals:
        block = np.zeros((total, av.size), dtype=dtype_of(av))
        block[offset:offset + av.size] = np.eye(av.size, dtype=block.dtype)
        offset += av.size
        blocks.append(Array(block.reshape((total,) + tuple(av.shape))))
    return total, blocks


def _batched_jacobian(tf: TracedFunction, leaves: list[Any], wrt: list[bool], mode: str) -> list[list[Any]] | None:
    """jac[j][i] of shape out_j.shape + in_i.shape, all basis vectors in one batched pass.

    None when batching does not apply (a case a batching rule cannot do in one pass, or a basis
    too large).
    """
    graph = tf.graph
    n_main = tf.n_main
    in_avals = [aval_of(x) for x in leaves]
    out_avals = [graph.outvars[j].aval for j in range(n_main)]
    float_out = [av.dtype.kind in "fc" for av in out_avals]
    if mode == "rev":
        basis_avals = [av for av, f in zip(out_avals, float_out) if f]
    else:
        basis_avals = [av for av, w in zip(in_avals, wrt) if w]
    if not basis_avals:
        return None
    size = sum(av.size for av in basis_avals)
    widest = max([av.size for av in in_avals + out_avals] + [1])
    if size <= 1 or size * widest > MAX_BATCHED_BASIS:
        return None  # one pass needs no batch axis; a huge basis is done pass by pass

    if mode == "rev":
        def pass_fn(*xs_and_seeds: Any) -> list[Any]:
            xs = list(xs_and_seeds[:len(leaves)])
            seeds = iter(xs_and_seeds[len(leaves):])
            _, backward = ad.vjp_graph(graph, xs, wrt)
            cts = [next(seeds) if f else None for f in float_out] + [None] * (len(graph.outvars) - n_main)
            grads = backward(cts)
            return [g if g is not None else jnp.zeros(x.shape, x.dtype) for g, x in zip(grads, xs)]
    else:
        def pass_fn(*xs_and_seeds: Any) -> list[Any]:
            xs = list(xs_and_seeds[:len(leaves)])
            seeds = iter(xs_and_seeds[len(leaves):])
            tangents = [next(seeds) if w else None for w in wrt]
            outs, out_t = ad.jvp_graph(graph, xs, tangents)
            return [t if t is not None else jnp.zeros(o.shape, o.dtype if o.dtype.kind in "fc" else jnp.float32)
                    for t, o in zip(out_t[:n_main], outs[:n_main])]

    pass_graph, _ = trace_flat(pass_fn, in_avals + basis_avals)
    total, seeds = _identity_blocks(basis_avals, lambda av: av.dtype)
    try:
        results, batched = eval_batched(pass_graph, list(leaves) + seeds,
                                        [False] * len(leaves) + [True] * len(seeds), total)
    except NotBatchable:
        return None
    results = [r if b else jnp.broadcast_to(jnp.reshape(r, (1,) + tuple(r.shape)), (total,) + tuple(r.shape))
               for r, b in zip(results, batched)]
    jac: list[list[Any]] = [[None] * len(leaves) for _ in range(n_main)]
    if mode == "rev":
        # results[i]: (total over outputs, *in_i.shape)
        offsets = np.cumsum([0] + [av.size for av in basis_avals])
        k = 0
        for j, (av, f) in enumerate(zip(out_avals, float_out)):
            for i, x in enumerate(leaves):
                if not f:
                    jac[j][i] = jnp.zeros(tuple(av.shape) + tuple(x.shape), x.dtype)
                    continue
                rows = results[i][int(offsets[k]):int(offsets[k + 1])]
                jac[j][i] = jnp.reshape(rows, tuple(av.shape) + tuple(x.shape))
            k += int(f)
    else:
        # results[j]: (total over inputs, *out_j.shape); move the basis axis last.
        offsets = np.cumsum([0] + [av.size for av in basis_avals])
        for j, av in enumerate(out_avals):
            moved = jnp.moveaxis(results[j], 0, -1)  # out_j.shape + (total,)
            k = 0
            for i, x in enumerate(leaves):
                if not wrt[i]:
                    jac[j][i] = jnp.zeros(tuple(av.shape) + tuple(x.shape), x.dtype)
                    continue
                cols = moved[..., int(offsets[k]):int(offsets[k + 1])]
                jac[j][i] = jnp.reshape(cols, tuple(av.shape) + tuple(x.shape))
                k += 1
    return jac


def jacrev(fun: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False,
           allow_int: bool = False) -> Callable[..., Any]:
    """The Jacobian by reverse mode, one backward pass per output element.

    Result structure (as JAX): the output's tree, each leaf replaced by the argument tree, each of
    whose leaves has shape output_leaf.shape + input_leaf.shape.
    """

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        tf, leaves, in_tree, wrt, batched = _trace_for_jacobian(fun, args, kwargs, argnums, has_aux, allow_int,
                                                                "jacrev", fun)
        if batched is not None:
            return _jacobian_result(tf, leaves, in_tree, argnums, batched, has_aux)
        n = tf.n_main
        outs, backward = ad.vjp_graph(tf.graph, leaves, wrt, tf.known_values(leaves))
        per_output = []
        for j, out in enumerate(outs[:n]):
            rows: list[list[Any]] = [[] for _ in leaves]
            for k in range(out.size):
                basis = np.zeros(out.size, dtype=out.dtype)
                basis[k] = 1
                cts = [None] * len(outs)
                cts[j] = asarray(basis.reshape(out.shape), out.dtype)
                grads = backward(cts)
                for i, (g, x) in enumerate(zip(grads, leaves)):
                    rows[i].append(jnp.ravel(g) if g is not None else jnp.zeros((x.size,), x.dtype))
            jac_leaves = [
                _stack_rows(r, tuple(out.shape) + tuple(x.shape), x.dtype) for r, x in zip(rows, leaves)
            ]
            tree = tree_unflatten(in_tree, jac_leaves)
            per_output.append(tree[0] if isinstance(argnums, int) else tuple(tree))
        result = tree_unflatten(tf.out_tree, per_output)
        if has_aux:
            return result, _rebuild_aux(tf, outs[n:])
        return result

    return wrapped


def jacfwd(fun: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable[..., Any]:
    """The Jacobian by forward mode, one tangent per input element (same structure as jacrev)."""

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        tf, leaves, in_tree, wrt, batched = _trace_for_jacobian(fun, args, kwargs, argnums, has_aux, False,
                                                                "jacfwd", None)
        if batched is not None:
            return _jacobian_result(tf, leaves, in_tree, argnums, batched, has_aux)
        n = tf.n_main
        columns: list[list[list[Any]]] = [[[] for _ in leaves] for _ in range(n)]
        outs = None
        for i, x in enumerate(leaves):
            for k in range(x.size):
                basis = np.zeros(x.size, dtype=x.dtype)
                basis[k] = 1
                tans = [None] * len(leaves)
                tans[i] = asarray(basis.reshape(x.shape), x.dtype)
                outs, out_t = ad.jvp_graph(tf.graph, leaves, tans)
                for j in range(n):
                    t = out_t[j]
                    columns[j][i].append(jnp.ravel(t) if t is not None else jnp.zeros((outs[j].size,), x.dtype))
        if outs is None:
            outs = ad.jvp_graph(tf.graph, leaves, [None] * len(leaves))[0]
        per_output = []
        for j, out in enumerate(outs[:n]):
            jac_leaves = []
            for i, x in enumerate(leaves):
                cols = columns[j][i]
                if cols:
                    mat = jnp.stack(cols, axis=-1)
                    jac_leaves.append(jnp.reshape(mat, tuple(out.shape) + tuple(x.shape)))
                else:
                    jac_leaves.append(jnp.zeros(tuple(out.shape) + tuple(x.shape), x.dtype))
            tree = tree_unflatten(in_tree, jac_leaves)
            per_output.append(tree[0] if isinstance(argnums, int) else tuple(tree))
        result = tree_unflatten(tf.out_tree, per_output)
        if has_aux:
            return result, _rebuild_aux(tf, outs[n:])
        return result

    return wrapped


jacobian = jacrev


def _trace_for_jacobian(fun: Callable[..., Any], args: tuple, kwargs: dict[str, Any], argnums: int | Sequence[int],
                        has_aux: bool, allow_int: bool, fname: str,
                        named: Callable[..., Any] | None) -> tuple[TracedFunction, list[Any], Any, list[bool], Any]:
    """What jacrev and jacfwd start with: the traced function, its input leaves and their tree, which
    leaves are differentiated, and the jacobian of one batched pass (None when that does not apply).
    Integer inputs are reported with the parameter names of `named`, if given."""
    nums = _normalize_argnums(argnums, len(args), fname)
    tf, leaves, in_tree = trace_function(fun, args, kwargs, nums, has_aux=has_aux)
    wrt = _check_differentiable_inputs(leaves, in_tree, nums, fname, allow_int, named)
    if fname == "jacrev":
        _refuse_complex(fname, "output", [tf.graph.outvars[j].aval.dtype for j in range(tf.n_main)])
    else:
        _refuse_complex(fname, "input", [x.dtype for x, w in zip(leaves, wrt) if w])
    return tf, leaves, in_tree, wrt, _batched_jacobian(tf, leaves, wrt, "rev" if fname == "jacrev" else "fwd")


def _jacobian_result(tf: TracedFunction, leaves: list[Any], in_tree: Any, argnums: Any,
                     jac: list[list[Any]], has_aux: bool) -> Any:
    per_output = []
    for row in jac:
        tree = tree_unflatten(in_tree, row)
        per_output.append(tree[0] if isinstance(argnums, int) else tuple(tree))
    result = tree_unflatten(tf.out_tree, per_output)
    if has_aux:
        aux_values = eval_graph(tf.graph, list(leaves))[tf.n_main:]
        return result, _rebuild_aux(tf, aux_values)
    return result


def hessian(fun: Callable[..., Any], argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable[..., Any]:
    """Second derivatives: forward mode over reverse mode."""
    inner = jacfwd(jacrev(fun, argnums, has_aux=has_aux), argnums, has_aux=has_aux)

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _normalize_argnums(argnums, len(args), "hessian")  # errors name hessian, not jacfwd
        return inner(*args, **kwargs)

    return wrapped


# ----------------------------------------------------------------------------- graphs


def make_graph(fun: Callable[..., Any], static_argnums: int | Sequence[int] = ()) -> Callable[..., Graph]:
    """f -> (*args -> Graph): trace f abstractly (shapes and dtypes only) into the IR."""
    statics = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Graph:
        nums = tuple(i for i in range(len(args)) if i not in statics)
        tf, leaves, in_tree = trace_function(fun, args, kwargs, nums, concrete=False)
        graph = tf.graph
        graph.in_tree = in_tree
        graph.out_tree = tf.out_tree
        return graph

    return wrapped
