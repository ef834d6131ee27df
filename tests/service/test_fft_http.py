"""jnp.fft in the expression language over HTTP: real results are served, complex ones refused.

The service's arrays are real on the wire (array_codec has no complex dtype): a function may use
complex values inside (the FFT of a real signal, its modulus), but a complex output is refused
with a 422 before any work, saying how to return its parts instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

X = [0.5, -1.0, 2.0, 0.25, 1.5]
# jax.grad(lambda x: jnp.sum(jnp.abs(jnp.fft.rfft(x, n=8, norm="ortho")) ** 2 * jnp.arange(5.0)))(x) in
# float64 (JAX 0.10.2).
POWER_GRAD = [4.191941738241591, -6.728553390593273, 7.015165042944954, -4.93566017177982, 5.308058261758407]


def test_grad_of_an_fft_expression_matches_jax(client: TestClient) -> None:
    body = {"function": {"expr": "sum(abs(fft.rfft(x, n=8, norm='ortho')) ** 2 * arange(5.0))", "params": ["x"]},
            "args": [X]}
    r = client.post("/v1/grad", json=body)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["grad"], POWER_GRAD, rtol=1e-12, atol=1e-12)


def test_real_and_imaginary_parts_of_a_transform_are_served(client: TestClient) -> None:
    expr = "(real(jnp.fft.fft(x)), imag(jnp.fft.fft(x)), fft.fftshift(x))"
    r = client.post("/v1/value", json={"function": {"expr": expr, "params": ["x"]}, "args": [X]})
    assert r.status_code == 200, r.text
    re, im, shifted = r.json()["value"]
    np.testing.assert_allclose(np.asarray(re) + 1j * np.asarray(im), np.fft.fft(X), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(shifted, np.fft.fftshift(X))


@pytest.mark.parametrize("path, extra", [("/v1/value", {}), ("/v1/value", {"encoding": "base64"}),
                                         ("/v1/jacobian", {}), ("/v1/check_grads", {})])
def test_a_complex_output_is_refused_with_advice(client: TestClient, path: str, extra: dict) -> None:
    body = {"function": {"expr": "fft.fft(x)", "params": ["x"]}, "args": [X], **extra}
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_function"
    assert "complex" in error["message"] and "real(z)" in error["message"]
    assert error["detail"]["dtype"] == "complex128" and error["detail"]["shape"] == [5]


def test_ops_lists_the_fft_primitives_and_functions(client: TestClient) -> None:
    catalogue = client.get("/v1/ops").json()
    ops = {op["name"]: op for op in catalogue["ops"]}
    assert ops["fft"]["attrs"] == ["fft_type", "fft_lengths"] and ops["fft"]["vjp"] and ops["fft"]["jvp"]
    assert {"real", "imag", "conj", "complex"} <= set(ops)
    assert {"fft.rfft", "fft.irfftn", "fft.fftshift", "real", "imag", "conj"} <= set(catalogue["expression_functions"])
