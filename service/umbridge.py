"""UM-Bridge (protocol version 1.0, the HTTP protocol of the `umbridge` package) over the pipeline.

UM-Bridge models map a list of input vectors to a list of output vectors. A Nabla model is one
when its parameters are typed with float leaves: each leaf of each parameter, in schema order, is
one input vector (row-major), and each leaf of its output, in `tree_flatten` order, one output
vector. Dimension names (`x: f64[n]`) are bound by the vectors a request sends, or by `config`
(`{"n": 5}`) where a size must be known before any vector is seen (InputSizes, OutputSizes).

Every route translates into `Call`s answered through the shared lanes: Evaluate is `value`,
Gradient a `vjp` with the sensitivity as the output's cotangent, ApplyJacobian a `jvp` with the
vector as the input's tangent, ApplyHessian the Hessian of sens . F applied to a vector: an `hvp`
(forward over reverse) when the output is a scalar, else the `hessian` block of that output and
those inputs, contracted with sens and the vector (bounded by the same admission as any Hessian).
Errors come back in UM-Bridge's form, {"error": {"type", "message"}}, with status 400 for a bad
input and the pipeline's own status (413, 503...) for limits and load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service import requests as R
from service.errors import InvalidRequest, NotFound
from service.json_trees import dumps
from service.model_schema import is_leaf, join
from service.named_tensors import (
    InputLeaf,
    ModelInputs,
    Refused,
    ask,
    compose,
    derivative_leaves,
    error_of,
    json_bytes,
    read_array,
    refusal,
    tree_leaves_named,
)
from service.pipeline import Call, Reply

PREFIX = "/umbridge"
PROTOCOL_VERSION = 1.0
SUPPORT = {"Evaluate": True, "Gradient": True, "ApplyJacobian": True, "ApplyHessian": True}

# UM-Bridge's error types; everything a caller can fix is InvalidInput, as in the reference server.
_ERROR_TYPES = {"not_found": "ModelNotFound", "overloaded": "Overloaded", "timeout": "Timeout",
                "registry_unavailable": "Unavailable", "not_ready": "Unavailable", "internal_error": "InternalError",
                "unauthorized": "Unauthorized", "forbidden": "Forbidden", "limit_exceeded": "LimitExceeded"}
# UM-Bridge answers 400 to every bad input; limits (413), auth and load keep their status.
_AS_BAD_INPUT = (404, 415, 422)


# ----------------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Size = Annotated[int, Field(ge=0, le=2**62)]
Index = Annotated[int, Field(ge=0, le=2**31)]


class ModelRequest(_Body):
    name: str = Field(max_length=64)
    config: dict[str, Size] = Field(default_factory=dict)


class EvaluateRequest(ModelRequest):
    input: list[list[float]]


# UM-Bridge's field names are camelCase; the Python names are the protocol's, in snake_case.
class GradientRequest(EvaluateRequest):
    out_wrt: Index = Field(alias="outWrt")
    in_wrt: Index = Field(alias="inWrt")
    sens: list[float]


class ApplyJacobianRequest(EvaluateRequest):
    out_wrt: Index = Field(alias="outWrt")
    in_wrt: Index = Field(alias="inWrt")
    vec: list[float]


class ApplyHessianRequest(EvaluateRequest):
    out_wrt: Index = Field(alias="outWrt")
    in_wrt1: Index = Field(alias="inWrt1")
    in_wrt2: Index = Field(alias="inWrt2")
    sens: list[float]
    vec: list[float]


def _validated(model: type[_Body], doc: Any, route: str) -> Any:
    if not isinstance(doc, dict):
        raise InvalidRequest(f"{route}: the body must be a JSON object with the model's name")
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        problems = R.validation_problems(e)
        first = problems[0]
        raise InvalidRequest(f"{route}: {first['path']}: {first['problem']}", {"errors": problems}) from None


# ----------------------------------------------------------------------------- sizes


@dataclass
class BridgeModel:
    """A model's inputs as UM-Bridge vectors, and the sizes its dimension names have so far."""

    inputs: ModelInputs
    sizes: dict[str, int]

    def dimension_names(self) -> list[str]:
        return sorted({d for leaf in self.inputs.leaves for d in leaf.shape or () if isinstance(d, str)})

    def shape(self, leaf: InputLeaf) -> list[int]:
        missing = [d for d in leaf.shape or () if isinstance(d, str) and d not in self.sizes]
        if missing:
            raise InvalidRequest(f"input {leaf.name} of model {self.inputs.name!r} has the free dimension(s) "
                                 f"{missing}: send their sizes in config, e.g. {{\"{missing[0]}\": 3}}",
                                 {"input": leaf.name, "dimensions": missing})
        return [d if isinstance(d, int) else self.sizes[d] for d in leaf.shape or ()]

    def bind(self, vectors: list[list[float]]) -> list[np.ndarray]:
        """The input vectors as the model's arrays, binding dimension names from their lengths."""
        leaves = self.inputs.leaves
        if len(vectors) != len(leaves):
            raise InvalidRequest(f"model {self.inputs.name!r} takes {len(leaves)} input vector(s) "
                                 f"{[leaf.name for leaf in leaves]}, got {len(vectors)}",
                                 {"expected": len(leaves), "got": len(vectors)})
        arrays = []
        for i, (leaf, vector) in enumerate(zip(leaves, vectors)):
            shape = leaf.shape or ()
            free = sorted({d for d in shape if isinstance(d, str) and d not in self.sizes})
            known = math.prod(d if isinstance(d, int) else self.sizes.get(d, 1) for d in shape)
            if len(free) > 1 or (free and known == 0):
                raise InvalidRequest(f"input {i} ({leaf.name}): its length cannot tell the sizes of {free}; send "
                                     "them in config", {"input": leaf.name, "dimensions": free})
            if free:
                repeats = shape.count(free[0])
                size = round((len(vector) / known) ** (1 / repeats))
                if known * size ** repeats != len(vector):
                    raise InvalidRequest(f"Input parameter {i} ({leaf.name}) has invalid length! Its shape "
                                         f"{list(shape)} needs {known} x {free[0]}^{repeats} numbers, but got "
                                         f"{len(vector)}.", {"input": leaf.name, "got": len(vector)})
                self.sizes[free[0]] = size
            expected = math.prod(self.shape(leaf))
            if expected != len(vector):
                raise InvalidRequest(f"Input parameter {i} ({leaf.name}) has invalid length! Expected {expected} but "
                                     f"got {len(vector)}.", {"input": leaf.name, "expected": expected,
                                                            "got": len(vector)})
            arrays.append(np.asarray(vector, dtype=np.float64).reshape(self.shape(leaf)))
        return arrays


def bridge_model(info: dict[str, Any], config: dict[str, int]) -> BridgeModel:
    """A model as UM-Bridge sees it, or an InvalidInput naming what keeps it from being one."""
    model = ModelInputs.from_model_info(info)
    untyped = [leaf.name for leaf in model.leaves if not leaf.typed]
    if untyped:
        raise InvalidRequest(f"model {model.name!r} has untyped parameter(s) {untyped}: UM-Bridge needs the sizes "
                             "of its inputs; register it with a schema or example_args", {"untyped": untyped})
    not_float = [leaf.name for leaf in model.leaves if np.dtype(leaf.dtype).kind != "f"]
    if not_float:
        raise InvalidRequest(f"model {model.name!r} has input(s) {not_float} that are not floating-point: UM-Bridge "
                             "vectors are real numbers", {"inputs": not_float})
    bridge = BridgeModel(model, {})
    unknown = sorted(set(config) - set(bridge.dimension_names()))
    if unknown:
        raise InvalidRequest(f"config names {unknown}, which are not dimensions of model {model.name!r}; it has "
                             f"{bridge.dimension_names()}", {"config": unknown})
    bridge.sizes.update(config)
    return bridge


def is_bridgeable(info: dict[str, Any]) -> bool:
    try:
        bridge_model(info, {})
    except InvalidRequest:
        return False
    return True


# ----------------------------------------------------------------------------- translation


def model_body(bridge: BridgeModel, arrays: list[np.ndarray], **fields: Any) -> bytes:
    """A /v1 model request body: the vectors as plain JSON numbers (so they take each
    parameter's declared dtype, as /v1 reads plain numbers), and the answer asked in base64."""
    values = {leaf.name: a for leaf, a in zip(bridge.inputs.leaves, arrays)}
    return dumps({"args": bridge.inputs.arguments(values), "encoding": "base64", **fields}, "json")


def output_leaves(tree: Any, path: str = "") -> list[tuple[str, list[int], str]]:
    """(path, shape, dtype) of each output leaf of a shapes answer, in tree_flatten order (the
    paths `derivative_leaves` gives)."""
    if is_leaf(tree):
        return [(path, tree["shape"], tree["dtype"])]
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in output_leaves(tree[k], join(path, k))]
    if isinstance(tree, list):
        return [x for i, v in enumerate(tree) for x in output_leaves(v, join(path, i))]
    return []


def vector(leaf: Any) -> list[float]:
    """An array leaf of a /v1 answer as a UM-Bridge vector (row-major doubles)."""
    return read_array(leaf).reshape(-1).astype(np.float64).tolist()


def vectors(tree: Any) -> list[list[float]]:
    """A /v1 answer's tree as UM-Bridge output vectors, one per leaf."""
    return [vector(leaf) for _, leaf in tree_leaves_named(tree, "")]


def leaf_of(node: Any, leaf: InputLeaf) -> Any:
    """The part of one parameter's tree (its gradient, say) that belongs to one input."""
    for key in leaf.keys:
        node = node[key]
    return node


def cotangent_tree(tree: Any, target: int, sens: np.ndarray, counter: list[int] | None = None) -> Any:
    """The output's tree with zeros everywhere but leaf `target`, which holds `sens`, each leaf
    an $array in the output's dtype (so the cotangent does not change the answer's precision)."""
    counter = counter if counter is not None else [0]
    if is_leaf(tree):
        index = counter[0]
        counter[0] += 1
        dtype = np.dtype(tree["dtype"])
        value = sens.reshape(tree["shape"]) if index == target else np.zeros(tree["shape"])
        return np.asarray(value, dtype=dtype if dtype.kind == "f" else np.float64)
    if isinstance(tree, dict):
        return {k: cotangent_tree(tree[k], target, sens, counter) for k in sorted(tree)}
    if isinstance(tree, list):
        return [cotangent_tree(v, target, sens, counter) for v in tree]
    return None


def contract_hessian(block: np.ndarray, out_shape: list[int], sens: np.ndarray, vec: np.ndarray) -> list[float]:
    """sum over the output of sens times the block's Hessian, applied to vec: the block has shape
    out + inWrt1 + inWrt2."""
    weighted = np.tensordot(sens.reshape(out_shape), block, axes=len(out_shape))
    rows = weighted.reshape(-1, vec.size)
    return (rows @ vec).astype(np.float64).tolist()


def _check_index(value: int, count: int, name: str, what: str) -> None:
    if value >= count:
        raise InvalidRequest(f"Invalid {name} index! Expected between 0 and number of {what} minus one "
                             f"({count - 1}), but got {value}", {name: value, "count": count})


def _check_length(vector: list[float], expected: int, name: str) -> None:
    if len(vector) != expected:
        raise InvalidRequest(f"Vector {name} has invalid length! Expected {expected} but got {len(vector)}.",
                             {name: len(vector), "expected": expected})


# ----------------------------------------------------------------------------- routes


def bridge_error(reply: Reply) -> Response:
    """An error reply in UM-Bridge's form: {"error": {"type", "message"}}."""
    kind, message = error_of(reply)
    status = 400 if reply.status in _AS_BAD_INPUT else reply.status
    umbridge_type = _ERROR_TYPES.get(kind, "InvalidInput" if reply.status < 500 else "InternalError")
    headers = {k: v for k, v in reply.headers.items() if k.lower() != "connection"}
    return Response(orjson.dumps({"error": {"type": umbridge_type, "message": message}}), status_code=status,
                    headers=headers, media_type="application/json")


def install(app: FastAPI, lanes: Any, pipeline: Any, require_key: Any, prefix: str = PREFIX) -> None:
    """Add the UM-Bridge routes under `prefix` to the app."""
    threads = anyio.CapacityLimiter(max(2, pipeline.settings.compute_threads))

    def request_id(request: Request) -> str:
        return request.scope.get("state", {}).get("request_id", "")

    async def answer(request: Request, work: Any) -> Response:
        try:
            require_key(request)
            payload = await work()
            return Response(await anyio.to_thread.run_sync(json_bytes, payload, limiter=threads),
                            media_type="application/json")
        except Refused as refused:
            return bridge_error(refused.reply)
        except Exception as e:  # noqa: BLE001 - mapped by type; anything else is logged as a bug (500)
            return bridge_error(refusal(pipeline, e, request_id(request)).reply)

    async def body(request: Request, model: type[_Body], route: str) -> Any:
        raw = await request.body()
        return await anyio.to_thread.run_sync(lambda: _validated(model, pipeline.parse(raw), route), limiter=threads)

    async def model_of(request: Request, name: str, config: dict[str, int]) -> BridgeModel:
        info = await ask(lanes, Call("get_model", model=name, request_id=request_id(request)))
        return bridge_model(info, config)

    async def off_loop(work: Any, *args: Any) -> Any:
        """Translation of large vectors runs on a thread, never on the event loop."""
        return await anyio.to_thread.run_sync(work, *args, limiter=threads)

    async def compute(request: Request, name: str, transform: str, build_body: Any) -> Any:
        payload = await off_loop(build_body)
        return await ask(lanes, Call("compute", payload, transform=transform, model=name,
                                     request_id=request_id(request)))

    async def outputs_of(request: Request, bridge: BridgeModel, shapes: list[list[int]]) -> Any:
        """The model's output tree of {shape, dtype} leaves for inputs of these shapes."""
        specs = {leaf.name: {"shape": s, "dtype": leaf.dtype} for leaf, s in zip(bridge.inputs.leaves, shapes)}
        payload = orjson.dumps({"function": {"model": bridge.inputs.name}, "args": bridge.inputs.arguments(specs)})
        return (await ask(lanes, Call("shapes", payload, request_id=request_id(request))))["output"]

    async def models() -> list[str]:
        """The models UM-Bridge can call: typed, float parameters (fetched a page at a time)."""
        names, cursor = [], None
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            page = await ask(lanes, Call("list_models", query=query))
            for entry in page["models"]:
                if entry.get("signature") is None:
                    continue  # untyped: its sizes are unknown
                try:
                    info = await ask(lanes, Call("get_model", model=entry["name"]))
                except Refused:
                    continue  # deleted meanwhile
                if is_bridgeable(info):
                    names.append(entry["name"])
            cursor = page.get("next_cursor")
            if not cursor:
                return names

    @app.get(prefix + "/Info", include_in_schema=False)
    async def info(request: Request) -> Response:
        async def work() -> Any:
            return {"protocolVersion": PROTOCOL_VERSION, "models": await models()}
        return await answer(request, work)

    @app.post(prefix + "/ModelInfo", include_in_schema=False)
    async def model_info(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, ModelRequest, "ModelInfo")
            await model_of(request, asked.name, asked.config)
            return {"support": SUPPORT}
        return await answer(request, work)

    @app.post(prefix + "/InputSizes", include_in_schema=False)
    async def input_sizes(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, ModelRequest, "InputSizes")
            bridge = await model_of(request, asked.name, asked.config)
            return {"inputSizes": [math.prod(bridge.shape(leaf)) for leaf in bridge.inputs.leaves]}
        return await answer(request, work)

    @app.post(prefix + "/OutputSizes", include_in_schema=False)
    async def output_sizes(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, ModelRequest, "OutputSizes")
            bridge = await model_of(request, asked.name, asked.config)
            tree = await outputs_of(request, bridge, [bridge.shape(leaf) for leaf in bridge.inputs.leaves])
            return {"outputSizes": [math.prod(s) for _, s, _ in output_leaves(tree)]}
        return await answer(request, work)

    @app.post(prefix + "/Evaluate", include_in_schema=False)
    async def evaluate(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, EvaluateRequest, "Evaluate")
            bridge = await model_of(request, asked.name, asked.config)
            arrays = await off_loop(bridge.bind, asked.input)
            result = await compute(request, asked.name, "value", lambda: model_body(bridge, arrays))
            return {"output": await off_loop(vectors, result["value"])}
        return await answer(request, work)

    @app.post(prefix + "/Gradient", include_in_schema=False)
    async def gradient(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, GradientRequest, "Gradient")
            bridge = await model_of(request, asked.name, asked.config)
            arrays = await off_loop(bridge.bind, asked.input)
            _check_index(asked.in_wrt, len(arrays), "inWrt", "inputs")
            tree = await outputs_of(request, bridge, [list(a.shape) for a in arrays])
            outputs = output_leaves(tree)
            _check_index(asked.out_wrt, len(outputs), "outWrt", "outputs")
            _check_length(asked.sens, math.prod(outputs[asked.out_wrt][1]), "sens")
            cotangent = cotangent_tree(tree, asked.out_wrt, np.asarray(asked.sens))
            result = await compute(request, asked.name, "vjp",
                                   lambda: model_body(bridge, arrays, cotangent=_tagged(cotangent)))
            leaf = bridge.inputs.leaves[asked.in_wrt]
            return {"output": await off_loop(vector, leaf_of(result["vjp"][leaf.param], leaf))}
        return await answer(request, work)

    @app.post(prefix + "/ApplyJacobian", include_in_schema=False)
    async def apply_jacobian(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, ApplyJacobianRequest, "ApplyJacobian")
            bridge = await model_of(request, asked.name, asked.config)
            arrays = await off_loop(bridge.bind, asked.input)
            _check_index(asked.in_wrt, len(arrays), "inWrt", "inputs")
            _check_length(asked.vec, arrays[asked.in_wrt].size, "vec")
            tangents = [np.zeros_like(a) for a in arrays]
            tangents[asked.in_wrt] = np.asarray(asked.vec).reshape(arrays[asked.in_wrt].shape)
            result = await compute(request, asked.name, "jvp",
                                   lambda: model_body(bridge, arrays, tangents=_as_arguments(bridge, tangents)))
            produced = await off_loop(vectors, result["jvp"])
            _check_index(asked.out_wrt, len(produced), "outWrt", "outputs")
            return {"output": produced[asked.out_wrt]}
        return await answer(request, work)

    @app.post(prefix + "/ApplyHessian", include_in_schema=False)
    async def apply_hessian(request: Request) -> Response:
        async def work() -> Any:
            asked = await body(request, ApplyHessianRequest, "ApplyHessian")
            bridge = await model_of(request, asked.name, asked.config)
            arrays = await off_loop(bridge.bind, asked.input)
            for value, name in ((asked.in_wrt1, "inWrt1"), (asked.in_wrt2, "inWrt2")):
                _check_index(value, len(arrays), name, "inputs")
            _check_length(asked.vec, arrays[asked.in_wrt2].size, "vec")
            tree = await outputs_of(request, bridge, [list(a.shape) for a in arrays])
            outputs = output_leaves(tree)
            _check_index(asked.out_wrt, len(outputs), "outWrt", "outputs")
            out_shape = outputs[asked.out_wrt][1]
            _check_length(asked.sens, math.prod(out_shape), "sens")
            first, second = bridge.inputs.leaves[asked.in_wrt1], bridge.inputs.leaves[asked.in_wrt2]
            sens, vec = np.asarray(asked.sens), np.asarray(asked.vec)
            if len(outputs) == 1 and not out_shape:
                return {"output": await hvp_product(request, bridge, arrays, first, second, float(sens[0]), vec)}
            return {"output": await hessian_product(request, bridge, arrays, first, second, outputs[asked.out_wrt][0],
                                                    out_shape, sens, vec)}
        return await answer(request, work)

    async def hvp_product(request: Request, bridge: BridgeModel, arrays: list[np.ndarray], first: InputLeaf,
                          second: InputLeaf, weight: float, vec: np.ndarray) -> list[float]:
        """sens * H v of a scalar output, forward over reverse (the Hessian is never formed)."""
        positions = sorted({first.param, second.param})
        tangent_values = {leaf.name: np.zeros_like(a) for leaf, a in zip(bridge.inputs.leaves, arrays)}
        tangent_values[second.name] = vec.reshape(tangent_values[second.name].shape)
        tangents = bridge.inputs.arguments(tangent_values, positions)
        result = await compute(request, bridge.inputs.name, "hvp",
                               lambda: model_body(bridge, arrays, argnums=positions, tangents=tangents))
        product = leaf_of(result["hvp"][positions.index(first.param)], first)
        return [weight * value for value in await off_loop(vector, product)]

    async def hessian_product(request: Request, bridge: BridgeModel, arrays: list[np.ndarray], first: InputLeaf,
                              second: InputLeaf, out_path: str, out_shape: list[int], sens: np.ndarray,
                              vec: np.ndarray) -> list[float]:
        """sum_o sens_o H_o v for an output that is not one scalar: the Hessian block of those
        inputs, contracted (admission refuses a block over the limits, with the figures)."""
        positions = sorted({first.param, second.param})
        result = await compute(request, bridge.inputs.name, "hessian",
                               lambda: model_body(bridge, arrays, argnums=positions))
        template = bridge.inputs.argument_template(positions)
        block = next(leaf for path, label, leaf in derivative_leaves(result["hessian"], compose(template, template))
                     if path == out_path and label == (first.name, second.name))
        return await off_loop(lambda: contract_hessian(read_array(block), out_shape, sens, vec))

    @app.api_route(prefix + "/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                   include_in_schema=False)
    async def unknown_route(request: Request, rest: str) -> Response:
        error = NotFound(f"no UM-Bridge route {request.method} {request.url.path[:200]!r}; this server speaks "
                         "Info, ModelInfo, InputSizes, OutputSizes, Evaluate, Gradient, ApplyJacobian and "
                         "ApplyHessian (no shared memory)")
        _, message = error_of(pipeline.error_reply(error, request_id(request)))
        return Response(orjson.dumps({"error": {"type": "UnsupportedFeature", "message": message}}), status_code=404,
                        media_type="application/json")


def _tagged(tree: Any) -> Any:
    """Arrays as base64 $array leaves, keeping their dtype, inside a body otherwise written as JSON."""
    from engine.serialize import encode_array

    if isinstance(tree, np.ndarray):
        return encode_array(tree, "base64")
    if isinstance(tree, dict):
        return {k: _tagged(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_tagged(v) for v in tree]
    return tree


def _as_arguments(bridge: BridgeModel, arrays: list[np.ndarray]) -> list[Any]:
    return bridge.inputs.arguments({leaf.name: a for leaf, a in zip(bridge.inputs.leaves, arrays)})


__all__ = ["install"]
