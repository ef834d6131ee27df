"""Global switches with JAX's names, read by the engine at trace and run time."""

from __future__ import annotations

from typing import Any


class Config:
    """`engine.config.update(name, value)` mirrors `jax.config.update`."""

    _defaults: dict[str, Any] = {
        # Python floats and float64 NumPy arrays become float32 unless this is on.
        "jax_enable_x64": False,
        # False selects JAX's original split/sampling scheme, which the tutorial's numbers use.
        "jax_threefry_partitionable": False,
    }

    def __init__(self) -> None:
        self._values = dict(self._defaults)

    def update(self, name: str, value: Any) -> None:
        if name not in self._values:
            known = ", ".join(sorted(self._values))
            raise AttributeError(f"unknown configuration option {name!r}; known options: {known}")
        self._values[name] = bool(value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"unknown configuration option {name!r}") from None


config = Config()
