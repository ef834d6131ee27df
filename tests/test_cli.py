"""The `nabla` command line: derivatives of expressions computed locally and by a real server
(the same output either way), the model commands, errors and exit statuses, and `nabla serve`.

Commands run in-process through click's CliRunner; the server is `python -m service.cli serve` in
a subprocess (API keys configured, so --api-key and NABLA_API_KEY are exercised too).
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from service import cli_format as F
from service.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
USER_KEY = "cli-user-key"
ADMIN_KEY = "cli-admin-key"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_module: Any) -> Iterator[str]:
    """`nabla serve` on a free loopback port, with a user key and an admin key; its URL."""
    with serve_module(tmp_path_factory.mktemp("cli-server"),
                      {"NABLA_API_KEYS": USER_KEY, "NABLA_ADMIN_KEYS": ADMIN_KEY}) as running:
        yield running.url


@pytest.fixture(autouse=True)
def _no_nabla_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's NABLA_BASE_URL or key must not turn local runs into remote ones."""
    monkeypatch.delenv("NABLA_BASE_URL", raising=False)
    monkeypatch.delenv("NABLA_API_KEY", raising=False)


def nabla(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:  # noqa: A002
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def ok(*args: str, **kwargs: Any) -> str:
    result = nabla(*args, **kwargs)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def as_json(*args: str, **kwargs: Any) -> Any:
    return json.loads(ok(*args, "--json", **kwargs))


def remote(url: str, key: str = ADMIN_KEY) -> dict[str, str]:
    return {"NABLA_BASE_URL": url, "NABLA_API_KEY": key}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- version and serve


def test_version() -> None:
    assert ok("--version") == f"nabla {dist_version('nabla')}\n"
    assert main(["--version"]) == 0


def test_serve_help_still_works() -> None:
    out = ok("serve", "--help")
    assert "--host" in out and "--port" in out and "--workers" in out
    assert main(["serve", "--help"]) == 0


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.server

    seen = []
    monkeypatch.setattr(service.server, "serve", seen.append)
    # Set first, so the values the command writes into os.environ are undone after the test.
    monkeypatch.setenv("NABLA_HOST", "0.0.0.0")
    monkeypatch.setenv("NABLA_PORT", "1111")
    monkeypatch.setenv("NABLA_WORKERS", "3")
    ok("serve", "--port", "2222", "--workers", "2")
    (settings,) = seen
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 2222, 2)


def test_usage_errors_exit_2() -> None:
    assert main(["no-such-command"]) == 2
    result = nabla("grad")
    assert result.exit_code == 2 and "Missing argument 'EXPR'" in result.stderr


# ----------------------------------------------------------------------------- local results


def test_grad_of_a_sum_of_squares() -> None:
    assert ok("grad", "sum(x ** 2)", "--param", "x=[1,2]") == "x: f64[2] [2.0 4.0]\n"
    assert as_json("grad", "sum(x ** 2)", "--param", "x=[1,2]") == {"grad": [2.0, 4.0]}


def test_hessian_of_a_sum_of_cubes_is_diagonal() -> None:
    assert as_json("hessian", "sum(x ** 3)", "--param", "x=[1,2]") == {"hessian": [[6.0, 0.0], [0.0, 12.0]]}
    assert ok("hessian", "sum(x ** 3)", "--param", "x=[1,2]") == "x, x: f64[2,2]\n  [[ 6.0  0.0]\n   [ 0.0 12.0]]\n"


def test_check_passes_and_prints_one_line_per_order_and_mode() -> None:
    out = ok("check", "sum(sin(x) * x ** 2)", "--param", "x=[0.5,1.5]")
    lines = out.splitlines()
    assert [line.split("  ")[:3] for line in lines[:4]] == [
        ["order 1", "fwd (jvp)", "pass"], ["order 2", "fwd (jvp)", "pass"],
        ["order 1", "rev (vjp)", "pass"], ["order 2", "rev (vjp)", "pass"]]
    assert "max abs error" in lines[0] and "atol 1e-05" in lines[0]
    assert lines[4].startswith("passed")
    report = as_json("check", "sum(sin(x) * x ** 2)", "--param", "x=[0.5,1.5]", "--order", "1", "--modes", "rev")
    assert report["check"]["passed"] and [(r["order"], r["mode"]) for r in report["check"]["results"]] == [(1, "rev")]


def test_check_fails_with_exit_status_1() -> None:
    # stop_gradient hides half the derivative: autodiff says x, finite differences 2x.
    result = nabla("check", "sum(stop_gradient(x) * x)", "--param", "x=[1,2]")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and result.stdout.splitlines()[-1].startswith("FAILED: 4 of 4")
    assert nabla("check", "sum(stop_gradient(x) * x)", "--param", "x=[1,2]", "--json").exit_code == 1


def test_jacobian_matches_the_closed_form_in_both_modes() -> None:
    A, x = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.1, 0.2])
    expected = (1 - np.tanh(A @ x) ** 2)[:, None] * A
    for mode in ("rev", "fwd"):
        got = as_json("jacobian", "tanh(A @ x)", "--param", f"A={A.tolist()}", "--param", f"x={x.tolist()}",
                      "--argnums", "x", "--mode", mode)["jacobian"]
        np.testing.assert_allclose(got, expected, rtol=1e-14)


def test_higher_order_grad_is_float64_by_default() -> None:
    t = np.tanh(2.0)
    third = (1 - t * t) * (6 * t * t - 2)  # d3/dx3 tanh
    out = ok("grad", "tanh(x)", "--param", "x=2.0", "--order", "3")
    assert out.startswith("x: f64[] ")
    assert float(out.split()[-1]) == pytest.approx(third, rel=1e-13)


def test_every_digit_that_matters_is_printed() -> None:
    x = [0.5, -1.0, 2.0]
    got = as_json("grad", "sum(tanh(x) ** 2)", "--param", f"x={x}")["grad"]
    np.testing.assert_allclose(got, 2 * np.tanh(x) * (1 - np.tanh(x) ** 2), rtol=1e-15)
    pretty = ok("grad", "sum(tanh(x) ** 2)", "--param", f"x={x}")
    assert all(repr(v) in pretty for v in got)  # the shortest digits that read back to the same double
    assert ok("value", "x / 3", "--param", "x=1") == "f64[] 0.3333333333333333\n"
    assert ok("value", "x / 3", "--param", "x=1", "--dtype", "float32") == "f32[] 0.33333334\n"


def test_argnums_by_position_or_name_and_the_params_order() -> None:
    out = ok("grad", "sum(x * y)", "--param", "x=[1,2]", "--param", "y=[3,4]", "--argnums", "y,x")
    assert out == "y: f64[2] [1.0 2.0]\nx: f64[2] [3.0 4.0]\n"
    assert as_json("grad", "sum(x * y)", "--param", "x=[1,2]", "--param", "y=[3,4]", "--argnums", "0,1") == \
        {"grad": [[3.0, 4.0], [1.0, 2.0]]}
    # --params y,x makes y argument 0: d/dy sum(x * y ** 2) = 2xy
    assert as_json("grad", "sum(x * y ** 2)", "--params", "y,x", "--param", "x=[1,2]", "--param", "y=[3,4]") == \
        {"grad": [6.0, 16.0]}


def test_hessian_blocks_are_labelled_by_parameter() -> None:
    out = ok("hessian", "sum(x ** 2) * y", "--param", "x=[1,2]", "--param", "y=3", "--argnums", "0,1")
    assert "x, x: f64[2,2]" in out and "x, y: f64[2] [2.0 4.0]" in out and "y, x: f64[2] [2.0 4.0]" in out
    assert "y, y: f64[] 0.0" in out


def test_pytree_outputs_are_shown_with_their_paths() -> None:
    assert ok("value", "(sum(x), x * 2)", "--param", "x=[1,2]") == "[0]: f64[] 3.0\n[1]: f64[2] [2.0 4.0]\n"


def test_pytree_labels_of_derivatives() -> None:
    W = {"a": np.zeros(2), "b": np.zeros(())}
    g = {"a": np.array([1.0, 2.0]), "b": np.array(3.0)}
    parts = F.derivative_parts(g, [W], ["W"], 0, 1)
    assert [label for label, _ in parts] == ["W['a']", "W['b']"]
    text = F.format_parts(parts)
    assert text == "W['a']: f64[2] [1.0 2.0]\nW['b']: f64[] 3.0"
    hess = ((np.eye(2), np.ones(2)), (np.ones(2), np.array(0.0)))
    assert [label for label, _ in F.derivative_parts(hess, [np.zeros(2), np.zeros(())], ["x", "y"], (0, 1), 2)] == \
        ["x, x", "x, y", "y, x", "y, y"]
    # A result that is not shaped like the arguments falls back to plain paths.
    assert [label for label, _ in F.derivative_parts([np.ones(2), np.ones(2)], [np.zeros(2)], ["x"], 0, 1)] == \
        ["[0]", "[1]"]


def test_nan_and_infinity_as_the_api_spells_them() -> None:
    assert as_json("value", "log(x)", "--param", "x=[1, 0, -1]") == {"value": [0.0, "-Infinity", "NaN"]}


# ----------------------------------------------------------------------------- local errors


def test_an_invalid_expression_exits_2_with_line_and_column() -> None:
    result = nabla("value", "sum(x.T)", "--param", "x=[1]")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: [422 invalid_function] line 1, column 5: attribute access is not "
                                     "allowed in an expression")
    result = nabla("grad", "y = x * 2\nsum(y) + open(y)", "--param", "x=[1]")
    assert result.exit_code == 2 and "line 2, column 10" in result.stderr
    assert "Traceback" not in result.output


def test_bad_parameters_are_usage_errors() -> None:
    result = nabla("value", "x", "--param", "x=[1,2")
    assert result.exit_code == 2 and "not valid JSON" in result.stderr
    assert nabla("value", "x", "--param", "x").exit_code == 2
    assert nabla("value", "x", "--param", "x=1", "--param", "x=2").exit_code == 2
    result = nabla("value", "x + y", "--params", "x,y", "--param", "x=1")
    assert result.exit_code == 2 and "['y']" in result.stderr
    result = nabla("grad", "sum(x)", "--param", "x=[1]", "--argnums", "z")
    assert result.exit_code == 2 and "--argnums" in result.stderr
    result = nabla("grad", "sum(x)", "--param", "x=[1]", "--argnums", "3")
    assert result.exit_code == 2 and "[400 invalid_request] argnums 3 is out of range" in result.stderr
    result = nabla("value", "x", "--param", 'x=["a"]')
    assert result.exit_code == 2 and "[422 invalid_argument]" in result.stderr


def test_a_failed_computation_exits_1() -> None:
    result = nabla("value", "x @ y", "--param", "x=[1,2]", "--param", "y=[1,2,3]")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: [422 shape_error] line 1, column 1: matmul: the contracted dimensions")
    result = nabla("grad", "x * 2", "--param", "x=[1,2]")
    assert result.exit_code == 1 and "[422 not_differentiable]" in result.stderr
    result = nabla("grad", "sum(x)", "--param", "x=[1]", "--order", "9")
    assert result.exit_code == 1 and "[413 limit_exceeded]" in result.stderr and "NABLA_MAX_ORDER" in result.stderr


def test_an_unreachable_server_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import client._client

    monkeypatch.setattr(client._client, "_backoff", lambda attempt, response: 0.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = nabla("value", "x", "--param", "x=1", "--url", url)
    assert result.exit_code == 1 and f"could not reach {url}" in result.stderr
    assert nabla("models", "list", "--url", url).exit_code == 1


def test_models_need_a_server() -> None:
    result = nabla("models", "list")
    assert result.exit_code == 2 and "--url" in result.stderr


# ----------------------------------------------------------------------------- local and remote alike

SAME = [
    ["grad", "sum(x ** 2)", "--param", "x=[1,2]"],
    ["hessian", "sum(x ** 3)", "--param", "x=[1,2]"],
    ["check", "sum(sin(x) * x ** 2)", "--param", "x=[0.5,1.5]"],
    ["value", "(sum(x), x * 2)", "--param", "x=[1,2]"],
    ["value", "log(x)", "--param", "x=[1, 0, -1]"],
    ["grad", "sum(tanh(x) ** 2) / 3 + log(sum(exp(x)))", "--param", "x=[0.5,-1,2]"],
    ["grad", "sum(tanh(x) ** 2)", "--param", "x=[0.5,-1,2]", "--dtype", "float32"],
    ["grad", "tanh(x)", "--param", "x=2.0", "--order", "3"],
    ["jacobian", "tanh(A @ x)", "--param", "A=[[1,2],[3,4]]", "--param", "x=[0.1,0.2]", "--argnums", "0,1"],
    ["jacobian", "sin(x) * y", "--param", "x=[0.1,0.2,0.3]", "--param", "y=2", "--mode", "fwd"],
    ["jacobian", "(sum(x), x * 2)", "--param", "x=[1,2]"],
    ["hessian", "sum(A @ x ** 3) * y", "--param", "A=[[1,2],[3,4]]", "--param", "x=[0.1,0.2]", "--param", "y=2",
     "--argnums", "1,2"],
    ["hessian", "z = x * y + sin(x)\nsum(z ** 3 / (1 + z ** 2))", "--param", "x=[0.1,0.2,0.7]",
     "--param", "y=[1.1,1.3,-0.4]"],
]


@pytest.mark.parametrize("args", SAME, ids=[" ".join(a[:2]) for a in SAME])
def test_local_and_remote_print_the_same(server: str, args: list[str]) -> None:
    for extra in ([], ["--json"]):
        local = ok(*args, *extra)
        assert ok(*args, *extra, "--url", server, "--api-key", ADMIN_KEY) == local
        assert ok(*args, *extra, env=remote(server, USER_KEY)) == local  # NABLA_BASE_URL, NABLA_API_KEY


def test_remote_errors_are_the_local_ones_with_a_request_id(server: str) -> None:
    local = nabla("value", "sum(x.T)", "--param", "x=[1]")
    result = nabla("value", "sum(x.T)", "--param", "x=[1]", env=remote(server))
    assert result.exit_code == local.exit_code == 2
    assert result.stderr.startswith(local.stderr.strip() + " (request id ")
    result = nabla("value", "x @ y", "--param", "x=[1,2]", "--param", "y=[1,2,3]", env=remote(server))
    assert result.exit_code == 1 and "[422 shape_error] line 1, column 1: matmul" in result.stderr
    assert "Traceback" not in result.output


def test_keys_and_the_local_switch(server: str) -> None:
    result = nabla("value", "x", "--param", "x=1", "--url", server)
    assert result.exit_code == 1 and "[401 unauthorized]" in result.stderr
    assert nabla("value", "x", "--param", "x=1", env={"NABLA_BASE_URL": server}).exit_code == 1  # remote: no key
    assert ok("value", "x", "--param", "x=1", "--local", env={"NABLA_BASE_URL": server}) == "f64[] 1.0\n"


# ----------------------------------------------------------------------------- models


def test_models_register_list_show_delete(server: str, tmp_path: Path) -> None:
    env = remote(server)
    name = unique("cli_weighted")
    definition = {"name": name, "description": "weighted squares",
                  "function": {"expr": "sum(w * x ** 2)", "params": ["w", "x"]}, "constants": {"w": [1.0, 2.0, 3.0]}}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(definition))
    assert ok("models", "register", str(path), env=env) == f"registered {name} version 1\n"
    assert ok("models", "register", "-", input=json.dumps(definition), env=env) == f"registered {name} version 2\n"

    rows = {line.split()[0]: line.split(None, 4) for line in ok("models", "list", env=env).splitlines()}
    assert rows["NAME"] == ["NAME", "VERSION", "SOURCE", "PARAMS", "DESCRIPTION"]
    assert rows[name] == [name, "2", "registry", "x", "weighted squares"]
    assert rows["rosenbrock"][:4] == ["rosenbrock", "1", "builtin", "x"]
    assert name in {m["name"] for m in as_json("models", "list", env=env)}

    shown = json.loads(ok("models", "show", name, env=env))
    assert shown["name"] == name and shown["versions"] == [1, 2] and shown["description"] == "weighted squares"

    assert ok("models", "delete", f"{name}@1", env=env) == f"deleted {name}@1\n"
    assert json.loads(ok("models", "show", name, env=env))["versions"] == [2]
    result = nabla("models", "delete", f"{name}@1", env=env)
    assert result.exit_code == 1 and "[404 not_found]" in result.stderr
    assert ok("models", "delete", name, env=env) == f"deleted {name} (1 version)\n"
    result = nabla("models", "show", name, env=env)
    assert result.exit_code == 1 and "[404 not_found]" in result.stderr and "Traceback" not in result.output


def test_register_sends_the_file_as_written(server: str, tmp_path: Path) -> None:
    from client import Client

    name = unique("cli_array")
    w = np.array([1.0, 2.0, 3.0])
    leaf = {"$array": {"dtype": "float64", "shape": [3], "data": base64.b64encode(w.tobytes()).decode()}}
    definition = {"name": name, "function": {"expr": "sum(w * x ** 2)", "params": ["w", "x"]},
                  "constants": {"w": leaf}}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(definition))
    info = as_json("models", "register", str(path), env=remote(server))
    assert info["name"] == name and info["version"] == 1 and info["params"] == ["x"]
    with Client(server, ADMIN_KEY) as c:
        x = np.array([0.5, -1.0, 2.0])
        np.testing.assert_allclose(c.grad(c.model(name))(x), 2 * w * x)
        c.models.delete(name)


def test_model_command_errors(server: str, tmp_path: Path) -> None:
    env = remote(server)
    result = nabla("models", "delete", "rosenbrock", env=env)
    assert result.exit_code == 1 and "[409 conflict]" in result.stderr
    assert nabla("models", "delete", "rosenbrock@x", env=env).exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert nabla("models", "register", str(bad), env=env).exit_code == 2
    bad.write_text("[1, 2]")
    assert nabla("models", "register", str(bad), env=env).exit_code == 2
    definition = {"name": unique("cli_user"), "function": {"expr": "sum(x)", "params": ["x"]}}
    result = nabla("models", "register", "-", input=json.dumps(definition), env=remote(server, USER_KEY))
    assert result.exit_code == 1 and "[403 forbidden]" in result.stderr
    definition["function"] = {"expr": "sum(x.T)", "params": ["x"]}
    result = nabla("models", "register", "-", input=json.dumps(definition), env=env)
    assert result.exit_code == 2 and "[422 invalid_function] line 1, column 5" in result.stderr
