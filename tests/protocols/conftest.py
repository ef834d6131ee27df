"""Fixtures of the protocol tests: one real server per test module, with the test models registered
(the protocols' own clients, tritonclient and umbridge, talk to it over loopback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The test modules import _protocol_support from this folder, under any --import-mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _protocol_support import SPRING, TANH_LAYER, register  # noqa: E402


@pytest.fixture(scope="module")
def server(serve_module: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serve_module(tmp_path_factory.mktemp("protocols"), {}) as running:
        for model in (SPRING, TANH_LAYER):
            register(running.url, model)
        yield running
