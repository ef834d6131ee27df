"""What the protocol tests share: the models they register, closed forms of every model they call,
and /v1 as the reference answer (each protocol must agree with it)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
from closed_forms import rosenbrock, rosenbrock_grad, rosenbrock_hessian  # noqa: F401 - the tests' closed forms

# A scalar model with a pytree parameter: 0.5 sum k (x - x0)^2 + sum x^3 / 3, every size n.
SPRING = {"name": "spring",
          "function": {"expr": "0.5 * sum(params['k'] * (x - params['x0']) ** 2) + sum(x ** 3) / 3",
                       "params": ["params", "x"]},
          "schema": {"params": {"k": {"shape": ["n"]}, "x0": {"shape": ["n"]}}, "x": {"shape": ["n"]}}}
# A vector-valued model: tanh(A x + c), A 2x3.
TANH_LAYER = {"name": "tanh_layer",
              "function": {"expr": "tanh(params['A'] @ x + params['c'])", "params": ["params", "x"]},
              "schema": {"params": {"A": {"shape": [2, 3]}, "c": {"shape": [2]}}, "x": {"shape": [3]}}}

# The JAX autodiff tutorial's data, bound in the built-in tutorial_logreg (float32).
TUTORIAL_INPUTS = np.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
TUTORIAL_TARGETS = np.array([1.0, 1.0, 0.0, 1.0])
TUTORIAL_W = np.array([-0.36838785, -2.275689, 0.01144757], dtype=np.float32)
TUTORIAL_B = np.float32(0.8535516)


def register(url: str, model: dict[str, Any]) -> None:
    answer = httpx.post(url + "/v1/models", json=model, timeout=30)
    assert answer.status_code == 201, answer.text


def v1(url: str, model: str, transform: str, body: dict[str, Any]) -> dict[str, Any]:
    """The /v1 answer, the reference every protocol is checked against."""
    answer = httpx.post(f"{url}/v1/models/{model}/{transform}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ----------------------------------------------------------------------------- closed forms


def tutorial_parts(W: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Predictions p = sigmoid(inputs W + b) and the loss's derivative in z, p - targets."""
    p = 1.0 / (1.0 + np.exp(-(TUTORIAL_INPUTS @ np.asarray(W, float) + float(b))))
    return p, p - TUTORIAL_TARGETS


def tutorial_loss(W: np.ndarray, b: float) -> float:
    p, _ = tutorial_parts(W, b)
    return float(-np.sum(np.log(np.where(TUTORIAL_TARGETS == 1.0, p, 1.0 - p))))


def tutorial_grad(W: np.ndarray, b: float) -> tuple[np.ndarray, float]:
    _, residual = tutorial_parts(W, b)
    return TUTORIAL_INPUTS.T @ residual, float(residual.sum())


def tutorial_hessian(W: np.ndarray, b: float) -> np.ndarray:
    """The 4x4 Hessian in (W0, W1, W2, b): with X = [inputs, 1], X^T diag(p (1 - p)) X."""
    p, _ = tutorial_parts(W, b)
    X = np.hstack([TUTORIAL_INPUTS, np.ones((4, 1))])
    return X.T @ np.diag(p * (1.0 - p)) @ X


def spring_grad(k: np.ndarray, x0: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    return {"k": 0.5 * (x - x0) ** 2, "x0": -k * (x - x0), "x": k * (x - x0) + x ** 2}


def tanh_layer_parts(A: np.ndarray, c: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tanh(u), its first and second derivatives, at u = A x + c."""
    t = np.tanh(A @ x + c)
    return t, 1.0 - t ** 2, -2.0 * t * (1.0 - t ** 2)
