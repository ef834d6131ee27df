/* engine._f32kernels: XLA's float32 tanh and log on CPU, element by element in C.

   The specification is the NumPy emulation in engine/_xla_f32.py (bit exact against JAX 0.10.2,
   tests/test_xla_f32.py): every function below performs the same float32 operations in the same
   order, with fmaf exactly where the emulation calls _fma and a plain rounded *, +, / where it calls
   _mul, _add, _div.  Two things make that translation exact rather than close:

   - The file must be compiled without contraction or reassociation (setup.py passes
     -ffp-contract=off -fno-fast-math): a mul+add that the compiler fused on its own would round
     once where XLA rounds twice.  FLT_EVAL_METHOD 0 is required so float stays float.
   - XLA runs with DAZ and FTZ.  DAZ is applied explicitly to the input (denormal -> signed zero)
     before any arithmetic or comparison, as the emulation does.  FTZ would only flush results
     below 2**-126, and for inputs whose result comes out of the arithmetic no intermediate gets
     there (tanh: |x| >= 4e-4 keeps x*x >= 1.6e-7 and every later value far larger; log: the reduced
     argument is either 0 or at least 2**-24 in magnitude); lanes where tiny values do occur (tanh
     of |x| < 4e-4) are replaced by a select.  So plain IEEE arithmetic gives the same bits, with
     no change to the floating-point environment.

   Checked once on all 2**32 inputs (x86-64, glibc, NumPy 2.4): tanh and both paths of log give
   the same bits as the emulation, and tanh and the vector log the same bits with MXCSR's FTZ and
   DAZ set as without.  tests/test_xla_f32.py compares this module with the emulation on every
   float32 exponent, the special values and the thresholds.

   The functions read a float32 buffer and write a dense one of the same layout (or work in place:
   any memory order will do, since elementwise results do not depend on it), and release the GIL
   for large arrays.  On x86-64 with GCC the loops are compiled three times (AVX-512, AVX2+FMA,
   baseline) and the CPU picks one at load time: the arithmetic is the same IEEE single precision
   in each, only the vector width differs.  The baseline clone computes fmaf in the C library,
   which is exact but slower. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "float arithmetic must be evaluated in float (FLT_EVAL_METHOD 0); the NumPy emulation is used instead"
#endif

/* -DF32KERNELS_SINGLE_TARGET builds for the compiler's target alone (to test one clone's code). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12 && \
    !defined(F32KERNELS_SINGLE_TARGET)
#define CLONED __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONED
#endif

#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif

/* Arrays at least this long are computed without the GIL. */
#define RELEASE_GIL_FROM 4096

static inline ALWAYS_INLINE uint32_t bits_of(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static inline ALWAYS_INLINE float float_of(uint32_t u) {
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static const float FLT_MIN_NORMAL = 0x1p-126f;
static const uint32_t QUIET_BIT = 0x00400000u;

/* MXCSR.DAZ: a denormal operand reads as a zero of the same sign. */
static inline ALWAYS_INLINE float daz(float x) { return fabsf(x) < FLT_MIN_NORMAL ? copysignf(0.0f, x) : x; }

/* ----------------------------------------------------------------------------------------------
   tanh: Eigen's rational approximation x*P(x^2)/Q(x^2), x clamped to +-7.99881172, the identity
   for |x| < 4e-4 and +-1 for |x| >= 20 (constants: bit patterns as in _xla_f32.py). */

static const float TANH_CLAMP = 0x1.ffec88p+2f; /* 0x40FFF644 */
static const float TANH_SMALL = 0x1.a36e2ep-12f; /* 0x39D1B717, 4e-4 */
static const float TANH_P0 = -0x1.3e4b8p-52f;   /* 0xA59F25C0 */
static const float TANH_P1 = 0x1.c266fcp-43f;   /* 0x2A61337E */
static const float TANH_P2 = -0x1.7a6ffep-34f;  /* 0xAEBD37FF */
static const float TANH_P3 = 0x1.b80082p-25f;   /* 0x335C0041 */
static const float TANH_P4 = 0x1.f28694p-17f;   /* 0x3779434A */
static const float TANH_P5 = 0x1.4e1bdap-11f;   /* 0x3A270DED */
static const float TANH_P6 = 0x1.40b3b8p-8f;    /* 0x3BA059DC */
static const float TANH_Q0 = 0x1.41a7bp-20f;    /* 0x35A0D3D8 */
static const float TANH_Q1 = 0x1.f12bacp-14f;   /* 0x38F895D6 */
static const float TANH_Q2 = 0x1.29540ap-9f;    /* 0x3B14AA05 */
static const float TANH_Q3 = 0x1.40b3bap-8f;    /* 0x3BA059DD */

static inline ALWAYS_INLINE float tanh_element(float x) {
    float xd = daz(x);
    float xc = xd > TANH_CLAMP ? TANH_CLAMP : (xd < -TANH_CLAMP ? -TANH_CLAMP : xd);
    float x2 = xc * xc;
    float p = fmaf(x2, TANH_P0, TANH_P1);
    p = fmaf(x2, p, TANH_P2);
    p = fmaf(x2, p, TANH_P3);
    p = fmaf(x2, p, TANH_P4);
    p = fmaf(x2, p, TANH_P5);
    p = fmaf(x2, p, TANH_P6);
    p = xc * p;
    float q = fmaf(x2, TANH_Q0, TANH_Q1);
    q = fmaf(x2, q, TANH_Q2);
    q = fmaf(x2, q, TANH_Q3);
    float r = p / q;
    float a = fabsf(xd);
    r = a >= 20.0f ? copysignf(1.0f, xd) : r;
    /* Tiny inputs (denormals included) come back by a select: their original bits. */
    r = a < TANH_SMALL ? x : r;
    /* x86 returns a NaN operand quieted. */
    return x != x ? float_of(bits_of(x) | QUIET_BIT) : r;
}

CLONED static void tanh_loop(const float *in, float *out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) out[i] = tanh_element(in[i]);
}

/* ----------------------------------------------------------------------------------------------
   log, XLA's vector expansion: Eigen's plog_float (Cephes logf).  x = m * 2**e with m in
   [sqrt(1/2), sqrt(2)); log(m) = f - f^2/2 + f^3 * P(f), f = m - 1, P of degree 8 as three
   interleaved Horner chains; plus e*ln2 with ln2 split in two (Cody-Waite). */

static const float LOG_A0 = 0x1.204376p-4f;  /* 0x3D9021BB */
static const float LOG_A1 = -0x1.d7a37p-4f;  /* 0xBDEBD1B8 */
static const float LOG_A2 = 0x1.de4a34p-4f;  /* 0x3DEF251A */
static const float LOG_B0 = -0x1.fcba9ep-4f; /* 0xBDFE5D4F */
static const float LOG_B1 = 0x1.23d37ep-3f;  /* 0x3E11E9BF */
static const float LOG_B2 = -0x1.555ca0p-3f; /* 0xBE2AAE50 */
static const float LOG_C0 = 0x1.999d58p-3f;  /* 0x3E4CCEAC */
static const float LOG_C1 = -0x1.fffff8p-3f; /* 0xBE7FFFFC */
static const float LOG_C2 = 0x1.555554p-2f;  /* 0x3EAAAAAA */
static const float LN2_HI = 0x1.63p-1f;      /* 0x3F318000, 0.693359375 */
static const float LN2_LO = -0x1.bd0106p-13f; /* 0xB95E8083, -2.12194440e-4 */
static const float SQRT_HALF = 0x1.6a09e6p-1f; /* 0x3F3504F3 */

static inline ALWAYS_INLINE float log_vector_element(float x) {
    float u = daz(x);
    float m = u > FLT_MIN_NORMAL ? u : FLT_MIN_NORMAL; /* also replaces NaN */
    uint32_t mb = bits_of(m);
    float e = (float)((int32_t)(mb >> 23) - 127) + 1.0f;
    float mant = float_of((mb & 0x807FFFFFu) | 0x3F000000u); /* in [0.5, 1) */
    int below = mant < SQRT_HALF;
    float f = mant - 1.0f;
    f = f + (below ? mant : 0.0f);
    e = e - (below ? 1.0f : 0.0f);
    float f2 = f * f;
    float f3 = f2 * f;
    float a = fmaf(f, LOG_A0, LOG_A1);
    float b = fmaf(f, LOG_B0, LOG_B1);
    float c = fmaf(f, LOG_C0, LOG_C1);
    a = fmaf(f, a, LOG_A2);
    b = fmaf(f, b, LOG_B2);
    c = fmaf(f, c, LOG_C2);
    b = fmaf(a, f3, b);
    b = fmaf(f3, b, c);
    float t = e * LN2_LO;
    t = fmaf(b, f3, t);
    float s = fmaf(-0.5f, f2, f);
    s = s + t;
    uint32_t y = bits_of(fmaf(e, LN2_HI, s));
    y = u > 0.0f ? y : 0xFFFFFFFFu; /* x <= 0 or NaN: all-ones NaN */
    y = u == 0.0f ? 0xFF800000u : y;
    y = u == INFINITY ? 0x7F800000u : y;
    return float_of(y);
}

/* XLA leaves the odd-width tail of a small 1-D array to the C library's logf.  As in the
   emulation (_libm in _xla_f32.py), it is evaluated in double precision and rounded once: within
   an ulp of glibc's logf, and the same bits as the emulation's. */
static const float LOG_OF_POSITIVE_DENORMAL = -0x1.9fe368p+6f; /* 0xC2CFF1B4: float32(-150 * ln 2) */
static const double FTZ_LIMIT = 0x1.ffffffp-127;                /* 2**-126 - 2**-151 */

static float log_libm_element(float x) {
    if (x != x) return float_of(bits_of(x) | QUIET_BIT);
    if (x < 0.0f) return float_of(0xFFC00000u); /* x86's default NaN, as glibc's logf gives */
    /* Under DAZ the library reads a positive denormal as the exponent -150. */
    if (x > 0.0f && x < FLT_MIN_NORMAL) return LOG_OF_POSITIVE_DENORMAL;
    double y = log((double)daz(x));
    float r = (float)y;
    return fabs(y) < FTZ_LIMIT ? copysignf(0.0f, r) : r;
}

CLONED static void log_loop(const float *in, float *out, Py_ssize_t n, Py_ssize_t libm_from) {
    for (Py_ssize_t i = 0; i < libm_from; i++) out[i] = log_vector_element(in[i]);
    for (Py_ssize_t i = libm_from; i < n; i++) out[i] = log_libm_element(in[i]);
}

/* ----------------------------------------------------------------------------------------------
   Python interface */

/* Whether the buffer's items fill one block of memory exactly, in some order of the axes (as a
   fresh copy of any array does): then an elementwise function can run over it as a flat array. */
static int is_dense(const Py_buffer *view) {
    if (PyBuffer_IsContiguous(view, 'A')) return 1;
    Py_ssize_t order[64];
    int dims = 0;
    for (int d = 0; d < view->ndim; d++) {
        if (view->shape[d] == 0) return 1;
        if (view->shape[d] == 1) continue;
        if (view->strides[d] <= 0) return 0;
        int k = dims++;
        while (k > 0 && view->strides[order[k - 1]] > view->strides[d]) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = d;
    }
    Py_ssize_t expected = view->itemsize;
    for (int k = 0; k < dims; k++) {
        if (view->strides[order[k]] != expected) return 0;
        expected *= view->shape[order[k]];
    }
    return 1;
}

static int is_native_float32(const Py_buffer *view) {
    const char *format = view->format;
    if (format[0] == '@' || format[0] == '=') format++;
    return view->itemsize == 4 && strcmp(format, "f") == 0 && view->ndim <= 64;
}

/* The buffers of an elementwise call: dst is written, src is read (src may be dst: in place). */
typedef struct {
    Py_buffer src, dst;
    int separate; /* src holds a buffer of its own */
    const float *in;
    float *out;
    Py_ssize_t n;
} operands;

static void release_operands(operands *op) {
    if (op->separate) PyBuffer_Release(&op->src);
    PyBuffer_Release(&op->dst);
}

/* dst: a writable, dense, aligned, native float32 buffer; src: dst itself, or a native float32 buffer of the
   same shape and strides that does not overlap it.  0, or -1 with an exception set. */
static int get_operands(PyObject *src, PyObject *dst, operands *op) {
    op->separate = 0;
    if (PyObject_GetBuffer(dst, &op->dst, PyBUF_RECORDS) < 0) return -1;
    if (!is_native_float32(&op->dst) || !is_dense(&op->dst) || (uintptr_t)op->dst.buf % sizeof(float) != 0) {
        PyBuffer_Release(&op->dst);
        PyErr_SetString(PyExc_TypeError, "dst must be a writable, dense, aligned array of native float32");
        return -1;
    }
    op->out = (float *)op->dst.buf;
    op->in = op->out;
    op->n = op->dst.len / 4;
    if (src == dst) return 0;
    if (PyObject_GetBuffer(src, &op->src, PyBUF_RECORDS_RO) < 0) {
        PyBuffer_Release(&op->dst);
        return -1;
    }
    op->separate = 1;
    int same_layout = is_native_float32(&op->src) && op->src.ndim == op->dst.ndim && op->src.len == op->dst.len;
    for (int d = 0; same_layout && d < op->dst.ndim; d++)
        same_layout = op->src.shape[d] == op->dst.shape[d] && op->src.strides[d] == op->dst.strides[d];
    const char *in = op->src.buf, *out = op->dst.buf;
    if (!same_layout || (in != out && in < out + op->dst.len && out < in + op->dst.len)) {
        release_operands(op);
        PyErr_SetString(PyExc_TypeError, "src must be a native float32 array laid out as dst, apart from it");
        return -1;
    }
    op->in = (const float *)op->src.buf;
    if ((uintptr_t)op->in % sizeof(float) != 0) {
        /* The loops read whole floats: an unaligned source is copied into place first. */
        memcpy(op->out, op->in, (size_t)op->dst.len);
        op->in = op->out;
    }
    return 0;
}

static PyObject *py_tanh(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "tanh(src, dst) takes two arguments");
        return NULL;
    }
    operands op;
    if (get_operands(args[0], args[1], &op) < 0) return NULL;
    if (op.n >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        tanh_loop(op.in, op.out, op.n);
        Py_END_ALLOW_THREADS
    } else {
        tanh_loop(op.in, op.out, op.n);
    }
    release_operands(&op);
    Py_RETURN_NONE;
}

static PyObject *py_log(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "log(src, dst, libm_from) takes three arguments");
        return NULL;
    }
    Py_ssize_t libm_from = PY_SSIZE_T_MAX; /* None: no item goes to libm */
    if (args[2] != Py_None) {
        libm_from = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
        if (libm_from == -1 && PyErr_Occurred()) return NULL;
        if (libm_from < 0) {
            PyErr_SetString(PyExc_ValueError, "libm_from must be None or a position >= 0");
            return NULL;
        }
    }
    operands op;
    if (get_operands(args[0], args[1], &op) < 0) return NULL;
    if (libm_from > op.n) libm_from = op.n;
    if (op.n >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        log_loop(op.in, op.out, op.n, libm_from);
        Py_END_ALLOW_THREADS
    } else {
        log_loop(op.in, op.out, op.n, libm_from);
    }
    release_operands(&op);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"tanh", (PyCFunction)(void (*)(void))py_tanh, METH_FASTCALL,
     "tanh(src, dst) -> None\n\nXLA's float32 tanh of src written to dst (a writable dense float32 array; src "
     "is dst itself, or laid out like it)."},
    {"log", (PyCFunction)(void (*)(void))py_log, METH_FASTCALL,
     "log(src, dst, libm_from) -> None\n\nXLA's float32 log of src written to dst (as for tanh): its vector "
     "expansion for the items before flat position libm_from (None: all of them), the C library's path "
     "(double precision rounded once) from there on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_f32kernels",
    "XLA's float32 tanh and log on CPU, bit for bit, in C (see engine/_xla_f32.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__f32kernels(void) { return PyModule_Create(&module_def); }
