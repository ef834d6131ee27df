"""A remote function as the autodiff bridges (client.jax, client.torch) see it: flat arrays in,
flat arrays out, and rules for its derivatives.

A `Remote` is a function on the server with the layout of each parameter and of the output (the
nesting of lists, dicts and arrays of given shapes and dtypes). Its derivatives are remote
functions too: `remote.jvp()` is the server's `{"jvp": spec}` (primals..., tangents...) -> output
tangent, and `remote.vjp()` is `{"vjp": spec}` (primals..., cotangent) -> one cotangent per
parameter. Since both are functions like any other, derivatives of any order are asked of the
server, never approximated here.

A `Site` is one use of a remote function, possibly batched (`in_axes` on the wire: every batched
parameter carries the batch along axis 0, and so does every output). The framework bridges carry
a Site as their primitive's parameter.

Nothing here depends on JAX or PyTorch; only sending a Python function needs the engine, which is
imported when one is traced (the engine ships with the `nabla` package).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from array_codec import base64_leaf
from client import _wire as W

# ----------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Leaf:
    """An array of this shape and dtype."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Seq:
    """A list (or tuple: JSON has only lists; `kind` says what to give back to Python)."""

    items: tuple[Any, ...]
    kind: str = "tuple"


@dataclass(frozen=True)
class Record:
    """A dict with string keys, in sorted key order (JAX's order of a dict's leaves)."""

    keys: tuple[str, ...]
    items: tuple[Any, ...]


Layout = Leaf | Seq | Record | None


def _numpy_dtype_name(leaf: Any) -> str:
    return np.dtype(leaf.dtype).name


def structure_of(tree: Any, as_leaf: Callable[[Any], Any] = lambda x: x,
                 dtype_name: Callable[[Any], str] = _numpy_dtype_name) -> tuple[Layout, list[Any]]:
    """A Python value's layout and its leaves (after `as_leaf`), in layout order. Containers are
    tuples (namedtuples too), lists, dicts with string keys and None; anything else is an array
    (an object with `shape` and `dtype`, whose NumPy name `dtype_name` gives)."""
    leaves: list[Any] = []

    def walk(x: Any) -> Layout:
        if x is None:
            return None
        if isinstance(x, (tuple, list)):
            return Seq(tuple(walk(v) for v in x), "list" if isinstance(x, list) else "tuple")
        if isinstance(x, dict):
            if not all(isinstance(k, str) for k in x):
                raise TypeError("a dict sent to the server must have string keys (JSON objects do)")
            keys = tuple(sorted(x))
            return Record(keys, tuple(walk(x[k]) for k in keys))
        leaf = as_leaf(x)
        leaves.append(leaf)
        return Leaf(tuple(int(n) for n in leaf.shape), dtype_name(leaf))

    return walk(tree), leaves


def leaves_of(layout: Layout) -> list[Leaf]:
    if layout is None:
        return []
    if isinstance(layout, Leaf):
        return [layout]
    return [leaf for item in layout.items for leaf in leaves_of(item)]


def rebuild(layout: Layout, leaves: Iterator[Any]) -> Any:
    """The Python value of `layout` with the next leaves from `leaves`."""
    if layout is None:
        return None
    if isinstance(layout, Leaf):
        return next(leaves)
    if isinstance(layout, Record):
        return {k: rebuild(v, leaves) for k, v in zip(layout.keys, layout.items)}
    items = [rebuild(v, leaves) for v in layout.items]
    return items if layout.kind == "list" else tuple(items)


def batched(layout: Layout, size: int) -> Layout:
    """The layout with a leading batch dimension on every array."""
    if layout is None:
        return None
    if isinstance(layout, Leaf):
        return Leaf((size, *layout.shape), layout.dtype)
    if isinstance(layout, Record):
        return Record(layout.keys, tuple(batched(v, size) for v in layout.items))
    return Seq(tuple(batched(v, size) for v in layout.items), layout.kind)


def _shape_spec(layout: Layout) -> Any:
    """The layout as /v1/shapes takes it: {shape, dtype} leaves."""
    if layout is None:
        return None
    if isinstance(layout, Leaf):
        return {"shape": list(layout.shape), "dtype": layout.dtype}
    if isinstance(layout, Record):
        return {k: _shape_spec(v) for k, v in zip(layout.keys, layout.items)}
    return [_shape_spec(v) for v in layout.items]


def _from_shape_spec(obj: Any) -> Layout:
    """/v1/shapes' output tree as a layout (lists are read back as tuples)."""
    if obj is None:
        return None
    if isinstance(obj, dict) and set(obj) == {"shape", "dtype"}:
        return Leaf(tuple(obj["shape"]), obj["dtype"])
    if isinstance(obj, dict):
        keys = tuple(sorted(obj))
        return Record(keys, tuple(_from_shape_spec(obj[k]) for k in keys))
    return Seq(tuple(_from_shape_spec(v) for v in obj))


# ----------------------------------------------------------------------------- arrays on the wire


def _encode(layout: Layout, leaves: Iterator[np.ndarray]) -> Any:
    """Every array as a base64 $array leaf: exact, dtype kept, and a list of arrays stays a list
    (plain JSON would read a list of equal-shaped arrays back as one stacked array)."""
    if layout is None:
        return None
    if isinstance(layout, Leaf):
        return base64_leaf(np.asarray(next(leaves)).astype(layout.dtype, copy=False))
    if isinstance(layout, Record):
        return {k: _encode(v, leaves) for k, v in zip(layout.keys, layout.items)}
    return [_encode(v, leaves) for v in layout.items]


def _decode(layout: Layout, obj: Any, out: list[np.ndarray]) -> None:
    """The arrays of a response shaped like `layout`, appended to `out` in layout order."""
    if layout is None:
        return
    if isinstance(layout, Leaf):
        value = W.decode_leaf(obj).astype(layout.dtype, copy=False)
        if value.shape != layout.shape:
            raise ValueError(f"the server returned an array of shape {value.shape} where {layout.shape} was "
                             "expected")
        out.append(value)
    elif isinstance(layout, Record):
        for k, v in zip(layout.keys, layout.items):
            _decode(v, obj[k], out)
    else:
        if len(layout.items) == 1 and not isinstance(obj, list):
            obj = [obj]
        for v, o in zip(layout.items, obj, strict=True):
            _decode(v, o, out)


# ----------------------------------------------------------------------------- remote functions


@dataclass(eq=False)
class Remote:
    """A function on the server with its parameters' and output's layouts (unbatched)."""

    client: Any  # a client.Client
    spec: dict[str, Any]
    params: tuple[Layout, ...]
    output: Layout
    name: str
    kind: str | None = None  # "jvp" or "vjp" of `base`; None for the function itself
    base: Remote | None = None
    _derived: dict[str, Remote] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def jvp(self) -> Remote:
        """(primals..., tangents...) -> the output's tangent."""
        return self._derive("jvp", lambda: Remote(self.client, {"jvp": self.spec}, self.params + self.params,
                                                  self.output, f"jvp({self.name})", "jvp", self))

    def vjp(self) -> Remote:
        """(primals..., cotangent) -> one cotangent per parameter."""
        return self._derive("vjp", lambda: Remote(self.client, {"vjp": self.spec}, self.params + (self.output,),
                                                  Seq(self.params), f"vjp({self.name})", "vjp", self))

    def _derive(self, kind: str, make: Callable[[], Remote]) -> Remote:
        # One object per derivative, so a primitive parameter compares equal across traces (and
        # JAX's caches of compiled functions hit).
        with self._lock:
            if kind not in self._derived:
                self._derived[kind] = make()
            return self._derived[kind]

    @property
    def param_leaf_counts(self) -> list[int]:
        return [len(leaves_of(p)) for p in self.params]


@dataclass(frozen=True)
class Site:
    """One use of a remote function: unbatched, or batched along axis 0 of the parameters marked
    in `batched` (and of every output), with `batch` examples."""

    remote: Remote
    batch: int | None = None
    batched: tuple[bool, ...] = ()

    def param_layouts(self) -> list[Layout]:
        if self.batch is None:
            return list(self.remote.params)
        return [batched(p, self.batch) if b else p for p, b in zip(self.remote.params, self.batched)]

    def output_layout(self) -> Layout:
        return self.remote.output if self.batch is None else batched(self.remote.output, self.batch)

    def in_leaves(self) -> list[Leaf]:
        return [leaf for p in self.param_layouts() for leaf in leaves_of(p)]

    def out_leaves(self) -> list[Leaf]:
        return leaves_of(self.output_layout())

    def leaf_batched(self) -> list[bool]:
        """For every input leaf: does it carry the batch?"""
        flags = self.batched or (False,) * len(self.remote.params)
        return [b for b, n in zip(flags, self.remote.param_leaf_counts) for _ in range(n)]

    def jvp(self) -> Site:
        return Site(self.remote.jvp(), self.batch, self.batched + self.batched if self.batch else ())

    def vjp(self) -> Site:
        return Site(self.remote.vjp(), self.batch, self.batched + (True,) if self.batch else ())

    def with_batch(self, batch: int, flags: Sequence[bool]) -> Site:
        return Site(self.remote, batch, tuple(bool(f) for f in flags))

    def request(self, leaves: Sequence[np.ndarray]) -> dict[str, Any]:
        it = iter(leaves)
        body: dict[str, Any] = {"function": self.remote.spec,
                                "args": [_encode(p, it) for p in self.param_layouts()], "encoding": "base64"}
        if self.batch is not None:
            body["in_axes"] = [0 if b else None for b in self.batched]
        return body

    def run(self, leaves: Sequence[Any]) -> list[np.ndarray]:
        """Compute on the server: one POST /v1/value, whatever the batch."""
        from client._client import Call

        body = self.request([np.asarray(x) for x in leaves])
        layout = self.output_layout()

        def decode(resp: dict[str, Any]) -> list[np.ndarray]:
            out: list[np.ndarray] = []
            _decode(layout, resp["value"], out)
            return out

        return self.remote.client._run(Call("POST", "/v1/value", body, decode))


# ----------------------------------------------------------------------------- from what the user passes


@dataclass
class Bound:
    """A function bound to one input signature: the remote function, and how to give its output
    back (the Python structure the user's function returns)."""

    remote: Remote
    output: Layout


class RemoteFunction:
    """What `remote(client, function)` wraps: anything the client can send (an expression, a graph,
    a model, or a Python function written against engine.numpy), resolved once per input layout."""

    def __init__(self, client: Any, function: Any, params: Sequence[str] | None = None) -> None:
        from client._client import AsyncClient, Client

        if isinstance(client, AsyncClient):
            raise TypeError("the bridges call the server from inside the autodiff system, synchronously: pass a "
                            "client.Client, not an AsyncClient")
        if not isinstance(client, Client):
            raise TypeError(f"remote needs a client.Client as its first argument, got {type(client).__name__}")
        self.client = client
        self.ref = W.as_function_ref(function, params)
        self._bound: dict[tuple[Layout, ...], Bound] = {}
        self._lock = threading.Lock()

    def bind(self, layouts: Sequence[Layout]) -> Bound:
        key = tuple(layouts)
        with self._lock:
            hit = self._bound.get(key)
        if hit is None:
            hit = self._trace(key) if isinstance(self.ref, W.PythonFunction) else self._ask_shapes(key)
            with self._lock:
                hit = self._bound.setdefault(key, hit)
        return hit

    def _ask_shapes(self, layouts: tuple[Layout, ...]) -> Bound:
        from client._client import Call

        spec = self.ref.spec()
        body = {"function": spec, "args": [_shape_spec(p) for p in layouts]}
        output = self.client._run(Call("POST", "/v1/shapes", body, lambda r: _from_shape_spec(r["output"])))
        return Bound(Remote(self.client, spec, layouts, output, _describe(spec)), output)

    def _trace(self, layouts: tuple[Layout, ...]) -> Bound:
        """A Python function traced by the engine (imported here, on first use) into a graph whose
        parameters are the arguments' arrays, in order."""
        import engine

        fn = self.ref.fn
        holder: dict[str, Layout] = {}

        def flat_fn(*xs: Any) -> tuple[Any, ...]:
            it = iter(xs)
            out = fn(*[rebuild(p, it) for p in layouts])
            holder["output"], leaves = structure_of(out)
            return tuple(leaves)

        leaves = [leaf for p in layouts for leaf in leaves_of(p)]
        graph = engine.make_graph(flat_fn)(*[engine.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves])
        graph.param_names = W.param_names(fn, [len(leaves_of(p)) for p in layouts])
        doc = graph.to_json(encoding="base64")
        outs = [Leaf(tuple(v.aval.shape), np.dtype(v.aval.dtype).name) for v in graph.outvars]
        wire_output: Layout = outs[0] if len(outs) == 1 else Seq(tuple(outs), "list")
        params = tuple(leaves)  # each array is one parameter of the graph
        name = f"{getattr(fn, '__name__', 'function')}:{_digest(doc)}"
        return Bound(Remote(self.client, {"graph": doc}, params, wire_output, name), holder["output"])


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _describe(spec: dict[str, Any]) -> str:
    if "model" in spec:
        return f"model {spec['model']}" + (f" v{spec['version']}" if "version" in spec else "")
    return f"{next(iter(spec))}:{_digest(spec)}"


__all__ = ["Bound", "Leaf", "Record", "Remote", "RemoteFunction", "Seq", "Site", "leaves_of", "rebuild",
           "structure_of"]
