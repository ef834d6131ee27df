"""The derivative's graph (POST /v1/graph): what /v1/grad compiles, shown instead of run.

The answer is the traced and optimised graph of `grad` applied `order` times to the function
(argnums as for /v1/grad) as a nabla.graph/1 document, the shape and dtype of every node's
outputs, and the operation counts of the function, of the traced derivative and of the optimised
one. The graph depends only on the arguments' shapes and dtypes: their values are decoded (and
typed by a model's schema) exactly as /v1/grad decodes them, and never computed on.

Admission is /v1/grad's: the function's own trace, times 4 per order, must fit
NABLA_MAX_PLAN_NODES before the derivative is traced, the traced and the optimised derivative
are checked against it, and the document's size is predicted from the optimised graph (its
constants and a bound per node) against NABLA_MAX_RESPONSE_BYTES before it is written.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

import engine
from engine.array import Array
from engine.core import Graph, element_budget
from engine.serialize import graph_to_json
from engine.tree_util import tree_flatten_with_path, tree_map
from service import admission
from service import requests as R
from service.compute import Options, check_argnums, elapsed_ms, transformed
from service.errors import InvalidRequest

# A node's document: its id, op, input names or literals and attributes (shape and index
# attributes of up to 32 dimensions), and its entry in `shapes`; generous, as a bound must be.
NODE_BYTES = 1024
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def derivative_graph(pipeline: Any, raw: bytes) -> dict[str, Any]:
    """The answer to POST /v1/graph for a request body (see the module's docstring)."""
    from service.pipeline import validate  # the pipeline imports this module: its names are there at call time

    start = time.perf_counter()
    body = pipeline.parse(raw)
    request = validate(R.GraphRequest, body, "graph")
    opts = Options.from_request("grad", request, pipeline.settings.max_order)
    function = pipeline.resolver.resolve(body["function"])
    if len(request.args) != len(function.params):
        raise InvalidRequest(
            f"the function takes {len(function.params)} argument(s) {function.params}, got {len(request.args)}",
            {"expected": function.params, "got": len(request.args)})
    check_argnums(opts, len(request.args))
    decoded = pipeline.decode_arguments(function, request.args, request.dtype, pipeline.tree_budget())
    # Arrays, not NumPy values: the engine would trace a float64 NumPy input as float32 (JAX's default).
    args = [tree_map(lambda x: Array(x) if isinstance(x, np.ndarray) else x, a) for a, _ in decoded]
    budget = pipeline.budget
    function_nodes = _admit_function(function, args, opts.order, budget)
    with element_budget(budget.max_array_elements):
        traced = engine.make_graph(transformed(function.fn, opts, len(args)))(*args)
    admission.check_plan(len(traced.eqns), budget, before_optimising=True)
    optimised = engine.optimize(traced)
    admission.check_plan(len(optimised.eqns), budget)
    _admit_document(optimised, budget)
    document = graph_to_json(optimised, leaf_names(function.params, args))
    return {"graph": document, "shapes": node_shapes(optimised, document),
            "nodes": {"function": function_nodes, "traced": len(traced.eqns), "optimised": len(optimised.eqns)},
            "meta": {"order": opts.order, "argnums": request.argnums, "elapsed_ms": elapsed_ms(start)}}


def _admit_function(function: Any, args: list[Any], order: int, budget: admission.Budget) -> int:
    """The function's own operation count, after refusing a derivative whose trace would be too
    large: each order multiplies a graph by about 4 before the optimiser shrinks it."""
    if function.root is not None:  # a derived function ({"jvp": ...}): tracing it differentiates its root
        with element_budget(budget.max_array_elements):
            root = engine.make_graph(function.root.fn)(*args[:len(function.root.params)])
        admission.check_plan(len(root.eqns) * 4 ** (order + function.depth), budget, before_optimising=True)
    with element_budget(budget.max_array_elements):
        graph = engine.make_graph(function.fn)(*args)
    admission.check_plan(len(graph.eqns) * 4**order, budget, before_optimising=True)
    return len(graph.eqns)


def _admit_document(graph: Graph, budget: admission.Budget) -> None:
    constants = sum(admission.json_bytes(np.shape(c), np.asarray(c).dtype) for c in graph.consts)
    predicted = constants + NODE_BYTES * (len(graph.eqns) + len(graph.invars) + len(graph.consts))
    if predicted > budget.max_response_bytes:
        raise admission.refuse("the graph's document would take up to this many bytes", predicted,
                               budget.max_response_bytes, "NABLA_MAX_RESPONSE_BYTES",
                               "send smaller arrays (the graph holds constants made from them) or ask for a "
                               "lower order")


def leaf_names(params: list[str], args: list[Any]) -> list[str]:
    """A graph parameter name per array leaf of the arguments: the parameter's name, or its name
    and the leaf's path (`params.W1`, `xs.0`), in the format's name alphabet and unique."""
    names: list[str] = []
    for param, arg in zip(params, args):
        leaves, _ = tree_flatten_with_path(arg)
        for path, _leaf in leaves:
            keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
            name = _NOT_IN_A_NAME.sub("_", ".".join([param, *keys]))[:60]
            if not name[0].isalpha() and name[0] != "_":
                name = "_" + name[:59]
            while name in names:
                name += "_"
            names.append(name)
    return names


def node_shapes(graph: Graph, document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Shape and dtype of each node's outputs, by node id (the document has a node per equation,
    in order)."""
    return {node["id"]: [{"shape": list(v.aval.shape), "dtype": v.aval.dtype.name} for v in eqn.outputs]
            for node, eqn in zip(document["nodes"], graph.eqns)}


__all__ = ["derivative_graph", "leaf_names", "node_shapes"]
