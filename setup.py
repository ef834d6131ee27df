"""The C extensions, engine._f32kernels and engine._fused (everything else is declared in pyproject.toml).

Both are optional: where they cannot be compiled (no C compiler, as in a slim container's build stage),
the install still succeeds, engine._xla_f32 falls back to its NumPy emulation and engine.fused to
NumPy's ufuncs called one by one, with the same bits.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The kernels must round every float operation exactly as written: no fused mul+add that the source
# does not ask for (fmaf), no reassociation.  The other flags change no value: they let GCC vectorize
# the loops (no errno from fmaf, FP exception flags need not be preserved, so selects can be
# if-converted).
GCC_LIKE_FLAGS = ["-O2", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math",
                  "-ftree-vectorize", "-fvect-cost-model=dynamic"]
MSVC_FLAGS = ["/O2", "/fp:precise"]


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        flags = MSVC_FLAGS if self.compiler.compiler_type == "msvc" else GCC_LIKE_FLAGS
        for extension in self.extensions:
            extension.extra_compile_args = [*extension.extra_compile_args, *flags]
        super().build_extensions()


setup(
    ext_modules=[Extension("engine._f32kernels", ["engine/_f32kernels.c"], optional=True),
                 Extension("engine._fused", ["engine/_fused.c"], optional=True)],
    cmdclass={"build_ext": BuildExt},
)
