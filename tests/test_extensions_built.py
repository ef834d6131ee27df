"""The optional C extensions (setup.py) are built wherever a C compiler is.

Each extension is optional, so that an install without a compiler still works (with the same
bits, more slowly); a failed build would therefore pass unnoticed. Where this Python has a C
compiler (CI, a developer machine), each must have been built and be the implementation in use.
"""

from __future__ import annotations

import shutil
import sysconfig
from types import ModuleType

import pytest

from engine import _xla_f32, fused

# module, its handle on the extension, the implementation it must report when built
EXTENSIONS = [(_xla_f32, "C (engine._f32kernels)"), (fused, "C (engine._fused)")]


@pytest.mark.parametrize(("module", "built"), EXTENSIONS, ids=["_f32kernels", "_fused"])
def test_each_extension_is_built_where_a_compiler_is(module: ModuleType, built: str) -> None:
    compiler = (sysconfig.get_config_var("CC") or "").split()
    if not compiler or shutil.which(compiler[0]) is None:
        pytest.skip(f"no C compiler: {module.IMPLEMENTATION} is the implementation here")
    assert module._kernels is not None, f"{built[3:-1]} is not built: reinstall (pip install -e .)"
    assert module.IMPLEMENTATION == built
