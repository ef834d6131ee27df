"""Nabla's HTTP service: the engine's transforms over JSON, with a persistent model registry."""

__version__ = "0.1.0"
