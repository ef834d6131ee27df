"""JAX's dtype rules: float32 by default, float64 behind `jax_enable_x64`, weakly typed scalars."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine._config import config

float32 = np.dtype("float32")
float64 = np.dtype("float64")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
bool_ = np.dtype("bool")

_NARROW = {
    np.dtype("float64"): np.dtype("float32"),
    np.dtype("int64"): np.dtype("int32"),
    np.dtype("uint64"): np.dtype("uint32"),
    np.dtype("complex128"): np.dtype("complex64"),
}
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def default_float() -> np.dtype:
    return float64 if config.jax_enable_x64 else float32


def default_int() -> np.dtype:
    return int64 if config.jax_enable_x64 else int32


def default_complex() -> np.dtype:
    return np.dtype("complex128") if config.jax_enable_x64 else np.dtype("complex64")


def canonicalize(dtype: Any) -> np.dtype:
    """The dtype an array of `dtype` gets when it enters the engine without an explicit dtype."""
    dtype = np.dtype(dtype)
    if not config.jax_enable_x64:
        return _NARROW.get(dtype, dtype)
    return dtype


def python_scalar_dtype(x: bool | int | float | complex) -> np.dtype:
    if isinstance(x, bool):
        return bool_
    if isinstance(x, int):
        return default_int()
    if isinstance(x, float):
        return default_float()
    return default_complex()


def is_weak(x: Any) -> bool:
    """Python scalars are weakly typed: they adapt to the dtype of the array they meet."""
    return type(x) in (bool, int, float, complex)


def _default_of_kind(kind: str) -> np.dtype:
    return {"b": bool_, "u": default_int(), "i": default_int(), "f": default_float(), "c": default_complex()}[kind]


def result_type(*operands: Any) -> np.dtype:
    """The dtype operands are promoted to: NumPy's table among arrays, weak scalars only widen kinds."""
    strong = []
    weak_kind = None
    for x in operands:
        if is_weak(x):
            kind = python_scalar_dtype(x).kind
            if weak_kind is None or _KIND_RANK[kind] > _KIND_RANK[weak_kind]:
                weak_kind = kind
        else:
            strong.append(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
    if strong:
        top = max(_KIND_RANK[d.kind] for d in strong)
        if top >= _KIND_RANK["f"]:
            # Integers and booleans meeting floats take the float's width (JAX's lattice), so
            # float32 * int32 stays float32 rather than NumPy's float64.
            strong = [d for d in strong if _KIND_RANK[d.kind] == top]
        dtype = np.result_type(*strong) if len(strong) > 1 else np.dtype(strong[0])
        if dtype.itemsize > max(d.itemsize for d in strong):
            dtype = canonicalize(dtype)  # e.g. uint32 with int32: int64 only under x64
        if weak_kind is not None and _KIND_RANK[weak_kind] > _KIND_RANK[dtype.kind]:
            dtype = _default_of_kind(weak_kind)
        return dtype
    return _default_of_kind(weak_kind)


def is_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "fc"


def is_differentiable(dtype: Any) -> bool:
    """Only inexact dtypes carry derivatives; integer and bool values are constants."""
    return np.dtype(dtype).kind in "fc"
