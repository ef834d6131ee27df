"""The engine's modules are layers: each imports only layers below it.

The IR (engine.core) depends on nothing above it: the printer, the serialiser and the NumPy
facade are layers on top. The import graph of engine/ is acyclic, and an import inside a
function is a rare exception with a comment saying why. The array codec (array_codec) and the
client depend on no part of the engine.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"
MAX_IMPORTS_IN_FUNCTIONS = 15


def _modules_after(statement: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running `statement`."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_ir_imports_nothing_above_it() -> None:
    loaded = _modules_after("import engine.core")
    engine_modules = {m for m in loaded if m == "engine" or m.startswith("engine.")}
    for above in ("engine.numpy", "engine.serialize", "engine.graph_printer", "engine.primitives", "engine.expr"):
        assert above not in engine_modules, f"importing engine.core imported {above}"
    assert engine_modules <= {"engine", "engine.core", "engine.array", "engine.errors", "engine.limits",
                              "engine.tree_util"}


def test_the_codec_and_the_client_import_no_engine() -> None:
    for statement in ("import array_codec", "import client"):
        loaded = _modules_after(statement)
        assert not [m for m in loaded if m == "engine" or m.startswith(("engine.", "service"))], statement


def _engine_modules() -> dict[str, Path]:
    modules = {}
    for path in ENGINE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _module_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Engine modules imported when `path` is, by its top-level statements (an `if TYPE_CHECKING:`
    block imports nothing at run time)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            # `from package import submodule` needs the submodule, not the package's namespace
            found.update(submodules if len(submodules) == len(node.names) else [node.module, *submodules])
    return {m for m in found if m in modules}


def test_the_engines_import_graph_is_acyclic() -> None:
    modules = _engine_modules()
    edges = {name: _module_level_imports(path, modules) - {name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(edges[name]):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            visit(name, [name])
    # the layers, bottom up, as the docs describe them
    assert edges["engine.array"] == set()
    assert edges["engine.core"] <= {"engine.array", "engine.errors", "engine.limits", "engine.tree_util"}
    assert "engine.numpy" not in edges["engine.primitives"] and "engine.numpy._base" not in edges["engine.primitives"]


def test_imports_inside_functions_are_few_and_explained() -> None:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        in_functions = {node for func in ast.walk(tree) if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))}
        for node in sorted(in_functions, key=lambda n: n.lineno):
            here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            explained = "#" in here or above.startswith("#")
            found.append((f"{path.relative_to(REPO)}:{node.lineno}", explained))
    assert len(found) < MAX_IMPORTS_IN_FUNCTIONS, found
    assert [where for where, explained in found if not explained] == []
