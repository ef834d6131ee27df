"""docs/API.md's MessagePack examples, which read a file and so are not run by
tests/test_docs_api.py: the section's Python block writes the body, in a fresh folder, and its
```sh curl examples run there, against a real server, and must print what the page shows (the
same reading and comparison as tests/test_docs_api.py)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "API.md"
SECTION = "## Large arrays: MessagePack"


def _harness() -> Any:
    """tests/test_docs_api.py, for its parser and comparison (loaded by path: any import mode)."""
    spec = importlib.util.spec_from_file_location("_docs_api_harness", REPO / "tests" / "test_docs_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def section_blocks(kind: str) -> list[str]:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(rf"^```{kind}\n(.*?)^```$", text[start:end], re.M | re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, serve_module: Any) -> Iterator[str]:
    with serve_module(tmp_path_factory.mktemp("docs_msgpack"), {}) as running:
        yield running.url


def test_the_sections_file_examples_print_what_the_page_shows(server: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    harness = _harness()
    curl = harness.shutil.which("curl")
    if curl is None:
        pytest.skip("the curl binary is not installed")
    (python,) = section_blocks("python")
    subprocess.run([sys.executable, "-c", python], cwd=tmp_path, check=True)
    assert (tmp_path / "grad.msgpack").stat().st_size > 0
    examples = [e for block in section_blocks("sh") for e in harness.parse_examples(f"```bash\n{block}```\n")]
    assert len(examples) == 2 and all(e.expected for e in examples)
    monkeypatch.chdir(tmp_path)  # curl reads @grad.msgpack from here
    for example in examples:
        status, output = harness.run_example(example, curl, server)
        assert status == 200 and harness.matches(example.expected, output), (example.command, output[:2000])
