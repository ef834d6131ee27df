"""engine.scipy.stats: the distributions of jax.scipy.stats the engine offers, each a module with
JAX's functions and signatures (norm.logpdf(x, loc=0, scale=1), ...)."""

from engine.scipy.stats import beta, gamma, multivariate_normal, norm, poisson, t  # noqa: F401
