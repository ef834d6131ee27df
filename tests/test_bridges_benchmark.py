"""benchmarks/bridges.py runs (a few rounds, a small batch): it checks every bridge's gradient and
the batched gradients against direct client calls before printing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bridges_benchmark_compares_each_bridge_with_a_direct_client_call() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bridges.py"), "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| gradient (W, b) |" in result.stdout and "| value |" in result.stdout
    assert "50 per-example gradients" in result.stdout and "results equal (rtol 1e-12): yes" in result.stdout
