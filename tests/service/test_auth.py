"""API keys: with NABLA_API_KEYS every /v1 route needs `Authorization: Bearer <key>`; registering and
deleting models need a key of NABLA_ADMIN_KEYS; health, metrics and docs stay open."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _service_support import assert_error, expr
from fastapi.testclient import TestClient

USER, ADMIN = "user-key-1", "admin-key-1"
COMPUTE = {"function": expr("x * 2", ["x"]), "args": [1.0]}
REGISTER = {"name": "guarded", "function": expr("x * 2", ["x"])}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_keys=f"{USER}, other-user", admin_keys=ADMIN)


def test_v1_needs_a_valid_bearer_key(keyed: TestClient) -> None:
    routes = [("post", "/v1/value", COMPUTE), ("post", "/v1/grad", COMPUTE), ("get", "/v1/ops", None),
              ("get", "/v1/models", None), ("get", "/v1/models/rosenbrock", None),
              ("post", "/v1/models/rosenbrock/grad", {"args": [[1.0, 2.0]]}),
              ("post", "/v1/shapes", {"function": expr("x", ["x"]), "args": [{"shape": []}]})]
    for method, path, body in routes:
        kwargs = {"json": body} if body is not None else {}
        response = getattr(keyed, method)(path, **kwargs)
        assert_error(response, 401, "unauthorized", "requires an API key")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(getattr(keyed, method)(path, headers=bearer("wrong"), **kwargs), 401, "unauthorized",
                     "not valid")
        assert_error(getattr(keyed, method)(path, headers={"Authorization": f"Basic {USER}"}, **kwargs), 401,
                     "unauthorized")
        for key in (USER, "other-user", ADMIN):  # an admin key is also a user key
            assert getattr(keyed, method)(path, headers=bearer(key), **kwargs).status_code == 200, (path, key)
    # the key is checked before the body is looked at
    assert_error(keyed.post("/v1/value", content=b"{not json"), 401, "unauthorized")
    assert 'nabla_errors_total{type="unauthorized"}' in keyed.get("/metrics").text


def test_register_and_delete_need_an_admin_key(keyed: TestClient) -> None:
    assert_error(keyed.post("/v1/models", json=REGISTER), 401, "unauthorized")
    assert_error(keyed.post("/v1/models", json=REGISTER, headers=bearer(USER)), 403, "forbidden", "admin key")
    assert keyed.post("/v1/models", json=REGISTER, headers=bearer(ADMIN)).status_code == 201
    assert keyed.post("/v1/models/guarded/value", json={"args": [2.0]}, headers=bearer(USER)).json()["value"] == 4.0
    assert_error(keyed.delete("/v1/models/guarded", headers=bearer(USER)), 403, "forbidden")
    assert_error(keyed.delete("/v1/models/guarded"), 401, "unauthorized")
    assert keyed.delete("/v1/models/guarded", headers=bearer(ADMIN)).status_code == 200


def test_health_metrics_and_docs_stay_open(keyed: TestClient) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_without_admin_keys_registration_is_disabled(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=USER)
    assert_error(client.post("/v1/models", json=REGISTER, headers=bearer(USER)), 403, "forbidden",
                 "no admin keys are configured")
    assert client.post("/v1/value", json=COMPUTE, headers=bearer(USER)).status_code == 200


def test_admin_keys_alone_protect_v1_too(make_client: Callable[..., TestClient]) -> None:
    client = make_client(admin_keys=ADMIN)
    assert_error(client.post("/v1/value", json=COMPUTE), 401, "unauthorized")
    assert client.post("/v1/value", json=COMPUTE, headers=bearer(ADMIN)).status_code == 200


def test_without_keys_everything_is_open(client: TestClient) -> None:
    assert client.post("/v1/value", json=COMPUTE).status_code == 200
    assert client.post("/v1/models", json=REGISTER).status_code == 201
    assert client.delete("/v1/models/guarded").status_code == 200
