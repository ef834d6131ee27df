/* engine._fused: a chain of float64 elementwise operations run by NumPy's own ufunc loops, a chunk
   of elements at a time; a product summing over the rows of a block (A.T @ d for a vector d); the
   product of a block's rows with a vector (A @ w); and scalar programs, graphs of 0-d float64
   arithmetic run on a file of double registers (engine/scalar_program.py).

   Chains (engine/fused.py builds them).  A blocked plan (engine/blocked.py) computes a loss one block
   of ~1000 rows at a time; called one by one from Python, its twenty-odd elementwise operations
   cost more in per-call overhead and in writing whole intermediate arrays than in arithmetic.  A
   `Chain` runs the same operations, in the same order, on CHUNK elements at a time, the
   intermediates living in a few scratch buffers that stay in L1.  Every operation is NumPy's own
   strided loop for the ufunc's float64 signature, obtained through NumPy's documented
   `ufunc._resolve_dtypes_and_context` / `ufunc._get_strided_loop` (the "numpy_1.24_ufunc_call_info"
   capsule), the loop NumPy itself calls for contiguous float64 operands: every element gets the
   same function of the same operands, so the same bits.  A scalar operand is passed with stride 0,
   as NumPy passes a 0-d operand.  tests/test_fused.py compares every element against the ufunc
   called on the whole array.  A step's result may also be summed (a sum over rows, whose order is
   free): per chunk, four running sums of the elements i mod 4, then (s0 + s1) + (s2 + s3), the
   chunks' sums added in order.

   Contractions.  A sum over rows may be added up in any order (engine/blocked.py's bound 1).
   `contract_right(a, d)` (a: (K, n), the transpose of a row-major block) and `contract_left(d, a)`
   (a: (n, K)) compute the product with a vector d (one value per row) reading the rows once, in
   order: every feature's sum gets ((x0 d0 + x1 d1) + (x2 d2 + x3 d3)) for each group of four rows,
   then the remaining rows one by one, each product rounded (no fused multiply-add:
   -ffp-contract=off).  Over a block in L2 this is slightly faster than the BLAS's gemv and costs a
   third of np.matmul's call overhead.  Other layouts or dtypes go to np.matmul.

   Row products.  `row_product(a, w)` (a: (n, K), w: (K, 1) or (K,)) takes each row's dot product
   with w (the forward pass X @ w of a block, a row-wise product: engine/blocked.py's bound 2 lets
   it add the K products in any order).  The order is dot_rows's, below.  Streaming a block from
   memory, it runs at the memory's speed, where the BLAS's gemv ran at a third of it.

   NumPy's headers are not needed: the capsule's layout and the loop's signature are spelled out
   below (the signature is stable across NumPy releases; the capsule's name carries its version). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fenv.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Elements per chunk: 512 float64 (4 KiB) per scratch buffer, so a chain's live intermediates and
   the chunks of its operands stay in L1. */
#define CHUNK 512
/* Chains over at least this many elements run without the GIL. */
#define RELEASE_GIL_FROM 4096
#define MAX_OPERANDS 3 /* of one step: two inputs and the output */
#define MAX_OUTPUTS 8

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12
#define CLONED __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONED
#endif

typedef int strided_loop_fn(void *context, char *const *data, const Py_ssize_t *dimensions,
                            const Py_ssize_t *strides, void *auxdata);

/* NumPy's "numpy_1.24_ufunc_call_info" capsule (numpy.ufunc._get_strided_loop's documentation). */
typedef struct {
    strided_loop_fn *strided_loop;
    void *context;
    void *auxdata;
    unsigned char requires_pyapi;
    unsigned char no_floatingpoint_errors;
} ufunc_call_info;

static const char CALL_INFO_NAME[] = "numpy_1.24_ufunc_call_info";

/* Where a step's operand lives. */
enum { OPERAND = 0, SCRATCH = 1, OUTPUT = 2, CONSTANT = 3 };

typedef struct {
    strided_loop_fn *loop;
    void *context;
    void *auxdata;
    int sum; /* the sum this step's result is added into, or -1 */
    int nargs; /* inputs and the output */
    int kind[MAX_OPERANDS];
    int index[MAX_OPERANDS];
} step;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *capsules; /* a tuple keeping every step's loop alive */
    PyObject *shapes;   /* the outputs' shapes, a tuple of tuples */
    int n_operands, n_outputs, n_scratch, n_steps, n_constants, n_sums;
    Py_ssize_t size; /* elements of every array operand and output */
    int needs_gil;
    unsigned char *scalar; /* per operand: 1 when it is a single value (stride 0) */
    double *constants;
    step *steps;
} Chain;

static void chain_dealloc(Chain *self) {
    Py_XDECREF(self->capsules);
    Py_XDECREF(self->shapes);
    PyMem_Free(self->scalar);
    PyMem_Free(self->constants);
    PyMem_Free(self->steps);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int is_float64(const Py_buffer *view) {
    const char *format = view->format;
    if (format == NULL) return 0;
    if (format[0] == '@' || format[0] == '=' || format[0] == '<') format++;
    return view->itemsize == 8 && strcmp(format, "d") == 0;
}

/* numpy.empty, a dense aligned copy of an array, numpy.matmul and numpy.float64, set by configure(). */
static PyObject *np_empty, *np_dense, *np_matmul, *np_float64;

static PyObject *chain_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* Whether configure() has run (engine.fused calls it on import); raises RuntimeError if not. */
static int configured(void) {
    if (np_empty != NULL && np_float64 != NULL && np_matmul != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "engine._fused is not configured: import engine.fused first");
    return 0;
}

/* Chain(operand_is_scalar, constants, size, output_shapes, n_scratch, steps, n_sums)
   steps: tuples (capsule, sum, (kind, index), ...), the result's place last; sum: the index of the
   sum the result is added into, or -1. */
static PyObject *chain_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *scalars, *constants, *shapes, *steps;
    int n_scratch, n_sums;
    Py_ssize_t size;
    if (!configured()) return NULL;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Chain takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!nO!iO!i:Chain", &PyTuple_Type, &scalars, &PyTuple_Type, &constants, &size,
                          &PyTuple_Type, &shapes, &n_scratch, &PyTuple_Type, &steps, &n_sums))
        return NULL;
    int n_outputs = (int)PyTuple_GET_SIZE(shapes);
    Chain *self = (Chain *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->n_operands = (int)PyTuple_GET_SIZE(scalars);
    self->n_constants = (int)PyTuple_GET_SIZE(constants);
    self->n_steps = (int)PyTuple_GET_SIZE(steps);
    self->n_outputs = n_outputs;
    self->n_scratch = n_scratch;
    self->n_sums = n_sums;
    self->size = size;
    Py_INCREF(shapes);
    self->shapes = shapes;
    self->scalar = PyMem_Calloc((size_t)self->n_operands + 1, 1);
    self->constants = PyMem_Calloc((size_t)self->n_constants + 1, sizeof(double));
    self->steps = PyMem_Calloc((size_t)self->n_steps + 1, sizeof(step));
    self->capsules = PyTuple_New(self->n_steps);
    self->vectorcall = chain_vectorcall;
    if (!self->scalar || !self->constants || !self->steps || !self->capsules) goto fail;
    if (size < 1 || n_outputs + n_sums < 1 || n_outputs > MAX_OUTPUTS || n_sums < 0 || n_sums > MAX_OUTPUTS || n_scratch < 0) {
        PyErr_SetString(PyExc_ValueError, "a chain has 1 to 8 outputs, up to 8 sums and some scratch buffers");
        goto fail;
    }
    for (int j = 0; j < n_outputs; j++) {
        PyObject *shape = PyTuple_GET_ITEM(shapes, j);
        Py_ssize_t elements = 1;
        if (!PyTuple_Check(shape)) {
            PyErr_SetString(PyExc_TypeError, "an output's shape is a tuple");
            goto fail;
        }
        for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(shape); d++) {
            Py_ssize_t length = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, d));
            if (length < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a negative length");
                goto fail;
            }
            elements *= length;
        }
        if (elements != self->size) {
            PyErr_SetString(PyExc_ValueError, "a chain's outputs have its size");
            goto fail;
        }
    }
    for (int i = 0; i < self->n_operands; i++) self->scalar[i] = PyObject_IsTrue(PyTuple_GET_ITEM(scalars, i)) == 1;
    for (int i = 0; i < self->n_constants; i++) {
        self->constants[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(constants, i));
        if (self->constants[i] == -1.0 && PyErr_Occurred()) goto fail;
    }
    for (int s = 0; s < self->n_steps; s++) {
        PyObject *spec = PyTuple_GET_ITEM(steps, s);
        Py_ssize_t size = PyTuple_Check(spec) ? PyTuple_GET_SIZE(spec) : 0;
        if (size < 4 || size > MAX_OPERANDS + 2) {
            PyErr_SetString(PyExc_ValueError, "a step is (capsule, sum, place, ..., result's place)");
            goto fail;
        }
        PyObject *capsule = PyTuple_GET_ITEM(spec, 0);
        ufunc_call_info *info = PyCapsule_GetPointer(capsule, CALL_INFO_NAME);
        if (info == NULL) goto fail;
        if (info->strided_loop == NULL) {
            PyErr_SetString(PyExc_ValueError, "the capsule has no loop: call ufunc._get_strided_loop first");
            goto fail;
        }
        Py_INCREF(capsule);
        PyTuple_SET_ITEM(self->capsules, s, capsule);
        step *st = &self->steps[s];
        st->loop = info->strided_loop;
        st->context = info->context;
        st->auxdata = info->auxdata;
        st->nargs = (int)size - 2;
        self->needs_gil |= info->requires_pyapi;
        st->sum = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        if (st->sum < -1 || st->sum >= n_sums) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a step's sum is out of range");
            goto fail;
        }
        for (int k = 0; k < st->nargs; k++) {
            int kind, index;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(spec, k + 2), "ii", &kind, &index)) goto fail;
            int limit = kind == OPERAND ? self->n_operands : kind == SCRATCH ? n_scratch
                      : kind == OUTPUT ? n_outputs : kind == CONSTANT ? self->n_constants : 0;
            int writable = kind == SCRATCH || kind == OUTPUT;
            if (index < 0 || index >= limit || (k == st->nargs - 1 && !writable)) {
                PyErr_SetString(PyExc_ValueError, "a step's place is out of range or not writable");
                goto fail;
            }
            st->kind[k] = kind;
            st->index[k] = index;
        }
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* The sum of n values: four interleaved running sums (i mod 4), then (s0 + s1) + (s2 + s3). */
static double chunk_sum(const double *x, Py_ssize_t n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    if (i < n) s0 += x[i++];
    if (i < n) s1 += x[i++];
    if (i < n) s2 += x[i];
    return (s0 + s1) + (s2 + s3);
}

/* Runs the steps over n elements: operand[k] is array operand k's data, scalar_values[k] a
   scalar operand's value; a step's result that is summed is added, chunk by chunk, into sums. An
   operand whose data is not aligned for doubles (a view into a MessagePack body, say) has a
   staging slot (staged[k] >= 0): each chunk of it is copied into that slot of `staging` first,
   which the loops then read, so the copy stays in L1 rather than a copy of the whole array. */
static int run_steps(const Chain *self, char **operand, const int *staged, double *staging,
                     const double *scalar_values, char **output, double *scratch, double *sums, Py_ssize_t n) {
    static const Py_ssize_t dense = sizeof(double);
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        Py_ssize_t count = n - start < CHUNK ? n - start : CHUNK;
        for (int i = 0; i < self->n_operands; i++)
            if (staged[i] >= 0)
                memcpy(staging + (size_t)staged[i] * CHUNK, operand[i] + start * dense, (size_t)count * dense);
        for (int s = 0; s < self->n_steps; s++) {
            const step *st = &self->steps[s];
            char *data[MAX_OPERANDS];
            Py_ssize_t strides[MAX_OPERANDS];
            for (int k = 0; k < st->nargs; k++) {
                int i = st->index[k];
                switch (st->kind[k]) {
                case OPERAND:
                    if (self->scalar[i]) {
                        data[k] = (char *)&scalar_values[i];
                        strides[k] = 0;
                    } else {
                        data[k] = staged[i] >= 0 ? (char *)(staging + (size_t)staged[i] * CHUNK)
                                                 : operand[i] + start * dense;
                        strides[k] = dense;
                    }
                    break;
                case SCRATCH:
                    data[k] = (char *)(scratch + (size_t)i * CHUNK);
                    strides[k] = dense;
                    break;
                case OUTPUT:
                    data[k] = output[i] + start * dense;
                    strides[k] = dense;
                    break;
                default: /* CONSTANT */
                    data[k] = (char *)&self->constants[i];
                    strides[k] = 0;
                }
            }
            if (st->loop(st->context, data, &count, strides, st->auxdata) < 0) return -1;
            if (st->sum >= 0) sums[st->sum] += chunk_sum((const double *)data[st->nargs - 1], count);
        }
    }
    return 0;
}

static PyObject *chain_call(Chain *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs != self->n_operands) {
        PyErr_Format(PyExc_TypeError, "a chain takes %d positional operands", self->n_operands);
        return NULL;
    }
    enum { SMALL = 16 };
    Py_buffer small_views[SMALL];
    char *small_data[SMALL];
    double small_values[SMALL];
    PyObject *small_held[SMALL];
    int small_staged[SMALL];
    int many = self->n_operands > SMALL;
    Py_buffer *views = many ? PyMem_Calloc((size_t)self->n_operands, sizeof(Py_buffer)) : small_views;
    char **data = many ? PyMem_Calloc((size_t)self->n_operands, sizeof(char *)) : small_data;
    double *values = many ? PyMem_Calloc((size_t)self->n_operands, sizeof(double)) : small_values;
    PyObject **held = many ? PyMem_Calloc((size_t)self->n_operands, sizeof(PyObject *)) : small_held;
    int *staged = many ? PyMem_Calloc((size_t)self->n_operands, sizeof(int)) : small_staged;
    int n_staged = 0;
    double *staging = NULL;
    PyObject *result = NULL, *outputs[MAX_OUTPUTS] = {NULL};
    Py_buffer out_views[MAX_OUTPUTS];
    char *out_data[MAX_OUTPUTS];
    double sums[MAX_OUTPUTS] = {0.0};
    int n_views = 0, n_out_views = 0;
    double *scratch = NULL;
    Py_ssize_t n = -1;
    if (!views || !data || !values || !held || !staged) {
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < self->n_operands; i++) {
        held[i] = NULL;
        staged[i] = -1;
    }
    for (int i = 0; i < self->n_operands; i++) {
        PyObject *x = args[i];
        if (self->scalar[i] && PyFloat_Check(x)) { /* a Python float or np.float64 */
            values[i] = PyFloat_AS_DOUBLE(x);
            continue;
        }
        if (PyObject_GetBuffer(x, &views[n_views], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            /* A strided array: its elements, densely (a copy changes no value). */
            PyErr_Clear();
            held[i] = PyObject_CallOneArg(np_dense, x);
            if (held[i] == NULL || PyObject_GetBuffer(held[i], &views[n_views], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
                goto done;
        }
        Py_buffer *view = &views[n_views++];
        Py_ssize_t count = view->len / 8;
        if (!is_float64(view) || (self->scalar[i] && count != 1)) {
            PyErr_Format(PyExc_TypeError, "chain operand %d must be a float64 %s", i,
                         self->scalar[i] ? "scalar" : "array");
            goto done;
        }
        /* An unaligned array is read through a staging slot, a chunk at a time (run_steps). */
        if ((uintptr_t)view->buf % sizeof(double) != 0 && !self->scalar[i]) staged[i] = n_staged++;
        if (self->scalar[i]) {
            memcpy(&values[i], view->buf, sizeof(double));
            continue;
        }
        if (count != self->size) {
            PyErr_Format(PyExc_ValueError, "chain operand %d has %zd elements, not %zd", i, count, self->size);
            goto done;
        }
        n = count;
        data[i] = view->buf;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_TypeError, "a chain needs an array operand");
        goto done;
    }
    for (int j = 0; j < self->n_outputs; j++) {
        outputs[j] = PyObject_CallOneArg(np_empty, PyTuple_GET_ITEM(self->shapes, j));
        if (outputs[j] == NULL) goto done;
        if (PyObject_GetBuffer(outputs[j], &out_views[n_out_views], PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0)
            goto done;
        out_data[j] = out_views[n_out_views++].buf;
    }
    if (self->n_scratch) {
        scratch = PyMem_Malloc((size_t)self->n_scratch * CHUNK * sizeof(double));
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    if (n_staged) {
        staging = PyMem_Malloc((size_t)n_staged * CHUNK * sizeof(double));
        if (staging == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    int failed;
    if (n >= RELEASE_GIL_FROM && !self->needs_gil) {
        Py_BEGIN_ALLOW_THREADS
        failed = run_steps(self, data, staged, staging, values, out_data, scratch, sums, n);
        /* The loops may raise floating-point flags: a plan runs with errors ignored, and NumPy
           clears the flags before its next operation that checks them. */
        feclearexcept(FE_ALL_EXCEPT);
        Py_END_ALLOW_THREADS
    } else {
        failed = run_steps(self, data, staged, staging, values, out_data, scratch, sums, n);
        feclearexcept(FE_ALL_EXCEPT);
    }
    if (failed) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "a ufunc loop failed");
        goto done;
    }
    /* The arrays, then the sums (as numpy.float64, as NumPy's own sum returns); one result alone. */
    int n_results = self->n_outputs + self->n_sums;
    PyObject *items[2 * MAX_OUTPUTS];
    for (int j = 0; j < self->n_outputs; j++) {
        items[j] = outputs[j];
        outputs[j] = NULL;
    }
    int made = self->n_outputs;
    for (int j = 0; j < self->n_sums; j++, made++) {
        PyObject *value = PyFloat_FromDouble(sums[j]);
        items[made] = value == NULL ? NULL : PyObject_CallOneArg(np_float64, value);
        Py_XDECREF(value);
        if (items[made] == NULL) break;
    }
    if (made == n_results) {
        if (n_results == 1) {
            result = items[0];
        } else if ((result = PyTuple_New(n_results)) != NULL) {
            for (int j = 0; j < n_results; j++) PyTuple_SET_ITEM(result, j, items[j]);
        }
    }
    if (result == NULL)
        for (int j = 0; j < made; j++) Py_DECREF(items[j]);
done:
    for (int k = 0; k < n_views; k++) PyBuffer_Release(&views[k]);
    for (int k = 0; k < n_out_views; k++) PyBuffer_Release(&out_views[k]);
    for (int j = 0; j < MAX_OUTPUTS; j++) Py_XDECREF(outputs[j]);
    if (held)
        for (int i = 0; i < self->n_operands; i++) Py_XDECREF(held[i]);
    PyMem_Free(scratch);
    PyMem_Free(staging);
    if (many) {
        PyMem_Free(views);
        PyMem_Free(data);
        PyMem_Free(values);
        PyMem_Free(held);
        PyMem_Free(staged);
    }
    return result;
}

static PyObject *chain_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return chain_call((Chain *)self, args, nargsf, kwnames);
}

static PyObject *chain_steps(Chain *self, void *closure) {
    return PyLong_FromLong(self->n_steps);
}

static PyGetSetDef chain_getset[] = {
    {"steps", (getter)chain_steps, NULL, "the number of operations in the chain", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ChainType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._fused.Chain",
    .tp_basicsize = sizeof(Chain),
    .tp_dealloc = (destructor)chain_dealloc,
    .tp_vectorcall_offset = offsetof(Chain, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Chain(operand_is_scalar, constants, size, output_shapes, n_scratch, steps, n_sums): called with the "
              "operands, returns the output array (or a tuple of the arrays and then the sums) of a chain of "
              "float64 ufunc loops run a chunk at a time (see engine/fused.py).",
    .tp_getset = chain_getset,
    .tp_new = chain_new,
};

/* ----------------------------------------------------------------------------- scalar programs */

/* A graph made only of 0-d float64 arithmetic (a scalar recurrence and its gradient) as a program on
   a file of double registers (engine/scalar_program.py builds it).  + - * / and negation are the
   IEEE operations NumPy's scalars perform; sin, cos, sqrt and fabs are the C library's, which
   engine.plan._math_twin has checked return NumPy's bits in this process (CPython's math module
   calls the same functions).  A NaN in any output returns None: which of two NaNs comes out of an
   operation differs between implementations, so the caller then runs NumPy's plan. */

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_NEG, OP_SIN, OP_COS, OP_SQRT, OP_ABS, OP_COUNT };

typedef struct {
    int op, dst, a, b;
} scalar_op;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int n_inputs, n_constants, n_registers, n_ops, n_outputs;
    double *constants; /* registers n_inputs .. n_inputs + n_constants - 1 */
    scalar_op *ops;
    int *outputs;
} ScalarProgram;

static void program_dealloc(ScalarProgram *self) {
    PyMem_Free(self->constants);
    PyMem_Free(self->ops);
    PyMem_Free(self->outputs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *program_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* ScalarProgram(n_inputs, constants, n_registers, ops, outputs): registers 0 .. n_inputs - 1 hold
   the inputs, the next ones the constants; ops are (opcode, destination, a, b) with b ignored by
   unary operations; a destination is never an input's or a constant's register. */
static PyObject *program_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    int n_inputs, n_registers;
    PyObject *constants, *ops, *outputs;
    if (!configured()) return NULL;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "ScalarProgram takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iO!iO!O!:ScalarProgram", &n_inputs, &PyTuple_Type, &constants, &n_registers,
                          &PyTuple_Type, &ops, &PyTuple_Type, &outputs))
        return NULL;
    ScalarProgram *self = (ScalarProgram *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = program_vectorcall;
    self->n_inputs = n_inputs;
    self->n_constants = (int)PyTuple_GET_SIZE(constants);
    self->n_registers = n_registers;
    self->n_ops = (int)PyTuple_GET_SIZE(ops);
    self->n_outputs = (int)PyTuple_GET_SIZE(outputs);
    self->constants = PyMem_Calloc((size_t)self->n_constants + 1, sizeof(double));
    self->ops = PyMem_Calloc((size_t)self->n_ops + 1, sizeof(scalar_op));
    self->outputs = PyMem_Calloc((size_t)self->n_outputs + 1, sizeof(int));
    if (!self->constants || !self->ops || !self->outputs) {
        PyErr_NoMemory();
        goto fail;
    }
    int fixed = n_inputs + self->n_constants;
    if (n_inputs < 0 || n_registers < fixed || self->n_outputs < 1) {
        PyErr_SetString(PyExc_ValueError, "a program has registers for its inputs and constants, and outputs");
        goto fail;
    }
    for (int i = 0; i < self->n_constants; i++) {
        self->constants[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(constants, i));
        if (self->constants[i] == -1.0 && PyErr_Occurred()) goto fail;
    }
    /* Every register read (an operand, an output) holds an input, a constant or an earlier result. */
    unsigned char *written = PyMem_Calloc((size_t)n_registers + 1, 1);
    if (written == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    memset(written, 1, (size_t)fixed);
    for (int k = 0; k < self->n_ops; k++) {
        scalar_op *op = &self->ops[k];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(ops, k), "iiii", &op->op, &op->dst, &op->a, &op->b)) goto fail_written;
        int binary = op->op <= OP_DIV;
        if (op->op < 0 || op->op >= OP_COUNT || op->dst < fixed || op->dst >= n_registers || op->a < 0 ||
            op->a >= n_registers || !written[op->a] || op->b < 0 || op->b >= n_registers ||
            (binary && !written[op->b])) {
            PyErr_SetString(PyExc_ValueError, "an operation's code is unknown or its register out of range or unset");
            goto fail_written;
        }
        if (!binary) op->b = op->a; /* read, never used */
        written[op->dst] = 1;
    }
    for (int j = 0; j < self->n_outputs; j++) {
        long r = PyLong_AsLong(PyTuple_GET_ITEM(outputs, j));
        if (r < 0 || r >= n_registers || !written[r]) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "an output's register is out of range or unset");
            goto fail_written;
        }
        self->outputs[j] = (int)r;
    }
    PyMem_Free(written);
    return (PyObject *)self;
fail_written:
    PyMem_Free(written);
fail:
    Py_DECREF(self);
    return NULL;
}

static void run_program(const ScalarProgram *self, double *r) {
    const scalar_op *op = self->ops, *end = self->ops + self->n_ops;
    for (; op < end; op++) {
        double a = r[op->a], b = r[op->b];
        switch (op->op) {
        case OP_ADD: r[op->dst] = a + b; break;
        case OP_SUB: r[op->dst] = a - b; break;
        case OP_MUL: r[op->dst] = a * b; break;
        case OP_DIV: r[op->dst] = a / b; break;
        case OP_NEG: r[op->dst] = -a; break;
        case OP_SIN: r[op->dst] = sin(a); break;
        case OP_COS: r[op->dst] = cos(a); break;
        case OP_SQRT: r[op->dst] = sqrt(a); break;
        default: r[op->dst] = fabs(a); break; /* OP_ABS */
        }
    }
}

static PyObject *program_vectorcall(PyObject *obj, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    ScalarProgram *self = (ScalarProgram *)obj;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs != self->n_inputs) {
        PyErr_Format(PyExc_TypeError, "the program takes %d positional inputs", self->n_inputs);
        return NULL;
    }
    enum { SMALL = 512 };
    double small[SMALL];
    double *r = self->n_registers <= SMALL ? small : PyMem_Malloc((size_t)self->n_registers * sizeof(double));
    if (r == NULL) return PyErr_NoMemory();
    PyObject *result = NULL;
    for (int i = 0; i < self->n_inputs; i++) {
        r[i] = PyFloat_AsDouble(args[i]);
        if (r[i] == -1.0 && PyErr_Occurred()) goto done;
    }
    memcpy(r + self->n_inputs, self->constants, (size_t)self->n_constants * sizeof(double));
    run_program(self, r);
    for (int j = 0; j < self->n_outputs; j++) {
        double v = r[self->outputs[j]];
        if (v != v) { /* a NaN: NumPy's plan decides which one */
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    if ((result = PyList_New(self->n_outputs)) == NULL) goto done;
    for (int j = 0; j < self->n_outputs; j++) {
        PyObject *value = PyFloat_FromDouble(r[self->outputs[j]]);
        PyObject *scalar = value == NULL ? NULL : PyObject_CallOneArg(np_float64, value);
        Py_XDECREF(value);
        if (scalar == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, scalar);
    }
done:
    if (r != small) PyMem_Free(r);
    return result;
}

static PyObject *program_ops(ScalarProgram *self, void *closure) {
    return PyLong_FromLong(self->n_ops);
}

static PyGetSetDef program_getset[] = {
    {"operations", (getter)program_ops, NULL, "the number of operations in the program", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScalarProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engine._fused.ScalarProgram",
    .tp_basicsize = sizeof(ScalarProgram),
    .tp_dealloc = (destructor)program_dealloc,
    .tp_vectorcall_offset = offsetof(ScalarProgram, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "ScalarProgram(n_inputs, constants, n_registers, ops, outputs): called with the inputs (floats), "
              "returns a list of numpy.float64 outputs, or None when an output is NaN.",
    .tp_new = program_new,
    .tp_getset = program_getset,
};

/* ----------------------------------------------------------------------------- contractions */

#if defined(__GNUC__)
typedef double v4d __attribute__((vector_size(32)));

/* Macros rather than functions: a vector passed by value to a function changes the ABI between
   the clones. */
#define load4(p) __extension__({ v4d v_; memcpy(&v_, (p), sizeof v_); v_; })
#define store4(p, v) __extension__({ v4d w_ = (v); memcpy((p), &w_, sizeof w_); })
#endif

/* out[k] = sum over i < n of a[i, k] * d[i], for k < K: row i of a at a + i * row_stride (K dense
   float64), d[i] at d + i * d_stride.  Each out[k] is a sequential sum of rounded products, in the
   order of the rows.  The rows are read once, in order, four at a time (the partial sums are loaded
   and stored once per four rows; they stay in L1). */
CLONED static void contract_rows(const char *a, Py_ssize_t row_stride, Py_ssize_t n, Py_ssize_t K, const char *d,
                                 Py_ssize_t d_stride, double *out) {
    for (Py_ssize_t k = 0; k < K; k++) out[k] = 0.0;
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const char *r0 = a + i * row_stride, *r1 = r0 + row_stride, *r2 = r1 + row_stride, *r3 = r2 + row_stride;
        double d0, d1, d2, d3;
        memcpy(&d0, d + i * d_stride, sizeof d0);
        memcpy(&d1, d + (i + 1) * d_stride, sizeof d1);
        memcpy(&d2, d + (i + 2) * d_stride, sizeof d2);
        memcpy(&d3, d + (i + 3) * d_stride, sizeof d3);
        Py_ssize_t k = 0;
#if defined(__GNUC__)
        v4d e0 = {d0, d0, d0, d0}, e1 = {d1, d1, d1, d1}, e2 = {d2, d2, d2, d2}, e3 = {d3, d3, d3, d3};
        for (; k + 4 <= K; k += 4) {
            v4d t = (load4(r0 + k * 8) * e0 + load4(r1 + k * 8) * e1) + (load4(r2 + k * 8) * e2 + load4(r3 + k * 8) * e3);
            store4(out + k, load4(out + k) + t);
        }
#endif
        for (; k < K; k++) {
            double x0, x1, x2, x3;
            memcpy(&x0, r0 + k * 8, sizeof x0);
            memcpy(&x1, r1 + k * 8, sizeof x1);
            memcpy(&x2, r2 + k * 8, sizeof x2);
            memcpy(&x3, r3 + k * 8, sizeof x3);
            out[k] += (x0 * d0 + x1 * d1) + (x2 * d2 + x3 * d3);
        }
    }
    for (; i < n; i++) {
        const char *row = a + i * row_stride;
        double di;
        memcpy(&di, d + i * d_stride, sizeof di);
        for (Py_ssize_t k = 0; k < K; k++) {
            double x;
            memcpy(&x, row + k * 8, sizeof x);
            out[k] += x * di;
        }
    }
}

/* out[i * out_stride] = the dot product of row i of a (K dense float64 at a + i * row_stride) with
   w (K dense float64), for i < n.  Each row's terms x_k * w_k (rounded products) go into eight
   running sums, term k into sum k mod 8 in the order of k; the sums are then added as
   ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)).  One row at a time: reading several rows side by
   side (to share w's loads) ran at a third of the memory's speed on the development machine, its
   prefetchers losing track of the interleaved streams. */
CLONED static void dot_rows(const char *a, Py_ssize_t row_stride, Py_ssize_t n, Py_ssize_t K, const double *w,
                            char *out, Py_ssize_t out_stride) {
    Py_ssize_t K8 = K - K % 8;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *row = a + i * row_stride;
        double s[8] = {0};
        Py_ssize_t k = 0;
#if defined(__GNUC__)
        v4d lo = {0}, hi = {0};
        for (; k < K8; k += 8) {
            lo = lo + load4(row + k * 8) * load4(w + k);
            hi = hi + load4(row + (k + 4) * 8) * load4(w + k + 4);
        }
        store4(s, lo);
        store4(s + 4, hi);
#endif
        for (; k < K; k++) {
            double x;
            memcpy(&x, row + k * 8, sizeof x);
            s[k % 8] += x * w[k];
        }
        double total = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
        memcpy(out + i * out_stride, &total, sizeof total);
    }
}

/* The product of a (the rows' matrix) and d (a vector of one value per row), rows contracted:
   right (a: (K, n) @ d: (n, 1) -> (K, 1)) or left (d: (1, n) @ a: (n, K) -> (1, K)).  None when
   the operands are not laid out for contract_rows (np.matmul then computes it). */
static PyObject *contract(PyObject *a, PyObject *d, int right) {
    Py_buffer va, vd, vo;
    PyObject *out = NULL;
    if (!configured()) return NULL;
    if (PyObject_GetBuffer(a, &va, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(d, &vd, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyBuffer_Release(&va);
        Py_RETURN_NONE;
    }
    int ka = right ? 0 : 1, ia = 1 - ka; /* a's axes of the features and of the rows */
    int id = right ? 0 : 1;              /* d's axis of the rows */
    int usable = va.ndim == 2 && vd.ndim == 2 && is_float64(&va) && is_float64(&vd) &&
                 (va.strides[ka] == 8 || va.shape[ka] == 1) && va.shape[ia] == vd.shape[id] && vd.shape[1 - id] == 1 &&
                 (uintptr_t)va.buf % 8 == 0 && (uintptr_t)vd.buf % 8 == 0 && va.strides[ia] >= 0;
    if (!usable) {
        PyBuffer_Release(&va);
        PyBuffer_Release(&vd);
        Py_RETURN_NONE;
    }
    Py_ssize_t K = va.shape[ka], n = va.shape[ia];
    PyObject *shape = right ? Py_BuildValue("(nn)", K, (Py_ssize_t)1) : Py_BuildValue("(nn)", (Py_ssize_t)1, K);
    if (shape != NULL) out = PyObject_CallOneArg(np_empty, shape);
    Py_XDECREF(shape);
    if (out != NULL && PyObject_GetBuffer(out, &vo, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) == 0) {
        if (n * K >= RELEASE_GIL_FROM) {
            Py_BEGIN_ALLOW_THREADS
            contract_rows(va.buf, va.strides[ia], n, K, vd.buf, vd.strides[id], vo.buf);
            Py_END_ALLOW_THREADS
        } else {
            contract_rows(va.buf, va.strides[ia], n, K, vd.buf, vd.strides[id], vo.buf);
        }
        PyBuffer_Release(&vo);
    } else {
        Py_CLEAR(out);
    }
    PyBuffer_Release(&va);
    PyBuffer_Release(&vd);
    return out;
}

/* A kernel's result, or np.matmul(a, b) where the kernel returned None (operands it does not read). */
static PyObject *or_matmul(PyObject *result, PyObject *a, PyObject *b) {
    if (result == NULL || result != Py_None) return result;
    Py_DECREF(result);
    return PyObject_CallFunctionObjArgs(np_matmul, a, b, NULL);
}

static PyObject *contracted(PyObject *a, PyObject *b, int right) {
    return or_matmul(right ? contract(a, b, 1) : contract(b, a, 0), a, b);
}

static PyObject *py_contract_right(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "contract_right(a, d) takes two arguments");
        return NULL;
    }
    return contracted(args[0], args[1], 1);
}

static PyObject *py_contract_left(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "contract_left(d, a) takes two arguments");
        return NULL;
    }
    return contracted(args[0], args[1], 0);
}


/* a @ w for a: (n, K) with its last axis dense and w: (K, 1) or (K,), float64: each row's dot product
   in dot_rows's order.  None when the operands are laid out otherwise. */
static PyObject *row_product(PyObject *a, PyObject *w) {
    Py_buffer va, vw, vo;
    PyObject *out = NULL;
    if (!configured()) return NULL;
    if (PyObject_GetBuffer(a, &va, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(w, &vw, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyBuffer_Release(&va);
        Py_RETURN_NONE;
    }
    int column = vw.ndim == 2;
    int usable = va.ndim == 2 && (vw.ndim == 1 || (column && vw.shape[1] == 1)) && is_float64(&va) &&
                 is_float64(&vw) && (va.strides[1] == 8 || va.shape[1] == 1) && va.shape[1] == vw.shape[0] &&
                 (vw.strides[0] == 8 || vw.shape[0] == 1) && (uintptr_t)va.buf % 8 == 0 &&
                 (uintptr_t)vw.buf % 8 == 0 && va.strides[0] >= 0;
    if (!usable) {
        PyBuffer_Release(&va);
        PyBuffer_Release(&vw);
        Py_RETURN_NONE;
    }
    Py_ssize_t n = va.shape[0], K = va.shape[1];
    PyObject *shape = column ? Py_BuildValue("(nn)", n, (Py_ssize_t)1) : Py_BuildValue("(n)", n);
    if (shape != NULL) out = PyObject_CallOneArg(np_empty, shape);
    Py_XDECREF(shape);
    if (out != NULL && PyObject_GetBuffer(out, &vo, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) == 0) {
        if (n * K >= RELEASE_GIL_FROM) {
            Py_BEGIN_ALLOW_THREADS
            dot_rows(va.buf, va.strides[0], n, K, vw.buf, vo.buf, 8);
            Py_END_ALLOW_THREADS
        } else {
            dot_rows(va.buf, va.strides[0], n, K, vw.buf, vo.buf, 8);
        }
        PyBuffer_Release(&vo);
    } else {
        Py_CLEAR(out);
    }
    PyBuffer_Release(&va);
    PyBuffer_Release(&vw);
    return out;
}

static PyObject *py_row_product(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "row_product(a, w) takes two arguments");
        return NULL;
    }
    return or_matmul(row_product(args[0], args[1]), args[0], args[1]);
}

static PyObject *py_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "configure(empty, dense, matmul, float64) takes four arguments");
        return NULL;
    }
    for (int k = 0; k < 4; k++) Py_INCREF(args[k]);
    Py_XSETREF(np_empty, args[0]);
    Py_XSETREF(np_dense, args[1]);
    Py_XSETREF(np_matmul, args[2]);
    Py_XSETREF(np_float64, args[3]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))py_configure, METH_FASTCALL,
     "configure(empty, dense, matmul, float64) -> None\n\nThe functions the module allocates with (numpy.empty), "
     "copies a strided operand with (and, for the products, an unaligned one: a chain stages those a chunk at a "
     "time), falls back to for other layouts (numpy.matmul) and "
     "returns a sum as (numpy.float64)."},
    {"contract_right", (PyCFunction)(void (*)(void))py_contract_right, METH_FASTCALL,
     "contract_right(a, d) -> array\n\na @ d for a: (K, n) with its first axis dense and d: (n, 1), float64, "
     "each result a sequential sum over n; np.matmul(a, d) for other operands."},
    {"row_product", (PyCFunction)(void (*)(void))py_row_product, METH_FASTCALL,
     "row_product(a, w) -> array\n\na @ w for a: (n, K) with its last axis dense and w: (K, 1) or (K,), float64, "
     "each row's dot product in eight interleaved sums; np.matmul(a, w) for other operands."},
    {"contract_left", (PyCFunction)(void (*)(void))py_contract_left, METH_FASTCALL,
     "contract_left(d, a) -> array\n\nd @ a for d: (1, n) and a: (n, K) with its last axis dense, float64, "
     "each result a sequential sum over n; np.matmul(d, a) for other operands."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fused",
    "Chains of NumPy's float64 ufunc loops run chunk by chunk, products summing over rows and products of "
    "rows with a vector (see engine/fused.py); scalar programs (see engine/scalar_program.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__fused(void) {
    if (PyType_Ready(&ChainType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    Py_INCREF(&ChainType);
    if (PyModule_AddObject(module, "Chain", (PyObject *)&ChainType) < 0) {
        Py_DECREF(&ChainType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyType_Ready(&ScalarProgramType) < 0 || PyModule_AddObjectRef(module, "ScalarProgram",
                                                                      (PyObject *)&ScalarProgramType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "CHUNK", CHUNK) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

