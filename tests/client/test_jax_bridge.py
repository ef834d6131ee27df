"""client.jax.remote: Nabla functions inside JAX programs, with JAX itself as the judge.

Three functions, each sent the ways a user can send it (an expression, a Python function traced by
the engine, a built-in model, a model registered from a Python function), against the same
function written in jax.numpy: values and derivatives agree, `jax.test_util.check_grads` passes to
order 2 in both modes, and `jit`, `vmap`, `jacfwd`, `jacrev` and `hessian` compose with the call
(every derivative computed by the server). vmap is one batched request, whatever the batch size.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from closed_forms import INPUTS, TARGETS, TUTORIAL_EXPR, tutorial_engine
from jax.test_util import check_grads

import engine.numpy as enp
from client import AsyncClient, BadRequestError, Client
from client.jax import remote


@pytest.fixture(scope="module", autouse=True)
def float64() -> Iterator[None]:
    """Derivatives checked against finite differences need doubles (JAX defaults to float32)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


class CountingTransport(httpx.BaseTransport):
    """Loopback HTTP that records the path of every request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)

    def computations(self) -> int:
        return self.paths.count("/v1/value")


@pytest.fixture
def counted(server_url: str) -> Iterator[tuple[Client, CountingTransport]]:
    transport = CountingTransport()
    with Client(server_url, timeout=30, max_retries=0, transport=transport) as c:
        yield c, transport


# ----------------------------------------------------------------------------- the functions, twice


def tutorial_jnp(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    preds = 0.5 * (jnp.tanh((inputs @ W + b) / 2) + 1)
    label_probs = preds * targets + (1 - preds) * (1 - targets)
    return -jnp.sum(jnp.log(label_probs))


def rosenbrock_jnp(x: Any) -> Any:
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def mlp_jnp(W1: Any, b1: Any, W2: Any, b2: Any, inputs: Any = INPUTS, targets: Any = TARGETS) -> Any:
    hidden = jnp.tanh(inputs @ W1 + b1)
    return jnp.mean((hidden @ W2 + b2 - targets) ** 2)


def mlp_engine(W1: Any, b1: Any, W2: Any, b2: Any, inputs: Any, targets: Any) -> Any:
    hidden = enp.tanh(enp.dot(inputs, W1) + b1)
    return enp.mean((enp.dot(hidden, W2) + b2 - targets) ** 2)


RNG = np.random.default_rng(7)
W = np.array([0.3, -0.7, 0.2])
B = np.array(0.1)
X_ROSEN = np.array([0.5, 1.5, -1.0, 0.25])
MLP_ARGS = (RNG.normal(size=(3, 5)) * 0.5, RNG.normal(size=5) * 0.1, RNG.normal(size=5) * 0.5, np.array(0.05))


@pytest.fixture(scope="module")
def mlp_model(server_url: str) -> Iterator[str]:
    """An MLP registered for this module from a Python function (its data bound as constants)."""
    name = f"bridge_mlp_{uuid.uuid4().hex[:8]}"
    with Client(server_url, timeout=30, max_retries=0) as c:
        c.models.register(name, mlp_engine, constants={"inputs": INPUTS, "targets": TARGETS},
                          example_args=[*MLP_ARGS, INPUTS, TARGETS])
        yield name
        c.models.delete(name)


Case = tuple[Callable[[Client], Callable[..., Any]], Callable[..., Any], tuple[Any, ...]]


def cases(mlp_name: str) -> dict[str, Case]:
    """name -> (the remote function from a client, the jax.numpy function, arguments)."""
    tutorial_args = (W, B, INPUTS, TARGETS)
    return {
        "tutorial expression": (lambda c: remote(c, TUTORIAL_EXPR, params=["W", "b", "inputs", "targets"]),
                                tutorial_jnp, tutorial_args),
        "tutorial python function": (lambda c: remote(c, tutorial_engine), tutorial_jnp, tutorial_args),
        "rosenbrock model": (lambda c: remote(c, c.model("rosenbrock")), rosenbrock_jnp, (X_ROSEN,)),
        "registered mlp model": (lambda c: remote(c, c.model(mlp_name)), mlp_jnp, MLP_ARGS),
    }


CASE_NAMES = ["tutorial expression", "tutorial python function", "rosenbrock model", "registered mlp model"]


@pytest.fixture(params=CASE_NAMES)
def case(request: pytest.FixtureRequest, client: Client, mlp_model: str) -> tuple[Callable[..., Any], Any, tuple]:
    make, reference, args = cases(mlp_model)[request.param]
    return make(client), reference, tuple(jnp.asarray(a) for a in args)


def assert_close(actual: Any, expected: Any) -> None:
    leaves_a, tree_a = jax.tree_util.tree_flatten(actual)
    leaves_e, tree_e = jax.tree_util.tree_flatten(expected)
    assert tree_a == tree_e
    for a, e in zip(leaves_a, leaves_e):
        assert a.shape == e.shape and a.dtype == e.dtype, (a, e)
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- JAX as the judge


def test_values_and_derivatives_match_jax_numpy(case) -> None:
    f, reference, args = case
    argnums = tuple(range(2 if reference is tutorial_jnp else len(args)))  # the tutorial's data stay fixed
    assert_close(f(*args), reference(*args))
    assert_close(jax.grad(f, argnums)(*args), jax.grad(reference, argnums)(*args))
    assert_close(jax.value_and_grad(f)(*args), jax.value_and_grad(reference)(*args))
    assert_close(jax.hessian(f)(*args), jax.hessian(reference)(*args))
    assert_close(jax.jacfwd(jax.grad(f))(*args), jax.jacrev(jax.grad(reference))(*args))


def test_check_grads_passes_to_second_order_in_both_modes(case) -> None:
    f, reference, args = case
    if reference is tutorial_jnp:  # differentiate W and b; the data are closed over
        def f_wb(W: Any, b: Any) -> Any:
            return f(W, b, *args[2:])
        check_grads(f_wb, args[:2], order=2, modes=["fwd", "rev"])
    else:
        check_grads(f, args, order=2, modes=["fwd", "rev"])


def test_jit_of_grad_compiles_once_and_matches(counted) -> None:
    c, transport = counted
    f = remote(c, c.model("rosenbrock"))
    g = jax.jit(jax.grad(f))
    for x in (X_ROSEN, X_ROSEN + 0.5):
        assert_close(g(jnp.asarray(x)), jax.grad(rosenbrock_jnp)(jnp.asarray(x)))
    # Under jit the output shape comes from /v1/shapes, asked once for the input signature; each
    # call is then one request, the VJP (jit drops the value, which grad does not return).
    assert transport.paths.count("/v1/shapes") == 1
    assert transport.computations() == 2


def test_vmap_of_grad_sends_one_batched_request_per_remote_call(counted) -> None:
    c, transport = counted
    f = remote(c, TUTORIAL_EXPR, params=["W", "b", "inputs", "targets"])
    Ws = jnp.asarray(RNG.normal(size=(64, 3)))
    per_example = jax.vmap(jax.grad(f), in_axes=(0, None, None, None))(Ws, B, INPUTS, TARGETS)
    expected = jnp.stack([jax.grad(tutorial_jnp)(w, B, INPUTS, TARGETS) for w in Ws])
    assert_close(per_example, expected)
    # grad is two remote calls (the value, then the VJP): two requests for 64 examples.
    assert transport.computations() == 2


def test_vmap_composes_with_jit_and_nests(counted) -> None:
    c, transport = counted
    f = remote(c, "sum(x * y) + sum(x) ** 2", params=["x", "y"])

    def f_jnp(x: Any, y: Any) -> Any:
        return jnp.sum(x * y) + jnp.sum(x) ** 2

    xs, ys = jnp.asarray(RNG.normal(size=(4, 3))), jnp.asarray(RNG.normal(size=(5, 3)))
    table = jax.jit(jax.vmap(jax.vmap(f, (0, None)), (None, 0)))(xs, ys)
    assert_close(table, jax.vmap(jax.vmap(f_jnp, (0, None)), (None, 0))(xs, ys))
    assert transport.computations() == 1  # both levels folded into one batch of 20
    assert_close(jax.vmap(jax.hessian(f))(xs, ys[:4]), jax.vmap(jax.hessian(f_jnp))(xs, ys[:4]))

    # grad of a vmap transposes a batched JVP: y is shared, so its cotangent sums every example's
    def total(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda xs, y: jnp.sum(jax.vmap(fn, (0, None))(xs, y) ** 2)

    assert_close(jax.grad(total(f), (0, 1))(xs, ys[0]), jax.grad(total(f_jnp), (0, 1))(xs, ys[0]))


def test_pytrees_in_and_out(client: Client) -> None:
    """A model taking a dict of layers and integer labels (which have no derivative), and a Python
    function returning a dict: JAX sees the same structures as from local functions."""
    f = remote(client, client.model("mlp_classifier"))
    params = {"W1": jnp.asarray(RNG.normal(size=(3, 4))), "b1": jnp.zeros(4),
              "W2": jnp.asarray(RNG.normal(size=(4, 2))), "b2": jnp.zeros(2)}
    labels = jnp.array([0, 1, 1, 0], dtype=jnp.int32)

    def classifier_jnp(p: Any, inputs: Any, labels: Any) -> Any:
        logits = jnp.tanh(inputs @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    inputs = jnp.asarray(INPUTS)
    assert_close(jax.grad(f)(params, inputs, labels), jax.grad(classifier_jnp)(params, inputs, labels))

    def moments(x: Any) -> Any:
        return {"mean": enp.mean(x), "spread": (enp.max(x) - enp.min(x), enp.sum(x ** 2))}

    g = remote(client, moments)
    x = jnp.asarray([1.0, -2.0, 4.0])
    jac = jax.jacrev(g)(x)
    assert set(jac) == {"mean", "spread"} and isinstance(jac["spread"], tuple)
    assert_close(jac["mean"], jnp.full(3, 1 / 3))
    assert_close(jac["spread"], (jnp.array([0.0, -1.0, 1.0]), 2 * x))


def test_float32_stays_float32(client: Client) -> None:
    """The built-in tutorial model is float32, like the tutorial: its gradient has the page's digits."""
    f = remote(client, client.model("tutorial_logreg"))
    W32 = jnp.asarray([-0.36838785, -2.275689, 0.01144757], dtype=jnp.float32)
    b32 = jnp.asarray(0.8535516, dtype=jnp.float32)
    W_grad, b_grad = jax.grad(f, (0, 1))(W32, b32)
    assert W_grad.dtype == jnp.float32 and b_grad.dtype == jnp.float32
    np.testing.assert_allclose(W_grad, [-0.16965583, -0.8774644, -1.4901346], rtol=1e-6)
    np.testing.assert_allclose(b_grad, -0.29227245, rtol=1e-6)


def test_server_errors_surface_as_client_errors(client: Client, server_url: str) -> None:
    f = remote(client, client.model("rosenbrock"))
    with pytest.raises(BadRequestError) as caught:
        f(jnp.ones((2, 2)))  # rosenbrock takes a vector: refused when its shapes are asked
    assert caught.value.status_code == 422
    with pytest.raises(TypeError, match="AsyncClient"):
        remote(AsyncClient(server_url), client.model("rosenbrock"))
