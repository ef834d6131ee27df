"""The tutorial's logistic regression (JAX's autodiff tutorial), as the benchmarks send it: its
loss as an expression, its parameter names, and the W, b and data the page uses."""

from __future__ import annotations

import numpy as np

TUTORIAL_EXPR = ("z = inputs @ W + b\n"
                 "preds = 0.5 * (tanh(z / 2) + 1)\n"
                 "label_probs = preds * targets + (1 - preds) * (1 - targets)\n"
                 "-sum(log(label_probs))")
PARAMS = ["W", "b", "inputs", "targets"]
W = np.array([-0.36838785, -2.275689, 0.01144757])
B = 0.8535516
INPUTS = np.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
TARGETS = np.array([1.0, 1.0, 0.0, 1.0])
