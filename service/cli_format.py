"""How `nabla` prints results for people, and as JSON for programs.

Arrays are printed NumPy-style, each float with the shortest digits that read back to the same
number (so float64 results show every digit that matters and no noise), behind a `f64[2,3]`
label; pytrees are printed one leaf per line, labelled by parameter name and path (`W['b']`).
Nothing here computes or does I/O: the CLI hands over plain NumPy trees and prints the strings.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

# NumPy summarises arrays above this many elements with "..."; `--json` prints everything.
SUMMARY_THRESHOLD = 1000
_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16", "int32": "i32",
          "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool"}


# ----------------------------------------------------------------------------- trees


def plain(tree: Any) -> Any:
    """A result as NumPy: engine Arrays and scalars become ndarrays; dicts, lists and tuples stay."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(plain(v) for v in tree)
    return np.asarray(tree)


def json_like(tree: Any) -> Any:
    """`tree` as it reads back from the service's JSON: a list of same-shaped arrays is one stacked
    array (JSON cannot tell them apart, and the client reads them stacked), so local and remote
    results have one structure."""
    if isinstance(tree, dict):
        return {k: json_like(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [json_like(v) for v in tree]
        if items and all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.shape == items[0].shape
                         for v in items):
            return np.stack(items)
        return list(items)
    return tree


def to_json(tree: Any) -> Any:
    """A result tree as JSON values, with the API's spelling of NaN and infinities."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {str(k): to_json(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [to_json(v) for v in tree]
    arr = np.asarray(tree)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return _specials(arr.tolist())
    return arr.tolist()


def _specials(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_specials(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    return obj


def leaf_paths(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, leaf) for every leaf, paths spelled like JAX's keystr: ['a'][0]."""
    if tree is None:
        return []
    if isinstance(tree, dict):
        return [pair for k, v in tree.items() for pair in leaf_paths(v, f"{path}[{k!r}]")]
    if isinstance(tree, (list, tuple)):
        return [pair for i, v in enumerate(tree) for pair in leaf_paths(v, f"{path}[{i}]")]
    return [(path, tree)]


class _Mismatch(Exception):
    """A result does not have the structure its arguments predict."""


def _match(template: Any, tree: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, subtree of `tree`) for each leaf of `template`, where `tree` has `template`'s
    structure on top (a gradient has its argument's structure, its leaves the derivatives)."""
    if template is None:
        if tree is not None:
            raise _Mismatch
        return []
    if isinstance(template, dict):
        if not isinstance(tree, dict) or set(tree) != set(template):
            raise _Mismatch
        return [pair for k in template for pair in _match(template[k], tree[k], f"{path}[{k!r}]")]
    if isinstance(template, (list, tuple)):
        if not isinstance(tree, (list, tuple)) or len(tree) != len(template):
            raise _Mismatch
        return [pair for i, (t, v) in enumerate(zip(template, tree)) for pair in _match(t, v, f"{path}[{i}]")]
    return [(path, tree)]


def derivative_parts(result: Any, args: Sequence[Any], params: Sequence[str], argnums: int | Sequence[int],
                     depth: int) -> list[tuple[str, Any]]:
    """(label, array) for a derivative of `depth` levels (1: gradient or Jacobian, 2: Hessian),
    labelled by parameter and path, e.g. "x", "W['b']", "x, y" (the Hessian block of x and y).

    The result is JAX's structure: per level, one part per argnums entry (just the part for an
    int), each in its argument's structure. A result of another shape (a function returning a
    tuple) is labelled by its plain paths instead."""
    nums = [argnums] if isinstance(argnums, int) else list(argnums)

    def level(tree: Any, remaining: int, labels: list[str]) -> list[tuple[str, Any]]:
        if remaining == 0:
            if not isinstance(tree, np.ndarray):
                raise _Mismatch
            return [(", ".join(labels), tree)]
        if isinstance(argnums, int):
            parts = [tree]
        elif isinstance(tree, (list, tuple)) and len(tree) == len(nums):
            parts = list(tree)
        else:
            raise _Mismatch
        out = []
        for a, part in zip(nums, parts):
            for path, sub in _match(args[a], part):
                out.extend(level(sub, remaining - 1, labels + [params[a] + path]))
        return out

    try:
        return level(result, depth, [])
    except _Mismatch:
        return leaf_paths(result)


# ----------------------------------------------------------------------------- arrays


def shape_label(arr: np.ndarray) -> str:
    """`f64[2,3]`, as the engine prints avals."""
    name = arr.dtype.name
    return f"{_SHORT.get(name, name)}[{','.join(str(n) for n in arr.shape)}]"


def format_array(arr: np.ndarray, width: int | None = None) -> str:
    """The array NumPy-style; floats with their shortest round-trip digits, columns aligned."""
    arr = np.asarray(arr)
    width = width or terminal_width()
    if arr.dtype.kind == "f" and 0 < arr.size <= SUMMARY_THRESHOLD:
        # str() of a NumPy float is its shortest repr for its own precision (0.1 stays 0.1 in
        # float32); padding every element to the widest keeps columns aligned.
        texts = [str(v) for v in arr.flat]
        pad = max(len(t) for t in texts)
        return np.array2string(arr, max_line_width=width, separator=" ",
                               formatter={"float_kind": lambda v: str(v).rjust(pad)})
    precision = 17 if arr.dtype.itemsize >= 8 else 9
    return np.array2string(arr, max_line_width=width, precision=precision, floatmode="maxprec",
                           threshold=SUMMARY_THRESHOLD)


def terminal_width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def format_parts(parts: Sequence[tuple[str, Any]]) -> str:
    """One block per leaf: `label: f64[2] [2.0 4.0]`, or the label line and the array indented
    under it when the array takes several lines."""
    width = terminal_width()
    blocks = []
    for label, leaf in parts:
        if leaf is None:
            blocks.append(f"{label}: None" if label else "None")
            continue
        arr = np.asarray(leaf)
        head = f"{label}: {shape_label(arr)}" if label else shape_label(arr)
        body = format_array(arr, width - 2)
        if "\n" in body:
            indent = "  " if label else ""
            blocks.append(head + "\n" + "\n".join((indent + line).rstrip() for line in body.splitlines()))
        else:
            blocks.append(f"{head} {body}")
    return "\n".join(blocks)


# ----------------------------------------------------------------------------- reports


def _number(value: Any) -> str:
    return value if isinstance(value, str) else f"{value:.3g}"


def format_check(report: dict[str, Any]) -> str:
    """One line per (order, mode): pass or FAIL, the largest errors and the tolerances; a summary."""
    lines = []
    results = report.get("results", [])
    for r in results:
        verdict = "pass" if r["passed"] else "FAIL"
        lines.append(f"order {r['order']}  {r['mode']} ({r['kind']})  {verdict}  "
                     f"max abs error {_number(r['max_abs_error'])}  max rel error {_number(r['max_rel_error'])}  "
                     f"(atol {_number(r['atol'])}, rtol {_number(r['rtol'])})")
    failed = sum(not r["passed"] for r in results)
    if failed:
        lines.append(f"FAILED: {failed} of {len(results)} checks disagree with finite differences")
    else:
        lines.append(f"passed: all {len(results)} checks agree with finite differences")
    return "\n".join(lines)


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str], max_widths: Sequence[int | None]) -> str:
    """A plain-text table, columns padded to their widest cell (cut to max_widths with "...")."""
    def cut(text: str, limit: int | None) -> str:
        text = " ".join(text.split())  # descriptions may hold newlines
        return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."

    cells = [[cut(str(c), w) for c, w in zip(row, max_widths)] for row in [list(header), *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


__all__ = ["derivative_parts", "format_array", "format_check", "format_parts", "format_table", "json_like",
           "leaf_paths", "plain", "shape_label", "to_json"]
