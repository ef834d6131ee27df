"""engine.scipy.special and engine.scipy.stats in the expression language, over HTTP."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

# jax.grad of this sum at x = [0.5, 1.5, 2.5], with jax.scipy's functions of the same names
# (float64, JAX 0.10.2).
EXPR = ("sum(gammaln(x) + scipy.special.digamma(x) * special.i0e(x) + stats.norm.logpdf(x, 0.5, 2.0)"
        " + log_ndtr(x) + gammainc(2.0, x) + erfinv(x / 4) + polygamma(1, x) + xlogy(x, x + 1)"
        " + jax.scipy.stats.poisson.logpmf(3.0, x) + scipy.stats.gamma.logpdf(x, 2.5))")
GRAD = [-5.874246432529491, 2.5351993567735374, 2.3730345111169253]
PRIMITIVES = {"lgamma", "digamma", "polygamma", "igamma", "igammac", "erfc", "erf_inv", "ndtri", "log_ndtr",
              "bessel_i0", "bessel_i1", "bessel_i0e", "bessel_i1e"}


def test_grad_of_an_expression_of_special_functions_matches_jax(client: TestClient) -> None:
    r = client.post("/v1/grad", json={"function": {"expr": EXPR, "params": ["x"]}, "args": [[0.5, 1.5, 2.5]]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["grad"], GRAD, rtol=1e-12)


def test_the_new_primitives_are_listed(client: TestClient) -> None:
    r = client.get("/v1/ops")
    assert r.status_code == 200, r.text
    assert PRIMITIVES <= {op["name"] for op in r.json()["ops"]}


def test_a_derivative_in_the_shape_parameter_is_refused_with_a_4xx(client: TestClient) -> None:
    r = client.post("/v1/grad", json={"function": {"expr": "gammainc(a, 2.0)", "params": ["a"]}, "args": [1.5]})
    assert 400 <= r.status_code < 500, r.text
    assert "differentiable in x only" in r.json()["error"]["message"]
