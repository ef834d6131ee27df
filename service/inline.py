"""Computing small requests on the event loop, without the hop to a compute worker.

A compute worker (service.workers) keeps /livez and deadlines safe from any computation, but
the hop costs more CPU than a small gradient itself: a pipe transfer and a thread switch each
way. So a request is computed inline, on the event loop, only when everything it needs is known
to be cheap: its body is small (NABLA_INLINE_MAX_BODY_BYTES), its function is already resolved in
this process (no registry query), and its compiled plan is already cached here with a measured
run time under NABLA_INLINE_MAX_MS. Whatever is not yet known (a first call, a registry refresh
that is due, a plan never run here) raises `NeedsWorker`, and the request goes to a worker as
before. When a worker has answered such a request quickly, the server repeats it once in a
thread of its own (`warm`), so its function and plan are cached here for the next one: the work
that could be slow (tracing, optimising, compiling) only ever runs where it was first shown to
be fast, and never on the event loop. A plan's run time here is the slowest of its recent runs
(decaying slowly); one that looked too slow is re-measured by the worker's runs of it, which keep
answering its requests, so a single slow run (a busy core) does not keep it off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_inline: ContextVar[bool] = ContextVar("nabla_inline", default=False)


class NeedsWorker(Exception):  # noqa: N818 - a signal, not an error
    """This request cannot be answered inline; `warm` says whether repeating it off the event loop
    would let the next one be (False: its plan is cached here but too slow, or it has no plan)."""

    def __init__(self, why: str, warm: bool = True, plan: Any = None) -> None:
        super().__init__(why)
        self.warm = warm
        # a cached plan thought too slow to run inline: the worker's runs of it update that
        self.plan = plan


def inline_only() -> bool:
    """Whether the code running now must not do anything that could be slow."""
    return _inline.get()


@contextmanager
def inline() -> Iterator[None]:
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)


def needs_worker(why: str, warm: bool = True, plan: Any = None) -> None:
    """Raise NeedsWorker if running inline."""
    if _inline.get():
        raise NeedsWorker(why, warm, plan)


__all__ = ["NeedsWorker", "inline", "inline_only", "needs_worker"]
