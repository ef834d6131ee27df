"""What goes over the wire: functions as specs, arguments as JSON pytrees, results back to NumPy.

Bodies are JSON, or MessagePack (the same trees, large arrays as raw bytes instead of base64
text) for a client made with `encoding="msgpack"`. Shared by the sync and async clients;
nothing here does I/O.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from array_codec import (
    SPECIAL_FLOATS,
    base64_leaf,
    binary_leaf,
    from_base64,
    from_bytes,
    nested_numbers,
    replace_special_floats,
)

# Arrays at least this large travel as `$array` leaves (exact and fast to decode): base64 in
# JSON, raw bytes in MessagePack.
BASE64_THRESHOLD = 1024
MEDIA_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
# Set while a MessagePack client builds a body: its $array leaves carry bytes, not base64.
_BINARY_ARRAYS: ContextVar[bool] = ContextVar("nabla_binary_arrays", default=False)


@contextmanager
def binary_arrays(on: bool) -> Iterator[None]:
    """Bodies built inside carry their $array leaves' data as bytes (for MessagePack) when `on`."""
    token = _BINARY_ARRAYS.set(on)
    try:
        yield
    finally:
        _BINARY_ARRAYS.reset(token)


def msgpack_module() -> Any:
    """The msgpack package, imported when a client first needs it (JSON clients never do)."""
    try:
        import msgpack
    except ImportError:
        raise ImportError("encoding='msgpack' needs the msgpack package: pip install 'nabla[client]' "
                          "(or pip install msgpack)") from None
    return msgpack


@dataclass(frozen=True)
class Expr:
    """A function in the expression language, with its parameter names in argument order."""

    source: str
    params: tuple[str, ...]

    def spec(self) -> dict[str, Any]:
        return {"expr": self.source, "params": list(self.params)}


@dataclass(frozen=True)
class Model:
    """A model on the server, by name (and version; the latest when None)."""

    name: str
    version: int | None = None

    def spec(self) -> dict[str, Any]:
        return {"model": self.name} if self.version is None else {"model": self.name, "version": self.version}


@dataclass(frozen=True)
class GraphDoc:
    """A nabla.graph/1 document."""

    doc: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"graph": self.doc}


# ----------------------------------------------------------------------------- arrays


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def encode_leaf(x: Any) -> Any:
    arr = _to_numpy(x)
    if arr.dtype == object:
        raise TypeError(f"cannot send a value of type {type(x).__name__} as an array")
    if arr.size >= BASE64_THRESHOLD or arr.dtype.kind in "iu":
        # Integers keep their dtype only as $array leaves (plain JSON numbers become floats).
        return binary_leaf(arr) if _BINARY_ARRAYS.get() else base64_leaf(arr)
    return nested_numbers(arr)


def encode_tree(tree: Any) -> Any:
    """A pytree of arrays as JSON: dicts stay dicts, tuples and lists become lists, None null."""
    if tree is None:
        return None
    if isinstance(tree, dict):
        if "$array" in tree and len(tree) == 1:
            return tree  # already on the wire's form
        return {str(k): encode_tree(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return [encode_tree(v) for v in tree]
    if isinstance(tree, (list, tuple)):
        if tree and all(isinstance(v, (int, float, bool)) for v in tree):
            return encode_leaf(np.asarray(tree))
        return [encode_tree(v) for v in tree]
    return encode_leaf(tree)


def decode_leaf(obj: Any) -> np.ndarray:
    if isinstance(obj, dict) and "$array" in obj:
        spec = obj["$array"]
        if isinstance(spec["data"], (bytes, bytearray, memoryview)):  # a MessagePack answer
            # a copy: the view of the answer's bytes is read-only, and arrays handed out are not
            return from_bytes(spec["data"], spec["shape"], spec["dtype"]).copy()
        return from_base64(spec["data"], spec["shape"], spec["dtype"])
    if isinstance(obj, (str, list)):
        return np.asarray(replace_special_floats(obj))
    return np.asarray(obj)


def _is_numeric_nest(obj: Any) -> bool:
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, bool) or isinstance(x, (int, float)) or (isinstance(x, str) and x in SPECIAL_FLOATS):
            continue
        else:
            return False
    return True


def decode_tree(obj: Any) -> Any:
    """JSON from the server as a pytree of NumPy arrays (rectangular numeric lists are arrays)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        if "$array" in obj:
            return decode_leaf(obj)
        return {k: decode_tree(v) for k, v in obj.items()}
    if isinstance(obj, list) and obj and _is_numeric_nest(obj):
        try:
            arr = np.asarray(replace_special_floats(obj))
            if arr.dtype != object:
                return arr
        except ValueError:
            pass
    if isinstance(obj, list):
        return [decode_tree(v) for v in obj]
    return decode_leaf(obj)


def cast_floats(tree: Any, dtype: str) -> Any:
    """JSON numbers arrive as float64; results of a float32 request are float32 arrays."""
    if dtype != "float32":
        return tree
    if isinstance(tree, np.ndarray):
        return tree.astype(np.float32) if tree.dtype == np.float64 else tree
    if isinstance(tree, dict):
        return {k: cast_floats(v, dtype) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*[cast_floats(v, dtype) for v in tree])
    if isinstance(tree, (list, tuple)):
        return type(tree)(cast_floats(v, dtype) for v in tree)
    try:
        from engine.tree_util import tree_flatten, tree_unflatten

        leaves, treedef = tree_flatten(tree)
        if treedef.num_nodes > 1:
            return tree_unflatten(treedef, [cast_floats(x, dtype) for x in leaves])
    except ImportError:
        pass
    return tree


def decode_like(obj: Any, template: Any) -> Any:
    """Decode a result that mirrors `template`'s structure (a gradient has its argument's shape)."""
    if template is None:
        return None
    if isinstance(template, dict):
        return {k: decode_like(obj[str(k)], v) for k, v in template.items()}
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*[decode_like(o, t) for o, t in zip(obj, template)])
    numeric_list = bool(template) and all(isinstance(v, (int, float, bool)) for v in template) \
        if isinstance(template, (list, tuple)) else False
    if isinstance(template, (list, tuple)) and not numeric_list:
        return type(template)(decode_like(o, t) for o, t in zip(obj, template))
    return decode_leaf(obj)


def float_dtype(trees: Sequence[Any]) -> str:
    """float64 if any argument holds float64 data, else float32 (the engine's default)."""
    stack = list(trees)
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)) and not (x and all(isinstance(v, (int, float, bool)) for v in x)):
            stack.extend(x)
        elif x is not None and not isinstance(x, (int, float, bool)):
            if getattr(x, "dtype", None) == np.float64:
                return "float64"
    return "float32"


def any_large(trees: Sequence[Any]) -> bool:
    stack = list(trees)
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif getattr(x, "size", 0) >= BASE64_THRESHOLD:
            return True
    return False


# ----------------------------------------------------------------------------- Python functions


@dataclass
class _Traced:
    doc: dict[str, Any]
    arg_trees: list[Any]  # per positional argument, its treedef
    arg_sizes: list[int]  # leaves per positional argument
    out_tree: Any
    aux_tree: Any = None


@dataclass
class PythonFunction:
    """A Python function written against engine.numpy, traced locally into a JSON graph.

    Traced once per input signature (tree structure, shapes, dtypes) and cached.
    """

    fn: Callable[..., Any]
    _cache: dict[Any, _Traced] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def traced(self, args: Sequence[Any], has_aux: bool) -> _Traced:
        import engine
        from engine.tree_util import tree_flatten

        arg_trees, sizes, raw = [], [], []
        for a in args:
            leaves, tree = tree_flatten(a)
            arg_trees.append(tree)
            sizes.append(len(leaves))
            raw.extend(leaves)
        flat = canonical_leaves(raw)  # all leaves at once: one float dtype, as flat_leaves sends them
        key = (has_aux, tuple(arg_trees), tuple((x.shape, x.dtype.str) for x in flat))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        holder: dict[str, Any] = {}

        def flat_fn(*flat_leaves: Any) -> Any:
            from engine.tree_util import tree_flatten as flatten
            from engine.tree_util import tree_unflatten

            rebuilt, start = [], 0
            for tree, n in zip(arg_trees, sizes):
                rebuilt.append(tree_unflatten(tree, list(flat_leaves[start:start + n])))
                start += n
            out = self.fn(*rebuilt)
            if has_aux:
                out, aux = out
                aux_leaves, holder["aux_tree"] = flatten(aux)
            out_leaves, holder["out_tree"] = flatten(out)
            return tuple(out_leaves) + (tuple(aux_leaves) if has_aux else ())

        graph = engine.make_graph(flat_fn)(*[engine.numpy.asarray(x, x.dtype) for x in flat])
        graph.param_names = param_names(self.fn, sizes)
        traced = _Traced(graph.to_json(), arg_trees, sizes, holder["out_tree"], holder.get("aux_tree"))
        with self._lock:
            self._cache[key] = traced
        return traced


def param_names(fn: Callable[..., Any], sizes: Sequence[int]) -> list[str]:
    """The graph's parameter names: an argument with one leaf keeps its Python name (so a registered
    model's constants bind by it), one with several is name.0, name.1, ...; x0, x1, ... otherwise."""
    import inspect
    import re

    try:
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        names = [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]
    except (TypeError, ValueError):
        names = []
    out = []
    for i, n in enumerate(sizes):
        base = names[i] if i < len(names) else f"arg{i}"
        out.extend([base] if n == 1 else [f"{base}.{j}" for j in range(n)])
    fallback = [f"x{i}" for i in range(sum(sizes))]
    ok = len(set(out)) == len(out) and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}", n) for n in out)
    return out if ok else fallback


def canonical_leaves(leaves: Sequence[Any]) -> list[np.ndarray]:
    """Leaves as the server will see them: arrays keep their dtype, Python numbers become float32
    (as in the engine), and every float leaf takes the request's one float dtype."""
    import engine.numpy as jnp

    arrays = [np.asarray(x) if hasattr(x, "dtype") else np.asarray(jnp.asarray(x)) for x in leaves]
    dtype = np.float64 if any(a.dtype == np.float64 for a in arrays) else np.float32
    return [a.astype(dtype) if a.dtype.kind == "f" and a.dtype != dtype else a for a in arrays]


def leaf_argnums(traced: _Traced, argnums: int | Sequence[int]) -> list[int]:
    starts = np.cumsum([0] + traced.arg_sizes)
    nums = [argnums] if isinstance(argnums, int) else list(argnums)
    out = []
    for a in nums:
        out.extend(range(int(starts[a]), int(starts[a + 1])))
    return out


def flat_leaves(args: Sequence[Any]) -> list[Any]:
    from engine.tree_util import tree_leaves

    return canonical_leaves([leaf for a in args for leaf in tree_leaves(a)])


def unflatten_per_arg(traced: _Traced, argnums: int | Sequence[int], leaf_results: list[Any]) -> Any:
    from engine.tree_util import tree_unflatten

    nums = [argnums] if isinstance(argnums, int) else list(argnums)
    out, start = [], 0
    for a in nums:
        n = traced.arg_sizes[a]
        out.append(tree_unflatten(traced.arg_trees[a], leaf_results[start:start + n]))
        start += n
    return out[0] if isinstance(argnums, int) else tuple(out)


_TRACED: weakref.WeakKeyDictionary[Any, PythonFunction] = weakref.WeakKeyDictionary()
_TRACED_LOCK = threading.Lock()


def python_function(f: Callable[..., Any]) -> PythonFunction:
    """f's PythonFunction, shared by every transform of f (c.grad(f), c.value(f), ...), so f is
    traced once per input signature, not once per c.grad(f) wrapper."""
    with _TRACED_LOCK:
        try:
            hit = _TRACED.get(f)
            if hit is None:
                hit = _TRACED[f] = PythonFunction(f)
            return hit
        except TypeError:  # not weakly referenceable (or unhashable): no sharing
            return PythonFunction(f)


def as_function_ref(f: Any, params: Sequence[str] | None) -> Any:
    if isinstance(f, (Expr, Model, GraphDoc, PythonFunction)):
        return f
    if isinstance(f, str):
        if params is None:
            raise TypeError("an expression needs its parameter names: pass params=[...] (or use client.expr)")
        return Expr(f, tuple(params))
    if isinstance(f, dict):
        return GraphDoc(f)
    if callable(f):
        return python_function(f)
    raise TypeError(f"cannot send {type(f).__name__} as a function: pass a Python function, an expression "
                    "string with params, a graph document, or client.model(name)")
