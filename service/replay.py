"""Replays: a compute request shaped like an earlier one skips what the earlier one settled.

Callers compute in loops: the same model, transform and options, new numbers each time. Every
part of answering such a request except converting its numbers and running the plan was decided
by the first one: validating the body, reading its options, resolving the function, checking
its arguments' types against the model's schema, the plan's cache key and admission. Those take
most of a small request's time (about 60 of its 90 µs for the tutorial's gradient), so after a
request is answered in full, `Replays.record` keeps what it settled as a `Replay`, under the
request's *skeleton*: the route (transform, model), the answer's media type, and every field of
the body but `args`, written canonically (sorted keys). The next request with that skeleton is
answered by `Replay.outcome`, which only converts each argument and runs the cached plan.

Why a replay's answer is the full path's, bit for bit. A replay is recorded only when every
argument was a non-empty rectangular list of JSON numbers (or one number) that NumPy reads as
float64 or int64, decoded to exactly one array. For such a value the full path
(service.json_trees) computes `as_dtype(np.asarray(value), dtype)`, and a model's schema then
checks its shape and dtype kind only (service.model_schema.conform). A replay requires each new
argument to read as the same NumPy dtype and shape, then calls the same `as_dtype` with the same
dtype: the numbers convert exactly as in the full path, and every check that depends on shapes
and dtypes alone (the schema's, dimension names bound across arguments, element and depth
budgets, admission of the plan's inputs and answer) has the answer it had for the recorded
request. Everything else in the body is the same by construction (it is the key). Anything that
differs, or any argument NumPy reads otherwise (booleans alone, strings such as "NaN", nulls,
ragged lists, integers beyond 64 bits), finds no replay or makes `outcome` return None, and the
full path answers (and reports errors) as it always does. The function is resolved again on
every replay and must be the very object recorded: a model registered again, deleted or changed
in another process is never answered from an old replay. The plan is looked up in the plan cache
each time, so the cache's bounds and hit counts are unchanged. tests/service/test_replay.py
compares replayed answers with full-path answers on random bodies.

Only JSON bodies of the transforms whose only data field is `args` (value, grad, value_and_grad,
jacobian, hessian) without `in_axes` are replayed: tangents, cotangents and vectors are arrays of
their own, and MessagePack bodies carry bytes. At most `MAX_REPLAYS` skeletons of at most
`MAX_SKELETON_BYTES` each are kept, least recently used dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.compute import Options, Outcome, PlanCache, run_cached
from service.errors import APIError
from service.functions import Function
from service.json_trees import CHUNK_ELEMENTS, as_dtype

MAX_REPLAYS = 256
MAX_SKELETON_BYTES = 4096
# The transforms whose request carries no array but `args`.
REPLAYED_TRANSFORMS = frozenset({"value", "grad", "value_and_grad", "jacobian", "hessian"})
# What NumPy may read a replayed argument as: JSON numbers, floats or integers.
_READ_AS = frozenset({np.dtype("float64"), np.dtype("int64")})


@dataclass(frozen=True)
class ArgumentForm:
    """What the recorded request's argument was: NumPy read it as `read_as` with `shape`, and it
    was decoded to `dtype`."""

    read_as: np.dtype
    shape: tuple[int, ...]
    dtype: np.dtype
    where: str  # its path in the request, for as_dtype's errors


@dataclass(frozen=True)
class Replay:
    """What a request settled, for the next request of the same skeleton."""

    spec: Any  # the function spec it resolved
    function: Function
    opts: Options
    arguments: tuple[ArgumentForm, ...]
    plan_key: tuple
    encoding: str  # the answer's encoding, as admission counted it
    dtype: str  # the answer's meta.dtype
    answer_encoding: str  # the request's `encoding` field

    def outcome(self, args: list[Any], resolve: Callable[[Any], Function], plans: PlanCache,
                inline_max_s: float) -> Outcome | None:
        """The answer for new argument values, or None when the full path must answer."""
        if resolve(self.spec) is not self.function:
            return None
        values = []
        for value, form in zip(args, self.arguments):
            try:
                read = np.asarray(value)
            except (ValueError, TypeError, OverflowError):
                return None
            if read.dtype != form.read_as or read.shape != form.shape:
                return None
            try:
                values.append(as_dtype(read, form.dtype, form.where))
            except APIError:
                return None  # the full path reports it, in its own words
        return run_cached(self.plan_key, values, self.opts, plans=plans, encoding=self.encoding,
                          inline_max_s=inline_max_s)


def skeleton(transform: str, model: str | None, accept: str, body: Any) -> tuple | None:
    """The key of a body's replay: everything but the argument values; None when the body cannot
    have one (so that a body of tangents or vectors is never written out again for nothing)."""
    if transform not in REPLAYED_TRANSFORMS or type(body) is not dict or "in_axes" in body:
        return None
    args = body.get("args")
    if type(args) is not list:
        return None
    rest = {k: v for k, v in body.items() if k != "args"}
    try:
        fields = orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return None
    if len(fields) > MAX_SKELETON_BYTES:
        return None
    return transform, model, accept, fields, len(args)


def argument_form(value: Any, decoded: Any, where: str) -> ArgumentForm | None:
    """How a replay reads an argument like `value`, or None when it cannot: the value must be
    numbers NumPy reads as float64 or int64, decoded to one array exactly as `as_dtype` does."""
    if not isinstance(decoded, np.ndarray):
        return None
    try:
        read = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if read.dtype not in _READ_AS or read.shape != decoded.shape or not 0 < read.size <= CHUNK_ELEMENTS:
        return None
    try:
        again = as_dtype(read, decoded.dtype, where)
    except APIError:
        return None
    if again.dtype != decoded.dtype or again.tobytes() != decoded.tobytes():
        return None  # not what the full path made of it: never replay this form
    return ArgumentForm(read.dtype, read.shape, decoded.dtype, where)


class Replays:
    """Replays by skeleton, least recently used dropped first (shared by a process's threads)."""

    def __init__(self, size: int = MAX_REPLAYS) -> None:
        self.size = size
        self._replays: OrderedDict[tuple, Replay] = OrderedDict()
        self._lock = threading.Lock()

    def find(self, key: tuple | None) -> Replay | None:
        if key is None:
            return None
        with self._lock:
            replay = self._replays.get(key)
            if replay is not None:
                self._replays.move_to_end(key)
            return replay

    def record(self, key: tuple | None, replay: Replay) -> None:
        if key is None or not self.size:
            return
        with self._lock:
            self._replays[key] = replay
            self._replays.move_to_end(key)
            while len(self._replays) > self.size:
                self._replays.popitem(last=False)

    def forget(self, key: tuple | None) -> None:
        if key is None:
            return
        with self._lock:
            self._replays.pop(key, None)

    def __len__(self) -> int:
        return len(self._replays)
