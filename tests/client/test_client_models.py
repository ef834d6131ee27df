"""c.models: list, get, register (expressions and Python functions, with constants) and delete,
through `Client` and `AsyncClient` (the `api` fixture), against the real open server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import engine
import engine.numpy as jnp
from client import BadRequestError, NotFoundError

BUILTINS = {"tutorial_logreg", "logistic_regression", "linear_regression", "mlp_classifier", "rosenbrock"}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_list_has_the_builtin_models(api) -> None:
    models = api.models.list()
    assert isinstance(models, list)
    by_name = {m["name"]: m for m in models}
    assert BUILTINS <= set(by_name)
    assert by_name["tutorial_logreg"]["params"] == ["W", "b"]  # inputs and targets are bound
    assert by_name["rosenbrock"]["source"] == "builtin"


def test_get_a_builtin_model(api) -> None:
    m = api.models.get("tutorial_logreg")
    assert m["name"] == "tutorial_logreg" and m["source"] == "builtin"
    assert m["params"] == ["W", "b"] and m["constants"] == ["inputs", "targets"]
    assert m["description"]


def test_register_an_expression_with_constants_then_delete(api) -> None:
    name = unique("weighted")
    w = np.array([1.0, 2.0, 3.0])
    info = api.models.register(name, "sum(w * x ** 2)", constants={"w": w}, description="weighted squares",
                               params=["w", "x"])
    assert info["name"] == name and info["version"] == 1
    assert info["params"] == ["x"] and info["constants"] == ["w"]

    got = api.models.get(name)
    assert got["source"] == "registry" and got["description"] == "weighted squares"
    assert got["params"] == ["x"] and got["constants"] == ["w"] and got["versions"] == [1]
    assert name in {m["name"] for m in api.models.list()}

    x = np.array([0.5, -1.0, 2.0], np.float32)
    g = api.grad(api.model(name))(x)
    np.testing.assert_allclose(g, 2 * w * x, rtol=1e-6)
    assert g.dtype == np.float32
    assert api.value_and_grad(api.model(name))(x)[0] == pytest.approx(float(np.sum(w * x ** 2)), rel=1e-6)

    # A second registration is version 2; version 1 stays callable.
    assert api.models.register(name, "sum(w * x ** 3)", constants={"w": w}, params=["w", "x"])["version"] == 2
    assert api.models.get(name)["versions"] == [1, 2]
    np.testing.assert_allclose(api.grad(api.model(name))(x), 3 * w * x ** 2, rtol=1e-6)
    np.testing.assert_allclose(api.grad(api.model(name, version=1))(x), 2 * w * x, rtol=1e-6)

    assert api.models.delete(name) == {"name": name, "deleted_versions": 2}
    with pytest.raises(NotFoundError):
        api.models.get(name)
    with pytest.raises(NotFoundError):
        api.grad(api.model(name))(x)
    assert name not in {m["name"] for m in api.models.list()}


def test_register_a_python_function(api) -> None:
    name = unique("pyloss")
    inputs = np.array([[0.5, 1.0], [-1.5, 0.25], [2.0, -0.5]], np.float32)

    def loss(W, b):  # `inputs` is captured: it travels as a constant of the graph
        return jnp.sum(jnp.tanh(jnp.dot(inputs, W) + b) ** 2)

    W, b = np.array([0.3, -0.2], np.float32), np.float32(0.1)
    info = api.models.register(name, loss, description="a traced loss", example_args=(W, b))
    assert info["params"] == ["W", "b"] and info["graph_nodes"] > 0
    got = api.grad(api.model(name), (0, 1))(W, b)
    for g, e in zip(got, engine.grad(loss, (0, 1))(W, b), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5)
    assert api.models.get(name)["function"]["graph"]["format"] == "nabla.graph/1"
    api.models.delete(name)


def test_register_a_python_function_with_constants(api) -> None:
    """Constants bind the Python function's parameters by name."""
    name = unique("pyconst")

    def model(W, b, inputs, targets):
        return jnp.mean((jnp.dot(inputs, W) + b - targets) ** 2)

    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], np.float32)
    t = np.array([1.0, -1.0, 0.0], np.float32)
    W, b = np.array([0.2, 0.4], np.float32), np.float32(-0.3)
    info = api.models.register(name, model, constants={"inputs": X, "targets": t}, example_args=(W, b, X, t))
    assert info["params"] == ["W", "b"] and info["constants"] == ["inputs", "targets"]
    got = api.value_and_grad(api.model(name), (0, 1))(W, b)
    expected = engine.value_and_grad(model, (0, 1))(W, b, X, t)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(got[1][0], expected[1][0], rtol=1e-5)
    np.testing.assert_allclose(got[1][1], expected[1][1], rtol=1e-5)
    api.models.delete(name)


def test_register_refuses_what_cannot_be_a_model(api) -> None:
    with pytest.raises(TypeError, match="example_args"):
        api.models.register(unique("m"), lambda x: jnp.sum(x))
    with pytest.raises(TypeError, match="model"):
        api.models.register(unique("m"), api.model("rosenbrock"))
    with pytest.raises(BadRequestError) as info:
        api.models.register(unique("m"), "sum(x)", constants={"nope": 1.0}, params=["x"])
    assert info.value.status_code == 400 and "nope" in info.value.message
    with pytest.raises(BadRequestError):
        api.models.register("bad name!", "sum(x)", params=["x"])


def test_listing_follows_every_page() -> None:
    """c.models.list() returns the whole registry, however many pages the server splits it into."""
    import httpx

    from client import Client

    pages = {None: {"models": [{"name": "a"}, {"name": "b"}], "next_cursor": "b"},
             "b": {"models": [{"name": "c"}], "next_cursor": None}}
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        seen.append(cursor)
        return httpx.Response(200, json=pages[cursor])

    with Client("http://nabla.test", transport=httpx.MockTransport(answer)) as c:
        assert [m["name"] for m in c.models.list()] == ["a", "b", "c"]
    assert seen == [None, "b"]
