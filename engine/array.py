"""`Array`: the engine's concrete array, a thin immutable wrapper over a NumPy value.

Arrays and tracers (engine.core) share one set of methods and operators (installed by
`engine.numpy`), so user code cannot tell them apart except that only an Array has concrete values
to print or convert. This module is the bottom of the engine: it imports no other part of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


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
