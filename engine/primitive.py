"""The primitive record: everything the engine knows about one operation of the IR, in one place.

A `Primitive` is declared once, complete, by `declare` (engine/primitives.py declares them all):

- `impl`: its NumPy implementation on raw arrays;
- `abstract`: its shape/dtype rule, for tracing and for inference before anything is allocated;
- `vjp` and `jvp`: its reverse- and forward-mode derivative (`PerInput`, `Linear` or `WholeEquation`
  rules, or None when it has none, e.g. a comparison, whose boolean result carries no derivative);
- `batch`: how to apply it to operands carrying a batch axis (engine.batching);
- `plan`: how the plan compiler spells it as Python (engine.plan);
- `algebra`: what the optimiser may assume about it (engine.optimize);
- `facade`: the engine.numpy function it is exposed as, when it is exposed directly (and so in
  the expression language too).

The interpreters, the optimiser and the plan compiler read these fields and nothing else: no
table elsewhere is keyed by a primitive's name. `declare` takes every rule as a required keyword
argument, so a record with a rule left out fails when its module is imported, not later when a
transformation happens to need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from engine.core import bind

Rule = Callable[..., Any]
# batch(prim, operands, batched, attrs, n) -> result(s) with a leading batch axis of size n.
BatchRule = Callable[[Any, list[Any], list[bool], dict[str, Any], int], Any]


class PrimitiveDeclarationError(TypeError):
    """A primitive's record is incomplete or inconsistent (raised when it is declared)."""


class InvalidAttributes(ValueError):
    """Attributes that cannot go with each other or with the number of operands (raised by a
    record's `check_attrs`); `attribute` names the one at fault."""

    def __init__(self, attribute: str, message: str) -> None:
        super().__init__(message)
        self.attribute = attribute


# ----------------------------------------------------------------------------- derivative rules


class PerInput:
    """One derivative rule per operand, `rule(g, ans, *operands, **attrs)` in reverse mode and
    `rule(t, ans, *operands, **attrs)` in forward mode; None for an operand through which no
    derivative flows (an index, a condition). A rule returning None contributes a zero."""

    __slots__ = ("_rules", "_make", "_made")

    def __init__(self, *rules: Rule | None) -> None:
        self._rules = rules
        self._make: Callable[[int], Rule | None] | None = None
        self._made: dict[int, Rule | None] = {}

    @classmethod
    def variadic(cls, make: Callable[[int], Rule | None]) -> PerInput:
        """Rules for a primitive with any number of operands: operand i's rule is `make(i)`."""
        rules = cls()
        rules._make = make
        return rules

    @property
    def count(self) -> int | None:
        """How many operands the rules cover (None: any number)."""
        return None if self._make is not None else len(self._rules)

    def rule(self, i: int) -> Rule | None:
        if self._make is None:
            return self._rules[i]
        if i not in self._made:
            self._made[i] = self._make(i)
        return self._made[i]

    @classmethod
    def first_only(cls, rule: Rule) -> PerInput:
        """A rule for the first operand alone (the others are integer indices)."""
        return cls.variadic(lambda i: rule if i == 0 else None)


class Linear:
    """Forward mode of a primitive linear in all its operands jointly: the tangent is the
    primitive itself applied to the operands' tangents (zeros for operands without one)."""

    __slots__ = ()


class WholeEquation:
    """A derivative rule for the whole equation at once (primitives that call Python code).

    Reverse mode: `fn(cotangents, answers, needed, *operands, **attrs)` -> one cotangent per
    operand (None for zero). Forward mode: `fn(tangents, answers, *operands, **attrs)` -> one
    tangent per output (None for zero)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., list[Any]]) -> None:
        self.fn = fn


Derivative = PerInput | Linear | WholeEquation | None


# ----------------------------------------------------------------------------- plan spelling


def _always(value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda attrs: value


@dataclasses.dataclass(frozen=True)
class Plan:
    """How engine.plan writes an equation of this primitive as a line of Python.

    `ufunc`: a NumPy ufunc computing it, which can then write its result into the buffer of an
    operand that dies there. `operator`: a Python expression over the operands `{0}`, `{1}`
    (on NumPy scalars an operator skips the ufunc machinery), or a function of the attributes
    giving one or None. Without either, the implementation is called with its attributes bound.
    `fresh`: the result is a new buffer that nothing else can see (a bool, or a function of the
    attributes), so a later ufunc may overwrite it. `view`: the result may share memory with an
    operand, which must then never be overwritten. `superlinear`: its cost grows faster than its
    operands' size, so the deadline is checked right after it.
    """

    ufunc: Any = None
    operator: str | Callable[[dict[str, Any]], str | None] | None = None
    fresh: bool | Callable[[dict[str, Any]], bool] = False
    view: bool = False
    superlinear: bool = False

    def operator_for(self, attrs: dict[str, Any]) -> str | None:
        return self.operator(attrs) if callable(self.operator) else self.operator

    def fresh_for(self, attrs: dict[str, Any]) -> bool:
        return self.fresh(attrs) if callable(self.fresh) else self.fresh


# ----------------------------------------------------------------------------- algebra


@dataclasses.dataclass(frozen=True)
class Algebra:
    """What engine.optimize may assume about a primitive.

    `commutative`: p(x, y) == p(y, x). `left_identity` / `right_identity`: a scalar e with
    p(e, x) == x / p(x, e) == x. `identity`: a function of (operands, result, attributes)
    saying whether this application returns its first operand unchanged (a reshape to the same
    shape, a power of one). `involution`: p(p(x)) == x. `compose`: a function of (inner
    attributes, outer attributes) giving the attributes of the single application equal to two
    nested ones, p(p(x, a), b) == p(x, compose(a, b)). `ring`: its part in the arithmetic that
    canonical sums of monomials rewrite ("add", "sub", "neg", "mul" or "integer_pow").
    """

    commutative: bool = False
    left_identity: float | None = None
    right_identity: float | None = None
    identity: Callable[[list[Any], Any, dict[str, Any]], bool] | None = None
    involution: bool = False
    compose: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    ring: str | None = None


RING_OPERATIONS = ("add", "sub", "neg", "mul", "integer_pow")


# ----------------------------------------------------------------------------- the record


@dataclasses.dataclass(frozen=True)
class Facade:
    """The engine.numpy function a primitive is exposed as: `name`, with operands promoted to
    one dtype (`promote="same"`) or, further, to a floating-point one (`promote="float"`)."""

    name: str
    promote: str = "float"


@dataclasses.dataclass(eq=False, slots=True)
class Primitive:
    """One operation of the IR; see the module docstring for its fields."""

    name: str
    impl: Callable[..., Any]
    abstract: Callable[..., Any]
    vjp: Derivative
    jvp: Derivative
    batch: BatchRule
    plan: Plan
    algebra: Algebra
    arity: int | None  # None: variadic
    attr_names: tuple[str, ...]
    doc: str
    multiple_results: bool = False
    # Refuses a derivative its rules would get wrong for particular operands: guard(operands,
    # wanted, attrs), wanted[i] saying whether operand i's derivative is asked for.
    guard: Callable[[list[Any], list[bool], dict[str, Any]], None] | None = None
    facade: Facade | None = None
    # Holds Python code (custom_jvp/custom_vjp calls): lives in memory only, never serialised.
    python_code: bool = False
    # What a graph document's node of this primitive must satisfy beyond each attribute's own
    # type, checked before anything runs: check_attrs(attrs, number of operands) raises
    # InvalidAttributes.
    check_attrs: Callable[[dict[str, Any], int], None] | None = None

    def __call__(self, *args: Any, **attrs: Any) -> Any:
        return bind(self, args, attrs)

    def __repr__(self) -> str:
        return self.name


# Every primitive a graph document may name, by name (GET /v1/ops publishes them).
PRIMITIVES: dict[str, Primitive] = {}
# Every primitive declared, in declaration order, including those kept out of PRIMITIVES.
DECLARED: list[Primitive] = []


def declare(name: str, *, impl: Callable[..., Any], abstract: Callable[..., Any], vjp: Derivative,
            jvp: Derivative, batch: BatchRule, plan: Plan, algebra: Algebra, arity: int | None,
            attrs: tuple[str, ...] = (), doc: str, multiple_results: bool = False,
            guard: Callable[..., None] | None = None, facade: Facade | None = None, python_code: bool = False,
            check_attrs: Callable[[dict[str, Any], int], None] | None = None, register: bool = True) -> Primitive:
    """Declare a primitive, complete: every rule is a required argument, and inconsistent ones
    raise PrimitiveDeclarationError here. `register=False` keeps it out of PRIMITIVES."""
    prim = Primitive(name, impl, abstract, vjp, jvp, batch, plan, algebra, arity, tuple(attrs), doc,
                     multiple_results, guard, facade, python_code, check_attrs)
    problems = record_problems(prim)
    if name in PRIMITIVES or any(p.name == name for p in DECLARED):
        problems.append("the name is declared twice")
    if problems:
        raise PrimitiveDeclarationError(f"primitive {name!r}: " + "; ".join(problems))
    DECLARED.append(prim)
    if register:
        PRIMITIVES[name] = prim
    return prim


def record_problems(prim: Primitive) -> list[str]:
    """What is missing from or inconsistent in a record (empty for a complete one)."""
    problems = []
    for field in ("impl", "abstract", "batch"):
        if not callable(getattr(prim, field)):
            problems.append(f"`{field}` must be a function")
    if not isinstance(prim.plan, Plan):
        problems.append("`plan` must be a Plan")
    if not isinstance(prim.algebra, Algebra):
        problems.append("`algebra` must be an Algebra")
    if not prim.doc:
        problems.append("`doc` must say what it computes")
    for mode in ("vjp", "jvp"):
        rules = getattr(prim, mode)
        if rules is None:
            continue
        if not isinstance(rules, (PerInput, Linear, WholeEquation)):
            problems.append(f"`{mode}` must be PerInput, Linear, WholeEquation or None")
        elif isinstance(rules, PerInput) and rules.count is not None and rules.count != prim.arity:
            problems.append(f"`{mode}` has {rules.count} rule(s) for {prim.arity} operand(s)")
        elif isinstance(rules, Linear) and (mode == "vjp" or prim.multiple_results):
            problems.append("Linear is a forward-mode rule of a single-result primitive")
        elif isinstance(rules, WholeEquation) != prim.multiple_results:
            problems.append(f"`{mode}`: a primitive has a WholeEquation rule exactly when it has several results")
    algebra = prim.algebra if isinstance(prim.algebra, Algebra) else Algebra()
    if algebra.ring is not None and algebra.ring not in RING_OPERATIONS:
        problems.append(f"`algebra.ring` must be one of {RING_OPERATIONS}")
    if (algebra.commutative or algebra.left_identity is not None) and prim.arity != 2:
        problems.append("only a binary primitive can be commutative or have a left identity")
    if isinstance(prim.plan, Plan) and prim.plan.ufunc is not None and prim.multiple_results:
        problems.append("a ufunc spelling needs a single result")
    if prim.facade is not None and prim.facade.promote not in ("same", "float"):
        problems.append("`facade.promote` must be 'same' or 'float'")
    return problems
