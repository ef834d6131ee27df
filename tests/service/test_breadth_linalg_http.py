"""The linear-algebra functions of issue 15 through the service: POST /v1/grad with expressions using
linalg.svd, eigh, eigvalsh, eig, eigvals, qr, pinv, lstsq, matrix_power and the singular-value norms,
in float64, against closed forms; and eig's refusal of complex eigenvalues as a 4xx."""

from __future__ import annotations

from typing import Any

import numpy as np
from _service_support import arr, assert_error, expr, strict_json
from fastapi.testclient import TestClient

TALL = np.array([[0.9, -0.4, 0.3], [0.2, 1.1, -0.7], [-0.5, 0.6, 0.8], [0.4, 0.1, -0.2]])
SYM = np.array([[2.0, 0.3, -0.1], [0.3, -1.0, 0.4], [-0.1, 0.4, 0.7]])


def _grad(client: TestClient, source: str, a: np.ndarray) -> np.ndarray:
    response = client.post("/v1/grad", json={"function": expr(source, ["a"]), "args": [a.tolist()],
                                             "dtype": "float64"})
    assert response.status_code == 200, response.text
    return arr(strict_json(response.text)["grad"])


def test_singular_values_pinv_lstsq_and_qr(client: TestClient) -> None:
    u, s, vh = np.linalg.svd(TALL, full_matrices=False)
    # d sum(s) = U V^T; d |A|_* the same; d |A|_2 = u1 v1^T; d |A|_-2 = u3 v3^T
    got = _grad(client, "sum(linalg.svd(a, full_matrices=False)[1]) + linalg.norm(a, ord='nuc') "
                        "+ linalg.norm(a, ord=2) + linalg.norm(a, ord=-2)", TALL)
    np.testing.assert_allclose(got, 2 * u @ vh + np.outer(u[:, 0], vh[0]) + np.outer(u[:, 2], vh[2]), atol=1e-13)
    # lstsq's solution is pinv(a) @ b, so the two terms cancel exactly in value and derivative;
    # sum(qr(a)[1] ** 2) = |R|_F^2 = |A|_F^2 has the derivative 2 A.
    got = _grad(client, "sum(linalg.lstsq(a, array([1.0, -2.0, 0.5, 3.0]))[0] - linalg.pinv(a) @ array([1.0, -2.0, "
                        "0.5, 3.0])) + sum(linalg.qr(a)[1] ** 2)", TALL)
    np.testing.assert_allclose(got, 2 * TALL, atol=1e-12)


def test_eigenvalues_and_matrix_power(client: TestClient) -> None:
    # sum(w^2) = |A|_F^2 for a symmetric A: the symmetrised gradient is 2 A. The eigenvectors satisfy
    # V diag(w) V^T = A, whose sum has the derivative of sum(A) (all ones).
    got = _grad(client, "sum(linalg.eigvalsh(a) ** 2) + sum(linalg.eigh(a)[1] * linalg.eigh(a)[0] "
                        "@ transpose(linalg.eigh(a)[1]))", SYM)
    np.testing.assert_allclose(got, 2 * SYM + 1.0, atol=1e-12)
    # eig of a symmetric matrix: sum(w) = trace(A); matrix_power(a, 2) summed: d = 1 A^T + A^T 1
    got = _grad(client, "sum(linalg.eigvals(a)) + sum(linalg.eig(a)[0]) + sum(linalg.matrix_power(a, 2))", SYM)
    ones = np.ones((3, 3))
    np.testing.assert_allclose(got, 2 * np.eye(3) + ones @ SYM.T + SYM.T @ ones, atol=1e-12)


def test_eig_with_complex_eigenvalues_is_a_client_error(client: TestClient) -> None:
    rotation: list[Any] = [[0.0, -1.0], [1.0, 0.0]]
    response = client.post("/v1/grad", json={"function": expr("sum(linalg.eig(a)[0])", ["a"]), "args": [rotation],
                                             "dtype": "float64"})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert {"type", "message", "detail"} <= set(error)
    assert "complex eigenvalues" in error["message"]


def test_det_at_a_singular_matrix_has_exact_derivatives_and_inv_says_why_it_has_none(client: TestClient) -> None:
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    np.testing.assert_array_equal(_grad(client, "linalg.det(a)", singular), [[4.0, -2.0], [-2.0, 1.0]])
    response = client.post("/v1/hessian", json={"function": expr("linalg.det(a)", ["a"]), "args": [singular.tolist()],
                                                "dtype": "float64"})
    assert response.status_code == 200, response.text
    # det = a00 a11 - a01 a10
    expected = np.zeros((2, 2, 2, 2))
    expected[0, 0, 1, 1] = expected[1, 1, 0, 0] = 1.0
    expected[0, 1, 1, 0] = expected[1, 0, 0, 1] = -1.0
    np.testing.assert_array_equal(arr(strict_json(response.text)["hessian"]), expected)
    response = client.post("/v1/grad", json={"function": expr("sum(linalg.inv(a))", ["a"]),
                                             "args": [singular.tolist()], "dtype": "float64"})
    assert_error(response, 422, "invalid_argument", "need an invertible matrix",
                 {"exception": "LinAlgError", "reason": "Singular matrix"})
