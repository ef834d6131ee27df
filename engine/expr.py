"""The expression language: a safe subset of Python syntax for sending functions as text.

    z = inputs @ W + b
    p = sigmoid(z)
    -sum(log(p * targets + (1 - p) * (1 - targets)))

A program is zero or more `name = expression` lines and a final expression, its output (a tuple
`(loss, aux)` is allowed for has_aux). The source is parsed with `ast` and checked against an
allow-list before anything runs; it is then interpreted node by node, calling engine.numpy
functions, so it is never executed by Python and can be traced and differentiated like any
Python function. Every error carries the line and column of the construct at fault.

Integers are exact (64-bit) up to ±2**53 and refused beyond: arithmetic between integer
constants is done in Python, and an integer outside int32 (JAX's default integer type) reaches
the engine as an int64 array, never wrapped around. Integers that become shapes, counts,
indices or exponents are checked against `Limits` before the operation runs.

A parameter may be a pytree (a dict, list or tuple of arrays, nested): `params['W']`,
`layers[0]['b']`, and names bound to parts of one, are resolved when the program is called or
traced, when the structure is known. A whole dict or list is only ever subscripted, assigned to a
name or returned; anywhere an array is needed it is refused, at the name, with its keys.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

import engine.numpy as jnp
from engine import nn
from engine.array import Array
from engine.core import Tracer, _element_budget, element_budget
from engine.errors import DeadlineExceeded, DtypeError, EngineError, InvalidArgumentError, ShapeError
from engine.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from engine.numpy import linalg
from engine.primitive import DECLARED
from engine.scipy import special, stats


class ExprError(EngineError, ValueError):
    """A program was rejected or failed; `line` and `col` (1-based) locate the construct.

    `kind` says what was wrong:

    - "invalid": the program is outside the language (syntax, an undeclared name, a construct or
      function that is not allowed), or an operation refused its arguments for another reason;
    - "value": a value out of range: an integer beyond ±2**53, a negative or non-integer shape
      dimension, integer division by zero, a malformed einsum subscripts string;
    - "limit": over a bound of `Limits`; the error is then an ExprLimitError, also a
      `LimitExceeded` (with `limit`, `value`, `maximum`);
    - "shape" / "dtype": operands whose shapes / dtypes do not fit an operation; the error is then
      an ExprShapeError (also a `ShapeError`) / an ExprDtypeError (also a `DtypeError`).
    """

    def __init__(self, message: str, line: int | None = None, col: int | None = None, *,
                 kind: str = "invalid") -> None:
        where = f"line {line}, column {col}: " if line is not None else ""
        Exception.__init__(self, where + message)  # not super(): ExprLimitError's next base needs more
        self.line = line
        self.col = col
        self.kind = kind
        self.bare_message = message


class ExprLimitError(ExprError, LimitExceeded):
    """A program over a bound of `Limits` (kind "limit"); `limit`, `value`, `maximum` as LimitExceeded."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None, *, limit: str,
                 value: int, maximum: int) -> None:
        ExprError.__init__(self, message, line, col, kind="limit")
        self.limit = limit
        self.value = value
        self.maximum = maximum


class ExprShapeError(ExprError, ShapeError):
    """Operands whose shapes do not fit an operation of the program (kind "shape")."""


class ExprDtypeError(ExprError, DtypeError):
    """Operands whose dtypes do not fit an operation of the program (kind "dtype")."""


def _plain_tuples(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn with a named-tuple result (svd, eigh, qr, ...) returned as a plain tuple, as slogdet's is."""
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        return tuple(out) if isinstance(out, tuple) else out
    call.__name__ = fn.__name__
    return call


def _tuple_result(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn with a list result (split's parts) returned as a tuple, which the language indexes as a
    sequence instead of stacking it into one array."""
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        return tuple(out) if isinstance(out, list) else out
    call.__name__ = fn.__name__
    return call


def _functions() -> dict[str, Callable[..., Any]]:
    numpy_names = [
        "array", "asarray", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange",
        "linspace", "eye", "add", "subtract", "multiply", "divide", "negative", "power", "square", "sqrt",
        "reciprocal", "abs", "absolute", "sign", "exp", "expm1", "exp2", "log", "log1p", "log2", "log10",
        "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh",
        "arccosh", "arctanh", "maximum", "minimum", "clip", "where", "logaddexp", "floor", "ceil", "round",
        "trunc", "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "logical_and",
        "logical_or", "logical_not", "logical_xor", "isnan", "isfinite", "isinf", "sum", "mean", "prod",
        "max", "min", "amax", "amin", "var", "std", "cumsum", "argmax", "argmin", "all", "any", "dot",
        "vdot", "matmul", "inner", "outer", "tensordot", "einsum", "trace", "diag", "diagonal", "reshape",
        "ravel", "transpose", "swapaxes", "moveaxis", "expand_dims", "squeeze", "broadcast_to",
        "concatenate", "stack", "hstack", "vstack", "tile", "repeat", "flip", "take", "stop_gradient",
        "mod", "remainder", "floor_divide", "float_power", "atleast_1d", "atleast_2d", "erf", "logsumexp",
    ]
    numpy_names += ["fmax", "fmin", "fabs", "deg2rad", "radians", "rad2deg", "degrees", "logaddexp2", "sinc",
                    "nan_to_num", "frexp", "allclose", "isclose"]
    numpy_names += ["sort", "argsort", "msort", "partition", "argpartition", "select", "take_along_axis", "nonzero",
                    "flatnonzero", "argwhere", "pad", "roll", "rot90", "fliplr", "flipud", "tril", "triu", "diff",
                    "append", "split", "array_split", "hsplit", "vsplit", "dsplit", "column_stack", "row_stack",
                    "atleast_3d", "kron", "cross", "rollaxis"]
    # and every function engine.numpy has from a primitive's record (hypot, ...)
    numpy_names += [p.facade.name for p in DECLARED if p.facade is not None and p.facade.name not in numpy_names]
    table: dict[str, Callable[..., Any]] = {name: getattr(jnp, name) for name in numpy_names}
    for name in ("solve", "inv", "det", "cholesky", "norm"):
        table[f"linalg.{name}"] = getattr(linalg, name)
    table["linalg.slogdet"] = lambda a: tuple(linalg.slogdet(a))
    for name in ("split", "array_split", "hsplit", "vsplit", "dsplit", "atleast_3d"):
        table[name] = _tuple_result(getattr(jnp, name))  # parts of different shapes: never stacked
    for name in ("pinv", "matrix_power", "eigvalsh", "eigvals", "svd", "eigh", "eig", "qr", "lstsq"):
        table[f"linalg.{name}"] = _plain_tuples(getattr(linalg, name))
    for name in jnp.fft.__all__:
        table[f"fft.{name}"] = getattr(jnp.fft, name)
    for name in ("real", "imag", "conj", "conjugate"):
        table[name] = getattr(jnp, name)
    for name in ("sigmoid", "relu", "softplus", "softmax", "log_softmax", "logsumexp", "log_sigmoid",
                 "one_hot"):
        table[name if name not in table else f"nn.{name}"] = getattr(nn, name)
        table[f"nn.{name}"] = getattr(nn, name)
    for name in special.__all__:
        # gamma, beta and psi are common parameter names (a parameter may not shadow a function):
        # they are reached as special.gamma, ... only.
        if name not in ("gamma", "beta", "psi"):
            table.setdefault(name, getattr(special, name))
        table[f"special.{name}"] = getattr(special, name)
        table[f"scipy.special.{name}"] = getattr(special, name)
    for distribution in ("norm", "t", "gamma", "beta", "poisson", "multivariate_normal"):
        module = getattr(stats, distribution)
        for name in module.__all__:
            table[f"stats.{distribution}.{name}"] = getattr(module, name)
            table[f"scipy.stats.{distribution}.{name}"] = getattr(module, name)
    return table


FUNCTIONS = _functions()
CONSTANTS: dict[str, Any] = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}
_PREFIXES = ("np.", "jnp.", "numpy.", "jax.numpy.", "jax.")
_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32", "bool")
# Functions whose results are allocated from their arguments at once: sizes are checked first.
_CREATION = {"zeros", "ones", "full", "eye", "arange", "linspace"}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: jnp.add, ast.Sub: jnp.subtract, ast.Mult: jnp.multiply, ast.Div: jnp.divide,
    ast.Pow: jnp.power, ast.MatMult: jnp.matmul, ast.FloorDiv: jnp.floor_divide, ast.Mod: jnp.remainder,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: jnp.less, ast.LtE: jnp.less_equal, ast.Gt: jnp.greater, ast.GtE: jnp.greater_equal,
    ast.Eq: jnp.equal, ast.NotEq: jnp.not_equal,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: jnp.negative, ast.UAdd: jnp.positive, ast.Not: jnp.logical_not, ast.Invert: jnp.logical_not,
}
_DESCRIBE = {
    ast.Attribute: "attribute access", ast.Lambda: "lambda", ast.ListComp: "a list comprehension",
    ast.SetComp: "a set comprehension", ast.DictComp: "a dict comprehension",
    ast.GeneratorExp: "a generator expression", ast.Import: "import", ast.ImportFrom: "import",
    ast.FunctionDef: "a function definition", ast.ClassDef: "a class definition", ast.Dict: "a dict",
    ast.Set: "a set", ast.IfExp: "a conditional expression (use where(cond, a, b))",
    ast.BoolOp: "'and'/'or' (use logical_and/logical_or)", ast.Starred: "unpacking with *",
    ast.JoinedStr: "an f-string", ast.Await: "await", ast.Yield: "yield", ast.NamedExpr: "':='",
    ast.For: "a for loop", ast.While: "a while loop", ast.If: "an if statement", ast.With: "with",
    ast.Delete: "del", ast.Global: "global", ast.Nonlocal: "nonlocal", ast.Raise: "raise",
    ast.Try: "try", ast.Assert: "assert", ast.Return: "return", ast.AugAssign: "augmented assignment",
    ast.AnnAssign: "annotated assignment", ast.Pass: "pass", ast.Break: "break", ast.Continue: "continue",
}


def _loc(node: ast.AST) -> tuple[int | None, int | None]:
    line = getattr(node, "lineno", None)
    col = getattr(node, "col_offset", None)
    return line, (col + 1 if col is not None else None)


def _columns_in_characters(tree: ast.AST, source: str) -> None:
    """Make every node's column count characters, as syntax errors' columns do: Python's parser
    counts UTF-8 bytes, so a non-ASCII character earlier on a line would shift the column an
    error reports (a caller highlighting it would point at the wrong place)."""
    lines = source.splitlines()
    for node in ast.walk(tree):
        line = getattr(node, "lineno", None)
        if line is None or line > len(lines) or lines[line - 1].isascii():
            continue
        encoded = lines[line - 1].encode()
        for attr in ("col_offset", "end_col_offset"):
            col = getattr(node, attr, None)
            end_line = node.end_lineno if attr == "end_col_offset" else line
            if col is not None and end_line == line:
                setattr(node, attr, len(encoded[:col].decode("utf-8", "replace")))


def _fail(node: ast.AST, message: str, kind: str = "invalid") -> ExprError:
    cls = ExprShapeError if kind == "shape" else ExprDtypeError if kind == "dtype" else ExprError
    return cls(message, *_loc(node), kind=kind)


# Creation functions whose values come from the program and take a dtype.
_VALUES_WITH_DTYPE = frozenset({"array", "asarray", "full", "arange", "linspace"})


def _limit(node: ast.AST | None, message: str, limit: str, value: int, maximum: int) -> ExprLimitError:
    line, col = _loc(node) if node is not None else (None, None)
    return ExprLimitError(message, line, col, limit=limit, value=value, maximum=maximum)


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _function_name(dotted: str) -> str:
    for prefix in _PREFIXES:
        if dotted.startswith(prefix):
            return dotted[len(prefix):]
    return dotted


class Program:
    """A parsed and validated program; call it with one array per declared parameter."""

    def __init__(self, source: str, params: list[str], limits: Limits = DEFAULT_LIMITS) -> None:
        if not isinstance(source, str):
            raise ExprError("the expression must be a string")
        self.source = source
        self.limits = limits
        if len(source) > limits.max_source_chars:
            raise _limit(None, f"the source has {len(source)} characters, over the limit of "
                               f"{limits.max_source_chars} (max_source_chars)",
                         "max_source_chars", len(source), limits.max_source_chars)
        self.params = self._check_params(params)
        # The parameters by name for inspect.signature, so transformations (and their errors) can
        # name them; an instance attribute, as a property would make inspect.signature(Program) fail.
        self.__signature__ = _signature(self.params)
        if "\0" in source:  # Python's parser refuses it without saying where
            before = source[:source.index("\0")]
            raise ExprError("a NUL character is not allowed in an expression", before.count("\n") + 1,
                            len(before) - (before.rfind("\n") + 1) + 1)
        try:
            tree = ast.parse(source, mode="exec")
        except SyntaxError as e:
            raise ExprError(f"syntax error: {e.msg}", e.lineno, e.offset) from None
        except (RecursionError, MemoryError):  # Python's parser gave up, far deeper than max_depth
            raise _limit(None, f"the expression is nested too deeply to parse (more than {limits.max_depth} "
                         "levels, max_depth)", "max_depth", limits.max_depth + 1, limits.max_depth) from None
        _columns_in_characters(tree, source)
        self._check_size(tree)
        self.assignments, self.output = self._split(tree)
        self._validate()

    def _check_params(self, params: Any) -> list[str]:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise ExprError("params must be a list of parameter names")
        for p in params:
            if not p.isidentifier() or p.startswith("__") or p in FUNCTIONS or p in CONSTANTS:
                raise ExprError(f"{p!r} cannot be a parameter name: use an identifier that is not a "
                                "function or constant name and does not start with '__'")
        if len(set(params)) != len(params):
            raise ExprError("params contain a duplicate name")
        return list(params)

    def _check_size(self, tree: ast.AST) -> None:
        """Count nodes and measure depth without recursion, before anything walks the tree."""
        count = 0
        stack: list[tuple[ast.AST, int]] = [(tree, 0)]
        while stack:
            node, depth = stack.pop()
            count += 1
            if depth > self.limits.max_depth:
                raise _limit(node, f"the expression is nested {depth} levels deep, over the limit of "
                                   f"{self.limits.max_depth} (max_depth)", "max_depth", depth, self.limits.max_depth)
            if count > self.limits.max_nodes:
                raise _limit(None, f"the program has more than {self.limits.max_nodes} syntax nodes "
                                   "(max_nodes)", "max_nodes", count, self.limits.max_nodes)
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
        self.num_nodes = count

    def _split(self, tree: ast.Module) -> tuple[list[tuple[str, ast.expr, ast.AST]], ast.expr]:
        body = tree.body
        if not body:
            raise ExprError("the program is empty: it must end with an expression, its output")
        assignments = []
        for stmt in body[:-1]:
            if not isinstance(stmt, ast.Assign):
                if isinstance(stmt, ast.Expr):
                    raise _fail(stmt, "only the last line may be a bare expression; earlier lines must "
                                      "be assignments `name = expression`")
                raise _fail(stmt, f"{_DESCRIBE.get(type(stmt), type(stmt).__name__)} is not allowed; "
                                  "lines must be `name = expression`")
            if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
                raise _fail(stmt, "assign to a single name (`name = expression`); unpacking and "
                                  "subscript or attribute targets are not allowed")
            assignments.append((stmt.targets[0].id, stmt.value, stmt.targets[0]))
        last = body[-1]
        if not isinstance(last, ast.Expr):
            what = _DESCRIBE.get(type(last))
            if what is not None and not isinstance(last, ast.Assign):
                raise _fail(last, f"{what} is not allowed; the last line must be an expression, the output")
            raise _fail(last, "the last line must be an expression: the function's output")
        return assignments, last.value

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        names = set(self.params)
        for name, value, target in self.assignments:
            self._check_expr(value, names)
            if name.startswith("__") or name in FUNCTIONS:
                raise _fail(target, f"{name!r} cannot be assigned: it is reserved")
            names.add(name)
        self._check_expr(self.output, names)

    def _check_expr(self, root: ast.expr, names: set[str]) -> None:
        stack: list[ast.AST] = [root]
        string_ok: set[int] = set()  # ids of the nodes that are a call's arguments or a subscript's key
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Name):
                if node.id.startswith("__"):
                    raise _fail(node, f"dunder name {node.id!r} is not allowed")
                if node.id not in names and node.id not in CONSTANTS and node.id not in ("True", "False"):
                    hint = " (it is a function: call it)" if node.id in FUNCTIONS else \
                        f"; declared parameters are {self.params}"
                    raise _fail(node, f"undeclared name {node.id!r}{hint}")
            elif isinstance(node, ast.Constant):
                if isinstance(node.value, str):
                    if len(node.value) > 64:
                        raise _fail(node, "string arguments are limited to 64 characters")
                    if id(node) not in string_ok:
                        raise _fail(node, "a string is only allowed as a function argument (einsum's "
                                          "subscripts, dtype=...) or as a key of a parameter (params['W'])")
                elif node.value is not None and node.value is not Ellipsis and not isinstance(
                        node.value, (bool, int, float)):
                    raise _fail(node, f"constant {node.value!r} is not allowed (numbers only)")
                elif isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) > MAX_INT:
                    raise _fail(node, f"integer literal {node.value} is too large: {_EXACT}", kind="value")
            elif isinstance(node, ast.Call):
                dotted = _dotted(node.func)
                if dotted is None:
                    raise _fail(node, "only functions can be called, by name (e.g. `tanh(x)`)")
                if any(part.startswith("__") for part in dotted.split(".")):
                    raise _fail(node, f"dunder name in {dotted!r} is not allowed")
                fname = _function_name(dotted)
                if fname not in FUNCTIONS:
                    raise _fail(node, f"unknown function {dotted!r}; allowed are engine.numpy, linalg., nn "
                                      "and special functions (GET /v1/ops lists them)")
                string_ok.update(id(a) for a in [*node.args, *(kw.value for kw in node.keywords)])
                for kw in node.keywords:
                    if kw.arg is None:
                        raise _fail(node, "**kwargs unpacking is not allowed")
                    if kw.arg.startswith("__"):
                        raise _fail(node, f"keyword {kw.arg!r} is not allowed")
                    stack.append(kw.value)
                stack.extend(node.args)
                continue
            elif isinstance(node, ast.BinOp):
                if type(node.op) not in _BINOPS:
                    raise _fail(node, f"operator {type(node.op).__name__} is not allowed")
                if isinstance(node.op, ast.Pow):
                    self._check_exponent(node.right)
            elif isinstance(node, ast.UnaryOp):
                if type(node.op) not in _UNARY:
                    raise _fail(node, f"unary operator {type(node.op).__name__} is not allowed")
            elif isinstance(node, ast.Compare):
                if len(node.ops) != 1:
                    raise _fail(node, "chained comparisons are not allowed; combine with logical_and")
                if type(node.ops[0]) not in _COMPARE:
                    raise _fail(node, f"comparison {type(node.ops[0]).__name__} is not allowed")
            elif isinstance(node, ast.Subscript):
                # A key of a pytree parameter: one string as the whole index, not in a tuple or slice.
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                    string_ok.add(id(node.slice))
            elif isinstance(node, (ast.Tuple, ast.List, ast.Slice, ast.Load)):
                pass
            elif isinstance(node, ast.expr_context) or isinstance(node, (ast.operator, ast.unaryop, ast.cmpop)):
                continue
            else:
                what = _DESCRIBE.get(type(node), type(node).__name__)
                raise _fail(node, f"{what} is not allowed in an expression")
            stack.extend(ast.iter_child_nodes(node))

    def _check_exponent(self, node: ast.expr) -> None:
        value = _literal_number(node)
        if value is not None and abs(value) > self.limits.max_integer_power and float(value).is_integer():
            value = int(value) if math.isfinite(value) else value
            raise _limit(node, f"exponent {value} is larger than {self.limits.max_integer_power} "
                               "(max_integer_power)", "max_integer_power", abs(value), self.limits.max_integer_power)

    # ------------------------------------------------------------------ evaluation

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.params):
            raise TypeError(f"this program takes {len(self.params)} argument(s) {self.params}, got {len(args)}")
        env: dict[str, Any] = {p: _Tree.wrap(a, p) for p, a in zip(self.params, args)}
        budget, outer = self.limits.max_array_elements, _element_budget[-1]
        with element_budget(budget if outer is None else min(budget, outer)):  # a tighter enclosing one stays
            for name, value, _ in self.assignments:
                env[name] = self._eval(value, env)  # may be a part of a pytree: p = params['layers']
            out = self._output(env)
        return tuple(_wide(o) for o in out) if isinstance(out, tuple) else _wide(out)

    def _output(self, env: dict[str, Any]) -> Any:
        """The last line's value; a whole pytree (or a part of one) may be returned, alone or as an
        entry of the output tuple (e.g. has_aux's auxiliary data), as it is."""
        node = self.output
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [_Tree.unwrap(self._eval(e, env)) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        return _Tree.unwrap(self._eval(node, env))

    def _array(self, node: ast.expr, env: dict[str, Any]) -> Any:
        """A value where an array (or a number) is needed: a whole dict or list is refused here,
        at the construct that named it."""
        value = self._eval(node, env)
        if isinstance(value, _Tree):
            raise _fail(node, value.not_an_array(_written(node)))
        return value

    def _eval(self, node: ast.expr, env: dict[str, Any]) -> Any:
        try:
            return self._eval_node(node, env)
        except (ExprError, DeadlineExceeded):  # a request's time limit is not the program's fault
            raise
        except LimitExceeded as e:
            raise _limit(node, str(e), e.limit, e.value, e.maximum) from None
        except EngineError as e:
            raise _fail(node, str(e), kind=_kind(e)) from None
        except (ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError, np.linalg.LinAlgError) as e:
            raise _fail(node, f"{type(e).__name__}: {e}", kind=_kind(e)) from None

    def _eval_node(self, node: ast.expr, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in ("True", "False"):
                return node.id == "True"
            return CONSTANTS[node.id]
        if isinstance(node, ast.BinOp):
            return self._binop(node, self._array(node.left, env), self._array(node.right, env))
        if isinstance(node, ast.UnaryOp):
            operand = self._array(node.operand, env)
            if isinstance(node.op, ast.USub) and _is_number(operand):
                return -operand
            return _UNARY[type(node.op)](_wide(operand))
        if isinstance(node, ast.Compare):
            left, right = self._array(node.left, env), self._array(node.comparators[0], env)
            return _COMPARE[type(node.ops[0])](_wide(left), _wide(right))
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self._array(e, env) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Subscript):
            target = self._eval(node.value, env)
            if isinstance(target, _Tree):
                return self._subscript_tree(node, target, env)
            if isinstance(target, tuple) and isinstance(node.slice, ast.Constant) and _is_int(node.slice.value):
                return target[node.slice.value]  # one result of svd, qr, eigh, ... (their shapes differ)
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                raise _fail(node, f"{_written(node.value)} is {_describe_leaf(target)}, not an object: it has no "
                                  f"key {node.slice.value!r} (a string key indexes a dict parameter, "
                                  "e.g. params['W'])")
            return jnp.asarray(_wide(target))[self._index(node.slice, env)]
        if isinstance(node, ast.Call):
            return self._call(node, env)
        raise _fail(node, f"{type(node).__name__} is not allowed")

    def _binop(self, node: ast.BinOp, left: Any, right: Any) -> Any:
        if isinstance(node.op, ast.Pow):
            self._check_runtime_exponent(node.right, right)
        if _is_int(left) and _is_int(right) and type(node.op) in _INT_OPS:
            return _int_arith(node, left, right)
        return _BINOPS[type(node.op)](_wide(left), _wide(right))

    def _index(self, node: ast.expr, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Slice):
            parts = [None if p is None else self._array(p, env) for p in (node.lower, node.upper, node.step)]
            return slice(*parts)  # Python ints: a slice takes any integer, with Python's meaning
        if isinstance(node, ast.Tuple):
            return tuple(self._index(e, env) for e in node.elts)
        if isinstance(node, ast.Constant) and node.value is None:
            return None
        if isinstance(node, ast.Constant) and node.value is Ellipsis:
            return Ellipsis
        return self._array(node, env)  # Python ints, and int64 index arrays, are checked against the axis

    def _subscript_tree(self, node: ast.Subscript, tree: _Tree, env: dict[str, Any]) -> Any:
        """tree[key]: a dict by its key, a list or tuple by an integer index (negative from the end),
        resolved now that the argument's structure is known."""
        index = node.slice
        if isinstance(index, ast.Constant) and isinstance(index.value, str):
            key: Any = index.value
        elif isinstance(index, (ast.Slice, ast.Tuple)) or (isinstance(index, ast.Constant) and (
                index.value is None or index.value is Ellipsis)):
            raise _fail(node, f"{tree.path}: {tree.kind()} is indexed by one key at a time, "
                              f"e.g. {tree.example()}")
        else:
            key = _concrete_int(self._array(index, env))
            if not _is_int(key):
                got = _describe(key) if _is_number(key) else _describe_leaf(key)
                raise _fail(node, f"{tree.path}: {tree.kind()} is indexed by a key string or an integer "
                                  f"constant, e.g. {tree.example()}; got {got}")
        return tree.get(node, key)

    def _call(self, node: ast.Call, env: dict[str, Any]) -> Any:
        fname = _function_name(_dotted(node.func))
        fn = FUNCTIONS[fname]
        args = [self._array(a, env) for a in node.args]
        kwargs = {kw.arg: self._array(kw.value, env) for kw in node.keywords}
        if "dtype" in kwargs and kwargs["dtype"] is not None and kwargs["dtype"] not in _DTYPES:
            raise _fail(node, f"dtype must be one of {', '.join(_DTYPES)}")
        if fname == "einsum" and (not args or not isinstance(args[0], str)):
            raise _fail(node, "einsum's first argument must be its subscripts string")
        elif fname != "einsum" and any(isinstance(a, str) for a in args):
            raise _fail(node, f"{fname} does not take string arguments")
        self._check_arguments(node, fname, args, kwargs)
        if fname == "arange" and "dtype" not in kwargs and any(_is_int(a) and _wide(a) is not a for a in args):
            kwargs["dtype"] = "int64"  # the default int32 would wrap bounds beyond it around
        out = fn(*[_wide(a) for a in args], **{k: _wide(v) for k, v in kwargs.items()})
        if fname in _VALUES_WITH_DTYPE and kwargs.get("dtype") is not None:
            self._check_in_range(node, fname, fn, args, kwargs, out)
        return out

    def _check_in_range(self, node: ast.Call, fname: str, fn: Any, args: list[Any], kwargs: dict[str, Any],
                        out: Any) -> None:
        """Values written in the program must fit the dtype they ask for: `array([1000],
        dtype="int8")` would wrap around to -24, and float16 would make 1e5 infinite."""
        dtype = np.dtype(kwargs["dtype"])
        if dtype.kind not in "iuf" or dtype.itemsize >= 8:
            return
        wide = "int64" if dtype.kind in "iu" else "float64"
        reference = fn(*[_wide(a) for a in args], **{**{k: _wide(v) for k, v in kwargs.items()}, "dtype": wide})
        if isinstance(reference, Tracer) or isinstance(out, Tracer):
            return  # a traced value: its range is the caller's to check, like any computation
        got, want = np.asarray(getattr(out, "_value", out)), np.asarray(getattr(reference, "_value", reference))
        if got.shape != want.shape:
            return
        with np.errstate(all="ignore"):
            wrapped = (got.astype(wide) != want) if dtype.kind in "iu" else (np.isfinite(want) & ~np.isfinite(got))
        if np.any(wrapped):
            bad = want[wrapped].reshape(-1)[0]
            raise _fail(node, f"{fname}: the value {bad} does not fit dtype {dtype.name}", kind="value")

    def _check_arguments(self, node: ast.Call, fname: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Integers that become sizes, counts or exponents, checked before the function sees them."""
        if fname in _CREATION:  # first: the number of elements is the plainer message
            self._check_creation(node, fname, args, kwargs)
        shape_at = _SHAPE_ARGUMENT.get(fname)
        if shape_at is not None:
            shape = _argument(args, kwargs, *shape_at)
            if shape is not None:
                self._check_shape(node, fname, shape, allow_unknown=fname == "reshape")
        if fname in ("tile", "repeat"):
            self._check_repeats(node, fname, args, kwargs)
        if fname in ("power", "float_power"):
            self._check_runtime_exponent(node.args[1] if len(node.args) > 1 else node, _argument(args, kwargs, 1, "y"))
        if fname in ("one_hot", "nn.one_hot"):
            _count(node, fname, _concrete_int(_argument(args, kwargs, 1, "num_classes")))

    def _check_shape(self, node: ast.Call, fname: str, shape: Any, allow_unknown: bool = False) -> None:
        """Each dimension a non-negative integer (reshape: one may be -1), at most max_dimensions of
        them, and the product of the non-zero ones within max_array_elements: a zero-size array
        with a dimension of 2**53 is as absurd as a full one."""
        if isinstance(shape, Array) and shape.ndim == 1:
            shape = shape._value.tolist()
        dims = [_concrete_int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
        for d in dims:
            if isinstance(d, Tracer):
                return  # the engine refuses a traced dimension itself (ConcretizationError)
            if not _is_int(d):
                raise _fail(node, f"{fname}: shape dimensions must be integers, got {_describe(d)}", kind="value")
            if d < 0 and not (allow_unknown and d == -1):
                raise _fail(node, f"{fname}: shape dimension {d} is negative; dimensions must be non-negative"
                                  + (" (or one -1, inferred)" if allow_unknown else ""), kind="value")
        try:
            if 0 in dims:  # else the element budget refuses it, with the array's shape in the message
                self.limits.check_shape(tuple(abs(d) for d in dims), f"{fname}: the shape")
            else:
                self.limits.check("max_dimensions", len(dims), f"{fname}: the number of dimensions")
        except LimitExceeded as e:
            raise _limit(node, str(e), e.limit, e.value, e.maximum) from None

    def _check_creation(self, node: ast.Call, fname: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """The number of elements a creation function would allocate, before it does."""
        if fname in ("zeros", "ones", "full"):  # dimensions already checked (_SHAPE_ARGUMENT)
            shape = args[0] if args else kwargs.get("shape")
            dims = [_concrete_int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
            if not all(_is_int(d) for d in dims):
                return  # traced: the engine refuses it
            size = math.prod(dims)  # exact, whatever the dimensions
        elif fname == "eye":
            n = _count(node, "eye", _concrete_int(args[0] if args else kwargs.get("N")))
            m = _concrete_int(args[1] if len(args) > 1 else kwargs.get("M"))
            m = n if m is None else _count(node, "eye", m)
            size = n * m
            if size == 0:  # a zero-size result may still have an absurd dimension
                self._check_shape(node, "eye", (n, m))
        elif fname == "arange":
            size = _arange_size(node, args)
        else:  # linspace
            size = _count(node, "linspace", _concrete_int(args[2] if len(args) > 2 else kwargs.get("num", 50)))
        if size > self.limits.max_array_elements:
            raise _limit(node, f"{fname} would allocate {size} elements, over the limit of "
                               f"{self.limits.max_array_elements} (max_array_elements)",
                         "max_array_elements", size, self.limits.max_array_elements)

    def _check_repeats(self, node: ast.Call, fname: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        reps = args[1] if len(args) > 1 else kwargs.get("reps", kwargs.get("repeats"))
        values = reps if isinstance(reps, (tuple, list)) else [reps]
        for r in values:
            if isinstance(r, Array):
                r = r._value.item() if r.ndim == 0 else r._value
            if isinstance(r, np.ndarray) and r.dtype.kind in "iuf" and r.size:
                total = float(np.sum(np.abs(r), dtype=np.float64))
                if total > self.limits.max_array_elements:
                    raise _limit(node, f"{fname} counts add up to more than {self.limits.max_array_elements} "
                                       "(max_array_elements)", "max_array_elements", int(total),
                                 self.limits.max_array_elements)
                r = float(np.max(np.abs(r)))
            if isinstance(r, (int, float)) and abs(r) > self.limits.max_repeats:
                raise _limit(node, f"{fname} count {r} is larger than {self.limits.max_repeats} (max_repeats)",
                             "max_repeats", int(abs(r)), self.limits.max_repeats)

    def _check_runtime_exponent(self, node: ast.AST, value: Any) -> None:
        """node: the exponent's syntax (for the error's position)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if float(value).is_integer() and abs(value) > self.limits.max_integer_power:
                most = self.limits.max_integer_power
                raise _limit(node, f"exponent {value} is larger than {most} (max_integer_power)",
                             "max_integer_power", abs(value), most)


# Integers are exact in the language up to 2**53 (beyond it floats, which every operand may meet,
# skip integers); arithmetic between integer constants is done in Python, not in int32 arrays.
MAX_INT = 2**53
_EXACT = (f"integers are exact only up to ±2**53 ({MAX_INT}); write a float (e.g. 1e20) for a larger "
          "magnitude")
_INT32 = (-2**31, 2**31 - 1)
_INT_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
            ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b, ast.Pow: lambda a, b: a ** b}
# Where a function takes a shape: its position and keyword(s).
_SHAPE_ARGUMENT = {"zeros": (0, "shape"), "ones": (0, "shape"), "full": (0, "shape"),
                   "reshape": (1, "newshape", "shape"), "broadcast_to": (1, "shape"), "zeros_like": (2, "shape"),
                   "ones_like": (2, "shape"), "full_like": (3, "shape")}


def _signature(params: list[str]) -> inspect.Signature | None:
    try:
        return inspect.Signature([inspect.Parameter(p, inspect.Parameter.POSITIONAL_ONLY) for p in params])
    except ValueError:  # a parameter named like a Python keyword: legal here, not in a Signature
        return None


class _Tree:
    """A dict, list or tuple of the arguments (or a part of one) as the program holds it: it can be
    subscripted, bound to a name and returned, and nothing else. `path` says how it is reached
    from its parameter (`params['layers'][0]`), for messages."""

    __slots__ = ("path", "value")

    def __init__(self, value: dict | list | tuple, path: str) -> None:
        self.value = value
        self.path = path

    @staticmethod
    def wrap(value: Any, path: str) -> Any:
        return _Tree(value, path) if isinstance(value, (dict, list, tuple)) else value

    @staticmethod
    def unwrap(value: Any) -> Any:
        return value.value if isinstance(value, _Tree) else value

    def kind(self) -> str:
        if isinstance(self.value, dict):
            return f"an object with keys {_keys(self.value)}" if self.value else "an empty object"
        noun = "list" if isinstance(self.value, list) else "tuple"
        return f"a {noun} of {len(self.value)} entr{'y' if len(self.value) == 1 else 'ies'}"

    def example(self, written: str | None = None) -> str:
        first = min(self.value, key=str, default="W") if isinstance(self.value, dict) else 0
        return f"{written or self.path}[{first!r}]"

    def not_an_array(self, written: str) -> str:
        who = written if written == self.path else f"{written} ({self.path})"
        return f"{who} is {self.kind()}, not an array: index it, e.g. {self.example(written)}"

    def get(self, node: ast.AST, key: Any) -> Any:
        here = f"{self.path}[{key!r}]"
        if isinstance(self.value, dict):
            if key not in self.value:
                raise _fail(node, f"{here}: no key {key!r}; {self.path} has keys {_keys(self.value)}")
            return _Tree.wrap(self.value[key], here)
        n = len(self.value)
        if not _is_int(key):
            raise _fail(node, f"{here}: {self.path} is {self.kind()}; index it with an integer, e.g. "
                              f"{self.path}[0]")
        if not -n <= key < n:
            valid = f"valid indices are 0..{n - 1}, or -{n}..-1 from the end" if n else "it is empty"
            raise _fail(node, f"{here}: index {key} is out of range; {self.path} is {self.kind()}: {valid}")
        return _Tree.wrap(self.value[key], here)


_MAX_KEYS_SHOWN = 20


def _keys(d: dict) -> str:
    """A dict's keys for a message, sorted (as pytrees order them). The keys come from the caller's
    data, not the program: a long list, and a long key, are cut short to keep the message small."""
    keys = sorted(d, key=str)
    shown = [r if len(r) <= 40 else r[:37] + "..." for r in map(repr, keys[:_MAX_KEYS_SHOWN])]
    more = f", ... ({len(keys)} keys)" if len(keys) > _MAX_KEYS_SHOWN else ""
    return f"[{', '.join(shown)}{more}]"


def _written(node: ast.AST) -> str:
    """A construct as the program writes it, cut short for a message."""
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe_leaf(x: Any) -> str:
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    return f"a {type(x).__name__}"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _describe(x: Any) -> str:
    return f"{type(x).__name__} {x!r}"[:60] if _is_number(x) or isinstance(x, str) else type(x).__name__


def _argument(args: list[Any], kwargs: dict[str, Any], position: int, *keywords: str) -> Any:
    if len(args) > position:
        return args[position]
    return next((kwargs[k] for k in keywords if k in kwargs), None)


def _arange_size(node: ast.AST, args: list[Any]) -> int:
    try:
        nums = [float(a) for a in args[:3]]
        start, stop, step = [0.0, nums[0], 1.0] if len(nums) == 1 else (nums + [1.0])[:3]
        return int(max(0, math.ceil((stop - start) / step))) if step else 0
    except (TypeError, ValueError, IndexError, OverflowError):
        raise _fail(node, "arange: its bounds and step must be concrete numbers") from None


def _concrete_int(x: Any) -> Any:
    """A concrete integer scalar (a 0-d integer array too) as a Python int; anything else as it was."""
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Array) and x.ndim == 0 and x.dtype.kind in "iu":
        return int(x._value)
    return x


def _count(node: ast.AST, fname: str, n: Any) -> int:
    if not _is_int(n) and not isinstance(n, np.integer):
        raise _fail(node, f"{fname}: sizes must be integers, got {_describe(n)}", kind="value")
    if n < 0:
        raise _fail(node, f"{fname}: size {n} is negative; sizes must be non-negative", kind="value")
    return int(n)


def _int_arith(node: ast.BinOp, a: int, b: int) -> Any:
    """a op b for two integers, exactly; refused past ±2**53 (where it would stop being exact)."""
    if isinstance(node.op, ast.Pow):
        if b < 0:
            return _BINOPS[ast.Pow](a, b)  # the engine's rule: an integer to a negative power is an error
        if abs(a) > 1 and b > 53:  # past 2**53 for sure: refused without computing a huge number
            raise _fail(node, f"{a} ** {b} is larger than 2**53 in magnitude: {_EXACT}", kind="value")
    if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
        raise _fail(node, "integer division by zero", kind="value")
    result = _INT_OPS[type(node.op)](a, b)
    if abs(result) > MAX_INT:
        raise _fail(node, f"the integer result {result} is larger than 2**53 in magnitude: {_EXACT}", kind="value")
    return result


def _wide(value: Any) -> Any:
    """An integer outside int32 (JAX's default integer type) as an int64 array, and a list of
    numbers holding one as an int64 (or float) array: NumPy would otherwise wrap it around."""
    if _is_int(value):
        return value if _INT32[0] <= value <= _INT32[1] else Array(np.asarray(value, dtype=np.int64))
    if isinstance(value, (list, tuple)) and _holds_wide_int(value):
        data = np.asarray(value)
        return Array(data.astype(np.int64)) if data.dtype.kind in "iub" else value  # floats do not wrap
    return value


def _holds_wide_int(seq: Any) -> bool:
    """Whether nested lists/tuples of plain numbers hold an integer outside int32."""
    stack = [seq]
    found = False
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif _is_int(item):
            found = found or not _INT32[0] <= item <= _INT32[1]
        elif not _is_number(item) and not isinstance(item, bool):
            return False  # arrays or tracers inside: stacked by the engine, not converted here
    return found


def _literal_number(node: ast.expr) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal_number(node.operand)
        return -inner if inner is not None else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exp = _literal_number(node.left), _literal_number(node.right)
        if base is not None and exp is not None:
            if abs(exp) > 4096:
                return exp
            try:
                return float(base) ** float(exp)
            except OverflowError:
                return math.inf
    return None


def _kind(e: Exception) -> str:
    """The ExprError kind of an exception an operation raised, by its type."""
    if isinstance(e, (ShapeError, IndexError)):  # an index out of bounds does not fit the shape
        return "shape"
    if isinstance(e, DtypeError):
        return "dtype"
    if isinstance(e, (InvalidArgumentError, OverflowError, ZeroDivisionError)):
        return "value"
    return "invalid"


def compile_expression(source: str, params: list[str], limits: Limits = DEFAULT_LIMITS) -> Program:
    """Parse and validate a program; the result is a callable over engine arrays and tracers."""
    return Program(source, params, limits)
