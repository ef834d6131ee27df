"""docs/API.md is executable: every `$ curl ...` in its ```bash blocks runs, in document order,
against one real server (a fresh data dir for this module), and must print what the page shows.

How a block reads: a line starting with `$ ` starts a command, which runs on over the next lines
while a quote is open (JSON bodies may span lines); the lines after it, up to the next `$ ` or the
end of the block, are its output. In the shown output `...` stands for any run of characters, and
whitespace (the page wraps long JSON) matches any whitespace or none; everything else must be
exactly what curl prints. A command shown without output must answer 2xx. `$B` is the server's URL.
Commands run through the real `curl` binary (no shell): curl is all the page asks a reader to have.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "API.md"
STATUS_MARK = "\n@@nabla-doc-test-status@@ "
# Options the runner sets itself (the status is read through --write-out; output goes to stdout).
FORBIDDEN_OPTIONS = {"-w", "--write-out", "-o", "--output", "-O", "--remote-name"}
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}


@dataclass
class Example:
    line: int  # of the `$` in docs/API.md, 1-based
    command: str
    expected: str | None  # None: the page shows no output

    def where(self) -> str:
        return f"docs/API.md:{self.line}"


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # "No closing quotation": the command goes on
        return False
    return not command.endswith("\\")


def parse_examples(text: str) -> list[Example]:
    examples: list[Example] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        i += 1
        current: Example | None = None
        output: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            if line.startswith("$ "):
                if current is not None:
                    current.expected = "\n".join(output).strip() or None
                start, command = i + 1, line[2:]
                while not _complete(command):
                    i += 1
                    if i >= len(lines) or lines[i].strip() == "```":
                        raise ValueError(f"docs/API.md:{start}: the command never ends (an open quote?)")
                    command += "\n" + lines[i]
                current, output = Example(start, command, None), []
                examples.append(current)
            elif current is None:
                if line.strip():
                    raise ValueError(f"docs/API.md:{i + 1}: text before the block's first `$ ` command: {line!r}")
            else:
                output.append(line)
            i += 1
        if current is not None:
            current.expected = "\n".join(output).strip() or None
        i += 1
    return examples


def expected_pattern(expected: str) -> re.Pattern[str]:
    """The shown output as a regex: `...` is any text, a run of whitespace is any whitespace (or
    none), every other character is itself."""
    parts = []
    for token in re.split(r"(\.\.\.|\s+)", expected.strip()):
        if token == "...":
            parts.append(".*?")
        elif token.isspace():
            parts.append(r"\s*")
        elif token:
            parts.append(re.escape(token))
    return re.compile("".join(parts), re.S)


def matches(expected: str, actual: str) -> bool:
    return expected_pattern(expected).fullmatch(actual.replace("\r\n", "\n").strip()) is not None


def curl_argv(example: Example, curl: str, base_url: str) -> list[str]:
    argv = shlex.split(example.command, comments=True)
    if not argv or argv[0] != "curl":
        raise ValueError(f"{example.where()}: examples are curl commands, got {example.command[:60]!r}")
    bad = [a for a in argv if a in SHELL_OPERATORS or a in FORBIDDEN_OPTIONS]
    if bad:
        raise ValueError(f"{example.where()}: {bad} is not supported in an example (one curl, output on stdout)")
    args = [re.sub(r"\$(?:B\b|\{B\})", lambda _: base_url, a) for a in argv[1:]]
    # --noproxy: a proxy from the environment must not stand between the examples and the server
    return [curl, *args, "--show-error", "--noproxy", "*", "--max-time", "60",
            "--write-out", STATUS_MARK + "%{http_code}"]


def run_example(example: Example, curl: str, base_url: str) -> tuple[int, str]:
    done = subprocess.run(curl_argv(example, curl, base_url), capture_output=True, timeout=90)
    stdout = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0 or STATUS_MARK not in stdout:
        raise AssertionError(f"{example.where()}: curl exited with {done.returncode}: "
                             f"{done.stderr.decode(errors='replace')}")
    body, _, status = stdout.rpartition(STATUS_MARK)
    return int(status), body


# ----------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("the curl binary is not installed: docs/API.md's examples are curl commands, run as written")
    return path


@pytest.fixture(scope="module")
def server(curl: str, tmp_path_factory: pytest.TempPathFactory, serve_module: Any) -> Iterator[str]:
    """`nabla serve` with default settings on a free loopback port and a fresh data dir."""
    with serve_module(tmp_path_factory.mktemp("docs_api"), {}) as running:
        yield running.url


# ----------------------------------------------------------------------------- the tests


def _shorten(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def test_every_example_prints_what_the_page_shows(curl: str, server: str) -> None:
    examples = parse_examples(DOC.read_text())
    failures = []
    for example in examples:
        status, output = run_example(example, curl, server)
        if example.expected is None:
            if not 200 <= status < 300:
                failures.append(f"{example.where()}: answered {status} (an example shown without output must "
                                f"succeed)\n$ {example.command}\n{_shorten(output)}")
        elif not matches(example.expected, output):
            failures.append(f"{example.where()}: the server printed something else (status {status})\n"
                            f"$ {example.command}\n--- the page shows:\n{example.expected}\n"
                            f"--- the server printed:\n{_shorten(output)}")
    assert not failures, f"{len(failures)} of {len(examples)} examples in docs/API.md are out of date:\n\n" + \
        "\n\n".join(failures)


def test_the_page_is_made_of_runnable_examples() -> None:
    examples = parse_examples(DOC.read_text())
    assert len(examples) >= 40, "the parser found too few examples: did the block format change?"
    for example in examples:
        curl_argv(example, "curl", "http://127.0.0.1:1")  # raises for anything but one plain curl
    assert sum(e.expected is not None for e in examples) >= len(examples) - 2


def test_the_comparison_notices_drift() -> None:
    shown = '{"grad":[2.0,4.0],\n "meta":{...},"request_id":"..."}'
    assert matches(shown, '{"grad":[2.0,4.0],"meta":{"dtype":"float64"},"request_id":"abc"}')
    assert not matches(shown, '{"grad":[2.0,4.000001],"meta":{"dtype":"float64"},"request_id":"abc"}')
    assert not matches(shown, '{"grad":[2.0,4.0],"meta":{},"request_id":"abc"},"extra":1}')
    assert matches("HTTP/1.1 201 Created\n...\n{\"a\":\n 1}", "HTTP/1.1 201 Created\r\ndate: x\r\n\r\n{\"a\":1}")
    assert not matches("HTTP/1.1 201 Created\n...", "HTTP/1.1 200 OK\r\n")
    # a message wrapped at a space on the page still matches the one-line answer
    assert matches('{"message":"a long\n   message"}', '{"message":"a long message"}')


def test_the_parser_reads_multi_line_commands_and_outputs() -> None:
    page = ("text\n```bash\n$ curl -s $B/v1/value -d '{\"a\":\n    1}'\n{\"value\": 1}\n"
            "$ curl -s $B/livez\n```\n```json\n{}\n```\n")
    first, second = parse_examples(page)
    assert (first.line, first.command, first.expected) == (3, "curl -s $B/v1/value -d '{\"a\":\n    1}'",
                                                           '{"value": 1}')
    assert (second.line, second.expected) == (6, None)
    assert curl_argv(second, "/usr/bin/curl", "http://h:1")[:3] == ["/usr/bin/curl", "-s", "http://h:1/livez"]
