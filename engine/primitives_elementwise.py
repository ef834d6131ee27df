"""Primitives of the elementwise breadth of issue 15 (engine.numpy.float_functions uses them).

Only what cannot be composed from other primitives lives here: a float's binary exponent (the
exponent of `frexp`) is read from its bits, which no arithmetic on the value gives exactly.
Declared when engine.numpy.float_functions imports it (engine.numpy imports that module, and the
engine package imports engine.numpy), so every graph document can name it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.core import ShapedArray
from engine.errors import DtypeError
from engine.primitive import Algebra, Plan, declare
from engine.primitives import _batch_elementwise


def _frexp_exponent(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.frexp(x)[1], dtype=np.int32)


def _frexp_exponent_abstract(x: ShapedArray, **_: Any) -> ShapedArray:
    if x.dtype.kind != "f":
        raise DtypeError(f"`frexp` needs a real floating-point operand, got {x.dtype}")
    return ShapedArray(x.shape, np.dtype(np.int32))


# An integer result: it carries no derivative (as in JAX, whose exponent tangent is float0).
frexp_exponent_p = declare(
    "frexp_exponent", impl=_frexp_exponent, abstract=_frexp_exponent_abstract, vjp=None, jvp=None,
    batch=_batch_elementwise, plan=Plan(fresh=True), algebra=Algebra(), arity=1,
    doc="the int32 exponent e of x == m * 2**e with 0.5 <= |m| < 1 (0 for 0, inf and NaN); no derivative",
)
