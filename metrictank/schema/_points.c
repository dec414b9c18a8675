/* Wire points gathered into the decoder's point records in one pass, the GIL released.
 *
 * Why: a batch of MetricPointArray (0x05) messages used to be cut into one slice per message, joined, and then
 * copied again, body by body, into the 40-byte records (numpy's strided copy of a 32-byte row): three passes
 * over every point and one Python object per message. This writes each record once.
 *
 * Record (POINT_DTYPE in points.py, 40 bytes): the wire body as it is (k0 k1 value time org: 32 bytes; 28 for
 * points without org, whose org is then set to the given one), msg_index (int32), 4 zero bytes. The wire and
 * the record are little-endian; so is every host this builds for (x86-64, arm64).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define REC 40

/* One record: the body, org for 28-byte bodies, msg_index, zero padding. */
static inline void put_record(unsigned char *dst, const unsigned char *src, int size, uint32_t org, int32_t mi) {
    memcpy(dst, src, (size_t)size);
    if (size == 28) memcpy(dst + 28, &org, 4);
    memcpy(dst + 32, &mi, 4);
    memset(dst + 36, 0, 4);
}

static PyObject *gather(PyObject *mod, PyObject *args) {
    (void)mod;
    Py_buffer buf, st, cn, ix;
    int size;
    unsigned int org;
    if (!PyArg_ParseTuple(args, "y*y*y*y*iI", &buf, &st, &cn, &ix, &size, &org)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = st.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *starts = st.buf, *counts = cn.buf;
    const int32_t *idx = ix.buf;
    if (size != 32 && size != 28) {
        PyErr_SetString(PyExc_ValueError, "size must be 32 (with org) or 28 (without)");
        goto done;
    }
    if (cn.len / (Py_ssize_t)sizeof(int64_t) != n || ix.len / (Py_ssize_t)sizeof(int32_t) != n) {
        PyErr_SetString(PyExc_ValueError, "starts, counts and message indexes differ in length");
        goto done;
    }
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (starts[i] < 0 || counts[i] < 0 || counts[i] > (buf.len - starts[i]) / size) {
            PyErr_Format(PyExc_ValueError, "message %zd: %lld points at %lld run past the %zd-byte buffer", i,
                         (long long)counts[i], (long long)starts[i], buf.len);
            goto done;
        }
        total += counts[i];
    }
    if (!(out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(total * REC)))) goto done;
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out);
    const unsigned char *src0 = buf.buf;
    uint32_t org32 = (uint32_t)org;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *src = src0 + starts[i];
        int32_t mi = idx[i];
        for (int64_t j = 0; j < counts[i]; j++, src += size, dst += REC) put_record(dst, src, size, org32, mi);
    }
    Py_END_ALLOW_THREADS;
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&st);
    PyBuffer_Release(&cn);
    PyBuffer_Release(&ix);
    return out;
}

/* The common batch: n messages of one fixed length (`stride`), each one point of `size` bytes after a
 * `skip`-byte header; message i's point is record i. No offset arrays to build. */
static PyObject *gather_fixed(PyObject *mod, PyObject *args) {
    (void)mod;
    Py_buffer buf;
    Py_ssize_t n, stride, skip;
    int size;
    unsigned int org;
    if (!PyArg_ParseTuple(args, "y*nnniI", &buf, &n, &stride, &skip, &size, &org)) return NULL;
    PyObject *out = NULL;
    if (size != 32 && size != 28) {
        PyErr_SetString(PyExc_ValueError, "size must be 32 (with org) or 28 (without)");
        goto done;
    }
    if (n < 0 || skip < 0 || stride < skip + size || n > buf.len / stride) {
        PyErr_Format(PyExc_ValueError, "%zd messages of %zd bytes do not fit the %zd-byte buffer", n, stride,
                     buf.len);
        goto done;
    }
    if (!(out = PyByteArray_FromStringAndSize(NULL, n * REC))) goto done;
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out);
    const unsigned char *src = (const unsigned char *)buf.buf + skip;
    uint32_t org32 = (uint32_t)org;
    Py_BEGIN_ALLOW_THREADS;
    for (int32_t i = 0; i < (int32_t)n; i++, src += stride, dst += REC) put_record(dst, src, size, org32, i);
    Py_END_ALLOW_THREADS;
done:
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"gather_fixed", gather_fixed, METH_VARARGS,
     "gather_fixed(payloads, n, stride, skip, size, org) -> bytearray of n 40-byte point records, record i "
     "from payloads[i*stride+skip:], msg_index i."},
    {"gather", gather, METH_VARARGS,
     "gather(payloads, starts, counts, msg_indexes, size, org) -> bytearray of 40-byte point records: "
     "counts[i] points of `size` bytes (32, or 28 without org: org set to `org`) from payloads[starts[i]:], "
     "each stamped with msg_indexes[i]. starts/counts: int64 buffers, msg_indexes: int32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "metrictank.schema._points", "Wire points gathered into point records in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__points(void) { return PyModule_Create(&moddef); }
