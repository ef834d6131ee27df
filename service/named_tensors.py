"""Pytrees as flat, named tensors: the form the Open Inference Protocol and UM-Bridge speak.

A model's parameters are pytrees (service.model_schema); these protocols send a flat list of
tensors. Each leaf of a parameter's spec becomes one input named by its path, written the way
the schema writes paths (`W`, `params.W1`, `layers[0].b`); an untyped parameter is one tensor
named after the parameter. Results come back the same way: a /v1 answer's pytree flattened into
leaves named by their paths, dictionary keys in sorted order (the order of `tree_flatten`).

Derivatives are named after what they are taken with respect to. Their structure, as /v1 gives
it, is the output's tree with each leaf replaced by the differentiated arguments' trees (once per
order of differentiation); `derivative_leaves` walks it from the outside and labels each leaf with
its output path and the input names it belongs to.

Nothing here decides whether a request is valid: that is the pipeline's job, reached through
`ask` with a `Call`, exactly like a /v1 route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
import orjson

from array_codec import from_base64
from service.errors import InvalidRequest
from service.model_schema import is_leaf, join
from service.pipeline import Call, Reply

Label = tuple[str, ...]  # the input names a derivative leaf is taken with respect to


@dataclass(frozen=True)
class InputLeaf:
    """One tensor of a model's flattened inputs."""

    name: str  # its path: "x", "params.W1", "layers[0].b"
    param: int  # which parameter it belongs to
    keys: tuple[Any, ...]  # where in that parameter's tree (dict keys, list indices)
    shape: tuple[int | str, ...] | None  # dimensions (integers or names such as "n"); None: untyped
    dtype: str | None  # the declared dtype; None: untyped

    @property
    def typed(self) -> bool:
        return self.shape is not None


@dataclass
class ModelInputs:
    """A model as the protocols see it: its name, versions and flattened inputs."""

    name: str
    versions: list[int]
    params: list[str]
    leaves: list[InputLeaf]
    skeletons: list[Any]  # per parameter: its spec tree with leaves replaced by their input names

    @classmethod
    def from_model_info(cls, info: dict[str, Any]) -> ModelInputs:
        """From GET /v1/models/{name}'s answer (`Call("get_model")`)."""
        schema = info.get("schema") or {}
        leaves: list[InputLeaf] = []
        skeletons = []
        for index, param in enumerate(info["params"]):
            if param in schema:
                skeletons.append(_flatten_spec(schema[param], param, index, (), leaves))
            else:
                leaves.append(InputLeaf(param, index, (), None, None))
                skeletons.append((param,))
        return cls(info["name"], list(info.get("versions") or [1]), list(info["params"]), leaves, skeletons)

    @property
    def fully_typed(self) -> bool:
        return all(leaf.typed for leaf in self.leaves)

    def arguments(self, values: dict[str, Any], positions: list[int] | None = None) -> list[Any]:
        """The /v1 `args` (or the entries for the parameters at `positions`): each parameter's
        tree rebuilt from its leaves' values, by input name."""
        chosen = range(len(self.params)) if positions is None else positions
        return [_fill(self.skeletons[p], values) for p in chosen]

    def positions(self, argnums: int | list[int]) -> list[int]:
        """The parameter positions `argnums` names (negative ones counted from the end)."""
        chosen = [argnums] if isinstance(argnums, int) else argnums
        for a in chosen:
            if not -len(self.params) <= a < len(self.params):
                raise InvalidRequest(f"argnums {a} is out of range: model {self.name!r} takes {len(self.params)} "
                                     f"argument(s) {self.params}", {"argnums": a, "params": self.params})
        return [a % len(self.params) for a in chosen]

    def differentiated(self, argnums: int | list[int]) -> list[str]:
        """The input names of the parameters `argnums` names, in its order."""
        return [label[0] for label in template_labels(self.argument_template(argnums))]

    def argument_template(self, argnums: int | list[int]) -> Any:
        """The structure /v1 gives a derivative with respect to `argnums`: one parameter's tree
        (an integer) or a list of them, each leaf labelled with its input name."""
        positions = self.positions(argnums)
        if isinstance(argnums, int):
            return self.skeletons[positions[0]]
        return [self.skeletons[p] for p in positions]


def _flatten_spec(spec: Any, path: str, param: int, keys: tuple[Any, ...], out: list[InputLeaf]) -> Any:
    if is_leaf(spec):
        out.append(InputLeaf(path, param, keys, tuple(spec["shape"]), spec.get("dtype", "float64")))
        return (path,)
    if isinstance(spec, dict):
        return {k: _flatten_spec(v, join(path, k), param, (*keys, k), out) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_flatten_spec(v, join(path, i), param, (*keys, i), out) for i, v in enumerate(spec)]
    return None  # a parameter member that is always null


def _fill(skeleton: Any, values: dict[str, Any]) -> Any:
    if isinstance(skeleton, tuple):
        return values[skeleton[0]]
    if isinstance(skeleton, dict):
        return {k: _fill(v, values) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_fill(v, values) for v in skeleton]
    return None


# ----------------------------------------------------------------------------- answers as leaves


def is_array_leaf(node: Any) -> bool:
    """An array in a /v1 answer: a tagged `$array`, a number or a boolean."""
    return (isinstance(node, dict) and "$array" in node) or isinstance(node, (bool, int, float))


def read_array(node: Any) -> np.ndarray:
    """An array leaf of a /v1 answer as NumPy (base64 leaves bit for bit)."""
    if isinstance(node, dict):
        spec = node["$array"]
        return from_base64(spec["data"], spec["shape"], spec["dtype"])
    if isinstance(node, float) or isinstance(node, str):  # a scalar written as a number (or "NaN")
        return np.asarray(float(node))
    return np.asarray(node)


def tree_leaves_named(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, leaf) for every array leaf, dictionary keys sorted (tree_flatten's order)."""
    if node is None:
        return
    if is_array_leaf(node) or isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key in sorted(node):
            yield from tree_leaves_named(node[key], join(path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from tree_leaves_named(child, join(path, i))


def compose(outer: Any, inner: Any) -> Any:
    """`outer` with each labelled leaf replaced by `inner`, labels concatenated (the structure of
    a second derivative: the argument tree of the argument tree)."""
    if isinstance(outer, tuple):
        return _relabel(inner, outer)
    if isinstance(outer, dict):
        return {k: compose(v, inner) for k, v in outer.items()}
    if isinstance(outer, list):
        return [compose(v, inner) for v in outer]
    return None


def _relabel(template: Any, prefix: Label) -> Any:
    if isinstance(template, tuple):
        return prefix + template
    if isinstance(template, dict):
        return {k: _relabel(v, prefix) for k, v in template.items()}
    if isinstance(template, list):
        return [_relabel(v, prefix) for v in template]
    return None


def template_labels(template: Any) -> list[Label]:
    if isinstance(template, tuple):
        return [template]
    children = template.values() if isinstance(template, dict) else template if isinstance(template, list) else []
    return [label for child in children for label in template_labels(child)]


def _matches(node: Any, template: Any) -> bool:
    if isinstance(template, tuple):
        return is_array_leaf(node)
    if template is None:
        return node is None
    if isinstance(template, dict):
        return (isinstance(node, dict) and "$array" not in node and set(node) == set(template)
                and all(_matches(node[k], template[k]) for k in template))
    return (isinstance(node, list) and len(node) == len(template)
            and all(_matches(n, t) for n, t in zip(node, template)))


def derivative_leaves(node: Any, template: Any, out_path: str = "") -> Iterator[tuple[str, Label, Any]]:
    """(output path, label, leaf) for a derivative whose structure is the output's tree over
    `template`. The output's tree is peeled from the outside: a subtree with the template's
    structure is the derivative of one output leaf (an output container cannot match it, being
    deeper than the template)."""
    if _matches(node, template):
        yield from _paired(node, template, out_path)
    elif isinstance(node, dict) and "$array" not in node:
        for key in sorted(node):
            yield from derivative_leaves(node[key], template, join(out_path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from derivative_leaves(child, template, join(out_path, i))
    elif node is not None:
        raise ValueError("a derivative does not have the structure of the model's arguments")


def _paired(node: Any, template: Any, out_path: str) -> Iterator[tuple[str, Label, Any]]:
    if isinstance(template, tuple):
        yield out_path, template, node
    elif isinstance(template, dict):
        for key in sorted(template):
            yield from _paired(node[key], template[key], out_path)
    elif isinstance(template, list):
        for child, t in zip(node, template):
            yield from _paired(child, t, out_path)


# ----------------------------------------------------------------------------- the pipeline


class Refused(Exception):
    """The pipeline (or the translation in front of it) refused a request: its error reply,
    which each protocol rewrites in its own error form."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def error_of(reply: Reply) -> tuple[str, str]:
    """(type, message) of an error reply's {"error": {type, message, detail}} body."""
    try:
        error = orjson.loads(reply.body)["error"]
        return str(error["type"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "internal_error", "the server could not describe this error"


async def ask(lanes: Any, call: Call) -> Any:
    """The pipeline's JSON answer to a call (through the lanes every protocol shares); an error
    reply is raised as Refused."""
    reply = await lanes.reply(call)
    if reply.status >= 300:
        raise Refused(reply)
    if len(reply.body) > _LARGE_ANSWER:  # a Hessian can be megabytes: parsed off the event loop
        return await anyio.to_thread.run_sync(orjson.loads, reply.body)
    return orjson.loads(reply.body)


_LARGE_ANSWER = 1 << 20


def refusal(pipeline: Any, error: Exception, request_id: str) -> Refused:
    """An exception raised while translating as an error reply: an APIError as the pipeline
    answers it; anything else is a bug of the translation, logged and answered as a JSON 500."""
    return Refused(pipeline.error_reply(error, request_id, mapped=False))


def check_argnums_text(text: Any, params: list[str]) -> int | list[int]:
    """`argnums` as the protocols carry it (a scalar parameter): an integer, or a string of
    comma-separated indices or parameter names ("0,1", "W,b")."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise InvalidRequest(f"parameter argnums must be an integer or a string such as \"0,1\" (got "
                             f"{type(text).__name__})", {"parameter": "argnums"})
    if isinstance(text, int):
        return text
    picked: list[int] = []
    for token in (t.strip() for t in text.split(",")):
        if token in params:
            picked.append(params.index(token))
        elif token.lstrip("-").isdigit() and len(token) <= 4:
            picked.append(int(token))
        else:
            raise InvalidRequest(f"parameter argnums: {token[:40]!r} is neither an argument index nor a parameter "
                                 f"name; the model's parameters are {params}",
                                 {"parameter": "argnums", "params": params})
    return picked[0] if len(picked) == 1 and "," not in text else picked


def json_bytes(obj: Any) -> bytes:
    """JSON with non-finite floats as the bare NaN/Infinity tokens, which the protocols' Python
    clients read (orjson would write them as null)."""
    body = orjson.dumps(obj)
    if b"null" in body:  # only then can a NaN or an infinity have been written
        return json.dumps(obj).encode()
    return body


__all__ = ["InputLeaf", "ModelInputs", "Refused", "ask", "check_argnums_text", "compose", "derivative_leaves",
           "error_of", "json_bytes", "read_array", "refusal", "template_labels", "tree_leaves_named"]
