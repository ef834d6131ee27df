"""Compiled plans write results into the buffers of operands that die, but never into a buffer a
view (reshape, transpose, broadcast, gather...) still reads: jit agrees with eager evaluation."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine.numpy as jnp


@pytest.fixture(autouse=True)
def x64() -> object:
    engine.config.update("jax_enable_x64", True)
    yield
    engine.config.update("jax_enable_x64", False)


def _f(x: object, y: object) -> object:
    z = x * y + jnp.sin(x)
    return jnp.sum(z ** 3 / (1 + z ** 2))


def test_a_buffer_reused_in_place_is_not_overwritten_under_a_view() -> None:
    """The Hessian's plan reused a dying buffer for a product, then overwrote it while a reshaped
    view of that product was still to be read (the diagonal came out [4.815, 7.468, -0.0146])."""
    x, y = np.array([0.1, 0.2, 0.7]), np.array([1.1, 1.3, -0.4])
    eager = np.asarray(engine.hessian(_f)(x, y))
    compiled = np.asarray(engine.jit(engine.hessian(_f))(x, y))
    np.testing.assert_array_equal(compiled, eager)
    # and both are the Hessian: central differences of the gradient agree
    grad = engine.grad(_f)
    h = 1e-5
    fd = np.stack([(np.asarray(grad(x + h * e, y)) - np.asarray(grad(x - h * e, y))) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(eager, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.diag(eager), [4.7722118, 7.41093827, -0.01734339], rtol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_jit_of_second_derivatives_equals_eager(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=4), rng.normal(size=4)

    def g(x: object, y: object) -> object:
        a = jnp.tanh(x * y) + x ** 2
        b = jnp.reshape(a, (2, 2)).T @ jnp.reshape(y, (2, 2))
        return jnp.sum(jnp.exp(-b ** 2) * jnp.cos(a.reshape(2, 2)))

    for transform in (engine.hessian, engine.jacfwd, engine.jacrev):
        eager = np.asarray(transform(g)(x, y))
        np.testing.assert_allclose(np.asarray(engine.jit(transform(g))(x, y)), eager, rtol=1e-12, atol=1e-14)
