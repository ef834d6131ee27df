"""benchmarks/batch_requests.py runs (on a tiny batch): it checks its two ways agree before printing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_batch_benchmark_compares_one_in_axes_request_with_one_request_per_example() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "batch_requests.py"), "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| one request with in_axes, warm" in result.stdout
    assert "| one request per example, Python client, sequential | 50 |" in result.stdout
    assert "results equal (rtol 1e-12): yes" in result.stdout
