"""The OpenAPI document: the typed request models of service.requests (the same ones the
pipeline validates with), examples, the error body, and the graph format's JSON Schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, Field

from engine.serialize import load_schema
from service.requests import (
    COMPUTE_REQUESTS,
    FUNCTION_MODELS,
    FUNCTION_REF,
    MODEL_COMPUTE_REQUESTS,
    GraphRequest,
    RegisterRequest,
    ShapesRequest,
)
from service.responses import COMPUTE_RESPONSES, RESPONSE_MODELS

TUTORIAL_EXPR = ("z = inputs @ W + b\np = 0.5 * (tanh(z / 2) + 1)\n"
                 "-sum(log(p * targets + (1 - p) * (1 - targets)))")
TUTORIAL_ARGS = [[-0.36838785, -2.275689, 0.01144757], 0.8535516,
                 [[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]],
                 [True, True, False, True]]


class ErrorBody(BaseModel):
    type: str = Field(description="what kind of problem: invalid_request, invalid_function, limit_exceeded, ...")
    message: str = Field(description="what was wrong, where, and what to do instead")
    detail: dict[str, Any] = Field(description="machine-readable specifics: path, line/column, node, limit figures")
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
    "hvp": {"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0, 3.0]], "tangents": [[1.0, 0.0, -1.0]]},
    "check_grads": {"function": {"expr": "sum(sin(x) * x ** 2)", "params": ["x"]}, "args": [[0.5, 1.5]],
                    "dtype": "float64", "check": {"order": 2, "modes": ["fwd", "rev"]}},
}

_SUMMARIES = {
    "value": "Evaluate the function", "grad": "Gradient (order n: grad applied n times)",
    "value_and_grad": "Value and gradient in one pass", "jvp": "Jacobian-vector product (forward mode)",
    "vjp": "Vector-Jacobian product (reverse mode)", "jacobian": "Full Jacobian (reverse or forward mode)",
    "hessian": "Hessian (forward over reverse)",
    "hvp": "Hessian-vector product (forward over reverse, never forming the Hessian)",
    "check_grads": "Compare derivatives with finite differences",
}


_ERROR = {"description": "the body says what was wrong, where, and what to do",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


def _body(schema_name: str, examples: dict[str, Any] | None = None, response: str | None = None,
          status: str = "200") -> dict[str, Any]:
    content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
    if examples:
        content["examples"] = {k: {"value": v} for k, v in examples.items()}
    responses: dict[str, Any] = {"4XX": _ERROR, "5XX": _ERROR}
    if response:
        responses[status] = {"description": "the result",
                             "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}}}
    return {"requestBody": {"required": True, "content": {"application/json": content}}, "responses": responses}


def returns(model: type[BaseModel], status: str = "200") -> dict[str, Any]:
    """openapi_extra for a route without a body that answers `model`."""
    return {"responses": {status: {"description": "the result", "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}}


def model_compute_body(transform: str) -> dict[str, Any]:
    example = {k: v for k, v in _EXAMPLES[transform].items() if k != "function"}
    if transform in ("value_and_grad", "grad"):
        example = {"args": [[-0.36838785, -2.275689, 0.01144757], 0.8535516], "argnums": [0, 1]}
    return _body(MODEL_COMPUTE_REQUESTS[transform].__name__, {"example": example},
                 COMPUTE_RESPONSES[transform].__name__)


def shapes_body() -> dict[str, Any]:
    return _body("ShapesRequest", {"matmul": {"function": {"expr": "tanh(A @ x)", "params": ["A", "x"]},
                                              "args": [{"shape": [100, 50]}, {"shape": [50]}]}}, "ShapesResponse")


def register_body() -> dict[str, Any]:
    return _body("RegisterRequest", {"tutorial": {
        "name": "my_logreg", "description": "the tutorial's loss",
        "function": {"expr": TUTORIAL_EXPR, "params": ["W", "b", "inputs", "targets"]},
        "constants": {"inputs": TUTORIAL_ARGS[2], "targets": TUTORIAL_ARGS[3]},
        "example_args": TUTORIAL_ARGS[:2]}}, "Registered", status="201")


def add_compute_route(app: FastAPI, transform: str, lanes: Any, call: Any, json_body: Any, require_key: Any) -> None:
    async def handler(request: Request) -> Response:
        return await lanes.run(call(request, "compute", await json_body(request), transform=transform))

    handler.__name__ = f"compute_{transform}"
    model = COMPUTE_REQUESTS[transform]
    app.post(f"/v1/{transform}", tags=["compute"], dependencies=[Depends(require_key)],
             summary=_SUMMARIES[transform], name=f"compute_{transform}", operation_id=transform,
             openapi_extra=_body(model.__name__, {transform: _EXAMPLES[transform]},
                                 COMPUTE_RESPONSES[transform].__name__))(handler)


def add_model_compute_route(app: FastAPI, transform: str, lanes: Any, call: Any, json_body: Any,
                            require_key: Any) -> None:
    async def handler(name: str, request: Request) -> Response:
        return await lanes.run(call(request, "compute", await json_body(request), transform=transform, model=name))

    handler.__name__ = f"model_{transform}"
    app.post(f"/v1/models/{{name}}/{transform}", tags=["compute"], dependencies=[Depends(require_key)],
             summary=f"{_SUMMARIES[transform]}, of a model", operation_id=f"model_{transform}",
             openapi_extra=model_compute_body(transform))(handler)


def install_openapi(app: FastAPI, keyed: bool) -> None:
    """Add the request models and the graph format's JSON Schema to the OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes, tags=app.openapi_tags)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        models = [*COMPUTE_REQUESTS.values(), *MODEL_COMPUTE_REQUESTS.values(), RegisterRequest, ShapesRequest,
                  GraphRequest, ErrorResponse, *FUNCTION_MODELS, *RESPONSE_MODELS]
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                components[name] = definition
            components[model.__name__] = model_schema
        schema = _rewrite_refs(schema)
        _document_errors(schema)
        _document_security(schema, keyed)
        components = schema["components"]["schemas"]
        graph_schema = _for_generators(load_schema())
        for name, definition in graph_schema.pop("$defs", {}).items():
            components[f"NablaGraphV1_{name}"] = _rewrite_refs(definition)
        components["NablaGraphV1"] = _rewrite_refs(graph_schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _document_security(schema: dict[str, Any], keyed: bool) -> None:
    """A bearer scheme, required on /v1 when the server has keys (Swagger's Authorize button)."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer",
                         "description": "an API key (NABLA_API_KEYS); registering and deleting models needs an "
                                        "admin key (NABLA_ADMIN_KEYS)"}
    if not keyed:
        return
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/v1"):
            for op in operations.values():
                op["security"] = [{"bearer": []}]


def _document_errors(schema: dict[str, Any]) -> None:
    """Every operation answers errors with our body: FastAPI's own 422 body never reaches a
    client (the pipeline validates), so its schema is replaced by ours everywhere."""
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault("4XX", _ERROR)
            if path.startswith("/v1") or path == "/readyz":
                responses.setdefault("5XX", _ERROR)
            if path == "/v1/models" and method == "post":
                responses.pop("200", None)
                responses["200"] = {"description": "an earlier request with the same Idempotency-Key registered "
                                                   "this version; nothing was added",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/Registered"}}}}
    metrics = schema.get("paths", {}).get("/metrics", {}).get("get")
    if metrics:
        metrics["responses"]["200"] = {"description": "Prometheus text format",
                                       "content": {"text/plain": {"schema": {"type": "string"}}}}
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def _for_generators(graph_schema: dict[str, Any]) -> dict[str, Any]:
    """The graph format's schema with its recursive array data (a union of numbers, strings and
    nested lists of itself) documented as any JSON: client generators cannot type that union,
    and the server validates it in full (engine/schemas/graph-v1.json) anyway."""
    defs = graph_schema["$defs"]
    defs["nested"] = {"description": defs["nested"]["description"]}
    # Each variant of a constant becomes a named schema: generators name inline union members
    # after their parent and "$array", and then collide.
    variants = []
    for i, variant in enumerate(defs["array"]["oneOf"]):
        data = variant["properties"].get("data")
        if data is not None and "oneOf" in data:
            variant["properties"]["data"] = {"description": "nested lists of numbers, or base64 of the "
                                                            "little-endian bytes (with shape)"}
        tagged = variant["properties"].get("$array")
        if tagged is not None:
            defs["arrayBase64"] = tagged
            variant["properties"]["$array"] = {"$ref": "#/$defs/arrayBase64"}
        defs[f"arrayForm{i}"] = variant
        variants.append({"$ref": f"#/$defs/arrayForm{i}"})
    defs["array"] = {"oneOf": variants}
    return graph_schema


def _rewrite_ref(ref: str) -> str:
    return ref.replace("#/$defs/", "#/components/schemas/NablaGraphV1_")


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict) and FUNCTION_REF in node:
        return {"$ref": f"#/components/schemas/{node[FUNCTION_REF]}"}
    if isinstance(node, dict):
        return {k: (_rewrite_ref(v) if k == "$ref" else _rewrite_refs(v))
                for k, v in node.items() if k not in ("$schema", "$id")}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node
