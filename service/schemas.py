"""The API's documented request shapes (OpenAPI), with examples.

Bodies are parsed by the service itself (in a worker thread, with its own limits), so these
models document the API rather than validate it; the graph format's JSON Schema is published
in the OpenAPI document too.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, Field

from engine.serialize import load_schema

TUTORIAL_EXPR = ("z = inputs @ W + b\np = 0.5 * (tanh(z / 2) + 1)\n"
                 "-sum(log(p * targets + (1 - p) * (1 - targets)))")
TUTORIAL_ARGS = [[-0.36838785, -2.275689, 0.01144757], 0.8535516,
                 [[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]],
                 [True, True, False, True]]


class ExprFunction(BaseModel):
    expr: str = Field(description="a program in the expression language (see docs/FORMATS.md)")
    params: list[str] = Field(description="parameter names, in argument order")


class GraphFunctionSpec(BaseModel):
    graph: dict[str, Any] = Field(description="a nabla.graph/1 document (schema: NablaGraphV1)")


class ModelRef(BaseModel):
    model: str
    version: int | None = Field(None, description="a version number; the latest when omitted")


class CheckOptions(BaseModel):
    order: int = 1
    modes: list[Literal["fwd", "rev"]] = ["fwd", "rev"]
    eps: float | None = None
    atol: float | None = None
    rtol: float | None = None


class ComputeRequest(BaseModel):
    function: ExprFunction | GraphFunctionSpec | ModelRef
    args: list[Any] = Field(description="one pytree per parameter: numbers, nested lists, objects, null, "
                                        "or {\"$array\": {dtype, shape, data (base64)}} leaves")
    argnums: int | list[int] = Field(0, description="grad, value_and_grad, jacobian, hessian")
    has_aux: bool = Field(False, description="the function returns (output, aux)")
    order: int = Field(1, description="grad only: apply grad this many times")
    tangents: list[Any] | None = Field(None, description="jvp only: one pytree per argument")
    cotangent: Any = Field(None, description="vjp only: shaped like the output")
    mode: Literal["rev", "fwd"] = Field("rev", description="jacobian only")
    check: CheckOptions | None = Field(None, description="check_grads only")
    dtype: Literal["float32", "float64"] = "float32"
    encoding: Literal["json", "base64"] = Field("json", description="how arrays in the response are written")


class ModelComputeRequest(BaseModel):
    args: list[Any]
    version: int | None = None
    argnums: int | list[int] = 0
    has_aux: bool = False
    order: int = 1
    tangents: list[Any] | None = None
    cotangent: Any = None
    mode: Literal["rev", "fwd"] = "rev"
    check: CheckOptions | None = None
    dtype: Literal["float32", "float64"] = "float32"
    encoding: Literal["json", "base64"] = "json"


class RegisterRequest(BaseModel):
    name: str
    function: ExprFunction | GraphFunctionSpec
    constants: dict[str, Any] = Field(default_factory=dict, description="parameters bound by name")
    description: str = ""


class ShapeSpec(BaseModel):
    shape: list[int]
    dtype: str = "float32"


class ShapesRequest(BaseModel):
    function: ExprFunction | GraphFunctionSpec | ModelRef
    args: list[Any] = Field(description="pytrees whose leaves are {shape, dtype} specs")


class ErrorBody(BaseModel):
    type: str
    message: str
    detail: dict[str, Any]
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


_EXAMPLES: dict[str, dict[str, Any]] = {
    "value": {"function": {"expr": "sum(tanh(x) ** 2)", "params": ["x"]}, "args": [[0.5, -1.0, 2.0]]},
    "grad": {"function": {"expr": TUTORIAL_EXPR, "params": ["W", "b", "inputs", "targets"]},
             "args": TUTORIAL_ARGS, "argnums": [0, 1]},
    "value_and_grad": {"function": {"model": "tutorial_logreg"},
                       "args": [[-0.36838785, -2.275689, 0.01144757], 0.8535516], "argnums": [0, 1]},
    "jvp": {"function": {"expr": "sin(x) * y", "params": ["x", "y"]}, "args": [1.0, 2.0], "tangents": [1.0, 0.0]},
    "vjp": {"function": {"expr": "x * x", "params": ["x"]}, "args": [[1.0, 2.0]], "cotangent": [1.0, 1.0]},
    "jacobian": {"function": {"expr": "tanh(A @ x)", "params": ["A", "x"]},
                 "args": [[[1.0, 2.0], [3.0, 4.0]], [0.1, 0.2]], "argnums": 1},
    "hessian": {"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0, 3.0]], "dtype": "float64"},
    "check_grads": {"function": {"expr": "sum(sin(x) * x ** 2)", "params": ["x"]}, "args": [[0.5, 1.5]],
                    "dtype": "float64", "check": {"order": 2, "modes": ["fwd", "rev"]}},
}

_SUMMARIES = {
    "value": "Evaluate the function", "grad": "Gradient (order n: grad applied n times)",
    "value_and_grad": "Value and gradient in one pass", "jvp": "Jacobian-vector product (forward mode)",
    "vjp": "Vector-Jacobian product (reverse mode)", "jacobian": "Full Jacobian (reverse or forward mode)",
    "hessian": "Hessian (forward over reverse)", "check_grads": "Compare derivatives with finite differences",
}


def _body(schema_name: str, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
    if examples:
        content["examples"] = {k: {"value": v} for k, v in examples.items()}
    return {"requestBody": {"required": True, "content": {"application/json": content}},
            "responses": {"4XX": {"description": "a bad request: the body says what and where",
                                  "content": {"application/json": {"schema": {
                                      "$ref": "#/components/schemas/ErrorResponse"}}}}}}


def model_compute_body() -> dict[str, Any]:
    return _body("ModelComputeRequest", {"tutorial": {"args": [[-0.36838785, -2.275689, 0.01144757], 0.8535516],
                                                      "argnums": [0, 1]}})


def shapes_body() -> dict[str, Any]:
    return _body("ShapesRequest", {"matmul": {"function": {"expr": "tanh(A @ x)", "params": ["A", "x"]},
                                              "args": [{"shape": [100, 50]}, {"shape": [50]}]}})


def register_body() -> dict[str, Any]:
    return _body("RegisterRequest", {"tutorial": {
        "name": "my_logreg", "description": "the tutorial's loss",
        "function": {"expr": TUTORIAL_EXPR, "params": ["W", "b", "inputs", "targets"]},
        "constants": {"inputs": TUTORIAL_ARGS[2], "targets": TUTORIAL_ARGS[3]}}})


def add_compute_route(app: FastAPI, transform: str, service: Any, in_thread: Any, require_key: Any) -> None:
    async def handler(request: Request) -> Response:
        raw = await request.body()
        payload = await in_thread(service.compute, transform, raw)
        import json

        return Response(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(),
                        media_type="application/json")

    handler.__name__ = f"compute_{transform}"
    app.post(f"/v1/{transform}", tags=["compute"], dependencies=[Depends(require_key)],
             summary=_SUMMARIES[transform], name=f"compute_{transform}",
             openapi_extra=_body("ComputeRequest", {transform: _EXAMPLES[transform]}))(handler)


def install_openapi(app: FastAPI) -> None:
    """Add the request models and the graph format's JSON Schema to the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes, tags=app.openapi_tags)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ComputeRequest, ModelComputeRequest, RegisterRequest, ShapesRequest, ErrorResponse):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                components[name] = definition
            components[model.__name__] = model_schema
        graph_schema = load_schema()
        for name, definition in graph_schema.pop("$defs", {}).items():
            components[f"NablaGraphV1_{name}"] = _rewrite_refs(definition)
        components["NablaGraphV1"] = _rewrite_refs(graph_schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (v.replace("#/$defs/", "#/components/schemas/NablaGraphV1_") if k == "$ref" else _rewrite_refs(v))
                for k, v in node.items() if k not in ("$schema", "$id")}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node
