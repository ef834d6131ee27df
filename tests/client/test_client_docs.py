"""docs/CLIENT.md's examples run against a real server and print what their comments say: every
```python block runs in a fresh interpreter (NABLA_BASE_URL set to the test server), and each line
starting with `print(` documents, after its `#`, the exact line it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "CLIENT.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def documented_output(block: str) -> list[str]:
    return [line.split("#", 1)[1].strip() for line in block.splitlines() if line.startswith("print(")]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_example_prints_its_comments(block: str, server_url: str, repo_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NABLA_")}
    env.update(NABLA_BASE_URL=server_url, PYTHONPATH=str(repo_root))
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = documented_output(block)
    assert expected, "the example documents nothing it prints"
    assert done.stdout.splitlines() == expected
