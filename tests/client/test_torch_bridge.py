"""client.torch.remote: Nabla functions inside PyTorch programs, with PyTorch itself as the judge.

`torch.autograd.gradcheck` and `gradgradcheck` (float64; forward mode too) pass on the tutorial's
loss (an expression and a Python function), the built-in Rosenbrock model and an MLP registered
from a Python function; gradients and double-backward Hessian-vector products equal those of the
same functions written in torch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from closed_forms import INPUTS, TARGETS, TUTORIAL_EXPR, tutorial_engine

import engine.numpy as enp
from client import Client
from client.torch import remote


def tutorial_torch(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    preds = 0.5 * (torch.tanh((inputs @ W + b) / 2) + 1)
    label_probs = preds * targets + (1 - preds) * (1 - targets)
    return -torch.sum(torch.log(label_probs))


def rosenbrock_torch(x: Any) -> Any:
    return torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def mlp_torch(W1: Any, b1: Any, W2: Any, b2: Any) -> Any:
    hidden = torch.tanh(torch.as_tensor(INPUTS) @ W1 + b1)
    return torch.mean((hidden @ W2 + b2 - torch.as_tensor(TARGETS)) ** 2)


def mlp_engine(W1: Any, b1: Any, W2: Any, b2: Any, inputs: Any, targets: Any) -> Any:
    hidden = enp.tanh(enp.dot(inputs, W1) + b1)
    return enp.mean((enp.dot(hidden, W2) + b2 - targets) ** 2)


RNG = np.random.default_rng(11)
MLP_ARGS = (RNG.normal(size=(3, 5)) * 0.5, RNG.normal(size=5) * 0.1, RNG.normal(size=5) * 0.5, np.array(0.05))


@pytest.fixture(scope="module")
def mlp_model(server_url: str) -> Iterator[str]:
    name = f"torch_mlp_{uuid.uuid4().hex[:8]}"
    with Client(server_url, timeout=30, max_retries=0) as c:
        c.models.register(name, mlp_engine, constants={"inputs": INPUTS, "targets": TARGETS},
                          example_args=[*MLP_ARGS, INPUTS, TARGETS])
        yield name
        c.models.delete(name)


def tensor(a: Any, grad: bool = True) -> torch.Tensor:
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


CASE_NAMES = ["tutorial expression", "tutorial python function", "rosenbrock model", "registered mlp model"]


@pytest.fixture(params=CASE_NAMES)
def case(request: pytest.FixtureRequest, client: Client, mlp_model: str) -> tuple[Callable, Callable, tuple]:
    """(remote function, the same in torch, float64 arguments; those needing no gradient frozen)."""
    data = (tensor(INPUTS, grad=False), tensor(TARGETS, grad=False))
    tutorial_args = (tensor([0.3, -0.7, 0.2]), tensor(0.1), *data)
    return {
        "tutorial expression": (remote(client, TUTORIAL_EXPR, params=["W", "b", "inputs", "targets"]),
                                tutorial_torch, tutorial_args),
        "tutorial python function": (remote(client, tutorial_engine), tutorial_torch, tutorial_args),
        "rosenbrock model": (remote(client, client.model("rosenbrock")), rosenbrock_torch,
                             (tensor([0.5, 1.5, -1.0, 0.25]),)),
        "registered mlp model": (remote(client, client.model(mlp_model)), mlp_torch,
                                 tuple(tensor(a) for a in MLP_ARGS)),
    }[request.param]


def test_gradcheck_and_gradgradcheck_pass_in_float64(case) -> None:
    f, _, args = case
    assert torch.autograd.gradcheck(f, args, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, args)


def test_gradients_and_double_backward_match_torch(case) -> None:
    f, reference, args = case
    wrt = [a for a in args if a.requires_grad]
    value, expected_value = f(*args), reference(*args)
    torch.testing.assert_close(value, expected_value, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(value, wrt, create_graph=True)
    expected = torch.autograd.grad(expected_value, wrt, create_graph=True)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    # Differentiating the gradient again (create_graph=True): a Hessian-vector product.
    directions = [torch.linspace(-1.0, 1.0, g.numel(), dtype=torch.float64).reshape(g.shape) for g in grads]
    hvp = torch.autograd.grad(sum((g * d).sum() for g, d in zip(grads, directions)), wrt)
    expected_hvp = torch.autograd.grad(sum((e * d).sum() for e, d in zip(expected, directions)), wrt)
    for h, e in zip(hvp, expected_hvp):
        torch.testing.assert_close(h, e, rtol=1e-10, atol=1e-12)


def test_backward_accumulates_into_leaves(client: Client) -> None:
    f = remote(client, "sum(x ** 3) * y", params=["x", "y"])
    x, y = tensor([1.0, 2.0]), tensor(0.5)
    f(x, y).backward()
    torch.testing.assert_close(x.grad, 3 * x.detach() ** 2 * 0.5)
    torch.testing.assert_close(y.grad, torch.tensor(9.0, dtype=torch.float64))


def test_structured_outputs_and_float32(client: Client) -> None:
    """A Python function returning a tuple gives a tuple; float32 stays float32."""
    def stats(x: Any) -> Any:
        return enp.sum(x), enp.max(x) * enp.min(x)

    f = remote(client, stats)
    x = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float32, requires_grad=True)
    total, product = f(x)
    assert total.dtype == torch.float32 and product.dtype == torch.float32
    (g,) = torch.autograd.grad(total + product, x)
    torch.testing.assert_close(g, torch.tensor([1.0, 1.0 + 4.0, 1.0 - 2.0]))
