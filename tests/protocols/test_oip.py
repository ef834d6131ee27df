"""Nabla speaks the Open Inference Protocol v2 (KServe, Triton): NVIDIA's own client,
`tritonclient.http.InferenceServerClient`, reads the server's and the models' metadata and runs
`infer` on built-in and registered models, with tensors in JSON and in the binary tensor data
extension, for the value and for derivatives selected by request parameters. Every answer agrees
with /v1 (the same pipeline) and with closed forms; every bad request gets OIP's error body,
{"error": "<message>"}, with a 4xx."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from _protocol_support import (
    TUTORIAL_B,
    TUTORIAL_W,
    rosenbrock,
    rosenbrock_grad,
    rosenbrock_hessian,
    spring_grad,
    tanh_layer_parts,
    tutorial_grad,
    tutorial_hessian,
    tutorial_loss,
    v1,
)
from tritonclient.utils import InferenceServerException

X = np.array([0.5, -1.25, 2.0, 0.75])
SPRING_K, SPRING_X0, SPRING_X = np.array([2.0, 0.5, 3.0]), np.array([0.1, -0.4, 1.0]), np.array([0.7, 0.2, -1.5])
TANH_A = np.array([[0.3, -0.2, 0.5], [0.1, 0.4, -0.6]])
TANH_C, TANH_X = np.array([0.05, -0.1]), np.array([0.8, -0.3, 0.45])


@pytest.fixture(scope="module")
def client(server: Any) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def tensor(name: str, value: Any, binary: bool, datatype: str = "FP64") -> triton.InferInput:
    value = np.asarray(value, dtype={"FP64": np.float64, "FP32": np.float32}.get(datatype))
    t = triton.InferInput(name, list(value.shape), datatype)
    t.set_data_from_numpy(value, binary_data=binary)
    return t


def outputs(*names: str, binary: bool) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(n, binary_data=binary) for n in names]


def tutorial_inputs(binary: bool) -> list[triton.InferInput]:
    return [tensor("W", TUTORIAL_W, binary, "FP32"), tensor("b", TUTORIAL_B, binary, "FP32")]


def spring_inputs(binary: bool) -> list[triton.InferInput]:
    return [tensor("params.k", SPRING_K, binary), tensor("params.x0", SPRING_X0, binary),
            tensor("x", SPRING_X, binary)]


def tanh_inputs(binary: bool) -> list[triton.InferInput]:
    return [tensor("params.A", TANH_A, binary), tensor("params.c", TANH_C, binary), tensor("x", TANH_X, binary)]


SPRING_ARGS = [{"k": SPRING_K.tolist(), "x0": SPRING_X0.tolist()}, SPRING_X.tolist()]
TANH_ARGS = [{"A": TANH_A.tolist(), "c": TANH_C.tolist()}, TANH_X.tolist()]
TUTORIAL_ARGS = [TUTORIAL_W.tolist(), float(TUTORIAL_B)]


# ----------------------------------------------------------------------------- metadata and health


def test_the_server_is_live_ready_and_names_its_extensions(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "nabla" and metadata["version"]
    assert {"binary_tensor_data", "parameters"} <= set(metadata["extensions"])


def test_model_metadata_lists_typed_inputs_with_free_dimensions_as_minus_one(
        client: triton.InferenceServerClient) -> None:
    rosen = client.get_model_metadata("rosenbrock")
    assert rosen["name"] == "rosenbrock" and rosen["versions"] == ["1"] and rosen["platform"] == "nabla"
    assert rosen["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [-1]}]
    assert rosen["outputs"] == [{"name": "value", "datatype": "FP64", "shape": []}]
    tutorial = client.get_model_metadata("tutorial_logreg")
    assert tutorial["inputs"] == [{"name": "W", "datatype": "FP32", "shape": [3]},
                                  {"name": "b", "datatype": "FP32", "shape": []}]
    layer = client.get_model_metadata("tanh_layer")  # a pytree parameter, flattened by its schema's paths
    assert [(t["name"], t["shape"]) for t in layer["inputs"]] == [("params.A", [2, 3]), ("params.c", [2]),
                                                                    ("x", [3])]
    assert layer["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [2]}]
    assert client.is_model_ready("rosenbrock") and client.is_model_ready("tanh_layer", "1")
    assert not client.is_model_ready("no_such_model") and not client.is_model_ready("rosenbrock", "2")


def test_model_metadata_of_a_transform_names_what_infer_will_return(client: triton.InferenceServerClient) -> None:
    grads = client.get_model_metadata("tutorial_logreg", query_params={"transform": "grad", "argnums": "0,1"})
    assert grads["outputs"] == [{"name": "grad.W", "datatype": "FP32", "shape": [3]},
                                {"name": "grad.b", "datatype": "FP32", "shape": []}]
    hessian = client.get_model_metadata("rosenbrock", query_params={"transform": "hessian"})
    assert hessian["outputs"] == [{"name": "hessian", "datatype": "FP64", "shape": [-1, -1]}]
    jvp = client.get_model_metadata("tanh_layer", query_params={"transform": "jvp"})
    assert [t["name"] for t in jvp["inputs"]] == ["params.A", "params.c", "x", "tangent.params.A",
                                                  "tangent.params.c", "tangent.x"]
    assert [(t["name"], t["shape"]) for t in jvp["outputs"]] == [("value", [2]), ("jvp", [2])]
    vjp = client.get_model_metadata("tanh_layer", query_params={"transform": "vjp"})
    assert vjp["inputs"][-1] == {"name": "cotangent", "datatype": "FP64", "shape": [2]}
    assert [(t["name"], t["shape"]) for t in vjp["outputs"]] == [
        ("value", [2]), ("vjp.params.A", [2, 3]), ("vjp.params.c", [2]), ("vjp.x", [3])]
    blocks = client.get_model_metadata("tutorial_logreg", query_params={"transform": "hessian", "argnums": "W,b"})
    assert [(t["name"], t["shape"]) for t in blocks["outputs"]] == [
        ("hessian.W.W", [3, 3]), ("hessian.W.b", [3]), ("hessian.b.W", [3]), ("hessian.b.b", [])]


# ----------------------------------------------------------------------------- infer


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_value_of_builtin_and_registered_models(client: triton.InferenceServerClient, server: Any,
                                                binary: bool) -> None:
    result = client.infer("rosenbrock", [tensor("x", X, binary)], outputs=outputs("value", binary=binary))
    assert result.as_numpy("value").dtype == np.float64
    assert result.as_numpy("value") == pytest.approx(rosenbrock(X), rel=1e-15)
    assert result.as_numpy("value") == v1(server.url, "rosenbrock", "value", {"args": [X.tolist()]})["value"]
    assert ("binary_data_size" in result.get_output("value").get("parameters", {})) == binary

    layer = client.infer("tanh_layer", tanh_inputs(binary), outputs=outputs("value", binary=binary))
    np.testing.assert_allclose(layer.as_numpy("value"), np.tanh(TANH_A @ TANH_X + TANH_C), rtol=1e-15)
    np.testing.assert_array_equal(layer.as_numpy("value"), v1(server.url, "tanh_layer", "value",
                                                              {"args": TANH_ARGS})["value"])


def test_without_requested_outputs_every_output_comes_back_binary(client: triton.InferenceServerClient) -> None:
    # tritonclient then sets the request parameter binary_data_output, as Triton expects
    result = client.infer("tutorial_logreg", tutorial_inputs(True), parameters={"transform": "value_and_grad"})
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["value", "grad.W"]
    assert all("data" not in o and o["parameters"]["binary_data_size"] > 0 for o in response["outputs"])
    assert result.as_numpy("value").dtype == np.float32
    assert result.as_numpy("value") == pytest.approx(tutorial_loss(TUTORIAL_W, TUTORIAL_B), rel=1e-6)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_grad_through_request_parameters(client: triton.InferenceServerClient, server: Any, binary: bool) -> None:
    result = client.infer("tutorial_logreg", tutorial_inputs(binary),
                          parameters={"transform": "grad", "argnums": "0,1"},
                          outputs=outputs("grad.W", "grad.b", binary=binary))
    w_grad, b_grad = result.as_numpy("grad.W"), result.as_numpy("grad.b")
    assert w_grad.dtype == np.float32 and w_grad.shape == (3,) and b_grad.shape == ()
    expected_w, expected_b = tutorial_grad(TUTORIAL_W, TUTORIAL_B)
    np.testing.assert_allclose(w_grad, expected_w, rtol=1e-5)
    assert float(b_grad) == pytest.approx(-0.29227245, rel=1e-6) == pytest.approx(expected_b, rel=1e-5)
    reference = v1(server.url, "tutorial_logreg", "grad", {"args": TUTORIAL_ARGS, "argnums": [0, 1]})["grad"]
    np.testing.assert_array_equal(w_grad, np.float32(reference[0]))
    assert b_grad == np.float32(reference[1])

    spring = client.infer("spring", spring_inputs(binary), parameters={"transform": "grad", "argnums": "params,x"},
                          outputs=outputs("grad.params.k", "grad.params.x0", "grad.x", binary=binary))
    expected = spring_grad(SPRING_K, SPRING_X0, SPRING_X)
    for name, key in (("grad.params.k", "k"), ("grad.params.x0", "x0"), ("grad.x", "x")):
        np.testing.assert_allclose(spring.as_numpy(name), expected[key], rtol=1e-14, atol=1e-15)
    reference = v1(server.url, "spring", "grad", {"args": SPRING_ARGS, "argnums": [0, 1]})["grad"]
    np.testing.assert_array_equal(spring.as_numpy("grad.params.k"), reference[0]["k"])
    np.testing.assert_array_equal(spring.as_numpy("grad.x"), reference[1])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_hessian_through_request_parameters(client: triton.InferenceServerClient, server: Any, binary: bool) -> None:
    rosen = client.infer("rosenbrock", [tensor("x", X, binary)], parameters={"transform": "hessian"},
                         outputs=outputs("hessian", binary=binary))
    np.testing.assert_allclose(rosen.as_numpy("hessian"), rosenbrock_hessian(X), rtol=1e-14)
    np.testing.assert_array_equal(rosen.as_numpy("hessian"),
                                  v1(server.url, "rosenbrock", "hessian", {"args": [X.tolist()]})["hessian"])

    blocks = client.infer("tutorial_logreg", tutorial_inputs(binary), parameters={"transform": "hessian",
                                                                                  "argnums": "0,1"},
                          outputs=outputs("hessian.W.W", "hessian.W.b", "hessian.b.W", "hessian.b.b", binary=binary))
    full = tutorial_hessian(TUTORIAL_W, TUTORIAL_B)
    np.testing.assert_allclose(blocks.as_numpy("hessian.W.W"), full[:3, :3], rtol=1e-5)
    np.testing.assert_allclose(blocks.as_numpy("hessian.W.b"), full[:3, 3], rtol=1e-5)
    np.testing.assert_allclose(blocks.as_numpy("hessian.b.W"), full[3, :3], rtol=1e-5)
    assert float(blocks.as_numpy("hessian.b.b")) == pytest.approx(full[3, 3], rel=1e-5)

    spring = client.infer("spring", spring_inputs(binary), parameters={"transform": "hessian", "argnums": "x"},
                          outputs=outputs("hessian", binary=binary))
    np.testing.assert_allclose(spring.as_numpy("hessian"), np.diag(SPRING_K + 2 * SPRING_X), rtol=1e-14)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_jvp_takes_a_tangent_input_per_model_input(client: triton.InferenceServerClient, server: Any,
                                                   binary: bool) -> None:
    t = np.array([1.0, -2.0, 0.5, 3.0])
    rosen = client.infer("rosenbrock", [tensor("x", X, binary), tensor("tangent.x", t, binary)],
                         parameters={"transform": "jvp"}, outputs=outputs("value", "jvp", binary=binary))
    assert rosen.as_numpy("jvp") == pytest.approx(rosenbrock_grad(X) @ t, rel=1e-13)
    assert rosen.as_numpy("jvp") == v1(server.url, "rosenbrock", "jvp",
                                       {"args": [X.tolist()], "tangents": [t.tolist()]})["jvp"]

    tk, tx0, tx = np.array([1.0, 0.0, -1.0]), np.array([0.5, 0.5, 0.5]), np.array([0.0, 2.0, 1.0])
    spring = client.infer("spring", spring_inputs(binary) + [
        tensor("tangent.params.k", tk, binary), tensor("tangent.params.x0", tx0, binary),
        tensor("tangent.x", tx, binary)], parameters={"transform": "jvp"}, outputs=outputs("jvp", binary=binary))
    g = spring_grad(SPRING_K, SPRING_X0, SPRING_X)
    assert spring.as_numpy("jvp") == pytest.approx(g["k"] @ tk + g["x0"] @ tx0 + g["x"] @ tx, rel=1e-13)

    layer = client.infer("tanh_layer", tanh_inputs(binary) + [
        tensor("tangent.params.A", np.zeros((2, 3)), binary), tensor("tangent.params.c", np.zeros(2), binary),
        tensor("tangent.x", tx, binary)], parameters={"transform": "jvp"}, outputs=outputs("jvp", binary=binary))
    _, slope, _ = tanh_layer_parts(TANH_A, TANH_C, TANH_X)
    np.testing.assert_allclose(layer.as_numpy("jvp"), slope * (TANH_A @ tx), rtol=1e-14)


def test_vjp_jacobian_and_hvp_of_a_registered_model(client: triton.InferenceServerClient, server: Any) -> None:
    t, slope, curvature = tanh_layer_parts(TANH_A, TANH_C, TANH_X)
    cotangent = np.array([1.5, -0.5])
    vjp = client.infer("tanh_layer", tanh_inputs(True) + [tensor("cotangent", cotangent, True)],
                       parameters={"transform": "vjp"})
    np.testing.assert_allclose(vjp.as_numpy("vjp.x"), TANH_A.T @ (cotangent * slope), rtol=1e-14)
    np.testing.assert_allclose(vjp.as_numpy("vjp.params.A"), np.outer(cotangent * slope, TANH_X), rtol=1e-14)
    np.testing.assert_allclose(vjp.as_numpy("vjp.params.c"), cotangent * slope, rtol=1e-14)

    jacobian = client.infer("tanh_layer", tanh_inputs(False), parameters={"transform": "jacobian", "argnums": "x"})
    np.testing.assert_allclose(jacobian.as_numpy("jacobian"), slope[:, None] * TANH_A, rtol=1e-14)
    hessian = client.infer("tanh_layer", tanh_inputs(True), parameters={"transform": "hessian", "argnums": 1})
    expected = np.einsum("o,oi,oj->oij", curvature, TANH_A, TANH_A)
    np.testing.assert_allclose(hessian.as_numpy("hessian"), expected, rtol=1e-13, atol=1e-16)

    v = np.array([0.25, -1.0, 2.0, 0.5])
    hvp = client.infer("rosenbrock", [tensor("x", X, True), tensor("tangent.x", v, True)],
                       parameters={"transform": "hvp"})
    np.testing.assert_allclose(hvp.as_numpy("hvp.x"), rosenbrock_hessian(X) @ v, rtol=1e-14)
    np.testing.assert_allclose(hvp.as_numpy("grad.x"), rosenbrock_grad(X), rtol=1e-14)
    reference = v1(server.url, "rosenbrock", "hvp", {"args": [X.tolist()], "tangents": [v.tolist()]})
    np.testing.assert_array_equal(hvp.as_numpy("hvp.x"), reference["hvp"])


def test_the_sent_datatype_is_the_precision_computed_in(client: triton.InferenceServerClient) -> None:
    # as /v1's $array leaves: FP32 tensors for a float64 model are computed in float32
    result = client.infer("rosenbrock", [tensor("x", X, True, "FP32")], parameters={"transform": "grad"})
    assert result.as_numpy("grad.x").dtype == np.float32
    np.testing.assert_allclose(result.as_numpy("grad.x"), rosenbrock_grad(X), rtol=1e-6)


def test_request_ids_and_model_versions_come_back(client: triton.InferenceServerClient) -> None:
    result = client.infer("rosenbrock", [tensor("x", X, True)], model_version="1", request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42" and response["model_name"] == "rosenbrock"
    assert response["model_version"] == "1"


# ----------------------------------------------------------------------------- errors


def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_bad_requests_get_oip_errors_with_a_4xx(client: triton.InferenceServerClient) -> None:
    unknown = refused(lambda: client.infer("no_such_model", [tensor("x", X, True)]))
    assert unknown.status() == "404" and "no_such_model" in unknown.message()
    assert refused(lambda: client.get_model_metadata("no_such_model")).status() == "404"
    assert refused(lambda: client.infer("rosenbrock", [tensor("x", X, True)], model_version="3")).status() == "404"

    shape = refused(lambda: client.infer("tutorial_logreg", [tensor("W", np.zeros(4), True, "FP32"),
                                                               tensor("b", TUTORIAL_B, True, "FP32")]))
    assert shape.status() == "422" and "W: expected f32[3], got f32[4]" in shape.message()

    strings = triton.InferInput("x", [2], "BYTES")
    strings.set_data_from_numpy(np.array([b"1.0", b"2.0"], dtype=object))
    datatype = refused(lambda: client.infer("rosenbrock", [strings]))
    assert datatype.status().startswith("4") and "BYTES" in datatype.message()

    transform = refused(lambda: client.infer("rosenbrock", [tensor("x", X, True)], parameters={"transform": "curl"}))
    assert transform.status() == "400" and "unknown 'curl'" in transform.message()
    name = refused(lambda: client.infer("rosenbrock", [tensor("y", X, True)]))
    assert name.status() == "400" and "has no input 'y'" in name.message() and "['x']" in name.message()
    missing = refused(lambda: client.infer("rosenbrock", [tensor("x", X, True)], parameters={"transform": "jvp"}))
    assert missing.status() == "400" and "tangent.x" in missing.message()
    output = refused(lambda: client.infer("rosenbrock", [tensor("x", X, True)], outputs=outputs("grad.x", binary=True)))
    assert output.status() == "400" and "no output 'grad.x'" in output.message()


def post(server: Any, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers=headers or {}, timeout=30)


SHORT_BINARY = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]}'


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), [
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0]}]}', None, 422,
     "the shape holds 2 element(s) but data has 1"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": ["a", "b"]}]}', None, 422,
     "FP64 data must be numbers, got strings"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP8", "data": [1, 2]}]}', None, 422, "'FP8'"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}]}', None, 422,
     "INT32 data must be integers"),
    (SHORT_BINARY + b"\x00" * 8, {"Inference-Header-Content-Length": str(len(SHORT_BINARY))}, 400,
     "runs past the end"),
    (SHORT_BINARY + b"\x00" * 24, {"Inference-Header-Content-Length": str(len(SHORT_BINARY))}, 400,
     "8 byte(s) of binary data that no input's binary_data_size accounts for"),
    (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}', {
        "Inference-Header-Content-Length": "9999"}, 400, "Inference-Header-Content-Length"),
    (b'{"inputs": [{"name": "x", "shape": "2", "datatype": "FP64", "data": [1, 2]}]}', None, 400, "inputs.0.shape"),
    (b"not json", None, 400, "not valid JSON"),
])
def test_malformed_bodies_get_oip_errors_naming_the_problem(server: Any, body: bytes, headers: Any, status: int,
                                                            fragment: str) -> None:
    answer = post(server, "/v2/models/rosenbrock/infer", body, headers)
    assert answer.status_code == status, answer.text
    error = orjson.loads(answer.content)
    assert set(error) == {"error"} and isinstance(error["error"], str)
    assert fragment in error["error"], error


def test_binary_inputs_and_outputs_follow_the_extension_byte_for_byte(server: Any) -> None:
    # Written by hand from the extension's description: little-endian row-major tensors after
    # the JSON header, whose length the Inference-Header-Content-Length header gives.
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64",
                                       "parameters": {"binary_data_size": 32}}],
                           "outputs": [{"name": "value", "parameters": {"binary_data": True}}]})
    answer = post(server, "/v2/models/rosenbrock/infer", header + X.astype("<f8").tobytes(),
                  {"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 422, answer.text  # rosenbrock takes a vector: the pipeline says so
    assert "x: expected f64[n], got f64[2,2]" in answer.json()["error"]

    header = header.replace(b"[2,2]", b"[4]")
    answer = post(server, "/v2/models/rosenbrock/infer", header + X.astype("<f8").tobytes(),
                  {"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 200, answer.text
    size = int(answer.headers["inference-header-content-length"])
    meta = orjson.loads(answer.content[:size])
    assert meta["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [],
                                "parameters": {"binary_data_size": 8}}]
    assert np.frombuffer(answer.content[size:], "<f8")[0] == rosenbrock(X)
    assert len(answer.content) == size + 8


def test_non_finite_results_survive_both_encodings(client: triton.InferenceServerClient) -> None:
    # x^3 / 3 overflows to infinity; JSON has no token for it but Python's (and tritonclient's) readers do
    big = [tensor("params.k", [1.0], False), tensor("params.x0", [0.0], False), tensor("x", [1e200], False)]
    for binary in (True, False):
        result = client.infer("spring", big, outputs=outputs("value", binary=binary))
        assert result.as_numpy("value") == np.inf


def test_a_body_over_the_size_limit_is_refused_in_oip_form(server: Any) -> None:
    """Refused by the HTTP layer before any /v2 route runs, yet in OIP's error form, which
    tritonclient reads as the message."""
    too_big = b"x" * (12 * 1024 * 1024 + 1)
    response = httpx.post(f"{server.url}/v2/models/rosenbrock/infer", content=too_big,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert "NABLA_MAX_BODY_BYTES" in body["error"]
    v1 = httpx.post(f"{server.url}/v1/value", content=too_big, headers={"content-type": "application/json"},
                    timeout=30)
    assert v1.status_code == 413 and v1.json()["error"]["detail"]["limit"] == "NABLA_MAX_BODY_BYTES"
