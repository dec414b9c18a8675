/*
 * metrictank.schema._mdata: the common MetricData message decoded in C.
 *
 * A backlog starts with one MetricData per series, so at a million series their decode is most of the main
 * loop's time (msgpack's generic unpacker builds a dict, Python then checks and copies its 9 fields: ~9 us per
 * message). Every Go producer writes the same shape: a fixmap of 9 entries, keys Id, OrgId, Name, Interval,
 * Value, Unit, Time, Mtype, Tags in that order as fixstr. This decoder reads exactly that shape, with the
 * type rules of `decode_metricdata`'s fast path, and builds the MetricData directly; anything else (another
 * key order or encoding, a type the fast path does not take, a truncated message) is reported as None, and
 * the caller decodes that message with the general Python path, which gives the exact verdict. So the
 * accepted language, the values and the errors are unchanged; only the common case is faster.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
} rd_t;

static int need(rd_t *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static uint64_t be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* The exact fixstr key: 0xa0|len then the bytes. */
static int key(rd_t *r, const char *k) {
    size_t n = strlen(k);
    if (!need(r, 1 + n) || r->p[0] != (0xa0 | n) || memcmp(r->p + 1, k, n) != 0) return 0;
    r->p += 1 + n;
    return 1;
}

/* A msgpack str (fixstr, str8/16/32) as a Python str; invalid UTF-8 kept as surrogate escapes, as
 * msgpack.unpackb(..., unicode_errors="surrogateescape") does. NULL without an exception: not a str. */
static PyObject *str(rd_t *r) {
    if (!need(r, 1)) return NULL;
    unsigned char t = r->p[0];
    size_t n, h;
    if ((t & 0xe0) == 0xa0) {
        n = t & 0x1f;
        h = 1;
    } else if (t == 0xd9 && need(r, 2)) {
        n = r->p[1];
        h = 2;
    } else if (t == 0xda && need(r, 3)) {
        n = (size_t)be(r->p + 1, 2);
        h = 3;
    } else if (t == 0xdb && need(r, 5)) {
        n = (size_t)be(r->p + 1, 4);
        h = 5;
    } else {
        return NULL;
    }
    if (!need(r, h + n)) return NULL;
    PyObject *s = PyUnicode_DecodeUTF8((const char *)r->p + h, (Py_ssize_t)n, "surrogateescape");
    if (s == NULL) {
        PyErr_Clear();
        return NULL;
    }
    r->p += h + n;
    return s;
}

/* A msgpack int within int64 (what the fast path takes); 0 when not an int or a uint64 above int64 max. */
static int i64(rd_t *r, long long *out) {
    if (!need(r, 1)) return 0;
    unsigned char t = r->p[0];
    if (t <= 0x7f) {
        *out = t;
        r->p += 1;
        return 1;
    }
    if (t >= 0xe0) {
        *out = (int8_t)t;
        r->p += 1;
        return 1;
    }
    int n;
    int sign;
    switch (t) {
        case 0xcc: n = 1; sign = 0; break;
        case 0xcd: n = 2; sign = 0; break;
        case 0xce: n = 4; sign = 0; break;
        case 0xcf: n = 8; sign = 0; break;
        case 0xd0: n = 1; sign = 1; break;
        case 0xd1: n = 2; sign = 1; break;
        case 0xd2: n = 4; sign = 1; break;
        case 0xd3: n = 8; sign = 1; break;
        default: return 0;
    }
    if (!need(r, 1 + (size_t)n)) return 0;
    uint64_t v = be(r->p + 1, n);
    if (sign) {
        if (n == 1) *out = (int8_t)v;
        else if (n == 2) *out = (int16_t)v;
        else if (n == 4) *out = (int32_t)v;
        else *out = (int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX) return 0;
        *out = (long long)v;
    }
    r->p += 1 + n;
    return 1;
}

/* float32 or float64, as msgpack returns both as a Python float. */
static int f64(rd_t *r, double *out) {
    if (!need(r, 1)) return 0;
    if (r->p[0] == 0xcb && need(r, 9)) {
        uint64_t v = be(r->p + 1, 8);
        memcpy(out, &v, 8);
        r->p += 9;
        return 1;
    }
    if (r->p[0] == 0xca && need(r, 5)) {
        uint32_t v = (uint32_t)be(r->p + 1, 4);
        float f;
        memcpy(&f, &v, 4);
        *out = f;
        r->p += 5;
        return 1;
    }
    return 0;
}

/* nil -> [], an array of str -> list; NULL without an exception otherwise. */
static PyObject *tags(rd_t *r) {
    if (!need(r, 1)) return NULL;
    unsigned char t = r->p[0];
    size_t n;
    if (t == 0xc0) {
        r->p += 1;
        return PyList_New(0);
    }
    if ((t & 0xf0) == 0x90) {
        n = t & 0x0f;
        r->p += 1;
    } else if (t == 0xdc && need(r, 3)) {
        n = (size_t)be(r->p + 1, 2);
        r->p += 3;
    } else if (t == 0xdd && need(r, 5)) {
        n = (size_t)be(r->p + 1, 4);
        r->p += 5;
    } else {
        return NULL;
    }
    if (n > (size_t)(r->end - r->p)) return NULL; /* every element takes at least one byte */
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (l == NULL) {
        PyErr_Clear();
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *s = str(r);
        if (s == NULL) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, s);
    }
    return l;
}

/* One message; a new MetricData, or NULL without an exception when it is not of the common shape. */
static PyObject *one(PyObject *md_type, const unsigned char *p, size_t len) {
    rd_t r = {p, p + len};
    PyObject *id = NULL, *name = NULL, *unit = NULL, *mtype = NULL, *tg = NULL, *out = NULL;
    long long org, interval, ts;
    double value;
    if (!need(&r, 1) || r.p[0] != 0x89) return NULL;
    r.p++;
    if (!key(&r, "Id") || (id = str(&r)) == NULL) goto done;
    if (!key(&r, "OrgId") || !i64(&r, &org)) goto done;
    if (!key(&r, "Name") || (name = str(&r)) == NULL) goto done;
    if (!key(&r, "Interval") || !i64(&r, &interval)) goto done;
    if (!key(&r, "Value") || !f64(&r, &value)) goto done;
    if (!key(&r, "Unit") || (unit = str(&r)) == NULL) goto done;
    if (!key(&r, "Time") || !i64(&r, &ts)) goto done;
    if (!key(&r, "Mtype") || (mtype = str(&r)) == NULL) goto done;
    if (!key(&r, "Tags") || (tg = tags(&r)) == NULL) goto done;
    /* trailing bytes are ignored, as Go's UnmarshalMsg (and unpack_one) do */
    out = PyObject_CallFunction(md_type, "OLOLdOLOO", id, org, name, interval, value, unit, ts, mtype, tg);
done:
    Py_XDECREF(id);
    Py_XDECREF(name);
    Py_XDECREF(unit);
    Py_XDECREF(mtype);
    Py_XDECREF(tg);
    return out;
}

/*
 * decode_many(md_type, payloads, starts, lengths) -> list
 * starts: int64 buffer, lengths: int32 buffer, one entry per message to decode in `payloads`; the result
 * holds a MetricData per message of the common shape and None for the others.
 */
static PyObject *decode_many(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *md_type;
    Py_buffer buf, st, ln;
    if (!PyArg_ParseTuple(args, "Oy*y*y*", &md_type, &buf, &st, &ln)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = st.len / (Py_ssize_t)sizeof(int64_t);
    if (ln.len / (Py_ssize_t)sizeof(int32_t) != n) {
        PyErr_SetString(PyExc_ValueError, "starts and lengths differ in length");
        goto done;
    }
    const int64_t *starts = st.buf;
    const int32_t *lens = ln.buf;
    out = PyList_New(n);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *md = NULL;
        if (starts[i] >= 0 && lens[i] >= 0 && starts[i] + lens[i] <= buf.len) {
            md = one(md_type, (const unsigned char *)buf.buf + starts[i], (size_t)lens[i]);
            if (md == NULL && PyErr_Occurred()) {
                Py_CLEAR(out);
                goto done;
            }
        }
        if (md == NULL) {
            Py_INCREF(Py_None);
            md = Py_None;
        }
        PyList_SET_ITEM(out, i, md);
    }
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&st);
    PyBuffer_Release(&ln);
    return out;
}

static PyMethodDef methods[] = {
    {"decode_many", decode_many, METH_VARARGS,
     "decode_many(md_type, payloads, starts, lengths) -> [MetricData or None]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "metrictank.schema._mdata", "MetricData of the common shape, decoded in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__mdata(void) { return PyModule_Create(&moddef); }
