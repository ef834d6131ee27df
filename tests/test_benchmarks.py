"""The benchmark scripts run (on tiny sizes); their numbers are for docs/, not for pass/fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, timeout: float = 300) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_engine_benchmark_checks_every_gradient_and_prints_a_table() -> None:
    out = run_script("engine_bench.py", "--quick")
    assert "| workload |" in out
    for workload in ("tutorial logistic regression", "MLP", "hessian", "scalar chain"):
        assert workload in out
    assert "nabla / np_manual" in out


def test_scaling_benchmark_prints_its_three_curves() -> None:
    out = run_script("scaling.py", "--quick")
    assert "gradient time vs rows" in out and "Random graphs" in out and "derivative order" in out


def test_service_benchmark_drives_a_real_server() -> None:
    out = run_script("service_bench.py", "--quick", "--connections", "2")
    assert "| echo |" in out and "| large |" in out
    assert "base64" in out


def test_reliability_checks_hold_on_a_real_server() -> None:
    report = json.loads(run_script("reliability.py", "--quick"))
    assert report["hostile_inputs"]["all_4xx_with_error_body"]
    assert report["hostile_inputs"]["alive_after"]
    assert report["crash_safety"]["missing_after_crash"] == 0
    assert report["crash_safety"]["broken_after_crash"] == 0
    assert report["liveness_under_load"]["slow_statuses"] == [408]
