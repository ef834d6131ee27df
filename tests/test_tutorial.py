"""The JAX autodiff tutorial runs unchanged on the engine and prints what the page prints.

The page (tests/data/jax_autodiff_tutorial_zh.txt, a translation of JAX's "Automatic
differentiation" tutorial) alternates code blocks and their printed output. We run every code
block in order, with only the imports pointed at the engine, and compare the captured output with
the page: the text must be the same, and every number within a relative 1e-6.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parent / "data" / "jax_autodiff_tutorial_zh.txt"
IMPORTS = {
    "import jax": "import engine as jax",
    "import jax.numpy as jnp": "import engine.numpy as jnp",
    "from jax import grad": "from engine import grad",
    "from jax.test_util import check_grads": "from engine.test_util import check_grads",
}
W_BITS = [3200032085, 3222381795, 1010536082]
B_BITS = 1062896220
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def tutorial_blocks() -> tuple[list[str], list[str]]:
    """The code blocks, and the output blocks (each printed by the code block before it)."""
    blocks = re.findall(r"```py\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), flags=re.S)
    code, outputs = [], []
    expect_output = False
    for block in blocks:
        if expect_output:
            outputs.append(block)
            expect_output = False
        else:
            code.append(block)
            expect_output = "print(" in block
    return code, outputs


def port_to_engine(source: str) -> str:
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        lines.append(IMPORTS.get(stripped, line))
    return "\n".join(lines)


def split_numbers(text: str) -> tuple[str, list[float]]:
    """Text with numbers blanked out and whitespace removed, and the numbers themselves."""
    numbers = [float(m) for m in NUMBER.findall(text)]
    skeleton = re.sub(r"\s+", "", NUMBER.sub("#", text))
    return skeleton, numbers


@pytest.fixture(scope="module")
def printed() -> tuple[str, str]:
    code, outputs = tutorial_blocks()
    program = "\n".join(port_to_engine(block) for block in code)
    assert "import engine as jax" in program and "jax.random" in program
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(program, str(TUTORIAL), "exec"), {"__name__": "tutorial"})  # our own test data
    return buffer.getvalue(), "".join(outputs)


def test_tutorial_has_the_expected_sections() -> None:
    code, outputs = tutorial_blocks()
    assert len(code) == 11 and len(outputs) == 7
    assert "check_grads(loss, (W, b), order=2)" in code[-1]


def test_tutorial_prints_the_same_text(printed: tuple[str, str]) -> None:
    ours, page = printed
    assert split_numbers(ours)[0] == split_numbers(page)[0], ours


def test_tutorial_prints_the_same_numbers_to_1e_6(printed: tuple[str, str]) -> None:
    ours, page = printed
    got, expected = split_numbers(ours)[1], split_numbers(page)[1]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-6, abs=0 if e else 1e-12), (g, e, ours)


def test_random_keys_and_samples_match_jax() -> None:
    import numpy as np

    import engine as jax

    key = jax.random.key(0)
    np.testing.assert_array_equal(jax.random.key_data(key), [0, 0])
    key, w_key, b_key = jax.random.split(key, 3)
    np.testing.assert_array_equal(jax.random.key_data(key), [2467461003, 428148500])
    np.testing.assert_array_equal(jax.random.key_data(w_key), [3186719485, 3840466878])
    np.testing.assert_array_equal(jax.random.key_data(b_key), [2562233961, 1946702221])
    w = jax.random.normal(w_key, (3,))
    b = jax.random.normal(b_key, ())
    assert w.dtype == np.float32 and b.dtype == np.float32
    # The page prints [-0.36838785, -2.275689, 0.01144757] and 0.8535516; these are the exact float32
    # bits JAX 0.10.2 produces (non-partitionable scheme), which we match to within one ulp.
    jax_w = np.array(W_BITS, np.uint32).view(np.float32)
    jax_b = np.array(B_BITS, np.uint32).view(np.float32)
    np.testing.assert_array_max_ulp(np.asarray(w), jax_w, 1)
    np.testing.assert_array_max_ulp(np.asarray(b), jax_b, 1)
    np.testing.assert_allclose(np.asarray(w), [-0.36838785, -2.275689, 0.01144757], rtol=1e-6)
