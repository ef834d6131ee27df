"""Hostile request bodies that must be refused by parsing and validation: malformed JSON of every
kind, wrong types for every option, unknown options, duplicate argnums, bad `$array` leaves, huge
numbers (10**400) wherever a number is accepted, NaN/Infinity tokens, integers past 2**53 in the
expression language, values outside a dtype's range in graph literals and constants, bad einsum
specs, 33+ dimensions, and `x.at[idx].multiply(y)` with repeated indices under grad.

Each case is one test; the module's server is watched for /livez latency and RSS throughout
(`test_server_stayed_healthy`, last)."""

from __future__ import annotations

from typing import Any

import pytest
from _hostile import (
    ARRAY,
    BAD_ARGUMENT,
    BAD_FUNCTION,
    BAD_REQUEST,
    BAD_SPEC,
    DEPTH,
    DIMENSIONS,
    NOT_FOUND,
    ORDER,
    OUT_OF_DTYPE,
    OUT_OF_RANGE,
    TOTAL,
    UNPROCESSABLE,
    Case,
    E,
    G,
    HostileServer,
    arr,
    b64,
    bare_literal_graph,
    cases,
    constant_graph,
    limit,
    literal_graph,
    node,
    ok,
    req,
    value_is,
)

X = E("sum(x ** 2)")
GOOD = req(X, [1.0, 2.0])


def with_(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


# ----------------------------------------------------------------------------- malformed JSON

_GOOD_TEXT = b'{"function": {"expr": "sum(x ** 2)", "params": ["x"]}, "args": [[1.0, 2.0]]}'
MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "whitespace_only": b" \n\t ",
    "truncated_object": b'{"function": ',
    "missing_closing_brace": _GOOD_TEXT[:-1],
    "trailing_comma_object": b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.0],}',
    "trailing_comma_array": b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.0,]}',
    "single_quotes": b"{'function': {'expr': 'x', 'params': ['x']}, 'args': [1.0]}",
    "line_comment": b"// a comment\n" + _GOOD_TEXT,
    "block_comment": b"/* c */" + _GOOD_TEXT,
    "trailing_garbage": _GOOD_TEXT + b" x",
    "two_documents": _GOOD_TEXT + _GOOD_TEXT,
    "utf8_bom": b"\xef\xbb\xbf" + _GOOD_TEXT,
    "invalid_utf8_in_string": b'{"function": {"expr": "x\xff", "params": ["x"]}, "args": [1.0]}',
    "overlong_utf8": b'{"function": {"expr": "\xc0\xafx", "params": ["x"]}, "args": [1.0]}',
    "raw_control_char_in_string": b'{"function": {"expr": "x\x01", "params": ["x"]}, "args": [1.0]}',
    "raw_newline_in_string": b'{"function": {"expr": "x\n", "params": ["x"]}, "args": [1.0]}',
    "bad_escape": b'{"function": {"expr": "\\x41", "params": ["x"]}, "args": [1.0]}',
    "short_unicode_escape": b'{"function": {"expr": "\\u12", "params": ["x"]}, "args": [1.0]}',
    "unquoted_key": b'{function: {"expr": "x", "params": ["x"]}, "args": [1.0]}',
    "key_without_value": b'{"function"}',
    "colon_without_value": b'{"function": }',
    "number_key": b"{1: 2}",
    "missing_colon": b'{"function" {"expr": "x"}}',
    "leading_zero": b'{"function": {"expr": "x", "params": ["x"]}, "args": [01]}',
    "leading_plus": b'{"function": {"expr": "x", "params": ["x"]}, "args": [+1]}',
    "bare_decimal_point": b'{"function": {"expr": "x", "params": ["x"]}, "args": [.5]}',
    "trailing_decimal_point": b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.]}',
    "hex_number": b'{"function": {"expr": "x", "params": ["x"]}, "args": [0x10]}',
    "dangling_exponent": b'{"function": {"expr": "x", "params": ["x"]}, "args": [1e]}',
    "lone_minus": b'{"function": {"expr": "x", "params": ["x"]}, "args": [-]}',
    "minus_nan_token": b'{"function": {"expr": "x", "params": ["x"]}, "args": [-NaN]}',
    "lowercase_nan_token": b'{"function": {"expr": "x", "params": ["x"]}, "args": [nan]}',
    "python_none": b'{"function": {"expr": "x", "params": ["x"]}, "args": [None]}',
    "python_true": b'{"function": {"expr": "x", "params": ["x"]}, "args": [True]}',
    "open_bracket_only": b"[",
    "close_bracket_only": b"]",
    "int_beyond_python_digit_limit": b'{"function": {"expr": "x", "params": ["x"]}, "args": [' + b"9" * 5000 + b"]}",
}
NOT_AN_OBJECT: dict[str, bytes] = {
    "null": b"null", "true": b"true", "number": b"3", "string": b'"x"', "array": b"[1, 2]", "empty_array": b"[]",
    "nan_token": b"NaN", "infinity_token": b"Infinity",
}


def malformed_cases() -> list[Case]:
    out = [Case(f"json_{k}", "/v1/grad", v, BAD_REQUEST) for k, v in MALFORMED.items() if k != "utf8_bom"]
    # RFC 8259 lets a parser ignore a byte order mark
    out.append(Case("json_utf8_bom", "/v1/grad", MALFORMED["utf8_bom"], BAD_REQUEST | ok()))
    out += [Case(f"json_top_level_{k}", "/v1/grad", v, BAD_REQUEST) for k, v in NOT_AN_OBJECT.items()]
    # Ambiguous but harmless: the last duplicate key wins, or the body is refused; never a 5xx.
    out.append(Case("json_duplicate_keys", "/v1/value",
                    b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.0], "args": [2.0]}', BAD_REQUEST | ok()))
    out.append(Case("json_utf16", "/v1/value", _GOOD_TEXT.decode().encode("utf-16"), BAD_REQUEST | ok()))
    return out


# ----------------------------------------------------------------------------- options

WRONG_TYPES: dict[str, tuple[str, list[Any]]] = {
    # option: (route, wrong values)
    "argnums": ("/v1/grad", ["0", 1.5, None, {}, ["0"], [1.5], [[0]], True, [True], []]),
    "has_aux": ("/v1/grad", ["yes", 1, 0, None, []]),
    "order": ("/v1/grad", ["2", None, [2], True, 0, -1]),
    "mode": ("/v1/jacobian", [1, None, "FWD", "reverse", []]),
    "check": ("/v1/check_grads", [[], "x", 1, True]),
    # null is the documented default ("dtype": null: float64, or what a model declares)
    "dtype": ("/v1/value", ["float16", "int32", 32, [], {}, "FLOAT32", "float32 "]),
    "encoding": ("/v1/value", [None, 1, "BASE64", "hex", []]),
    "tangents": ("/v1/jvp", [{}, "x", 1.0, [], [[1.0], [2.0]]]),
    "args": ("/v1/value", ["x", None, 1, {}, [], [[1.0], [2.0]]]),
}
CHECK_WRONG: dict[str, list[Any]] = {
    "order": ["1", 1.5, True, 0, -1],
    "modes": ["fwd", [], ["sideways"], [1], [None], {}],
    "eps": ["0.1", 0, -1, True, [], {}],
    "atol": ["0.1", -1e-3, False],
    "rtol": ["0.1", -1, {}],
}


def _short(v: Any) -> str:
    """A readable test-id fragment for a JSON value."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, dict):
        return "object" if not v else "object_" + "_".join(map(str, v))[:16]
    if isinstance(v, list):
        return f"list{len(v)}" + ("_" + _short(v[0]) if v else "")
    kind = "string" if isinstance(v, str) else "number"
    return kind + "_" + ("".join(c if c.isalnum() else "_" for c in str(v))[:16] or "empty")


def option_cases() -> list[Case]:
    out = []
    for option, (route, values) in WRONG_TYPES.items():
        base = {"/v1/jvp": req(X, [1.0, 2.0], tangents=[[1.0, 0.0]]),
                "/v1/check_grads": req(X, [1.0, 2.0], dtype="float64")}.get(route, GOOD)
        for v in values:
            out.append(Case(f"option_{option}_{_short(v)}", route, with_(base, **{option: v}), BAD_REQUEST))
    for option, values in CHECK_WRONG.items():
        for v in values:
            out.append(Case(f"check_{option}_{_short(v)}", "/v1/check_grads",
                            req(X, [1.0, 2.0], dtype="float64", check={option: v}), BAD_REQUEST))
    # the function field itself
    functions = {"string": "x", "list": [], "null": None, "number": 1, "empty_object": {},
                 "expr_not_string": {"expr": 1, "params": ["x"]}, "params_not_list": {"expr": "x", "params": "x"},
                 "param_not_string": {"expr": "x", "params": [1]}, "no_params": {"expr": "x"},
                 "graph_not_object": {"graph": []}, "graph_string": {"graph": "x"}, "model_number": {"model": 1},
                 "model_null": {"model": None}, "model_list": {"model": ["rosenbrock"]},
                 "expr_and_graph": {"expr": "x", "params": ["x"], "graph": {}},
                 "expr_and_model": {"expr": "x", "params": ["x"], "model": "rosenbrock"}}
    out += [Case(f"function_{k}", "/v1/grad", {"function": v, "args": [1.0]}, BAD_SPEC) for k, v in functions.items()]
    params = {"duplicate": ["x", "x"], "dunder": ["__import__"], "newline": ["x\n"], "space": ["x y"], "empty": [""]}
    out += [Case(f"params_{k}", "/v1/value", {"function": {"expr": "1.0", "params": v}, "args": [1.0] * len(v)},
                 BAD_SPEC) for k, v in params.items()]
    # unknown options and options of other transforms
    unknown = {"learning_rate": ("/v1/grad", {"learning_rate": 0.1}), "proto": ("/v1/grad", {"__proto__": {}}),
               "capitalised": ("/v1/grad", {"Function": X}), "trailing_space": ("/v1/grad", {"args ": []}),
               "empty_key": ("/v1/grad", {"": 1}), "order_on_value": ("/v1/value", {"order": 2}),
               "argnums_on_value": ("/v1/value", {"argnums": 0}), "mode_on_grad": ("/v1/grad", {"mode": "fwd"}),
               "cotangent_on_jvp": ("/v1/jvp", {"tangents": [[1.0, 0.0]], "cotangent": 1.0}),
               "check_on_hessian": ("/v1/hessian", {"check": {}}),
               "has_aux_on_check": ("/v1/check_grads", {"has_aux": False}),
               "version_outside_model_route": ("/v1/grad", {"version": 1}),
               "check_unknown_field": ("/v1/check_grads", {"check": {"order": 1, "foo": 1}})}
    out += [Case(f"unknown_{k}", route, with_(GOOD, **extra), BAD_REQUEST) for k, (route, extra) in unknown.items()]
    out.append(Case("unknown_field_in_expr_function", "/v1/grad",
                    req({"expr": "sum(x)", "params": ["x"], "extra": 1}, [1.0]), BAD_SPEC))
    out.append(Case("unknown_field_in_model_ref", "/v1/grad",
                    req({"model": "rosenbrock", "foo": 1}, [1.0, 2.0]), BAD_SPEC))
    out.append(Case("unknown_field_in_shapes_body", "/v1/shapes",
                    {"function": E("x"), "args": [{"shape": [2]}], "extra": 1}, BAD_REQUEST))
    out.append(Case("unknown_field_in_shape_spec", "/v1/shapes",
                    {"function": E("x"), "args": [{"shape": [2], "dtype": "float32", "extra": 1}]},
                    BAD_REQUEST | BAD_ARGUMENT))
    # vjp without its cotangent, jvp tangents of the wrong structure
    out.append(Case("vjp_without_cotangent", "/v1/vjp", req(E("x * 2"), [1.0, 2.0]), BAD_REQUEST))
    out.append(Case("vjp_cotangent_string", "/v1/vjp", req(E("x * 2"), [1.0, 2.0], cotangent="x"),
                    BAD_REQUEST | BAD_ARGUMENT))
    out.append(Case("jvp_tangent_strings", "/v1/jvp", req(X, [1.0, 2.0], tangents=[["a", "b"]]),
                    BAD_REQUEST | BAD_ARGUMENT))
    return out


# ----------------------------------------------------------------------------- argnums

def argnums_cases() -> list[Case]:
    two = E("sum(x * y)", ["x", "y"])
    out = [Case("argnums_duplicate_0_0", "/v1/grad", req(X, [1.0, 2.0], argnums=[0, 0]), BAD_REQUEST),
           Case("argnums_duplicate_after_normalising", "/v1/grad", req(two, [1.0], [2.0], argnums=[0, -2]),
                BAD_REQUEST),
           Case("argnums_duplicate_1_1_0", "/v1/grad", req(two, [1.0], [2.0], argnums=[1, 1, 0]), BAD_REQUEST),
           Case("argnums_duplicate_hessian", "/v1/hessian", req(two, [1.0], [2.0], argnums=[0, 0]), BAD_REQUEST),
           Case("argnums_duplicate_jacobian", "/v1/jacobian", req(E("x * y", ["x", "y"]), [1.0], [2.0],
                                                                  argnums=[1, 1]), BAD_REQUEST),
           Case("argnums_duplicate_value_and_grad", "/v1/value_and_grad", req(two, [1.0], [2.0], argnums=[0, 0]),
                BAD_REQUEST)]
    huge = {"2_63": 2**63, "minus_2_63_minus_1": -(2**63) - 1, "10_400": 10**400, "5": 5, "minus_3": -3}
    for label, v in huge.items():
        out.append(Case(f"argnums_out_of_range_{label}", "/v1/grad", req(X, [1.0, 2.0], argnums=v), BAD_REQUEST))
        out.append(Case(f"argnums_list_out_of_range_{label}", "/v1/grad", req(X, [1.0, 2.0], argnums=[v]),
                        BAD_REQUEST))
    return out


# ----------------------------------------------------------------------------- $array leaves

def array_cases() -> list[Case]:
    def leaf(**spec: Any) -> dict[str, Any]:
        base = {"dtype": "float32", "shape": [2], "data": b64(bytes(8))}
        base.update(spec)
        return req(E("x"), {"$array": {k: v for k, v in base.items() if v is not ...}})

    bad = {
        "dtype_object": leaf(dtype={}), "dtype_null": leaf(dtype=None), "dtype_float128": leaf(dtype="float128"),
        "dtype_complex64": leaf(dtype="complex64"), "dtype_object_kind": leaf(dtype="object"),
        "dtype_numpy_spelling": leaf(dtype="<f4"), "dtype_number": leaf(dtype=32), "dtype_missing": leaf(dtype=...),
        "shape_missing": leaf(shape=...), "data_missing": leaf(data=...), "shape_negative": leaf(shape=[-2]),
        "shape_string": leaf(shape="2"), "shape_float": leaf(shape=[2.0]), "shape_bool": leaf(shape=[True, True]),
        "shape_null_entry": leaf(shape=[None]), "shape_nested": leaf(shape=[[2]]),
        "shape_nan": leaf(shape=[float("nan")]), "shape_infinity": leaf(shape=[float("inf")]),
        "data_not_base64": leaf(data="!!!!"), "data_missing_padding": leaf(data="AAAAAAAAAAA"),
        "data_extra_padding": leaf(data=b64(bytes(8)) + "===="), "data_urlsafe": leaf(data="-_-_-_-_-_-_"),
        "data_with_newlines": leaf(data="AAAA\nAAAA\nAAA="), "data_too_short": leaf(data=b64(bytes(4))),
        "data_too_long": leaf(data=b64(bytes(12))), "data_number": leaf(data=0), "data_null": leaf(data=None),
        "data_list": leaf(data=[0.0, 0.0]), "data_10_400": leaf(data=10**400), "data_for_zero_size": leaf(shape=[0]),
        "data_unicode": leaf(data="ÀÀÀÀ"),
    }
    out = [Case(f"array_{k}", "/v1/value", v, BAD_ARGUMENT) for k, v in bad.items()]
    out.append(Case("array_extra_key", "/v1/value", leaf(order="C"), BAD_ARGUMENT | BAD_REQUEST))
    out.append(Case("array_shape_10_400", "/v1/value", leaf(shape=[10**400]), BAD_ARGUMENT | limit(ARRAY, TOTAL)))
    out += [
        Case("array_not_an_object", "/v1/value", req(E("x"), {"$array": "AAAA"}), BAD_ARGUMENT),
        Case("array_with_sibling_key", "/v1/value", req(E("x"), {"$array": arr("float32", [1])["$array"], "y": 1}),
             BAD_ARGUMENT),
        Case("array_inside_array", "/v1/value", req(E("x"), {"$array": {"$array": arr("float32", [1])["$array"]}}),
             BAD_ARGUMENT),
        Case("array_in_tangents", "/v1/jvp", req(X, [1.0, 2.0], tangents=[{"$array": {"dtype": {}, "shape": [2],
                                                                                       "data": ""}}]),
             BAD_ARGUMENT | BAD_REQUEST),
        Case("array_in_cotangent", "/v1/vjp", req(E("x * 2"), [1.0, 2.0], cotangent={"$array": "x"}),
             BAD_ARGUMENT | BAD_REQUEST),
        Case("array_integer_input_to_grad", "/v1/grad", req(E("sum(x * 1.0)"), arr("int32", [2])), UNPROCESSABLE),
    ]
    return out


# ----------------------------------------------------------------------------- huge numbers, NaN tokens

HUGE = 10**400


def huge_number_cases() -> list[Case]:
    scalar = E("x * 2")
    slots: dict[str, tuple[str, dict[str, Any], Any]] = {
        "arg": ("/v1/value", req(scalar, HUGE), BAD_ARGUMENT),
        "arg_in_list": ("/v1/value", req(scalar, [1.0, HUGE]), BAD_ARGUMENT),
        "arg_negative": ("/v1/value", req(scalar, [-HUGE]), BAD_ARGUMENT),
        "arg_in_dict": ("/v1/value", req(E("x"), {"a": [1.0], "b": HUGE}), BAD_ARGUMENT),
        "arg_float64": ("/v1/value", req(scalar, [HUGE], dtype="float64"), BAD_ARGUMENT),
        "tangent": ("/v1/jvp", req(X, [1.0, 2.0], tangents=[[HUGE, 0.0]]), BAD_ARGUMENT | BAD_REQUEST),
        "cotangent": ("/v1/vjp", req(scalar, [1.0, 2.0], cotangent=[HUGE, 1.0]), BAD_ARGUMENT | BAD_REQUEST),
        "order": ("/v1/grad", req(X, [1.0], order=HUGE), BAD_REQUEST | limit(ORDER)),
        "check_order": ("/v1/check_grads", req(X, [1.0], check={"order": HUGE}), BAD_REQUEST | limit(ORDER)),
        "check_eps": ("/v1/check_grads", req(X, [1.0], check={"eps": HUGE}), BAD_REQUEST),
        "check_atol": ("/v1/check_grads", req(X, [1.0], check={"atol": HUGE}), BAD_REQUEST),
        "check_rtol": ("/v1/check_grads", req(X, [1.0], check={"rtol": HUGE}), BAD_REQUEST),
        "check_eps_overflowing_float": ("/v1/check_grads", req(X, [1.0], check={"eps": 1e400}), BAD_REQUEST),
        "has_aux": ("/v1/grad", req(X, [1.0], has_aux=HUGE), BAD_REQUEST),
        "mode": ("/v1/jacobian", req(X, [1.0], mode=HUGE), BAD_REQUEST),
        "dtype": ("/v1/value", req(X, [1.0], dtype=HUGE), BAD_REQUEST),
        "encoding": ("/v1/value", req(X, [1.0], encoding=HUGE), BAD_REQUEST),
        "model_name": ("/v1/value", req({"model": HUGE}, [1.0]), BAD_SPEC),
        "param_name": ("/v1/value", req({"expr": "1.0", "params": [HUGE]}, 1.0), BAD_SPEC),
        "shapes_dimension": ("/v1/shapes", {"function": E("x"), "args": [{"shape": [HUGE]}]},
                             BAD_REQUEST | BAD_ARGUMENT | limit(ARRAY)),
        "shapes_negative_dimension": ("/v1/shapes", {"function": E("x"), "args": [{"shape": [-HUGE]}]},
                                      BAD_REQUEST | BAD_ARGUMENT),
        "expression_literal": ("/v1/value", req(E("x * " + "1" + "0" * 400), 1.0), UNPROCESSABLE),
        "graph_literal": ("/v1/value", req(G([node("y", "mul", "x", HUGE)]), 1.0), BAD_FUNCTION),
        "graph_literal_typed": ("/v1/value", req(G([node("y", "mul", "x", {"literal": HUGE, "dtype": "float32"})]),
                                                 1.0), BAD_FUNCTION),
        "graph_constant_data": ("/v1/value", req(G([node("y", "add", "x", "c")],
                                                   constants={"c": {"dtype": "float32", "data": [HUGE]}}), [1.0]),
                                BAD_FUNCTION),
        "graph_attr_shape": ("/v1/value", req(G([node("y", "reshape", "x", shape=[HUGE])]), [1.0]),
                             BAD_FUNCTION | limit(ARRAY)),
        "graph_attr_axis": ("/v1/value", req(G([node("y", "cumsum", "x", axis=HUGE, reverse=False)]), [1.0]),
                            BAD_FUNCTION),
        "graph_attr_integer_pow": ("/v1/value", req(G([node("y", "integer_pow", "x", y=HUGE)]), [1.0]),
                                   BAD_FUNCTION),
        "graph_index": ("/v1/value", req(G([node("y", "gather", "x", index=[["int", HUGE]])]), [1.0]),
                        BAD_FUNCTION | UNPROCESSABLE),
        "graph_slice": ("/v1/value", req(G([node("y", "gather", "x", index=[["slice", 0, HUGE, 1]])]), [1.0]),
                        BAD_FUNCTION | UNPROCESSABLE),
        "graph_param_shape": ("/v1/value", req(G([node("y", "neg", "x")], params=[{"name": "x", "shape": [HUGE]}]),
                                               [1.0]), BAD_FUNCTION | limit(ARRAY)),
        "model_version": ("/v1/value", req({"model": "rosenbrock", "version": HUGE}, [1.0, 2.0]),
                          BAD_SPEC | NOT_FOUND),
    }
    return [Case(f"huge_{k}", route, body, expect) for k, (route, body, expect) in slots.items()]


def nan_cases() -> list[Case]:
    nan, inf = float("nan"), float("inf")
    scalar = E("x * 2")
    out = [
        Case("nan_tokens_in_args_accepted", "/v1/value", req(E("x"), [nan, inf, -inf]),
             ok(value_is(["NaN", "Infinity", "-Infinity"]))),
        Case("nan_strings_in_args_accepted", "/v1/value", req(E("x"), ["NaN", "Infinity", "-Infinity"]),
             ok(value_is(["NaN", "Infinity", "-Infinity"]))),
        Case("nan_result_is_a_string", "/v1/value", req(E("log(x)"), [-1.0]), ok(value_is(["NaN"]))),
    ]
    slots: dict[str, tuple[str, dict[str, Any]]] = {
        "order": ("/v1/grad", req(X, [1.0], order=nan)),
        "order_infinity": ("/v1/grad", req(X, [1.0], order=inf)),
        "argnums": ("/v1/grad", req(X, [1.0], argnums=inf)),
        "argnums_list": ("/v1/grad", req(X, [1.0], argnums=[nan])),
        "has_aux": ("/v1/grad", req(X, [1.0], has_aux=nan)),
        "check_order": ("/v1/check_grads", req(X, [1.0], check={"order": inf})),
        "check_eps": ("/v1/check_grads", req(X, [1.0], check={"eps": nan})),
        "check_atol": ("/v1/check_grads", req(X, [1.0], check={"atol": inf})),
        "check_rtol": ("/v1/check_grads", req(X, [1.0], check={"rtol": -inf})),
        "dtype": ("/v1/value", req(X, [1.0], dtype=nan)),
        "encoding": ("/v1/value", req(X, [1.0], encoding=inf)),
        "mode": ("/v1/jacobian", req(X, [1.0], mode=nan)),
    }
    out += [Case(f"nan_{k}", route, body, BAD_REQUEST) for k, (route, body) in slots.items()]
    out += [
        Case("nan_model_version", "/v1/value", req({"model": "rosenbrock", "version": nan}, [1.0, 2.0]),
             BAD_SPEC),
        Case("nan_array_shape", "/v1/value", req(scalar, {"$array": {"dtype": "float32", "shape": [nan], "data": ""}}),
             BAD_ARGUMENT),
        Case("nan_shapes_dimension", "/v1/shapes", {"function": E("x"), "args": [{"shape": [nan]}]},
             BAD_REQUEST | BAD_ARGUMENT),
        Case("nan_string_as_option", "/v1/grad", req(X, [1.0], order="NaN"), BAD_REQUEST),
    ]
    return out


# ----------------------------------------------------------------------------- integers in expressions

INTEGER_EXPRS: dict[str, str] = {
    "index_2_53": "x[2**53]",
    "power_2_53": "power(x, 2**53)",
    "zeros_2_62_4_0": "zeros((2**62, 4, 0))",
    "literal_2_53_plus_1": "x * 9007199254740993",
    "literal_20_digits": "x * 99999999999999999999",
    "computed_2_54": "x * 2**54",
    "computed_2_53_plus_1": "x + (2**53 + 1)",
    "computed_product": "x * (2**30 * 2**30)",
    "computed_2_63": "x + 2**63",
    "computed_minus_2_63": "x + -(2**63)",
    "computed_2_64": "x + 2**64",
    "computed_10_400": "x + 10**400",
    "negative_power_base": "x + (-2)**63",
    "index_negative": "x[-(2**53) - 1]",
    "slice_step": "x[::2**60]",
    "slice_stop": "x[0:2**60]",
    "pow_operator": "x ** 2**53",
    "pow_negative": "x ** -(2**60)",
    "floor_divide": "x // 2**60",
    "ones": "ones(2**60)",
    "arange": "arange(2**53 + 2)",
    "eye": "eye(2**60)",
    "linspace": "linspace(0, 1, 2**60)",
    "full": "full((2**60,), 1.0)",
    "reshape": "reshape(x, (2**53, -1))",
    "tile": "tile(x, 2**60)",
    "repeat": "repeat(x, 2**60)",
    "one_hot": "one_hot(x, 2**60)",
    "sum_axis": "sum(x, axis=2**60)",
    "expand_dims": "expand_dims(x, 2**60)",
    "take": "take(x, 2**60)",
}


# Exponents beyond NABLA_MAX_INTEGER_POWER are refused by that (configurable) limit.
POWERS = {"power_2_53", "pow_operator", "pow_negative"}


def integer_cases() -> list[Case]:
    out = [Case(f"int64_{k}", "/v1/value", req(E(src), [1.0]),
                UNPROCESSABLE | limit("NABLA_MAX_INTEGER_POWER") if k in POWERS else UNPROCESSABLE)
           for k, src in INTEGER_EXPRS.items()]
    # -(2**53) is inside the range: an exact answer, or a refusal, but never a wrong number
    out.append(Case("int64_minus_2_53", "/v1/value", req(E("-(2**53)"), [1.0]),
                    ok(value_is(-(2**53))) | UNPROCESSABLE))
    out.append(Case("int64_2_53_minus_1", "/v1/value", req(E("2**53 - 1"), [1.0]),
                    ok(value_is(2**53 - 1)) | UNPROCESSABLE))
    return out


# ----------------------------------------------------------------------------- dtype ranges in graphs

def dtype_range_cases() -> list[Case]:
    out = []
    for k, (dtype, value) in OUT_OF_RANGE.items():
        out.append(Case(f"range_literal_{k}", "/v1/value", req(literal_graph(dtype, value), 1.0), OUT_OF_DTYPE))
        out.append(Case(f"range_constant_{k}", "/v1/value", req(constant_graph(dtype, value), 1.0), OUT_OF_DTYPE))
    for k in ("int8_1000", "uint8_minus_1", "int64_2_63"):
        dtype, value = OUT_OF_RANGE[k]
        out.append(Case(f"range_bare_literal_{k}", "/v1/value", req(bare_literal_graph(dtype, value), 1.0),
                        OUT_OF_DTYPE))
    out.append(Case("range_constant_base64_fine", "/v1/value",
                    req(G([node("y", "convert_element_type", "c", dtype="float32")],
                          constants={"c": arr("int8", [2], b"\x7f\x80")}), 1.0), ok(value_is([127.0, -128.0]))))
    expressions = {"full_int8": 'full((2,), 1000, dtype="int8")', "array_int8": 'array([1000], dtype="int8")',
                   "asarray_uint8": 'asarray(-1, dtype="uint8")', "add_to_int8": 'zeros(3, dtype="int8") + 1000',
                   "multiply_uint8": 'ones(2, dtype="uint8") * 256', "arange_uint8": 'arange(300, dtype="uint8")',
                   "full_float16": 'full((2,), 70000, dtype="float16")'}
    out += [Case(f"range_expr_{k}", "/v1/value", req(E(src), [1.0]), UNPROCESSABLE) for k, src in expressions.items()]
    return out


# ----------------------------------------------------------------------------- expressions, einsum, dims

def expression_cases() -> list[Case]:
    bad = {"import": '__import__("os")', "dunder_attribute": "x.__class__", "getattr": 'getattr(x, "T")',
           "eval": 'eval("1")', "open": 'open("/etc/passwd")', "lambda": "(lambda: 1)()",
           "comprehension": "[i for i in x]", "fstring": 'f"{x}"', "walrus": "(y := x)", "ternary": "x if x else x",
           "at_multiply": "x.at[idx].multiply(y)", "syntax_error": "x +", "unknown_name": "y",
           "string_too_long": 'einsum("' + "i" * 65 + '", x)', "nul_byte": "x\x00", "lone_surrogate": "x\ud800",
           "arabic_digit": "x * \u0661", "bytes_literal": 'x * b"1"', "complex_literal": "x * 1j"}
    params = {"at_multiply": ["x", "idx", "y"]}
    # a lone surrogate cannot even be read as text: refused with the body, before the expression
    expected = {"lone_surrogate": BAD_FUNCTION | BAD_REQUEST}
    out = [Case(f"expr_{k}", "/v1/value",
                req(E(src, params.get(k, ["x"])), *([[1.0]] * len(params.get(k, ["x"])))),
                expected.get(k, BAD_FUNCTION)) for k, src in bad.items()]
    einsums = {"ellipsis_only": '"..."', "empty": '""', "arrow_only": '"->"', "repeated_output": '"i->ii"',
               "too_few_operands": '"ij,jk->ik"', "ellipsis_broadcast": '"...i,...i->..."',
               "33_indices": '"' + "abcdefghijklmnopqrstuvwxyzABCDEFG" + '->"', "no_arrow": '"i,i"',
               "unknown_output_index": '"i->j"', "non_ascii": '"\u00e9->"', "array_as_spec": "x"}
    operands = {"ellipsis_broadcast": "x, x", "too_few_operands": "x"}
    # `...` is supported (as NumPy: "..." alone is the identity), the other specs are malformed
    accepted = {"ellipsis_broadcast": ok(value_is(5.0)), "ellipsis_only": ok(value_is([1.0, 2.0]))}
    out += [Case(f"einsum_{k}", "/v1/value", req(E(f"einsum({spec}, {operands.get(k, 'x')})"), [1.0, 2.0]),
                 accepted.get(k, UNPROCESSABLE)) for k, spec in einsums.items()]
    return out


def dimension_cases() -> list[Case]:
    ones = lambda n: "(" + ", ".join(["1"] * n) + ")"  # noqa: E731
    deep_list: Any = 1.0
    for _ in range(33):
        deep_list = [deep_list]
    expand = "x"
    for _ in range(33):
        expand = f"expand_dims({expand}, 0)"
    dims = limit(DIMENSIONS)
    return [
        Case("dims_array_arg_33", "/v1/value", req(E("x"), arr("float32", [1] * 33)), dims),
        Case("dims_array_arg_64", "/v1/value", req(E("x"), arr("float32", [1] * 64)), dims),
        Case("dims_array_arg_65", "/v1/value", req(E("x"), arr("float32", [1] * 65)), dims),
        Case("dims_nested_list_33", "/v1/value", req(E("x"), deep_list), dims | limit(DEPTH)),
        Case("dims_zeros_33", "/v1/value", req(E(f"zeros({ones(33)})"), 1.0), dims),
        Case("dims_reshape_33", "/v1/value", req(E(f"reshape(x, {ones(33)})"), 1.0), dims),
        Case("dims_broadcast_to_33", "/v1/value", req(E(f"broadcast_to(x, {ones(33)})"), 1.0), dims),
        Case("dims_expand_dims_33", "/v1/value", req(E(expand), 1.0), dims),
        Case("dims_index_none_33", "/v1/value", req(E("x[" + ", ".join(["None"] * 33) + "]"), 1.0), dims),
        Case("dims_shapes_33", "/v1/shapes", {"function": E("x"), "args": [{"shape": [1] * 33}]},
             dims | BAD_REQUEST),
        Case("dims_jacobian_17_to_34", "/v1/jacobian", req(E("x * 2"), arr("float32", [1] * 17)), dims),
        Case("dims_hessian_17_to_34", "/v1/hessian", req(E("sum(x ** 2)"), arr("float32", [1] * 17)), dims),
        Case("dims_jacobian_16_to_32_fine", "/v1/jacobian", req(E("x * 2"), arr("float32", [1] * 16)), ok()),
        Case("dims_graph_param_33", "/v1/value",
             req(G([node("y", "neg", "x")], params=[{"name": "x", "shape": [1] * 33}]), 1.0), dims | BAD_FUNCTION),
        Case("dims_graph_reshape_33", "/v1/value", req(G([node("y", "reshape", "x", shape=[1] * 33)]), 1.0),
             dims | BAD_FUNCTION),
        Case("dims_graph_broadcast_33", "/v1/value", req(G([node("y", "broadcast_to", "x", shape=[1] * 33)]), 1.0),
             dims | BAD_FUNCTION),
        Case("dims_graph_constant_33", "/v1/value",
             req(G([node("y", "add", "x", "c")], constants={"c": arr("float32", [1] * 33)}), 1.0), dims | BAD_FUNCTION),
        Case("dims_graph_constant_list_33", "/v1/value",
             req(G([node("y", "add", "x", "c")], constants={"c": {"dtype": "float32", "data": deep_list}}), 1.0),
             dims | BAD_FUNCTION | limit(DEPTH)),
    ]


# ----------------------------------------------------------------------------- x.at[idx].multiply(y)

def at_multiply_graph(index: list[int], mode: str = "mul") -> dict[str, Any]:
    return G([node("u", "index_update", "x", "y", "idx", index=[["array", 0]], mode=mode),
              node("s", "reduce_sum", "u", axes=[0])],
             params=[{"name": "x", "shape": [3], "dtype": "float32"}, {"name": "y", "shape": [3], "dtype": "float32"}],
             constants={"idx": {"dtype": "int32", "shape": [3], "data": index}})


def at_multiply_cases() -> list[Case]:
    dups, unique = at_multiply_graph([0, 0, 1]), at_multiply_graph([0, 1, 2])
    x, y = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]
    f32 = {"dtype": "float32"}  # the graph declares float32 parameters
    return [
        Case("at_multiply_repeated_grad", "/v1/grad", req(dups, x, y, argnums=[0, 1], **f32), UNPROCESSABLE),
        Case("at_multiply_repeated_grad_values", "/v1/grad", req(dups, x, y, argnums=1, **f32), UNPROCESSABLE),
        Case("at_multiply_repeated_vjp", "/v1/vjp", req(dups, x, y, cotangent=1.0, **f32), UNPROCESSABLE),
        Case("at_multiply_repeated_jvp", "/v1/jvp", req(dups, x, y, tangents=[[1.0] * 3, [1.0] * 3], **f32),
             UNPROCESSABLE),
        Case("at_multiply_repeated_jacobian", "/v1/jacobian", req(dups, x, y, argnums=1, **f32), UNPROCESSABLE),
        Case("at_multiply_repeated_hessian", "/v1/hessian", req(dups, x, y, argnums=1, **f32), UNPROCESSABLE),
        # the value itself is well defined (x[0] * 2 * 3), and so are unique indices and repeated adds
        Case("at_multiply_repeated_value", "/v1/value", req(dups, x, y, **f32), ok(value_is(6.0 + 8.0 + 3.0))),
        Case("at_multiply_unique_grad", "/v1/grad", req(unique, x, y, argnums=1, **f32),
             ok(value_is([1.0, 2.0, 3.0], "grad"))),
        Case("at_add_repeated_grad", "/v1/grad", req(at_multiply_graph([0, 0, 1], "add"), x, y, argnums=1, **f32),
             ok(value_is([1.0, 1.0, 1.0], "grad"))),
    ]


CASES = cases(malformed_cases(), option_cases(), argnums_cases(), array_cases(), huge_number_cases(), nan_cases(),
              integer_cases(), dtype_range_cases(), expression_cases(), dimension_cases(), at_multiply_cases())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_body(server: HostileServer, case: Case) -> None:
    server.check(case)


def test_server_stayed_healthy(server: HostileServer, assert_healthy: Any) -> None:
    assert_healthy(server)
