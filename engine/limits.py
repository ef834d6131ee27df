"""Bounds on everything a caller of the function formats controls.

Graphs and programs may come from strangers over the network. Each limit is checked before the
work it guards happens: source length and syntax depth before compiling, node counts and
attribute values while validating, and array sizes by shape inference before anything is
allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import EngineError


class LimitExceeded(EngineError, ValueError):
    """A function or its arguments exceed a configured bound.

    Every limit the engine enforces raises an instance of this class (the function formats raise
    subclasses that also say where: `engine.ExprError` with a line and column,
    `engine.GraphFormatError` with a node id or field). `limit` is the name of the bound (a field
    of `Limits`), `value` what was asked for, `maximum` the bound.
    """

    def __init__(self, message: str, *, limit: str, value: int, maximum: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum


@dataclass(frozen=True)
class Limits:
    max_source_chars: int = 20_000
    max_nodes: int = 10_000
    max_depth: int = 64  # nesting of expressions and of JSON values
    max_constant_elements: int = 1_000_000
    max_array_elements: int = 10_000_000  # any single intermediate
    max_integer_power: int = 1_000
    max_repeats: int = 100_000
    max_dimensions: int = 32  # of any shape; NumPy itself stops at 64

    def check(self, name: str, value: int, what: str, error: type[LimitExceeded] = LimitExceeded,
              **where: Any) -> None:
        """Raise `error` (LimitExceeded or a subclass, given `where`'s extra fields) if value > the limit."""
        maximum = getattr(self, name)
        if value > maximum:
            raise error(f"{what} is {value}, over the limit of {maximum} ({name})",
                        limit=name, value=value, maximum=maximum, **where)

    def check_shape(self, dims: tuple[int, ...], what: str, error: type[LimitExceeded] = LimitExceeded,
                    **where: Any) -> None:
        """Bound a shape of non-negative integers: its number of dimensions, and the product of its
        non-zero dimensions (a zero-size array with a dimension of 2**62 is refused too)."""
        self.check("max_dimensions", len(dims), f"{what}: the number of dimensions", error, **where)
        size = 1
        for n in dims:  # exact, in Python integers: np.prod in int64 wraps around
            size *= n or 1
        self.check("max_array_elements", size, f"{what}: the product of the non-zero dimensions", error, **where)


DEFAULT_LIMITS = Limits()
