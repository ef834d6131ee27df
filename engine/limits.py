"""Bounds on everything a caller of the function formats controls.

Graphs and programs may come from strangers over the network. Each limit is checked before the
work it guards happens: source length and syntax depth before compiling, node counts and
attribute values while validating, and array sizes by shape inference before anything is
allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import EngineError


class LimitExceeded(EngineError, ValueError):
    """A function or its arguments exceed a configured bound."""

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

    def check(self, name: str, value: int, what: str) -> None:
        maximum = getattr(self, name)
        if value > maximum:
            raise LimitExceeded(f"{what} is {value}, over the limit of {maximum} ({name})",
                                limit=name, value=value, maximum=maximum)


DEFAULT_LIMITS = Limits()
