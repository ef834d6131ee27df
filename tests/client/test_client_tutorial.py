"""examples/tutorial_remote.py, run against the fixture server, prints what examples/tutorial.py
prints on the local engine: the same lines and the same numbers to 1e-6 (only reprs differ:
the client returns NumPy arrays, the engine its Array)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def run(root: Path, script: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NABLA_")}
    full_env.update(env, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, str(root / "examples" / script)], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def split(text: str) -> tuple[list[str], list[float]]:
    skeleton = [NUMBER.sub("#", line).replace(" ", "") for line in text.splitlines()]
    return skeleton, [float(n) for n in NUMBER.findall(text)]


def test_remote_tutorial_prints_the_local_numbers(repo_root, server_url) -> None:
    remote = run(repo_root, "tutorial_remote.py", NABLA_BASE_URL=server_url)
    local = run(repo_root, "tutorial.py")
    remote_lines, remote_numbers = split(remote.replace("array(", "Array("))
    local_lines, local_numbers = split(local)
    assert remote_lines == local_lines, (remote, local)
    assert len(remote_numbers) == len(local_numbers) > 20
    for r, loc in zip(remote_numbers, local_numbers, strict=True):
        assert r == pytest.approx(loc, rel=1e-6, abs=1e-12), (r, loc)
    assert "W_grad=array([-0.16965583, -0.8774645 , -1.4901345 ], dtype=float32)" in remote
