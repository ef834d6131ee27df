"""Pytrees with the semantics of ``jax.tree_util``, in pure Python.

A pytree is a nested structure of containers ("nodes") whose non-container
elements are "leaves".  Nodes are ``tuple``, ``list``, ``dict`` (keys sorted),
``None`` (a node with no children, never a leaf), namedtuples,
``collections.OrderedDict`` and ``collections.defaultdict`` (keys in insertion
order), plus any type registered with one of the ``register_*`` functions.
Everything else, including unregistered dataclasses and subclasses of the
built-in containers, is a leaf.  Dispatch is on the exact type of an object.

A ``PyTreeDef`` stores the structure as a flat pre-order tuple of node entries
``(nodetype, aux_data, num_children)``; a leaf is ``(None, None, 0)``.  Every
traversal (flatten, unflatten, repr, equality, hashing) is a loop over that
tuple or over an explicit stack, so deeply nested trees never hit Python's
recursion limit.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

__all__ = [
    "PyTreeDef",
    "DictKey",
    "SequenceKey",
    "GetAttrKey",
    "FlattenedIndexKey",
    "KeyEntry",
    "KeyPath",
    "Partial",
    "tree_flatten",
    "tree_unflatten",
    "tree_leaves",
    "tree_structure",
    "tree_map",
    "tree_all",
    "tree_reduce",
    "tree_transpose",
    "tree_flatten_with_path",
    "tree_leaves_with_path",
    "tree_map_with_path",
    "keystr",
    "register_pytree_node",
    "register_pytree_node_class",
    "register_pytree_with_keys",
    "register_pytree_with_keys_class",
    "register_dataclass",
    "treedef_is_leaf",
    "treedef_children",
    "treedef_tuple",
    "flatten_one_level",
    "all_leaves",
    "broadcast_prefix",
    "describe_mismatch",
]

_NoneType = type(None)


# ---------------------------------------------------------------------------
# Key entries and key paths
# ---------------------------------------------------------------------------


# Each key entry is an immutable value with one field, compared by type and value: DictKey("W")
# never equals GetAttrKey("W").


@dataclasses.dataclass(frozen=True, slots=True)
class DictKey:
    """Key of a child of a dict-like node; prints as ``['W']``."""

    key: Hashable

    def __str__(self) -> str:
        return f"[{self.key!r}]"


@dataclasses.dataclass(frozen=True, slots=True)
class SequenceKey:
    """Index of a child of a list or tuple node; prints as ``[0]``."""

    idx: int

    def __str__(self) -> str:
        return f"[{self.idx!r}]"


@dataclasses.dataclass(frozen=True, slots=True)
class GetAttrKey:
    """Attribute name of a child (namedtuple fields, dataclasses); prints as ``.name``."""

    name: str

    def __str__(self) -> str:
        return f".{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class FlattenedIndexKey:
    """Position of a child of a custom node registered without keys."""

    key: int

    def __str__(self) -> str:
        return f"[<flat index {self.key}>]"


KeyEntry = Any
KeyPath = tuple


def _simple_key(k: Any) -> str:
    if type(k) is DictKey or type(k) is FlattenedIndexKey:
        return str(k.key)
    if type(k) is SequenceKey:
        return str(k.idx)
    if type(k) is GetAttrKey:
        return str(k.name)
    return str(k)


def keystr(keys: Sequence[Any], *, simple: bool = False, separator: str = "") -> str:
    """Render a key path JAX-style: ``keystr((DictKey('W'), SequenceKey(0)))`` is ``"['W'][0]"``.

    With ``simple=True`` each key is shown bare (``W``, ``0``, ``name``), joined by ``separator``.
    """
    if simple:
        return separator.join(_simple_key(k) for k in keys)
    return separator.join(str(k) for k in keys)


def _where(path: Sequence[Any]) -> str:
    return keystr(path) if path else "the root"


# ---------------------------------------------------------------------------
# Node kinds (the registry)
# ---------------------------------------------------------------------------


class _Kind:
    """How one node type is taken apart and put back together."""

    __slots__ = ("nodetype", "flatten", "unflatten", "flatten_with_keys", "aux_keys", "fmt", "describe")

    def __init__(self, nodetype, flatten, unflatten, flatten_with_keys, aux_keys, fmt, describe):
        self.nodetype = nodetype
        # flatten(x) -> (children sequence, aux_data)
        self.flatten = flatten
        # unflatten(aux_data, children list) -> x
        self.unflatten = unflatten
        # flatten_with_keys(x) -> (list of (key, child), aux_data)
        self.flatten_with_keys = flatten_with_keys
        # aux_keys(aux_data, n) -> keys of the n children, known from the treedef alone
        self.aux_keys = aux_keys
        # fmt(aux_data, child_reprs) -> repr of the node inside PyTreeDef(...)
        self.fmt = fmt
        # describe(aux_data, n) -> a phrase for error messages ("a dict with keys ['a']")
        self.describe = describe


_LEAF_KIND = object()  # the cache's value for types that are leaves
_LEAF = (None, None, 0)  # the pre-order entry of a leaf

_registry: dict[type, _Kind] = {}  # explicitly registered node types (built-ins included)
_cache: dict[type, Any] = {}  # every type seen: its _Kind, or _LEAF_KIND


def _children_phrase(n: int) -> str:
    return f"{n} child" if n == 1 else f"{n} children"


def _seq_keys(aux, n):
    return [SequenceKey(i) for i in range(n)]


def _index_keys(aux, n):
    return [FlattenedIndexKey(i) for i in range(n)]


# tuple
def _tuple_flatten(x):
    return x, None


def _tuple_unflatten(aux, children):
    return tuple(children)


def _tuple_with_keys(x):
    return [(SequenceKey(i), c) for i, c in enumerate(x)], None


def _tuple_fmt(aux, cs):
    return "(" + cs[0] + ",)" if len(cs) == 1 else "(" + ", ".join(cs) + ")"


# list
def _list_flatten(x):
    return x, None


def _list_unflatten(aux, children):
    return children if type(children) is list else list(children)


def _list_fmt(aux, cs):
    return "[" + ", ".join(cs) + "]"


# dict
def _sorted_keys(d):
    try:
        return sorted(d)
    except TypeError as e:
        raise ValueError(
            f"pytree dict keys must be mutually sortable (keys are sorted to fix the child order), "
            f"but sorting the keys {list(d)!r} failed: {e}"
        ) from e


def _dict_flatten(d):
    keys = _sorted_keys(d)
    return list(map(d.__getitem__, keys)), tuple(keys)


def _dict_unflatten(keys, children):
    return dict(zip(keys, children))


def _dict_with_keys(d):
    keys = _sorted_keys(d)
    return [(DictKey(k), d[k]) for k in keys], tuple(keys)


def _dict_keys(keys, n):
    return [DictKey(k) for k in keys]


def _dict_fmt(keys, cs):
    return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(keys, cs)) + "}"


# None
def _none_flatten(x):
    return (), None


def _none_unflatten(aux, children):
    return None


def _none_with_keys(x):
    return [], None


# OrderedDict (insertion order is structure)
def _odict_flatten(d):
    keys = tuple(d)
    return list(map(d.__getitem__, keys)), keys


def _odict_unflatten(keys, children):
    return collections.OrderedDict(zip(keys, children))


def _odict_with_keys(d):
    keys = tuple(d)
    return [(DictKey(k), d[k]) for k in keys], keys


# defaultdict (keys sorted like dict; the default factory is part of the structure)
def _ddict_flatten(d):
    keys = _sorted_keys(d)
    return list(map(d.__getitem__, keys)), (d.default_factory, tuple(keys))


def _ddict_unflatten(aux, children):
    return collections.defaultdict(aux[0], zip(aux[1], children))


def _ddict_with_keys(d):
    keys = _sorted_keys(d)
    return [(DictKey(k), d[k]) for k in keys], (d.default_factory, tuple(keys))


def _custom_fmt(name):
    def fmt(aux, cs):
        return f"CustomNode({name}[{aux}], [{', '.join(cs)}])"

    return fmt


def _install(kind: _Kind) -> None:
    _registry[kind.nodetype] = kind
    _cache[kind.nodetype] = kind


_install(_Kind(tuple, _tuple_flatten, _tuple_unflatten, _tuple_with_keys, _seq_keys, _tuple_fmt,
               lambda aux, n: f"a tuple of {_children_phrase(n)}"))
_install(_Kind(list, _list_flatten, _list_unflatten, _tuple_with_keys, _seq_keys, _list_fmt,
               lambda aux, n: f"a list of {_children_phrase(n)}"))
_install(_Kind(dict, _dict_flatten, _dict_unflatten, _dict_with_keys, _dict_keys, _dict_fmt,
               lambda keys, n: f"a dict with keys {list(keys)!r}"))
_install(_Kind(_NoneType, _none_flatten, _none_unflatten, _none_with_keys, _seq_keys,
               lambda aux, cs: "None", lambda aux, n: "None"))
_install(_Kind(collections.OrderedDict, _odict_flatten, _odict_unflatten, _odict_with_keys, _dict_keys,
               lambda keys, cs: f"CustomNode(OrderedDict[{keys}], [{', '.join(cs)}])",
               lambda keys, n: f"an OrderedDict with keys {list(keys)!r}"))
_install(_Kind(collections.defaultdict, _ddict_flatten, _ddict_unflatten, _ddict_with_keys,
               lambda aux, n: [DictKey(k) for k in aux[1]],
               lambda aux, cs: f"CustomNode(defaultdict[{aux}], [{', '.join(cs)}])",
               lambda aux, n: f"a defaultdict (default_factory={aux[0]!r}) with keys {list(aux[1])!r}"))

_BUILTIN_NODE_TYPES = frozenset(_registry)


def _namedtuple_kind(t: type) -> _Kind:
    fields = tuple(t._fields)
    name = t.__name__

    def unflatten(aux, children):
        return t(*children)

    def with_keys(x):
        return [(GetAttrKey(f), c) for f, c in zip(fields, x)], None

    def aux_keys(aux, n):
        return [GetAttrKey(f) for f in fields[:n]]

    return _Kind(t, _tuple_flatten, unflatten, with_keys, aux_keys,
                 lambda aux, cs: f"CustomNode(namedtuple[{name}], [{', '.join(cs)}])",
                 lambda aux, n: f"a namedtuple {t.__qualname__} of {_children_phrase(n)}")


def _resolve(t: type) -> Any:
    """Find (and cache) the kind of type ``t``: a registered node, a namedtuple, or a leaf."""
    kind = _registry.get(t)
    if kind is None:
        if issubclass(t, tuple) and hasattr(t, "_fields"):
            kind = _namedtuple_kind(t)
        else:
            kind = _LEAF_KIND
    _cache[t] = kind
    return kind


def _kind_of_entry(t: type) -> _Kind:
    kind = _cache.get(t) or _resolve(t)
    if kind is _LEAF_KIND:
        raise TypeError(f"{t!r} was a pytree node type when this PyTreeDef was made but is not registered now")
    return kind


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


def _check_new(nodetype: type) -> None:
    if not isinstance(nodetype, type):
        raise TypeError(f"can only register classes as pytree nodes, got {nodetype!r}")
    if nodetype in _registry:
        raise ValueError(f"Duplicate custom PyTreeDef type registration for {nodetype!r}.")


def _register(nodetype, flatten, unflatten_user, flatten_with_keys, aux_keys) -> None:
    def unflatten(aux, children):
        return unflatten_user(aux, tuple(children))

    def flatten_checked(x):
        children, aux = flatten(x)
        if not isinstance(children, (list, tuple)):
            children = list(children)
        return children, aux

    name = nodetype.__name__
    _install(_Kind(nodetype, flatten_checked, unflatten, flatten_with_keys, aux_keys, _custom_fmt(name),
                   lambda aux, n: f"a {nodetype.__qualname__} node with aux data {aux!r} and {_children_phrase(n)}"))


def register_pytree_node(
    nodetype: type,
    flatten_func: Callable[[Any], tuple[Iterable[Any], Any]],
    unflatten_func: Callable[[Any, Iterable[Any]], Any],
    flatten_with_keys_func: Callable[[Any], tuple[Iterable[tuple[Any, Any]], Any]] | None = None,
) -> None:
    """Make ``nodetype`` a pytree node.

    ``flatten_func(x)`` returns ``(children, aux_data)``; ``unflatten_func(aux_data, children)``
    rebuilds the object (children arrive as a tuple).  ``aux_data`` is part of the structure:
    it is compared with ``==`` and should be hashable.  Children get ``FlattenedIndexKey``
    keys in key paths unless ``flatten_with_keys_func`` gives ``((key, child), ...), aux_data``.
    """
    _check_new(nodetype)
    if flatten_with_keys_func is None:
        def flatten_with_keys(x):
            children, aux = flatten_func(x)
            return [(FlattenedIndexKey(i), c) for i, c in enumerate(children)], aux
    else:
        def flatten_with_keys(x):
            key_children, aux = flatten_with_keys_func(x)
            return list(key_children), aux
    _register(nodetype, flatten_func, unflatten_func, flatten_with_keys, _index_keys)


def register_pytree_with_keys(
    nodetype: type,
    flatten_with_keys: Callable[[Any], tuple[Iterable[tuple[Any, Any]], Any]],
    unflatten_func: Callable[[Any, Iterable[Any]], Any],
    flatten_func: Callable[[Any], tuple[Iterable[Any], Any]] | None = None,
) -> None:
    """Like ``register_pytree_node`` but the flatten function returns ``((key, child), ...), aux``."""
    _check_new(nodetype)
    if flatten_func is None:
        def flatten_func(x):
            key_children, aux = flatten_with_keys(x)
            return [c for _, c in key_children], aux

    def with_keys(x):
        key_children, aux = flatten_with_keys(x)
        return list(key_children), aux

    _register(nodetype, flatten_func, unflatten_func, with_keys, _index_keys)


def register_pytree_node_class(cls: type) -> type:
    """Class decorator: ``cls`` has ``tree_flatten(self)`` and classmethod ``tree_unflatten(aux, children)``."""
    register_pytree_node(cls, lambda x: x.tree_flatten(), cls.tree_unflatten)
    return cls


def register_pytree_with_keys_class(cls: type) -> type:
    """Class decorator: ``cls`` has ``tree_flatten_with_keys(self)`` and classmethod ``tree_unflatten``.

    A ``tree_flatten`` method, if the class has one, is used when keys are not needed.
    """
    flatten = (lambda x: x.tree_flatten()) if hasattr(cls, "tree_flatten") else None
    register_pytree_with_keys(cls, lambda x: x.tree_flatten_with_keys(), cls.tree_unflatten, flatten)
    return cls


def register_dataclass(
    nodetype: type | None = None,
    data_fields: Sequence[str] | None = None,
    meta_fields: Sequence[str] | None = None,
    drop_fields: Sequence[str] = (),
) -> Any:
    """Register a dataclass (or any class built by keyword arguments) as a pytree node.

    ``data_fields`` are children; ``meta_fields`` are static and part of the structure (their
    values are the node's aux data, so they should be hashable).  Works as a decorator.  For a
    dataclass with neither list given, fields marked ``field(metadata={'static': True})`` are meta
    fields and every other ``init=True`` field is a data field; given one list, the other is the
    rest of the ``init=True`` fields.  Unflattening calls ``nodetype(**fields)``.
    """
    if nodetype is None:  # @register_dataclass(data_fields=..., meta_fields=...)
        return functools.partial(register_dataclass, data_fields=data_fields, meta_fields=meta_fields,
                                 drop_fields=drop_fields)
    if dataclasses.is_dataclass(nodetype):
        init_fields = [f for f in dataclasses.fields(nodetype) if f.init and f.name not in drop_fields]
        names = [f.name for f in init_fields]
        if data_fields is None and meta_fields is None:
            meta_fields = [f.name for f in init_fields if f.metadata.get("static", False)]
            data_fields = [n for n in names if n not in meta_fields]
        elif data_fields is None:
            data_fields = [n for n in names if n not in set(meta_fields)]
        elif meta_fields is None:
            meta_fields = [n for n in names if n not in set(data_fields)]
        data_fields, meta_fields = list(data_fields), list(meta_fields)
        given = set(data_fields) | set(meta_fields)
        missing, extra = set(names) - given, given - set(names)
        if missing or extra:
            raise ValueError(
                f"register_dataclass({nodetype.__name__}): data_fields and meta_fields must list exactly the "
                f"init=True fields not in drop_fields; missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
    else:
        if data_fields is None or meta_fields is None:
            raise TypeError(
                f"register_dataclass: data_fields and meta_fields are required when nodetype is not a "
                f"dataclass; got nodetype={nodetype!r}"
            )
        data_fields, meta_fields = list(data_fields), list(meta_fields)
    overlap = set(data_fields) & set(meta_fields)
    if overlap:
        raise ValueError(f"register_dataclass: fields {sorted(overlap)} are both data and meta fields")
    _check_new(nodetype)

    data = tuple(data_fields)
    meta = tuple(meta_fields)

    def flatten(x):
        return [getattr(x, n) for n in data], tuple([getattr(x, n) for n in meta])

    def with_keys(x):
        return [(GetAttrKey(n), getattr(x, n)) for n in data], tuple([getattr(x, n) for n in meta])

    def unflatten(aux, children):
        kwargs = dict(zip(data, children))
        kwargs.update(zip(meta, aux))
        return nodetype(**kwargs)

    def aux_keys(aux, n):
        return [GetAttrKey(f) for f in data]

    name = nodetype.__name__
    _install(_Kind(nodetype, flatten, unflatten, with_keys, aux_keys, _custom_fmt(name),
                   lambda aux, n: (f"a {nodetype.__qualname__} with data fields {list(data)!r}"
                                   + (f" and meta fields {dict(zip(meta, aux))!r}" if meta else ""))))
    return nodetype


# ---------------------------------------------------------------------------
# PyTreeDef
# ---------------------------------------------------------------------------


def _aux_equal(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _safe_hash(aux: Any) -> int:
    try:
        return hash(aux)
    except TypeError:
        return 0


def _subtree_end(nodes: tuple, start: int) -> int:
    """Index one past the last entry of the subtree whose root entry is ``nodes[start]``."""
    need = 1
    i = start
    while need:
        need += nodes[i][2] - 1
        i += 1
    return i


def _count_leaves(nodes: Sequence[tuple]) -> int:
    return sum(1 for e in nodes if e[0] is None)


class PyTreeDef:
    """The structure of a pytree: node types, their aux data (dict keys, meta fields...) and arities."""

    __slots__ = ("_nodes", "_num_leaves", "_hash")

    def __init__(self, nodes: tuple, num_leaves: int) -> None:
        self._nodes = nodes
        self._num_leaves = num_leaves
        self._hash = None

    # -- basic properties ----------------------------------------------------------
    @property
    def num_leaves(self) -> int:
        return self._num_leaves

    @property
    def num_nodes(self) -> int:
        """Number of entries in the structure, leaves and ``None`` nodes included (as in JAX)."""
        return len(self._nodes)

    def node_data(self) -> tuple[type, Any] | None:
        """``(nodetype, aux_data)`` of the root node, or ``None`` for a leaf."""
        t, aux, _ = self._nodes[0]
        return None if t is None else (t, aux)

    def children(self) -> list[PyTreeDef]:
        """The structures of the root's direct children."""
        nodes = self._nodes
        out = []
        i = 1
        for _ in range(nodes[0][2]):
            end = _subtree_end(nodes, i)
            sub = nodes[i:end]
            out.append(PyTreeDef(sub, _count_leaves(sub)))
            i = end
        return out

    def is_leaf(self) -> bool:
        return self._nodes[0][0] is None

    # -- rebuilding ------------------------------------------------------------------
    def unflatten(self, leaves: Iterable[Any]) -> Any:
        """Build a tree of this structure from ``leaves`` (in ``tree_flatten`` order)."""
        if type(leaves) is not list and type(leaves) is not tuple:
            leaves = list(leaves)
        n = len(leaves)
        if n != self._num_leaves:
            word = "many" if n > self._num_leaves else "few"
            raise ValueError(
                f"Too {word} leaves for PyTreeDef; expected {self._num_leaves}, got {n}. Structure: {self!r}"
            )
        return self._unflatten(leaves)

    def _unflatten(self, leaves: Sequence[Any]) -> Any:
        nodes = self._nodes
        if len(nodes) == 1 and nodes[0][0] is None:
            return leaves[0]
        get = _cache.get
        stack: list = []
        push = stack.append
        i = len(leaves)
        for t, aux, k in reversed(nodes):
            if t is None:
                i -= 1
                push(leaves[i])
                continue
            if k:
                children = stack[-k:]
                del stack[-k:]
                children.reverse()
            else:
                children = []
            kind = get(t) or _resolve(t)
            if kind is _LEAF_KIND:
                kind = _kind_of_entry(t)
            push(kind.unflatten(aux, children))
        return stack[0]

    def flatten_up_to(self, tree: Any) -> list[Any]:
        """Cut ``tree`` at this structure's leaves: returns one subtree of ``tree`` per leaf.

        ``tree`` must have this structure as a prefix (same node types, dict keys, aux data and
        arities down to this structure's leaves); otherwise ``ValueError`` names the first key path
        where they differ.
        """
        return self._flatten_up_to(tree, None)

    def _flatten_up_to(self, tree: Any, context: str | None) -> list[Any]:
        nodes = self._nodes
        if len(nodes) == 1 and nodes[0][0] is None:
            return [tree]
        get = _cache.get
        out: list = []
        stack = [tree]
        pop = stack.pop
        for i, (t, aux, k) in enumerate(nodes):
            x = pop()
            if t is None:
                out.append(x)
                continue
            if type(x) is not t:
                self._raise_mismatch(i, x, context)
            if t is _NoneType:
                continue
            children, aux2 = (get(t) or _resolve(t)).flatten(x)
            if len(children) != k or not _aux_equal(aux2, aux):
                self._raise_mismatch(i, x, context)
            stack.extend(reversed(children))
        return out

    def _raise_mismatch(self, index: int, x: Any, context: str | None) -> None:
        path = _nth_path(self._nodes, index)
        expected = _describe_entry(self._nodes[index])
        actual = _describe_object(x)
        detail = _detail(self._nodes[index], _entry_of_object(x), ("missing keys", "unexpected keys"))
        ctx = f"{context}: " if context else ""
        raise ValueError(
            f"{ctx}pytree structure mismatch at {_where(path)}: expected {expected}, got {actual}{detail}"
        )

    # -- comparison / hashing / repr --------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PyTreeDef):
            return NotImplemented
        if self is other:
            return True
        a, b = self._nodes, other._nodes
        if len(a) != len(b) or self._num_leaves != other._num_leaves:
            return False
        try:
            return a == b
        except Exception:
            return all(x[0] is y[0] and x[2] == y[2] and _aux_equal(x[1], y[1]) for x, y in zip(a, b))

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = self._hash = hash(tuple((t, _safe_hash(aux), k) for t, aux, k in self._nodes))
        return h

    def __repr__(self) -> str:
        return f"PyTreeDef({self._fold_repr()})"

    def _fold_repr(self) -> str:
        stack: list[str] = []
        for t, aux, k in reversed(self._nodes):
            if t is None:
                stack.append("*")
                continue
            if k:
                cs = stack[-k:]
                del stack[-k:]
                cs.reverse()
            else:
                cs = []
            stack.append(_kind_of_entry(t).fmt(aux, cs))
        return stack[0]

    def __reduce__(self):
        return (PyTreeDef, (self._nodes, self._num_leaves))


def _entry_of_object(x: Any) -> tuple:
    """The pre-order entry ``x`` itself would have (one level only)."""
    t = type(x)
    kind = _cache.get(t) or _resolve(t)
    if kind is _LEAF_KIND:
        return _LEAF
    try:
        children, aux = kind.flatten(x)
    except Exception:
        return (t, None, -1)
    return (t, aux, len(children))


def _describe_entry(entry: tuple) -> str:
    t, aux, k = entry
    if t is None:
        return "a leaf"
    if k < 0:
        return f"a {t.__qualname__} that could not be flattened"
    return _kind_of_entry(t).describe(aux, k)


def _describe_object(x: Any) -> str:
    entry = _entry_of_object(x)
    if entry[0] is None:
        return f"a leaf of type {type(x).__qualname__}"
    return _describe_entry(entry)


def _detail(a: tuple, b: tuple, names: tuple[str, str] = ("keys only in the first", "keys only in the second")) -> str:
    """Extra explanation when two entries have the same dict-like type but different keys."""
    if a[0] is None or a[0] is not b[0] or b[2] < 0:
        return ""
    t = a[0]
    if t is dict or t is collections.OrderedDict or t is collections.defaultdict:
        ka = a[1][1] if t is collections.defaultdict else a[1]
        kb = b[1][1] if t is collections.defaultdict else b[1]
        only_a = [k for k in ka if k not in kb]
        only_b = [k for k in kb if k not in ka]
        parts = []
        if only_a:
            parts.append(f"{names[0]}: {only_a!r}")
        if only_b:
            parts.append(f"{names[1]}: {only_b!r}")
        if not parts and list(ka) != list(kb):
            parts.append("same keys in a different order")
        return " (" + "; ".join(parts) + ")" if parts else ""
    return ""


def _iter_paths(nodes: Sequence[tuple]):
    """Yield the key path of every entry of a pre-order node tuple, from the treedef alone."""
    stack: list[tuple] = [()]
    for t, aux, k in nodes:
        p = stack.pop()
        yield p
        if t is not None and k:
            keys = _kind_of_entry(t).aux_keys(aux, k)
            if len(keys) != k:
                keys = [FlattenedIndexKey(j) for j in range(k)]
            stack.extend([p + (key,) for key in reversed(keys)])


def _nth_path(nodes: Sequence[tuple], index: int) -> tuple:
    for i, p in enumerate(_iter_paths(nodes)):
        if i == index:
            return p
    raise IndexError(index)


def describe_mismatch(treedef_a: PyTreeDef, treedef_b: PyTreeDef) -> str:
    """Explain the first difference between two structures, with its key path.

    E.g. ``"at ['W']: a dict with keys ['a', 'b'] vs a list of 2 children"``.  Returns
    ``"no difference: the structures are equal"`` when they are equal.
    """
    a, b = treedef_a._nodes, treedef_b._nodes
    paths = _iter_paths(a)
    for ea, eb in zip(a, b):
        p = next(paths)
        if ea[0] is eb[0] and ea[2] == eb[2] and _aux_equal(ea[1], eb[1]):
            continue
        return f"at {_where(p)}: {_describe_entry(ea)} vs {_describe_entry(eb)}{_detail(ea, eb)}"
    if len(a) != len(b):  # cannot happen for well-formed treedefs whose entries all agree
        return f"the structures have {len(a)} vs {len(b)} nodes"
    return "no difference: the structures are equal"


# ---------------------------------------------------------------------------
# Flattening
# ---------------------------------------------------------------------------


def tree_flatten(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list[Any], PyTreeDef]:
    """Return ``(leaves, treedef)``; ``is_leaf(x)`` true stops descent at ``x`` (which becomes a leaf)."""
    leaves: list = []
    nodes: list = []
    stack = [tree]
    pop = stack.pop
    extend = stack.extend
    add_leaf = leaves.append
    add_node = nodes.append
    get = _cache.get
    if is_leaf is None:  # the common case, kept free of the per-node is_leaf test
        while stack:
            x = pop()
            t = type(x)
            kind = get(t) or _resolve(t)
            if kind is _LEAF_KIND:
                add_leaf(x)
                add_node(_LEAF)
                continue
            children, aux = kind.flatten(x)
            add_node((t, aux, len(children)))
            extend(reversed(children))
        return leaves, PyTreeDef(tuple(nodes), len(leaves))
    while stack:
        x = pop()
        if is_leaf(x):
            add_leaf(x)
            add_node(_LEAF)
            continue
        t = type(x)
        kind = get(t) or _resolve(t)
        if kind is _LEAF_KIND:
            add_leaf(x)
            add_node(_LEAF)
            continue
        children, aux = kind.flatten(x)
        add_node((t, aux, len(children)))
        extend(reversed(children))
    return leaves, PyTreeDef(tuple(nodes), len(leaves))


def tree_leaves(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    """The leaves of ``tree`` in flatten order (``None`` is a node with no leaves)."""
    leaves: list = []
    stack = [tree]
    pop = stack.pop
    extend = stack.extend
    add_leaf = leaves.append
    get = _cache.get
    while stack:
        x = pop()
        if is_leaf is not None and is_leaf(x):
            add_leaf(x)
            continue
        t = type(x)
        kind = get(t) or _resolve(t)
        if kind is _LEAF_KIND:
            add_leaf(x)
            continue
        extend(reversed(kind.flatten(x)[0]))
    return leaves


def tree_structure(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> PyTreeDef:
    return tree_flatten(tree, is_leaf)[1]


def tree_unflatten(treedef: PyTreeDef, leaves: Iterable[Any]) -> Any:
    return treedef.unflatten(leaves)


def tree_flatten_with_path(
    tree: Any,
    is_leaf: Callable[..., bool] | None = None,
    is_leaf_takes_path: bool = False,
) -> tuple[list[tuple[tuple, Any]], PyTreeDef]:
    """Like ``tree_flatten`` but each leaf comes as ``(key_path, leaf)``.

    With ``is_leaf_takes_path=True``, ``is_leaf`` is called as ``is_leaf(key_path, x)``.
    """
    leaves: list = []
    nodes: list = []
    stack: list = [((), tree)]
    pop = stack.pop
    get = _cache.get
    while stack:
        path, x = pop()
        if is_leaf is not None and (is_leaf(path, x) if is_leaf_takes_path else is_leaf(x)):
            leaves.append((path, x))
            nodes.append(_LEAF)
            continue
        t = type(x)
        kind = get(t) or _resolve(t)
        if kind is _LEAF_KIND:
            leaves.append((path, x))
            nodes.append(_LEAF)
            continue
        key_children, aux = kind.flatten_with_keys(x)
        nodes.append((t, aux, len(key_children)))
        stack.extend([(path + (key,), c) for key, c in reversed(key_children)])
    return leaves, PyTreeDef(tuple(nodes), len(leaves))


def tree_leaves_with_path(
    tree: Any,
    is_leaf: Callable[..., bool] | None = None,
    is_leaf_takes_path: bool = False,
) -> list[tuple[tuple, Any]]:
    return tree_flatten_with_path(tree, is_leaf, is_leaf_takes_path)[0]


# ---------------------------------------------------------------------------
# Mapping and reducing
# ---------------------------------------------------------------------------


def tree_map(f: Callable[..., Any], tree: Any, *rest: Any, is_leaf: Callable[[Any], bool] | None = None) -> Any:
    """Apply ``f`` leafwise.  Each tree in ``rest`` must have ``tree``'s structure as a prefix;
    ``f`` then gets, for each leaf of ``tree``, the corresponding subtree of each of ``rest``."""
    leaves, treedef = tree_flatten(tree, is_leaf)
    if not rest:
        return treedef._unflatten([f(x) for x in leaves])
    others = [treedef._flatten_up_to(r, f"tree_map argument {i + 2} vs the first tree") for i, r in enumerate(rest)]
    return treedef._unflatten(list(map(f, leaves, *others)))


def tree_map_with_path(
    f: Callable[..., Any],
    tree: Any,
    *rest: Any,
    is_leaf: Callable[..., bool] | None = None,
    is_leaf_takes_path: bool = False,
) -> Any:
    """Like ``tree_map`` but ``f(key_path, leaf, *others)``."""
    path_leaves, treedef = tree_flatten_with_path(tree, is_leaf, is_leaf_takes_path)
    others = [
        treedef._flatten_up_to(r, f"tree_map_with_path argument {i + 2} vs the first tree") for i, r in enumerate(rest)
    ]
    if not others:
        return treedef._unflatten([f(p, x) for p, x in path_leaves])
    return treedef._unflatten([f(p, x, *ys) for (p, x), *ys in zip(path_leaves, *others)])


def tree_all(tree: Any, *, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    return all(tree_leaves(tree, is_leaf))


_NO_INITIALIZER = object()


def tree_reduce(
    function: Callable[[Any, Any], Any],
    tree: Any,
    initializer: Any = _NO_INITIALIZER,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    if initializer is _NO_INITIALIZER:
        return functools.reduce(function, tree_leaves(tree, is_leaf))
    return functools.reduce(function, tree_leaves(tree, is_leaf), initializer)


def tree_transpose(outer_treedef: PyTreeDef, inner_treedef: PyTreeDef | None, pytree_to_transpose: Any) -> Any:
    """Turn an outer-structured tree of inner-structured trees into an inner tree of outer trees."""
    inners = outer_treedef._flatten_up_to(pytree_to_transpose, "tree_transpose (outer structure)")
    if inner_treedef is None:
        if not inners:
            raise ValueError("tree_transpose: inner_treedef is required when the outer structure has no leaves")
        inner_treedef = tree_structure(inners[0])
    rows = [inner_treedef._flatten_up_to(x, "tree_transpose (inner structure)") for x in inners]
    if not rows:
        cols: list = [[] for _ in range(inner_treedef.num_leaves)]
    else:
        cols = [list(c) for c in zip(*rows)]
    return inner_treedef._unflatten([outer_treedef._unflatten(c) for c in cols])


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def treedef_is_leaf(treedef: PyTreeDef) -> bool:
    """True for a one-entry structure: a leaf or ``None`` (as in JAX)."""
    return treedef.num_nodes == 1


def treedef_children(treedef: PyTreeDef) -> list[PyTreeDef]:
    return treedef.children()


def treedef_tuple(treedefs: Iterable[PyTreeDef]) -> PyTreeDef:
    """The structure of a tuple whose children have the given structures."""
    treedefs = list(treedefs)
    nodes: list = [(tuple, None, len(treedefs))]
    for td in treedefs:
        nodes.extend(td._nodes)
    return PyTreeDef(tuple(nodes), sum(td._num_leaves for td in treedefs))


def flatten_one_level(tree: Any) -> tuple[list[Any], Any]:
    """``(children, aux_data)`` of a node; ``ValueError`` for a leaf."""
    t = type(tree)
    kind = _cache.get(t) or _resolve(t)
    if kind is _LEAF_KIND:
        raise ValueError(f"can't tree-flatten type: {t!r}")
    children, aux = kind.flatten(tree)
    return list(children), aux


def all_leaves(iterable: Iterable[Any], is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """True if every element of ``iterable`` is a leaf."""
    get = _cache.get
    for x in iterable:
        if is_leaf is not None and is_leaf(x):
            continue
        if (get(type(x)) or _resolve(type(x))) is not _LEAF_KIND:
            return False
    return True


def broadcast_prefix(prefix_tree: Any, full_tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    """One prefix leaf per leaf of ``full_tree``: each leaf of ``prefix_tree`` is repeated for every
    leaf of the subtree of ``full_tree`` it covers (how ``vmap`` spreads ``in_axes``).  Use
    ``is_leaf=lambda x: x is None`` to let ``None`` be a prefix leaf."""
    prefix_leaves, prefix_def = tree_flatten(prefix_tree, is_leaf)
    subtrees = prefix_def._flatten_up_to(full_tree, "broadcast_prefix (prefix vs full tree)")
    out: list = []
    for leaf, sub in zip(prefix_leaves, subtrees):
        out.extend([leaf] * len(tree_leaves(sub)))
    return out


class Partial(functools.partial):
    """``functools.partial`` that is a pytree: the function is static, the arguments are children."""


register_pytree_node(
    Partial,
    lambda p: ((p.args, p.keywords), p.func),
    lambda func, children: Partial(func, *children[0], **children[1]),
)
