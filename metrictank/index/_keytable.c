/* Batch probe of the index's key table (see keytable.py), the GIL released.
 *
 * Why in C: resolving a batch of (k0, k1, org) keys to rows is the largest per-point step of the ingest
 * loop. Done with numpy it costs a dozen array passes per round of probing (hash, gathers, compares,
 * masks); here it is one pass with one or two dependent cache misses per key. And it runs without the
 * GIL, so render threads get the interpreter while the loop resolves keys.
 *
 * The table and the key columns are those of one snapshot (`KeyTable._snap`): arrays only ever replaced,
 * never resized in place, so the buffers held here stay valid for the whole call even if the writer
 * publishes a new snapshot meanwhile. Slot writes are single int32 stores: a racing reader sees the old or
 * the new value of a slot, as with the numpy version.
 *
 * The hash must agree bit for bit with keys.hash_keys (the table was filled with it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define C1 0x9E3779B97F4A7C15ULL
#define C2 0xBF58476D1CE4E5B9ULL
#define C3 0x94D049BB133111EBULL
#define EMPTY (-1)

static inline uint64_t mix(uint64_t k0, uint64_t k1, uint32_t org) {
    uint64_t h = k0 * C1;
    h ^= k1 * C2;
    h ^= (uint64_t)org * C3;
    h ^= h >> 32;
    h *= C1;
    h ^= h >> 29;
    return h;
}

typedef struct {
    Py_buffer b;
    int open;
} Buf;

static void rel(Buf *bs, int n) {
    for (int i = 0; i < n; i++)
        if (bs[i].open) {
            PyBuffer_Release(&bs[i].b);
            bs[i].open = 0;
        }
}

/* A 1-D buffer of `itemsize`-byte items (strided allowed); its length and byte stride. */
static int get1d(PyObject *o, Buf *out, Py_ssize_t itemsize, int writable, const char *what, Py_ssize_t *n,
                 Py_ssize_t *stride) {
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, &out->b, flags) < 0)
        return -1;
    out->open = 1;
    if (out->b.ndim != 1 || out->b.itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: want a 1-D buffer of %zd-byte items", what, itemsize);
        return -1;
    }
    *n = out->b.shape[0];
    *stride = out->b.strides ? out->b.strides[0] : itemsize;
    return 0;
}

/* lookup(table int32, shift, K0 u64, K1 u64, KO u32, k0 u64, k1 u64, org u32, out int64) -> None */
static PyObject *py_lookup(PyObject *self, PyObject *args) {
    PyObject *o[9];
    int shift;
    if (!PyArg_ParseTuple(args, "OiOOOOOOO", &o[0], &shift, &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7]))
        return NULL;
    if (shift < 1 || shift > 63) {
        PyErr_SetString(PyExc_ValueError, "shift out of range");
        return NULL;
    }
    Buf bs[8] = {{{0}}};
    Py_ssize_t len[8], st[8];
    static const Py_ssize_t isz[8] = {4, 8, 8, 4, 8, 8, 4, 8};
    static const char *names[8] = {"table", "K0", "K1", "KO", "k0", "k1", "org", "out"};
    for (int i = 0; i < 8; i++)
        if (get1d(o[i], &bs[i], isz[i], i == 7, names[i], &len[i], &st[i]) < 0) {
            rel(bs, 8);
            return NULL;
        }
    Py_ssize_t cap = len[0], n = len[4];
    Py_ssize_t nk = len[1] < len[2] ? len[1] : len[2];
    nk = nk < len[3] ? nk : len[3];
    if (len[5] != n || len[6] != n || len[7] != n || cap == 0 || (cap & (cap - 1)) ||
        ((uint64_t)1 << (64 - shift)) != (uint64_t)cap || st[0] != 4 || st[1] != 8 || st[2] != 8 || st[3] != 4) {
        rel(bs, 8);
        PyErr_SetString(PyExc_ValueError, "lookup: inconsistent table, key columns or batch");
        return NULL;
    }
    const int32_t *table = bs[0].b.buf;
    const uint64_t *K0 = bs[1].b.buf, *K1 = bs[2].b.buf;
    const uint32_t *KO = bs[3].b.buf;
    const char *pk0 = bs[4].b.buf, *pk1 = bs[5].b.buf, *porg = bs[6].b.buf;
    char *pout = bs[7].b.buf;
    Py_ssize_t s4 = st[4], s5 = st[5], s6 = st[6], s7 = st[7];
    uint64_t mask = (uint64_t)cap - 1;
    Py_BEGIN_ALLOW_THREADS
    /* In blocks: the slots of a block are hashed and prefetched, then its rows' keys, then compared, so the
     * cache misses of a block (a table slot, then the key columns of its row) overlap instead of each key
     * waiting for its own. */
    enum { BLK = 32 };
    uint64_t ka[BLK], kb[BLK], sl[BLK];
    uint32_t kg[BLK];
    int32_t rr[BLK];
    for (Py_ssize_t i0 = 0; i0 < n; i0 += BLK) {
        int m = (int)(n - i0 < BLK ? n - i0 : BLK);
        for (int j = 0; j < m; j++) {
            Py_ssize_t i = i0 + j;
            ka[j] = *(const uint64_t *)(pk0 + i * s4);
            kb[j] = *(const uint64_t *)(pk1 + i * s5);
            kg[j] = *(const uint32_t *)(porg + i * s6);
            sl[j] = mix(ka[j], kb[j], kg[j]) >> shift;
            __builtin_prefetch(&table[sl[j]]);
        }
        for (int j = 0; j < m; j++) {
            int32_t r = table[sl[j]];
            rr[j] = r;
            if (r >= 0 && r < nk) {
                __builtin_prefetch(&K0[r]);
                __builtin_prefetch(&K1[r]);
                __builtin_prefetch(&KO[r]);
            }
        }
        for (int j = 0; j < m; j++) {
            uint64_t a = ka[j], b = kb[j], s = sl[j];
            uint32_t g = kg[j];
            int32_t r = rr[j];
            int64_t row = -1;
            for (Py_ssize_t probes = 0; probes < cap; probes++) {
                if (r == EMPTY)
                    break;
                if (r >= 0 && r < nk && K0[r] == a && K1[r] == b && KO[r] == g) {
                    row = r;
                    break;
                }
                s = (s + 1) & mask;
                r = table[s];
            }
            *(int64_t *)(pout + (i0 + j) * s7) = row;
        }
    }
    Py_END_ALLOW_THREADS
    rel(bs, 8);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"lookup", py_lookup, METH_VARARGS, "Rows of a batch of keys (-1: unknown) into `out`, the GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_keytable", "Key table probe (see _keytable.c).", -1,
                                 methods};

PyMODINIT_FUNC PyInit__keytable(void) { return PyModule_Create(&mod); }
