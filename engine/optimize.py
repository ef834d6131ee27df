"""Optimisation passes over graphs: constant folding, algebraic simplification, common-
subexpression elimination and dead-code elimination.

Differentiation produces many multiplications by one, additions of zero, and repeats of the same
subexpression (the n-th derivative of tanh recomputes tanh and its powers over and over); these
passes take the graph of the n-th derivative from exponential to polynomial size in n.

What a pass may assume about a primitive comes from its record (`Primitive.algebra`, declared
with it in engine/primitives.py): commutativity, identity elements and identities, involutions,
how two nested applications compose, and its part in ring arithmetic.
"""

from __future__ import annotations

import contextlib
import gc
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.core import Eqn, Graph, Literal, Tracer, Var, check_deadline
from engine.limits import DEFAULT_LIMITS
from engine.primitive import Primitive
from engine.primitives import add_p, broadcast_p, integer_pow_p, mul_p, neg_p, sub_p

# Folding a constant expression must not materialise something huge (e.g. broadcast_to a
# scalar to a large shape): fold only results up to this many elements.
MAX_FOLDED_ELEMENTS = 1 << 16


def optimize(graph: Graph, *, max_rounds: int = 8) -> Graph:
    """The graph with every pass applied until nothing changes (a new graph; the input is kept).

    Canonical sums (and distributing monomials over them) shrink repeated derivatives of one
    function (tanh's n-th derivative) but can grow long chains (a 200-step recurrence); the
    passes run without canonical sums, with them, and with distribution, and the smallest graph
    wins (the simpler strategy on a tie).
    """
    with _collector_paused():
        g = _run_passes(graph, max_rounds, canonical=False)
        for distribute in (False, True):
            # A strategy that grows the graph past twice the best so far is abandoned midway.
            candidate = _run_passes(graph, max_rounds, distribute=distribute, max_eqns=2 * len(g.eqns) + 64)
            if candidate is not None and len(candidate.eqns) < len(g.eqns):
                g = candidate
    g.in_tree, g.out_tree = graph.in_tree, graph.out_tree
    return g


_pause_lock = threading.Lock()
_pauses = [0, False]  # optimisations running, whether the collector was enabled before the first


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while passes run (shared by concurrent threads).

    Each pass rebuilds every equation, so a long graph's optimisation makes millions of objects
    that die a round later; the collector's full collections then scan the whole heap again and
    again, which made a 5,000-node gradient quadratic (minutes). The passes create no reference
    cycles: reference counting frees their garbage, and the collector resumes afterwards.
    """
    with _pause_lock:
        if _pauses[0] == 0:
            _pauses[1] = gc.isenabled()
            gc.disable()
        _pauses[0] += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses[0] -= 1
            if _pauses[0] == 0 and _pauses[1]:
                gc.enable()


def _run_passes(graph: Graph, max_rounds: int, distribute: bool = False, canonical: bool = True,
                max_eqns: int | None = None) -> Graph | None:
    g = Graph(list(graph.invars), list(graph.constvars), list(graph.consts), list(graph.eqns),
              list(graph.outvars))
    for _ in range(max_rounds):
        check_deadline()  # within engine.core.deadline (a service request), stop when time is up
        before = (len(g.eqns), len(g.constvars))
        g = simplify(fold_constants(g))
        if canonical:
            try:
                g = canonicalize_arithmetic(g, distribute=distribute, max_eqns=max_eqns)
            except _TooLarge:
                return None
        g = eliminate_dead_code(eliminate_common_subexpressions(g))
        if (len(g.eqns), len(g.constvars)) == before:
            break
    return g


def _substitute(atom: Any, subst: dict[Var, Any]) -> Any:
    while isinstance(atom, Var) and atom in subst:
        atom = subst[atom]
    return atom


def _rebuild(graph: Graph, eqns: list[Eqn], subst: dict[Var, Any],
             constvars: list[Var] | None = None, consts: list[Any] | None = None) -> Graph:
    new_eqns = [Eqn(e.prim, [_substitute(a, subst) for a in e.inputs], e.outputs, e.attrs) for e in eqns]
    outvars = [_substitute(a, subst) for a in graph.outvars]
    return Graph(graph.invars, graph.constvars if constvars is None else constvars,
                 graph.consts if consts is None else consts, new_eqns, outvars)


# ----------------------------------------------------------------------------- dead code


def eliminate_dead_code(graph: Graph) -> Graph:
    live: set[Var] = {a for a in graph.outvars if isinstance(a, Var)}
    kept: list[Eqn] = []
    for eqn in reversed(graph.eqns):
        if any(v in live for v in eqn.outputs):
            kept.append(eqn)
            live.update(a for a in eqn.inputs if isinstance(a, Var))
    kept.reverse()
    pairs = [(v, c) for v, c in zip(graph.constvars, graph.consts) if v in live]
    return Graph(graph.invars, [v for v, _ in pairs], [c for _, c in pairs], kept, list(graph.outvars))


# ----------------------------------------------------------------------------- CSE


def _atom_key(atom: Any) -> Any:
    if isinstance(atom, Literal):
        value = np.asarray(atom.value)
        return ("lit", value.dtype.str, value.tobytes())
    return atom


def _attrs_key(attrs: dict[str, Any]) -> Any:
    try:
        key = tuple(sorted(attrs.items()))
        hash(key)
        return key
    except TypeError:
        return None  # unhashable attributes: never merged


def _order_key(key: Any) -> tuple:
    """A total order on operand keys (variables by creation, then literals), cheap to compute."""
    return (0, key.count, ()) if isinstance(key, Var) else (1, 0, key)


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    seen: dict[Any, list[Var]] = {}
    subst: dict[Var, Any] = {}
    kept: list[Eqn] = []
    # Identical constants bound twice become one.
    const_seen: dict[Any, Var] = {}
    for v, c in zip(graph.constvars, graph.consts):
        if isinstance(c, np.ndarray) and c.size <= MAX_FOLDED_ELEMENTS:
            key = (c.dtype.str, c.shape, c.tobytes())
            if key in const_seen:
                subst[v] = const_seen[key]
            else:
                const_seen[key] = v
    for eqn in graph.eqns:
        inputs = [_substitute(a, subst) for a in eqn.inputs]
        attrs_key = _attrs_key(eqn.attrs)
        if attrs_key is None:
            kept.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
            continue
        operand_keys = tuple(_atom_key(a) for a in inputs)
        if eqn.prim.algebra.commutative:
            operand_keys = tuple(sorted(operand_keys, key=_order_key))  # x * y and y * x are one node
        key = (eqn.prim, operand_keys, attrs_key)
        previous = seen.get(key)
        if previous is not None:
            for old, new in zip(eqn.outputs, previous):
                subst[old] = new
            continue
        seen[key] = eqn.outputs
        kept.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
    return _rebuild(graph, kept, subst)


# ----------------------------------------------------------------------------- constant folding


def fold_constants(graph: Graph) -> Graph:
    """Evaluate equations whose inputs are all known constants."""
    values: dict[Var, np.ndarray] = {
        v: c for v, c in zip(graph.constvars, graph.consts) if not isinstance(c, Tracer)
    }
    subst: dict[Var, Any] = {}
    kept: list[Eqn] = []
    constvars = list(graph.constvars)
    consts = list(graph.consts)

    def const_value(atom: Any) -> Any:
        if isinstance(atom, Literal):
            return atom.value
        return values.get(atom)

    for eqn in graph.eqns:
        inputs = [_substitute(a, subst) for a in eqn.inputs]
        raw = [const_value(a) for a in inputs]
        foldable = (
            all(r is not None for r in raw)
            and not eqn.prim.multiple_results
            and not eqn.prim.python_code
            and eqn.outputs[0].aval.size <= MAX_FOLDED_ELEMENTS
        )
        if foldable:
            with np.errstate(all="ignore"):
                # C order: a folded view (e.g. a transpose) would make matmul round differently
                # from the same graph read back from JSON
                result = np.asarray(eqn.prim.impl(*raw, **eqn.attrs), order="C")
            out = eqn.outputs[0]
            if result.ndim == 0:
                subst[out] = Literal(result.astype(out.aval.dtype)[()])
            else:
                values[out] = result
                constvars.append(out)
                consts.append(result)
            continue
        kept.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
    return _rebuild(graph, kept, subst, constvars, consts)


# ----------------------------------------------------------------------------- simplification


def _literal_equals(atom: Any, number: float) -> bool:
    if not isinstance(atom, Literal):
        return False
    value = np.asarray(atom.value)
    return value.ndim == 0 and value.item() == number


def _same_type(atom: Any, out: Var) -> bool:
    return atom.aval.shape == out.aval.shape and atom.aval.dtype == out.aval.dtype


def _identity_operand(eqn: Eqn, inputs: list[Any]) -> Any:
    """The operand this equation merely passes through, if it is an identity; else None."""
    algebra = eqn.prim.algebra
    out = eqn.outputs[0]
    if algebra.left_identity is not None and _literal_equals(inputs[0], algebra.left_identity) \
            and _same_type(inputs[1], out):
        return inputs[1]
    if algebra.right_identity is not None and _literal_equals(inputs[1], algebra.right_identity) \
            and _same_type(inputs[0], out):
        return inputs[0]
    if algebra.identity is not None and algebra.identity(inputs, out, eqn.attrs):
        return inputs[0]
    return None


def simplify(graph: Graph) -> Graph:
    subst: dict[Var, Any] = {}
    producers: dict[Var, Eqn] = {}
    kept: list[Eqn] = []
    for eqn in graph.eqns:
        inputs = [_substitute(a, subst) for a in eqn.inputs]
        if not eqn.prim.multiple_results:
            passthrough = _identity_operand(eqn, inputs)
            if passthrough is not None:
                subst[eqn.outputs[0]] = passthrough
                continue
            # p(p(x)) -> x for an involution (neg); p(p(x, a), b) -> p(x, compose(a, b))
            first = inputs[0] if inputs else None
            inner = producers.get(first) if isinstance(first, Var) else None
            if inner is not None and inner.prim is eqn.prim and eqn.prim.algebra.involution:
                subst[eqn.outputs[0]] = inner.inputs[0]
                continue
            if inner is not None and inner.prim is eqn.prim and eqn.prim.algebra.compose is not None:
                inputs = [inner.inputs[0]]
                composed = Eqn(eqn.prim, inputs, eqn.outputs, eqn.prim.algebra.compose(inner.attrs, eqn.attrs))
                if _identity_operand(composed, inputs) is not None:
                    subst[eqn.outputs[0]] = inner.inputs[0]
                    continue
                producers[eqn.outputs[0]] = composed
                kept.append(composed)
                continue
        new = Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs)
        for v in eqn.outputs:
            producers[v] = new
        kept.append(new)
    return _rebuild(graph, kept, subst)


# ----------------------------------------------------------------------------- canonical sums and products

# Distributing monomials over sums can double a form's terms at every step (the gradient of a
# chain like `a = sin(a) * cos(a) + a`): a longer form is emitted as it was written instead.
MAX_FORM_TERMS = 24
# Forms are bounded the same way, so that rewriting stays linear in the graph's size: a product
# along a chain (the gradient of sin(sin(...(x)))) would otherwise carry a monomial as long as the
# chain, and squaring along a chain (x*x, then that times itself, ...) exponents of 2**n.
# Powers stay within the default integer_pow limit, so an optimised graph can be sent as JSON.
MAX_MONOMIAL_FACTORS = 16
MAX_MONOMIAL_POWER = DEFAULT_LIMITS.max_integer_power

# A polynomial form: (constant, {monomial: coefficient}); a monomial is a sorted tuple of
# (atom, power) pairs, where an atom is a variable of the rewritten graph.
Form = tuple[float, dict[tuple, float]]


def _atom_form(atom: Any) -> Form:
    return 0.0, {((atom, 1),): 1.0}


def _scale(form: Form, c: float) -> Form:
    const, terms = form
    return const * c, {m: k * c for m, k in terms.items()}


# Terms that cancel keep their monomial with coefficient 0: it is emitted as `monomial * 0`, which
# is 0 for a finite monomial and NaN for an infinite or NaN one, so the rewritten graph gives what
# evaluating the expression as written gives (x - x is NaN for x = inf, not 0).


def _sum(a: Form, b: Form, sign: float = 1.0) -> Form:
    terms = dict(a[1])
    for m, k in b[1].items():
        terms[m] = terms.get(m, 0.0) + sign * k
    return a[0] + sign * b[0], terms


def _monomial_product(m1: tuple, m2: tuple) -> tuple:
    powers: dict[Any, int] = {}
    for atom, p in m1 + m2:
        powers[atom] = powers.get(atom, 0) + p
    return tuple(sorted(powers.items(), key=lambda item: item[0].count))


def _distribute(mono: tuple, coeff: float, form: Form) -> Form:
    const, terms = form
    out: dict[tuple, float] = {}
    if const:
        out[mono] = coeff * const
    for m, k in terms.items():
        key = _monomial_product(mono, m)
        out[key] = out.get(key, 0.0) + coeff * k
    return 0.0, out


def _bounded(form: Form, dtype: np.dtype) -> bool:
    """Whether a form is small enough to keep as a form (see MAX_FORM_TERMS and below it)."""
    const, terms = form
    if len(terms) > MAX_FORM_TERMS:
        return False
    largest = float(np.finfo(dtype).max)  # a coefficient the dtype cannot hold would change results
    if not all(abs(c) <= largest for c in (const, *terms.values())):  # False for NaN too
        return False
    return all(len(m) <= MAX_MONOMIAL_FACTORS and all(p <= MAX_MONOMIAL_POWER for _, p in m) for m in terms)


class _Canonicalizer:
    """Rewrites chains of +, -, *, negation and integer powers into canonical sums of
    monomials, so equal expressions built in different orders become one node.

    Products of sums are never expanded (a sum used as a factor stays a single atom), so values
    are computed in the same factored way as before and no cancellation is introduced.
    """

    def __init__(self, graph: Graph, distribute: bool = True, max_eqns: int | None = None) -> None:
        self.graph = graph
        self.distribute = distribute
        self.max_eqns = max_eqns
        self.eqns: list[Eqn] = []
        self.subst: dict[Var, Any] = {}
        self.forms: dict[Var, Form] = {}
        self.avals: dict[Var, Any] = {}
        self.cache: dict[Any, Any] = {}
        self.sticky: dict[Var, tuple[float, Any]] = {}
        self.sum_atoms: dict[Any, Any] = {}

    def _emit(self, prim: Primitive, inputs: list[Any], aval: Any, attrs: dict[str, Any]) -> Var:
        key = (prim, tuple(_atom_key(a) for a in inputs), tuple(sorted(attrs.items())))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        out = Var(aval)
        self.eqns.append(Eqn(prim, inputs, [out], attrs))
        self.cache[key] = out
        if self.max_eqns is not None and len(self.eqns) > self.max_eqns:
            raise _TooLarge
        return out

    def _literal(self, value: float, dtype: np.dtype) -> Literal:
        return Literal(np.asarray(value, dtype=dtype)[()])

    def materialize(self, var: Var) -> Any:
        """The rewritten graph's atom holding var's value."""
        if var in self.subst:
            return self.subst[var]
        form = self.forms[var]
        aval = self.avals[var]
        atom = self._emit_form(form, aval)
        self.subst[var] = atom
        return atom

    def _emit_monomial(self, mono: tuple, aval: Any) -> Any:
        acc = None
        for atom, power in mono:
            factor = atom if power == 1 else self._emit(integer_pow_p, [atom], aval, {"y": power})
            acc = factor if acc is None else self._emit(mul_p, [acc, factor], aval, {})
        return acc

    def _emit_form(self, form: Form, aval: Any) -> Any:
        const, terms = form
        dtype = aval.dtype
        acc = None
        for mono in sorted(terms, key=lambda m: tuple((a.count, p) for a, p in m)):
            coeff = terms[mono]
            term = self._emit_monomial(mono, aval)
            if acc is None:
                if coeff == -1.0:
                    term = self._emit(neg_p, [term], aval, {})
                elif coeff != 1.0:
                    term = self._emit(mul_p, [term, self._literal(coeff, dtype)], aval, {})
                acc = term
            elif coeff == 1.0:
                acc = self._emit(add_p, [acc, term], aval, {})
            elif coeff == -1.0:
                acc = self._emit(sub_p, [acc, term], aval, {})
            else:
                scaled = self._emit(mul_p, [term, self._literal(coeff, dtype)], aval, {})
                acc = self._emit(add_p, [acc, scaled], aval, {})
        if acc is None:
            lit = self._literal(const, dtype)
            return lit if aval.shape == () else self._emit(broadcast_p, [lit], aval, {"shape": aval.shape})
        if const != 0.0:
            if len(terms) == 1 and next(iter(terms.values())) == -1.0:  # c - m, not c + (-m)
                plain = self._emit_monomial(next(iter(terms)), aval)
                return self._emit(sub_p, [self._literal(const, dtype), plain], aval, {})
            acc = self._emit(add_p, [acc, self._literal(const, dtype)], aval, {})
        return acc

    def _form_of(self, atom: Any) -> Form | None:
        if isinstance(atom, Literal):
            value = np.asarray(atom.value)
            return (float(value), {}) if value.ndim == 0 else None
        # Once a sum has been given a node of its own (because it is a factor of a product), it
        # stays that node: later sums use it as a whole rather than re-merging its terms, which
        # keeps expressions factored as differentiation wrote them (no new cancellation).
        if atom in self.sticky:
            scale, node = self.sticky[atom]
            return 0.0, {((node, 1),): scale}
        if atom in self.forms:
            return self.forms[atom]
        return _atom_form(atom)

    def _factor(self, var: Any, form: Form) -> tuple[float, tuple] | None:
        """form as coefficient * monomial, with a sum turned into an atom of its own."""
        const, terms = form
        if const == 0.0 and len(terms) == 1:
            (mono, coeff), = terms.items()
            return coeff, mono
        if not terms:
            return None
        scale, atom = self._sum_atom(form, self.avals.get(var) if isinstance(var, Var) else None)
        if isinstance(var, Var):
            self.sticky[var] = (scale, atom)
        return scale, ((atom, 1),)

    def _sum_atom(self, form: Form, aval: Any) -> tuple[float, Any]:
        """A node for the sum `form / scale`, shared by every sum that is a multiple of it.

        The scale is the sign of the leading term times, when every coefficient is an integer,
        their greatest common divisor, so the normalised coefficients stay exact.
        """
        const, terms = form
        order = sorted(terms, key=lambda m: tuple((a.count, p) for a, p in m))
        coeffs = [terms[m] for m in order] + ([const] if const else [])
        scale = 1.0
        if all(float(c).is_integer() and abs(c) < 2**52 for c in coeffs):
            scale = float(math.gcd(*[int(abs(c)) for c in coeffs])) or 1.0
        if terms[order[0]] < 0:
            scale = -scale
        normal = _scale(form, 1.0 / scale) if scale != 1.0 else form
        key = (normal[0], tuple((m, normal[1][m]) for m in order))
        atom = self.sum_atoms.get(key)
        if atom is None:
            atom = self._emit_form(normal, aval)
            self.sum_atoms[key] = atom
        return scale, atom

    def _polynomial_form(self, eqn: Eqn, inputs: list[Any]) -> Form | None:
        out = eqn.outputs[0]
        if out.aval.dtype.kind != "f":
            return None
        for a in inputs:
            if isinstance(a, Literal):
                if np.ndim(a.value) != 0 or a.aval.dtype != out.aval.dtype:
                    return None
            elif a.aval != out.aval:
                return None
        forms = [self._form_of(a) for a in inputs]
        if any(f is None for f in forms):
            return None
        ring = eqn.prim.algebra.ring
        if ring == "add":
            return _sum(forms[0], forms[1])
        if ring == "sub":
            return _sum(forms[0], forms[1], -1.0)
        if ring == "neg":
            return _scale(forms[0], -1.0)
        if ring == "mul":
            (c0, t0), (c1, t1) = forms
            if not t0:
                return _scale(forms[1], c0)
            if not t1:
                return _scale(forms[0], c1)
            single0 = c0 == 0.0 and len(t0) == 1
            single1 = c1 == 0.0 and len(t1) == 1
            if single0 != single1 and self.distribute:
                # A monomial times a sum is distributed: scaling every term leaves the sum's
                # conditioning as it was, and terms from different sums can then merge.
                (mono, coeff), = (t0 if single0 else t1).items()
                return _distribute(mono, coeff, forms[1] if single0 else forms[0])
            f0 = self._factor(inputs[0], forms[0])
            f1 = self._factor(inputs[1], forms[1])
            return 0.0, {_monomial_product(f0[1], f1[1]): f0[0] * f1[0]}
        if ring == "integer_pow":
            return self._power_form(inputs[0], forms[0], eqn.attrs["y"])
        return None

    def _power_form(self, atom: Any, form: Form, y: int) -> Form | None:
        if not 1 <= y <= MAX_MONOMIAL_POWER:
            return None
        try:
            if not form[1]:  # a constant, e.g. (x - x) ** 2
                return form[0] ** y, {}
            coeff, mono = self._factor(atom, form)
            return 0.0, {tuple((a, p * y) for a, p in mono): coeff ** y}
        except OverflowError:  # the coefficient: the node is kept as written
            return None

    def run(self) -> Graph:
        for eqn in self.graph.eqns:
            if eqn.prim.algebra.ring is not None and not eqn.prim.multiple_results:
                form = self._polynomial_form(eqn, eqn.inputs)
                if form is not None and _bounded(form, eqn.outputs[0].aval.dtype):  # else: an opaque node
                    self.forms[eqn.outputs[0]] = form
                    self.avals[eqn.outputs[0]] = eqn.outputs[0].aval
                    continue
            inputs = [self.materialize(a) if isinstance(a, Var) and a in self.forms else self.subst.get(a, a)
                      if isinstance(a, Var) else a for a in eqn.inputs]
            self.eqns.append(Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs))
        outvars = [self.materialize(a) if isinstance(a, Var) and a in self.forms else a
                   for a in self.graph.outvars]
        return Graph(self.graph.invars, self.graph.constvars, self.graph.consts, self.eqns, outvars)


class _TooLarge(Exception):
    """A rewrite grew the graph past its allowance."""


def canonicalize_arithmetic(graph: Graph, distribute: bool = True, max_eqns: int | None = None) -> Graph:
    return _Canonicalizer(graph, distribute, max_eqns).run()
