"""The sorting primitive: a stable argsort along one axis.

Sorting is the one operation of engine.numpy's sorting and selection functions that cannot be
composed from the other primitives: `sort`, `partition` and their relatives are this permutation
followed by a gather (engine/numpy/sorting.py), so their derivatives are the gather's (the
cotangent permuted back, ties in the stable order) at every order without a rule of their own.
The permutation itself is an integer result and carries no derivative. Its cost is n log n, so a
compiled plan checks the deadline right after it (`superlinear`).

engine.numpy.sorting imports this module, which registers the record (engine.primitives cannot
import it back: the engine's import graph is acyclic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import dtypes
from engine.core import ShapedArray
from engine.errors import ShapeError
from engine.primitive import Algebra, Plan, declare
from engine.primitives import _batch_shift_axes, _norm_axes


def _argsort_impl(x: np.ndarray, axis: int) -> np.ndarray:
    # NumPy's stable sort puts NaNs last, as XLA's sort comparator does.
    return np.argsort(x, axis=axis, kind="stable").astype(dtypes.default_int())


def _argsort_abstract(x: ShapedArray, *, axis: int) -> ShapedArray:
    if x.ndim == 0:
        raise ShapeError("`argsort` needs an array of at least one dimension, got a scalar (0-d array)")
    _norm_axes((axis,), x.ndim, "argsort")
    return ShapedArray(tuple(x.shape), dtypes.default_int())


argsort_p = declare(
    "argsort", impl=_argsort_impl, abstract=_argsort_abstract, vjp=None, jvp=None, batch=_batch_shift_axes,
    plan=Plan(fresh=True, superlinear=True), algebra=Algebra(), arity=1, attrs=("axis",),
    doc="indices that sort x along an axis, ascending, equal elements in their original order (stable)",
)


def argsort(x: Any, axis: int) -> Any:
    """The stable ascending permutation of x along `axis` (x at least 1-D)."""
    return argsort_p(x, axis=int(axis))
