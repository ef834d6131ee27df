"""The Open Inference Protocol v2 (KServe, NVIDIA Triton, Seldon MLServer), REST, over the pipeline.

Routes under /v2 translate and nothing else: an inference request becomes the /v1 request body
of a model route (`Call("compute", ...)`, tensors as base64 `$array` leaves), its answer becomes
named output tensors, and an error reply becomes OIP's `{"error": "<message>"}` with the same
status. Validation, limits, admission and errors are the pipeline's, shared with /v1 through
the same lanes.

What Nabla adds to the protocol: the request parameter `transform` (value by default, or a
derivative), `argnums` (an integer or a string "0,1" / "W,b"), `order` (grad) and `mode`
(jacobian); extra inputs `tangent.<input>` (jvp) and `cotangent[<output path>]` (vjp); outputs
named `value`, `grad.<input>`, `jvp`, `vjp.<input>`, `jacobian[.<input>]`,
`hessian[.<input>.<input>]` (docs/PROTOCOLS.md). Model metadata describes the value by default
and any transform with `?transform=...&argnums=...`.

Binary tensor data extension: inputs with `parameters.binary_data_size` are read, in order, from
the bytes after the JSON header (`Inference-Header-Content-Length`); outputs are binary when the
request asks (`binary_data` on an output, or `binary_data_output`), little-endian, row-major.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service import __version__
from service import requests as R
from service.errors import InvalidArgument, InvalidRequest, NotFound, UnsupportedMediaType
from service.json_trees import dumps
from service.model_schema import is_leaf, join
from service.named_tensors import (
    ModelInputs,
    Refused,
    ask,
    check_argnums_text,
    compose,
    derivative_leaves,
    error_of,
    json_bytes,
    read_array,
    refusal,
    template_labels,
    tree_leaves_named,
)
from service.pipeline import Call, Reply

PREFIX = "/v2"
PLATFORM = "nabla"
EXTENSIONS = ["binary_tensor_data", "parameters"]
HEADER_LENGTH = "inference-header-content-length"

# OIP datatypes and the dtypes they carry (BYTES and BF16 hold nothing Nabla computes on).
DATATYPES = {"BOOL": "bool", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
             "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
             "FP16": "float16", "FP32": "float32", "FP64": "float64"}
OIP_DATATYPE = {dtype: name for name, dtype in DATATYPES.items()}

# Request parameters that become /v1 options, those that only shape the response, and those of
# Triton's client that ask for scheduling Nabla does not have (accepted, without effect).
OPTION_PARAMETERS = ("transform", "argnums", "order", "mode")
IGNORED_PARAMETERS = ("priority", "timeout")
# Transforms whose answer is tensors (check_grads answers a report).
NOT_TENSORS = ("check_grads",)


def tensor_transforms() -> list[str]:
    """Read at request time: a transform added to the pipeline is offered here at once."""
    return [t for t in R.TRANSFORMS if t not in NOT_TENSORS]


# ----------------------------------------------------------------------------- the request body


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Scalar = str | int | float | bool


class RequestInput(_Body):
    name: str
    shape: list[Annotated[int, Field(ge=0, le=2**62)]] = Field(max_length=32)
    datatype: str
    parameters: dict[str, Scalar] | None = None
    data: Any = None


class RequestOutput(_Body):
    name: str
    parameters: dict[str, Scalar] | None = None


class InferenceRequest(_Body):
    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Scalar] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


@dataclass
class InferPlan:
    """A translated inference request: the /v1 body, and what shapes the response."""

    transform: str
    body: bytes
    argnums: int | list[int]
    request_id: str | None
    outputs: list[RequestOutput] | None
    binary_by_default: bool


def _validated(doc: Any) -> InferenceRequest:
    if not isinstance(doc, dict):
        raise InvalidRequest("the inference request must be a JSON object {\"inputs\": [...], ...}")
    try:
        return InferenceRequest.model_validate(doc)
    except ValidationError as e:
        problems = R.validation_problems(e)
        first = problems[0]
        raise InvalidRequest(f"{first['path']}: {first['problem']}", {"errors": problems}) from None


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it."""
    if header_length is None:
        return raw, b""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise InvalidRequest(f"Inference-Header-Content-Length must be the byte length of the JSON header, at most "
                             f"the body's {len(raw)} bytes (got {header_length[:40]!r})",
                             {"header": "Inference-Header-Content-Length"})
    n = int(header_length)
    return raw[:n], raw[n:]


def translate_request(pipeline: Any, raw: bytes, header_length: str | None, model: ModelInputs,
                      version: int | None) -> InferPlan:
    """An OIP inference request as the body of POST /v1/models/{name}/{transform}."""
    header, binary = split_body(raw, header_length)
    request = _validated(pipeline.parse(header))
    parameters = dict(request.parameters or {})
    unknown = sorted(set(parameters) - {*OPTION_PARAMETERS, *IGNORED_PARAMETERS, "binary_data_output"})
    if unknown:
        raise InvalidRequest(f"unknown request parameter(s) {unknown}; Nabla reads {list(OPTION_PARAMETERS)} and "
                             "binary_data_output", {"parameters": unknown})
    transform = parameters.pop("transform", "value")
    transforms = tensor_transforms()
    if transform not in transforms:
        raise InvalidRequest(f"parameter transform: unknown {str(transform)[:40]!r}; use one of "
                             f"{', '.join(transforms)}", {"parameter": "transform", "allowed": transforms})
    binary_output = parameters.pop("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidRequest("parameter binary_data_output must be true or false")
    options: dict[str, Any] = {k: parameters[k] for k in ("order", "mode") if k in parameters}
    argnums: int | list[int] = 0
    if "argnums" in parameters:
        argnums = options["argnums"] = check_argnums_text(parameters["argnums"], model.params)

    values, extra = _read_inputs(request.inputs, binary, model, transform, argnums)
    body: dict[str, Any] = {"args": model.arguments(values), "encoding": "base64", **options}
    if transform in ("jvp", "hvp"):
        positions = list(range(len(model.params))) if transform == "jvp" else model.positions(argnums)
        tangents = {name[len("tangent."):]: value for name, value in extra.items()}
        body["tangents"] = model.arguments(tangents, positions)
    elif transform == "vjp":
        body["cotangent"] = _cotangent(extra)
    if version is not None:
        body["version"] = version
    return InferPlan(transform, dumps(body, "base64"), argnums, request.id, request.outputs, binary_output)


def expected_extra_inputs(model: ModelInputs, transform: str, argnums: int | list[int]) -> list[str] | None:
    """Inputs a transform needs besides the model's (None: any `cotangent...` names): a tangent
    per input for jvp, per differentiated input for hvp."""
    if transform == "jvp":
        return [f"tangent.{leaf.name}" for leaf in model.leaves]
    if transform == "hvp":
        return [f"tangent.{name}" for name in model.differentiated(argnums)]
    return None if transform == "vjp" else []


def _read_inputs(inputs: list[RequestInput], binary: bytes, model: ModelInputs, transform: str,
                 argnums: int | list[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    names = [leaf.name for leaf in model.leaves]
    extra_names = expected_extra_inputs(model, transform, argnums)
    values: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}] ({tensor.name[:80]!r})"
        is_extra = (tensor.name in extra_names if extra_names is not None
                    else tensor.name == "cotangent" or tensor.name.startswith(("cotangent.", "cotangent[")))
        if tensor.name not in names and not is_extra:
            raise InvalidRequest(f"{where}: model {model.name!r} has no input {tensor.name[:80]!r}; its inputs are "
                                 f"{names}" + (f", and {transform} also takes {extra_names}" if extra_names else
                                              ", and vjp also takes the cotangent" if extra_names is None else ""),
                                 {"input": tensor.name[:80], "inputs": names})
        target = extra if is_extra else values
        if tensor.name in target:
            raise InvalidRequest(f"{where}: the input {tensor.name[:80]!r} is sent twice")
        target[tensor.name], offset = _read_tensor(tensor, binary, offset, where)
    if offset != len(binary):
        raise InvalidRequest(f"the body has {len(binary) - offset} byte(s) of binary data that no input's "
                             "binary_data_size accounts for", {"binary_bytes": len(binary), "read": offset})
    missing = [n for n in names if n not in values] + [n for n in (extra_names or []) if n not in extra]
    if transform == "vjp" and not extra:
        missing.append("cotangent")
    if missing:
        raise InvalidRequest(f"missing input(s) {missing} for {transform} on model {model.name!r}",
                             {"missing": missing})
    return values, extra


def _read_tensor(tensor: RequestInput, binary: bytes, offset: int, where: str) -> tuple[np.ndarray, int]:
    dtype_name = DATATYPES.get(tensor.datatype)
    if dtype_name is None:
        raise InvalidArgument(f"{where}: datatype {tensor.datatype[:20]!r} holds no numbers Nabla computes on; use "
                              f"one of {', '.join(DATATYPES)}",
                              {"path": tensor.name[:80], "datatype": tensor.datatype[:20]})
    dtype = np.dtype(dtype_name)
    parameters = dict(tensor.parameters or {})
    size = parameters.pop("binary_data_size", None)
    if parameters:
        raise InvalidRequest(f"{where}: unknown tensor parameter(s) {sorted(parameters)} (shared memory is not "
                             "supported: send the data in the body)", {"parameters": sorted(parameters)})
    count = math.prod(tensor.shape)
    if size is not None:
        if tensor.data is not None:
            raise InvalidRequest(f"{where}: send the data either as JSON `data` or as binary_data_size bytes, not both")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequest(f"{where}: binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize:
            raise InvalidArgument(f"{where}: binary_data_size is {size} bytes, but shape {tensor.shape} of "
                                  f"{tensor.datatype} takes {count * dtype.itemsize}", {"path": tensor.name[:80]})
        if offset + size > len(binary):
            raise InvalidRequest(f"{where}: binary_data_size {size} runs past the end of the body's binary data "
                                 f"({len(binary) - offset} byte(s) left)")
        flat = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset).astype(dtype)
        return _shaped(flat, tensor.shape, where), offset + size
    if tensor.data is None:
        raise InvalidRequest(f"{where}: no data: send `data` (JSON numbers, row-major) or binary data with "
                             "parameters.binary_data_size")
    return _shaped(_from_json(tensor.data, dtype, tensor.datatype, count, where), tensor.shape, where), offset


def _shaped(flat: np.ndarray, shape: list[int], where: str) -> np.ndarray:
    try:
        return flat.reshape(shape)
    except ValueError as e:
        raise InvalidArgument(f"{where}: shape {shape} is not a valid array shape: {e}") from None


def _from_json(data: Any, dtype: np.dtype, datatype: str, count: int, where: str) -> np.ndarray:
    """JSON tensor data (flat or nested, row-major) as `dtype`, refusing what would change a
    value: fractions or out-of-range numbers for integers, finite numbers that overflow a float."""
    try:
        arr = np.asarray(data if isinstance(data, list) else [data])
    except (ValueError, TypeError):
        raise InvalidArgument(f"{where}: data must be a list of numbers (nested lists must be rectangular)") from None
    if arr.size != count:
        raise InvalidArgument(f"{where}: the shape holds {count} element(s) but data has {arr.size}",
                              {"expected": count, "got": int(arr.size)})
    arr = arr.reshape(-1)
    if dtype.kind == "b":
        if arr.dtype.kind != "b" and arr.size:
            raise InvalidArgument(f"{where}: BOOL data must be JSON true/false")
        return arr.astype(bool)
    if arr.size and (arr.dtype.kind not in "iuf"):
        kind = "true/false" if arr.dtype.kind == "b" else "strings" if arr.dtype.kind == "U" else "non-numbers"
        raise InvalidArgument(f"{where}: {datatype} data must be numbers, got {kind}", {"datatype": datatype})
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (np.floor(arr) == arr)):
            raise InvalidArgument(f"{where}: {datatype} data must be integers")
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InvalidArgument(f"{where}: a number is outside {datatype}'s range [{info.min}, {info.max}]")
        return arr.astype(dtype)
    with np.errstate(over="ignore"):
        out = arr.astype(dtype)
    if np.isfinite(arr).all() and not np.isfinite(out).all():
        raise InvalidArgument(f"{where}: a number is too large for {datatype}")
    return out


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d{1,6})\]|\['([^'\\]*)'\]|\[\"([^\"\\]*)\"\]")


def _cotangent(extra: dict[str, np.ndarray]) -> Any:
    """The cotangent tree from inputs named `cotangent` plus the output path of each leaf
    (`cotangent[0]`, `cotangent.mean`), the names the vjp metadata lists."""
    if set(extra) == {"cotangent"}:
        return extra["cotangent"]
    entries = []
    for name, value in extra.items():
        rest, keys = name[len("cotangent"):], []
        position = 0
        while position < len(rest):
            match = _PATH_PART.match(rest, position)
            if match is None:
                raise InvalidRequest(f"input {name[:80]!r}: not a cotangent name; use `cotangent` followed by the "
                                     "output's path, as GET /v2/models/{name}?transform=vjp lists them")
            index, *strings = match.group(2), match.group(1), match.group(3), match.group(4)
            keys.append(int(index) if index is not None else next(s for s in strings if s is not None))
            position = match.end()
        entries.append((tuple(keys), value))
    return _tree_of(entries, "cotangent")


def _tree_of(entries: list[tuple[tuple[Any, ...], Any]], where: str) -> Any:
    if len(entries) == 1 and not entries[0][0]:
        return entries[0][1]
    if any(not keys for keys, _ in entries):
        raise InvalidRequest(f"{where}: a cotangent is sent both whole and in parts")
    groups: dict[Any, list[tuple[tuple[Any, ...], Any]]] = {}
    for keys, value in entries:
        groups.setdefault(keys[0], []).append((keys[1:], value))
    firsts = list(groups)
    if all(isinstance(k, int) for k in firsts):
        if sorted(firsts) != list(range(len(firsts))):
            raise InvalidRequest(f"{where}: list positions {sorted(firsts)} are not 0..{len(firsts) - 1}")
        return [_tree_of(groups[i], join(where, i)) for i in range(len(firsts))]
    if any(isinstance(k, int) for k in firsts):
        raise InvalidRequest(f"{where}: mixes list positions and object keys")
    return {k: _tree_of(v, join(where, k)) for k, v in groups.items()}


# ----------------------------------------------------------------------------- the answer


def named_outputs(transform: str, answer: dict[str, Any], model: ModelInputs,
                  argnums: int | list[int]) -> list[tuple[str, Any]]:
    """A /v1 answer as (output name, array leaf) pairs."""
    out: list[tuple[str, Any]] = []
    if "value" in answer:
        out += tree_leaves_named(answer["value"], "value")
    if transform in ("grad", "value_and_grad", "hvp"):
        template = model.argument_template(argnums)
        for key in ("grad", "hvp") if transform == "hvp" else ("grad",):
            out += [(f"{key}{path}.{label[0]}", leaf) for path, label, leaf in derivative_leaves(answer[key], template)]
    elif transform == "jvp":
        out += tree_leaves_named(answer["jvp"], "jvp")
    elif transform == "vjp":
        template = model.argument_template(list(range(len(model.params))))
        out += [(f"vjp{path}.{label[0]}", leaf) for path, label, leaf in derivative_leaves(answer["vjp"], template)]
    elif transform in ("jacobian", "hessian"):
        template = model.argument_template(argnums)
        if transform == "hessian":
            template = compose(template, template)
        labelled = len(template_labels(model.argument_template(argnums))) > 1
        out += [(transform + path + ("." + ".".join(label) if labelled else ""), leaf)
                for path, label, leaf in derivative_leaves(answer[transform], template)]
    return out


def translate_answer(body: bytes, plan: InferPlan, model: ModelInputs, name: str) -> tuple[bytes, dict[str, str]]:
    """The /v1 answer as an OIP inference response (JSON, or JSON header + binary tensors)."""
    answer = orjson.loads(body)
    produced = named_outputs(plan.transform, answer, model, plan.argnums)
    arrays = dict(produced)
    requested: list[tuple[str, bool]]
    if plan.outputs is None:
        requested = [(n, plan.binary_by_default) for n, _ in produced]
    else:
        requested = []
        for i, output in enumerate(plan.outputs):
            if output.name not in arrays:
                raise InvalidRequest(f"outputs[{i}]: {plan.transform} on model {name!r} has no output "
                                     f"{output.name[:80]!r}; it produces {[n for n, _ in produced]}",
                                     {"output": output.name[:80], "outputs": [n for n, _ in produced]})
            parameters = dict(output.parameters or {})
            binary = parameters.pop("binary_data", plan.binary_by_default)
            if parameters or not isinstance(binary, bool):
                raise InvalidRequest(f"outputs[{i}]: the only output parameter is binary_data (true or false)")
            requested.append((output.name, binary))
    tensors, chunks = [], []
    for output_name, binary in requested:
        arr = read_array(arrays[output_name])
        tensor: dict[str, Any] = {"name": output_name, "datatype": OIP_DATATYPE.get(arr.dtype.name, "FP64"),
                                  "shape": [int(n) for n in arr.shape]}
        if binary:
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = arr.reshape(-1).tolist()
        tensors.append(tensor)
    meta = answer.get("meta", {}).get("model") or {}
    response: dict[str, Any] = {"model_name": name, "model_version": str(meta.get("version", "")),
                                "outputs": tensors}
    if plan.request_id is not None:
        response["id"] = plan.request_id
    header = json_bytes(response)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {"content-type": "application/octet-stream",
                                       "inference-header-content-length": str(len(header))}


# ----------------------------------------------------------------------------- model metadata


def tensor_meta(name: str, shape: Any, dtype: str | None) -> dict[str, Any]:
    dims = [-1] if shape is None else [d if isinstance(d, int) else -1 for d in shape]
    return {"name": name, "datatype": OIP_DATATYPE.get(dtype or "float64", "FP64"), "shape": dims}


def trace_args(model: ModelInputs, base: int) -> list[Any]:
    """Concrete {shape, dtype} arguments for a shapes trace: each dimension name a size of its
    own, starting at `base` (two traces with different bases show which output dimensions are
    free)."""
    sizes: dict[str, int] = {}
    specs = {leaf.name: {"shape": [d if isinstance(d, int) else sizes.setdefault(d, base + len(sizes))
                                   for d in leaf.shape or ()], "dtype": leaf.dtype} for leaf in model.leaves}
    return model.arguments(specs)


def shape_leaves(tree: Any, path: str) -> list[tuple[str, list[int], str]]:
    if is_leaf(tree):
        return [(path, tree["shape"], tree.get("dtype", "float64"))]
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in shape_leaves(tree[k], join(path, k))]
    if isinstance(tree, list):
        return [x for i, v in enumerate(tree) for x in shape_leaves(v, join(path, i))]
    return []


def merge_traces(first: list[tuple[str, list[int], str]],
                 second: list[tuple[str, list[int], str]]) -> list[tuple[str, list[int | str], str]] | None:
    """Output leaves with the dimensions that differ between two traces marked free."""
    if [(p, len(s)) for p, s, _ in first] != [(p, len(s)) for p, s, _ in second]:
        return None
    return [(p, [a if a == b else "free" for a, b in zip(s1, s2)], d) for (p, s1, d), (_, s2, _) in zip(first, second)]


def describe(model: ModelInputs, outputs: list[tuple[str, list[int | str], str]] | None, transform: str,
             argnums: int | list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of a transform of a model, as OIP tensor metadata (-1: any size)."""
    inputs = [tensor_meta(leaf.name, leaf.shape, leaf.dtype) for leaf in model.leaves]
    by_name = {leaf.name: leaf for leaf in model.leaves}
    value = outputs if outputs is not None else [("", None, "float64")]
    out_dtype = value[0][2] if value else "float64"
    metas = []
    if transform in ("value", "value_and_grad", "jvp", "vjp", "hvp"):
        metas += [tensor_meta("value" + p, s, d) for p, s, d in value]
    chosen = model.differentiated(argnums)
    if transform in ("jvp", "hvp"):
        inputs += [tensor_meta(f"tangent.{leaf.name}", leaf.shape, leaf.dtype) for leaf in model.leaves
                   if transform == "jvp" or leaf.name in chosen]
    if transform == "vjp":
        inputs += [tensor_meta("cotangent" + p, s, d) for p, s, d in value]
    if transform == "jvp":
        metas += [tensor_meta("jvp" + p, s, d) for p, s, d in value]
    keys = {"grad": ["grad"], "value_and_grad": ["grad"], "hvp": ["grad", "hvp"], "vjp": ["vjp"]}
    for key in keys.get(transform, []):
        for n in chosen if key != "vjp" else [leaf.name for leaf in model.leaves]:
            metas.append(tensor_meta(f"{key}.{n}", by_name[n].shape, out_dtype))
    if transform in ("jacobian", "hessian"):
        pairs = [(a,) for a in chosen] if transform == "jacobian" else [(a, b) for a in chosen for b in chosen]
        for p, s, d in value:
            for pair in pairs:
                suffix = "." + ".".join(pair) if len(chosen) > 1 else ""
                shapes = [by_name[n].shape for n in pair]
                dims = None if s is None or None in shapes else [*s, *[d for shape in shapes for d in shape]]
                metas.append(tensor_meta(transform + p + suffix, dims, d))
    return inputs, metas


# ----------------------------------------------------------------------------- routes


def oip_error(reply: Reply) -> Response:
    """An error reply in OIP's form: {"error": "<message>"}, the same status and headers."""
    reply = in_oip_form(reply)
    headers = {k: v for k, v in reply.headers.items() if k.lower() != "connection"}
    return Response(reply.body, status_code=reply.status, headers=headers, media_type="application/json")


def in_oip_form(reply: Reply) -> Reply:
    """An error reply with OIP's body, {"error": "<message>"} (also used by the HTTP middleware for
    refusals made before a /v2 route runs: a body over the size limit, say)."""
    _, message = error_of(reply)
    return Reply(reply.status, orjson.dumps({"error": message}), dict(reply.headers), reply.error_type)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def install(app: FastAPI, lanes: Any, pipeline: Any, require_key: Any) -> None:
    """Add the /v2 routes to the app."""
    threads = anyio.CapacityLimiter(max(2, pipeline.settings.compute_threads))

    def request_id(request: Request) -> str:
        return request.scope.get("state", {}).get("request_id", "")

    def check_query(request: Request, allowed: frozenset[str] = frozenset()) -> None:
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise InvalidRequest(f"unknown query parameter(s) {unknown}" + (
                f"; this route takes {sorted(allowed)}" if allowed else "; this route takes none"))

    async def answer(request: Request, work: Any) -> Response:
        """Run a route's work, every failure in OIP's error form."""
        try:
            return await work()
        except Refused as refused:
            return oip_error(refused.reply)
        except Exception as e:  # noqa: BLE001 - mapped by type; anything else is logged as a bug (500)
            return oip_error(refusal(pipeline, e, request_id(request)).reply)

    async def model_inputs(request: Request, name: str, version: str | None) -> tuple[ModelInputs, int | None]:
        info = await ask(lanes, Call("get_model", model=name, request_id=request_id(request)))
        model = ModelInputs.from_model_info(info)
        if version is None or version == "":
            return model, None
        if not version.isdigit() or int(version) not in model.versions:
            raise NotFound(f"model {name!r} has no version {version[:20]!r}; its versions are "
                           f"{[str(v) for v in model.versions]}", {"model": name, "versions": model.versions})
        return model, int(version)

    @app.get(PREFIX, include_in_schema=False)
    async def server_metadata(request: Request) -> Response:
        async def work() -> Response:
            check_query(request)
            return _json({"name": "nabla", "version": __version__, "extensions": EXTENSIONS})
        return await answer(request, work)

    @app.get(PREFIX + "/health/live", include_in_schema=False)
    async def live(request: Request) -> Response:
        return _json({"live": True})

    @app.get(PREFIX + "/health/ready", include_in_schema=False)
    async def ready(request: Request) -> Response:
        ok = await anyio.to_thread.run_sync(pipeline.registry.ping, limiter=lanes.registry)
        if not ok:
            return _json({"error": "the model registry does not answer"}, 503)
        return _json({"ready": True})

    async def model_metadata(request: Request, name: str, version: str | None) -> Response:
        async def work() -> Response:
            require_key(request)
            check_query(request, frozenset({"transform", "argnums"}))
            model, number = await model_inputs(request, name, version)
            transform = request.query_params.get("transform", "value")
            if transform not in tensor_transforms():
                raise InvalidRequest(f"query parameter transform: unknown {transform[:40]!r}; use one of "
                                     f"{', '.join(tensor_transforms())}")
            argnums = check_argnums_text(request.query_params.get("argnums", 0), model.params)
            model.positions(argnums)  # in range, or a 400 naming the parameters
            outputs = await traced_outputs(request, model, name, number)
            inputs, metas = describe(model, outputs, transform, argnums)
            return _json({"name": name, "versions": [str(v) for v in model.versions], "platform": PLATFORM,
                          "inputs": inputs, "outputs": metas})
        return await answer(request, work)

    async def traced_outputs(request: Request, model: ModelInputs, name: str,
                             version: int | None) -> list[tuple[str, list[int | str], str]] | None:
        """The value's output leaves (shapes with free dimensions marked), from two abstract
        traces of the model; None when its parameters are untyped or it cannot be traced."""
        if not model.fully_typed:
            return None
        function = {"model": name} if version is None else {"model": name, "version": version}
        traces = []
        for base in (2, 5):
            body = orjson.dumps({"function": function, "args": trace_args(model, base)})
            try:
                traced = await ask(lanes, Call("shapes", body, request_id=request_id(request)))
            except Refused:
                return None
            traces.append(shape_leaves(traced["output"], ""))
        return merge_traces(*traces)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        async def work() -> Response:
            require_key(request)
            check_query(request)
            if request.headers.get("content-encoding", "identity").lower() != "identity":
                encoding = request.headers["content-encoding"][:40]
                raise UnsupportedMediaType("compressed request bodies are not supported: send the body without "
                                           "Content-Encoding", {"content_encoding": encoding})
            raw = await request.body()
            model, number = await model_inputs(request, name, version)
            plan = await anyio.to_thread.run_sync(translate_request, pipeline, raw, request.headers.get(HEADER_LENGTH),
                                                  model, number, limiter=threads)
            reply = await lanes.reply(Call("compute", plan.body, transform=plan.transform, model=name,
                                           request_id=request_id(request)))
            if reply.status >= 300:
                return oip_error(reply)
            body, headers = await anyio.to_thread.run_sync(translate_answer, reply.body, plan, model, name,
                                                           limiter=threads)
            return Response(body, headers=headers)
        return await answer(request, work)

    async def metadata_route(request: Request) -> Response:
        return await model_metadata(request, request.path_params["name"], request.path_params.get("version"))

    async def ready_route(request: Request) -> Response:
        async def work() -> Response:
            require_key(request)
            check_query(request)
            name = request.path_params["name"]
            await model_inputs(request, name, request.path_params.get("version"))
            return _json({"name": name, "ready": True})
        return await answer(request, work)

    async def infer_route(request: Request) -> Response:
        return await infer(request, request.path_params["name"], request.path_params.get("version"))

    for base in (PREFIX + "/models/{name}", PREFIX + "/models/{name}/versions/{version}"):
        app.get(base, include_in_schema=False)(metadata_route)
        app.get(base + "/ready", include_in_schema=False)(ready_route)
        app.post(base + "/infer", include_in_schema=False)(infer_route)

    @app.api_route(PREFIX + "/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def unknown_route(request: Request, rest: str) -> Response:
        error = NotFound(f"no Open Inference Protocol route {request.method} {request.url.path[:200]!r}; Nabla "
                         "serves /v2, /v2/health/{live,ready}, GET /v2/models/{name}[/versions/{v}][/ready] and "
                         "POST .../infer")
        return oip_error(pipeline.error_reply(error, request_id(request)))


__all__ = ["install", "translate_answer", "translate_request"]
