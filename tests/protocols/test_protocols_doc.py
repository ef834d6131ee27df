"""docs/PROTOCOLS.md is executable: each ```python block runs against a real server and prints the
```text block after it (the same text, numbers within a relative 1e-6), and each ```bash block (a
curl command, then what it prints) prints exactly what the page shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOLS.md"
BLOCK = re.compile(r"```(python|text|bash)\n(.*?)```", re.S)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def python_examples() -> list[tuple[str, str]]:
    found = blocks()
    pairs = [(code, shown) for (kind, code), (next_kind, shown) in zip(found, found[1:])
             if kind == "python" and next_kind == "text"]
    assert len(pairs) == sum(kind == "python" for kind, _ in found), "a python block without its printed text"
    return pairs


def bash_examples() -> list[tuple[str, str]]:
    examples = []
    for kind, text in blocks():
        if kind == "bash":
            lines = text.strip().splitlines()
            first_output = next(i for i, line in enumerate(lines) if line.startswith("{"))
            examples.append(("\n".join(lines[:first_output]), "\n".join(lines[first_output:])))
    return examples


def split_numbers(text: str) -> tuple[str, list[float]]:
    return re.sub(r"\s+", "", NUMBER.sub("#", text)), [float(n) for n in NUMBER.findall(text)]


@pytest.mark.parametrize(("code", "shown"), python_examples(), ids=lambda v: v.strip().splitlines()[0][:30])
def test_the_python_examples_print_what_the_page_shows(server: Any, code: str, shown: str) -> None:
    run = subprocess.run([sys.executable, "-c", code.replace("localhost:8000", server.url.removeprefix("http://"))],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    printed, expected = split_numbers(run.stdout), split_numbers(shown)
    assert printed[0] == expected[0], (run.stdout, shown)
    assert printed[1] == pytest.approx(expected[1], rel=1e-6), (run.stdout, shown)


@pytest.mark.parametrize(("command", "shown"), bash_examples(), ids=lambda v: v.strip()[:40])
def test_the_curl_examples_print_what_the_page_shows(server: Any, command: str, shown: str) -> None:
    argv = shlex.split(command.replace("localhost:8000", server.url))
    assert argv[0] == "curl"
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == shown.strip()
