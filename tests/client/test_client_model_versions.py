"""c.models.delete_version: one version goes, the others stay, through `Client` and `AsyncClient`
(the `api` fixture) against the real open server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from client import ConflictError, NotFoundError


def test_delete_one_version(api) -> None:
    name = f"versions_{uuid.uuid4().hex[:8]}"
    assert api.models.register(name, "sum(x ** 2)", params=["x"])["version"] == 1
    assert api.models.register(name, "sum(x ** 3)", params=["x"])["version"] == 2

    assert api.models.delete_version(name, 1) == {"name": name, "deleted_versions": 1, "version": 1}
    assert api.models.get(name)["versions"] == [2]
    np.testing.assert_allclose(api.grad(api.model(name))(np.array([1.0, 2.0])), [3.0, 12.0])
    with pytest.raises(NotFoundError):
        api.models.delete_version(name, 1)
    with pytest.raises(NotFoundError):
        api.grad(api.model(name, 1))(np.array([1.0, 2.0]))

    api.models.delete(name)
    with pytest.raises(NotFoundError):
        api.models.delete_version(name, 2)


def test_delete_version_refuses_built_ins_and_non_integers(api) -> None:
    with pytest.raises(ConflictError):
        api.models.delete_version("rosenbrock", 1)
    with pytest.raises(TypeError):
        api.models.delete_version("rosenbrock", "1")
