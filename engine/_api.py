"""The engine's public API in one namespace: engine/__init__.py loads this module on first use."""

from __future__ import annotations

from engine import (
    nn,  # noqa: F401
    numpy,  # noqa: F401  (installs the array methods)
    random,  # noqa: F401
    scipy,  # noqa: F401
    tree_util,  # noqa: F401
)
from engine._config import config
from engine.array import Array
from engine.core import Graph, ShapedArray, ShapeDtypeStruct
from engine.custom import custom_jvp, custom_vjp
from engine.errors import (
    BatchAxisError,
    ConcretizationError,
    DifferentiationError,
    EngineError,
    EscapedTracerError,
    GradientCheckError,
    IntegerInputError,
    NonScalarOutputError,
    TracerArrayConversionError,
)
from engine.expr import ExprError, Program, compile_expression
from engine.jit import jit
from engine.limits import LimitExceeded, Limits
from engine.mapping import vmap
from engine.numpy.elementwise import stop_gradient
from engine.optimize import optimize
from engine.serialize import GraphFormatError, GraphFunction, load_graph
from engine.test_util import check_gradients
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
    "Array", "BatchAxisError", "ConcretizationError", "ExprError", "GraphFormatError", "GraphFunction", "LimitExceeded",
    "Limits", "Program", "compile_expression", "load_graph", "optimize", "DifferentiationError", "EngineError",
    "EscapedTracerError", "IntegerInputError", "NonScalarOutputError",
    "Graph", "GradientCheckError", "ShapeDtypeStruct", "ShapedArray", "TracerArrayConversionError", "check_gradients",
    "config", "custom_jvp", "custom_vjp", "grad", "hessian", "jacfwd", "jacobian", "jacrev", "jit", "jvp",
    "make_graph", "nn", "numpy", "random", "scipy", "stop_gradient", "tree_util",
    "value_and_grad", "vjp", "vmap",
]
