"""Replays (service.replay): a compute request shaped like an earlier one skips what the earlier
one settled, and is answered exactly as the full path answers it.

The specification is the full path: on random bodies of every kind (numbers of each JSON kind,
booleans, strings, nulls, ragged and mis-shaped lists, numbers beyond float32 or int64), a
pipeline with replays gives the same status and the same bytes (but for the elapsed time) as a
pipeline without them. The other tests pin that replays are used, and never outlive the model,
plan or limits they were recorded under.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import pipeline as pipeline_module
from service import replay
from service.inline import NeedsWorker, inline
from service.pipeline import Call, Pipeline, Reply
from service.replay import Replays
from service.settings import Settings

TUTORIAL = "tutorial_logreg"  # W float32[3], b float32[]
LOGREG = "logistic_regression"  # W [d], b [], inputs [n, d], targets [n]; float64
EXPRESSION = {"expr": "sum(x * y) + sum(x ** 2)", "params": ["x", "y"]}


def compute(p: Pipeline, transform: str, body: dict[str, Any], model: str | None = None) -> Reply:
    # the standard library writes integers of any size (orjson stops at 64 bits)
    return p.handle(Call("compute", json.dumps(body).encode(), transform=transform, model=model, request_id="r"))


def comparable(reply: Reply) -> tuple[int, Any]:
    """Status and answer, without the one field that differs between two runs (the time)."""
    answer = orjson.loads(reply.body)
    if isinstance(answer, dict) and "meta" in answer:
        answer["meta"].pop("elapsed_ms")
    return reply.status, answer


@pytest.fixture
def pipelines(make_settings: Callable[..., Settings]) -> tuple[Pipeline, Pipeline]:
    """(with replays, without): each has answered one request of every route the tests use."""
    with_replays, without = Pipeline(make_settings()), Pipeline(make_settings())
    without.replays = Replays(0)
    for p in (with_replays, without):
        for transform, body, model in PRIMING:
            assert compute(p, transform, body, model).status == 200
    return with_replays, without


PRIMING = [
    ("grad", {"args": [[0.1, 0.2, 0.3], 0.5], "argnums": [0, 1]}, TUTORIAL),
    ("value_and_grad", {"args": [[0.5, -1.0], 0.25, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [1.0, 0.0, 1.0]]}, LOGREG),
    ("hessian", {"args": [[1.0, 2.0], [3.0, 4.0]], "function": EXPRESSION}, None),
    ("jacobian", {"args": [[1.0, 2.0], [3.0, 4.0]], "function": EXPRESSION, "argnums": 1}, None),
    ("value", {"args": [[1, 2], [3, 4]], "function": EXPRESSION}, None),
]

# Leaves of every kind a caller may send where numbers are expected.
_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=-4.0, max_value=4.0),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([3.5e38, -3.5e38, 1e39, 2**63, -(2**63), 2**63 - 1, 2**64]),
)
_odd = st.sampled_from([True, False, None, "NaN", "Infinity", "-Infinity", "1.5", {"a": 1.0}, [], [[1.0]]])
_leaf = st.one_of(_numbers, _numbers, _numbers, _odd)


def _vector(length: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(_numbers, min_size=length, max_size=length),  # the recorded form, most often
        st.lists(_numbers, min_size=length, max_size=length),
        st.lists(_leaf, min_size=length, max_size=length),  # anything in any place
        st.lists(_numbers, min_size=0, max_size=length + 2),  # any length
        _leaf,
    )


def _matrix(rows: int, cols: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(_vector(cols), min_size=rows, max_size=rows),
                     st.lists(_vector(cols), min_size=1, max_size=rows + 1), _leaf)


_scalar = st.one_of(_numbers, _numbers, _leaf, st.lists(_numbers, max_size=2))
_BODIES = st.one_of(
    st.tuples(st.just(("grad", TUTORIAL, {"argnums": [0, 1]})), st.tuples(_vector(3), _scalar)),
    st.tuples(st.just(("value_and_grad", LOGREG, {})), st.tuples(_vector(2), _scalar, _matrix(3, 2), _vector(3))),
    st.tuples(st.just(("hessian", None, {"function": EXPRESSION})), st.tuples(_vector(2), _vector(2))),
    st.tuples(st.just(("jacobian", None, {"function": EXPRESSION, "argnums": 1})), st.tuples(_vector(2), _vector(2))),
    st.tuples(st.just(("value", None, {"function": EXPRESSION})), st.tuples(_vector(2), _vector(2))),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_BODIES)
def test_a_replayed_answer_is_the_full_paths_answer_for_any_body(pipelines: tuple[Pipeline, Pipeline],
                                                                  case: Any) -> None:
    (transform, model, fields), args = case
    body = {**fields, "args": list(args)}
    with_replays, without = pipelines
    replayed = comparable(compute(with_replays, transform, body, model))
    assert replayed == comparable(compute(without, transform, body, model))


def test_a_request_with_new_numbers_is_replayed_without_validating_again(
        pipelines: tuple[Pipeline, Pipeline], monkeypatch: pytest.MonkeyPatch) -> None:
    with_replays, without = pipelines
    validated = []
    full_validate = pipeline_module.validate
    monkeypatch.setattr(pipeline_module, "validate", lambda *a: validated.append(a[2]) or full_validate(*a))

    body = {"args": [[0.7, -0.2, 1.3], -0.5], "argnums": [0, 1]}
    assert comparable(compute(with_replays, "grad", body, TUTORIAL)) == comparable(compute(without, "grad", body,
                                                                                          TUTORIAL))
    assert validated == ["grad"]  # by the pipeline without replays only
    # integers where floats were recorded are read as another dtype: the full path answers
    assert compute(with_replays, "grad", {"args": [[1, 2, 3], 0], "argnums": [0, 1]}, TUTORIAL).status == 200
    assert validated == ["grad", "grad"]


def test_the_answer_keeps_the_papers_digits(pipelines: tuple[Pipeline, Pipeline]) -> None:
    """The tutorial's W and b through a replay (float32 throughout, as in JAX)."""
    with_replays, _ = pipelines
    body = {"args": [[0.1, 0.2, 0.3], 0.5], "argnums": [0, 1]}
    first, second = (orjson.loads(compute(with_replays, "grad", body, TUTORIAL).body) for _ in range(2))
    assert first["grad"] == second["grad"]
    assert second["meta"]["cache_hit"] is True and second["meta"]["dtype"] == "float32"
    assert second["meta"]["model"] == {"name": TUTORIAL, "version": 1}


def test_a_model_registered_again_is_never_answered_by_the_old_replay(make_settings: Callable[..., Settings]) -> None:
    p = Pipeline(make_settings())

    def register(expr: str) -> None:
        body = {"name": "scaled", "function": {"expr": expr, "params": ["x"]}}
        assert p.handle(Call("register", orjson.dumps(body), request_id="r")).status in (200, 201)

    register("sum(2 * x)")
    for _ in range(2):
        answer = orjson.loads(compute(p, "grad", {"args": [[1.0, 2.0]]}, "scaled").body)
        assert answer["grad"] == [2.0, 2.0]
    register("sum(3 * x)")
    answer = orjson.loads(compute(p, "grad", {"args": [[1.0, 2.0]]}, "scaled").body)
    assert answer["grad"] == [3.0, 3.0] and answer["meta"]["model"]["version"] == 2
    assert p.handle(Call("delete_model", model="scaled", request_id="r")).status == 200
    assert compute(p, "grad", {"args": [[1.0, 2.0]]}, "scaled").status == 404


def test_an_evicted_plan_is_built_again_by_the_full_path(make_settings: Callable[..., Settings]) -> None:
    p = Pipeline(make_settings(plan_cache_size=1))
    f = {"function": {"expr": "sum(sin(x))", "params": ["x"]}}
    g = {"function": {"expr": "sum(cos(x))", "params": ["x"]}}
    assert compute(p, "grad", {**f, "args": [[0.0, 1.0]]}).status == 200
    assert compute(p, "grad", {**g, "args": [[0.0, 1.0]]}).status == 200  # evicts f's plan
    answer = orjson.loads(compute(p, "grad", {**f, "args": [[0.0, 0.5]]}).body)
    assert answer["meta"]["cache_hit"] is False
    assert answer["grad"] == [1.0, pytest.approx(0.8775825618903728, abs=0)]


def test_a_slow_plan_still_goes_to_a_worker_when_replayed(make_settings: Callable[..., Settings]) -> None:
    p = Pipeline(make_settings())
    body = {"args": [[0.1, 0.2, 0.3], 0.5], "argnums": [0, 1]}
    for _ in range(2):
        assert compute(p, "grad", body, TUTORIAL).status == 200
    (plan,) = p.plans._plans.values()
    plan.run_s = 1.0  # as if its runs took a second
    with inline(), pytest.raises(NeedsWorker) as raised:
        p.compute("grad", orjson.dumps(body), TUTORIAL)
    assert raised.value.plan is plan


def test_replays_are_bounded_and_skip_bodies_they_cannot_replay(make_settings: Callable[..., Settings]) -> None:
    p = Pipeline(make_settings())
    p.replays = Replays(3)
    for k in range(5):
        body = {"function": {"expr": f"sum(x * {k + 1})", "params": ["x"]}, "args": [[1.0, 2.0]]}
        assert compute(p, "grad", body).status == 200
    assert len(p.replays) == 3
    # a pytree argument, booleans and tangents are left to the full path
    def f(expr: str) -> dict[str, Any]:
        return {"function": {"expr": expr, "params": ["x"]}}

    assert compute(p, "grad", {**f("x['a'] ** 2"), "args": [{"a": 1.0}]}).status == 200
    assert compute(p, "value", {**f("x * 1.0"), "args": [[True, False]]}).status == 200
    assert compute(p, "jvp", {**f("sum(x ** 2)"), "args": [[1.0]], "tangents": [[1.0]]}).status == 200
    assert len(p.replays) == 3


def test_the_skeleton_is_every_field_but_the_numbers() -> None:
    a = replay.skeleton("grad", "m", "application/json", {"argnums": [0, 1], "args": [[1.0], 2.0]})
    b = replay.skeleton("grad", "m", "application/json", {"args": [[5.0], 7.0], "argnums": [0, 1]})
    c = replay.skeleton("grad", "m", "application/json", {"args": [[5.0], 7.0], "argnums": [1, 0]})
    d = replay.skeleton("grad", "m", "application/msgpack", {"args": [[5.0], 7.0], "argnums": [0, 1]})
    assert a == b and a != c and a != d
    assert replay.skeleton("grad", "m", "application/json", {"args": {"x": 1.0}}) is None
    assert replay.skeleton("grad", "m", "application/json", [1.0]) is None
