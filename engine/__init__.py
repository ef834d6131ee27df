"""Nabla's autodiff engine: JAX's transformation API over NumPy, built on a graph IR.

    import engine as jax
    import engine.numpy as jnp

The names below (grad, jit, vmap, numpy, ...) are loaded on first use, so that importing one
layer of the engine, such as the IR alone (`import engine.core`), does not import the layers above
it (engine.numpy, the serialiser, the printer); the first of them loads the whole API at once.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = [
    "Array", "BatchAxisError", "ConcretizationError", "ExprError", "GraphFormatError", "GraphFunction", "LimitExceeded",
    "Limits", "Program", "compile_expression", "load_graph", "optimize", "DifferentiationError", "EngineError",
    "EscapedTracerError", "IntegerInputError", "NonScalarOutputError",
    "Graph", "GradientCheckError", "ShapeDtypeStruct", "ShapedArray", "TracerArrayConversionError", "check_gradients",
    "config", "custom_jvp", "custom_vjp", "grad", "hessian", "jacfwd", "jacobian", "jacrev", "jit", "jvp",
    "make_graph", "nn", "numpy", "random", "scipy", "stop_gradient", "tree_util",
    "value_and_grad", "vjp", "vmap",
]


# Public names that are submodules: loaded alone, so that `from engine import nn` inside the
# engine's own modules does not load the whole API while it is being loaded.
_SUBMODULES = frozenset({"nn", "numpy", "random", "scipy", "tree_util"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in __all__:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    # The whole public API, imported on first use (see the module docstring).
    from engine import _api

    namespace = globals()
    namespace.update((n, getattr(_api, n)) for n in __all__)
    return namespace[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Engine(types.ModuleType):
    """`engine.jit` and `engine.optimize` are public functions and also the names of the modules
    defining them; importing such a module would rebind the package's attribute to the module
    (Python sets it on first import), so the function is kept."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("jit", "optimize") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Engine
