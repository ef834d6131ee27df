"""`Array`: the engine's concrete array, a thin immutable wrapper over a NumPy value.

Arrays and tracers share one set of methods and operators (installed by `engine.numpy`), so user
code cannot tell them apart except that only an Array has concrete values to print or convert.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.core import Tracer
from engine.errors import ConcretizationError, TracerArrayConversionError


class Array:
    """An immutable n-dimensional array (NumPy data, JAX semantics and printing)."""

    __slots__ = ("_value",)
    __array_priority__ = 1000

    def __init__(self, value: np.ndarray | np.generic) -> None:
        self._value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._value.shape

    @property
    def dtype(self) -> np.dtype:
        return self._value.dtype

    @property
    def ndim(self) -> int:
        return self._value.ndim

    @property
    def size(self) -> int:
        return self._value.size

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        value = np.asarray(self._value, dtype=dtype)
        return value.copy() if copy else value

    def __repr__(self) -> str:
        return format_array_repr(np.asarray(self._value))

    def __str__(self) -> str:
        return str(np.asarray(self._value))

    def __format__(self, spec: str) -> str:
        if self._value.ndim == 0:
            return format(self._value.item() if not spec else self._value[()], spec)
        return format(str(self), spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __int__(self) -> int:
        return int(self._value)

    def __complex__(self) -> complex:
        return complex(self._value)

    def __index__(self) -> int:
        return int(np.asarray(self._value).__index__())

    def __len__(self) -> int:
        if self._value.ndim == 0:
            raise TypeError("len() of a 0-dimensional array")
        return self._value.shape[0]

    def __iter__(self) -> Iterator[Any]:
        if self._value.ndim == 0:
            raise TypeError("iteration over a 0-dimensional array")
        return (Array(v) if isinstance(v, np.ndarray) else Array(v) for v in self._value)

    def __hash__(self) -> int:
        raise TypeError("engine Arrays are unhashable (like NumPy and JAX arrays); use a tuple of "
                        "values or `.tobytes()` as a key instead")

    def item(self, *args: Any) -> Any:
        return self._value.item(*args)

    def tolist(self) -> Any:
        return self._value.tolist()

    def tobytes(self) -> bytes:
        return np.asarray(self._value).tobytes()

    def block_until_ready(self) -> Array:
        return self

    def __reduce__(self) -> Any:
        return (Array, (np.asarray(self._value),))

    def __copy__(self) -> Array:
        return self

    def __deepcopy__(self, memo: Any) -> Array:
        return self


def format_array_repr(value: np.ndarray) -> str:
    """JAX's repr: `Array([...], dtype=float32)`, dtype always shown."""
    body = np.array2string(value, separator=", ", prefix="Array(")
    return f"Array({body}, dtype={value.dtype.name})"


def _tracer_conversion(kind: str):
    def convert(self: Tracer, *args: Any) -> Any:
        if self.value is not None:
            return getattr(np.asarray(self.value), f"__{kind}__")(*args)
        raise ConcretizationError(
            f"a traced value ({self!r}) was converted to a Python {kind} inside a function being "
            f"traced abstractly (jit, make_graph, or a graph sent to the service). Its value is not "
            "known until the graph runs, so Python control flow cannot depend on it. Use "
            "`jnp.where` to choose between values, or pass the value as a static argument "
            "(`jit(f, static_argnums=...)`)."
        )
    return convert


def _tracer_array(self: Tracer, dtype: Any = None, copy: Any = None) -> np.ndarray:
    raise TracerArrayConversionError(
        f"a traced value ({self!r}) was passed to a NumPy function. NumPy functions do not record "
        "operations, so the derivative through them would be silently lost. Use the same function "
        "from `engine.numpy` (import engine.numpy as jnp) instead."
    )


def _tracer_iter(self: Tracer) -> Iterator[Any]:
    if self.ndim == 0:
        raise TypeError("iteration over a 0-dimensional traced array")
    return (self[i] for i in range(self.shape[0]))


def _tracer_len(self: Tracer) -> int:
    if self.ndim == 0:
        raise TypeError("len() of a 0-dimensional traced array")
    return self.shape[0]


def _tracer_hash(self: Tracer) -> int:
    raise TypeError("traced arrays are unhashable")


def _tracer_getattr(self: Tracer, name: str) -> Any:
    raise AttributeError(
        f"traced array {self!r} has no attribute {name!r}. Arrays in traced functions support "
        "NumPy's array methods that engine.numpy implements (shape, dtype, ndim, size, T, "
        "reshape, sum, mean, astype, at, ...); call the function from `engine.numpy` instead."
    )


Tracer.__bool__ = _tracer_conversion("bool")
Tracer.__float__ = _tracer_conversion("float")
Tracer.__int__ = _tracer_conversion("int")
Tracer.__complex__ = _tracer_conversion("complex")
Tracer.__index__ = _tracer_conversion("index")
Tracer.__array__ = _tracer_array
Tracer.__iter__ = _tracer_iter
Tracer.__len__ = _tracer_len
Tracer.__hash__ = _tracer_hash
Tracer.__getattr__ = _tracer_getattr


def _tracer_item(self: Tracer, *args: Any) -> Any:
    if self.value is not None:
        return np.asarray(self.value).item(*args)
    return _tracer_conversion("float")(self)


Tracer.item = _tracer_item
Tracer.tolist = lambda self: _tracer_conversion("float")(self) if self.value is None else self.value.tolist()
