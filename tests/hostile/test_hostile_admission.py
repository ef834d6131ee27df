"""Requests whose cost is the attack: they must be refused by admission (shape inference predicts
elements, peak memory and encoded response size before any work) or answered within the deadline.

Classes: zero-size arrays with huge leading dimensions (JSON encoding costs a list node per
leading index, not per element), transform result sizes (Jacobians/Hessians of large inputs,
high derivative orders), intermediates far larger than inputs or results, 33+ dimensions created
by transforms, work in decoding (many leaves, deep nesting, huge JSON), encoding cost of float
reprs, input totals, and computations that must stop at the deadline (long chains, order 4).

The server here accepts bodies up to 12 MiB, the default (larger inputs are refused by the body
limit before any other: those cases accept that refusal too); the other limits are the suite's
(`_hostile.BASE_ENV`): 1e7 elements per array, 2e7 input elements, 10,000 leaves, 128 MiB
predicted peak per request, 16 MiB encoded response, 5 s."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from _hostile import (
    ARRAY,
    BAD_ARGUMENT,
    BAD_FUNCTION,
    BAD_REQUEST,
    BODY,
    DEPTH,
    DIMENSIONS,
    EXPR_CHARS,
    EXPR_DEPTH,
    LEAVES,
    NODES,
    ORDER,
    REQUEST,
    RESPONSE,
    TIMEOUT,
    TOTAL,
    Case,
    E,
    Expect,
    HostileServer,
    MiB,
    arr,
    cases,
    chain_expr,
    chain_graph,
    dumps,
    limit,
    ok,
    req,
    value_is,
)

pytestmark = pytest.mark.slow

SERVER_ENV = {"NABLA_MAX_BODY_BYTES": str(12 * MiB)}  # the default: a worker parses a body this size in ~80 ms
# After a hundred costly requests RSS (server and workers) settles about 40 MiB above its baseline:
# the 16 MiB plan cache, the function cache and allocator arenas; a worker keeping more than its
# plan cache + 64 MiB is replaced. With compute in threads it was 74-80 MiB; before the pipeline
# 250-600.
RSS_END_MARGIN = 64 * MiB

SIZE = limit(ARRAY, REQUEST, RESPONSE)  # an array over 1e7 elements: any of the three is exceeded
ENCODING = limit(REQUEST, RESPONSE)  # elements are fine; the encoded answer (and its peak) is not
# A zero-size array with huge leading dimensions: its encoding is refused, or the array itself by the
# product of its non-zero dimensions (an element budget for its list structure).
ZERO_SIZE = limit(ARRAY, REQUEST, RESPONSE)
ANSWER_OR_DEADLINE = ok() | TIMEOUT  # a computation that may finish or stop at the deadline
HUGE_ZERO = [65536, 65536, 0]


def f32(n: int) -> dict[str, Any]:
    return arr("float32", [n])


def random_f32(n: int, dtype: str = "float32") -> dict[str, Any]:
    """Values whose JSON repr is long (~20 characters each), deterministic."""
    import numpy as np

    values = np.random.default_rng(0).standard_normal(n).astype(dtype)
    return arr(dtype, [n], values.tobytes())


# ----------------------------------------------------------------------------- the issue's list

def issue_cases() -> list[Case]:
    return [
        Case("issue_array_65536x65536x0", "/v1/value", req(E("x"), arr("float32", HUGE_ZERO, b"")), ZERO_SIZE),
        Case("issue_zeros_65536x65536x0", "/v1/value", req(E("zeros((65536, 65536, 0))"), 1.0), ZERO_SIZE),
        Case("issue_hessian_1e5", "/v1/hessian", req(E("sum(x ** 2)"), f32(100_000)), SIZE),
        Case("issue_dict_1e6_keys", "/v1/value", lambda: dict_body(10**6), limit(LEAVES)),
        # refused by a response-size limit, or answered within the limits
        Case("issue_arange_1e7", "/v1/value", req(E("arange(10**7)"), 1.0), ENCODING | ok()),
        Case("issue_grad_chain_graph_5000", "/v1/grad", req(chain_graph(5000), 0.5),
             ANSWER_OR_DEADLINE | limit(NODES, REQUEST)),
        # refused before tracing: a 4th derivative of 5,000 nodes is predicted at ~1.3e6 operations
        Case("issue_order4_chain_graph_5000", "/v1/grad", req(chain_graph(5000), 0.5, order=4),
             ANSWER_OR_DEADLINE | limit(NODES, REQUEST, "NABLA_MAX_PLAN_NODES")),
    ]


def dict_body(keys: int, value: bytes = b"0") -> bytes:
    items = b",".join(b'"k%d":%s' % (i, value) for i in range(keys))
    return b'{"function":{"expr":"x","params":["x"]},"args":[{' + items + b"}]}"


# ----------------------------------------------------------------------------- zero-size arrays

def zero_size_cases() -> list[Case]:
    shapes = {"1e7x0": [10**7, 0], "4096x4096x0": [4096, 4096, 0], "2_pow_24_dims": [2] * 24 + [0],
              "2_31x0": [2**31, 0], "2_40x0": [2**40, 0], "3x65536x65536x0": [3, 65536, 65536, 0]}
    out = [Case(f"zero_arg_{k}", "/v1/value", req(E("x"), arr("float32", s, b"")),
                ENCODING if k == "1e7x0" else ZERO_SIZE) for k, s in shapes.items()]
    exprs = {"ones": "ones((65536, 65536, 0))", "full": "full((65536, 65536, 0), 1.0)",
             "zeros_2_40": "zeros((2**40, 0))", "broadcast": "broadcast_to(x, (65536, 65536, 0))",
             "reshape": "reshape(x, (65536, 65536, 0))", "tile": "tile(x, (65536, 65536, 1))",
             "zeros_like": "zeros_like(zeros((65536, 65536, 0)))", "add_broadcast": "zeros((65536, 65536, 0)) + x",
             "stack": "stack([zeros((65536, 65536, 0)), zeros((65536, 65536, 0))])"}
    out += [Case(f"zero_expr_{k}", "/v1/value", req(E(src), arr("float32", [0], b"")), ZERO_SIZE)
            for k, src in exprs.items()]
    out += [
        # results of transforms
        Case("zero_grad", "/v1/grad", req(E("sum(x)"), arr("float32", HUGE_ZERO, b"")), ZERO_SIZE),
        Case("zero_value_and_grad", "/v1/value_and_grad", req(E("sum(x)"), arr("float32", HUGE_ZERO, b"")), ZERO_SIZE),
        Case("zero_hessian_4096", "/v1/hessian", req(E("sum(x)"), arr("float32", [4096, 4096, 0], b"")), ZERO_SIZE),
        Case("zero_jvp_tangent", "/v1/jvp", req(E("x * 2"), arr("float32", HUGE_ZERO, b""),
                                                  tangents=[arr("float32", HUGE_ZERO, b"")]), ZERO_SIZE),
        Case("zero_vjp_cotangent", "/v1/vjp", req(E("x * 2"), arr("float32", HUGE_ZERO, b""),
                                                    cotangent=arr("float32", HUGE_ZERO, b"")), ZERO_SIZE),
        # many zero-size leaves: the encoded size adds up over leaves
        Case("zero_many_leaves", "/v1/value", req(E("x"), {f"k{i}": arr("float32", [65536, 100, 0], b"")
                                                           for i in range(100)}), ZERO_SIZE),
        # an intermediate that is not zero-size: elements, not encoding
        Case("zero_reduced_to_huge", "/v1/value", req(E("sum(zeros((65536, 65536, 0)), axis=2)"), 1.0), SIZE),
        # base64 answers are a few bytes: answered (or refused, but never a 5xx)
        Case("zero_base64_answer", "/v1/value", req(E("x"), arr("float32", HUGE_ZERO, b""), encoding="base64"),
             ok(lambda b: None if b["value"]["$array"]["shape"] == HUGE_ZERO else f"shape {b['value']}") | ZERO_SIZE),
        # small list structure: answered
        Case("zero_leading_zero_fine", "/v1/value", req(E("x"), arr("float32", [0, 10**9], b"")), ok(value_is([]))),
        Case("zero_32_dims_fine", "/v1/value", req(E("x"), arr("float32", [1, 0] * 16, b"")), ok()),
        Case("zero_shapes_endpoint_fine", "/v1/shapes", {"function": E("x"), "args": [{"shape": HUGE_ZERO}]},
             ok(lambda b: None if b["output"]["shape"] == HUGE_ZERO else f"output {b['output']}")),
    ]
    return out


# ----------------------------------------------------------------------------- transform results

def transform_cases() -> list[Case]:
    return [
        Case("jacobian_rev_identity_1e5", "/v1/jacobian", req(E("x * 1.0"), f32(100_000)), SIZE),
        Case("jacobian_fwd_identity_1e5", "/v1/jacobian", req(E("x * 1.0"), f32(100_000), mode="fwd"), SIZE),
        Case("jacobian_tanh_3000", "/v1/jacobian", req(E("tanh(x)"), f32(3000)), ENCODING),
        Case("jacobian_tanh_3000_base64", "/v1/jacobian", req(E("tanh(x)"), f32(3000), encoding="base64"), ENCODING),
        Case("jacobian_outer_1000", "/v1/jacobian", req(E("outer(x, x)"), f32(1000)), SIZE),
        Case("hessian_sum_sq_3000", "/v1/hessian", req(E("sum(x ** 2)"), f32(3000)), ENCODING),
        Case("hessian_two_args_5e4", "/v1/hessian", req(E("sum(x * y)", ["x", "y"]), f32(50_000), f32(50_000),
                                                        argnums=[0, 1]), SIZE),
        Case("hessian_fwd_rev_of_matrix", "/v1/hessian", req(E("sum(x ** 3)"), arr("float32", [100, 100])), SIZE),
        Case("vjp_outer_4000", "/v1/vjp", req(E("outer(x, x)"), f32(4000), cotangent=1.0), SIZE),
        Case("jvp_outer_4000", "/v1/jvp", req(E("outer(x, x)"), f32(4000), tangents=[f32(4000)]), SIZE),
        Case("grad_order_5", "/v1/grad", req(E("sin(x)"), 0.5, order=5), limit(ORDER)),
        Case("grad_order_2_63", "/v1/grad", req(E("sin(x)"), 0.5, order=2**63), limit(ORDER) | BAD_REQUEST),
        Case("check_grads_order_5", "/v1/check_grads", req(E("sin(x)"), 0.5, check={"order": 5}), limit(ORDER)),
        Case("check_grads_order_4_of_1e5", "/v1/check_grads", req(E("sum(tanh(x))"), f32(10**5), check={"order": 4}),
             ANSWER_OR_DEADLINE | limit(REQUEST, NODES)),
        # float reprs are long: 1e6 random float64 values encode to ~20 MB of JSON
        Case("encoding_float64_repr_1e6", "/v1/value", req(E("x"), random_f32(10**6, "float64"), dtype="float64"),
             ENCODING),
        Case("encoding_float32_repr_2e6", "/v1/value", req(E("x"), random_f32(2 * 10**6)), ENCODING),
        Case("encoding_ones_3000x3000", "/v1/value", req(E("ones((3000, 3000))"), 1.0), ENCODING),
    ]


# ----------------------------------------------------------------------------- intermediates

def intermediate_cases() -> list[Case]:
    exprs = {"outer_4000": ("outer(x, x)", 4000), "broadcast_product": ("ones((10**5, 1)) * ones((1, 10**5))", 1),
             "sum_of_huge": ("sum(ones((10**4, 10**4)))", 1), "mean_outer": ("mean(outer(x, x))", 10**4),
             "tile": ("tile(x, 100000)", 1000), "repeat": ("repeat(x, 100000)", 1000), "eye": ("eye(10**5)", 1),
             "linspace": ("linspace(0, 1, 10**8)", 1), "arange": ("arange(10**8)", 1),
             "einsum_3way": ('einsum("i,j,k->ijk", x, x, x)', 1000),
             "none_broadcast": ("x[:, None] * x[None, :]", 10**5),
             "stack_20": ("stack([" + ", ".join(["x"] * 20) + "])", 10**6),
             "cumsum_huge": ("cumsum(ones((10**4, 10**4)))", 1)}
    out = [Case(f"intermediate_{k}", "/v1/value", req(E(src), f32(n)), SIZE) for k, (src, n) in exprs.items()]
    out.append(Case("intermediate_under_grad", "/v1/grad", req(E("sum(outer(x, x))"), f32(10**4)), SIZE))
    out.append(Case("intermediate_ones_33_dims", "/v1/value",
                    req(E("ones((" + ", ".join(["2"] * 33) + "))"), 1.0), limit(DIMENSIONS, ARRAY, REQUEST, RESPONSE)))
    return out


# ----------------------------------------------------------------------------- decoding work

def deep_list(depth: int) -> bytes:
    return b'{"function":{"expr":"x","params":["x"]},"args":[' + b"[" * depth + b"1.0" + b"]" * depth + b"]}"


def deep_dict(depth: int) -> bytes:
    return b'{"function":{"expr":"x","params":["x"]},"args":[' + b'{"a":' * depth + b"1.0" + b"}" * depth + b"]}"


def decoding_cases() -> list[Case]:
    ragged = [[1.0], [1.0, 2.0]] * 5001  # 10,002 leaves (a ragged list is a list of leaves)
    tiny = {"$array": {"dtype": "float32", "shape": [1], "data": "AAAAAA=="}}
    three = E("x", ["x", "y", "z"])
    return [
        Case("leaves_ragged_list", "/v1/value", req(E("x"), ragged), limit(LEAVES)),
        Case("leaves_array_leaves", "/v1/value", req(E("x"), [tiny] * 10_001), limit(LEAVES)),
        Case("leaves_across_args", "/v1/value", req(three, *[[[1.0], [1.0, 2.0]] * 2000] * 3), limit(LEAVES)),
        Case("leaves_in_tangents", "/v1/jvp", req(E("x[0][0] * 1.0"), ragged, tangents=[ragged]), limit(LEAVES)),
        Case("leaves_in_cotangent", "/v1/vjp", req(E("x * 2"), 1.0, cotangent=ragged), limit(LEAVES) | BAD_REQUEST),
        Case("leaves_shape_specs", "/v1/shapes", {"function": E("x"), "args": [[{"shape": [1]}] * 10_001]},
             limit(LEAVES)),
        Case("leaves_dict_of_1e5_arrays", "/v1/value", lambda: dict_body(10**5, b"[1.0]"), limit(LEAVES)),
        # not array leaves: a million nulls is bounded by the body size; answered or refused
        Case("nodes_1e6_nulls", "/v1/value", lambda: dict_body(10**6, b"null"),
             ok() | TIMEOUT | limit(LEAVES, REQUEST, RESPONSE, BODY)),
        Case("nodes_2e5_empty_lists", "/v1/value",
             b'{"function":{"expr":"x","params":["x"]},"args":[[' + b",".join([b"[]"] * 200_000) + b"]]}",
             ok() | TIMEOUT | limit(LEAVES, REQUEST, RESPONSE)),
        Case("depth_list_1e5", "/v1/value", deep_list(100_000), limit(DEPTH, DIMENSIONS) | BAD_REQUEST),
        # refused before parsing by its 100,000 object members (each level is one), or by its depth
        Case("depth_dict_1e5", "/v1/value", deep_dict(100_000), limit(DEPTH, LEAVES) | BAD_REQUEST),
        Case("depth_dict_40", "/v1/value", deep_dict(40), limit(DEPTH)),
        Case("depth_in_check_option", "/v1/check_grads",
             b'{"function":{"expr":"x","params":["x"]},"args":[1.0],"check":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
             limit(DEPTH) | BAD_REQUEST),
        Case("depth_in_graph_description", "/v1/value",
             b'{"function":{"graph":{"format":"nabla.graph/1","params":["x"],"nodes":[],"outputs":["x"],'
             b'"description":' + b"[" * 50_000 + b"]" * 50_000 + b"}},\"args\":[1.0]}",
             limit(DEPTH) | BAD_FUNCTION | BAD_REQUEST),
        # 7.5 million numbers in 15 MB of JSON: legal, but decoding is under the deadline too (408), or
        # the request is refused by its predicted memory
        Case("json_7_5e6_numbers", "/v1/value",
             lambda: b'{"function":{"expr":"sum(x)","params":["x"]},"args":[[' + b"0," * 7_499_999 + b"0]]}",
             ok(value_is(0.0)) | TIMEOUT | limit(REQUEST, BODY)),
        Case("json_string_10mb_arg", "/v1/value", lambda: dumps(req(E("x"), "x" * (10 * MiB))), BAD_ARGUMENT),
        Case("json_key_1mb", "/v1/value", lambda: dumps(req(E("x"), {"k" * MiB: "x"})), BAD_ARGUMENT),
        Case("expr_1mb_source", "/v1/value", lambda: dumps(req(E(" " * MiB + "x"), 1.0)), limit(EXPR_CHARS)),
        # over the body limit (12 MiB here, as by default) before the expression is even read
        Case("expr_30mb_source", "/v1/value", lambda: dumps(req(E("x" + " " * (30 * MiB)), 1.0)),
             limit(EXPR_CHARS, BODY)),
        Case("expr_5000_terms", "/v1/value", req(E("+".join(["x"] * 5000)), 1.0),
             limit(NODES, EXPR_DEPTH) | BAD_FUNCTION),
        Case("expr_10000_parens", "/v1/value", req(E("(" * 10_000 + "x" + ")" * 10_000), 1.0),
             limit(EXPR_CHARS, EXPR_DEPTH) | BAD_FUNCTION),
        Case("expr_5000_unary_minus", "/v1/value", req(E("-" * 5000 + "x"), 1.0),
             limit(NODES, EXPR_DEPTH) | BAD_FUNCTION),
        Case("expr_1000_nested_calls", "/v1/value", req(E("tanh(" * 1000 + "x" + ")" * 1000), 1.0),
             limit(NODES, EXPR_DEPTH) | BAD_FUNCTION),
        Case("expr_6000_lines", "/v1/value", req(E("a = x\n" * 6000 + "a"), 1.0), limit(EXPR_CHARS, NODES)),
        Case("graph_10001_nodes", "/v1/value", req(chain_graph(10_001, "neg"), 1.0), limit(NODES)),
        Case("graph_10001_params", "/v1/value",
             req({"graph": {"format": "nabla.graph/1", "params": [f"p{i}" for i in range(10_001)], "nodes": [],
                            "outputs": ["p0"]}}, *[1.0] * 10_001), limit(NODES, LEAVES)),
        Case("graph_node_with_10000_inputs", "/v1/value",
             req({"graph": {"format": "nabla.graph/1", "params": ["x"],
                            "nodes": [{"id": "c", "op": "concatenate", "inputs": ["x"] * 10_000, "attrs": {"axis": 0}}],
                            "outputs": ["c"]}}, [1.0]), BAD_FUNCTION | limit(NODES)),
    ]


# ----------------------------------------------------------------------------- input totals

def total_cases() -> list[Case]:
    seven_m = 7_000_000

    def bools(n: int) -> dict[str, Any]:
        return {"$array": {"dtype": "bool", "shape": [n], "data": base64.b64encode(bytes(n)).decode()}}

    three = E("x", ["x", "y", "z"])
    return [
        Case("total_three_7e6_arrays", "/v1/value", lambda: dumps(req(three, bools(seven_m), bools(seven_m),
                                                                       bools(seven_m))), limit(TOTAL, BODY)),
        Case("array_1e7_plus_1", "/v1/value", lambda: dumps(req(E("x"), bools(10**7 + 1))),
             SIZE | limit(TOTAL, BODY)),
        # shapes whose element count overflows int64 (and whose data cannot match)
        Case("array_shape_1e6x1e6", "/v1/value", req(E("x"), arr("float32", [10**6, 10**6], b"")),
             limit(ARRAY, TOTAL) | BAD_ARGUMENT),
        Case("array_shape_2_32x2_32", "/v1/value", req(E("x"), arr("float32", [2**32, 2**32], b"")),
             limit(ARRAY, TOTAL) | BAD_ARGUMENT),
        Case("array_shape_2_64", "/v1/value", req(E("x"), arr("float32", [2**64], b"")),
             limit(ARRAY, TOTAL) | BAD_ARGUMENT),
    ]


# ----------------------------------------------------------------------------- deadlines

def deadline_cases() -> list[Case]:
    import numpy as np

    a = np.random.default_rng(1).standard_normal((1000, 1000)).astype("float32") / 30
    matrix = arr("float32", [1000, 1000], a.tobytes())
    mm_chain = "\n".join(["h = A"] + [f"h = tanh(h @ A + {i + 2}.0)" for i in range(150)] + ["sum(h)"])
    refused_or_bounded = ANSWER_OR_DEADLINE | limit(NODES, REQUEST)
    return [
        Case("deadline_order4_chain_expr_200", "/v1/grad", req(E(chain_expr(200)), 0.5, order=4), refused_or_bounded),
        Case("deadline_hessian_chain_expr_300", "/v1/hessian", req(E(chain_expr(300, out="sum(h)")), f32(100)),
             refused_or_bounded),
        Case("deadline_matmul_chain_150", "/v1/value", req(E(mm_chain, ["A"]), matrix), refused_or_bounded),
    ]


CASES = cases(issue_cases(), zero_size_cases(), transform_cases(), intermediate_cases(), decoding_cases(),
              total_cases(), deadline_cases())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_costly_request(server: HostileServer, case: Case) -> None:
    server.check(case)


def test_server_still_computes(server: HostileServer) -> None:
    """After all that, an ordinary request is answered at once."""
    server.check(Case("ordinary_after_hostile", "/v1/grad", req(E("sum(x ** 2)"), [1.0, 2.0]),
                      Expect(success=frozenset({200}), check_success=value_is([2.0, 4.0], "grad"), within_s=2.0)))


def test_server_stayed_healthy(server: HostileServer, assert_healthy: Any) -> None:
    assert_healthy(server)
