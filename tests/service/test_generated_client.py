"""The OpenAPI document is enough for a client generator nobody here wrote: openapi-python-client
generates a package from a running server's /openapi.json without a warning, and that package
computes a gradient, a Hessian and a model by name, and registers a model, with typed answers."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tmp_path_factory.mktemp("generated")


def test_a_generated_client_computes_and_registers(start_server: Callable[..., Any], generated: Path) -> None:
    server = start_server({})
    spec = generated / "openapi.json"
    spec.write_bytes(httpx.get(server.url + "/openapi.json").content)
    result = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
                             "--output-path", str(generated / "nabla_api"), "--meta", "none"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr

    sys.path.insert(0, str(generated))
    try:
        api = importlib.import_module("nabla_api")
        compute = importlib.import_module("nabla_api.api.compute")
        models_api = importlib.import_module("nabla_api.api.models")
        m = importlib.import_module("nabla_api.models")
        for name in ("grad", "hessian", "model_value", "model_grad"):
            importlib.import_module(f"nabla_api.api.compute.{name}")
        for name in ("register_model", "get_model"):
            importlib.import_module(f"nabla_api.api.models.{name}")
        client = api.Client(base_url=server.url)

        body = m.GradRequest.from_dict({"function": {"expr": "sum(sin(x) * x ** 2)", "params": ["x"]},
                                        "args": [[0.5, 1.5]]})
        answer = compute.grad.sync(client=client, body=body)
        assert isinstance(answer, m.GradResponse), answer
        x = np.array([0.5, 1.5])
        np.testing.assert_allclose(answer.grad, np.cos(x) * x**2 + 2 * x * np.sin(x), rtol=1e-13)
        assert answer.meta.transform == "grad" and answer.meta.dtype == "float64"

        hessian = compute.hessian.sync(client=client, body=m.HessianRequest.from_dict(
            {"function": {"model": "rosenbrock"}, "args": [[1.0, 1.0]]}))
        assert isinstance(hessian, m.HessianResponse)
        np.testing.assert_allclose(hessian.hessian, [[802.0, -400.0], [-400.0, 200.0]])

        value = compute.model_value.sync("rosenbrock", client=client,
                                         body=m.ModelValueRequest.from_dict({"args": [[1.0, 1.0, 1.0]]}))
        assert isinstance(value, m.ValueResponse) and value.value == 0.0
        assert value.meta.model.name == "rosenbrock"

        registered = models_api.register_model.sync(client=client, body=m.RegisterRequest.from_dict(
            {"name": "generated_quad", "function": {"expr": "sum(a * x ** 2)", "params": ["x", "a"]},
             "constants": {"a": 3.0}, "example_args": [[1.0, 2.0]]}))
        assert isinstance(registered, m.Registered), registered
        assert registered.version == 1 and registered.signature == "x: f64[2]"
        grad = compute.model_grad.sync("generated_quad", client=client,
                                       body=m.ModelGradRequest.from_dict({"args": [[1.0, 2.0]]}))
        assert isinstance(grad, m.GradResponse) and grad.grad == [6.0, 12.0]
        info = models_api.get_model.sync("generated_quad", client=client)
        assert isinstance(info, m.ModelInfo) and info.latest == 1 and info.params == ["x"]

        error = compute.grad.sync(client=client, body=m.GradRequest.from_dict(
            {"function": {"expr": "x +", "params": ["x"]}, "args": [1.0]}))
        assert isinstance(error, m.ErrorResponse) and error.error.type_ == "invalid_function"
    finally:
        sys.path.remove(str(generated))
        for module in [k for k in sys.modules if k == "nabla_api" or k.startswith("nabla_api.")]:
            del sys.modules[module]
