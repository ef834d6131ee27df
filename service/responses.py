"""The documented response bodies (OpenAPI), one model per answer, so a generated client gets
typed results. The pipeline writes these shapes itself (service.pipeline); tests check that
real answers validate against the published schemas.

Array-valued fields are JSON pytrees: a number, nested lists, an object of them, or a base64
`{"$array": {dtype, shape, data}}` leaf with `"encoding": "base64"`. A MessagePack answer
(Accept: application/msgpack) has the same fields, every array a leaf whose data is bin bytes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.requests import FUNCTION_REF

ArrayTree = Any  # documented by each field's description; any JSON


class ModelRefMeta(BaseModel):
    name: str
    version: int


class Meta(BaseModel):
    transform: str
    dtype: str = Field(description="the float type the result was computed in")
    elapsed_ms: float
    graph_nodes: int | None = Field(description="nodes of the compiled plan (null for check_grads)")
    cache_hit: bool = Field(description="the compiled plan was reused")
    examples: int | None = Field(None, description="with in_axes: the number of examples computed")
    model: ModelRefMeta | None = None


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meta: Meta
    aux: ArrayTree = Field(None, description="the function's auxiliary output, with has_aux")


class ValueResponse(_Answer):
    value: ArrayTree = Field(description="f(args)")


class GradResponse(_Answer):
    grad: ArrayTree = Field(description="the gradient, in the structure of the argument (a list of them for a "
                                        "list of argnums)")


class ValueAndGradResponse(_Answer):
    value: ArrayTree
    grad: ArrayTree


class JvpResponse(_Answer):
    value: ArrayTree
    jvp: ArrayTree = Field(description="J(args) @ tangents, shaped like the output (with batched_tangents, each "
                                       "leaf has the batch axis first)")


class VjpResponse(_Answer):
    value: ArrayTree
    vjp: list[ArrayTree] = Field(description="cotangent @ J(args), one entry per argument (with batched_cotangent, "
                                             "each leaf has the batch axis first)")


class JacobianResponse(_Answer):
    jacobian: ArrayTree


class HessianResponse(_Answer):
    hessian: ArrayTree


class HvpResponse(_Answer):
    value: ArrayTree = Field(description="f(args), a scalar")
    grad: ArrayTree = Field(description="the gradient with respect to args[argnums] (a list for a list of argnums)")
    hvp: ArrayTree = Field(description="H(args) @ tangents, in the gradient's structure (with batched_tangents, "
                                       "each leaf has the batch axis first)")


class CheckResult(BaseModel):
    order: int
    mode: str
    kind: str
    passed: bool
    max_abs_error: float | str | None = None
    max_rel_error: float | str | None = None
    atol: float | None = None
    rtol: float | None = None
    model_config = ConfigDict(extra="allow")


class CheckReport(BaseModel):
    passed: bool
    results: list[CheckResult]


class CheckGradsResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    check: CheckReport
    meta: Meta


COMPUTE_RESPONSES: dict[str, type[BaseModel]] = {
    "value": ValueResponse, "grad": GradResponse, "value_and_grad": ValueAndGradResponse, "jvp": JvpResponse,
    "vjp": VjpResponse, "jacobian": JacobianResponse, "hessian": HessianResponse, "hvp": HvpResponse,
    "check_grads": CheckGradsResponse,
}


class ParamSpecLeaf(BaseModel):
    shape: list[int | str]
    dtype: str


class ModelSummary(BaseModel):
    name: str
    version: int
    source: str = Field(description="builtin, repository or registry")
    description: str
    params: list[str]
    graph_nodes: int | None
    signature: str | None = Field(description="the typed parameters, e.g. 'x: f64[n]' (null: untyped)")


class ModelList(BaseModel):
    models: list[ModelSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class ModelInfo(BaseModel):
    name: str
    source: str
    description: str
    params: list[str]
    constants: list[str]
    versions: list[int]
    latest: int
    graph_nodes: int | None
    schema_: dict[str, Any] | None = Field(alias="schema", description="each parameter's spec: a pytree of "
                                                                        "{shape, dtype} leaves")
    signature: str | None
    created_at: str | None = None
    function: dict[str, Any] | None = None


class Registered(BaseModel):
    name: str
    version: int
    params: list[str]
    constants: list[str]
    graph_nodes: int
    schema_: dict[str, Any] | None = Field(alias="schema")
    signature: str | None


class Deleted(BaseModel):
    name: str
    deleted_versions: int
    version: int | None = None


class ShapesResponse(BaseModel):
    output: Any = Field(description="the output's structure with {shape, dtype} leaves")
    meta: dict[str, Any]


class GraphNodeCounts(BaseModel):
    function: int = Field(description="operations of the function itself")
    traced: int = Field(description="operations of the derivative as traced")
    optimised: int = Field(description="operations of the derivative after optimisation (what /v1/grad runs)")


class GraphMeta(BaseModel):
    order: int
    argnums: int | list[int]
    elapsed_ms: float


class GraphResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the graph format's schema, which service.schemas adds to the document's components
    graph: Annotated[dict[str, Any], WithJsonSchema({FUNCTION_REF: "NablaGraphV1"})] = Field(
        description="the optimised derivative as a nabla.graph/1 document")
    shapes: dict[str, list[ParamSpecLeaf]] = Field(description="each node's outputs' shapes and dtypes, by node id")
    nodes: GraphNodeCounts
    meta: GraphMeta


class Op(BaseModel):
    name: str
    arity: int | None
    attrs: list[str]
    vjp: bool
    jvp: bool
    doc: str


class OpsResponse(BaseModel):
    graph_format: str
    ops: list[Op]
    expression_functions: list[str]


class JsonSchemaDocument(BaseModel):
    """A JSON Schema (draft 2020-12) document."""

    model_config = ConfigDict(extra="allow")
    type: str = "object"


class Health(BaseModel):
    status: str
    registry: str | None = None


RESPONSE_MODELS: list[type[BaseModel]] = [*COMPUTE_RESPONSES.values(), ModelList, ModelInfo, Registered, Deleted,
                                          ShapesResponse, OpsResponse, Health, JsonSchemaDocument, GraphResponse]
