"""The elementwise functions of issue 15: fmax, fmin, fabs, deg2rad/radians, rad2deg/degrees,
logaddexp2, sinc, nan_to_num, frexp, isclose and allclose.

Reference numbers (values, first and second derivatives in float64) were computed with
jax 0.x's jax.numpy under jax_enable_x64 and are stored here; the test does not call JAX.
Derivatives are also checked against finite differences (engine.test_util.check_grads) and
closed forms, jit against eager, and vmap against a loop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
import engine.numpy as jnp
from engine.expr import FUNCTIONS
from engine.test_util import check_grads

pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


X = np.array([-1.7, -0.3, 0.45, 1.2, 2.5])
Y = np.array([0.8, -0.3, 1.1, -2.0, 2.4])  # Y[1] == X[1]: a tie


def d1(f):
    return engine.vmap(engine.grad(f))


def d2(f):
    return engine.vmap(engine.grad(engine.grad(f)))


# (value, first derivative, second derivative) at X, from JAX
UNARY_REFERENCE = {
    "sinc": ([-0.15148123964720117, 0.8583936913341398, 0.6986465850664342, -0.15591488063143982,
              0.12732395447351627],
             [-0.43486264231745536, 0.902028130138889, -1.2049158222804517, -0.5442517614529231,
              -0.05092958178940639],
             [0.9834568008957175, -2.4584852862661752, -1.5401839784201663, 2.4459044611635856,
              -1.215893396004392]),
    "deg2rad": ([-0.029670597283903602, -0.005235987755982988, 0.007853981633974483, 0.020943951023931952,
                 0.04363323129985824], [0.017453292519943295] * 5, [0.0] * 5),
    "rad2deg": ([-97.40282517223994, -17.188733853924695, 25.783100780887047, 68.75493541569878,
                 143.2394487827058], [57.29577951308232] * 5, [0.0] * 5),
    "fabs": ([1.7, 0.3, 0.45, 1.2, 2.5], [-1.0, -1.0, 1.0, 1.0, 1.0], [0.0] * 5),
}
UNARY_REFERENCE["radians"] = UNARY_REFERENCE["deg2rad"]
UNARY_REFERENCE["degrees"] = UNARY_REFERENCE["rad2deg"]


@pytest.mark.parametrize("name", sorted(UNARY_REFERENCE))
def test_unary_values_and_derivatives_match_jax(name: str) -> None:
    f = getattr(jnp, name)
    value, first, second = UNARY_REFERENCE[name]
    np.testing.assert_allclose(f(X), value, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d1(f)(X), first, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d2(f)(X), second, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(engine.jit(f)(X), f(X), rtol=1e-15)


# (value, d/dx, d/dy, d2/dx2, d2/dxdy) at (X, Y), from JAX
BINARY_REFERENCE = {
    "logaddexp2": ([1.0348405810792018, 0.7, 1.811301342280011, 1.34902365021822, 3.4508662605808964],
                   [0.15022110482233486, 0.5, 0.38923103658113933, 0.9018605939863281, 0.5173217448321853],
                   [0.8497788951776651, 0.5, 0.6107689634188608, 0.09813940601367188, 0.48267825516781476],
                   [0.08848351236421616, 0.17328679513998632, 0.1647820433323358, 0.06134911432593437,
                    0.1730788212885988],
                   [-0.08848351236421616, -0.17328679513998632, -0.16478204333233581, -0.061349114325934345,
                    -0.17307882128859883]),
    # at the tie (index 1) the whole derivative goes to the second operand
    "fmax": ([0.8, -0.3, 1.1, 1.2, 2.5], [0, 0, 0, 1, 1], [1, 1, 1, 0, 0], [0] * 5, [0] * 5),
    "fmin": ([-1.7, -0.3, 0.45, -2.0, 2.4], [1, 0, 1, 0, 0], [0, 1, 0, 1, 1], [0] * 5, [0] * 5),
}


@pytest.mark.parametrize("name", sorted(BINARY_REFERENCE))
def test_binary_values_and_derivatives_match_jax(name: str) -> None:
    f = getattr(jnp, name)
    value, dx, dy, dxx, dxy = BINARY_REFERENCE[name]
    np.testing.assert_allclose(f(X, Y), value, rtol=1e-13)
    np.testing.assert_allclose(engine.vmap(engine.grad(f, 0))(X, Y), dx, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(engine.vmap(engine.grad(f, 1))(X, Y), dy, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(engine.vmap(engine.grad(engine.grad(f, 0), 0))(X, Y), dxx, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(engine.vmap(engine.grad(engine.grad(f, 0), 1))(X, Y), dxy, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(engine.jit(f)(X, Y), f(X, Y), rtol=1e-15)


def test_logaddexp2_is_log2_of_a_sum_of_powers_without_overflow() -> None:
    np.testing.assert_allclose(jnp.logaddexp2(X, Y), np.log2(2.0**X + 2.0**Y), rtol=1e-14)
    assert float(jnp.logaddexp2(2000.0, 2000.0)) == 2001.0
    assert float(jnp.logaddexp2(-np.inf, 3.0)) == 3.0
    # d/dx = 2**x / (2**x + 2**y)
    np.testing.assert_allclose(engine.vmap(engine.grad(jnp.logaddexp2))(X, Y), 2.0**X / (2.0**X + 2.0**Y), rtol=1e-13)
    check_grads(lambda a, b: jnp.sum(jnp.logaddexp2(a, b) ** 2), (X + 0.1, Y), order=2)


def test_fmax_and_fmin_ignore_a_nan_on_one_side() -> None:
    nan = np.nan
    a = np.array([1.0, nan, 3.0, nan, np.inf, -np.inf])
    b = np.array([2.0, 1.0, nan, nan, nan, 5.0])
    np.testing.assert_array_equal(jnp.fmax(a, b), np.fmax(a, b))
    np.testing.assert_array_equal(jnp.fmin(a, b), np.fmin(a, b))
    # the derivative goes to the operand chosen (the first where both are NaN, as JAX's where does)
    np.testing.assert_array_equal(engine.grad(lambda u: jnp.sum(jnp.fmax(u, b)))(a), [0, 0, 1, 1, 1, 0])
    assert jnp.fmax(np.array([1, 5], np.int32), np.array([4, 2], np.int32)).dtype == np.int32


def test_fabs_promotes_integers_and_refuses_complex_numbers() -> None:
    out = jnp.fabs(np.array([-5, 9], np.int32))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [5.0, 9.0])
    with pytest.raises(TypeError, match="complex"):
        jnp.fabs(np.array([1 + 1j]))


def test_sinc_derivatives_at_zero_are_the_maclaurin_coefficients() -> None:
    # sinc(x) = 1 - (pi x)**2 / 3! + (pi x)**4 / 5! - ...: the n-th derivative at 0 is
    # (-1)**(n/2) pi**n / (n + 1) for even n and 0 for odd n (JAX: 1, 0, -3.2898681336964524, 0,
    # 19.481818206800487).
    jax_numbers = [1.0, 0.0, -3.2898681336964524, 0.0, 19.481818206800487]
    f = jnp.sinc
    for n in range(7):
        closed = 0.0 if n % 2 else (-1) ** (n // 2) * math.pi**n / (n + 1)
        assert float(f(0.0)) == pytest.approx(closed, rel=1e-12, abs=1e-12), n
        assert float(engine.jit(f)(0.0)) == pytest.approx(closed, rel=1e-12, abs=1e-12), n
        if n < len(jax_numbers):
            assert float(f(0.0)) == pytest.approx(jax_numbers[n], rel=1e-13, abs=1e-15)
        f = engine.grad(f)


def test_sinc_is_smooth_across_zero() -> None:
    check_grads(jnp.sinc, (np.array([-0.4, 0.0, 1e-9, 0.7]),), order=2)
    assert jnp.sinc(np.array([0, 1, 2])).dtype == np.float64  # integers are promoted
    np.testing.assert_allclose(jnp.sinc(np.array([1e-8, 0.25])), np.sinc(np.array([1e-8, 0.25])), rtol=1e-15)


def test_nan_to_num_matches_jax() -> None:
    out = jnp.nan_to_num(np.array([np.nan, np.inf, -np.inf, 1.5]))
    np.testing.assert_array_equal(out, [0.0, 1.7976931348623157e308, -1.7976931348623157e308, 1.5])
    small = jnp.nan_to_num(np.array([np.nan, np.inf, -np.inf], np.float32), nan=1.0, posinf=2.0)
    assert small.dtype == np.float32
    np.testing.assert_array_equal(small, np.array([1.0, 2.0, -3.4028235e38], np.float32))
    ints = np.array([1, 2], np.int32)
    assert jnp.nan_to_num(ints).dtype == np.int32
    # derivative: 1 where finite, 0 where replaced
    grad = engine.grad(lambda x: jnp.sum(jnp.nan_to_num(x) * 0.5))(np.array([np.nan, 2.0, np.inf]))
    np.testing.assert_array_equal(grad, [0.0, 0.5, 0.0])


def test_frexp_values_are_numpys_and_the_mantissa_derivative_is_two_to_minus_e() -> None:
    x = np.array([3.0, -0.1, 1e-310, 5e-324, 1024.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 1.7976931348623157e308])
    m, e = jnp.frexp(x)
    want_m, want_e = np.frexp(x)
    np.testing.assert_array_equal(m, want_m)
    np.testing.assert_array_equal(e, want_e)
    assert e.dtype == np.int32
    # JAX: frexp([3.0, -0.1, 1024.0]) == ([0.75, -0.8, 0.5], [2, -3, 11]). For the subnormal 1e-310
    # JAX gives (0.5, -1074), which is 2.5e-324 (its CPU backend flushes subnormals); the exact
    # (0.5752618031559393, -1029) is NumPy's, and the engine's.
    np.testing.assert_array_equal(m[[0, 1, 4]], [0.75, -0.8, 0.5])
    np.testing.assert_array_equal(e[[0, 1, 4]], [2, -3, 11])
    assert float(m[2]) * 2.0 ** int(e[2]) == 1e-310
    for dtype in (np.float32, np.float16):
        small = np.array([3.0, -0.1, 1e-40 if dtype == np.float32 else 1e-7, 65504.0], dtype)
        got_m, got_e = jnp.frexp(small)
        assert got_m.dtype == dtype
        np.testing.assert_array_equal(got_m, np.frexp(small)[0])
        np.testing.assert_array_equal(got_e, np.frexp(small)[1])
    points = np.array([3.0, -0.1, 1024.0])
    grad = engine.vmap(engine.grad(lambda v: jnp.frexp(v)[0]))(points)
    np.testing.assert_allclose(grad, [0.25, 8.0, 2.0**-11], rtol=1e-15)  # JAX: 0.25, 7.99..98, 4.88..e-04
    jm, je = engine.jit(jnp.frexp)(x)
    np.testing.assert_array_equal(jm, want_m)
    np.testing.assert_array_equal(je, want_e)


def test_isclose_and_allclose_match_jax() -> None:
    a = np.array([1.0, np.inf, np.nan, -np.inf, 2.0, 1e-9, 1e6])
    b = np.array([1.0 + 1e-6, np.inf, np.nan, np.inf, 2.1, 0.0, 1e6 + 5])
    np.testing.assert_array_equal(jnp.isclose(a, b), [True, True, False, False, False, True, True])
    np.testing.assert_array_equal(jnp.isclose(a, b, equal_nan=True), [True, True, True, False, False, True, True])
    np.testing.assert_array_equal(jnp.isclose(a, b, rtol=0.1, atol=0.0), [True, True, False, False, True, False, True])
    np.testing.assert_array_equal(engine.jit(jnp.isclose)(a, b), jnp.isclose(a, b))
    finite_a, finite_b = np.random.default_rng(0).normal(size=(2, 50)) * 1e-5 + 1.0
    np.testing.assert_array_equal(jnp.isclose(finite_a, finite_b), np.isclose(finite_a, finite_b))
    assert bool(jnp.allclose(a[:2], b[:2])) and not bool(jnp.allclose(a, b))
    assert bool(jnp.allclose(a, a, equal_nan=True))
    assert jnp.allclose(1.0, 1.0).shape == () and jnp.isclose(a, b).dtype == np.bool_


def test_the_functions_batch_under_vmap() -> None:
    rows = np.random.default_rng(1).normal(size=(4, 3))
    for f in (jnp.sinc, jnp.fabs, jnp.deg2rad, jnp.rad2deg, jnp.nan_to_num, lambda r: jnp.frexp(r)[0]):
        np.testing.assert_allclose(engine.vmap(f)(rows), np.stack([f(r) for r in rows]), rtol=1e-15)
    for f in (jnp.fmax, jnp.fmin, jnp.logaddexp2, jnp.isclose):
        looped = np.stack([f(r, s) for r, s in zip(rows, rows[::-1])])
        np.testing.assert_array_equal(engine.vmap(f)(rows, rows[::-1]), looped)


def test_the_expression_language_has_every_function() -> None:
    for name in ("fmax", "fmin", "fabs", "deg2rad", "radians", "rad2deg", "degrees", "logaddexp2", "sinc",
                 "nan_to_num", "frexp", "allclose", "isclose"):
        assert FUNCTIONS[name] is getattr(jnp, name)
    program = engine.compile_expression("sum(sinc(x) * fmax(x, 0.1) + logaddexp2(x, degrees(x)) + frexp(x)[0])",
                                        ["x"])
    x = np.array([0.0, 0.6, -1.3])
    want = (np.sinc(x) * np.fmax(x, 0.1) + np.logaddexp2(x, np.degrees(x)) + np.frexp(x)[0]).sum()
    assert float(program(x)) == pytest.approx(want, rel=1e-13)
