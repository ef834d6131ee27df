"""engine._threefry against JAX 0.10.2's threefry2x32 PRNG.

The expected numbers were produced once with JAX 0.10.2 (jaxlib on an x86-64
CPU with FMA); these tests never import jax.  In the tables, the leading
False/True of each entry is the `jax_threefry_partitionable` setting JAX ran
with.  Keys and bits must match bit for bit.  Floats must be within 1 ulp; in
fact they match exactly here, but float64 goes through the C library's log,
which another platform may compute differently in the last bit.
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest

from engine._config import config
from engine._threefry import (
    _erf_inv,
    fold_in_data,
    normal_data,
    random_bits_data,
    seed_to_key_data,
    split_data,
    threefry2x32,
    uniform_data,
)
from engine._xla_f32 import fma as _fma

# --------------------------------------------------------------------------
# Expected values, from JAX.  SPLIT uses PRNGKey(0); the samplers use
# PRNGKey(42).  BITS_1001 holds (first three, last, SHA-256 of the
# little-endian bytes).

SPLIT = {
    (False, 2): [[4146024105, 967050713], [2718843009, 1272950319]],
    (False, 3): [[2467461003, 428148500], [3186719485, 3840466878], [2562233961, 1946702221]],
    (False, (2, 3)): [[[3792494674, 582972539], [2883479965, 3114868201],
                       [1492792183, 3245818218]],
                      [[2909014575, 82862454], [1782947029, 692041252],
                       [1067690106, 2610540821]]],
    (True, 2): [[1797259609, 2579123966], [928981903, 3453687069]],
    (True, 3): [[1797259609, 2579123966], [928981903, 3453687069], [4146024105, 2718843009]],
    (True, (2, 3)): [[[1797259609, 2579123966], [928981903, 3453687069],
                      [4146024105, 2718843009]],
                     [[2467461003, 3840466878], [2285895361, 433833334],
                      [1524306142, 1887795613]]],
}

BITS = {
    (False, 8, ()): 143,
    (False, 8, (5,)): [45, 179, 215, 3, 244],
    (False, 8, (3, 7)): [[70, 105, 213, 186, 137, 124, 131], [222, 223, 17, 79, 223, 145, 168],
                         [75, 53, 98, 155, 198, 47, 151]],
    (False, 16, ()): 1167,
    (False, 16, (5,)): [8426, 37627, 63599, 6563, 55571],
    (False, 16, (3, 7)): [[50440, 42246, 48847, 7860, 42809, 19890, 36691],
                          [63849, 19648, 6362, 47181, 30555, 29329, 46624],
                          [57800, 35451, 7460, 13295, 56389, 23240, 59104]],
    (False, 32, ()): 1832780943,
    (False, 32, (5,)): [3134548294, 3733159049, 843694964, 894150801, 801545058],
    (False, 32, (3, 7)): [[246739928, 3805111149, 2674542382, 2777543265, 1596214002,
                           3863501546, 2619477240],
                          [1910628330, 4201206591, 1933341835, 3161604871, 3519402408,
                           521872403, 2410011260],
                          [2594880215, 607910653, 3451400839, 1294722408, 3114386104,
                           3479747946, 1688006703]],
    (False, 64, ()): 276886910877598708,
    (False, 64, (5,)): [11878554724538143822, 5949366705374003258, 3569329351199305345,
                        16352916591564049101, 15533732488544181321],
    (False, 64, (3, 7)): [[2199318603289546822, 6719192524315000601, 13826371182754926568,
                           74211349200354333, 15037940227223490197, 1164740485422769660,
                           8110926160473037210],
                          [11344070541714427822, 11895323407468731356, 6616752577473201382,
                           7973500048952551755, 3898642063068067246, 8220579970245284034,
                           678071974560372352],
                          [14949273060397477056, 2768202744137360876, 3751184838063086036,
                           15387904647495185272, 8322113662875318466, 889989870607135164,
                           7564324282017516420]],
    (True, 8, ()): 162,
    (True, 8, (5,)): [162, 217, 249, 215, 21],
    (True, 8, (3, 7)): [[162, 217, 249, 215, 21, 216, 153], [176, 141, 176, 49, 112, 68, 56],
                        [218, 168, 51, 57, 12, 89, 71]],
    (True, 16, ()): 5026,
    (True, 16, (5,)): [5026, 12505, 63993, 49623, 29461],
    (True, 16, (3, 7)): [[5026, 12505, 63993, 49623, 29461, 20184, 47001],
                         [9392, 65165, 64432, 39473, 8816, 36932, 34360],
                         [64986, 1960, 21811, 52025, 29964, 16473, 40007]],
    (True, 32, ()): 2098992034,
    (True, 32, (5,)): [2098992034, 2919706841, 2646866425, 2409546199, 1935504149],
    (True, 32, (3, 7)): [[2098992034, 2919706841, 2646866425, 2409546199, 1935504149,
                          2516274904, 321304473],
                         [3329172656, 3002007181, 3516005296, 1504549425, 3748733552,
                          3976630340, 3694233144],
                         [2051079642, 3515353000, 3055244595, 2519845689, 316699916,
                          3339862105, 1737595975]],
    (True, 64, ()): 7871734211187709741,
    (True, 64, (5,)): [7871734211187709741, 276886910877598708, 10591095138341673235,
                       13462782411356743825, 12687676868490354166],
    (True, 64, (3, 7)): [[7871734211187709741, 276886910877598708, 10591095138341673235,
                          13462782411356743825, 12687676868490354166, 11878554724538143822,
                          11891408507324363409],
                         [10939337156606259615, 4366681187670257642, 4848481840095870779,
                          4463315528762358754, 1059739924896797096, 13374571050706834886,
                          15096601263014437093],
                         [10852880721670688857, 4258788217715836665, 400035765223318363,
                          11606495355623130417, 4101390771327558689, 17857386132434611786,
                          9645200123324218927]],
}

BITS_1001 = {
    (False, 8): ([30, 238, 8], 226,
                 '8b180c83c853d68f6a7ed6626ba6723333eb561e7e549cfe08c530ffdde616c2'),
    (False, 16): ([6696, 43675, 59996], 61143,
                  '943469864b76ac072e901e3ab4795c0a985971ba69fdd31376252dfc0a7c0a0b'),
    (False, 32): ([4105144733, 2062996711, 166470086], 1373129018,
                  'bfae8de0ecd46a8735b873c81ebbb2b55c5bd05c81e52390359c483d49c42ee8'),
    (False, 64): ([8838930329542671683, 1172101660382654176, 2662904893147153096],
                  11375752155216834231,
                  '3b91ee96dc34e68f7f905b00187480e1fdfb8128b8f9358bcbaa0ba7be030dbe'),
    (True, 8): ([162, 217, 249], 184,
                '408c02eb49c4787824f33239dcfa518eae38d89360df0ab608f5d5785852d431'),
    (True, 16): ([5026, 12505, 63993], 51640,
                 '9d671ef8c7146b0d1d70fa9105622950bf6b5d23951a0a472f9e32061f37fc3c'),
    (True, 32): ([2098992034, 2919706841, 2646866425], 3241920952,
                 '0a30186224a79203ecb05efd4826ef97e2c52bc6680cb83dc523551f39d5c8e3'),
    (True, 64): ([7871734211187709741, 276886910877598708, 10591095138341673235],
                 14533316130259042237,
                 'c3c7a6aaf93166193752dbf4361ba839def8f0505f75980ce1be30c480c6551c'),
}

UNIFORM = {
    (False, 'float32', 0.0, 1.0, ()): 0.42672753,
    (False, 'float32', 0.0, 1.0, (5,)): [0.7298188, 0.8691938, 0.19643795, 0.20818567,
                                         0.18662417],
    (False, 'float32', 0.0, 1.0, (3, 7)): [[0.057448506, 0.8859464, 0.62271535, 0.64669716,
                                            0.37164748, 0.8995415, 0.6098945],
                                           [0.4448527, 0.97816956, 0.4501412, 0.73611844,
                                            0.8194246, 0.12150788, 0.56112444],
                                           [0.6041676, 0.14154017, 0.80359185, 0.30145097,
                                            0.7251245, 0.81019187, 0.39301968]],
    (False, 'float32', -3.7, 2.2, (5,)): [0.60593104, 1.4282434, -2.541016, -2.4717045,
                                          -2.5989175],
    (False, 'float32', 0.001, 1000.0, (5,)): [729.8191, 869.194, 196.43877, 208.18646,
                                              186.62498],
    (False, 'float64', 0.0, 1.0, (5,)): [0.6439377419166104, 0.3225158153439711,
                                         0.19349373184432794, 0.8864933847523995,
                                         0.842085325544413],
    (False, 'float64', -3.7, 2.2, (5,)): [0.09923267730800112, -1.7971566894705704,
                                          -2.5583869821184653, 1.530310970039157,
                                          1.2683034207120365],
    (False, 'float64', 0.001, 1000.0, (5,)): [643.9380979788684, 322.5164928281558,
                                              193.49453835059612, 886.4934982590147,
                                              842.0854834590874],
    (True, 'float32', -3.7, 2.2, (5,)): [-0.81661355, 0.31080332, -0.06399816, -0.3900051,
                                         -1.0411968],
    (True, 'float64', -3.7, 2.2, (5,)): [-1.1823073567655364, -3.6114405898596442,
                                         -0.31254793439274237, 0.6059314917373222,
                                         0.35802201326033944],
}

NORMAL = {
    (False, 'float32', ()): -0.18471177,
    (False, 'float32', (5,)): [0.6122652, 1.1225883, -0.8544134, -0.8127325, -0.890405],
    (False, 'float32', (3, 7)): [[-1.5765588, 1.2052492, 0.31262022, 0.37641877, -0.32749307,
                                  1.2789435, 0.2790442],
                                 [-0.1386769, 2.0173328, -0.12530455, 0.63142437, 0.91317457,
                                  -1.1674819, 0.15382077],
                                 [0.26414946, -1.073425, 0.8545212, -0.5202319, 0.5981333,
                                  0.8786036, -0.27145723]],
    (False, 'float64', ()): -2.169824560397754,
    (False, 'float64', (5,)): [0.36900430470828355, -0.46067522739329636, -0.8650935152175325,
                               1.2080884797486335, 1.003065314088024],
    (False, 'float64', (3, 7)): [[-1.1788683539919371, -0.34712646342178805,
                                  0.6730085796998757, -2.6501329321654947, 0.897254267521724,
                                  -1.528931539512744, -0.15174460298239073],
                                 [0.29227887748558906, 0.37144454609517885,
                                  -0.3619495221749121, -0.17066319090605214,
                                  -0.8017603137352133, -0.13668844129508448,
                                  -1.7896094963605391],
                                 [0.8793776115736961, -1.036156487244682, -0.8297073318729684,
                                  0.9708157559605236, -0.1227748740678178, -1.6620991543631898,
                                  -0.2273833294399275]],
    (True, 'float32', (5,)): [-0.028304616, 0.46713185, 0.29570296, 0.15354592, -0.12403282],
    (True, 'float64', (5,)): [-0.18471174528191162, -2.169824560397754, 0.18693555179382582,
                              0.6122653570510959, 0.4896249504757018],
}

# For 1000 draws: (every 50th value, indices of the 3 largest magnitudes,
# those values, math.fsum of all 1000).
UNIFORM_1000 = {
    (False, 'float32', -3.7, 2.2): ([-0.07213223, 2.1700134, 2.1382952, -0.13806987,
                                     -1.6473863, 0.18551128, 1.1514214, 1.5281233, 0.24562882,
                                     0.4645706, -1.7140814, -0.014659929, 1.6746082,
                                     -0.73621255, -2.213388, -0.40845427, -2.4252818,
                                     -2.9796233, 0.90595895, -0.43784243],
                                    [265, 752, 990], [-3.6962702, -3.691423, -3.6863885],
                                    -802.0788543336093),
    (False, 'float64', -3.7, 2.2): ([0.9483306119444148, -2.0912391754590556,
                                     -3.6806784830734856, -2.239508066840809,
                                     -2.27057803029567, -0.4831322176219119,
                                     -1.8251221186247049, 1.5262519392247194,
                                     0.14028782300314588, -0.17058066012512363,
                                     1.2561248806582272, -1.4581992795659595,
                                     0.17433686378029364, 0.8132522158699405,
                                     -2.929922820101654, 0.1965438487014363,
                                     -2.997885438661608, -2.04575673465048, 0.6910454346793206,
                                     0.6868315405853611],
                                    [373, 100, 202],
                                    [-3.685846976033006, -3.6806784830734856,
                                     -3.674086678340601],
                                    -711.211577748453),
    (True, 'float32', 0.0, 1.0): ([0.48870957, 0.5700073, 0.5306324, 0.44227707, 0.05218768,
                                   0.84745705, 0.4422753, 0.4064412, 0.8221663, 0.2450068,
                                   0.7939863, 0.16980255, 0.4769932, 0.48376608, 0.7730776,
                                   0.44719028, 0.047728777, 0.92537916, 0.044229746,
                                   0.7920674],
                                  [155, 603, 477], [0.99383247, 0.9931723, 0.99199057],
                                  515.0162446498871),
    (True, 'float64', 0.001, 1000.0): ([426.72813992234245, 684.5413053248833,
                                        192.26386163345566, 987.0054238392964,
                                        40.28767299947976, 536.4184229142396,
                                        295.66508655601325, 566.4241186270856,
                                        514.9620197581607, 535.6916410169638,
                                        614.8932665491186, 159.4610021229446,
                                        780.9793593896095, 21.51702601698607,
                                        674.3279046294431, 703.5495848443885,
                                        254.4053319397044, 91.24137369819285,
                                        810.2505064418675, 500.3942176897727],
                                       [734, 228, 429],
                                       [999.708718682742, 997.7709428800397,
                                        997.4789790959169],
                                       504631.81798641005),
}

NORMAL_1000 = {
    (False, 'float32'): ([0.29209465, 2.5701685, 2.3094814, 0.26297998, -0.39099455,
                          0.40853977, 0.92406905, 1.2061628, 0.43646607, 0.54132867,
                          -0.42177016, 0.31767416, 1.3466319, 0.0058577466, -0.66830903,
                          0.14561954, -0.7855895, -1.164564, 0.77446145, 0.13301209],
                         [597, 265, 610], [3.2335098, -3.2239425, 3.0028634],
                         -30.859165736241266),
    (False, 'float64'): ([0.7989925914669962, -0.604753713838561, -2.7189138341620187,
                          -0.6822482159565652, -0.699003537274426, 0.11362338991425987,
                          -0.47392719695304464, 1.2045186627874696, 0.38774126159240974,
                          0.2487079944426328, 0.9945448791303567, -0.3055694976611204,
                          0.40338438807945587, 0.7223423937533702, -1.1239290840326532,
                          0.4136401310862921, -1.1799881297661885, -0.5817123834103186,
                          0.6564882548752866, 0.6542690830328715],
                         [253, 373, 664],
                         [3.9907545537202935, -2.8203161763245927, 2.8158289916576638],
                         27.816832923644547),
    (True, 'float32'): ([-0.028304616, 0.17639288, 0.07685965, -0.14519842, -1.6240019,
                         1.0255878, -0.14520295, -0.2367091, 0.9236523, -0.6902871, 0.82033116,
                         -0.9549457, -0.05770141, -0.040703565, 0.7490207, -0.13276324,
                         -1.6672857, 1.4422156, -1.70358, 0.81361574],
                        [884, 681, 155], [-2.9735436, -2.7917633, 2.5024128],
                        40.47490742942318),
    (True, 'float64'): ([-0.18471174528191162, 0.4804351290787376, -0.8695870674260587,
                         2.226373435421423, -1.7473685652264868, 0.09141344195308324,
                         -0.5369114747097083, 0.16727632713262347, 0.037511801466729104,
                         0.0895841923327429, 0.29209467612812945, -0.9966790472642499,
                         0.7755043106873625, -2.0233983413644854, 0.45189470094786427,
                         0.5346362336886004, -0.6606930641446007, -1.3331550410119064,
                         0.8788191033784488, 0.0009869050405161286],
                        [260, 734, 736],
                        [-3.690645088012178, 3.43960525019438, -3.3563750673794797],
                        17.743370869853536),
}

# lax.erf_inv at inputs in every region of the float32 and float64 expansions.
ERFINV_F32 = (
    [0.0, 5.9604645e-08, -0.3, 0.5, 0.8, 0.99, -0.997, 0.9999, -0.99999, 0.99999994, -1.0, 1.0],
    [0.0, 5.2823236e-08, -0.27246276, 0.47693628, 0.9061939, 1.8213867, -2.098506, 2.7510269,
     -3.123205, 3.8325067, -math.inf, math.inf],
)

ERFINV_F64 = (
    [0.0, 1.1102230246251565e-16, -0.3, 0.5, 0.8, 0.99, -0.998, 0.9999, -0.9999999,
     0.999999999, -0.9999999999999999, 1.0, -1.0],
    [0.0, 9.839095376804142e-17, -0.2724627147267544, 0.47693627620446977, 0.9061938024368233,
     1.8213863677184494, -2.1851242191330047, 2.7510639057121233, -3.766562581633336,
     4.320005388048932, -5.863584748755167, math.inf, -math.inf],
)


# --------------------------------------------------------------------------
# Helpers and fixtures


def _set_flag(name: str, value: bool):
    old = getattr(config, name)
    config.update(name, value)
    return old


@pytest.fixture(params=[False, True], ids=["original", "partitionable"])
def scheme(request):
    """Run the test under both counter schemes, restoring the flag afterwards."""
    old = _set_flag("jax_threefry_partitionable", request.param)
    yield request.param
    config.update("jax_threefry_partitionable", old)


@pytest.fixture
def original():
    """Pin the original (non-partitionable) scheme for tests that assume it."""
    old = _set_flag("jax_threefry_partitionable", False)
    yield
    config.update("jax_threefry_partitionable", old)


@pytest.fixture(params=[False, True], ids=["x32", "x64"])
def x64(request):
    old = _set_flag("jax_enable_x64", request.param)
    yield request.param
    config.update("jax_enable_x64", old)


@pytest.fixture
def restore_flags():
    """For table-driven tests that pick the scheme per case: restore the flags after."""
    names = ("jax_threefry_partitionable", "jax_enable_x64")
    saved = {name: getattr(config, name) for name in names}
    yield
    for name, value in saved.items():
        config.update(name, value)


def _key(seed: int) -> np.ndarray:
    return seed_to_key_data(seed)


def _ordered(values: np.ndarray) -> list[int]:
    """Map floats to integers whose differences count ulps (across zero too)."""
    ints = values.view({4: np.int32, 8: np.int64}[values.itemsize]).ravel().tolist()
    sign = 1 << (8 * values.itemsize - 1)
    return [i if i >= 0 else -(i + sign) for i in ints]


def max_ulp_diff(actual: np.ndarray, expected) -> int:
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape
    return max((abs(a - e) for a, e in zip(_ordered(actual), _ordered(expected), strict=True)), default=0)


def assert_close_ulp(actual: np.ndarray, expected, dtype) -> None:
    assert actual.dtype == np.dtype(dtype)
    assert max_ulp_diff(actual, expected) <= 1


def assert_matches_summary(out: np.ndarray, summary) -> None:
    """Check a 1000-element sample against the summary kept in *_1000 tables."""
    every_50th, extreme_idx, extremes, exact_sum = summary
    assert out.shape == (1000,)
    assert max_ulp_diff(out[::50], every_50th) <= 1
    # The largest magnitudes exercise the tail regions of erfinv.
    assert max_ulp_diff(out[extreme_idx], extremes) <= 1
    # All 1000 values within 1 ulp would keep the sum within the sum of ulps.
    slack = float(np.sum(np.spacing(np.abs(out)), dtype=np.float64))
    total = math.fsum(out.astype(np.float64).tolist())
    assert abs(total - exact_sum) <= slack + 4 * np.spacing(abs(exact_sum))


def _digest(values: np.ndarray) -> str:
    little = values.astype(values.dtype.newbyteorder("<"))
    return hashlib.sha256(little.tobytes()).hexdigest()


# --------------------------------------------------------------------------
# The hash


def test_threefry2x32_random123_known_answers():
    # Known-answer vectors of Threefry-2x32-20 from the Random123 distribution.
    cases = [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, (x0, x1), expected in cases:
        y0, y1 = threefry2x32(np.array(key, np.uint32), np.uint32(x0), np.uint32(x1))
        assert (int(y0), int(y1)) == expected
        assert y0.dtype == y1.dtype == np.uint32


def test_threefry2x32_is_vectorized_and_broadcasts():
    key = np.array([0x13198A2E, 0x03707344], np.uint32)
    x0 = np.array([[0x243F6A88, 0], [7, 0x243F6A88]], np.uint32)
    y0, y1 = threefry2x32(key, x0, np.uint32(0x85A308D3))
    assert y0.shape == y1.shape == (2, 2)
    assert (int(y0[0, 0]), int(y1[0, 0])) == (0xC4923A9C, 0x483DF7A0)
    assert (int(y0[1, 1]), int(y1[1, 1])) == (0xC4923A9C, 0x483DF7A0)
    # Each element is hashed on its own.
    s0, s1 = threefry2x32(key, np.uint32(7), np.uint32(0x85A308D3))
    assert (y0[1, 0], y1[1, 0]) == (s0, s1)


def test_threefry2x32_rejects_bad_keys():
    with pytest.raises(TypeError):
        threefry2x32(np.array([1, 2, 3], np.uint32), 0, 0)
    with pytest.raises(TypeError):
        threefry2x32(np.array([1, 2], np.int64), 0, 0)


# --------------------------------------------------------------------------
# Keys


@pytest.mark.parametrize(
    "seed, x32_key, x64_key",
    [
        (0, [0, 0], [0, 0]),
        (1, [0, 1], [0, 1]),
        (2, [0, 2], [0, 2]),
        (3, [0, 3], [0, 3]),
        (42, [0, 42], [0, 42]),
        (-1, [0, 4294967295], [4294967295, 4294967295]),
        (-(2**31), [0, 2147483648], [4294967295, 2147483648]),
        (-(2**31) - 1, [0, 2147483647], [4294967295, 2147483647]),
        (2**31, [0, 2147483648], [0, 2147483648]),
        (2**32 - 1, [0, 4294967295], [0, 4294967295]),
        (2**32, [0, 0], [1, 0]),
        (2**32 + 5, [0, 5], [1, 5]),
        (2**33 + 7, [0, 7], [2, 7]),
        (2**63 - 1, [0, 4294967295], [2147483647, 4294967295]),
        (-(2**63), [0, 0], [2147483648, 0]),
    ],
)
def test_seed_to_key_data(x64, seed, x32_key, x64_key):
    key = seed_to_key_data(seed)
    assert key.dtype == np.uint32 and key.shape == (2,)
    assert key.tolist() == (x64_key if x64 else x32_key)


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1])
def test_seed_outside_int64_overflows(x64, seed):
    with pytest.raises(OverflowError):
        seed_to_key_data(seed)


def test_tutorial_numbers(original):
    key = seed_to_key_data(0)
    assert key.tolist() == [0, 0]
    keys = split_data(key, 3)
    assert keys.tolist() == [
        [2467461003, 428148500],
        [3186719485, 3840466878],
        [2562233961, 1946702221],
    ]
    # NumPy prints the last value as 0.01144757; 0.011447566 is its exact float32.
    assert_close_ulp(
        normal_data(keys[1], (3,)), [-0.36838785, -2.275689, 0.011447566], np.float32
    )
    assert_close_ulp(normal_data(keys[2], ()), 0.8535516, np.float32)
    _, second = split_data(keys[0], 2)
    assert_close_ulp(
        normal_data(second, (3,)), [0.96724623, -0.56278366, 0.3791318], np.float32
    )


@pytest.mark.parametrize("num", [2, 3, (2, 3)], ids=str)
def test_split(scheme, num):
    keys = split_data(_key(0), num)
    shape = num if isinstance(num, tuple) else (num,)
    assert keys.shape == (*shape, 2) and keys.dtype == np.uint32
    assert keys.tolist() == SPLIT[scheme, num]


@pytest.mark.parametrize(
    "seed, data, expected",
    [
        (0, 0, [1797259609, 2579123966]),
        (0, 1, [928981903, 3453687069]),
        (0, 2**31, [917456828, 636652529]),
        (0, 2**32 - 1, [743310391, 3789761811]),
        (42, 0, [1832780943, 270669613]),
        (42, 1, [64467757, 2916123636]),
        (42, 2**32 - 1, [2398536845, 3890976714]),
    ],
)
def test_fold_in(scheme, seed, data, expected):
    # fold_in is the same under both schemes.
    key = fold_in_data(_key(seed), data)
    assert key.dtype == np.uint32 and key.shape == (2,)
    assert key.tolist() == expected


@pytest.mark.parametrize("data", [-1, 2**32])
def test_fold_in_data_must_fit_uint32(data):
    with pytest.raises(OverflowError):
        fold_in_data(_key(0), data)


# --------------------------------------------------------------------------
# Bits


@pytest.mark.parametrize("width", [8, 16, 32, 64])
@pytest.mark.parametrize("shape", [(), (5,), (3, 7)], ids=str)
def test_random_bits(scheme, width, shape):
    bits = random_bits_data(_key(42), width, shape)
    assert bits.dtype == np.dtype(f"uint{width}") and bits.shape == shape
    assert bits.tolist() == BITS[scheme, width, shape]


@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_random_bits_long_odd_length(scheme, width):
    first, last, digest = BITS_1001[scheme, width]
    bits = random_bits_data(_key(42), width, (1001,))
    assert bits.dtype == np.dtype(f"uint{width}") and bits.shape == (1001,)
    assert bits[:3].tolist() == first and int(bits[-1]) == last
    assert _digest(bits) == digest


def test_random_bits_rejects_other_widths():
    with pytest.raises(TypeError):
        random_bits_data(_key(0), 12, (3,))


def test_random_bits_empty_shape(scheme):
    assert random_bits_data(_key(0), 32, (0, 3)).shape == (0, 3)


# --------------------------------------------------------------------------
# Uniform


@pytest.mark.parametrize("case", list(UNIFORM), ids=str)
def test_uniform(restore_flags, case):
    partitionable, dtype, minval, maxval, shape = case
    config.update("jax_threefry_partitionable", partitionable)
    out = uniform_data(_key(42), shape, dtype, minval, maxval)
    assert out.shape == shape
    assert_close_ulp(out, UNIFORM[case], dtype)
    assert np.all((out >= np.asarray(minval, dtype)) & (out <= np.asarray(maxval, dtype)))


@pytest.mark.parametrize("case", list(UNIFORM_1000), ids=str)
def test_uniform_1000(restore_flags, case):
    partitionable, dtype, minval, maxval = case
    config.update("jax_threefry_partitionable", partitionable)
    out = uniform_data(_key(42), (1000,), dtype, minval, maxval)
    assert out.dtype == np.dtype(dtype)
    assert_matches_summary(out, UNIFORM_1000[case])


def test_uniform_broadcasts_bounds(original):
    lo = np.array([0.0, -3.7, 0.001], np.float32)
    hi = np.array([1.0, 2.2, 1000.0], np.float32)
    out = uniform_data(_key(42), (5, 3), np.float32, lo, hi)
    # Column j is the uniform draw of the same bits scaled to (lo[j], hi[j]).
    for j in range(3):
        expected = uniform_data(_key(42), (5, 3), np.float32, lo[j], hi[j])[:, j]
        np.testing.assert_array_equal(out[:, j], expected)
    with pytest.raises(ValueError):
        uniform_data(_key(42), (5,), np.float32, lo, hi)


def test_default_float_dtype_follows_x64(original, x64):
    expected = np.float64 if x64 else np.float32
    assert uniform_data(_key(42), (5,)).dtype == expected
    assert normal_data(_key(42), (5,)).dtype == expected
    np.testing.assert_array_equal(normal_data(_key(42), (5,)), normal_data(_key(42), (5,), expected))


# --------------------------------------------------------------------------
# Normal


@pytest.mark.parametrize("case", list(NORMAL), ids=str)
def test_normal(restore_flags, case):
    partitionable, dtype, shape = case
    config.update("jax_threefry_partitionable", partitionable)
    out = normal_data(_key(42), shape, dtype)
    assert out.shape == shape
    assert_close_ulp(out, NORMAL[case], dtype)


@pytest.mark.parametrize("case", list(NORMAL_1000), ids=str)
def test_normal_1000(restore_flags, case):
    partitionable, dtype = case
    config.update("jax_threefry_partitionable", partitionable)
    out = normal_data(_key(42), (1000,), dtype)
    assert out.dtype == np.dtype(dtype)
    assert_matches_summary(out, NORMAL_1000[case])


@pytest.mark.parametrize("table, dtype", [(ERFINV_F32, np.float32), (ERFINV_F64, np.float64)])
def test_erf_inv_every_region(table, dtype):
    # Points on both sides of each region boundary, the smallest inputs and +-1.
    x, expected = table
    assert_close_ulp(_erf_inv(np.array(x, dtype)), expected, dtype)


# --------------------------------------------------------------------------
# Fused multiply-add emulation (no JAX needed: checked against exact rationals)


def _round_exact(value: Fraction, dtype) -> float:
    """Round a rational to the nearest `dtype` value, ties to even."""
    guess = dtype(float(value))
    neighbours = [np.nextafter(guess, dtype(-np.inf)), guess, np.nextafter(guess, dtype(np.inf))]
    uint = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    return min(neighbours, key=lambda c: (abs(Fraction(float(c)) - value), int(np.array(c).view(uint)) & 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_is_correctly_rounded(dtype):
    rng = np.random.default_rng(1234)
    n = 3000
    a = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(dtype)
    b = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(dtype)
    c = (rng.standard_normal(n) * 2.0 ** rng.integers(-40, 40, n)).astype(dtype)
    # Half the cases nearly cancel, where a separate multiply and add go wrong most.
    near = (a * b).astype(dtype) * (1 + rng.integers(-4, 5, n) * np.finfo(dtype).eps)
    c = np.where(np.arange(n) % 2 == 0, -near.astype(dtype), c).astype(dtype)
    got = _fma(a, b, c)
    assert got.dtype == dtype
    for x, y, z, r in zip(a.tolist(), b.tolist(), c.tolist(), got.tolist(), strict=True):
        exact = Fraction(x) * Fraction(y) + Fraction(z)
        assert r == float(_round_exact(exact, dtype)), (x, y, z)
