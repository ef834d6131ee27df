"""Nabla functions as JAX functions: `jax.grad`, `jit`, `vmap`, `jacfwd`, `jacrev`, `hessian` and
any composition of them work across the call, to any order.

    from client import Client
    from client.jax import remote

    f = remote(Client(), "sum(tanh(x) ** 2)", params=["x"])
    jax.jit(jax.grad(f))(x)        # the value and every derivative are computed by the server

One primitive, `nabla_call`, carries a call site (client._remote.Site) as its parameter:
- abstract evaluation: output shapes asked once of POST /v1/shapes (per input signature) and
  derived locally for derivatives, so it works under `jit` without running anything;
- evaluation: POST /v1/value (a host callback under `jit`);
- JVP: the call of `{"jvp": spec}` on (primals, tangents), linear in the tangents;
- transpose (of that linear call): the call of `{"vjp": spec}` on (primals, cotangents);
- batching: one request with `in_axes`, never a loop.

Needs the `jax` extra: pip install 'nabla[jax]'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from client._remote import RemoteFunction, Site, rebuild, structure_of

nabla_call_p = Primitive("nabla_call")
nabla_call_p.multiple_results = True


def remote(client: Any, function: Any, *, params: Sequence[str] | None = None) -> Callable[..., Any]:
    """`function` on the server, as a JAX function of JAX arrays (or pytrees of tuples, lists and
    dicts of them). `function` is anything the client can send: an expression (with `params`), a
    graph document, `client.model(name)`, or a Python function written against engine.numpy
    (traced into a graph on this machine, which needs the engine, part of the nabla package)."""
    resolved = RemoteFunction(client, function, params)

    def call(*args: Any) -> Any:
        layouts, leaves = [], []
        for a in args:
            layout, arg_leaves = structure_of(a, _as_jax)
            layouts.append(layout)
            leaves += arg_leaves
        bound = resolved.bind(layouts)
        outs = nabla_call_p.bind(*leaves, site=Site(bound.remote))
        return rebuild(bound.output, iter(outs))

    call.__name__ = f"remote({bound_name(resolved)})"
    return call


def bound_name(resolved: RemoteFunction) -> str:
    ref = resolved.ref
    return getattr(getattr(ref, "fn", None), "__name__", None) or type(ref).__name__


def _as_jax(x: Any) -> Any:
    return x if isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) else jnp.asarray(x)


# ----------------------------------------------------------------------------- evaluation


def _avals(site: Site) -> list[Any]:
    return [jax.core.ShapedArray(leaf.shape, np.dtype(leaf.dtype)) for leaf in site.out_leaves()]


def _abstract_eval(*avals: Any, site: Site) -> list[Any]:
    return _avals(site)


def _impl(*args: Any, site: Site) -> list[Any]:
    return [jnp.asarray(o) for o in site.run([np.asarray(a) for a in args])]


def _host_callback(*args: Any, site: Site) -> list[Any]:
    shapes = [jax.ShapeDtypeStruct(leaf.shape, np.dtype(leaf.dtype)) for leaf in site.out_leaves()]
    return jax.pure_callback(lambda *xs: site.run(xs), shapes, *args)


nabla_call_p.def_impl(_impl)
nabla_call_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(nabla_call_p, mlir.lower_fun(_host_callback, multiple_results=True))


# ----------------------------------------------------------------------------- derivatives


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.inexact)


def _jvp(primals: Sequence[Any], tangents: Sequence[Any], *, site: Site) -> tuple[list[Any], list[Any]]:
    outs = nabla_call_p.bind(*primals, site=site)
    # The server takes a tangent for every argument: symbolic zeros, and the (float0) tangents of
    # integer arguments, are sent as zeros of the argument's dtype.
    dense = [jnp.zeros(jnp.shape(p), p.dtype) if type(t) is ad.Zero or not _is_float(p) else t
             for p, t in zip(primals, tangents)]
    return outs, nabla_call_p.bind(*primals, *dense, site=site.jvp())


def _transpose(cotangents: Sequence[Any], *args: Any, site: Site) -> list[Any]:
    """Only a `{"jvp": f}` call is linear (in its tangents): its transpose is `{"vjp": f}` on the
    same primals and the output cotangents."""
    if site.remote.kind != "jvp" or site.remote.base is None:
        raise NotImplementedError(f"nabla_call of {site.remote.name} is not linear in its inputs and cannot be "
                                  "transposed")
    n = len(args) // 2
    primals, tangents = args[:n], args[n:]
    if any(ad.is_undefined_primal(p) for p in primals):
        raise NotImplementedError("a remote JVP is linear in its tangents only, not in its primal arguments")
    out_leaves = site.out_leaves()
    cts = [jnp.zeros(leaf.shape, leaf.dtype) if type(ct) is ad.Zero else ct
           for ct, leaf in zip(cotangents, out_leaves)]
    base = Site(site.remote.base, site.batch, site.batched[:len(site.batched) // 2])
    in_cts = nabla_call_p.bind(*primals, *cts, site=base.vjp())
    result: list[Any] = [None] * n
    batched = site.leaf_batched()[n:] if site.batch is not None else [False] * n
    for t, ct, is_batched in zip(tangents, in_cts, batched):
        if not ad.is_undefined_primal(t) or not jnp.issubdtype(t.aval.dtype, jnp.inexact):
            result.append(None)
        elif site.batch is not None and not is_batched:
            result.append(ct.sum(axis=0))  # an unbatched input's cotangent gathers every example's
        else:
            result.append(ct)
    return result


ad.primitive_jvps[nabla_call_p] = _jvp
ad.primitive_transposes[nabla_call_p] = _transpose


# ----------------------------------------------------------------------------- batching


def _batch(args: Sequence[Any], dims: Sequence[int | None], *, site: Site) -> tuple[list[Any], list[int]]:
    """vmap of a call: one request with in_axes. Nested vmaps fold into one batch axis (the outer
    batch times the inner one), so the server still sees a single batched call."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    inner = site.batch
    old = site.leaf_batched() if inner is not None else [False] * len(args)
    counts = site.remote.param_leaf_counts
    # A parameter is batched if any of its arrays is, at either level; its other arrays are broadcast.
    new_params, start = [], 0
    for n in counts:
        new_params.append(any(d is not None for d in dims[start:start + n]) or any(old[start:start + n]))
        start += n
    leaf_params = [b for b, n in zip(new_params, counts) for _ in range(n)]
    total = size * (inner or 1)
    moved = []
    for a, d, was_batched, is_batched in zip(args, dims, old, leaf_params):
        if not is_batched:
            moved.append(a)
            continue
        a = jnp.moveaxis(a, d, 0) if d is not None else jnp.broadcast_to(a, (size, *a.shape))
        if inner is not None:
            if not was_batched:  # (size, ...) -> (size, inner, ...)
                a = jnp.broadcast_to(a[:, None], (size, inner, *a.shape[1:]))
            a = a.reshape((total, *a.shape[2:]))
        moved.append(a)
    folded = site.with_batch(total, new_params)
    outs = nabla_call_p.bind(*moved, site=folded)
    if inner is not None:
        outs = [o.reshape((size, inner, *o.shape[1:])) for o in outs]
    return outs, [0] * len(outs)


batching.primitive_batchers[nabla_call_p] = _batch


__all__ = ["nabla_call_p", "remote"]
