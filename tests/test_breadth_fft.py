"""engine.numpy.fft and complex values (issue 15): values, derivatives and conventions.

Values are checked against numpy.fft; first and second derivatives against numbers derived from
JAX 0.10.2 in float64 (stored below: the programs, each written once for a module `xp` that is
either jax.numpy or engine.numpy, were run through JAX by tests/data/derive_fft_reference.py) and
against central finite differences. Complex inputs follow JAX's convention: for a real function f
of z = x + iy, grad(f)(z) = df/dx - i df/dy, so finite differences run on the real and imaginary
parts separately. Also: jit against eager, vmap against a loop, graph documents, refusals.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest

import array_codec
import engine
import engine.numpy as jnp
from engine.errors import DifferentiationError, DtypeError, InvalidArgumentError, ShapeError
from engine.expr import FUNCTIONS, Program
from engine.primitives import PRIMITIVES
from engine.primitives_fft import complex_p
from engine.serialize import SCHEMA_PATH, GraphFormatError, graph_to_json, load_graph
from engine.test_util import check_grads

pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


# ----------------------------------------------------------------------------- programs and JAX numbers
# Each entry: name -> (function of an array, its argument). Run as written through JAX to make
# the reference numbers below.
X6 = np.sin(np.arange(6) * 1.3 + 0.2)
X34 = np.cos(np.arange(12).reshape(3, 4) * 0.7 - 0.4) + 0.1 * np.arange(12).reshape(3, 4) / 12
Y234 = np.sin(np.arange(24).reshape(2, 3, 4) * 0.37 + 1.1)
W34 = np.linspace(-1.0, 1.5, 12).reshape(3, 4)
Z5 = np.sin(np.arange(5) * 0.9 + 0.3) + 1j * np.cos(np.arange(5) * 1.7 - 0.2)
Z23 = (np.linspace(-1.0, 1.0, 6) + 1j * np.linspace(0.5, -0.7, 6) ** 2).reshape(2, 3)


def real_programs(xp):
    f = xp.fft
    return {
        "rfft_power": (lambda x: xp.sum(xp.abs(f.rfft(x)) ** 2 * xp.arange(4.0)), X6),
        "fft_n_ortho": (lambda x: xp.sum(xp.real(f.fft(x, n=8, norm="ortho")) ** 3)
                        + xp.sum(xp.imag(f.fft(x, n=4)) * x[:4]), X6),
        "ifft_forward": (lambda x: xp.sum(xp.sin(xp.real(f.ifft(x, norm="forward"))) * xp.arange(6.0))
                         + xp.sum(xp.imag(f.ifft(x * x)) * xp.arange(6.0)), X6),
        "irfft_odd": (lambda x: xp.sum(f.irfft(f.rfft(x) * f.rfft(x), n=5) ** 2), X6),
        "fft2_abs": (lambda x: xp.sum(xp.abs(f.fft2(x))), X34),
        "rfft2_s": (lambda x: xp.sum(xp.real(f.rfft2(x, s=(4, 6))) * xp.imag(f.rfft2(x, s=(4, 6)))), X34),
        "irfft2_axes": (lambda x: xp.sum(f.irfft2(f.rfft2(x) * x[:, :3], s=(3, 4), axes=(0, 1)) ** 3), X34),
        "fftn_ifftn": (lambda x: xp.sum(xp.real(f.ifftn(f.fftn(x) ** 2, axes=(1,))) * W34), X34),
        "rfftn_3d": (lambda x: xp.sum(xp.abs(f.rfftn(x, axes=(0, 2)))), Y234),
        "irfftn_ortho": (lambda x: xp.sum(xp.cos(f.irfftn(f.rfftn(x, norm="ortho") ** 2, s=(3, 4), norm="ortho"))),
                         X34),
        "shifts": (lambda x: xp.sum(f.fftshift(x) * W34) + xp.sum(f.ifftshift(x, axes=0) ** 2 * W34)
                   + xp.sum(f.fftshift(x, axes=1) * f.ifftshift(x)), X34),
    }


def complex_programs(xp):
    f = xp.fft
    return {
        "abs_fft": (lambda z: xp.sum(xp.abs(f.fft(z))), Z5),
        "conj_mul": (lambda z: xp.real(xp.sum(z * xp.conj(z) * z)) + xp.imag(xp.sum(z * z)), Z5),
        "irfft_of_complex": (lambda z: xp.sum(f.irfft(z, n=8) ** 2 * xp.arange(8.0)), Z5),
        "fft2_parts": (lambda z: xp.sum(xp.real(f.fft2(z)) * xp.imag(f.ifft2(z))) + xp.sum(xp.abs(z) ** 3), Z23),
    }

# name -> (value, grad, jvp of grad along DIRECTION(x)), from JAX in float64.
REAL_REFERENCE = {
    'rfft_power': (10.779696859689954,
        np.array([-5.472602948946438 , 10.085113851472403 , -0.5763524796558217, -3.3425335724906367,
 -8.768191021100478 ,  8.07456617072097  ]),
        np.array([-14.399999999999999 ,   2.3999999999999995,  -4.800000000000001 ,   4.800000000000002 ,
  -2.3999999999999995,  14.400000000000002 ])),
    'fft_n_ortho': (-2.7114301625034107,
        np.array([ 1.353086442095306  , -2.9787275796886736 , -0.11352381259571136,  2.830601399058325  ,
 -0.7035700734496939 , -0.8009427962786054 ]),
        np.array([-2.6370804558856022 , -0.7864648298347643 ,  0.16550977266281724,  0.2625995932138152 ,
  3.353791383801866  ,  1.8625995932138155 ])),
    'ifft_forward': (-2.5299178063058285,
        np.array([ 2.602664049471074 , -6.1973688824106885,  1.5647968580415295,  2.8202450077446333,
  1.3120465717987435, -3.768436253369055 ]),
        np.array([ -2.340195282397241 ,  10.251857146422171 ,  -2.6742958242036505, -10.505526285281299 ,
  -2.4433557165278   ,  10.94467746944972  ])),
    'irfft_odd': (14.822628045987969,
        np.array([ 15.890299425283484 ,  21.660170281872077 ,   5.058297285998313 , -20.8075274970463   ,
 -20.85007761003329  ,  -0.7541236835772639]),
        np.array([-53.21211576697544 , -60.541509480283636,  -9.04806758008396 ,  36.28119797977348 ,
  62.2601833470594  ,  24.260311500510152])),
    'fft2_abs': (23.556808572822252,
        np.array([[ 4.790631137359121 ,  4.041856574929314 ,  4.543343771521384 , -6.364811397899499 ],
 [-2.2091569913691926, -2.156087923032123 , -0.6707691110852394,  1.1117565555263835],
 [ 2.525821868322392 ,  4.047449664829182 ,  3.0201293252515358, -0.6801634743532576]]),
        np.array([[-5.472481086592525 , -2.286638810612219 ,  2.027665328883458 , -1.1581769470968488],
 [-3.4948525358803915, -0.309010259900085 ,  4.005293879595591 ,  0.819451603615285 ],
 [-2.2828860007410574,  0.9029562752392488,  5.217260414734927 ,  2.031418138754619 ]])),
    'rfft2_s': (-5.843712591777194,
        np.array([[-6.6765003768790487e+00, -6.3812977539315590e+00, -7.1945576082457974e-01,
   3.8587942346788755e+00],
 [-8.8817841970012523e-16, -2.2204460492503131e-16,  4.4408920985006262e-16,
   8.8817841970012523e-16],
 [-6.9453743021623486e+00, -3.7078589308928960e+00,  4.2798572514036861e+00,
   7.1607547823097786e+00]]),
        np.array([[ 5.6685299156799624e+00,  6.9282032302755088e+00, -3.1491832864888694e+00,
  -4.4088566010844144e+00],
 [ 1.1102230246251565e-16,  0.0000000000000000e+00,  0.0000000000000000e+00,
   1.1102230246251565e-16],
 [-4.4088566010844144e+00, -3.1491832864888676e+00,  6.9282032302755079e+00,
   5.6685299156799616e+00]])),
    'irfft2_axes': (0.9160149509699872,
        np.array([[ 2.0469506155775843 ,  1.1703600018002505 ,  0.30487788125435683, -0.409795195814566  ],
 [ 0.21703315156422215, -1.333678483735994  ,  0.5682997738930712 ,  0.7374553371301569 ],
 [-0.08796299708866512,  0.6519221424728203 ,  1.0255488603414078 ,  0.02179168201099821]]),
        np.array([[-2.419286961397585  , -2.377594593985448  , -0.37452102723414765,  0.39479963167119203],
 [ 0.10409374134125238,  0.7598648796400864 , -0.5062243928387462 , -0.4029049113311322 ],
 [ 0.874002652290774  , -1.4858374822651375 , -1.0056429828139064 , -0.1841116934213477 ]])),
    'fftn_ifftn': (-35.88309216786177,
        np.array([[ -0.5960365932097007,   3.158372413903759 ,   3.308344329215415 ,   1.239947972213617 ],
 [  5.565629427956398 ,   6.544713712310431 ,   5.255679408060331 ,   4.136213255889295 ],
 [-17.629720955046643 , -20.282142563369284 , -19.724535558144808 , -17.98601525278109  ]]),
        np.array([[-11.05785123966942   , -12.545454545454543  , -13.041322314049584  , -12.545454545454543  ],
 [ 13.537190082644626  ,  12.049586776859503  ,  11.553719008264462  ,  12.049586776859503  ],
 [  1.2396694214876032 ,  -0.24793388429752028,  -0.7438016528925617 ,  -0.24793388429752028]])),
    'rfftn_3d': (31.624844286152754,
        np.array([[[ 1.7337054185065004 ,  2.2564348475934537 ,  2.2662945814935    ,  1.7435651524065463 ],
  [ 3.3128816253418707 , -0.540350972395736  ,  0.6871183746581291 , -3.459649027604264  ],
  [-1.687487387219154  , -2.2606660457764676 , -2.312512612780846  , -1.7393339542235327 ]],

 [[-3.363385460792939  ,  0.5841933570909656 , -0.6366145392070612 ,  3.4158066429090344 ],
  [ 1.7161372681982052 ,  2.255320393912504  ,  2.2838627318017948 ,  1.7446796060874958 ],
  [ 3.254261431105838  , -0.49626553478598345,  0.7457385688941618 , -3.5037344652140163 ]]]),
        np.array([[[ 0.05177365632243665 , -0.07277604541164971 , -0.05177365632243709 ,  0.07277604541164927 ],
  [-0.1362297901537126  ,  0.08174083232760453 ,  0.13622979015371303 , -0.08174083232760408 ],
  [ 0.033579989957013265, -0.04232450590485587 , -0.0335799899570136  ,  0.042324505904855314]],

 [[ 0.05177365632243673 , -0.0727760454116494  , -0.05177365632243673 ,  0.0727760454116494  ],
  [-0.13622979015371298 ,  0.081740832327604   ,  0.13622979015371253 , -0.08174083232760444 ],
  [ 0.03357998995701307 , -0.04232450590485576 , -0.033579989957013404,  0.0423245059048552  ]]])),
    'irfftn_ortho': (6.770175521615192,
        np.array([[-1.213201570416556 , -1.220444629884296 , -0.9055718474747476, -0.8582537126359091],
 [ 2.871026909389525 ,  3.106896591742954 ,  2.921960326197416 ,  2.656460046259371 ],
 [-1.9275348394159004, -2.08528678254985  , -2.2892154374800624, -2.15710747872767  ]]),
        np.array([[ 2.796294880512452  ,  2.6057423536334077 ,  2.413244011705654  ,  2.571217828924292  ],
 [ 0.6402038630772625 ,  0.4936801979754385 ,  0.29092337062752427,  0.38379807870558297],
 [-4.62453594235028   , -4.692823914756837  , -4.5978420995500535 , -4.427069355688408  ]])),
    'shifts': (-5.284363653757644,
        np.array([[ 1.7019500368547609 ,  2.6508650304606594 ,  1.6194283252842259 ,  0.29011187142738853],
 [ 4.137092369113025  ,  4.945872273322285  ,  3.217045129006033  ,  1.6563758045415329 ],
 [-0.42575999510812573, -0.03857727094475499, -0.43231443007643766, -0.29897292470014936]]),
        np.array([[-1.4545454545454544 , -1.1652892561983468 , -0.7107438016528922 , -0.09090909090909105],
 [ 0.                 , -0.04132231404958675,  0.08264462809917382,  0.371900826446281  ],
 [-1.3553719008264462 , -0.7355371900826446 ,  0.04958677685950397,  0.9999999999999998 ]])),
}
COMPLEX_REFERENCE = {
    'abs_fft': (9.333283052149136,
        np.array([ 0.23568715204494384-1.8734471919390057j,  1.9208586836601143 -0.4564748317201617j,
  1.0794322076291238 +2.440491310030665j ,  1.7970170586815275 -2.301890573687488j ,
 -1.0716951507560255 -0.8595970492099188j]),
        np.array([ 2.665064891633392 -2.9449044302800003j, -0.4183069163378661+4.21166062253552j  ,
 -0.6860920278325816-2.7487408813335223j,  3.144299851487649 +1.3849633159118104j,
 -3.1547423883595416+2.109825140247227j ])),
    'conj_mul': (-0.5779535008466556,
        np.array([3.1826602303194083-1.1702993685737102j  , 2.7525687283470512-1.995937845506943j   ,
 1.2353941398006392-0.002943931012411083j, 0.4675561728172238-0.3348812702720918j  ,
 4.22247403189331  +2.6826079585734477j  ]),
        np.array([ 2.0746005666887637e+00-2.157378701838045j  ,  1.4515954890342244e+00-0.5819705551322126j ,
 -8.5261210262344012e-04+0.43160468332443697j, -1.4575179999835051e+00+0.7414321931741481j ,
 -1.0570736695817260e+00+0.8498067372641716j ])),
    'irfft_of_complex': (1.5910952887365233,
        np.array([-0.32710719224209617-0.j                 ,  0.35236681691212296-0.15718222992589892j,
  0.9141835749678584 +1.191503716770073j  ,  0.05370588672741389-1.4480649083458337j ,
 -0.9931490863652991 -0.j                 ]),
        np.array([ 0.39822330470336303-0.j                 ,  0.1982233047033629 -0.5285533905932736j ,
 -0.275              -0.10355339059327362j, -0.1982233047033629 +0.5714466094067265j ,
 -0.12322330470336301-0.j                 ])),
    'fft2_parts': (3.3065365932212516,
        np.array([[-2.842329219213245  +0.2269176951966887j , -1.019233024157805  +0.4775501459448871j ,
  -0.11960023999975991+0.19975999952000031j],
 [ 0.17186384734002116-0.2298782510562853j ,  1.356794120837162  -1.0038717932819057j ,
   3.8307933189588366 -2.6369887262898293j ]]),
        np.array([[ 3.0830962972919207  -1.1184658438426491j ,  1.143899481795753   -0.38626998863294193j,
  -0.019832000335759103-0.01587949624083919j],
 [-0.5308540698712075  +0.34864248459272773j, -2.009079557275084   +1.70907381070065j   ,
  -4.873418706500853   +4.350115458207573j  ]])),
}



def direction(x: np.ndarray) -> np.ndarray:
    """The tangent the stored second derivatives were taken along."""
    return np.linspace(-1.0, 1.0, x.size).reshape(x.shape)


def second_weights(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored complex second derivative is grad of sum(real(g) * a + imag(g) * b), g = grad f."""
    return (np.linspace(0.5, -0.5, z.size).reshape(z.shape), np.linspace(-0.3, 0.8, z.size).reshape(z.shape))


REAL = real_programs(jnp)
COMPLEX = complex_programs(jnp)


def _close(actual: Any, expected: Any, tol: float = 1e-11) -> None:
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol * scale)


# ----------------------------------------------------------------------------- values


_COMPLEX_INPUT = (np.sin(np.arange(24.0)) + 1j * np.cos(np.arange(24.0) * 0.3)).reshape(2, 3, 4)
_REAL_INPUT = np.sin(np.arange(30.0) * 0.7).reshape(2, 3, 5)


@pytest.mark.parametrize("name, kwargs", [
    ("fft", {}), ("fft", {"n": 7, "axis": 1}), ("fft", {"n": 2, "norm": "ortho"}),
    ("fft", {"axis": 0, "norm": "forward"}),
    ("ifft", {}), ("ifft", {"n": 6, "norm": "ortho"}), ("ifft", {"axis": -2, "norm": "forward"}),
    ("fft2", {}), ("fft2", {"s": (2, 6), "axes": (0, 2)}), ("ifft2", {"norm": "ortho"}), ("ifft2", {"s": (5, 3)}),
    ("fftn", {}), ("fftn", {"axes": (2, 0)}), ("fftn", {"s": (3, 3), "axes": (1, 2)}), ("ifftn", {"norm": "forward"}),
    ("ifftn", {"s": (1, 4, 2), "axes": (0, 1, 2)}),
])
def test_complex_transforms_match_numpy(name: str, kwargs: dict) -> None:
    out = getattr(jnp.fft, name)(_COMPLEX_INPUT, **kwargs)
    expected = getattr(np.fft, name)(_COMPLEX_INPUT, **kwargs)
    assert out.dtype == np.complex128 and out.shape == expected.shape
    _close(out, expected, 1e-13)


@pytest.mark.parametrize("name, kwargs", [
    ("rfft", {}), ("rfft", {"n": 8}), ("rfft", {"n": 3, "axis": 0, "norm": "ortho"}), ("rfft2", {"norm": "forward"}),
    ("rfft2", {"s": (4, 4)}), ("rfftn", {}), ("rfftn", {"axes": (0, 2)}), ("rfftn", {"s": (2, 7), "axes": (1, 2)}),
])
def test_real_input_transforms_match_numpy(name: str, kwargs: dict) -> None:
    out = getattr(jnp.fft, name)(_REAL_INPUT, **kwargs)
    expected = getattr(np.fft, name)(_REAL_INPUT, **kwargs)
    assert out.dtype == np.complex128 and out.shape == expected.shape
    _close(out, expected, 1e-13)


@pytest.mark.parametrize("name, kwargs", [
    ("irfft", {}), ("irfft", {"n": 7}), ("irfft", {"n": 4, "axis": 1, "norm": "ortho"}), ("irfft2", {}),
    ("irfft2", {"s": (3, 5), "norm": "forward"}), ("irfftn", {}), ("irfftn", {"s": (2, 2, 9), "axes": (0, 1, 2)}),
    ("irfftn", {"axes": (0, 1)}),
])
def test_inverse_real_transforms_match_numpy(name: str, kwargs: dict) -> None:
    out = getattr(jnp.fft, name)(_COMPLEX_INPUT, **kwargs)
    expected = getattr(np.fft, name)(_COMPLEX_INPUT, **kwargs)
    assert out.dtype == np.float64 and out.shape == expected.shape
    _close(out, expected, 1e-13)


def test_more_than_three_axes_are_transformed_a_few_at_a_time() -> None:
    x = np.sin(np.arange(2 * 3 * 2 * 3 * 4) * 0.21).reshape(2, 3, 2, 3, 4)
    _close(jnp.fft.fftn(x), np.fft.fftn(x), 1e-13)
    _close(jnp.fft.ifftn(x + 1j), np.fft.ifftn(x + 1j), 1e-13)
    _close(jnp.fft.rfftn(x), np.fft.rfftn(x), 1e-13)
    _close(jnp.fft.irfftn(np.fft.rfftn(x), s=x.shape), x, 1e-13)


def test_round_trips_and_parseval() -> None:
    x = _REAL_INPUT
    _close(jnp.fft.ifft(jnp.fft.fft(x)), x, 1e-14)
    _close(jnp.fft.irfft(jnp.fft.rfft(x), n=5), x, 1e-14)
    _close(jnp.fft.irfftn(jnp.fft.rfftn(x), s=x.shape[-3:]), x, 1e-14)
    # The orthonormal DFT keeps the 2-norm.
    _close(jnp.sum(jnp.abs(jnp.fft.fftn(x, norm="ortho")) ** 2), np.sum(x ** 2), 1e-13)


def test_shifts_are_rolls_by_half_the_length() -> None:
    for shape in [(5,), (4,), (3, 4), (2, 5, 1)]:
        x = np.arange(float(np.prod(shape))).reshape(shape)
        np.testing.assert_array_equal(jnp.fft.fftshift(x), np.fft.fftshift(x))
        np.testing.assert_array_equal(jnp.fft.ifftshift(x), np.fft.ifftshift(x))
        np.testing.assert_array_equal(jnp.fft.ifftshift(jnp.fft.fftshift(x)), x)
    x = np.arange(12.0).reshape(3, 4) + 1j
    np.testing.assert_array_equal(jnp.fft.fftshift(x, axes=1), np.fft.fftshift(x, axes=1))
    np.testing.assert_array_equal(jnp.fft.ifftshift(x, axes=(0,)), np.fft.ifftshift(x, axes=(0,)))
    np.testing.assert_array_equal(jnp.fft.fftshift(x, axes=-2), np.fft.fftshift(x, axes=-2))


def test_dtypes_follow_jax_without_x64() -> None:
    engine.config.update("jax_enable_x64", False)
    ones32 = np.ones(4, np.float32)
    assert jnp.fft.fft(ones32).dtype == np.complex64
    assert jnp.fft.rfft(ones32).dtype == np.complex64
    assert jnp.fft.irfft(np.ones(3, np.complex64)).dtype == np.float32
    assert jnp.fft.fft(np.arange(3)).dtype == np.complex64  # integers go through the default float
    assert jnp.fft.rfft(np.ones(4, np.float16)).dtype == np.complex64
    _close(jnp.fft.rfft(np.arange(4.0)), np.fft.rfft(np.arange(4.0)), 1e-6)


def test_complex_parts() -> None:
    z = np.array([3 + 4j, -1.5 + 0j, 0 - 2j])
    np.testing.assert_array_equal(jnp.real(z), z.real)
    np.testing.assert_array_equal(jnp.imag(z), z.imag)
    np.testing.assert_array_equal(jnp.conj(z), z.conj())
    np.testing.assert_array_equal(jnp.abs(z), np.abs(z))
    assert jnp.abs(z).dtype == np.float64
    a = jnp.asarray(z)
    np.testing.assert_array_equal(a.real, z.real)
    np.testing.assert_array_equal(a.imag, z.imag)
    np.testing.assert_array_equal(a.conj(), z.conj())
    x = np.array([1.0, -2.0])  # on real arrays: the array itself, and zeros
    np.testing.assert_array_equal(jnp.real(x), x)
    np.testing.assert_array_equal(jnp.imag(x), [0.0, 0.0])
    np.testing.assert_array_equal(jnp.conj(x), x)
    np.testing.assert_array_equal(complex_p(jnp.asarray([1.0, 2.0]), jnp.asarray(3.0)), [1 + 3j, 2 + 3j])


# ----------------------------------------------------------------------------- derivatives of real inputs


@pytest.mark.parametrize("name", sorted(REAL_REFERENCE))
def test_real_input_derivatives_match_jax(name: str) -> None:
    f, x = REAL[name]
    value, grad, hvp = REAL_REFERENCE[name]
    d = direction(x)
    _close(f(x), value)
    _close(engine.grad(f)(x), grad)
    _close(engine.jvp(engine.grad(f), (x,), (d,))[1], hvp)  # forward over reverse
    _close(engine.grad(lambda x: jnp.sum(engine.grad(f)(x) * d))(x), hvp)  # reverse over reverse
    _close(engine.hessian(f)(x).reshape(x.size, x.size) @ d.ravel(), hvp.ravel())


@pytest.mark.parametrize("name", sorted(REAL_REFERENCE))
def test_real_input_derivatives_match_finite_differences(name: str) -> None:
    f, x = REAL[name]
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", sorted(REAL_REFERENCE))
def test_jit_agrees_with_eager(name: str) -> None:
    f, x = REAL[name]
    _close(engine.jit(f)(x), f(x), 1e-13)
    _close(engine.jit(engine.grad(f))(x), engine.grad(f)(x), 1e-13)
    _close(engine.jit(engine.grad(lambda x: jnp.sum(engine.grad(f)(x) * direction(x))))(x),
           REAL_REFERENCE[name][2])


# ----------------------------------------------------------------------------- derivatives of complex inputs


@pytest.mark.parametrize("name", sorted(COMPLEX_REFERENCE))
def test_complex_input_derivatives_match_jax(name: str) -> None:
    f, z = COMPLEX[name]
    value, grad, second = COMPLEX_REFERENCE[name]
    a, b = second_weights(z)
    _close(f(z), value)
    g = engine.grad(f)(z)
    assert g.dtype == np.complex128
    _close(g, grad)
    _close(engine.grad(lambda z: jnp.sum(jnp.real(engine.grad(f)(z)) * a + jnp.imag(engine.grad(f)(z)) * b))(z),
           second)
    _close(engine.jit(engine.grad(f))(z), grad)


@pytest.mark.parametrize("name", sorted(COMPLEX_REFERENCE))
def test_complex_gradient_is_the_conjugate_of_the_parts_gradients(name: str) -> None:
    """grad f(z) = df/dx - i df/dy, the parts' derivatives checked by finite differences."""
    f, z = COMPLEX[name]
    by_parts = lambda x, y: f(complex_p(x, y))  # noqa: E731
    check_grads(by_parts, (z.real.copy(), z.imag.copy()), order=2, modes=("fwd", "rev"))
    gx, gy = engine.grad(by_parts, argnums=(0, 1))(z.real.copy(), z.imag.copy())
    _close(engine.grad(f)(z), np.asarray(gx) - 1j * np.asarray(gy))
    # Forward mode: the tangent of f along t is real(sum(grad * t)).
    t = np.linspace(1.0, -1.0, z.size).reshape(z.shape) + 0.5j
    _close(engine.jvp(f, (z,), (t,))[1], np.real(np.sum(np.asarray(engine.grad(f)(z)) * t)))


def test_closed_forms_of_complex_gradients() -> None:
    # d|z| = conj(z) / |z|; at 0 the derivative is taken as 0, as JAX's.
    _close(engine.grad(jnp.abs)(3 + 4j), 0.6 - 0.8j, 1e-15)
    assert complex(engine.grad(jnp.abs)(0j)) == 0
    _close(engine.grad(lambda z: jnp.abs(z) ** 2)(3 + 4j), 6 - 8j, 1e-15)
    _close(engine.grad(lambda z: jnp.real(z * z))(1 + 2j), 2 + 4j, 1e-15)  # x^2 - y^2: 2x - i(-2y)
    _close(engine.grad(lambda z: jnp.imag(jnp.conj(z) * 2))(1 + 2j), 2j, 1e-15)  # -2y
    # Parseval: sum |fft(x)|^2 = n sum x^2, so its gradient is 2 n x.
    x = np.array([0.3, -1.2, 2.0, 0.7, 0.1])
    _close(engine.grad(lambda x: jnp.sum(jnp.abs(jnp.fft.fft(x)) ** 2))(x), 2 * 5 * x, 1e-13)


def test_grad_and_jacobians_refuse_complex_where_jax_does() -> None:
    with pytest.raises(DifferentiationError, match="real-valued output"):
        engine.grad(lambda z: jnp.sum(z * z))(np.array([1 + 1j]))
    with pytest.raises(DifferentiationError, match="real-valued output"):
        engine.jacrev(jnp.fft.fft)(np.ones(3))
    with pytest.raises(DifferentiationError, match="real-valued input"):
        engine.jacfwd(jnp.abs)(np.array([1 + 1j]))
    # Real inputs and outputs through complex intermediates are fine both ways.
    f = lambda x: jnp.abs(jnp.fft.rfft(x))  # noqa: E731
    x = np.array([0.5, -1.0, 2.0, 0.25])
    _close(engine.jacfwd(f)(x), engine.jacrev(f)(x))


# ----------------------------------------------------------------------------- vmap


def test_vmap_matches_a_loop() -> None:
    xs = np.sin(np.arange(24.0)).reshape(4, 6)
    for fn in (jnp.fft.rfft, lambda x: jnp.fft.fft(x, n=4), lambda x: jnp.fft.irfft(jnp.fft.rfft(x) * 1.5, n=6),
               jnp.fft.fftshift, lambda x: jnp.fft.ifft2(jnp.reshape(x, (2, 3)), norm="ortho")):
        _close(engine.vmap(fn)(xs), np.stack([np.asarray(fn(x)) for x in xs]), 1e-13)
    f = REAL["rfft_power"][0]
    _close(engine.vmap(engine.grad(f))(xs), np.stack([np.asarray(engine.grad(f)(x)) for x in xs]), 1e-13)
    g = COMPLEX["abs_fft"][0]
    zs = xs[:, :5] + 1j * xs[:, 1:]
    _close(engine.vmap(engine.grad(g))(zs), np.stack([np.asarray(engine.grad(g)(z)) for z in zs]), 1e-13)


# ----------------------------------------------------------------------------- refusals


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(DtypeError, match="real array"):
        jnp.fft.rfft(np.array([1 + 1j, 2.0]))
    with pytest.raises(InvalidArgumentError, match="norm"):
        jnp.fft.fft(np.ones(3), norm="unitary")
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        jnp.fft.fft(np.ones(3), n=0)
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        jnp.fft.irfft(np.ones(1))  # 2 * (1 - 1) points
    with pytest.raises(ShapeError, match="out of bounds"):
        jnp.fft.fft(np.ones(3), axis=1)
    with pytest.raises(ShapeError, match="repeated axis"):
        jnp.fft.fftn(np.ones((2, 2)), axes=(0, 0))
    with pytest.raises(ShapeError, match="one per axis"):
        jnp.fft.fftn(np.ones((2, 2)), s=(2,), axes=(0, 1))
    with pytest.raises(ShapeError, match="out of bounds"):
        jnp.fft.fftshift(np.ones(3), axes=2)
    # The primitive's shape/dtype rule, as tracing applies it.
    with pytest.raises(DtypeError, match="complex operand"):
        engine.make_graph(lambda x: PRIMITIVES["fft"](x, fft_type="fft", fft_lengths=(4,)))(np.ones(4))
    with pytest.raises(ShapeError, match="trailing dimensions"):
        engine.make_graph(lambda x: PRIMITIVES["fft"](x, fft_type="rfft", fft_lengths=(5,)))(np.ones(4))
    with pytest.raises(DtypeError, match="complex operand"):
        engine.make_graph(lambda x: PRIMITIVES["real"](x))(np.ones(4))
    with pytest.raises(DtypeError, match="real operands"):  # the real abs's rule would be wrong for z
        engine.make_graph(lambda x: PRIMITIVES["abs"](jnp.fft.rfft(x)))(np.ones(4))


# ----------------------------------------------------------------------------- graphs, expressions, codec


def test_graph_documents_of_fft_programs_round_trip() -> None:
    f, x = REAL["irfft2_axes"]
    for fn in (f, engine.grad(f)):
        graph = engine.make_graph(fn)(x)
        assert "fft" in {e.prim.name for e in graph.eqns}
        doc = json.loads(json.dumps(graph_to_json(graph)))
        jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))).validate(doc)
        loaded = load_graph(doc)
        _close(engine.core.eval_graph(loaded, [jnp.asarray(x)])[0], fn(x), 1e-13)


def test_graph_documents_refuse_complex_values_and_bad_fft_attributes() -> None:
    graph = engine.make_graph(lambda x: jnp.real(x * (1 + 2j)))(np.ones(2))
    with pytest.raises(GraphFormatError, match="complex"):
        graph_to_json(graph)
    doc = json.loads(json.dumps(graph_to_json(engine.make_graph(jnp.fft.rfft)(np.ones(4)))))
    fft_node = next(n for n in doc["nodes"] if n["op"] == "fft")
    for attr, bad in (("fft_type", "dct"), ("fft_lengths", [4, 0]), ("fft_lengths", [1, 1, 1, 4])):
        broken = json.loads(json.dumps(doc))
        next(n for n in broken["nodes"] if n["id"] == fft_node["id"])["attrs"][attr] = bad
        with pytest.raises(GraphFormatError, match=attr):
            load_graph(broken)


def test_expression_language_has_the_fft_functions() -> None:
    for name in ("fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2", "fftn", "ifftn", "rfftn",
                 "irfftn", "fftshift", "ifftshift"):
        assert FUNCTIONS[f"fft.{name}"] is getattr(jnp.fft, name)
    for name in ("real", "imag", "conj", "conjugate"):
        assert name in FUNCTIONS
    program = Program("sum(abs(jnp.fft.rfft(x, n=8, norm='ortho')) ** 2) + sum(real(fft.fftshift(x)) * x)", ["x"])
    x = np.array([0.5, -1.0, 2.0, 0.25, 1.5])
    f = lambda x: (jnp.sum(jnp.abs(jnp.fft.rfft(x, n=8, norm="ortho")) ** 2)  # noqa: E731
                   + jnp.sum(jnp.fft.fftshift(x) * x))
    _close(program(x), f(x), 1e-14)
    _close(engine.grad(program)(x), engine.grad(f)(x), 1e-14)


def test_the_array_codec_refuses_complex_arrays() -> None:
    z = np.array([1 + 2j])
    for encode in (array_codec.nested_numbers, array_codec.base64_leaf):
        with pytest.raises(array_codec.ComplexNotSupported, match="real and imaginary parts"):
            encode(z)
    assert "complex64" not in array_codec.DTYPES and "complex128" not in array_codec.DTYPES


# ----------------------------------------------------------------------------- random programs


def _random_program(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """A random chain of transforms (random n, axes and norm) and elementwise steps on a real 2-D
    array, read back as a real scalar through real/imag/abs."""
    shape = (int(rng.integers(2, 5)), int(rng.integers(2, 6)))
    steps = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["fft", "ifft", "rfft", "irfft", "fft2", "rfftn", "irfftn", "shift", "mul", "sin"]))
        steps.append((kind, int(rng.integers(0, 2)), int(rng.integers(2, 7)),
                      [None, "ortho", "forward", "backward"][int(rng.integers(0, 4))]))

    def program(x: Any) -> Any:
        for kind, axis, n, norm in steps:
            if kind in ("fft", "ifft", "rfft", "irfft"):
                fn = getattr(jnp.fft, kind)
                x = fn(jnp.real(x) if kind == "rfft" else x, n=n, axis=axis, norm=norm)
            elif kind == "fft2":
                x = jnp.fft.fft2(x, s=(n, x.shape[1]), norm=norm)
            elif kind == "rfftn":
                x = jnp.fft.rfftn(jnp.real(x), axes=(1 - axis, axis), norm=norm)
            elif kind == "irfftn":
                x = jnp.fft.irfftn(x, s=(x.shape[0], n), norm=norm)
            elif kind == "shift":
                x = jnp.fft.fftshift(x, axes=axis) * jnp.fft.ifftshift(x)
            elif kind == "mul":
                x = x * jnp.conj(x) + x
            else:
                x = jnp.sin(jnp.real(x)) + jnp.imag(x) * 0.5
        return jnp.sum(jnp.abs(x) ** 2) if x.dtype.kind == "c" else jnp.sum(x * jnp.cos(x))

    return program, rng.uniform(-1.0, 1.0, shape)


@pytest.mark.parametrize("seed", range(25))
def test_random_fft_programs_jit_and_finite_differences(seed: int) -> None:
    program, x = _random_program(np.random.default_rng(seed))
    _close(engine.jit(program)(x), program(x), 1e-12)
    _close(engine.jit(engine.grad(program))(x), engine.grad(program)(x), 1e-12)
    check_grads(program, (x,), order=2, modes=("fwd", "rev"))
