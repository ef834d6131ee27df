"""Models that ship with the service, written in Python against engine.numpy.

`@builtin_model(...)` registers a function under a name; its `constants` bind parameters by
name, so callers send only the rest (the tutorial's data is bound, callers send W and b).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import engine.numpy as jnp
from engine import nn


@dataclass
class BuiltinModel:
    name: str
    function: Callable[..., Any]
    params: list[str]
    description: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    schema: dict[str, Any] = field(default_factory=dict)  # parameter -> spec (service.model_schema)


BUILTIN_MODELS: dict[str, BuiltinModel] = {}


def builtin_model(name: str, params: list[str], description: str, constants: dict[str, Any] | None = None,
                  schema: dict[str, Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in BUILTIN_MODELS:
            raise ValueError(f"built-in model {name!r} is registered twice")
        frozen = {}
        for key, value in (constants or {}).items():
            arr = np.asarray(value)
            arr.flags.writeable = False
            frozen[key] = arr
        BUILTIN_MODELS[name] = BuiltinModel(name, fn, params, description, frozen, schema or {})
        return fn
    return register


def _leaf(shape: list[int | str], dtype: str = "float64") -> dict[str, Any]:
    return {"shape": shape, "dtype": dtype}


TUTORIAL_INPUTS = np.array([[0.52, 1.12, 0.77],
                            [0.88, -1.08, 0.15],
                            [0.52, 0.06, -1.30],
                            [0.74, -2.49, 1.39]], dtype=np.float32)
TUTORIAL_TARGETS = np.array([True, True, False, True])


@builtin_model("tutorial_logreg", ["W", "b", "inputs", "targets"],
               "The JAX autodiff tutorial's logistic-regression loss (negative log-likelihood, summed) "
               "with its 4x3 data bound; send W (3,) and b ().",
               {"inputs": TUTORIAL_INPUTS, "targets": TUTORIAL_TARGETS},
               # float32, like the tutorial's data: the page's digits come back
               {"W": _leaf([3], "float32"), "b": _leaf([], "float32")})
def tutorial_logreg(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    preds = 0.5 * (jnp.tanh((jnp.dot(inputs, W) + b) / 2) + 1)
    label_probs = preds * targets + (1 - preds) * (1 - targets)
    return -jnp.sum(jnp.log(label_probs))


@builtin_model("logistic_regression", ["W", "b", "inputs", "targets"],
               "Mean negative log-likelihood of logistic regression: inputs (n, d), W (d,), b (), "
               "targets (n,) of 0/1.",
               schema={"W": _leaf(["d"]), "b": _leaf([]), "inputs": _leaf(["n", "d"]), "targets": _leaf(["n"])})
def logistic_regression(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    z = jnp.dot(inputs, W) + b
    t = jnp.asarray(targets).astype(z.dtype)
    # log(sigmoid(z)) and log(1 - sigmoid(z)) written to stay finite for large |z|.
    return -jnp.mean(t * nn.log_sigmoid(z) + (1 - t) * nn.log_sigmoid(-z))


@builtin_model("linear_regression", ["W", "b", "inputs", "targets"],
               "Mean squared error of a linear model: inputs (n, d), W (d,) or (d, k), b, targets.")
def linear_regression(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    residual = jnp.dot(inputs, W) + b - targets
    return jnp.mean(residual * residual)


@builtin_model("mlp_classifier", ["params", "inputs", "labels"],
               "Softmax cross-entropy of a tanh MLP. params is a dict {'W1', 'b1', 'W2', 'b2', ...} "
               "(layer k maps with W{k} (n_in, n_out) and b{k} (n_out,)); inputs (n, d); labels (n,) "
               "class indices (integers, or numbers holding integers).",
               # the layer dict's keys depend on the depth, so `params` has no fixed spec
               schema={"inputs": _leaf(["n", "d"]), "labels": _leaf(["n"], "int32")})
def mlp_classifier(params: dict[str, Any], inputs: Any, labels: Any) -> Any:
    depth = len([k for k in params if k.startswith("W")])
    h = inputs
    for k in range(1, depth + 1):
        h = jnp.dot(h, params[f"W{k}"]) + params[f"b{k}"]
        if k < depth:
            h = jnp.tanh(h)
    logp = nn.log_softmax(h, axis=-1)
    index = jnp.asarray(labels).astype(jnp.int32)
    picked = jnp.take_along_axis(logp, index[:, None], axis=1) if hasattr(jnp, "take_along_axis") else \
        logp[jnp.arange(logp.shape[0]), index]
    return -jnp.mean(picked)


@builtin_model("rosenbrock", ["x"], "The Rosenbrock function of a vector x of any length >= 2.",
               schema={"x": _leaf(["n"])})
def rosenbrock(x: Any) -> Any:
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
