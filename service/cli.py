"""`nabla`: run the service, take derivatives of expressions, and manage a server's models.

    nabla serve --port 8000
    nabla grad 'sum(x ** 2)' --param x=[1,2]              # computed here, with the engine
    nabla hessian 'sum(x ** 3)' --param x=[1,2] --url http://127.0.0.1:8000   # by a server
    nabla models list --url http://127.0.0.1:8000

Built on click rather than argparse: nested command groups (`nabla models list`), typed options
with an environment fallback (`--url` / NABLA_BASE_URL), one place for exit codes and error
output, and CliRunner to test the commands in-process. click already comes with uvicorn, so the
service extra installs nothing new, and the client extra stays httpx-only.

Local runs go through the service's own compute path (service.compute.run: the engine's
transforms, traced, optimised and compiled to a plan, under the same NABLA_* limits), so they
print exactly the numbers and errors a server would; the client is imported only for `--url`,
so `nabla` works with just the service extra installed.

Exit status: 0 success; 1 a computation, server or connection failure, or a failed check; 2 a
usage error, or an invalid expression, argument or request (found here or by the server).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import click

# The API's error types that mean "the request itself is wrong" (exit 2), as opposed to a
# computation that failed or a server that could not answer (exit 1).
INPUT_ERRORS = {"invalid_request", "invalid_function", "invalid_argument"}
RESULT_KEYS = {"value": "value", "grad": "grad", "hessian": "hessian", "jacobian": "jacobian", "check_grads": "check"}


class CLIError(click.ClickException):
    """An error shown as `Error: message` on stderr, without a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def version() -> str:
    """The installed distribution's version, or the source tree's when running uninstalled."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("nabla")
    except PackageNotFoundError:
        from service import __version__

        return __version__


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"nabla {version()}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and exit.")
def cli() -> None:
    """Nabla, gradients as a service: serve the API, compute derivatives of expressions (here, or
    on a server with --url), and manage a server's models."""


# ----------------------------------------------------------------------------- serve


@cli.command()
@click.option("--host", help="address to listen on (NABLA_HOST, default 127.0.0.1)")
@click.option("--port", type=int, help="port (NABLA_PORT, default 8000)")
@click.option("--workers", type=int, help="worker processes (NABLA_WORKERS, default 1)")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the HTTP service (settings also from NABLA_* variables)."""
    # Command-line flags win over the environment; workers read the same variables.
    for name, value in (("host", host), ("port", port), ("workers", workers)):
        if value is not None:
            os.environ[f"NABLA_{name.upper()}"] = str(value)
    from service.server import serve as run_server
    from service.settings import Settings

    run_server(Settings())


# ----------------------------------------------------------------------------- derivatives


def _parse_params(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> list[tuple[str, Any]]:
    parsed: list[tuple[str, Any]] = []
    for item in values:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=JSON (e.g. x=[1,2] or W='{{\"a\": 1}}')")
        if any(name == n for n, _ in parsed):
            raise click.BadParameter(f"{name!r} is given twice")
        try:
            # JSON only, never eval: NaN and Infinity are read as the API reads them.
            parsed.append((name, json.loads(text)))
        except json.JSONDecodeError as e:
            raise click.BadParameter(f"the value of {name!r} is not valid JSON: {e}") from None
    return parsed


def _function_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """EXPR and the options every derivative command takes."""
    decorators = [
        click.argument("expr"),
        click.option("--param", "param_values", multiple=True, metavar="NAME=JSON", callback=_parse_params,
                     help="a parameter and its value as JSON: a number, a nested list, an object for a pytree "
                          "(x=[1,2], y=3). Parameters are declared in the order of these flags."),
        click.option("--params", "param_order", metavar="X,Y", help="the parameters' order, when not that of --param"),
        click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
                     help="precision of the JSON numbers and so of the computation"),
        click.option("--json", "as_json", is_flag=True, help="print the result as JSON (the API's response field)"),
        click.option("--url", envvar="NABLA_BASE_URL", show_envvar=True,
                     help="compute on this server instead of locally"),
        click.option("--api-key", envvar="NABLA_API_KEY", show_envvar=True, help="the server's API key"),
        click.option("--local", is_flag=True, help="compute locally even when NABLA_BASE_URL is set"),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


def _argnums_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--argnums", default="0", show_default=True, metavar="N[,M...]",
                        help="the argument(s) to differentiate by, as positions or names: 0, 0,1 or x,y "
                             "(a list gives one result per argument)")(f)


@dataclass
class Job:
    """One derivative command: the function, its arguments and the transform's options."""

    transform: str  # the API's name: value, grad, hessian, jacobian, check_grads
    expr: str
    params: list[str]
    values: list[Any]  # JSON values, one per parameter
    dtype: str
    argnums: int | tuple[int, ...] = 0
    order: int = 1
    mode: str = "rev"
    check: dict[str, Any] | None = None


def _order_params(param_values: list[tuple[str, Any]], param_order: str | None) -> tuple[list[str], list[Any]]:
    given = dict(param_values)
    if param_order is None:
        return [n for n, _ in param_values], [v for _, v in param_values]
    names = [n.strip() for n in param_order.split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise click.UsageError(f"--params names a parameter twice: {param_order}")
    missing = [n for n in names if n not in given]
    unknown = [n for n in given if n not in names]
    if missing:
        raise click.UsageError(f"--params declares {missing} but no --param gives their value(s)")
    if unknown:
        raise click.UsageError(f"--param gives {unknown}, which --params does not declare ({', '.join(names)})")
    return names, [given[n] for n in names]


def _parse_argnums(text: str, params: list[str]) -> int | tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    nums = []
    for p in parts:
        if not p:
            continue
        if p in params:
            nums.append(params.index(p))
            continue
        try:
            nums.append(int(p))
        except ValueError:
            raise click.BadParameter(f"{p!r} is neither a position nor one of the parameters {params}",
                                     param_hint="--argnums") from None
    if not nums:
        raise click.BadParameter("give at least one argument", param_hint="--argnums")
    # "0" differentiates by one argument; "0,1" (or "0,") asks for one result per argument, as JAX's tuples do.
    return nums[0] if "," not in text else tuple(nums)


def _settings() -> Any:
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as e:
        raise CLIError(f"invalid NABLA_* setting: {e}", 2) from None


def _decode_args(job: Job) -> list[Any]:
    """JSON values as the server decodes them: numbers take the requested dtype, rectangular
    lists are arrays, objects are dicts, `$array` leaves keep their dtype."""
    import numpy as np

    from service.json_trees import TreeBudget, decode_tree

    s = _settings()
    budget = TreeBudget(s.max_array_elements, s.max_total_elements, s.max_depth, max_leaves=s.max_leaves)
    return [decode_tree(v, np.dtype(job.dtype), name, budget) for name, v in zip(job.params, job.values)]


def _options(job: Job, max_order: int) -> Any:
    from service.compute import Options

    # The request as the service's validated model would carry it, so the order limit and its
    # message are the server's.
    check = SimpleNamespace(**job.check) if job.check is not None else None
    request = SimpleNamespace(argnums=job.argnums, has_aux=False, mode=job.mode, order=job.order, check=check)
    return Options.from_request(job.transform, request, max_order)


def _local(job: Job, args: list[Any]) -> Any:
    # Without jax_enable_x64, as the server runs: float64 inputs stay float64 (they enter as
    # Arrays, which keep their dtype), while literals and constructors (zeros(3), arange) get the
    # dtypes a server gives them, so the numbers match a server's exactly.
    from engine.expr import Program
    from service import cli_format as F
    from service.admission import Budget
    from service.compute import PlanCache, run
    from service.functions import Function

    s = _settings()
    program = Program(job.expr, job.params, s.engine_limits())
    function = Function("cli", list(program.params), program, graph_nodes=program.num_nodes)
    budget = Budget(s.max_array_elements, s.max_response_bytes, s.max_request_bytes)
    outcome = run(function, _options(job, s.max_order), args, [], plans=PlanCache(0, 0), budget=budget,
                  encoding="json")
    result = outcome.result[RESULT_KEYS[job.transform]]
    return result if job.transform == "check_grads" else _as_read_back(job, F.plain(result))


def _as_read_back(job: Job, result: Any) -> Any:
    """A local result in the structure the client reads back from a server's JSON, so both print
    alike: gradients keep their arguments' structure (a tuple for several argnums); values and
    Jacobian and Hessian parts are decoded generically, which stacks lists of same-shaped arrays."""
    from service import cli_format as F

    if job.transform == "grad":
        return result if isinstance(job.argnums, int) else tuple(result)
    if job.transform == "value" or isinstance(job.argnums, int):
        return F.json_like(result)
    if job.transform == "jacobian":
        return tuple(F.json_like(part) for part in result)
    return tuple(tuple(F.json_like(block) for block in row) for row in result)


def _client_class() -> Any:
    try:
        from client import Client
    except ImportError as e:
        raise CLIError(f"--url needs the Python client: pip install 'nabla[client]' ({e})") from None
    return Client


def _remote(job: Job, args: list[Any], url: str, api_key: str | None) -> Any:
    Client = _client_class()
    expr, params = job.expr, job.params
    with Client(url, api_key or None) as c:
        if job.transform == "value":
            return c.value(expr, params=params)(*args)
        if job.transform == "grad":
            return c.grad(expr, job.argnums, order=job.order, params=params)(*args)
        if job.transform == "hessian":
            return c.hessian(expr, job.argnums, params=params)(*args)
        if job.transform == "jacobian":
            return c.jacobian(expr, job.argnums, mode=job.mode, params=params)(*args)
        check = job.check or {}
        return c.check_gradients(expr, args, check["order"], check["modes"], check["atol"], check["rtol"],
                                 check["eps"], params=params)


@contextmanager
def _errors() -> Iterator[None]:
    """User errors as one `Error: [status type] message` line and an exit status, never a
    traceback: the client's typed errors, and engine errors mapped by the service's own table
    (so a local run reports what a server would). An exception no row maps is a bug: it is raised."""
    try:
        yield
    except click.ClickException:
        raise
    except Exception as e:  # noqa: BLE001 - sorted below; anything unknown is re-raised
        status, kind, message = _describe(e)
        if kind is None and message is None:
            raise
        raise CLIError(message if kind is None else f"[{status} {kind}] {message}",
                       2 if kind in INPUT_ERRORS else 1) from None


def _describe(e: Exception) -> tuple[int | None, str | None, str | None]:
    """(status, API error type, message) of a user error; (None, None, None) for a bug."""
    try:
        from client import APIConnectionError, APIStatusError, NablaError
    except ImportError:  # only the service extra: no client errors to expect
        APIConnectionError = APIStatusError = NablaError = ()  # type: ignore[assignment,misc]
    if isinstance(e, APIStatusError):
        message = e.message + (f" (request id {e.request_id})" if e.request_id else "")
        return e.status_code, e.type or "error", message
    if isinstance(e, (APIConnectionError, NablaError)):
        return None, None, str(e)
    from service.error_map import to_api_error

    error = to_api_error(e)
    if error is None:
        return None, None, None
    return error.status, error.type, error.message


def _print_result(job: Job, args: list[Any], result: Any, as_json: bool) -> None:
    from service import cli_format as F

    key = RESULT_KEYS[job.transform]
    if job.transform == "check_grads":
        click.echo(json.dumps({key: result}) if as_json else F.format_check(result))
        if not result["passed"]:
            click.get_current_context().exit(1)
        return
    result = F.plain(result)
    if as_json:
        click.echo(json.dumps({key: F.to_json(result)}))
        return
    if job.transform == "value":
        parts = F.leaf_paths(result)
    else:
        depth = 2 if job.transform == "hessian" else 1
        parts = F.derivative_parts(result, F.plain(args), job.params, job.argnums, depth)
    click.echo(F.format_parts(parts))


def _compute(transform: str, expr: str, param_values: list[tuple[str, Any]], param_order: str | None, dtype: str,
             as_json: bool, url: str | None, api_key: str | None, local: bool, argnums: str | None = None,
             order: int = 1, mode: str = "rev", check: dict[str, Any] | None = None) -> None:
    params, values = _order_params(param_values, param_order)
    job = Job(transform, expr, params, values, dtype, order=order, mode=mode, check=check)
    if argnums is not None:
        job.argnums = _parse_argnums(argnums, params)
    with _errors():
        args = _decode_args(job)
        result = _remote(job, args, url, api_key) if url and not local else _local(job, args)
    _print_result(job, args, result, as_json)


@cli.command()
@_function_options
def value(**options: Any) -> None:
    """The value of EXPR at the given parameters."""
    _compute("value", **options)


@cli.command()
@_function_options
@_argnums_option
@click.option("--order", type=click.IntRange(min=1), default=1, show_default=True,
              help="apply grad this many times (derivatives of higher order)")
def grad(**options: Any) -> None:
    """The gradient of EXPR (a scalar) with respect to --argnums."""
    _compute("grad", **options)


@cli.command()
@_function_options
@_argnums_option
def hessian(**options: Any) -> None:
    """The Hessian of EXPR (a scalar) with respect to --argnums."""
    _compute("hessian", **options)


@cli.command()
@_function_options
@_argnums_option
@click.option("--mode", type=click.Choice(["rev", "fwd"]), default="rev", show_default=True,
              help="reverse mode (jacrev) or forward mode (jacfwd)")
def jacobian(**options: Any) -> None:
    """The Jacobian of EXPR with respect to --argnums."""
    _compute("jacobian", **options)


_POSITIVE = click.FloatRange(min=0, min_open=True)


@cli.command()
@_function_options
@click.option("--order", type=click.IntRange(min=1), default=2, show_default=True,
              help="check the derivatives up to this order")
@click.option("--modes", default="fwd,rev", show_default=True, help="fwd, rev or fwd,rev")
@click.option("--eps", type=_POSITIVE, help="finite-difference step (default: by dtype)")
@click.option("--atol", type=_POSITIVE, help="absolute tolerance (default: by dtype)")
@click.option("--rtol", type=_POSITIVE, help="relative tolerance (default: by dtype)")
def check(order: int, modes: str, eps: float | None, atol: float | None, rtol: float | None,
          **options: Any) -> None:
    """Compare EXPR's derivatives with finite differences; exit 1 when one disagrees."""
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    if not chosen or any(m not in ("fwd", "rev") for m in chosen) or len(set(chosen)) != len(chosen):
        raise click.BadParameter("give fwd, rev or fwd,rev", param_hint="--modes")
    report = {"order": order, "modes": chosen, "eps": eps, "atol": atol, "rtol": rtol}
    _compute("check_grads", check=report, **options)


# ----------------------------------------------------------------------------- models


def _server_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--api-key", envvar="NABLA_API_KEY", show_envvar=True,
                     help="the server's API key (an admin key to register and delete)")(f)
    return click.option("--url", envvar="NABLA_BASE_URL", show_envvar=True, help="the server")(f)


@contextmanager
def _server(url: str | None, api_key: str | None) -> Iterator[Any]:
    if not url:
        raise click.UsageError("models live on a server: give --url URL (or set NABLA_BASE_URL)")
    Client = _client_class()
    with _errors(), Client(url, api_key or None) as c:
        yield c


def _call(c: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """A request through the client's own transport (retries, typed errors) for what its public
    methods cannot send as is."""
    from client._client import Call

    return c._run(Call(method, path, body, lambda r: r, headers or {}))


@cli.group()
def models() -> None:
    """A server's models: list, show, register, delete."""


@models.command("list")
@_server_options
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def models_list(url: str | None, api_key: str | None, as_json: bool) -> None:
    """Every model: name, latest version, source, parameters, description."""
    from urllib.parse import urlencode

    from service import cli_format as F

    found: list[dict[str, Any]] = []
    with _server(url, api_key) as c:
        cursor: str | None = None
        while True:
            # Page by page: c.models.list() returns only the first page of a long registry.
            page = _call(c, "GET", "/v1/models" + (f"?{urlencode({'cursor': cursor})}" if cursor else ""))
            found.extend(page["models"])
            nxt = page.get("next_cursor")
            if not nxt or nxt == cursor:
                break
            cursor = nxt
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[m.get("name", ""), str(m.get("version", "")), m.get("source", ""), ", ".join(m.get("params") or []),
             m.get("description") or ""] for m in found]
    click.echo(F.format_table(rows, ["NAME", "VERSION", "SOURCE", "PARAMS", "DESCRIPTION"], [None, None, None, 40, 60]))


@models.command("show")
@click.argument("name")
@_server_options
def models_show(name: str, url: str | None, api_key: str | None) -> None:
    """A model's description, parameters, versions and function, as JSON."""
    with _server(url, api_key) as c:
        info = c.models.get(name)
    click.echo(json.dumps(info, indent=2))


@models.command("register")
@click.argument("file", type=click.File("r"))
@_server_options
@click.option("--json", "as_json", is_flag=True, help="print the server's answer as JSON")
def models_register(file: Any, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Register the model in FILE ('-' for stdin): a JSON object {name, function, constants,
    description}, the body of POST /v1/models. A name that exists gets a new version."""
    try:
        body = json.load(file)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"{file.name} is not valid JSON: {e}", param_hint="FILE") from None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise click.BadParameter(f"{file.name} must hold a JSON object with a name: {{name, function, constants, "
                                 "description}", param_hint="FILE")
    with _server(url, api_key) as c:
        # The body goes as written (c.models.register would re-encode constants, turning a
        # `$array` leaf's shape into an array); one Idempotency-Key, reused by the client's
        # retries, so a retried registration cannot add a second version.
        info = _call(c, "POST", "/v1/models", body, {"Idempotency-Key": str(uuid.uuid4())})
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"registered {info['name']} version {info['version']}")


@models.command("delete")
@click.argument("target", metavar="NAME[@VERSION]")
@_server_options
def models_delete(target: str, url: str | None, api_key: str | None) -> None:
    """Delete a model with all its versions, or only NAME@VERSION."""
    name, at, number = target.rpartition("@") if "@" in target else (target, "", "")
    version = None
    if at:
        if not number.isdigit() or int(number) < 1:
            raise click.BadParameter(f"{number!r} is not a version number (NAME@3)", param_hint="NAME[@VERSION]")
        version = int(number)
    with _server(url, api_key) as c:
        if version is None:
            info = c.models.delete(name)
        else:
            info = c.models.delete_version(name, version)
    if version is None:
        count = info.get("deleted_versions")
        click.echo(f"deleted {name} ({count} version{'s' if count != 1 else ''})")
    else:
        click.echo(f"deleted {name}@{version}")


def main(argv: list[str] | None = None) -> int:
    """The `nabla` entry point: runs a command and returns its exit status."""
    try:
        cli.main(args=argv, prog_name="nabla", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
