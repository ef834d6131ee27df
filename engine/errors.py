"""Exceptions raised by the engine. Each message says what was wrong, where, and what to do."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class EscapedTracerError(EngineError):
    """A traced value outlived the transformation that created it."""


class ConcretizationError(EngineError, TypeError):
    """A traced value was needed as a concrete Python value (bool, int, float, a shape)."""


class TracerArrayConversionError(EngineError, TypeError):
    """A traced value was handed to plain NumPy."""


class ShapeError(EngineError, ValueError):
    """Operands' shapes do not fit the operation."""


class DtypeError(EngineError, TypeError):
    """An operand's dtype does not fit the operation."""


class InvalidArgumentError(EngineError, ValueError):
    """An argument's value is not one the operation accepts (not a matter of shape or dtype), e.g.
    a malformed einsum subscripts string."""


class BatchAxisError(EngineError, ValueError):
    """vmap's axes do not fit what they describe: an axis out of range, a scalar asked to be
    mapped, mapped axes of different sizes, nothing mapped at all, a mapped result whose out_axes
    is None, or in_axes/out_axes that are not a prefix of the arguments' (results') structure."""


class DifferentiationError(EngineError, TypeError):
    """A transformation was asked for something it cannot differentiate."""


class NotBatchable(EngineError):
    """A primitive's batching rule cannot apply it to these operands in one pass (a batched index
    array, say); callers run the equation once per example instead."""


class GradientCheckError(EngineError, AssertionError):
    """`check_grads` found a derivative that disagrees with finite differences."""


class DeadlineExceeded(EngineError, TimeoutError):
    """A computation ran past the time it was given (see engine.core.deadline)."""


class IntegerInputError(DifferentiationError):
    """A value being differentiated has an integer or boolean dtype, so it has no derivative.

    Structured so callers other than Python users (an HTTP service) can phrase their own advice:
    `argnum` is the position of the argument among the function's positional arguments, `path`
    the keys leading to the leaf inside it (`()` for the whole argument; dict keys, sequence
    indices or attribute names), `dtype` the leaf's NumPy dtype, `param` the parameter's name
    when the function's signature gives one (else None) and `transform` the transformation.
    """

    def __init__(self, message: str, *, argnum: int, dtype: Any, path: tuple[Any, ...] = (),
                 param: str | None = None, transform: str = "grad") -> None:
        super().__init__(message)
        self.argnum = argnum
        self.dtype = dtype
        self.path = path
        self.param = param
        self.transform = transform


class NonScalarOutputError(DifferentiationError):
    """grad was given a function whose output is not a scalar; `shape` (a tuple) and `dtype`
    (a NumPy dtype) describe the output it returned."""

    def __init__(self, message: str, *, shape: tuple[int, ...], dtype: Any) -> None:
        super().__init__(message)
        self.shape = shape
        self.dtype = dtype
