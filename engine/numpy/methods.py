"""Operators and NumPy-style methods shared by Array and Tracer."""

from __future__ import annotations

from typing import Any

from engine.array import Array
from engine.core import Tracer
from engine.numpy import complex_parts as CP
from engine.numpy import contractions as C
from engine.numpy import elementwise as E
from engine.numpy import reductions as R
from engine.numpy import shapes as S
from engine.numpy._base import asarray


def _swap(fn):
    return lambda self, other: fn(other, self)


def _reshape_method(self: Any, *shape: Any, order: str = "C") -> Any:
    if len(shape) == 1 and not isinstance(shape[0], int):
        shape = tuple(shape[0])
    return S.reshape(self, shape, order=order)


def _transpose_method(self: Any, *axes: Any) -> Any:
    if len(axes) == 1 and not isinstance(axes[0], int):
        axes = tuple(axes[0])
    return S.transpose(self, axes or None)


def _astype(self: Any, dtype: Any) -> Any:
    return asarray(self, dtype)


METHODS: dict[str, Any] = {
    "__add__": E.add, "__radd__": _swap(E.add),
    "__sub__": E.subtract, "__rsub__": _swap(E.subtract),
    "__mul__": E.multiply, "__rmul__": _swap(E.multiply),
    "__truediv__": E.divide, "__rtruediv__": _swap(E.divide),
    "__floordiv__": E.floor_divide, "__rfloordiv__": _swap(E.floor_divide),
    "__mod__": E.remainder, "__rmod__": _swap(E.remainder),
    "__pow__": E.power, "__rpow__": _swap(E.power),
    "__matmul__": C.matmul, "__rmatmul__": _swap(C.matmul),
    "__neg__": E.negative, "__pos__": E.positive, "__abs__": E.abs,
    "__eq__": E.equal, "__ne__": E.not_equal, "__lt__": E.less, "__le__": E.less_equal,
    "__gt__": E.greater, "__ge__": E.greater_equal,
    "__and__": E.logical_and, "__rand__": _swap(E.logical_and),
    "__or__": E.logical_or, "__ror__": _swap(E.logical_or),
    "__xor__": E.logical_xor, "__rxor__": _swap(E.logical_xor),
    "__invert__": E.logical_not,
    "__getitem__": S.getitem,
    "sum": R.sum, "mean": R.mean, "prod": R.prod, "max": R.max, "min": R.min, "var": R.var,
    "std": R.std, "argmax": R.argmax, "argmin": R.argmin, "cumsum": R.cumsum, "all": R.all,
    "any": R.any, "reshape": _reshape_method, "ravel": S.ravel, "flatten": S.ravel,
    "transpose": _transpose_method, "swapaxes": S.swapaxes, "squeeze": S.squeeze,
    "astype": _astype, "dot": C.dot, "clip": E.clip, "round": E.round, "take": S.take,
    "repeat": S.repeat, "diagonal": C.diagonal, "trace": C.trace,
    "conj": CP.conj, "conjugate": CP.conj,
}


def _accepting_out(fn: Any) -> Any:
    """NumPy's np.sum(x), np.mean(x), ... call x.sum(axis=..., out=None): accept out=None."""
    def method(self: Any, *args: Any, out: Any = None, **kwargs: Any) -> Any:
        if out is not None:
            raise TypeError(f"{fn.__name__}: the `out` argument is not supported (engine arrays are immutable)")
        return fn(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


for _name in ("sum", "mean", "prod", "max", "min", "var", "std", "all", "any"):
    METHODS[_name] = _accepting_out(METHODS[_name])

PROPERTIES: dict[str, Any] = {
    "T": lambda self: S.transpose(self),
    "mT": lambda self: S.swapaxes(self, -1, -2),
    "at": lambda self: S._IndexUpdateHelper(self),
    "real": CP.real,
    "imag": CP.imag,
}


def install() -> None:
    for cls in (Array, Tracer):
        for name, fn in METHODS.items():
            setattr(cls, name, fn)
        for name, fn in PROPERTIES.items():
            setattr(cls, name, property(fn))
    # Arrays compare elementwise, so they cannot be hashed by value (as in NumPy and JAX).
    Array.__hash__ = None  # type: ignore[assignment]
