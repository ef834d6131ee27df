"""Sorting and selection, shape and construction functions of engine.numpy (issue 15).

Each function is composed of existing primitives (and the one new primitive, a stable argsort),
so its derivatives of every order come from theirs. Checked here: values against NumPy and
closed forms; values, gradients and Hessian-vector products in float64 against numbers that JAX
0.10.2 computed for the same programs (JAX_REFERENCE below, made by
tests/data/derive_sorting_construction_reference.py, which runs CASES with jax.numpy in place of
engine.numpy; JAX has no row_stack, so its "stacks" case used vstack);
finite differences to second order; jit against eager; vmap against a loop; the convention at
sorting ties; and the functions' errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine
import engine.numpy as jnp
from engine.core import element_budget
from engine.errors import ConcretizationError, DtypeError, ShapeError
from engine.expr import compile_expression
from engine.limits import LimitExceeded
from engine.primitives import PRIMITIVES
from engine.serialize import graph_to_json, load_graph
from engine.test_util import check_grads

pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


def _weights(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.linspace(0.3, 1.7, int(np.prod(shape))).reshape(shape) * (1 + 0.1 * seed)


def weighted(m: Any, y: Any, seed: int = 0) -> Any:
    """A scalar of y whose derivatives tell every element of y apart."""
    return m.sum(m.sin(y) * _weights(y.shape, seed))


def point(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, shape)


def direction(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(2).standard_normal(shape)


CASES: dict[str, tuple[tuple[int, ...], Callable[[Any, Any], Any]]] = {
    "sort_last_axis": ((3, 4), lambda m, x: weighted(m, m.sort(x))),
    "sort_axis0": ((3, 4), lambda m, x: weighted(m, m.sort(x, axis=0))),
    "sort_flattened": ((3, 4), lambda m, x: weighted(m, m.sort(x, axis=None))),
    "sort_descending": ((3, 4), lambda m, x: weighted(m, m.sort(x, axis=1, descending=True))),
    "sort_with_ties": ((6,), lambda m, x: weighted(m, m.sort(m.round(x)) * x)),
    "argsort_gather": ((3, 4), lambda m, x: weighted(m, m.take_along_axis(x, m.argsort(-x, axis=0), axis=0))),
    "partition": ((7,), lambda m, x: weighted(m, m.partition(x, 3))),
    "partition_axis0": ((5, 3), lambda m, x: weighted(m, m.partition(x, 1, axis=0))),
    "select": ((3, 4), lambda m, x: weighted(m, m.select([x > 0.5, x < -0.5], [x ** 2, m.exp(x)], x * 3))),
    "pad_constant": ((2, 3), lambda m, x: weighted(m, m.pad(x, ((1, 2), (0, 1)), constant_values=0.5))),
    "pad_edge": ((2, 3), lambda m, x: weighted(m, m.pad(x, ((2, 1), (1, 3)), mode="edge"))),
    "pad_reflect": ((2, 3), lambda m, x: weighted(m, m.pad(x, ((3, 2), (4, 5)), mode="reflect"))),
    "pad_symmetric": ((2, 3), lambda m, x: weighted(m, m.pad(x, ((3, 2), (4, 1)), mode="symmetric"))),
    "pad_wrap": ((2, 3), lambda m, x: weighted(m, m.pad(x, ((3, 2), (4, 5)), mode="wrap"))),
    "roll": ((3, 4), lambda m, x: weighted(m, m.roll(x, (1, -5), axis=(0, 1)) * x)),
    "roll_flat": ((3, 4), lambda m, x: weighted(m, m.roll(x, 5) * x)),
    "rot90": ((2, 3, 2), lambda m, x: weighted(m, m.rot90(x, 1, axes=(1, 2)) * m.rot90(x, 3, axes=(1, 2)))),
    "rot90_half": ((3, 4), lambda m, x: weighted(m, m.rot90(x, 2) * x)),
    "flips": ((3, 4), lambda m, x: weighted(m, m.fliplr(x) * m.flipud(x))),
    "tril_triu": ((3, 4), lambda m, x: weighted(m, m.tril(x, 1) + m.triu(x, -1) ** 2)),
    "diff": ((3, 5), lambda m, x: weighted(m, m.diff(x ** 2, n=2, axis=1, prepend=1.0, append=x[:, :1]))),
    "append": ((3, 2), lambda m, x: weighted(m, m.append(x, x ** 2, axis=0)
                                               + m.append(x, 1.0)[:6].reshape(3, 2).sum())),
    "array_split": ((7, 2), lambda m, x: sum(weighted(m, p * (i + 1)) for i, p in enumerate(m.array_split(x, 3)))),
    "hsplit_vsplit_dsplit": ((2, 4, 2), lambda m, x: (weighted(m, m.hsplit(x, 2)[1])
                                                      + weighted(m, m.vsplit(x, 2)[0] ** 2)
                                                      + weighted(m, m.dsplit(x, [1])[1] ** 3))),
    "stacks": ((4,), lambda m, x: weighted(m, m.column_stack([x, x ** 2]) * m.row_stack([x, m.cos(x)]).T)),
    "atleast_3d": ((3, 2), lambda m, x: weighted(m, m.atleast_3d(x) * m.atleast_3d(x[0]).sum())),
    "kron": ((2, 3), lambda m, x: weighted(m, m.kron(x, x[:, :2] ** 2))),
    "cross3": ((4, 3), lambda m, x: weighted(m, m.cross(x, m.roll(x, 1, axis=0) ** 2))),
    "cross_axes": ((3, 4), lambda m, x: weighted(m, m.cross(x, x[::-1] * 2.0, axisa=0, axisb=0, axisc=0))),
    "cross2": ((4, 2), lambda m, x: weighted(m, m.cross(x, m.cos(x[::-1])))),
    "cross23": ((4, 3), lambda m, x: weighted(m, m.cross(x[:, :2], m.exp(x)))),
    "rollaxis": ((2, 3, 4), lambda m, x: weighted(m, m.rollaxis(x, 2) * m.rollaxis(x, 0, 3).transpose(1, 2, 0))),
    "r_c_": ((3,), lambda m, x: weighted(m, m.r_[x, 2.0, x ** 2]) + weighted(m, m.c_[x, m.sin(x)])),
}


JAX_REFERENCE: dict[str, tuple[float, list[float], list[float]]] = {
    "sort_last_axis": (
        1.59308406820047,
        [0.426795122597154, -0.156141805307593, 0.0440703677795605, -0.123074639299585, 0.590525859531903,
         1.01400371487758, 0.306143398154842, 0.87527857713858, 1.54188321360532, -0.413363418858471,
         0.898321875849784, 1.42866307960469],
        [-0.00381825493903571, 0.3469473843666, -0.122574685712326, 1.32013935221161, 0.995398139364562,
         0.367415837970424, 0.374524883585685, 0.257416355733064, -0.0871604430173298,
         -0.693215863066506, -1.4108902241096, 0.0682240132497066]),
    "sort_axis0": (
        4.28229346897765,
        [0.808186508747803, -0.331020627252098, 0.0814634071076725, -0.377294386049548, 0.218959026568009,
         0.892669937028984, 0.404296243364791, 0.637338769761102, 1.29232986111429, -0.133986763354125,
         0.562051654943448, 1.17707461275606],
        [-0.00723031254413146, 0.735528454857192, -0.226577449347027, 4.04698457153396, 0.369080208977871,
         0.32345154966627, 0.494601563819263, 0.187439093980386, -0.0730535505058545, -0.22469755561466,
         -0.882749498507078, 0.0562097216082489]),
    "sort_flattened": (
        4.57183886119932,
        [0.935316970798019, -0.389313567900266, 0.0627668874436165, -0.349047747521774, 0.404742443049956,
         0.771336159180384, 0.371578628294808, 0.637338769761102, 1.16755318486877, -0.09407581256779,
         0.696559743305982, 1.05128037933175],
        [-0.00836766507916337, 0.865055478354056, -0.174576067529676, 3.74400176938704, 0.682239174171217,
         0.279487261362117, 0.454576003741403, 0.187439093980386, -0.0660001042501168,
         -0.157766368835825, -1.09400578874809, 0.05020257578752]),
    "sort_descending": (
        -0.603586546897774,
        [0.55392558464737, -0.0687023943353411, 0.100159926771729, -0.0948280007718115, 0.869200984254824,
         0.892669937028984, 0.207990552944893, 0.994248480827318, 1.4171065373598, -0.533096271217477,
         0.696559743305982, 1.554457313029],
        [-0.00495560747406763, 0.152656849121304, -0.278578831164377, 1.01715655006469, 1.46513658715458,
         0.32345154966627, 0.254448203352106, 0.292404986609402, -0.0801069967615921,
         -0.894009423403011, -1.09400578874809, 0.0742311590704355]),
    "sort_with_ties": (
        -2.97431724343528,
        [-0.299664660546938, 0.132824629048326, 0.0, -0.0, 0.185739491029614, 2.78018750528704],
        [0.0026809024040038, -0.295136574967854, -0.0, -0.0, 10.2004523966492, 4.47867939289258]),
    "argsort_gather": (
        -1.91795488762073,
        [0.808186508747803, -0.0978488646594252, 0.23103556442012, -0.151321277827359, 0.962092692495797,
         0.892669937028984, 0.142555322804926, 1.58909799927101, 0.294116451150148, -0.453274369644806,
         0.562051654943448, 1.17707461275606],
        [-0.00723031254413146, 0.217420360869736, -0.642588503885829, 1.62312215435854, 1.62171606975125,
         0.32345154966627, 0.174397083196387, 0.467348140991096, -0.0166259804599531,
         -0.760147049845341, -0.882749498507078, 0.0562097216082489]),
    "partition": (
        3.42799244492738,
        [0.998882201823127, -0.282443176711958, 0.0440703677795605, -0.325508882081963, 0.38926049167646,
         0.730891566564184, 0.437013858434774],
        [-0.00893634134667933, 0.627589268609805, -0.122574685712326, 3.49151610093126, 0.656142593738438,
         0.264832498594066, 0.534627123897122]),
    "partition_axis0": (
        3.29873280646014,
        [1.49832330273469, -0.229007981117804, 0.0734506129659342, -0.199744086732113, 0.291945368757345,
         1.62067260412058, 0.308480370659841, 0.654334470288064, 1.07842698755054, -0.09407581256779,
         0.845479412564503, 1.38373656766743, 0.466138495183406, 0.526622046798375, 0.564653513354749],
        [-0.013404512020019, 0.50885616373768, -0.204291142853876, 2.14252124375328, 0.492106945303829,
         0.58723727949119, 0.377383852162675, 0.192437469819863, -0.0609619283531613,
         -0.157766368835825, -1.32789668151492, 0.0660786040280177, -0.124221864973285,
         0.941512063495013, 0.257831771521382]),
    "select": (
        2.74945890616587,
        [0.890959324045212, -1.53127243794437, 0.12973385100789, -2.43954855931329, 0.339645271486879,
         1.70161925704249, -0.409606857130161, 1.653568200045, 3.2746754446416, 0.215930179238027,
         1.64673479816013, 4.57501862747522],
        [-0.0721687225348168, 0.139983626948079, -0.0504167782578531, 1.62679205161218, 0.464583293108874,
         7.67183077789705, 2.45480930560843, 7.35201091664014, -1.87030200470383, -0.11683550010965,
         -3.82840174528914, 2.09971231497834]),
    "pad_constant": (
        7.08241586996809,
        [0.594072046347439, -0.153073755799795, 0.109016172928387, -0.1974078985832, 0.702973716876239,
         0.9884597616463],
        [-0.00531477143249876, 0.340130172603607, -0.303211064656806, 2.11746251575616, 1.18494172356053,
         0.358160198327444]),
    "pad_edge": (
        -7.37634399531209,
        [3.6488579254833, -0.46071017377817, 1.36358902659111, -1.18018728369824, 2.03073763856212,
         11.3951790019828],
        [-0.0326439292722815, 1.02369887057816, -3.79260498145196, 12.6590797670128, 3.42303801659869,
         4.12894862258165]),
    "pad_reflect": (
        0.313260041494672,
        [8.76248350780022, -4.15690872713353, 1.33326136740333, -2.5958709424302, 17.6644535168601,
         11.5365241926202],
        [-0.0783921702953882, 9.23665899141191, -3.70825344365844, 27.8441716658056, 29.7754346905521,
         4.18016388037527]),
    "pad_symmetric": (
        -8.77004399864605,
        [6.80692816806014, -1.56058529678096, 2.00213016288234, -1.59472450659659, 5.24440044240468,
         13.7003168587905],
        [-0.0608971043042802, 3.46762345761604, -5.56860511575512, 17.1055433440666, 8.84003021745787,
         4.96419621080039]),
    "pad_wrap": (
        0.5056874722745,
        [11.9865864218775, -2.79444919609773, 1.73308048713838, -3.55100598634868, 11.874789938853,
         14.9961031321037],
        [-0.107236096160152, 6.20927135703039, -4.82028643572327, 38.0892665556138, 20.0163017752497,
         5.43371362227993]),
    "roll": (
        -0.887947794496878,
        [-0.997145535402867, -0.239548966943351, -0.17762471255472, -0.855321407028623, 0.568109086203594,
         -0.946787172940255, 0.805844327471217, 1.54418134411956, 0.743336467527073, -1.47747340229156,
         -0.728139518548567, -2.04189722501597],
        [0.775552049782756, -2.475551254344, 0.627264562500351, 4.16760121998096, 4.58017824387092,
         -0.82458438732206, 7.77359620942375, 1.90611307849091, -0.0669628146969701, 0.296640537811945,
         0.186652122682062, 2.67667913332605]),
    "roll_flat": (
        4.02278863109982,
        [-0.396092067603066, -0.912062469879392, 0.566803344752211, 0.07469933293879, -0.281300060676307,
         1.56259163857877, -1.1086748456692, -1.45939683610033, 2.93849927268701, 0.54924651423728,
         -0.760765440715641, 1.57899012944693],
        [1.30342656323303, 1.59320634370515, 1.59179250507036, 0.664737356129938, -8.42265375003727,
         2.0606171582688, 1.61489908042214, -1.16800140532015, -3.35106162681465, -2.07957340808867,
         2.85190026676754, 1.07106648095042]),
    "rot90": (
        -3.36886873910336,
        [-0.379145686541661, -0.198160895824022, -1.84708166657035, 1.46498844424029, 0.474384750022739,
         0.0584571596457499, 0.413252375100141, 2.61453307117827, -4.85991391377431, 0.510161291102824,
         -0.936448068091431, 3.5503962239528],
        [1.41447764400556, -2.83240762862022, 5.87362303750751, -2.24039370303045, 7.77727300805081,
         0.233710858888762, -0.802898592775397, 2.95395202970976, -0.197921014829795, 0.594457019408365,
         1.83984419069769, -0.552723192196871]),
    "rot90_half": (
        3.27665795309633,
        [0.305138564160771, -0.51428578703234, 3.40033936599227, 0.371872285154442, -0.699432149132391,
         2.41260756504209, -0.564484971238168, -1.44944801906849, 3.36414376442581, 2.56112057782563,
         -0.913826814737424, 0.0945705362915535],
        [-0.621128100467395, -2.91144433066153, 3.5851835861695, 0.524344222626984, 1.24772687060265,
         1.04186780897016, 1.72198218898413, 2.96338754200189, -4.60219957656633, 2.69301502588287,
         -4.0272379572353, 0.378087262156311]),
    "flips": (
        3.27665795309633,
        [0.305138564160771, -0.51428578703234, 3.40033936599227, 0.371872285154443, -0.699432149132391,
         2.41260756504209, -0.564484971238168, -1.44944801906849, 3.36414376442581, 2.56112057782563,
         -0.913826814737424, 0.0945705362915535],
        [-0.621128100467395, -2.91144433066153, 3.5851835861695, 0.524344222626984, 1.24772687060265,
         1.04186780897016, 1.72198218898413, 2.96338754200189, -4.60219957656633, 2.69301502588287,
         -4.0272379572353, 0.378087262156311]),
    "tril_triu": (
        3.37942901120808,
        [0.327969318945536, 0.64883132524455, 0.693981013698386, -2.43954855931329, -0.401808687244414,
         0.353856113816544, -3.82771145497383, -0.857568387465282, 1.29232986111429, 0.443635291015226,
         -2.16343253082279, 2.18453121792758],
        [0.109929239085522, -4.61625072678039, 1.86869100837801, 1.62679205161218, 2.93076374633199,
         2.12824768570186, 1.1978091973556, 1.76309297867711, -0.0730535505058545, 6.32364799647281,
         -13.9557630078311, -0.882277103777254]),
    "diff": (
        2.17025411237294,
        [-0.357769705956493, -1.13149697750195, -0.551226507866283, 0.589518209377407, -0.439995495303291,
         0.262872430072154, 3.19228238717004, 1.47175551101119, 1.00822005061571, 7.58052359325646,
         -1.58259531513058, 0.513101581898358, 3.49893560995379, 4.96750848817044, 2.42052465610811],
        [1.84759127805639, 27.9003118994753, 47.6354015597232, 66.1351376805305, 16.0557024357176,
         -2.52554480697591, -2.31181814382931, -4.15515090915223, -0.512033562339271, -24.3064204236354,
         7.86356816824446, 0.327005646728427, 4.03030417148286, -26.4258335486229, -12.7177060177276]),
    "append": (
        2.94913509900737,
        [-0.384431918009523, -2.23868693396614, 3.75352012734546, -2.8858070342124, 0.581427820964964,
         -0.239527405797215],
        [-8.95881773314223, -17.4356466228726, -8.31989028185952, -50.7198576897079, -17.4447603007715,
         -9.51997569514436]),
    "array_split": (
        -0.779143223516207,
        [0.299664660546938, -0.132824629048326, 0.126335054301407, -0.253009176527344, 1.03640605908858,
         1.62067260412058, -0.520699884097973, 1.14626742235775, 2.2750607599627, -2.73131380144476,
         -0.895554339881185, 2.06324369474373, -1.68366757586405, -4.84181920842867],
        [-0.0026809024040038, 0.295136574967854, -0.351380765708667, 2.71386024208748, 1.74697965582859,
         0.58723727949119, 0.194025850993634, 1.5761223440531, -0.536086079056607, 2.24279101199732,
         -0.262020573313396, 0.946929083225527, -3.25016059717535, -3.80734118748802]),
    "hsplit_vsplit_dsplit": (
        2.61389588356744,
        [0.0283718283543873, 0.860259087068229, 0.876008820570094, 1.01106557919229, -1.17823322779259,
         -0.119764967833381, -0.397703813067884, -0.0271088510081452, 0.0, 10.5307611446606, 0.0,
         0.0907859576114056, 0.854587241169578, 0.737029836887818, 1.05872533754016, 1.8471273898501],
        [0.113430611246581, -7.61955510810223, 2.35883946959192, -64.3516958272741, 1.30220701564867,
         1.61047037754839, 3.6820511396196, 1.25350099967971, 0.0, -25.2182039213246, 0.0,
         -0.369575131465846, -0.227740085784356, 19.5875719102074, 0.483434571602591, 0.157004218277597]),
    "stacks": (
        -0.54422045704951,
        [0.0755525057979111, -5.14912760903539, 3.34748632718925, -10.4215799071218],
        [0.301214057994633, -2.49869318286916, 6.9958584541968, -17.4926184958757]),
    "atleast_3d": (
        -3.0141823543578,
        [-2.03486907390262, -3.64063450652465, -1.38820547797592, -2.07513350486179, 0.467496919823606,
         2.65142252128152],
        [-0.980142618089517, -0.992258820309822, 0.0264385655358793, -1.52215503499033, 9.163357149778,
         3.26723783097264]),
    "kron": (
        -3.99160609449777,
        [3.74327413281878, 15.1624537518888, -0.171842644761902, 22.741895764048, -5.36796680845418,
         6.21491329875392],
        [-8.26855776726662, -103.656032321826, -34.2090026592608, -249.907500784801, 39.4380911729103,
         30.1486574186592]),
    "cross3": (
        0.939155575413562,
        [0.644128816045081, 4.12058118075048, -1.84214421550168, 4.33545715389457, 2.37593105955269,
         -0.845013529893944, 2.09260813831189, 0.727601816794352, 4.43517994162615, 4.44161144153752,
         1.35956551938244, 2.36858811517296],
        [0.774649980023927, -43.0926125917209, 2.11442420599623, 3.60263723137577, -26.0163359519647,
         -1.91498466001764, 7.88611040663606, -40.7840761330696, -3.06014158670359, 9.66135335167933,
         -3.22039332685641, -0.627675460242938]),
    "cross_axes": (
        -3.99122407708157,
        [-2.52580911544796, -4.64207502637036, 3.05089366074847, -9.13437187275862, -0.476383776690188,
         -8.83959324380728, -10.3110142275925, 2.88694243133384, 3.01343899430046, -6.37314187337779,
         -7.32211593811033, 1.36086665729213],
        [4.84396650061692, 23.8209535838602, 5.57888744481041, -10.1355566126428, -0.335238502814457,
         89.5392191491303, -3.60659253073084, 25.980478502914, -4.55332877770469, 42.5609509100651,
         7.23085324949518, 5.14569445353683]),
    "cross2": (
        -0.106565139371883,
        [0.227042601024533, -2.23535617203586, -0.284262455600045, 1.38251931470425, 0.568883939564508,
         0.115889104481643, 0.0886517492809097, -1.69016849992223],
        [-0.00671003592187894, 0.187940121433716, -1.82015039753389, 0.0237196925037761, 0.545687421727206,
         -0.378197223652912, 0.631212022690412, 0.0200162651346767]),
    "cross23": (
        1.01835101753929,
        [-0.176273099565308, 0.0789629881837384, 0.113277990419297, 2.73023570557737, -2.54970462447012,
         -0.585731824996561, -1.66960810674407, 3.51351470144103, -0.373037372966989, 3.76007863992654,
         -4.87893644461738, -1.392375775447],
        [2.83942124753621, -0.533019736203825, -0.0838061985029706, -91.8958556434138, 91.5205730384506,
         0.0248329088716566, 8.2922488114588, -8.68739589295626, 0.723710673173666, 25.8540507417797,
         -56.5920466421996, -0.651967151476589]),
    "rollaxis": (
        8.21922246734861,
        [0.0283718283543873, -2.38402545148971, 1.28952851226778, -4.99364983358563, -0.458367419414741,
         -0.443404546734746, -0.420261810678698, -1.04883488476919, 0.16719524496325, 2.70403707245457,
         1.20639153974285, 0.462901204573916, -0.587919162062492, 0.464520407844161, -1.55471329889965,
         -0.586788293519806, 0.861313586250418, -0.696397257832347, -0.492749349527765,
         -1.92784776220309, 0.651037166683232, -1.22098193534959, -0.158133664728471, -5.55274196780862],
        [0.113430611246581, 0.217939356293817, 3.47232890865394, 3.32997259956093, 0.306124604559984,
         1.62482552133293, 2.51866536335372, 2.15632181427984, 0.236276985857649, -1.80071797057926,
         -2.80467230146213, -0.941194913443523, -0.152112464814211, 3.15455939072273, 0.10394763434791,
         -0.312183882279446, -2.45660223565157, -1.04147257567719, -0.844462881293163, 2.34589659344557,
         -1.17285927629252, -0.130904376797278, 0.882453701403747, 4.26369489677992]),
    "r_c_": (
        1.05637976879153,
        [1.2946736211388, -5.72221104033236, 2.58587664149128],
        [0.450617181183537, 1.54164575956513, 4.44090790731865]),
}


# ----------------------------------------------------------------------------- against JAX


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_gradient_and_hessian_vector_product_match_jax(name: str) -> None:
    shape, f = CASES[name]
    x, v = point(shape), direction(shape)
    value, grad, hvp = JAX_REFERENCE[name]

    def fn(y: Any) -> Any:
        return f(jnp, y)

    np.testing.assert_allclose(float(fn(x)), value, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(engine.grad(fn)(x)).ravel(), grad, rtol=1e-12, atol=1e-13)
    second = engine.jvp(engine.grad(fn), (x,), (v,))[1]
    np.testing.assert_allclose(np.asarray(second).ravel(), hvp, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_derivatives_match_finite_differences_to_second_order(name: str) -> None:
    shape, f = CASES[name]
    check_grads(lambda y: f(jnp, y), (point(shape, seed=3),), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_agrees_with_eager(name: str) -> None:
    shape, f = CASES[name]
    x = point(shape, seed=4)

    def fn(y: Any) -> Any:
        return f(jnp, y)

    np.testing.assert_allclose(float(engine.jit(fn)(x)), float(fn(x)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(engine.jit(engine.grad(fn))(x)), np.asarray(engine.grad(fn)(x)),
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("fn", [
    lambda x: jnp.sort(x), lambda x: jnp.argsort(x, descending=True), lambda x: jnp.partition(x, 2),
    lambda x: jnp.argpartition(x, 1), lambda x: jnp.pad(x, (2, 3), mode="reflect"), lambda x: jnp.roll(x, 2),
    lambda x: jnp.diff(x, prepend=0.0), lambda x: jnp.kron(x, x[:2]), lambda x: jnp.cross(x[:3], x[1:4]),
    lambda x: jnp.tril(jnp.outer(x, x), -1), lambda x: jnp.select([x > 0], [x * x], -x),
    lambda x: jnp.nonzero(x > 0, size=3, fill_value=-1)[0],
], ids=["sort", "argsort", "partition", "argpartition", "pad", "roll", "diff", "kron", "cross", "tril", "select",
        "nonzero_size"])
def test_vmap_agrees_with_a_loop(fn: Callable[[Any], Any]) -> None:
    batch = point((4, 5), seed=5)
    batched = np.asarray(engine.vmap(fn)(batch))
    np.testing.assert_array_equal(batched, np.stack([np.asarray(fn(row)) for row in batch]))


# ----------------------------------------------------------------------------- sorting


def test_sort_and_argsort_are_numpys_stable_sort() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (5, 6)).astype(np.float64)  # many ties
    for axis in (0, 1, -1, None):
        np.testing.assert_array_equal(np.asarray(jnp.sort(x, axis=axis)), np.sort(x, axis=axis))
        np.testing.assert_array_equal(np.asarray(jnp.argsort(x, axis=axis)), np.argsort(x, axis=axis, kind="stable"))
    ints = rng.integers(-5, 5, 9)
    assert jnp.sort(ints).dtype == ints.dtype and jnp.argsort(ints).dtype == np.int64
    np.testing.assert_array_equal(np.asarray(jnp.msort(x)), np.sort(x, axis=0))
    np.testing.assert_array_equal(np.asarray(jnp.sort(np.array([True, False, True]))), [False, True, True])


def test_descending_order_and_nans_as_jax() -> None:
    y = np.array([2.0, np.nan, -1.0, np.inf, 0.0])
    np.testing.assert_array_equal(np.asarray(jnp.sort(y)), [-1.0, 0.0, 2.0, np.inf, np.nan])
    np.testing.assert_array_equal(np.asarray(jnp.argsort(y)), [2, 4, 0, 3, 1])
    np.testing.assert_array_equal(np.asarray(jnp.sort(y, descending=True)), [np.nan, np.inf, 2.0, 0.0, -1.0])
    np.testing.assert_array_equal(np.asarray(jnp.argsort(y, descending=True)), [1, 3, 0, 4, 2])
    # descending argsort keeps tied elements in index order
    np.testing.assert_array_equal(np.asarray(jnp.argsort(np.array([1.0, 3, 1, 2, 1]), descending=True)),
                                  [1, 3, 0, 2, 4])


TIES = np.array([1.0, 3.0, 1.0, 2.0, 1.0])
W = np.arange(1.0, 6.0)


def test_the_derivative_of_sort_permutes_the_cotangent_in_the_stable_order() -> None:
    # sorted order of TIES: x0, x2, x4 (the tied ones, in index order), x3, x1; numbers as JAX gives
    grad = engine.grad(lambda x: jnp.sum(W * jnp.sort(x)))(TIES)
    np.testing.assert_array_equal(np.asarray(grad), [1.0, 5.0, 2.0, 4.0, 3.0])
    # descending sort is the ascending one reversed (as in JAX): the tied elements in reverse order
    grad = engine.grad(lambda x: jnp.sum(W * jnp.sort(x, descending=True)))(TIES)
    np.testing.assert_array_equal(np.asarray(grad), [5.0, 1.0, 4.0, 2.0, 3.0])
    # a gather by the descending argsort keeps the ties in index order
    grad = engine.grad(lambda x: jnp.sum(W * jnp.take_along_axis(x, jnp.argsort(x, descending=True), 0)))(TIES)
    np.testing.assert_array_equal(np.asarray(grad), [3.0, 1.0, 4.0, 2.0, 5.0])
    # forward mode: the tangent is permuted like the values
    t = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    np.testing.assert_array_equal(np.asarray(engine.jvp(jnp.sort, (TIES,), (t,))[1]), [10.0, 30.0, 50.0, 40.0, 20.0])


def test_partition_as_jax_computes_it() -> None:
    x = np.array([6, 8, 4, 3, 1, 9, 7, 5, 2, 3])
    np.testing.assert_array_equal(np.asarray(jnp.partition(x, 4)), [1, 2, 3, 3, 4, 9, 8, 7, 6, 5])
    np.testing.assert_array_equal(np.asarray(jnp.argpartition(x, 4)), [4, 8, 3, 9, 2, 0, 1, 5, 6, 7])
    rng = np.random.default_rng(1)
    y = rng.standard_normal((4, 7))
    for kth in (0, 3, 6, -1):
        for axis in (0, 1):
            if not -y.shape[axis] <= kth < y.shape[axis]:
                continue
            part = np.asarray(jnp.partition(y, kth, axis=axis))
            k = kth % y.shape[axis]
            pivot = np.take(np.sort(y, axis=axis), [k], axis=axis)
            np.testing.assert_array_equal(np.take(part, [k], axis=axis), pivot)
            assert np.all(np.take(part, range(k), axis=axis) <= pivot)
            assert np.all(np.take(part, range(k + 1, y.shape[axis]), axis=axis) >= pivot)
            order = np.asarray(jnp.argpartition(y, kth, axis=axis))
            # the first k + 1 indices pick partition's first k + 1 values, the rest come in index order
            bottom = range(k + 1)
            np.testing.assert_array_equal(np.take(np.take_along_axis(y, order, axis=axis), bottom, axis=axis),
                                          np.take(part, bottom, axis=axis))
            assert np.all(np.diff(np.take(order, range(k + 1, y.shape[axis]), axis=axis), axis=axis) > 0)
            np.testing.assert_array_equal(np.sort(order, axis=axis), np.indices(y.shape)[axis])
    # at a tie across the pivot JAX's two top_k calls both pick the first tied element; so do we
    np.testing.assert_array_equal(np.asarray(jnp.partition(TIES, 1)), [1.0, 1.0, 3.0, 2.0, 1.0])
    grad = engine.grad(lambda x: jnp.sum(W * jnp.partition(x, 1)))(TIES)
    np.testing.assert_array_equal(np.asarray(grad), [6.0, 3.0, 2.0, 4.0, 0.0])


def test_select_takes_the_first_condition_that_holds() -> None:
    x = np.linspace(-2, 2, 9)
    got = jnp.select([x < -1, x < 1], [x * 10, x ** 2], default=-7.0)
    np.testing.assert_array_equal(np.asarray(got), np.select([x < -1, x < 1], [x * 10, x ** 2], default=-7.0))
    # broadcasting, a scalar choice, and non-boolean conditions (non-zero holds)
    got = jnp.select([np.array([True, False]), np.array([1, 1])], [1.0, np.array([2.0, 3.0])])
    np.testing.assert_array_equal(np.asarray(got), [1.0, 3.0])
    assert jnp.select([x > 0], [x]).dtype == np.float64  # the default 0 takes the choices' dtype
    grad = engine.grad(lambda v: jnp.sum(jnp.select([v < -1, v < 1], [v * 10, v ** 2], v)))(x)
    np.testing.assert_allclose(np.asarray(grad), np.select([x < -1, x < 1], [10.0 + 0 * x, 2 * x], 1.0))
    with pytest.raises(ValueError, match="same length"):
        jnp.select([x > 0], [x, x])
    with pytest.raises(ValueError, match="empty"):
        jnp.select([], [])


def test_one_argument_where_and_nonzero_on_concrete_input() -> None:
    a = np.array([[0, 1, 0], [2, 0, 3]])
    for got, want in ((jnp.where(a), np.nonzero(a)), (jnp.nonzero(a), np.nonzero(a)),
                      (jnp.nonzero(a > 1), np.nonzero(a > 1))):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g), w)
    np.testing.assert_array_equal(np.asarray(jnp.flatnonzero(a)), np.flatnonzero(a))
    np.testing.assert_array_equal(np.asarray(jnp.argwhere(a)), np.argwhere(a))
    for scalar in (2.0, 0.0):  # a 0-d array: a row per true element, with no coordinates
        assert jnp.argwhere(np.float64(scalar)).shape == np.argwhere(np.float64(scalar)).shape
    # under grad the condition is still concrete, as in JAX
    picked = engine.grad(lambda x: jnp.sum(x[jnp.where(x > 0)] ** 2))(np.array([-1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(picked), [0.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="one argument"):
        jnp.where(a > 0, 1.0)


def test_nonzero_with_a_size_works_traced() -> None:
    a = np.array([[0, 1], [2, 0]])
    rows, cols = jnp.nonzero(a, size=3, fill_value=-1)
    np.testing.assert_array_equal(np.asarray(rows), [0, 1, -1])
    np.testing.assert_array_equal(np.asarray(cols), [1, 0, -1])
    rows, cols = engine.jit(lambda v: jnp.nonzero(v, size=1))(a)  # fewer than there are: the first ones
    assert (int(rows[0]), int(cols[0])) == (0, 1)
    np.testing.assert_array_equal(np.asarray(engine.jit(lambda v: jnp.argwhere(v, size=3))(a)),
                                  [[0, 1], [1, 0], [0, 0]])
    (first,) = engine.jit(lambda v: jnp.where(v > 1, size=2, fill_value=9))(np.array([0.0, 2.0, 1.0]))
    np.testing.assert_array_equal(np.asarray(first), [1, 9])
    with pytest.raises(ConcretizationError, match="size="):
        engine.jit(lambda v: jnp.where(v > 0)[0])(a)


def test_sorting_errors() -> None:
    with pytest.raises(ShapeError, match="axis=None"):
        jnp.sort(np.float64(1.0))
    with pytest.raises(ShapeError, match="out of bounds"):
        jnp.sort(np.ones(3), axis=1)
    with pytest.raises(ShapeError, match="kth=5"):
        jnp.partition(np.ones(4), 5)
    with pytest.raises(DtypeError, match="complex"):
        jnp.partition(np.ones(4, complex), 1)
    with pytest.raises(TypeError, match="kind"):
        jnp.sort(np.ones(3), kind="quicksort")
    with pytest.raises(DtypeError, match="integers"):
        jnp.take_along_axis(np.ones(3), np.ones(3), 0)


# ----------------------------------------------------------------------------- shapes and construction


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", "wrap"])
def test_pad_is_numpys_pad(mode: str) -> None:
    x = np.arange(1.0, 7.0).reshape(2, 3)
    for width in (0, 1, ((1, 2), (3, 0)), ((4, 5), (7, 2)), (2, 3)):  # wider than the axis too
        np.testing.assert_array_equal(np.asarray(jnp.pad(x, width, mode=mode)), np.pad(x, width, mode=mode))
    np.testing.assert_array_equal(np.asarray(jnp.pad(np.arange(4), 2, mode=mode)), np.pad(np.arange(4), 2, mode=mode))


def test_pad_constant_values_and_their_derivative() -> None:
    x = np.arange(1.0, 7.0).reshape(2, 3)
    for values in (5.0, (1.0, 2.0), ((1.0, 2.0), (3.0, 4.0))):
        np.testing.assert_array_equal(np.asarray(jnp.pad(x, ((1, 2), (2, 1)), constant_values=values)),
                                      np.pad(x, ((1, 2), (2, 1)), constant_values=values))
    # each constant's derivative is the number of elements it fills; axes are padded in order, so the
    # corners take the last axis's constants (1 x 3 and 2 x 3 blocks on axis 0, then 5 x 2 and 5 x 1)
    grad = engine.grad(lambda c: jnp.sum(jnp.pad(x, ((1, 2), (2, 1)), constant_values=c)))(np.array([[1.0, 2.0],
                                                                                                    [3.0, 4.0]]))
    np.testing.assert_array_equal(np.asarray(grad), [[3.0, 6.0], [10.0, 5.0]])
    # the edge element of "edge" padding receives the cotangents of all its copies
    grad = engine.grad(lambda v: jnp.sum(jnp.pad(v, (2, 3), mode="edge")))(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(grad), [3.0, 1.0, 4.0])


def test_pad_errors() -> None:
    with pytest.raises(ValueError, match="mode 'linear_ramp' is not supported"):
        jnp.pad(np.ones(3), 1, mode="linear_ramp")
    with pytest.raises(ValueError, match="non-negative"):
        jnp.pad(np.ones(3), -1)
    with pytest.raises(ShapeError, match="does not fit"):
        jnp.pad(np.ones((2, 2)), ((1, 2, 3),))
    with pytest.raises(ShapeError, match="length 0"):
        jnp.pad(np.ones(0), 1, mode="wrap")
    # an oversized result is refused before anything is allocated, index map included
    with element_budget(1000), pytest.raises(LimitExceeded, match="padded array"):
        jnp.pad(np.ones(3), 10**9, mode="reflect")
    with element_budget(1000), pytest.raises(LimitExceeded, match="Kronecker"):
        jnp.kron(np.ones(40), np.ones(40))


def test_roll_rot90_flips_and_rollaxis_are_numpys() -> None:
    x = np.arange(24).reshape(2, 3, 4)
    for shift, axis in ((1, None), (-7, None), (2, 1), ((1, -2), (0, 2)), ((1, 1), (1, 1)), (5, -1)):
        np.testing.assert_array_equal(np.asarray(jnp.roll(x, shift, axis)), np.roll(x, shift, axis))
        # a traced shift, as JAX allows: a gather by computed indices
        rolled = engine.jit(lambda v, s, a=axis: jnp.roll(v, s, a))(x, np.asarray(shift))
        np.testing.assert_array_equal(np.asarray(rolled), np.roll(x, shift, axis))
    weights = np.arange(24.0).reshape(2, 3, 4)
    grad = engine.jit(engine.grad(lambda v, s: jnp.sum(jnp.roll(v, s, 2) * weights)))(x * 1.0, np.array(1))
    np.testing.assert_array_equal(np.asarray(grad), np.roll(weights, -1, 2))  # the cotangent rolled back
    for k in range(-1, 6):
        for axes in ((0, 1), (1, 2), (2, 0)):
            np.testing.assert_array_equal(np.asarray(jnp.rot90(x, k, axes)), np.rot90(x, k, axes))
    np.testing.assert_array_equal(np.asarray(jnp.fliplr(x)), np.fliplr(x))
    np.testing.assert_array_equal(np.asarray(jnp.flipud(x)), np.flipud(x))
    for axis in range(-3, 3):
        for start in range(-3, 4):
            np.testing.assert_array_equal(np.asarray(jnp.rollaxis(x, axis, start)), np.rollaxis(x, axis, start))
    with pytest.raises(ShapeError, match="start 5"):
        jnp.rollaxis(x, 0, 5)
    with pytest.raises(ValueError, match="must differ"):
        jnp.rot90(x, 1, (1, 1))
    with pytest.raises(ShapeError, match="two dimensions"):
        jnp.fliplr(np.ones(3))


def test_tril_triu_diff_and_append_are_numpys() -> None:
    x = np.arange(1.0, 25.0).reshape(2, 3, 4)
    for k in (-3, -1, 0, 2, 5):
        np.testing.assert_array_equal(np.asarray(jnp.tril(x, k)), np.tril(x, k))
        np.testing.assert_array_equal(np.asarray(jnp.triu(x, k)), np.triu(x, k))
    y = np.array([[1, 4, 9, 16, 25], [0, 1, 0, 1, 1]])
    for n in (0, 1, 2, 4, 7):
        np.testing.assert_array_equal(np.asarray(jnp.diff(y, n)), np.diff(y, n))
    np.testing.assert_array_equal(np.asarray(jnp.diff(y, axis=0)), np.diff(y, axis=0))
    np.testing.assert_array_equal(np.asarray(jnp.diff(y, prepend=0, append=[[7], [8]])),
                                  np.diff(y, prepend=0, append=[[7], [8]]))
    flags = np.array([True, True, False, True])
    np.testing.assert_array_equal(np.asarray(jnp.diff(flags)), np.diff(flags))
    np.testing.assert_array_equal(np.asarray(jnp.append(y, [1, 2])), np.append(y, [1, 2]))
    np.testing.assert_array_equal(np.asarray(jnp.append(y, y, axis=1)), np.append(y, y, axis=1))
    # the zeroed triangle receives no cotangent
    np.testing.assert_array_equal(np.asarray(engine.grad(lambda m: jnp.sum(jnp.tril(m)))(np.ones((3, 3)))),
                                  np.tri(3))
    with pytest.raises(ShapeError, match="two dimensions"):
        jnp.triu(np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        jnp.diff(y, -1)


def test_splits_and_stacks_are_numpys() -> None:
    x = np.arange(48).reshape(4, 6, 2)
    for how in (3, [1, 4], [2, 2, 5]):
        for got, want in zip(jnp.array_split(x, how, axis=1), np.array_split(x, how, axis=1)):
            np.testing.assert_array_equal(np.asarray(got), want)
    assert [p.shape for p in jnp.array_split(np.arange(7), 3)] == [(3,), (2,), (2,)]
    for fn, np_fn, how in ((jnp.hsplit, np.hsplit, 3), (jnp.vsplit, np.vsplit, [1]), (jnp.dsplit, np.dsplit, 2)):
        got, want = fn(x, how), np_fn(x, how)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g), w)
    np.testing.assert_array_equal(np.asarray(jnp.hsplit(np.arange(6), 2)[1]), [3, 4, 5])
    a, b = np.arange(3), np.arange(3, 6)
    np.testing.assert_array_equal(np.asarray(jnp.column_stack([a, b])), np.column_stack([a, b]))
    np.testing.assert_array_equal(np.asarray(jnp.column_stack([x[0], x[1]])), np.column_stack([x[0], x[1]]))
    np.testing.assert_array_equal(np.asarray(jnp.row_stack([a, b])), np.vstack([a, b]))
    for v in (np.float64(2.0), a, x[0], x):
        np.testing.assert_array_equal(np.asarray(jnp.atleast_3d(v)), np.atleast_3d(v))
    assert [v.shape for v in jnp.atleast_3d(a, x[0])] == [(1, 3, 1), (6, 2, 1)]
    with pytest.raises(ValueError, match="positive"):
        jnp.array_split(x, 0)
    with element_budget(1000), pytest.raises(LimitExceeded, match="list of parts"):
        jnp.array_split(np.arange(3), 10**6)
    with pytest.raises(ShapeError, match="three dimensions"):
        jnp.dsplit(x[0], 2)


def test_kron_and_cross_are_numpys() -> None:
    rng = np.random.default_rng(3)
    for sa, sb in (((2, 3), (4, 1)), ((3,), (2, 2)), ((), (3,)), ((2, 1, 2), (3, 2))):
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        np.testing.assert_allclose(np.asarray(jnp.kron(a, b)), np.kron(a, b), rtol=1e-15)
    u, v = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(np.asarray(jnp.cross(u, v)), np.cross(u, v), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(jnp.cross(u.T, v, axisa=0)), np.cross(u.T, v, axisa=0), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(jnp.cross(u, v, axisc=0)), np.cross(u, v, axisc=0), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(jnp.cross(u[:, :2], v)), np.cross(np.pad(u[:, :2], ((0, 0), (0, 1))), v),
                               rtol=1e-14)
    # two 2-vectors: the z component, a[0] b[1] - a[1] b[0]
    np.testing.assert_allclose(np.asarray(jnp.cross(u[:, :2], v[:, :2])), u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])
    # d/du (u x v) . w = v x w
    w = rng.standard_normal(3)
    grad = engine.grad(lambda p: jnp.sum(jnp.cross(p, v[0]) * w))(u[0])
    np.testing.assert_allclose(np.asarray(grad), np.cross(v[0], w), rtol=1e-14)
    with pytest.raises(ShapeError, match="2 or 3 components"):
        jnp.cross(np.ones(4), np.ones(3))


def test_index_helpers_are_numpys() -> None:
    x = np.arange(10.0)
    assert jnp.s_[1:5, ::2] == np.s_[1:5, ::2]
    assert jnp.index_exp[3] == np.index_exp[3]
    np.testing.assert_array_equal(np.asarray(jnp.arange(10.0)[jnp.s_[2:8:3]]), x[2:8:3])
    for got, want in (
        (jnp.r_[1:4, 0, np.array([7, 8])], np.r_[1:4, 0, np.array([7, 8])]),
        (jnp.r_[0:1:5j], np.r_[0:1:5j]),
        (jnp.r_["0,2,0", [1, 2], [3, 4]], np.r_["0,2,0", [1, 2], [3, 4]]),
        (jnp.r_["1,2", [[1], [2]], [[3], [4]]], np.r_["1,2", [[1], [2]], [[3], [4]]]),
        (jnp.r_["-1,3,-1", [1, 2], [3, 4]], np.r_["-1,3,-1", [1, 2], [3, 4]]),
        (jnp.c_[np.array([1, 2]), np.array([3, 4])], np.c_[np.array([1, 2]), np.array([3, 4])]),
        (jnp.c_[1:4, 0:1:3j], np.c_[1:4, 0:1:3j]),
        (jnp.c_[np.ones((2, 2)), np.zeros((2, 1))], np.c_[np.ones((2, 2)), np.zeros((2, 1))]),
    ):
        np.testing.assert_allclose(np.asarray(got), want)
    # differentiable: r_ is a concatenation
    grad = engine.grad(lambda v: jnp.sum(jnp.r_[v, v ** 2] * np.arange(6.0)))(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(np.asarray(grad), np.arange(3.0) + 2 * np.array([1.0, 2.0, 3.0]) * np.arange(3.0, 6.0))
    with pytest.raises(ValueError, match="directive 'r'"):
        jnp.r_["r", [1, 2]]


# ----------------------------------------------------------------------------- how they are reached


def test_argsort_is_a_listed_primitive_of_the_graph_format() -> None:
    assert "argsort" in PRIMITIVES and PRIMITIVES["argsort"].vjp is None
    x = point((3, 4))
    graph = engine.make_graph(lambda v: jnp.sort(v, axis=0))(x)
    document = graph_to_json(graph)
    assert any(node["op"] == "argsort" for node in document["nodes"])
    loaded = load_graph(document)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.sort(x, axis=0))


@pytest.mark.parametrize("source, want_grad", [
    ("sum(sort(x) * arange(4))", [2.0, 0.0, 1.0, 3.0]),
    ("sum(pad(x, 1, mode='edge'))", [2.0, 1.0, 1.0, 2.0]),
    ("sum(roll(x, 1) * arange(4))", [1.0, 2.0, 3.0, 0.0]),
    ("sum(partition(x, 0) * arange(4))", [2.0, 0.0, 3.0, 1.0]),  # [1] then [5, 3, 2]
    ("sum(diff(x ** 2))", [-6.0, 0.0, 0.0, 10.0]),
    ("sum(select([x > 2.5], [x ** 2], x))", [6.0, 1.0, 1.0, 10.0]),
    ("sum(kron(x, array([1.0, 2.0])))", [3.0, 3.0, 3.0, 3.0]),
    ("sum(split(x, 2)[1] ** 2)", [0.0, 0.0, 4.0, 10.0]),
])
def test_expression_functions(source: str, want_grad: list[float]) -> None:
    x = np.array([3.0, 1.0, 2.0, 5.0])
    program = compile_expression(source, ["x"])
    np.testing.assert_allclose(np.asarray(engine.grad(program)(x)), want_grad)
