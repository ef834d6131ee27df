"""Nabla functions as PyTorch functions: `backward()`, `torch.autograd.grad` (with
`create_graph=True`, so double backward), and forward-mode AD work across the call.

    from client import Client
    from client.torch import remote

    f = remote(Client(), "sum(tanh(x) ** 2)", params=["x"])
    x = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)   # g is differentiable again

A `torch.autograd.Function` whose forward is POST /v1/value of the function and whose backward is
the same Function applied to the server's `{"vjp": spec}` (so backward is itself differentiable,
to any order: each level asks the server for one more derivative), and whose forward-mode rule
applies it to `{"jvp": spec}`.

Needs the `torch` extra: pip install 'nabla[torch]'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from client._remote import RemoteFunction, Site, rebuild, structure_of


def remote(client: Any, function: Any, *, params: Sequence[str] | None = None) -> Callable[..., Any]:
    """`function` on the server, as a PyTorch function of tensors (or tuples, lists and dicts of
    them). `function` is anything the client can send: an expression (with `params`), a graph
    document, `client.model(name)`, or a Python function written against engine.numpy (traced into
    a graph on this machine, which needs the engine, part of the nabla package)."""
    resolved = RemoteFunction(client, function, params)

    def call(*args: Any) -> Any:
        layouts, leaves = [], []
        for a in args:
            layout, arg_leaves = structure_of(a, _as_tensor, _dtype_name)
            layouts.append(layout)
            leaves += arg_leaves
        bound = resolved.bind(layouts)
        outs = RemoteCall.apply(Site(bound.remote), *leaves)
        return rebuild(bound.output, iter(outs))

    return call


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _dense(tensors: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors for the server: a missing gradient or tangent (None) is zeros."""
    return [torch.zeros_like(x) if t is None else t for t, x in zip(tensors, like)]


class RemoteCall(torch.autograd.Function):
    """`site` applied to the flat tensors; one tensor per output array."""

    @staticmethod
    def forward(ctx: Any, site: Site, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.site = site
        ctx.save_for_backward(*leaves)
        ctx.save_for_forward(*leaves)
        device = leaves[0].device if leaves else torch.device("cpu")
        outs = site.run([_to_numpy(t) for t in leaves])
        results = tuple(torch.from_numpy(o).to(device) for o in outs)
        ctx.mark_non_differentiable(*[r for r in results if not r.is_floating_point()])
        return results

    @staticmethod
    def backward(ctx: Any, *cotangents: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        leaves = ctx.saved_tensors
        outs = [torch.zeros(leaf.shape, dtype=getattr(torch, leaf.dtype)) for leaf in ctx.site.out_leaves()]
        grads = RemoteCall.apply(ctx.site.vjp(), *leaves, *_dense(cotangents, outs))
        needed = ctx.needs_input_grad[1:]
        return (None, *[g if need else None for g, need in zip(grads, needed)])

    @staticmethod
    def jvp(ctx: Any, site_tangent: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        leaves = ctx.saved_tensors
        return RemoteCall.apply(ctx.site.jvp(), *leaves, *_dense(tangents, leaves))


__all__ = ["RemoteCall", "remote"]
