"""Engine and registry exceptions as API errors: one table, matched by type, in order.

Only exception types decide the answer; messages are passed through, never searched. An
exception no row matches is a bug: the pipeline answers it with a JSON 500 and logs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import (
    ConcretizationError,
    DeadlineExceeded,
    DifferentiationError,
    DtypeError,
    EngineError,
    IntegerInputError,
    NonScalarOutputError,
    ShapeError,
)
from engine.expr import ExprError
from engine.limits import LimitExceeded
from engine.serialize import GraphFormatError
from service.errors import (
    APIError,
    ComputeError,
    ComputeTimeout,
    Conflict,
    DtypeMismatch,
    InvalidArgument,
    InvalidFunction,
    InvalidRequest,
    LimitExceededError,
    NotDifferentiable,
    RegistryUnavailableError,
    ShapeMismatch,
    retry_after,
)
from service.model_schema import join, notation
from service.store import IdempotencyConflict, RegistryUnavailable, StoreError

# The engine's limit names as the settings an operator changes.
SETTING_OF_LIMIT = {
    "max_array_elements": "NABLA_MAX_ARRAY_ELEMENTS",
    "max_nodes": "NABLA_MAX_GRAPH_NODES",
    "max_source_chars": "NABLA_MAX_EXPRESSION_CHARS",
    "max_depth": "NABLA_MAX_EXPRESSION_DEPTH",
    "max_constant_elements": "NABLA_MAX_CONSTANT_ELEMENTS",
    "max_dimensions": "NABLA_MAX_DIMENSIONS",
    "max_integer_power": "NABLA_MAX_INTEGER_POWER",
    "max_repeats": "NABLA_MAX_REPEATS",
}


def _limit_detail(e: Exception) -> dict[str, Any]:
    if not isinstance(e, LimitExceeded):
        return {}
    return {"limit": SETTING_OF_LIMIT.get(e.limit, e.limit), "requested": e.value, "maximum": e.maximum}


def _limit_message(e: LimitExceeded) -> str:
    setting = SETTING_OF_LIMIT.get(e.limit)
    return f"{e}; the server's setting is {setting}" if setting else str(e)


def _where(e: Exception) -> dict[str, Any]:
    if isinstance(e, ExprError):
        return {"line": e.line, "column": e.col, "kind": e.kind}
    if isinstance(e, GraphFormatError):
        return {"node": e.node, "field": e.field}
    return {}


def _by_kind(e: Exception) -> APIError:
    """A function-format error: limits, shapes and dtypes have their own types; the rest is a bad function."""
    detail = {**_where(e), **_limit_detail(e)}
    kind = getattr(e, "kind", None)
    if isinstance(e, LimitExceeded):
        return LimitExceededError(_limit_message(e), detail)
    if kind == "limit":
        return LimitExceededError(str(e), detail)
    if isinstance(e, ShapeError) or kind == "shape":
        return ShapeMismatch(str(e), detail)
    if isinstance(e, DtypeError) or kind == "dtype":
        return DtypeMismatch(str(e), detail)
    return InvalidFunction(str(e), detail)


def _integer_input(e: IntegerInputError) -> APIError:
    """Advice an HTTP caller can follow (the engine's own message speaks of Python's astype and
    allow_int): the argument by its parameter name when the function has one, else args[k]."""
    argument = e.param or f"args[{e.argnum}]"
    where = argument
    for key in e.path:
        where = join(where, key)
    dtype = np.dtype(e.dtype).name
    out_of_argnums = "leave it out of argnums" if where == argument else f"leave {argument} out of argnums"
    return NotDifferentiable(
        f"{where} has dtype {dtype} and has no derivative: send it as JSON numbers or a float $array, "
        f"or {out_of_argnums}", {"argnum": e.argnum, "dtype": dtype, "path": where})


def _non_scalar_output(e: NonScalarOutputError) -> APIError:
    shape = [int(n) for n in e.shape]
    dtype = np.dtype(e.dtype).name
    return NotDifferentiable(
        f"the output has shape {notation(shape, dtype)}; grad needs a scalar: wrap the expression in sum(...), "
        "or use /v1/jacobian or /v1/vjp", {"shape": shape, "dtype": dtype})


def _registry_unavailable(e: Exception) -> APIError:
    seconds = getattr(e, "retry_after", 1.0)
    return retry_after(RegistryUnavailableError(
        "the model registry is not answering; retry shortly", {"retry_after_s": seconds}), seconds)


ERROR_TABLE: list[tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], APIError]]] = [
    (APIError, lambda e: e),
    (DeadlineExceeded, lambda e: ComputeTimeout(f"{e} (NABLA_COMPUTE_TIMEOUT_S)",
                                                {"limit": "NABLA_COMPUTE_TIMEOUT_S"})),
    ((ExprError, GraphFormatError), _by_kind),
    (LimitExceeded, lambda e: LimitExceededError(_limit_message(e), _limit_detail(e))),
    (ShapeError, lambda e: ShapeMismatch(str(e))),
    (DtypeError, lambda e: DtypeMismatch(str(e))),
    (IntegerInputError, _integer_input),
    (NonScalarOutputError, _non_scalar_output),
    ((DifferentiationError, ConcretizationError), lambda e: NotDifferentiable(str(e))),
    (EngineError, lambda e: ComputeError(str(e))),
    (IdempotencyConflict, lambda e: Conflict(str(e), {"header": "Idempotency-Key"})),
    (RegistryUnavailable, _registry_unavailable),
    (StoreError, _registry_unavailable),
    # LAPACK, through NumPy, refusing a matrix (a ValueError too, but worth saying what to do).
    (np.linalg.LinAlgError, lambda e: InvalidArgument(
        f"a linear-algebra routine refused a matrix: {e}. inv, solve, the derivative of slogdet and the "
        "third derivative of det need an invertible matrix, cholesky a positive-definite one, and every "
        "factorisation finite entries: send arguments away from such matrices, or regularise them "
        "(a + eps * I)",
        {"exception": "LinAlgError", "reason": str(e)})),
    # A built-in (Python) model or a NumPy routine refusing the values it was given.
    ((ValueError, TypeError, IndexError, KeyError, AttributeError),
     lambda e: InvalidArgument(f"{type(e).__name__}: {e}",
                               {"exception": type(e).__name__})),
]


def to_api_error(e: BaseException) -> APIError | None:
    """The API error for an exception, or None for a bug."""
    for types, make in ERROR_TABLE:
        if isinstance(e, types):
            return make(e)
    return None


__all__ = ["ERROR_TABLE", "InvalidRequest", "to_api_error"]
