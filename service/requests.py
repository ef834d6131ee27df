"""The typed request bodies: one model per operation, the single source of truth for validation
and for the OpenAPI document.

Array-valued fields (`args`, `tangents`, `cotangent`, `constants`) stay plain JSON here: they are
decoded later by the array codec, in chunks and under the request's deadline, so a large array is
never walked by the validator. Everything else is checked strictly (no coercion: `"1"` is not an
integer, `true` is not a number) and unknown fields are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_VERSION = 2**31 - 1
TRANSFORMS = ("value", "grad", "value_and_grad", "jvp", "vjp", "jacobian", "hessian", "hvp", "check_grads")

ModelName = Annotated[str, Field(pattern=NAME_PATTERN, description="letters, digits, '_', '.' or '-'")]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION, description="a version number; the latest when omitted")]
ArgIndex = Annotated[int, Field(ge=-256, le=255)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ExprFunction(Strict):
    expr: str = Field(description="a program in the expression language (docs/FORMATS.md)")
    params: list[str] = Field(description="parameter names, in argument order")


class GraphFunctionSpec(Strict):
    graph: dict[str, Any] = Field(description="a nabla.graph/1 document (schema: NablaGraphV1)")


class ModelRef(Strict):
    model: ModelName
    version: Version | None = None


class DerivedJvp(Strict):
    jvp: dict[str, Any] = Field(description="a function spec f: this is the function (args..., one tangent per "
                                            "argument) -> the tangent of f's output (docs/API.md, derived functions)")


class DerivedVjp(Strict):
    vjp: dict[str, Any] = Field(description="a function spec f: this is the function (args..., a cotangent of f's "
                                            "output) -> one cotangent per argument (docs/API.md, derived functions)")


FUNCTION_REF = "x-nabla-ref"


def _one_of(*models: type[BaseModel]) -> Any:
    """A JSON object documented as one of `models` but validated by the function compiler, whose
    messages point into the expression or graph (line and column, node id)."""
    # A placeholder reference (pydantic would try to resolve a real one); service.schemas
    # rewrites it into the OpenAPI document's components.
    refs = [{FUNCTION_REF: m.__name__} for m in models]
    return Annotated[dict[str, Any], WithJsonSchema({"anyOf": refs})]


FunctionSpec = _one_of(ExprFunction, GraphFunctionSpec, ModelRef, DerivedJvp, DerivedVjp)
RegistrableFunction = _one_of(ExprFunction, GraphFunctionSpec)
FUNCTION_MODELS = (ExprFunction, GraphFunctionSpec, ModelRef, DerivedJvp, DerivedVjp)


class CheckOptions(Strict):
    order: Annotated[int, Field(ge=1)] = 1
    modes: Annotated[list[Literal["fwd", "rev"]], Field(min_length=1, max_length=2)] = ["fwd", "rev"]
    eps: PositiveFinite | None = None
    atol: PositiveFinite | None = None
    rtol: PositiveFinite | None = None


def _unique_argnums(value: int | list[int]) -> int | list[int]:
    if isinstance(value, list) and len(set(value)) != len(value):
        raise ValueError("argnums must not repeat an argument: each gradient is taken once per argument")
    return value


Argnums = int | list[int]
_COMMON: dict[str, Any] = {
    "args": (list[Any], Field(description="one pytree per parameter: numbers, nested lists, objects, null, "
                                          "or {\"$array\": {dtype, shape, data (base64)}} leaves")),
    "dtype": (Literal["float32", "float64"] | None,
              Field(None, description="the float type of plain JSON numbers: by default float64 (JSON numbers "
                                      "are doubles), or what the model or graph declares for the parameter; "
                                      "$array leaves always keep their own dtype")),
    "encoding": (Literal["json", "base64"], Field("json", description="how arrays in the response are written")),
}
_ARGNUMS = (Annotated[ArgIndex, Field()] | Annotated[list[ArgIndex], Field(min_length=1, max_length=256)],
            Field(0, description="which arguments to differentiate with respect to"))
_HAS_AUX = (bool, Field(False, description="the function returns (output, aux)"))
_BATCHED_TANGENTS = (bool, Field(False, description="each tangent leaf has a leading batch axis (the same size B "
                                                    "for all): B products in one call, with that leading axis"))
# The options each transform accepts besides the common ones.
OPTIONS: dict[str, dict[str, Any]] = {
    "value": {},
    "grad": {"argnums": _ARGNUMS, "has_aux": _HAS_AUX,
             "order": (Annotated[int, Field(ge=1)], Field(1, description="apply grad this many times"))},
    "value_and_grad": {"argnums": _ARGNUMS, "has_aux": _HAS_AUX},
    "jvp": {"tangents": (list[Any], Field(description="one pytree per argument, shaped like it")),
            "has_aux": _HAS_AUX, "batched_tangents": _BATCHED_TANGENTS},
    "vjp": {"cotangent": (Any, Field(description="shaped like the function's output")), "has_aux": _HAS_AUX,
            "batched_cotangent": (bool, Field(False, description="each cotangent leaf has a leading batch axis (the "
                                                                 "same size B for all): B products in one call"))},
    "jacobian": {"argnums": _ARGNUMS, "has_aux": _HAS_AUX,
                 "mode": (Literal["rev", "fwd"], Field("rev", description="reverse or forward mode"))},
    "hessian": {"argnums": _ARGNUMS, "has_aux": _HAS_AUX},
    "hvp": {"tangents": (list[Any], Field(description="one pytree per differentiated argument (argnums order), "
                                                      "shaped like it")),
            "argnums": _ARGNUMS, "has_aux": _HAS_AUX, "batched_tangents": _BATCHED_TANGENTS},
    "check_grads": {"check": (CheckOptions, Field(default_factory=CheckOptions))},
}
# in_axes (service.batch_axes) applies to every transform but check_grads, which checks one point.
AxisEntry = Annotated[int, Field(ge=-64, le=63)] | None | list[Any] | dict[str, Any]
_IN_AXES = (Annotated[list[AxisEntry], Field(min_length=1, max_length=256)] | None,
            Field(None, description="compute per example over a batch, as jax.vmap: one entry per argument, the "
                                    "axis its examples are stacked along (negative from the end), null for an "
                                    "argument shared by every example, or a list/object of entries for a list/object "
                                    "argument; every result gains a leading axis, one entry per example"))
for _transform, _options in OPTIONS.items():
    if _transform != "check_grads":
        _options["in_axes"] = _IN_AXES


def _title(transform: str) -> str:
    return "".join(part.capitalize() for part in transform.split("_"))


def _request_model(transform: str, by_model: bool) -> type[Strict]:
    fields: dict[str, Any] = dict(_COMMON)
    if by_model:
        fields["version"] = (Version | None, Field(None, description="a version; the latest when omitted"))
    else:
        fields["function"] = (FunctionSpec, Field(description="an expression, a JSON graph or a model name"))
    fields.update(OPTIONS[transform])
    validators = {}
    if "argnums" in fields:
        validators["unique_argnums"] = field_validator("argnums")(_unique_argnums)
    name = ("Model" if by_model else "") + _title(transform) + "Request"
    return create_model(name, __base__=Strict, __validators__=validators, **fields)  # type: ignore[call-overload]


COMPUTE_REQUESTS: dict[str, type[Strict]] = {t: _request_model(t, False) for t in TRANSFORMS}
MODEL_COMPUTE_REQUESTS: dict[str, type[Strict]] = {t: _request_model(t, True) for t in TRANSFORMS}


class RegisterRequest(Strict):
    name: ModelName
    function: RegistrableFunction
    constants: dict[str, Any] = Field(default_factory=dict, description="parameters bound by name")
    description: Annotated[str, Field(max_length=2000)] = ""
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="each free parameter's spec: a pytree of {shape, dtype} leaves; a "
                                          "dimension is an integer or a name such as \"n\"")
    example_args: list[Any] | None = Field(
        None, description="one example argument per free parameter, from which the schema is inferred")


class ShapeSpec(Strict):
    shape: Annotated[list[Annotated[int, Field(ge=0, le=2**62)]], Field(max_length=32)]
    dtype: str = "float64"


class ShapesRequest(Strict):
    function: FunctionSpec
    args: list[Any] = Field(description="pytrees whose leaves are {shape, dtype} specs")


# POST /v1/graph (service.graph_view): the graph /v1/grad would compile for the same fields.
GraphRequest: type[Strict] = create_model(  # type: ignore[call-overload]
    "GraphRequest", __base__=Strict, __validators__={"unique_argnums": field_validator("argnums")(_unique_argnums)},
    function=(FunctionSpec, Field(description="an expression, a JSON graph or a model name")),
    args=(list[Any], Field(description="one pytree per parameter, as for /v1/grad; only their shapes and dtypes "
                                       "shape the graph")),
    dtype=_COMMON["dtype"], argnums=_ARGNUMS, order=OPTIONS["grad"]["order"])


def validation_problems(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as {path, problem, kind} a caller can act on."""
    out = []
    for e in error.errors(include_url=False, include_context=False, include_input=False):
        path = ".".join(str(p) for p in e["loc"] if not _is_variant_tag(p))
        out.append({"path": path or "(body)", "problem": e["msg"], "kind": e["type"]})
    return out


def _is_variant_tag(part: Any) -> bool:
    # pydantic names the union member it tried ("int", "list[int]", "constrained-int"...)
    return isinstance(part, str) and ("[" in part or part in ("int", "str", "float", "bool") or "-" in part)


# What to say about a field that does not validate, in the caller's terms.
FIELD_ADVICE = {
    "args": "args must be a list with one entry per parameter",
    "dtype": "dtype must be 'float32' or 'float64'",
    "encoding": "encoding must be 'json' or 'base64'",
    "argnums": "argnums must be an integer or a non-empty list of distinct integers",
    "has_aux": "has_aux must be true or false",
    "order": "order must be a positive integer",
    "mode": "mode must be 'rev' or 'fwd'",
    "check": "check must be an object {order, modes, eps, atol, rtol}",
    "check.order": "check.order must be a positive integer",
    "check.modes": "check.modes must be a non-empty list of 'fwd' and 'rev'",
    "check.eps": "check.eps must be a positive number (finite)",
    "check.atol": "check.atol must be a positive number (finite)",
    "check.rtol": "check.rtol must be a positive number (finite)",
    "tangents": "jvp needs tangents (a list, one per argument) and hvp needs tangents (one per differentiated "
                "argument, in argnums order), each shaped like its argument",
    "batched_tangents": "batched_tangents must be true or false",
    "batched_cotangent": "batched_cotangent must be true or false",
    "cotangent": "vjp needs a cotangent shaped like the function's output",
    "in_axes": "in_axes must be a list with one entry per argument: an integer axis, null (shared by every "
               "example), or a list or object of such entries for a list or object argument",
    "function": "the body needs a `function`: {\"expr\", \"params\"}, {\"graph\"} or {\"model\"}",
    "version": "version must be an integer from 1 to 2**31-1",
    "name": "name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
    "description": "description must be a string of at most 2000 characters",
    "constants": "constants must be an object mapping parameter names to values",
}


class ListModelsQuery(Strict):
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Annotated[str, Field(max_length=64)] | None = None
