"""Exceptions raised by the engine. Each message says what was wrong, where, and what to do."""

from __future__ import annotations


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


class DifferentiationError(EngineError, TypeError):
    """A transformation was asked for something it cannot differentiate."""


class GradientCheckError(EngineError, AssertionError):
    """`check_grads` found a derivative that disagrees with finite differences."""


class DeadlineExceeded(EngineError, TimeoutError):
    """A computation ran past the time it was given (see engine.core.deadline)."""
