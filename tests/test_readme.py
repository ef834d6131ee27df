"""The README's examples print what the README says they print: the engine snippet (its `# value`
comments) and every `$ nabla ...` command of the command-line section."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_engine_snippet_prints_its_comments() -> None:
    snippet = _blocks("python")[0]
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.splitlines()
    expected = [line.split("#", 1)[1].split()[0] for line in snippet.splitlines() if line.startswith("print(")]
    numbers = [e for e in expected if re.fullmatch(r"-?\d+\.\d+", e)]
    assert numbers, "the snippet documents no printed number"
    for shown, line in zip(numbers, printed):
        assert line.strip() == shown, (line, shown)
    assert any("grad" in line or "{" in line for line in printed[len(numbers):]), printed


def _console_examples() -> list[tuple[str, str]]:
    examples = []
    for block in _blocks("console"):
        command, output = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    examples.append((command, "\n".join(output)))
                command, output = line[2:], []
            else:
                output.append(line)
        if command is not None:
            examples.append((command, "\n".join(output)))
    return examples


@pytest.mark.parametrize("command, shown", _console_examples(), ids=lambda v: v[:40] if isinstance(v, str) else v)
def test_each_command_line_example_prints_what_the_readme_shows(command: str, shown: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "nabla"
    out = subprocess.run([sys.executable, "-m", "service.cli", *argv[1:]], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == shown.rstrip("\n")
