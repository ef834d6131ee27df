"""Every primitive's batching rule against a loop over the examples.

For each declared primitive there is a case below: operands and attributes for one equation.
The equation is evaluated with a batch of 3 examples along a leading axis of each subset of its
operands (engine.batching.eval_batched, which applies the primitive's `batch` rule once), and
compared with evaluating it on each example in turn and stacking the results. The one case a
rule cannot do in one pass (indexing with a batched index array) must say so (NotBatchable),
and the per-example fallback must then agree with the loop too. A primitive without a case here
fails `test_every_primitive_has_a_case`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _graphs import run

import engine.numpy as jnp
from engine import primitives as P
from engine.array import Array
from engine.batching import NotBatchable, eval_batched
from engine.core import ShapedArray, trace_flat
from engine.custom import custom_jvp, custom_vjp
from engine.primitive import DECLARED

N = 3  # examples in a batch
Gen = Callable[[np.random.Generator], np.ndarray]


def real(*shape: int, lo: float = -2.0, hi: float = 2.0) -> Gen:
    return lambda rng: rng.uniform(lo, hi, shape)


def positive(*shape: int) -> Gen:
    return real(*shape, lo=0.5, hi=2.0)


def unit(*shape: int) -> Gen:
    return real(*shape, lo=-0.8, hi=0.8)


def boolean(*shape: int) -> Gen:
    return lambda rng: rng.uniform(-1, 1, shape) > 0


def integers(*shape: int, lo: int = 0, hi: int = 4) -> Gen:
    return lambda rng: rng.integers(lo, hi, shape)


def distinct_indices(n: int, below: int) -> Gen:
    return lambda rng: rng.permutation(below)[:n]


def spd(n: int) -> Gen:
    def make(rng: np.random.Generator) -> np.ndarray:
        m = rng.uniform(-1, 1, (n, n))
        return m @ m.T + n * np.eye(n)
    return make


@custom_jvp
def _softplus(x: Any) -> Any:
    return jnp.log1p(jnp.exp(x))


_softplus.defjvp(lambda primals, tangents: (_softplus(primals[0]), tangents[0] / (1 + jnp.exp(-primals[0]))))


@custom_vjp
def _scaled_sin(x: Any, y: Any) -> Any:
    return jnp.sin(x) * y


_scaled_sin.defvjp(lambda x, y: (_scaled_sin(x, y), (x, y)),
                   lambda r, g: (jnp.cos(r[0]) * r[1] * g, jnp.sin(r[0]) * g))

UNARY = ["neg", "exp", "expm1", "sin", "cos", "atan", "sinh", "cosh", "tanh", "asinh", "logistic", "abs", "sign",
         "floor", "ceil", "round", "erf", "trunc"]
# name -> list of (operand generators, attributes)
CASES: dict[str, list[tuple[list[Gen], dict[str, Any]]]] = {name: [([real(2, 3)], {})] for name in UNARY}
CASES.update({
    "log": [([positive(2, 3)], {})], "log1p": [([positive(2, 3)], {})], "sqrt": [([positive(2, 3)], {})],
    "tan": [([unit(2, 3)], {})], "asin": [([unit(2, 3)], {})], "acos": [([unit(2, 3)], {})],
    "atanh": [([unit(2, 3)], {})], "acosh": [([real(2, 3, lo=1.2, hi=3.0)], {})],
    "integer_pow": [([real(2, 3)], {"y": 3}), ([real(2, 3)], {"y": -2})],
})
for _name in ("add", "sub", "mul", "max", "min", "atan2", "hypot"):
    CASES[_name] = [([real(2, 3), real(3)], {}), ([real(), real(2, 3)], {})]
CASES.update({
    "div": [([real(2, 3), positive(3)], {})], "pow": [([positive(2, 3), real(3)], {})],
    "rem": [([real(2, 3), positive(3)], {})],
    "select": [([boolean(2, 3), real(2, 3), real(3)], {})],
    "convert_element_type": [([real(2, 3)], {"dtype": "float32"}), ([real(2, 3)], {"dtype": "int32"})],
    "stop_gradient": [([real(2, 3)], {})],
    "floor_divide_int": [([integers(2, 3, lo=-9, hi=9), integers(3, lo=1, hi=4)], {})],
    "not": [([boolean(2, 3)], {})], "isfinite": [([real(2, 3)], {})], "isnan": [([real(2, 3)], {})],
    "frexp_exponent": [([real(2, 3)], {})],
    "reduce_sum": [([real(2, 3, 4)], {"axes": (0, 2)})], "reduce_max": [([real(2, 3, 4)], {"axes": (1,)})],
    "reduce_min": [([real(2, 3, 4)], {"axes": (0, 1, 2)})], "reduce_prod": [([real(2, 3, 4)], {"axes": (2,)})],
    "reduce_and": [([boolean(2, 3)], {"axes": (1,)})], "reduce_or": [([boolean(2, 3)], {"axes": (0,)})],
    "argmax": [([real(2, 3)], {"axis": 1}), ([real(2, 3)], {"axis": -1})],
    "argsort": [([real(2, 3)], {"axis": 1}), ([real(2, 3)], {"axis": -1}), ([real(4, 3)], {"axis": 0})],
    "argmin": [([real(2, 3)], {"axis": 0})],
    "cumsum": [([real(2, 3)], {"axis": 1, "reverse": True}), ([real(2, 3)], {"axis": 0, "reverse": False})],
    "reshape": [([real(2, 3)], {"shape": (3, 2)})],
    "transpose": [([real(2, 3, 4)], {"perm": (2, 0, 1)})],
    "broadcast_to": [([real(3)], {"shape": (2, 3)}), ([real(1, 3)], {"shape": (4, 2, 3)})],
    "concatenate": [([real(2, 3), real(2, 1), real(2, 2)], {"axis": 1})],
    "gather": [([real(4, 3)], {"index": (("int", 1), ("slice", None, None, -1))}),
               ([real(4, 3), integers(2)], {"index": (("array", 0), ("slice", 1, None, None))})],
    "index_update": [([real(4, 3), real(2, 3), distinct_indices(2, 4)], {"index": (("array", 0),), "mode": mode})
                     for mode in ("set", "add", "mul")]
                    + [([real(4, 3), real(3)], {"index": (("int", 2),), "mode": "set"})],
    "matmul": [([real(2, 3), real(3, 4)], {}), ([real(3, 3), real(3, 1)], {}), ([real(2, 2, 3), real(3, 2)], {})],
    "einsum": [([real(2, 3), real(3, 4), real(4)], {"spec": "ij,jk,k->i"})],
    "solve": [([spd(3), real(3, 2)], {})],
    "inv": [([spd(3)], {})], "det": [([spd(3)], {})],
    "cofactor": [([spd(3)], {}), ([real(3, 3)], {}), ([real(5, 5)], {})],
    "cofactor_derivative": [([spd(3), real(3, 3)], {}), ([real(5, 5), real(5, 5)], {})],
    "logabsdet": [([spd(3)], {})], "det_sign": [([spd(3)], {})],
    "cholesky": [([spd(3)], {})],
    "svd": [([real(4, 3)], {"full_matrices": False}), ([real(3, 4)], {"full_matrices": True})],
    "qr": [([real(4, 3)], {"full_matrices": False}), ([real(4, 3)], {"full_matrices": True})],
    "eigh": [([spd(3)], {})], "eig": [([spd(3)], {})],
    "pinv": [([real(4, 3), real(lo=1e-6, hi=1e-3)], {}), ([real(2, 3, 4), real(2, lo=1e-6, hi=1e-3)], {})],
})
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    CASES[_name] = [([real(2, 3), real(3)], {})]
for _name in ("and", "or", "xor"):
    CASES[_name] = [([boolean(2, 3), boolean(3)], {})]


def complex_values(*shape: int) -> Gen:
    return lambda rng: rng.uniform(-2, 2, shape) + 1j * rng.uniform(-2, 2, shape)


CASES.update({  # complex parts and the DFT (engine.primitives_fft)
    "real": [([complex_values(2, 3)], {})], "imag": [([complex_values(2, 3)], {})],
    "conj": [([complex_values(2, 3)], {})], "complex": [([real(2, 3), real(3)], {}), ([real(), real(2, 3)], {})],
    "fft": [([complex_values(2, 4)], {"fft_type": "fft", "fft_lengths": (4,)}),
            ([complex_values(2, 3, 4)], {"fft_type": "ifft", "fft_lengths": (3, 4)}),
            ([real(2, 5)], {"fft_type": "rfft", "fft_lengths": (5,)}),
            ([complex_values(3, 3)], {"fft_type": "irfft", "fft_lengths": (3, 4)})],
})
CASES.update({  # special functions (engine.primitives_special)
    "lgamma": [([positive(2, 3)], {})], "digamma": [([positive(2, 3)], {})], "erfc": [([real(2, 3)], {})],
    "erf_inv": [([unit(2, 3)], {})], "ndtri": [([real(2, 3, lo=0.1, hi=0.9)], {})],
    "log_ndtr": [([real(2, 3, lo=-30.0, hi=6.0)], {})],
    "bessel_i0": [([real(2, 3)], {})], "bessel_i1": [([real(2, 3)], {})], "bessel_i0e": [([real(2, 3)], {})],
    "bessel_i1e": [([real(2, 3)], {})],
    # the order n is an integer-valued float operand
    "polygamma": [([lambda rng: rng.integers(0, 4, (2, 3)).astype(np.float64), positive(3)], {})],
    "igamma": [([positive(2, 3), positive(3)], {}), ([positive(), real(2, 3, lo=0.0, hi=5.0)], {})],
    "igammac": [([positive(2, 3), positive(3)], {})],
})
# Primitives that call Python code are applied by calling the function on tracers.
CALLS: dict[str, tuple[list[Gen], Callable[..., Any]]] = {
    "custom_jvp_call": ([real(2, 3)], _softplus),
    "custom_vjp_call": ([real(2, 3), real(3)], _scaled_sin),
}


def test_every_primitive_has_a_case() -> None:
    assert set(CASES) | set(CALLS) == {p.name for p in DECLARED}


def _params() -> list[Any]:
    params = []
    for name, cases in CASES.items():
        for k, (gens, attrs) in enumerate(cases):
            for batched in itertools.product([False, True], repeat=len(gens)):
                if any(batched):
                    which = "".join("b" if b else "u" for b in batched)  # batched or unbatched operands
                    params.append(pytest.param(name, gens, attrs, batched, id=f"{name}-{k}-{which}"))
    return params


def _graph(apply: Callable[..., Any], operands: list[np.ndarray]) -> Any:
    """The graph of one application on operands like these (traced abstractly)."""
    def flat(*xs: Any) -> list[Any]:
        out = apply(*xs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    graph, _ = trace_flat(flat, [ShapedArray(np.shape(x), np.asarray(x).dtype) for x in operands])
    return graph


def _check(graph: Any, gens: list[Gen], batched: tuple[bool, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    examples = [[g(rng) for _ in range(N)] for g in gens]
    args = [np.stack(ex) if b else ex[0] for ex, b in zip(examples, batched)]
    loop = [run(graph, *[ex[i] if b else ex[0] for ex, b in zip(examples, batched)]) for i in range(N)]
    want = [np.stack([results[j] for results in loop]) for j in range(len(loop[0]))]
    try:
        outs, flags = eval_batched(graph, [Array(a) for a in args], list(batched), N)
    except NotBatchable:
        # only indexing with a batched index array may refuse one pass; then it runs per example
        eqn = graph.eqns[-1]
        first_index = 1 if eqn.prim is P.gather_p else 2
        assert eqn.prim in (P.gather_p, P.index_update_p) and any(batched[first_index:])
        outs, flags = eval_batched(graph, [Array(a) for a in args], list(batched), N, per_example_fallback=True)
    for out, flag, expected in zip(outs, flags, want):
        got = np.asarray(out._value)
        got = got if flag else np.broadcast_to(got, (N,) + got.shape)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
        else:
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name, gens, attrs, batched", _params())
def test_batching_rule_agrees_with_a_loop(name: str, gens: list[Gen], attrs: dict[str, Any],
                                          batched: tuple[bool, ...]) -> None:
    prim = P.PRIMITIVES[name]
    rng = np.random.default_rng(0)
    graph = _graph(lambda *xs: prim(*xs, **attrs), [g(rng) for g in gens])
    assert [e.prim for e in graph.eqns] == [prim]
    _check(graph, gens, batched, seed=1)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_batching_a_call_of_python_code_agrees_with_a_loop(name: str) -> None:
    gens, fn = CALLS[name]
    rng = np.random.default_rng(0)
    graph = _graph(fn, [g(rng) for g in gens])
    assert [e.prim.name for e in graph.eqns] == [name]
    for batched in itertools.product([False, True], repeat=len(gens)):
        if any(batched):
            _check(graph, gens, batched, seed=2)
