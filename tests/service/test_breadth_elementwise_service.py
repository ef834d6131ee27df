"""The elementwise functions of issue 15 through the service: POST /v1/grad with an expression
using them, in float64, against closed forms."""

from __future__ import annotations

import numpy as np
from _service_support import arr, expr, strict_json
from fastapi.testclient import TestClient


def test_grad_of_an_expression_with_the_new_elementwise_functions(client: TestClient) -> None:
    source = ("sum(sinc(x) + logaddexp2(x, 1.0) + fmax(x, 0.0) * fabs(x) + degrees(x) + rad2deg(radians(x)) "
              "+ deg2rad(x) + nan_to_num(x) + frexp(x)[0] + where(isclose(x, 0.5), 0.0, x) "
              "+ where(allclose(x, x), x, 0.0) + fmin(x, -1.0))")
    x = np.array([0.3, -1.2, 2.5])
    response = client.post("/v1/grad", json={"function": expr(source, ["x"]), "args": [x.tolist()],
                                             "dtype": "float64"})
    assert response.status_code == 200, response.text
    grad = arr(strict_json(response.text)["grad"])
    u = np.pi * x
    sinc_grad = (np.cos(u) * u - np.sin(u)) / (u * x)
    logaddexp2_grad = 2.0**x / (2.0**x + 2.0)
    fmax_fabs_grad = np.where(x > 0, 2 * x, 0.0)
    mantissa_grad = 2.0 ** -np.frexp(x)[1]
    want = (sinc_grad + logaddexp2_grad + fmax_fabs_grad + 180 / np.pi + 1 + np.pi / 180 + 1 + mantissa_grad
            + 1 + 1 + (x < -1.0))
    np.testing.assert_allclose(grad, want, rtol=1e-12)
