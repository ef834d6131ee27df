"""engine.scipy: the parts of jax.scipy the engine offers."""

from engine.scipy import special, stats  # noqa: F401
