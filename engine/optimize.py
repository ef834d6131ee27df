"""Graph optimisation passes (placeholder: identity until the passes land)."""

from __future__ import annotations

from engine.core import Graph


def optimize(graph: Graph) -> Graph:
    return graph
