"""Offline check of the KServe manifests in deploy/k8s/kserve/ (run by container-check.sh, and by
tests/protocols/test_kserve_manifest.py).

kubernetes-validate has no schemas for KServe's custom resources (it only warns that it found
none), and KServe's CRD schemas are not available offline. So this checks two things instead:

  1. the structure that makes the pair work: a ServingRuntime that speaks the v2 protocol and an
     InferenceService that selects it by model format and name, a `kserve-container` listening on
     the port KServe routes to (8080, the NABLA_PORT it sets), probed on /v2/health/live and
     /v2/health/ready, reading its model files from /mnt/models (where KServe puts storageUri)
     and its keys from the Secrets that deploy/k8s/ defines;
  2. with `--pod-out FILE`, writes the runtime's containers into a plain Pod, so that
     `kubernetes-validate --strict FILE` checks them against the core Container schema.

Usage: python kserve_check.py deploy/k8s/kserve/*.yaml [--secrets deploy/k8s/secret.example.yaml]
                              [--pod-out pod.yaml]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

KSERVE_PORT = 8080  # the port KServe's ingress routes to in the predictor's kserve-container


def load(paths: list[str]) -> list[dict[str, Any]]:
    docs = []
    for path in paths:
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def one(docs: list[dict[str, Any]], api_version: str, kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("apiVersion") == api_version and d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} ({api_version}), found {len(found)}"
    return found[0]


def check(docs: list[dict[str, Any]], secret_names: set[str] | None = None) -> dict[str, Any]:
    """Assert the pair's structure; returns the ServingRuntime."""
    runtime = one(docs, "serving.kserve.io/v1alpha1", "ServingRuntime")
    service = one(docs, "serving.kserve.io/v1beta1", "InferenceService")
    spec = runtime["spec"]
    assert "v2" in spec["protocolVersions"], "the runtime must declare the v2 (Open Inference) protocol"
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] in formats, "the InferenceService's modelFormat is not one the runtime serves"
    assert model["runtime"] == runtime["metadata"]["name"], "the InferenceService names another runtime"
    assert model["protocolVersion"] == "v2"
    assert model.get("storageUri"), "storageUri: where KServe finds the model files to copy to /mnt/models"

    [container] = [c for c in spec["containers"] if c["name"] == "kserve-container"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NABLA_PORT"]["value"] == str(KSERVE_PORT) and env["NABLA_HOST"]["value"] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [KSERVE_PORT]
    assert env["NABLA_MODEL_REPOSITORY"]["value"] == "/mnt/models"
    for probe, path in (("livenessProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready")):
        assert container[probe]["httpGet"] == {"path": path, "port": KSERVE_PORT}, f"{probe} must GET {path}"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["runAsNonRoot"] is True
    if secret_names is not None:
        for name, var in env.items():
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref["name"] in secret_names, f"{name} reads a Secret deploy/k8s does not define"
    return runtime


def as_pod(runtime: dict[str, Any]) -> dict[str, Any]:
    """The runtime's containers in a plain Pod: the core Container schema then applies to them."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nabla-kserve-runtime-check"},
            "spec": {"containers": runtime["spec"]["containers"]}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--secrets", help="the manifest whose Secrets the runtime may read")
    parser.add_argument("--pod-out", help="write the runtime's containers as a Pod to this file")
    args = parser.parse_args(argv)
    secrets = None
    if args.secrets:
        secrets = {d["metadata"]["name"] for d in load([args.secrets]) if d.get("kind") == "Secret"}
    runtime = check(load(args.manifests), secrets)
    if args.pod_out:
        with open(args.pod_out, "w") as f:
            yaml.safe_dump(as_pod(runtime), f)
    print("kserve: ServingRuntime (v2, kserve-container on 8080, probes on /v2/health) and an InferenceService "
          "that selects it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
