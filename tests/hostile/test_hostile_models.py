"""The model registry under hostile input: registration bodies, model names (trailing newline,
whitespace, control characters, path tricks), graph ids, values outside a dtype's range in
registered literals and constants (refused, never stored with 201), registered documents holding
NaN or Infinity (if stored, describing and listing them must stay valid JSON), content types,
hostile versions (2**63, 10**400, NaN), and lookups by names that only look like a model's.

Model names and graph ids follow `[A-Za-z0-9][A-Za-z0-9_.-]*` (no trailing whitespace or newline)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _hostile import (
    BAD_ARGUMENT,
    BAD_FUNCTION,
    BAD_REQUEST,
    BAD_SPEC,
    CONFLICT,
    CONSTANTS,
    DIMENSIONS,
    EXPR_CHARS,
    LEAVES,
    NODES,
    NOT_FOUND,
    OUT_OF_DTYPE,
    OUT_OF_RANGE,
    UNSUPPORTED_MEDIA,
    Case,
    E,
    Expect,
    G,
    HostileServer,
    Reply,
    arr,
    bare_literal_graph,
    cases,
    chain_graph,
    constant_graph,
    judge,
    limit,
    literal_graph,
    node,
    ok,
    req,
    strict_json,
)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
GOOD_FN = E("sum(x ** 2)")
UNPROCESSABLE_ANY = Expect(errors=frozenset({(422, None)}))
LOOKUP_REFUSED = NOT_FOUND | BAD_REQUEST | UNPROCESSABLE_ANY  # a name that is not a model's: never a 2xx
CREATED = ok(status=201)


def register(name: str = "m", function: Any = GOOD_FN, **extra: Any) -> dict[str, Any]:
    return {"name": name, "function": function, **extra}


def then_describe_and_list(name: str) -> Any:
    """After a registration that was accepted: describing and listing models still answer valid
    JSON, and computing with the model is not a server error."""

    def check(server: HostileServer, reply: Reply) -> None:
        if reply.status != 201:
            return
        follow = [Case(f"describe_{name}", f"/v1/models/{name}", None, ok(), method="GET"),
                  Case("list_models", "/v1/models", None, ok(), method="GET"),
                  Case(f"value_{name}", f"/v1/models/{name}/value", {"args": [[1.0, 2.0]]},
                       ok() | BAD_REQUEST | UNPROCESSABLE_ANY)]
        for case in follow:
            judge(case, server.send(case), server.limits())
    return check


# ----------------------------------------------------------------------------- registration bodies

def body_cases() -> list[Case]:
    bodies: dict[str, tuple[Any, Expect]] = {
        "list": ([], BAD_REQUEST), "string": ("x", BAD_REQUEST), "number": (1, BAD_REQUEST),
        "null": (b"null", BAD_REQUEST), "true": (True, BAD_REQUEST), "empty_object": ({}, BAD_REQUEST),
        "no_name": ({"function": GOOD_FN}, BAD_REQUEST),
        "no_function": ({"name": "nofn"}, BAD_SPEC),
        "name_null": (register(None), BAD_REQUEST), "name_number": (register(1), BAD_REQUEST),
        "name_list": (register(["m"]), BAD_REQUEST), "name_object": (register({}), BAD_REQUEST),
        "name_10_400": (register(10**400), BAD_REQUEST),
        "function_model_ref": (register("ref", {"model": "rosenbrock"}), BAD_SPEC),
        "function_string": (register("fs", "sum(x)"), BAD_SPEC),
        "constants_string": (register("cs", constants="x"), BAD_REQUEST),
        "constants_list": (register("cl", constants=[]), BAD_REQUEST),
        "constants_unknown_param": (register("cu", constants={"y": 1.0}), BAD_REQUEST | BAD_FUNCTION),
        "constants_dtype_object": (register("cd", E("sum(x * y)", ["x", "y"]),
                                            constants={"y": {"$array": {"dtype": {}, "shape": [1], "data": ""}}}),
                                   BAD_ARGUMENT | BAD_REQUEST | BAD_FUNCTION),
        "constants_10_400": (register("ch", E("sum(x * y)", ["x", "y"]), constants={"y": 10**400}),
                             BAD_ARGUMENT | BAD_REQUEST | BAD_FUNCTION),
        "constants_33_dims": (register("c33", E("sum(x * y)", ["x", "y"]),
                                       constants={"y": arr("float32", [1] * 33)}),
                              limit(DIMENSIONS) | BAD_ARGUMENT | BAD_FUNCTION),
        "constants_10001_leaves": (register("cl2", E("sum(x)", ["x", "y"]),
                                            constants={"y": [[1.0], [1.0, 2.0]] * 5001}), limit(LEAVES, CONSTANTS)),
        "description_2001_chars": (register("d1", description="d" * 2001), BAD_REQUEST),
        "description_1mib": (register("d2", description="d" * (1 << 20)), BAD_REQUEST | limit("NABLA_MAX_BODY_BYTES")),
        "description_number": (register("d3", description=1), BAD_REQUEST),
        "description_object_infinity": (register("d4", description={"a": float("inf")}), BAD_REQUEST),
        "description_list": (register("d5", description=[]), BAD_REQUEST),
        "unknown_field": (register("u1", extra=1), BAD_REQUEST),
        "version_field": (register("u2", version=2), BAD_REQUEST),
        "builtin_name": (register("rosenbrock"), CONFLICT),
        "graph_10001_nodes": (register("big", chain_graph(10_001, "neg")), limit(NODES)),
        "expr_20001_chars": (register("long", E(" " * 20_000 + "x")), limit(EXPR_CHARS)),
    }
    return [Case(f"register_{k}", "/v1/models", body, expect) for k, (body, expect) in bodies.items()]


def stored_document_cases() -> list[Case]:
    """Documents that may be stored (201) but must then describe, list and compute without a 5xx."""
    nan_literal = G([node("y", "mul", "x", float("nan")), node("s", "reduce_sum", "y", axes=[0])])
    inf_literal = G([node("y", "add", "x", {"literal": "Infinity", "dtype": "float32"}),
                     node("s", "reduce_sum", "y", axes=[0])])
    inf_description = G([node("s", "reduce_sum", "x", axes=[0])], description={"a": float("inf")})
    nan_constant = G([node("y", "add", "x", "c"), node("s", "reduce_sum", "y", axes=[0])],
                     constants={"c": {"dtype": "float32", "data": ["NaN", 1.0]}})
    documents = {"graph_nan_literal": nan_literal, "graph_infinity_literal": inf_literal,
                 "graph_description_infinity": inf_description, "graph_nan_constant": nan_constant}
    out = [Case(f"stored_{k}", "/v1/models", register(f"stored_{k}", doc),
                CREATED | BAD_FUNCTION | BAD_REQUEST, then=then_describe_and_list(f"stored_{k}"))
           for k, doc in documents.items()]
    texts = {"description_lone_surrogate": "a\ud800b", "description_nul": "a\x00b",
             "description_rtl_override": "a\u202eb", "description_escape_sequences": "\x1b[31mred\x1b[0m"}
    out += [Case(f"stored_{k}", "/v1/models", register(f"stored_{k}", description=text),
                 CREATED | BAD_REQUEST, then=then_describe_and_list(f"stored_{k}")) for k, text in texts.items()]
    return out


# ----------------------------------------------------------------------------- names and ids

BAD_NAMES = {"trailing_newline": "rosenbrock\n", "trailing_crlf": "model\r\n", "trailing_space": "model ",
             "leading_space": " model", "trailing_tab": "model\t", "leading_newline": "\nmodel", "empty": "",
             "leading_dash": "-model", "leading_dot": ".model", "leading_underscore": "_model", "inner_space": "mo del",
             "slash": "mo/del", "colon": "mo:del", "non_ascii": "m\u00f8del", "nul": "model\x00", "dotdot": "..",
             "path_traversal": "../etc", "percent": "model%0A", "cjk": "\u540d\u524d", "rtl_override": "a\u202eb",
             "newline_inside": "mo\ndel"}


def name_cases() -> list[Case]:
    refused = BAD_REQUEST | UNPROCESSABLE_ANY
    out = [Case(f"name_{k}", "/v1/models", register(v), refused) for k, v in BAD_NAMES.items()]
    ids = {"trailing_newline": "n0\n", "trailing_space": "n0 ", "leading_space": " n0", "tab": "n\t0", "empty": "",
           "crlf": "n0\r\n", "nul": "n0\x00", "non_ascii": "\u00f1", "slash": "a/b", "inner_space": "a b"}
    for k, bad in ids.items():
        out.append(Case(f"node_id_{k}", "/v1/models",
                        register(f"id_{k}", G([node(bad, "neg", "x"), node("s", "reduce_sum", bad, axes=[0])])),
                        BAD_FUNCTION | BAD_REQUEST))
    out += [
        Case("node_id_newline_on_compute", "/v1/value", req(G([node("n0\n", "neg", "x")]), 1.0), BAD_FUNCTION),
        Case("param_name_newline", "/v1/models", register("pn", G([node("s", "reduce_sum", "x\n", axes=[0])],
                                                                   params=["x\n"])), BAD_FUNCTION | BAD_REQUEST),
        Case("constant_name_newline", "/v1/models",
             register("cn", G([node("y", "add", "x", "c\n"), node("s", "reduce_sum", "y", axes=[0])],
                              constants={"c\n": {"data": [1.0, 2.0]}})), BAD_FUNCTION | BAD_REQUEST),
        Case("output_name_newline", "/v1/models",
             register("on", G([node("s", "reduce_sum", "x", axes=[0])], outputs=["s\n"])), BAD_FUNCTION | BAD_REQUEST),
        Case("expr_param_newline", "/v1/models", register("ep", E("sum(x)", ["x\n"])), BAD_SPEC),
    ]
    return out


def range_cases() -> list[Case]:
    """Values outside a dtype's range: registering them is refused (never a 201)."""
    out = []
    for k, (dtype, value) in OUT_OF_RANGE.items():
        out.append(Case(f"register_range_literal_{k}", "/v1/models", register(f"rl_{k}", literal_graph(dtype, value)),
                        OUT_OF_DTYPE))
        out.append(Case(f"register_range_constant_{k}", "/v1/models",
                        register(f"rc_{k}", constant_graph(dtype, value)), OUT_OF_DTYPE))
    # A bare literal takes its operands' dtype, known only when the graph runs: a graph whose
    # parameters are untyped registers, and every call is a 422 dtype_error (never a 500).
    for k in ("int8_1000", "uint8_minus_1"):
        dtype, value = OUT_OF_RANGE[k]
        out.append(Case(f"register_range_bare_literal_{k}", "/v1/models",
                        register(f"rb_{k}", bare_literal_graph(dtype, value)), OUT_OF_DTYPE | CREATED))
    return out


def content_type_cases() -> list[Case]:
    body = register("ct_model")
    types = {"text_plain": "text/plain", "form": "application/x-www-form-urlencoded", "none": None,
             "multipart": "multipart/form-data; boundary=b", "xml": "application/xml",
             "json_seq": "application/json-seq", "text_json": "text/json", "json_patch": "application/merge-patch+json"}
    return [Case(f"register_content_type_{k}", "/v1/models", body, UNSUPPORTED_MEDIA, headers={"content-type": t})
            for k, t in types.items()]


# ----------------------------------------------------------------------------- lookups and versions

def lookup_cases() -> list[Case]:
    x = {"args": [[1.0, 2.0]]}
    paths = {"newline": "rosenbrock%0A", "crlf": "rosenbrock%0D%0A", "leading_space": "%20rosenbrock",
             "trailing_space": "rosenbrock%20", "nul": "rosenbrock%00", "tab": "rosenbrock%09", "long": "a" * 300,
             "traversal": "..%2F..%2Fetc%2Fpasswd", "rtl": "rosenbrock%E2%80%AE", "unicode": "%E5%90%8D",
             "case": "Rosenbrock"}
    out = [Case(f"describe_{k}", f"/v1/models/{p}", None, LOOKUP_REFUSED, method="GET") for k, p in paths.items()]
    out += [Case(f"compute_on_{k}", f"/v1/models/{p}/grad", x, LOOKUP_REFUSED) for k, p in paths.items()
            if k in ("newline", "crlf", "trailing_space", "nul", "case")]
    out += [Case(f"delete_{k}", f"/v1/models/{p}", None, LOOKUP_REFUSED, method="DELETE") for k, p in paths.items()
            if k in ("newline", "trailing_space", "traversal")]
    out += [
        Case("delete_builtin", "/v1/models/rosenbrock", None, CONFLICT, method="DELETE"),
        Case("delete_unknown", "/v1/models/no_such_model", None, NOT_FOUND, method="DELETE"),
        Case("compute_unknown_model", "/v1/models/no_such_model/grad", x, NOT_FOUND),
        Case("compute_unknown_transform", "/v1/models/rosenbrock/frobnicate", x, BAD_REQUEST | NOT_FOUND),
        Case("function_model_newline", "/v1/grad", req({"model": "rosenbrock\n"}, [1.0, 2.0]),
             LOOKUP_REFUSED | BAD_SPEC),
        Case("function_model_space", "/v1/grad", req({"model": "rosenbrock "}, [1.0, 2.0]), LOOKUP_REFUSED | BAD_SPEC),
    ]
    versions = {"2_63": 2**63, "2_64": 2**64, "10_400": 10**400, "2_53_plus_1": 2**53 + 1, "zero": 0, "minus_1": -1,
                "string": "1", "float": 1.5, "bool": True, "nan": float("nan"), "list": [1]}
    for k, v in versions.items():
        for model in ("rosenbrock", "hostile_registered"):
            out.append(Case(f"version_{k}_{model}", "/v1/grad", req({"model": model, "version": v}, [1.0, 2.0]),
                            NOT_FOUND | BAD_SPEC))
        out.append(Case(f"version_{k}_on_model_route", "/v1/models/hostile_registered/grad",
                        {"args": [[1.0, 2.0]], "version": v}, NOT_FOUND | BAD_REQUEST | UNPROCESSABLE_ANY))
    out.append(Case("version_2_31_minus_1_missing", "/v1/grad",
                    req({"model": "hostile_registered", "version": 2**31 - 1}, [1.0, 2.0]), NOT_FOUND))
    return out


CASES = cases(body_cases(), stored_document_cases(), name_cases(), range_cases(), content_type_cases(),
              lookup_cases())


@pytest.fixture(scope="module")
def registered(server: HostileServer) -> str:
    """A registered model, for the version cases."""
    server.check(Case("register_good", "/v1/models", register("hostile_registered"), CREATED))
    return "hostile_registered"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_registry_request(server: HostileServer, registered: str, case: Case) -> None:
    server.check(case)


def test_model_listing_is_clean(server: HostileServer, registered: str) -> None:
    """After all the cases: the listing is strict JSON and holds only well-formed names, and the
    built-in model was neither replaced nor deleted."""
    reply = server.send(Case("list", "/v1/models", None, ok(), method="GET"))
    assert reply.status == 200, reply.summary()
    models = strict_json(reply.content)["models"]
    bad = [m["name"] for m in models if not (isinstance(m["name"], str) and NAME.fullmatch(m["name"]))]
    assert not bad, f"models with names outside [A-Za-z0-9][A-Za-z0-9_.-]*: {bad!r}"
    rosenbrock = [m for m in models if m["name"] == "rosenbrock"]
    assert len(rosenbrock) == 1 and rosenbrock[0].get("source", "builtin") == "builtin", rosenbrock


def test_server_stayed_healthy(server: HostileServer, assert_healthy: Any) -> None:
    assert_healthy(server)
