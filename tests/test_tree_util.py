"""Behaviour spec for engine.tree_util (JAX's jax.tree_util semantics)."""

from __future__ import annotations

import collections
import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import tree_util as tu
from engine.tree_util import (
    DictKey,
    FlattenedIndexKey,
    GetAttrKey,
    PyTreeDef,
    SequenceKey,
    keystr,
    tree_flatten,
    tree_flatten_with_path,
    tree_leaves,
    tree_map,
    tree_structure,
    tree_unflatten,
)

Point = collections.namedtuple("Point", ["x", "y"])


@tu.register_dataclass
@dataclasses.dataclass
class Params:
    w: Any
    b: Any
    name: str = dataclasses.field(default="p", metadata={"static": True})


@dataclasses.dataclass
class Unregistered:
    a: Any


@dataclasses.dataclass
class Explicit:
    a: Any
    b: Any
    tag: str


tu.register_dataclass(Explicit, data_fields=["a", "b"], meta_fields=["tag"])


@tu.register_pytree_node_class
class Box:
    """A custom node with two children and an aux string."""

    def __init__(self, left, right, label="box"):
        self.left, self.right, self.label = left, right, label

    def tree_flatten(self):
        return (self.left, self.right), self.label

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, label=aux)

    def __eq__(self, other):
        return (type(other) is Box and self.label == other.label
                and self.left == other.left and self.right == other.right)

    def __repr__(self):
        return f"Box({self.left!r}, {self.right!r}, {self.label!r})"


class Pair:
    def __init__(self, first, second):
        self.first, self.second = first, second

    def __eq__(self, other):
        return type(other) is Pair and (self.first, self.second) == (other.first, other.second)


tu.register_pytree_with_keys(
    Pair,
    lambda p: (((GetAttrKey("first"), p.first), (GetAttrKey("second"), p.second)), None),
    lambda aux, children: Pair(*children),
)


# --------------------------------------------------------------------------- basics


def test_leaves_and_flatten_order():
    tree = {"b": [1, (2, 3)], "a": 4, "c": None}
    leaves, treedef = tree_flatten(tree)
    assert leaves == [4, 1, 2, 3]  # dict keys sorted: a, b, c
    assert treedef.num_leaves == 4
    assert tree_unflatten(treedef, leaves) == tree
    assert tree_leaves(tree) == leaves


def test_scalar_and_unknown_objects_are_leaves():
    assert tree_leaves(5) == [5]
    assert tree_leaves("abc") == ["abc"]
    obj = object()
    assert tree_leaves(obj) == [obj]
    assert tree_structure(5) == tree_structure(obj)
    assert repr(tree_structure(5)) == "PyTreeDef(*)"


def test_none_is_an_empty_node_not_a_leaf():
    assert tree_leaves([None, 1]) == [1]
    assert tree_leaves(None) == []
    td = tree_structure(None)
    assert td.num_leaves == 0 and td.num_nodes == 1
    assert repr(td) == "PyTreeDef(None)"
    assert tree_unflatten(td, []) is None
    assert tree_map(lambda x: x + 1, [None, 1, {"a": None}]) == [None, 2, {"a": None}]
    assert tree_structure(None) != tree_structure(1)


def test_dict_keys_sorted_and_restored():
    d = {"z": 1, "a": 2, "m": 3}
    leaves, td = tree_flatten(d)
    assert leaves == [2, 3, 1]
    out = tree_unflatten(td, [10, 20, 30])
    assert out == {"a": 10, "m": 20, "z": 30}
    assert list(out) == ["a", "m", "z"]
    assert tree_structure({"a": 1, "b": 2}) == tree_structure({"b": 1, "a": 2})
    assert tree_structure({"a": 1}) != tree_structure({"b": 1})
    assert tree_leaves({1: "x", 0: "y"}) == ["y", "x"]


def test_unsortable_dict_keys_raise_clear_error():
    with pytest.raises(ValueError, match="sortable"):
        tree_flatten({1: 1, "a": 2})


def test_empty_containers():
    for tree, text in [([], "[]"), ((), "()"), ({}, "{}")]:
        leaves, td = tree_flatten(tree)
        assert leaves == []
        assert repr(td) == f"PyTreeDef({text})"
        assert tree_unflatten(td, []) == tree
        assert type(tree_unflatten(td, [])) is type(tree)
    assert tree_structure([]) != tree_structure(())
    assert tree_structure([]) != tree_structure({})


def test_tuple_vs_list_distinct_and_types_preserved():
    assert tree_structure((1, 2)) != tree_structure([1, 2])
    out = tree_map(lambda x: x * 2, ([1], (2,), {"k": [3]}))
    assert out == ([2], (4,), {"k": [6]})
    assert type(out[1]) is tuple and type(out[0]) is list


def test_namedtuple_node():
    p = Point(1, [2, 3])
    leaves, td = tree_flatten(p)
    assert leaves == [1, 2, 3]
    out = tree_unflatten(td, [4, 5, 6])
    assert type(out) is Point and out == Point(4, [5, 6])
    assert tree_structure(Point(1, 2)) != tree_structure((1, 2))
    assert repr(tree_structure(Point(1, 2))) == "PyTreeDef(CustomNode(namedtuple[Point], [*, *]))"


def test_ordered_dict_keeps_insertion_order():
    od = collections.OrderedDict([("b", 1), ("a", 2)])
    leaves, td = tree_flatten(od)
    assert leaves == [1, 2]
    out = tree_unflatten(td, [3, 4])
    assert type(out) is collections.OrderedDict and list(out.items()) == [("b", 3), ("a", 4)]
    assert td != tree_structure(collections.OrderedDict([("a", 1), ("b", 2)]))
    assert td != tree_structure({"b": 1, "a": 2})
    assert repr(td) == "PyTreeDef(CustomNode(OrderedDict[('b', 'a')], [*, *]))"


def test_defaultdict_node():
    dd = collections.defaultdict(list, {"b": 1, "a": 2})
    leaves, td = tree_flatten(dd)
    assert leaves == [2, 1]
    out = tree_unflatten(td, [5, 6])
    assert type(out) is collections.defaultdict and out.default_factory is list
    assert dict(out) == {"a": 5, "b": 6}
    assert td != tree_structure(collections.defaultdict(int, {"b": 1, "a": 2}))
    assert repr(td) == "PyTreeDef(CustomNode(defaultdict[(<class 'list'>, ('a', 'b'))], [*, *]))"


def test_subclasses_of_builtin_containers_are_leaves():
    class MyDict(dict):
        pass

    class MyList(list):
        pass

    assert tree_structure(MyDict(a=1)) == tree_structure(0)
    assert tree_structure(MyList([1])) == tree_structure(0)


# --------------------------------------------------------------------------- custom nodes


def test_register_dataclass_data_and_meta_fields():
    p = Params(w=[1, 2], b=3, name="layer")
    leaves, td = tree_flatten(p)
    assert leaves == [1, 2, 3]
    out = tree_unflatten(td, [4, 5, 6])
    assert out == Params(w=[4, 5], b=6, name="layer")
    # meta fields are part of the structure
    assert td != tree_structure(Params(w=[1, 2], b=3, name="other"))
    assert td == tree_structure(Params(w=[7, 8], b=9, name="layer"))
    assert repr(tree_structure(Params(1, 2, "x"))) == "PyTreeDef(CustomNode(Params[('x',)], [*, *]))"
    e = Explicit(a=1, b=(2,), tag="t")
    assert tree_leaves(e) == [1, 2]
    assert tree_map(lambda v: v * 10, e) == Explicit(a=10, b=(20,), tag="t")


def test_register_dataclass_default_all_fields_are_data():
    @tu.register_dataclass
    @dataclasses.dataclass
    class AllData:
        a: Any
        b: Any

    assert tree_leaves(AllData(1, 2)) == [1, 2]
    paths = [keystr(p) for p, _ in tree_flatten_with_path(AllData(1, 2))[0]]
    assert paths == [".a", ".b"]


def test_register_dataclass_as_decorator_with_fields():
    @tu.register_dataclass(data_fields=["x"], meta_fields=["n"])
    @dataclasses.dataclass
    class WithMeta:
        x: Any
        n: int

    assert tree_leaves(WithMeta(x=[1, 2], n=3)) == [1, 2]
    assert tree_structure(WithMeta(1, 3)) != tree_structure(WithMeta(1, 4))


def test_register_dataclass_validates_fields():
    @dataclasses.dataclass
    class Bad:
        a: Any
        b: Any

    with pytest.raises(ValueError, match="missing"):
        tu.register_dataclass(Bad, data_fields=["a"], meta_fields=[])
    with pytest.raises(TypeError):
        tu.register_dataclass(type("NotDC", (), {}))


def test_unregistered_dataclass_is_leaf():
    u = Unregistered(a=[1, 2])
    assert tree_leaves(u) == [u]


def test_register_pytree_node_class():
    b = Box([1, 2], {"k": 3}, label="L")
    leaves, td = tree_flatten(b)
    assert leaves == [1, 2, 3]
    assert tree_unflatten(td, [4, 5, 6]) == Box([4, 5], {"k": 6}, label="L")
    assert td != tree_structure(Box([1, 2], {"k": 3}, label="M"))
    assert repr(tree_structure(Box(1, 2, "hi"))) == "PyTreeDef(CustomNode(Box[hi], [*, *]))"
    paths = [keystr(p) for p, _ in tree_flatten_with_path(Box(1, 2))[0]]
    assert paths == ["[<flat index 0>]", "[<flat index 1>]"]


def test_register_pytree_node_functions_and_children_tuple():
    class Holder:
        def __init__(self, items):
            self.items = items

    seen = []

    def unflatten(aux, children):
        seen.append(type(children))
        return Holder(list(children))

    tu.register_pytree_node(Holder, lambda h: (h.items, len(h.items)), unflatten)
    out = tree_map(lambda x: -x, Holder([1, 2]))
    assert isinstance(out, Holder) and out.items == [-1, -2]
    assert seen == [tuple]


def test_register_pytree_with_keys_paths():
    items = tu.tree_leaves_with_path({"p": Pair(1, [2])})
    assert [(keystr(p), v) for p, v in items] == [("['p'].first", 1), ("['p'].second[0]", 2)]
    assert tree_map(lambda x: x + 1, Pair(1, 2)) == Pair(2, 3)


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match="Duplicate"):
        tu.register_pytree_node(Box, lambda b: ((), None), lambda a, c: None)
    with pytest.raises(ValueError, match="Duplicate"):
        tu.register_pytree_node(dict, lambda b: ((), None), lambda a, c: None)


def test_partial_is_a_pytree():
    def f(a, b, c=0):
        return a + b + c

    p = tu.Partial(f, 1, c=3)
    assert tree_leaves(p) == [1, 3]
    q = tree_map(lambda x: x * 10, p)
    assert isinstance(q, tu.Partial) and q(2) == 10 + 2 + 30


# --------------------------------------------------------------------------- PyTreeDef


def test_treedef_equality_and_hash():
    a = tree_structure({"W": [1, 2], "b": (3, None)})
    b = tree_structure({"b": ("x", None), "W": ["y", "z"]})
    c = tree_structure({"W": [1, 2], "b": (3, 4)})
    assert isinstance(a, PyTreeDef)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert a != 3 and not (a == "PyTreeDef")


def test_treedef_hash_with_unhashable_aux():
    class Node:
        def __init__(self, v, meta):
            self.v, self.meta = v, meta

    tu.register_pytree_node(Node, lambda n: ((n.v,), n.meta), lambda m, c: Node(c[0], m))
    a = tree_structure(Node(1, [1, 2]))
    b = tree_structure(Node(2, [1, 2]))
    assert a == b and hash(a) == hash(b)
    assert a != tree_structure(Node(1, [3]))


def test_treedef_repr():
    assert repr(tree_structure({"W": 1, "b": 2})) == "PyTreeDef({'W': *, 'b': *})"
    assert repr(tree_structure((1, [2, 3], None))) == "PyTreeDef((*, [*, *], None))"
    assert repr(tree_structure((1,))) == "PyTreeDef((*,))"
    assert repr(tree_structure({"a": {"b": [1, (2,)]}})) == "PyTreeDef({'a': {'b': [*, (*,)]}})"


def test_treedef_counts_and_children():
    td = tree_structure({"a": (1, 2), "b": None, "c": [3]})
    assert td.num_leaves == 3
    assert td.num_nodes == 7  # dict, tuple, 2 leaves, None, list, 1 leaf (JAX's count)
    assert td.children() == [tree_structure((0, 0)), tree_structure(None), tree_structure([0])]
    assert tu.treedef_children(td) == td.children()
    assert tree_structure(1).children() == []
    assert tu.treedef_is_leaf(tree_structure(1))
    assert tu.treedef_is_leaf(tree_structure(None))
    assert not tu.treedef_is_leaf(tree_structure([1]))
    assert td.node_data() == (dict, ("a", "b", "c"))
    assert tree_structure(1).node_data() is None


def test_treedef_tuple():
    td = tu.treedef_tuple([tree_structure([1, 2]), tree_structure(None), tree_structure(1)])
    assert td == tree_structure(([0, 0], None, 0))


def test_unflatten_wrong_number_of_leaves():
    td = tree_structure({"a": 1, "b": [2, 3]})
    with pytest.raises(ValueError, match="expected 3, got 2"):
        td.unflatten([1, 2])
    with pytest.raises(ValueError, match="expected 3, got 4"):
        tree_unflatten(td, [1, 2, 3, 4])
    assert td.unflatten(iter([1, 2, 3])) == {"a": 1, "b": [2, 3]}


def test_treedef_pickle_round_trip():
    td = tree_structure({"a": [1, Point(2, 3)], "b": None})
    td2 = pickle.loads(pickle.dumps(td))
    assert td2 == td and hash(td2) == hash(td)
    assert td2.unflatten([1, 2, 3]) == {"a": [1, Point(2, 3)], "b": None}


def test_flatten_up_to():
    td = tree_structure({"a": 0, "b": [0, 0]})
    assert td.flatten_up_to({"a": (1, 2), "b": [3, {"x": 4}]}) == [(1, 2), 3, {"x": 4}]
    with pytest.raises(ValueError, match=r"\['b'\]"):
        td.flatten_up_to({"a": 1, "b": [1]})


# --------------------------------------------------------------------------- tree_map


def test_tree_map_multiple_trees():
    a = {"x": [1, 2], "y": 3}
    b = {"x": [10, 20], "y": 30}
    assert tree_map(lambda u, v: u + v, a, b) == {"x": [11, 22], "y": 33}
    assert tree_map(lambda u, v, w: u + v + w, a, b, b) == {"x": [21, 42], "y": 63}


def test_tree_map_prefix_semantics():
    # the first tree's leaves may cover whole subtrees of the other trees
    out = tree_map(lambda a, b: (a, b), {"a": 1, "b": 2}, {"a": [1, 2], "b": {"q": 3}})
    assert out == {"a": (1, [1, 2]), "b": (2, {"q": 3})}


def test_tree_map_mismatch_names_path():
    with pytest.raises(ValueError, match=r"at \['a'\].*list of 2 children.*list of 3 children"):
        tree_map(lambda a, b: a, {"a": [1, 2], "b": 2}, {"a": [1, 2, 3], "b": 2})
    with pytest.raises(ValueError, match=r"at \['a'\].*missing keys: \['x'\].*unexpected keys: \['y'\]"):
        tree_map(lambda a, b: a, {"a": {"x": 1}}, {"a": {"y": 1}})
    with pytest.raises(ValueError, match=r"at the root.*dict.*list"):
        tree_map(lambda a, b: a, {"a": 1, "b": 2}, [1, 2])
    with pytest.raises(ValueError, match=r"at \[1\]\[0\]: expected None, got a leaf of type int"):
        tree_map(lambda a, b: a, [0, [None]], [0, [5]])
    with pytest.raises(ValueError, match=r"argument 3"):
        tree_map(lambda a, b, c: a, [1], [1], (1,))
    with pytest.raises(ValueError, match=r"at \['p'\]\.b"):
        tree_map(lambda a, b: a, {"p": Params(1, [1])}, {"p": Params(1, [1, 2])})
    with pytest.raises(ValueError, match=r"Params"):
        tree_map(lambda a, b: a, Params(1, 2, "u"), Params(1, 2, "v"))


def test_tree_map_is_leaf():
    tree = {"a": [1, 2], "b": [3]}
    out = tree_map(lambda x: len(x), tree, is_leaf=lambda x: isinstance(x, list))
    assert out == {"a": 2, "b": 1}
    assert tree_map(lambda x: "none" if x is None else x, [None, 1], is_leaf=lambda x: x is None) == ["none", 1]
    assert tree_leaves([None, 1], is_leaf=lambda x: x is None) == [None, 1]
    # is_leaf applies to the root too
    assert tree_flatten([1, [2]], is_leaf=lambda x: True)[0] == [[1, [2]]]


def test_tree_all_and_reduce():
    assert tu.tree_all([True, {"a": 1}])
    assert not tu.tree_all([True, (0,)])
    assert tu.tree_all([])
    assert tu.tree_all([None])
    assert tu.tree_reduce(lambda a, b: a + b, {"a": 1, "b": [2, 3]}) == 6
    assert tu.tree_reduce(lambda a, b: a + b, [1, 2], 10) == 13
    with pytest.raises(TypeError):
        tu.tree_reduce(lambda a, b: a + b, [])
    assert tu.tree_reduce(lambda a, b: a + b, [[1], [2]], [], is_leaf=lambda x: isinstance(x, list)
                          and not any(isinstance(y, list) for y in x)) == [1, 2]


def test_tree_transpose():
    outer = tree_structure([0, 0])
    inner = tree_structure((0, 0))
    assert tu.tree_transpose(outer, inner, [(1, 2), (3, 4)]) == ([1, 3], [2, 4])
    assert tu.tree_transpose(outer, None, [{"a": 1}, {"a": 2}]) == {"a": [1, 2]}


def test_broadcast_prefix_and_helpers():
    assert tu.broadcast_prefix((0, None), ([1, 2], {"a": 3}), is_leaf=lambda x: x is None) == [0, 0, None]
    assert tu.flatten_one_level({"b": 1, "a": 2}) == ([2, 1], ("a", "b"))
    with pytest.raises(ValueError):
        tu.flatten_one_level(3)
    assert tu.all_leaves([1, "x"]) and not tu.all_leaves([1, [2]]) and not tu.all_leaves([None])


# --------------------------------------------------------------------------- key paths


def test_key_entries():
    assert str(DictKey("W")) == "['W']" and repr(DictKey("W")) == "DictKey(key='W')"
    assert str(SequenceKey(0)) == "[0]" and repr(SequenceKey(0)) == "SequenceKey(idx=0)"
    assert str(GetAttrKey("x")) == ".x" and repr(GetAttrKey("x")) == "GetAttrKey(name='x')"
    assert str(FlattenedIndexKey(3)) == "[<flat index 3>]"
    assert DictKey("a") == DictKey("a") and DictKey("a") != DictKey("b")
    assert DictKey(0) != SequenceKey(0)
    assert len({DictKey("a"), DictKey("a"), SequenceKey(1)}) == 2
    assert DictKey("k").key == "k" and SequenceKey(2).idx == 2 and GetAttrKey("n").name == "n"


def test_keystr():
    path = (DictKey("W"), SequenceKey(0), GetAttrKey("x"), FlattenedIndexKey(3))
    assert keystr(path) == "['W'][0].x[<flat index 3>]"
    assert keystr(path, simple=True, separator="/") == "W/0/x/3"
    assert keystr(()) == ""


def test_flatten_with_path():
    tree = {"W": [1, (2,)], "b": Point(3, 4), "n": None, "p": Params(5, 6)}
    path_leaves, td = tree_flatten_with_path(tree)
    assert [keystr(p) for p, _ in path_leaves] == [
        "['W'][0]", "['W'][1][0]", "['b'].x", "['b'].y", "['p'].w", "['p'].b"]
    assert [v for _, v in path_leaves] == tree_leaves(tree)
    assert td == tree_structure(tree)
    assert path_leaves[0][0] == (DictKey("W"), SequenceKey(0))
    assert tu.tree_leaves_with_path(tree) == path_leaves
    od = collections.OrderedDict([("z", 1), ("a", 2)])
    assert [keystr(p) for p, _ in tu.tree_leaves_with_path(od)] == ["['z']", "['a']"]


def test_flatten_with_path_is_leaf_takes_path():
    tree = {"a": [1, 2], "b": [3]}
    leaves = tu.tree_leaves_with_path(tree, is_leaf=lambda p, x: p == (DictKey("a"),), is_leaf_takes_path=True)
    assert [(keystr(p), v) for p, v in leaves] == [("['a']", [1, 2]), ("['b'][0]", 3)]


def test_tree_map_with_path():
    tree = {"a": [1, 2], "b": {"c": 3}}
    out = tu.tree_map_with_path(lambda p, x: keystr(p), tree)
    assert out == {"a": ["['a'][0]", "['a'][1]"], "b": {"c": "['b']['c']"}}
    out2 = tu.tree_map_with_path(lambda p, x, y: (keystr(p), x + y), tree, tree)
    assert out2["b"]["c"] == ("['b']['c']", 6)
    with pytest.raises(ValueError, match=r"\['b'\]"):
        tu.tree_map_with_path(lambda p, x, y: x, tree, {"a": [1, 2], "b": [3]})


# --------------------------------------------------------------------------- describe_mismatch


def test_describe_mismatch():
    a = tree_structure({"W": {"a": 1, "b": 2}, "c": 0})
    b = tree_structure({"W": [1, 2], "c": 0})
    assert tu.describe_mismatch(a, b) == "at ['W']: a dict with keys ['a', 'b'] vs a list of 2 children"
    msg = tu.describe_mismatch(a, tree_structure({"W": {"a": 1, "z": 2}, "c": 0}))
    assert msg.startswith("at ['W']: a dict with keys ['a', 'b'] vs a dict with keys ['a', 'z']")
    assert "['b']" in msg and "['z']" in msg
    assert tu.describe_mismatch(tree_structure([1, [2]]), tree_structure([1, [2, 3]])) == (
        "at [1]: a list of 1 child vs a list of 2 children")
    assert tu.describe_mismatch(tree_structure((1, 2)), tree_structure((1, [2]))) == (
        "at [1]: a leaf vs a list of 1 child")
    assert tu.describe_mismatch(tree_structure(1), tree_structure(None)) == "at the root: a leaf vs None"
    assert "Point" in tu.describe_mismatch(tree_structure(Point(1, 2)), tree_structure((1, 2)))
    assert tu.describe_mismatch(tree_structure(Point(1, (2,))), tree_structure(Point(1, [2]))).startswith("at .y:")
    assert "equal" in tu.describe_mismatch(a, a)


# --------------------------------------------------------------------------- robustness


def test_deep_nesting_does_not_hit_recursion_limit():
    depth = 3000  # well past sys.getrecursionlimit()
    tree: Any = 1
    for i in range(depth):
        tree = [tree] if i % 3 else {"k": (tree,)}
    leaves, td = tree_flatten(tree)
    assert leaves == [1]
    assert td == tree_structure(tree) and hash(td) == hash(tree_structure(tree))
    assert repr(td).startswith("PyTreeDef(")
    rebuilt = tree_unflatten(td, [2])
    assert tree_leaves(rebuilt) == [2]
    assert tree_structure(rebuilt) == td
    assert tree_leaves(tree_map(lambda a, b: a + b, tree, rebuilt)) == [3]
    (path, leaf), = tree_flatten_with_path(tree)[0]
    assert leaf == 1 and len(path) > depth
    assert td.children()[0].num_nodes == td.num_nodes - 1


def test_leaves_identity_preserved():
    obj = object()
    leaves, td = tree_flatten({"a": [obj]})
    assert leaves[0] is obj
    assert tree_unflatten(td, [obj])["a"][0] is obj


# --------------------------------------------------------------------------- hypothesis round trips

_leaf = st.one_of(st.integers(), st.text(max_size=3), st.floats(allow_nan=False), st.just(object()))
_key = st.text(max_size=4)


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(_key, children, max_size=4),
        st.tuples(children, children).map(lambda t: Point(*t)),
        st.tuples(children, children, st.sampled_from(["p", "q"])).map(lambda t: Params(*t)),
        st.tuples(children, children, st.sampled_from(["l1", "l2"])).map(lambda t: Box(*t)),
        st.tuples(children, children).map(lambda t: Pair(*t)),
        st.lists(st.tuples(_key, children), max_size=3).map(collections.OrderedDict),
        st.just(None),
    )


trees = st.recursive(_leaf, _extend, max_leaves=25)


def _get(tree, key):
    if type(key) is DictKey:
        return tree[key.key]
    if type(key) is SequenceKey:
        return tree[key.idx]
    if type(key) is GetAttrKey:
        return getattr(tree, key.name)
    if type(key) is FlattenedIndexKey:
        return tu.flatten_one_level(tree)[0][key.key]
    raise AssertionError(key)


class _Both:
    def __init__(self, x, y):
        self.x, self.y = x, y


def _same(a, b):
    """Structural equality that also checks container types (== alone treats Point == tuple)."""
    ok = tree_structure(a) == tree_structure(b)
    la, lb = tree_leaves(a), tree_leaves(b)
    return ok and len(la) == len(lb) and all(x is y or x == y for x, y in zip(la, lb))


@settings(max_examples=300, deadline=None)
@given(trees)
def test_hypothesis_round_trip(tree):
    leaves, td = tree_flatten(tree)
    assert td.num_leaves == len(leaves)
    rebuilt = tree_unflatten(td, leaves)
    assert _same(rebuilt, tree)
    assert tree_structure(rebuilt) == td and hash(tree_structure(rebuilt)) == hash(td)
    assert tree_leaves(tree) == leaves or all(x is y for x, y in zip(tree_leaves(tree), leaves))
    # mapping with a fresh leaf list keeps the structure
    assert tree_structure(tree_map(lambda x: 0, tree)) == td
    pairs = tree_leaves(tree_map(lambda x, y: _Both(x, y), tree, tree))
    assert len(pairs) == len(leaves) and all(p.x is p.y for p in pairs)
    # paths lead to their leaves and agree with plain flatten
    path_leaves, td2 = tree_flatten_with_path(tree)
    assert td2 == td
    for path, leaf in path_leaves:
        node = tree
        for key in path:
            node = _get(node, key)
        assert node is leaf
    # children of the root recombine into the root's counts
    kids = td.children()
    if td.num_nodes > 1:
        assert sum(k.num_leaves for k in kids) == td.num_leaves
        assert sum(k.num_nodes for k in kids) + 1 == td.num_nodes
    else:
        assert kids == []
    assert "equal" in tu.describe_mismatch(td, td)
    assert isinstance(repr(td), str)


@settings(max_examples=200, deadline=None)
@given(trees, trees)
def test_hypothesis_structure_equality_matches_mismatch(a, b):
    ta, tb = tree_structure(a), tree_structure(b)
    if ta == tb:
        assert hash(ta) == hash(tb)
        assert "equal" in tu.describe_mismatch(ta, tb)
        assert tree_structure(tree_map(lambda x, y: y, a, b)) == ta
    else:
        assert tu.describe_mismatch(ta, tb).startswith("at ")
