"""Nabla's autodiff engine: JAX's transformation API over NumPy, built on a graph IR.

    import engine as jax
    import engine.numpy as jnp
"""

from __future__ import annotations

from engine import (
    nn,  # noqa: E402,F401
    numpy,  # noqa: F401  (installs the array methods)
    random,  # noqa: E402,F401
    scipy,  # noqa: E402,F401
    tree_util,  # noqa: F401
)
from engine._config import config
from engine.array import Array
from engine.core import Graph, ShapedArray, ShapeDtypeStruct
from engine.custom import custom_vjp  # noqa: E402
from engine.errors import (
    ConcretizationError,
    DifferentiationError,
    EngineError,
    EscapedTracerError,
    GradientCheckError,
    IntegerInputError,
    NonScalarOutputError,
    TracerArrayConversionError,
)
from engine.expr import ExprError, Program, compile_expression  # noqa: E402
from engine.jit import jit  # noqa: E402
from engine.limits import LimitExceeded, Limits  # noqa: E402
from engine.numpy.elementwise import stop_gradient
from engine.optimize import optimize  # noqa: E402
from engine.serialize import GraphFormatError, GraphFunction, load_graph  # noqa: E402
from engine.test_util import check_gradients  # noqa: E402
from engine.transforms import (
    grad,
    hessian,
    jacfwd,
    jacobian,
    jacrev,
    jvp,
    make_graph,
    value_and_grad,
    vjp,
)

__all__ = [
    "Array", "ConcretizationError", "ExprError", "GraphFormatError", "GraphFunction", "LimitExceeded",
    "Limits", "Program", "compile_expression", "load_graph", "optimize", "DifferentiationError", "EngineError",
    "EscapedTracerError", "IntegerInputError", "NonScalarOutputError",
    "Graph", "GradientCheckError", "ShapeDtypeStruct", "ShapedArray", "TracerArrayConversionError", "check_gradients",
    "config", "custom_vjp", "grad", "hessian", "jacfwd", "jacobian", "jacrev", "jit", "jvp",
    "make_graph", "nn", "numpy", "random", "scipy", "stop_gradient", "tree_util",
    "value_and_grad", "vjp",
]
