"""Closed forms and data the tests of several folders check against (imported as `closed_forms`:
tests/conftest.py puts this folder on sys.path).

- Rosenbrock's value, gradient and Hessian, written out by hand;
- the tutorial's data and loss (JAX's autodiff tutorial), as an expression and as an engine
  function.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import engine.numpy as enp

# ----------------------------------------------------------------------------- Rosenbrock


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    g = np.zeros_like(x)
    g[:-1] += -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def rosenbrock_hessian(x: np.ndarray) -> np.ndarray:
    """d2/dx_i dx_j of sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2."""
    n = len(x)
    h = np.zeros((n, n))
    for i in range(n - 1):
        h[i, i] += 1200.0 * x[i] ** 2 - 400.0 * x[i + 1] + 2.0
        h[i + 1, i + 1] += 200.0
        h[i, i + 1] = h[i + 1, i] = -400.0 * x[i]
    return h


# ----------------------------------------------------------------------------- the tutorial's loss

INPUTS = np.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
TARGETS = np.array([1.0, 1.0, 0.0, 1.0])
TUTORIAL_EXPR = """\
z = inputs @ W + b
preds = 0.5 * (tanh(z / 2) + 1)
label_probs = preds * targets + (1 - preds) * (1 - targets)
-sum(log(label_probs))
"""


def tutorial_engine(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    """The tutorial's loss written against engine.numpy (what a client traces into a graph)."""
    preds = 0.5 * (enp.tanh((enp.dot(inputs, W) + b) / 2) + 1)
    label_probs = preds * targets + (1 - preds) * (1 - targets)
    return -enp.sum(enp.log(label_probs))
