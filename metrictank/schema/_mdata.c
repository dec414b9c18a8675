/*
 * metrictank.schema._mdata: the common MetricData message decoded in C.
 *
 * A backlog starts with one MetricData per series, so at a million series their decode is most of the main
 * loop's time (msgpack's generic unpacker builds a dict, Python then checks and copies its 9 fields: ~9 us per
 * message). Every Go producer writes the same shape: a fixmap of 9 entries, keys Id, OrgId, Name, Interval,
 * Value, Unit, Time, Mtype, Tags in that order as fixstr. This decoder reads exactly that shape, with the
 * type rules of `decode_metricdata`'s fast path, straight into columns (no MetricData object: validation, the
 * index and the tank take columns); anything else (another
 * key order or encoding, a type the fast path does not take, a truncated message) is reported as not ok, and
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

/* A str equal to the previous one of its column is that same object: units and mtypes repeat across a batch
 * (one or two distinct values), so the column holds a handful of strings, not one per message. */
typedef struct {
    const unsigned char *raw;
    size_t n;
    PyObject *obj; /* borrowed from the column list */
} last_t;

static PyObject *str_cached(rd_t *r, last_t *last) {
    if (!need(r, 1)) return NULL;
    unsigned char t = r->p[0];
    if ((t & 0xe0) == 0xa0) { /* fixstr: the only form worth caching (units and mtypes are short) */
        size_t n = t & 0x1f;
        if (!need(r, 1 + n)) return NULL;
        if (last->obj != NULL && last->n == n && memcmp(last->raw, r->p + 1, n) == 0) {
            r->p += 1 + n;
            Py_INCREF(last->obj);
            return last->obj;
        }
        const unsigned char *raw = r->p + 1;
        PyObject *o = str(r);
        if (o != NULL) {
            last->raw = raw;
            last->n = n;
            last->obj = o;
        }
        return o;
    }
    return str(r);
}

typedef struct {
    PyObject *ids, *names, *units, *mtypes, *tags;
    int64_t *orgs, *intervals, *times;
    double *values;
    uint8_t *ok;
    last_t last_unit, last_mtype;
} cols_t;

/* One message into row i of the columns; 0 (columns left at None/0) when it is not of the common shape. */
static int one_col(cols_t *c, Py_ssize_t i, const unsigned char *p, size_t len) {
    rd_t r = {p, p + len};
    PyObject *id = NULL, *name = NULL, *unit = NULL, *mtype = NULL, *tg = NULL;
    long long org, interval, ts;
    double value;
    if (!need(&r, 1) || r.p[0] != 0x89) return 0;
    r.p++;
    if (!key(&r, "Id") || (id = str(&r)) == NULL) goto bad;
    if (!key(&r, "OrgId") || !i64(&r, &org)) goto bad;
    if (!key(&r, "Name") || (name = str(&r)) == NULL) goto bad;
    if (!key(&r, "Interval") || !i64(&r, &interval)) goto bad;
    if (!key(&r, "Value") || !f64(&r, &value)) goto bad;
    if (!key(&r, "Unit") || (unit = str_cached(&r, &c->last_unit)) == NULL) goto bad;
    if (!key(&r, "Time") || !i64(&r, &ts)) goto bad;
    if (!key(&r, "Mtype") || (mtype = str_cached(&r, &c->last_mtype)) == NULL) goto bad;
    if (!key(&r, "Tags") || (tg = tags(&r)) == NULL) goto bad;
    /* the lists hold None at i: replace (SET_ITEM does not release the old item) */
    Py_DECREF(Py_None);
    PyList_SET_ITEM(c->ids, i, id);
    Py_DECREF(Py_None);
    PyList_SET_ITEM(c->names, i, name);
    Py_DECREF(Py_None);
    PyList_SET_ITEM(c->units, i, unit);
    Py_DECREF(Py_None);
    PyList_SET_ITEM(c->mtypes, i, mtype);
    Py_DECREF(Py_None);
    PyList_SET_ITEM(c->tags, i, tg);
    c->orgs[i] = org;
    c->intervals[i] = interval;
    c->times[i] = ts;
    c->values[i] = value;
    c->ok[i] = 1;
    return 1;
bad:
    /* a cached unit/mtype may be the one just parsed: forget the cache before releasing it */
    if (unit != NULL && unit == c->last_unit.obj && Py_REFCNT(unit) == 1) c->last_unit.obj = NULL;
    if (mtype != NULL && mtype == c->last_mtype.obj && Py_REFCNT(mtype) == 1) c->last_mtype.obj = NULL;
    Py_XDECREF(id);
    Py_XDECREF(name);
    Py_XDECREF(unit);
    Py_XDECREF(mtype);
    Py_XDECREF(tg);
    return 0;
}

static PyObject *none_list(Py_ssize_t n) {
    PyObject *l = PyList_New(n);
    if (l == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(Py_None);
        PyList_SET_ITEM(l, i, Py_None);
    }
    return l;
}

/*
 * decode_columns(payloads, starts, lengths) ->
 *     (ok, ids, orgs, names, intervals, values, units, times, mtypes, tags)
 * The messages at `starts`/`lengths` (int64/int32 buffers) as columns: ok (bytes, 1 per message of the common
 * shape), five lists (None where not ok) and four bytes buffers (int64 orgs, intervals, times; float64 values;
 * 0 where not ok).
 */
static PyObject *decode_columns(PyObject *mod, PyObject *args) {
    (void)mod;
    Py_buffer buf, st, ln;
    if (!PyArg_ParseTuple(args, "y*y*y*", &buf, &st, &ln)) return NULL;
    PyObject *out = NULL, *ok = NULL, *orgs = NULL, *ivs = NULL, *times = NULL, *vals = NULL;
    cols_t c;
    memset(&c, 0, sizeof(c));
    Py_ssize_t n = st.len / (Py_ssize_t)sizeof(int64_t);
    if (ln.len / (Py_ssize_t)sizeof(int32_t) != n) {
        PyErr_SetString(PyExc_ValueError, "starts and lengths differ in length");
        goto done;
    }
    if (!(c.ids = none_list(n)) || !(c.names = none_list(n)) || !(c.units = none_list(n)) ||
        !(c.mtypes = none_list(n)) || !(c.tags = none_list(n)))
        goto done;
    if (!(ok = PyBytes_FromStringAndSize(NULL, n)) || !(orgs = PyBytes_FromStringAndSize(NULL, n * 8)) ||
        !(ivs = PyBytes_FromStringAndSize(NULL, n * 8)) || !(times = PyBytes_FromStringAndSize(NULL, n * 8)) ||
        !(vals = PyBytes_FromStringAndSize(NULL, n * 8)))
        goto done;
    c.ok = (uint8_t *)PyBytes_AS_STRING(ok);
    c.orgs = (int64_t *)PyBytes_AS_STRING(orgs);
    c.intervals = (int64_t *)PyBytes_AS_STRING(ivs);
    c.times = (int64_t *)PyBytes_AS_STRING(times);
    c.values = (double *)PyBytes_AS_STRING(vals);
    memset(c.ok, 0, (size_t)n);
    memset(c.orgs, 0, (size_t)n * 8);
    memset(c.intervals, 0, (size_t)n * 8);
    memset(c.times, 0, (size_t)n * 8);
    memset(c.values, 0, (size_t)n * 8);
    const int64_t *starts = st.buf;
    const int32_t *lens = ln.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (starts[i] >= 0 && lens[i] >= 0 && starts[i] + lens[i] <= buf.len) {
            one_col(&c, i, (const unsigned char *)buf.buf + starts[i], (size_t)lens[i]);
            if (PyErr_Occurred()) goto done;
        }
    }
    out = PyTuple_Pack(10, ok, c.ids, orgs, c.names, ivs, vals, c.units, times, c.mtypes, c.tags);
done:
    Py_XDECREF(ok);
    Py_XDECREF(orgs);
    Py_XDECREF(ivs);
    Py_XDECREF(times);
    Py_XDECREF(vals);
    Py_XDECREF(c.ids);
    Py_XDECREF(c.names);
    Py_XDECREF(c.units);
    Py_XDECREF(c.mtypes);
    Py_XDECREF(c.tags);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&st);
    PyBuffer_Release(&ln);
    return out;
}

static PyMethodDef methods[] = {
    {"decode_columns", decode_columns, METH_VARARGS,
     "decode_columns(payloads, starts, lengths) -> (ok, ids, orgs, names, intervals, values, units, times, "
     "mtypes, tags)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "metrictank.schema._mdata", "MetricData of the common shape, decoded in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__mdata(void) { return PyModule_Create(&moddef); }
