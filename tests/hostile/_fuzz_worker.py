"""One worker of the OpenAPI fuzz (test_openapi_fuzz.py): schemathesis over some operations.

Runs in its own process at a lower priority (generation is CPU-bound Python; two workers use both
cores, and must not starve the server whose /livez latency is measured meanwhile), loads the
document from the server, and for each operation draws up to `examples` cases (positive and
negative data; the document's examples first), sends them and runs the checks. Failures are
collected, not raised, so one run reports every kind of failure; nothing is shrunk.
"""

from __future__ import annotations

import time
from typing import Any


def fuzz_operations(url: str, labels: list[str], examples: int, time_budget_s: float,
                    request_timeout_s: float) -> dict[str, Any]:
    import os

    os.nice(10)  # generation must not starve the server under test (its /livez latency is measured)
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import checks
    from schemathesis.core.failures import Failure, FailureGroup
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json", timeout=30)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.label in labels]
    run_checks = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
                  checks.response_schema_conformance]
    session = requests.Session()
    started = time.monotonic()
    sent: dict[str, int] = {}
    failures: dict[str, int] = {}  # "label | check title" -> count
    samples: dict[str, str] = {}

    def record(label: str, title: str, detail: str) -> None:
        key = f"{label} | {title}"
        failures[key] = failures.get(key, 0) + 1
        samples.setdefault(key, detail)

    class OutOfTime(Exception):
        """Raised to stop hypothesis from generating more (generation is the expensive part)."""

    def fuzz(label: str, strategy: Any, until: float) -> None:
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=strategy)
        def exercise(case: Any) -> None:
            if time.monotonic() > until:
                raise OutOfTime
            sent[label] = sent.get(label, 0) + 1
            try:
                response = case.call(base_url=url, session=session, timeout=request_timeout_s)
            except requests.RequestException as e:
                record(label, f"no answer ({type(e).__name__})", f"{case.method} {case.formatted_path}: {e}"[:400])
                return
            try:
                case.validate_response(response, checks=run_checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    record(label, getattr(failure, "title", type(failure).__name__), describe(case, response))
            except Failure as failure:
                record(label, getattr(failure, "title", type(failure).__name__), describe(case, response))

        try:
            exercise()
        except OutOfTime:
            pass

    for i, operation in enumerate(operations):
        # each operation gets an equal share of the time that is left, so a slow one cannot starve the rest
        until = time.monotonic() + (started + time_budget_s - time.monotonic()) / (len(operations) - i)
        fuzz(operation.label, st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                                        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)), until)
    return {"sent": sent, "failures": failures, "samples": samples, "seconds": time.monotonic() - started}


def describe(case: Any, response: Any) -> str:
    body = case.body if not isinstance(case.body, (bytes, str)) else case.body[:120]
    body_text = "" if type(body).__name__ == "NotSet" else f" body={str(body)[:160]}"
    text = response.text[:160].replace("\n", " ")
    return (f"{case.method} {case.formatted_path}{body_text} -> {response.status_code} "
            f"{response.headers.get('content-type', '')} {text}")
