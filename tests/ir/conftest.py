"""Tests of the IR's passes (optimiser, plan compiler, batching) on graphs built by hand."""

from __future__ import annotations

import sys
from pathlib import Path

# The test modules import _graphs from this folder, under any --import-mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
