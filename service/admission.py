"""Admission: a request's whole cost predicted from shapes, before the work is done.

Three figures are checked, each against its own setting, and a refusal names the setting and
gives the figures:
- elements: every array the request would create (inputs, intermediates, the transform's
  result) against NABLA_MAX_ARRAY_ELEMENTS;
- response bytes: what encoding the result would write. A JSON list costs bytes for every list
  node, not only for every number, so an array of shape [65536, 65536, 0] (no elements, 4e9
  empty lists) is expensive although it holds nothing; against NABLA_MAX_RESPONSE_BYTES;
- memory: the inputs, the plan's peak of live intermediates, the result and its encoding,
  against NABLA_MAX_REQUEST_BYTES.

The result's size is predicted from the function's output shape before the transform is even
traced (a Hessian is out × in × in), so a request for a 1e10-element Hessian costs one
abstract trace of the function, not the Hessian's.

All arithmetic is on Python integers: shapes like [2**40, 2**40] must not wrap around.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.core import Graph, Var
from service.errors import LimitExceededError

# The longest JSON spelling of one number: float64's shortest round-trip repr with sign and
# exponent ("-2.2250738585072014e-308") is 24 characters, int64 20, a boolean 5; plus a comma.
_JSON_NUMBER_BYTES = {"f": 25, "i": 21, "u": 21, "b": 6}
_BASE64_OVERHEAD = 96  # the {"$array": {"dtype", "shape", "data"}} wrapper


@dataclass(frozen=True)
class Budget:
    max_array_elements: int
    max_response_bytes: int
    max_request_bytes: int
    max_dimensions: int = 32
    max_plan_nodes: int = 50_000
    max_json_members: int = 100_000


def refuse(what: str, requested: int, maximum: int, setting: str, advice: str) -> LimitExceededError:
    return LimitExceededError(
        f"{what}: {requested} is over the limit of {maximum} ({setting}); {advice}",
        {"limit": setting, "requested": requested, "maximum": maximum})


def elements(shape: Sequence[int]) -> int:
    return math.prod(int(n) for n in shape)


def json_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    """An upper bound of the JSON text of an array of this shape: numbers and list brackets."""
    lists = sum(math.prod(int(n) for n in shape[:k]) for k in range(len(shape)))
    return elements(shape) * _JSON_NUMBER_BYTES.get(np.dtype(dtype).kind, 25) + 3 * lists


def base64_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return 4 * math.ceil(elements(shape) * np.dtype(dtype).itemsize / 3) + _BASE64_OVERHEAD + 21 * len(shape)


def binary_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    """A MessagePack bin leaf: the array's bytes and the same wrapper as a base64 leaf's."""
    return nbytes(shape, dtype) + _BASE64_OVERHEAD + 9 * len(shape)


def encoded_bytes(shape: Sequence[int], dtype: np.dtype, encoding: str) -> int:
    """`encoding`: "json" (nested lists), "base64" or "binary" (the leaves of MessagePack answers)."""
    if encoding == "binary":
        return binary_bytes(shape, dtype)
    return base64_bytes(shape, dtype) if encoding == "base64" else json_bytes(shape, dtype)


def check_array(shape: Sequence[int], what: str, budget: Budget) -> None:
    if len(shape) > budget.max_dimensions:
        raise refuse(f"{what} would have {len(shape)} dimensions, so its dimension count", len(shape),
                     budget.max_dimensions, "NABLA_MAX_DIMENSIONS", "ask for a derivative of fewer dimensions")
    size = elements(shape)
    if size > budget.max_array_elements:
        raise refuse(f"{what} would have shape {list(shape)}, so its element count", size,
                     budget.max_array_elements, "NABLA_MAX_ARRAY_ELEMENTS",
                     "send smaller arrays or ask for a smaller derivative (jvp or vjp instead of a full "
                     "Jacobian or Hessian)")


def check_response(results: Sequence[tuple[Sequence[int], np.dtype]], encoding: str, budget: Budget) -> int:
    """The predicted response size; refused when over budget. Returns it for the memory check."""
    total = sum(encoded_bytes(shape, dtype, encoding) for shape, dtype in results)
    if total > budget.max_response_bytes:
        advice = ("ask for a smaller result" if encoding in ("base64", "binary") else
                  "use \"encoding\": \"base64\" (about 3x smaller for float64) or ask for a smaller result")
        raise refuse(f"the {encoding}-encoded response would take up to this many bytes", total,
                     budget.max_response_bytes, "NABLA_MAX_RESPONSE_BYTES", advice)
    return total


PARSED_VALUE_BYTES = 40  # a Python float (24) or small object, plus its slot in a list or dict


def check_plan(operations: int, budget: Budget, before_optimising: bool = False) -> None:
    """Compiling a plan is one call that holds the interpreter (about 10 us an operation); a traced
    derivative may have up to 4 times as many before the optimiser shrinks it."""
    maximum = budget.max_plan_nodes * (4 if before_optimising else 1)
    if operations > maximum:
        what = "the traced derivative has" if before_optimising else "the compiled derivative would have"
        raise refuse(f"{what} this many operations", operations, maximum, "NABLA_MAX_PLAN_NODES",
                     "ask for a lower order, or a shorter function")


def check_parse(values: int, members: int, body_bytes: int, budget: Budget, form: str = "JSON") -> None:
    """Before parsing: object members (key: value pairs) are the costliest JSON to parse, in one
    call that holds the interpreter (a dict of 1e6 keys takes about 0.7 s); a request needs at
    most a graph's worth of them plus one per argument leaf. `form`: the body's format, "JSON"
    or "MessagePack" (whose values and map entries are counted the same way)."""
    if members > budget.max_json_members:
        raise refuse(f"the {form} body ({body_bytes} bytes) has this many object members (key: value pairs)", members,
                     budget.max_json_members, "NABLA_MAX_LEAVES",
                     "send arrays rather than objects of many keys (the bound is 8 x NABLA_MAX_GRAPH_NODES + "
                     "2 x NABLA_MAX_LEAVES)")
    predicted = values * PARSED_VALUE_BYTES
    if predicted > budget.max_request_bytes:
        raise refuse(f"the {form} body ({body_bytes} bytes) holds about {values} values, which would take this many "
                     "bytes once parsed", predicted, budget.max_request_bytes, "NABLA_MAX_REQUEST_BYTES",
                     "send large arrays as base64 $array leaves" if form == "JSON" else
                     "send large arrays as $array leaves with bin data")


def check_memory(input_bytes: int, peak_bytes: int, result_bytes: int, response_bytes: int, budget: Budget) -> None:
    # Encoding builds the response next to the result, and JSON text holds Python objects of
    # about twice its size while it is assembled in chunks: counted once, as its own size.
    total = input_bytes + peak_bytes + result_bytes + response_bytes
    if total > budget.max_request_bytes:
        raise refuse(f"the request would need this many bytes of memory (inputs {input_bytes}, peak of "
                     f"intermediates {peak_bytes}, result {result_bytes}, encoded response "
                     f"{response_bytes})", total, budget.max_request_bytes, "NABLA_MAX_REQUEST_BYTES",
                     "send smaller arrays or ask for a smaller derivative")


def nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return elements(shape) * np.dtype(dtype).itemsize


def predicted_result(transform: str, out_shapes: Sequence[Sequence[int]], in_shapes: Sequence[Sequence[int]],
                     diff_shapes: Sequence[Sequence[int]], batch: int | None = None) -> list[list[int]]:
    """Shapes of the arrays a transform returns, from the function's output shapes, all input
    shapes and the shapes of the inputs it differentiates with respect to; `batch` is the number
    of tangents or cotangents of a batched jvp, vjp or hvp (each product gains that leading axis)."""
    outs, ins, diffs = [list(s) for s in out_shapes], [list(s) for s in in_shapes], [list(s) for s in diff_shapes]
    rows = [batch] if batch is not None else []
    if transform == "value":
        return outs
    if transform == "grad":
        return diffs
    if transform == "value_and_grad":
        return outs + diffs
    if transform == "jvp":
        return outs + [rows + o for o in outs]
    if transform == "vjp":
        return outs + [rows + i for i in ins]
    if transform == "hvp":  # value, gradient, product
        return outs + diffs + [rows + d for d in diffs]
    if transform == "jacobian":
        return [o + d for o in outs for d in diffs]
    if transform == "hessian":
        return [o + a + b for o in outs for a in diffs for b in diffs]
    return []


def plan_peak_bytes(graph: Graph) -> int:
    """The most bytes of intermediates alive at once while a plan runs (inputs not counted),
    freeing each value after its last use as the plan compiler does."""
    last_use: dict[int, int] = {}
    for i, eqn in enumerate(graph.eqns):
        for atom in eqn.inputs:
            if isinstance(atom, Var):
                last_use[id(atom)] = i
    keep = {id(v) for v in graph.outvars if isinstance(v, Var)}
    size = {id(v): nbytes(v.aval.shape, v.aval.dtype) for v in graph.constvars}
    live = sum(size.values())
    peak = live
    for i, eqn in enumerate(graph.eqns):
        for v in eqn.outputs:
            size[id(v)] = nbytes(v.aval.shape, v.aval.dtype)
            live += size[id(v)]
        peak = max(peak, live)
        for atom in eqn.inputs:
            key = id(atom)
            if isinstance(atom, Var) and last_use.get(key) == i and key not in keep and key in size:
                live -= size.pop(key)
    return peak


def graph_bytes(graph: Graph) -> int:
    """What a cached plan holds: its constants, and a rough cost of its Python objects per node."""
    consts = sum(np.asarray(c).nbytes for c in graph.consts if hasattr(c, "shape") or np.isscalar(c))
    return consts + 1024 * (len(graph.eqns) + 1)
