"""The KServe manifests (deploy/k8s/kserve/) describe a runtime that works: the structure check that
container-check.sh runs passes on them and fails on a broken pair, and a server started the way the
runtime starts it (its model files in the repository folder KServe fills from storageUri) serves
those models over the Open Inference Protocol and answers the probes the runtime declares."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

pytest.importorskip("yaml")
REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "k8s" / "kserve").glob("*.yaml"))


def kserve_check() -> Any:
    spec = importlib.util.spec_from_file_location("kserve_check", REPO / "deploy" / "ci" / "kserve_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_manifests_pass_the_offline_check_and_a_broken_pair_does_not(tmp_path: Path) -> None:
    check = kserve_check()
    assert MANIFESTS
    pod = tmp_path / "pod.yaml"
    assert check.main([*map(str, MANIFESTS), "--secrets", str(REPO / "deploy/k8s/secret.example.yaml"),
                       "--pod-out", str(pod)]) == 0
    import yaml

    assert yaml.safe_load(pod.read_text())["spec"]["containers"][0]["name"] == "kserve-container"
    docs = check.load([str(p) for p in MANIFESTS])
    for break_it in (lambda d: d[1]["spec"]["predictor"]["model"].update(runtime="triton"),
                     lambda d: d[0]["spec"].update(protocolVersions=["v1"]),
                     lambda d: d[0]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(path="/readyz")):
        broken = copy.deepcopy(docs)
        break_it(broken)
        with pytest.raises(AssertionError):
            check.check(broken)


def test_a_server_started_like_the_runtime_serves_its_model_files_over_v2(
        start_server: Callable[..., Any], tmp_path: Path) -> None:
    import yaml

    runtime = yaml.safe_load(MANIFESTS[0].read_text().split("\n---\n")[0])
    container = runtime["spec"]["containers"][0]
    models = tmp_path / "mnt-models"  # what KServe's storage initializer fills from storageUri
    models.mkdir()
    (models / "cubic.json").write_text(json.dumps({
        "name": "cubic", "function": {"expr": "sum(x ** 3)", "params": ["x"]}, "schema": {"x": {"shape": ["n"]}}}))
    server = start_server({"NABLA_MODEL_REPOSITORY": str(models)})
    for probe in ("livenessProbe", "readinessProbe"):
        assert httpx.get(server.url + container[probe]["httpGet"]["path"], timeout=10).status_code == 200

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.get_model_metadata("cubic")["inputs"] == [{"name": "x", "datatype": "FP64", "shape": [-1]}]
    x = np.array([1.0, -2.0, 0.5])
    given = triton.InferInput("x", [3], "FP64")
    given.set_data_from_numpy(x)
    result = client.infer("cubic", [given], parameters={"transform": "grad"})
    np.testing.assert_allclose(result.as_numpy("grad.x"), 3 * x ** 2, rtol=1e-15)
