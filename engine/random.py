"""engine.random: JAX's counter-based PRNG (threefry2x32), bit for bit.

Keys are values: `key(seed)` makes one, `split` and `fold_in` derive new ones, and sampling
functions consume them. The tutorial's numbers come from JAX's original splitting scheme, which
is our default; `config.update("jax_threefry_partitionable", True)` selects the newer one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import _threefry as tf
from engine import dtypes
from engine.array import Array
from engine.core import Tracer
from engine.errors import ConcretizationError


class KeyArray:
    """An array of PRNG keys (JAX's typed `key<fry>` arrays); `key_data` gives the raw uint32 words."""

    __slots__ = ("_data",)

    def __init__(self, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=np.uint32)
        if data.ndim < 1 or data.shape[-1] != 2:
            raise ValueError(f"key data must have a trailing dimension of 2 uint32 words, got shape {data.shape}")
        data.flags.writeable = False
        self._data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape[:-1]

    @property
    def ndim(self) -> int:
        return self._data.ndim - 1

    @property
    def dtype(self) -> str:
        return "key<fry>"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a single key")
        return self.shape[0]

    def __getitem__(self, idx: Any) -> KeyArray:
        if isinstance(idx, tuple):
            idx = idx + (slice(None),)
        else:
            idx = (idx, slice(None))
        return KeyArray(self._data[idx])

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Array({self.shape}, dtype=key<fry>) overlaying:\n{self._data}"

    def __eq__(self, other: object) -> Any:
        if not isinstance(other, KeyArray):
            return NotImplemented
        return Array(np.all(self._data == other._data, axis=-1))

    __hash__ = None  # type: ignore[assignment]


def _key_data(key_arg: Any, fname: str) -> np.ndarray:
    """Raw words of a typed key or of a legacy uint32[2] key (PRNGKey)."""
    if isinstance(key_arg, KeyArray):
        return key_arg._data
    if isinstance(key_arg, Tracer):
        if key_arg.value is None:
            raise ConcretizationError(
                f"random.{fname}: the key is a traced value; keys must be concrete. Create keys "
                "outside the transformed function and pass the samples in, or split beforehand."
            )
        return np.asarray(key_arg.value, dtype=np.uint32)
    data = np.asarray(key_arg)
    if data.dtype != np.uint32 or data.shape[-1:] != (2,):
        raise TypeError(
            f"random.{fname} expects a key from random.key(seed) (or a uint32[2] PRNGKey), got "
            f"{type(key_arg).__name__} of dtype {data.dtype} and shape {data.shape}"
        )
    return data


def _single(key_arg: Any, fname: str) -> np.ndarray:
    data = _key_data(key_arg, fname)
    if data.shape != (2,):
        raise ValueError(f"random.{fname} takes a single key, got a key array of shape {data.shape[:-1]}; "
                         "index one key or loop over them")
    return data


def _rewrap(key_arg: Any, data: np.ndarray) -> Any:
    """Keep the caller's key flavour: typed keys stay typed, legacy raw keys stay raw."""
    return KeyArray(data) if isinstance(key_arg, KeyArray) else Array(_frozen(data))


def _frozen(value: np.ndarray) -> np.ndarray:
    value.flags.writeable = False
    return value


def key(seed: int) -> KeyArray:
    """A typed PRNG key from an integer seed; key(0) has key data [0, 0]."""
    return KeyArray(tf.seed_to_key_data(int(seed)))


def PRNGKey(seed: int) -> Array:  # noqa: N802 - JAX's name
    """A legacy raw key: a uint32 array of shape (2,)."""
    return Array(_frozen(tf.seed_to_key_data(int(seed))))


def key_data(keys: Any) -> Array:
    return Array(_frozen(np.array(_key_data(keys, "key_data"))))


def wrap_key_data(data: Any) -> KeyArray:
    return KeyArray(np.asarray(data, dtype=np.uint32))


def split(key_arg: Any, num: int | Sequence[int] = 2) -> Any:
    """`num` new independent keys derived from one."""
    return _rewrap(key_arg, tf.split_data(_single(key_arg, "split"), num))


def fold_in(key_arg: Any, data: int) -> Any:
    """A new key that mixes an integer into the given one."""
    return _rewrap(key_arg, tf.fold_in_data(_single(key_arg, "fold_in"), int(data)))


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)


def bits(key_arg: Any, shape: int | Sequence[int] = (), dtype: Any = None) -> Array:
    """Uniformly random unsigned integers (uint32 by default)."""
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.uint32)
    if dtype.kind != "u":
        raise TypeError(f"random.bits needs an unsigned integer dtype, got {dtype}")
    return Array(_frozen(tf.random_bits_data(_single(key_arg, "bits"), dtype.itemsize * 8, _shape(shape))))


def _float(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype) if dtype is not None else dtypes.default_float()
    if dt.kind != "f":
        raise TypeError(f"expected a floating-point dtype, got {dt}")
    return dt


def uniform(key_arg: Any, shape: int | Sequence[int] = (), dtype: Any = None, minval: float = 0.0,
            maxval: float = 1.0) -> Array:
    """Uniform samples on [minval, maxval)."""
    return Array(_frozen(tf.uniform_data(_single(key_arg, "uniform"), _shape(shape), _float(dtype),
                                         minval, maxval)))


def normal(key_arg: Any, shape: int | Sequence[int] = (), dtype: Any = None) -> Array:
    """Standard normal samples."""
    return Array(_frozen(tf.normal_data(_single(key_arg, "normal"), _shape(shape), _float(dtype))))
