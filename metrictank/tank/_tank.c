/*
 * The tank's per-point kernel: Metrictank's AggMetric/Aggregator/ReorderBuffer logic over columnar state.
 *
 * Why C: every point needs a chunk check, a SeriesLong append (a few dozen bit operations) and possibly
 * rollup updates; at millions of points per second only a compiled loop keeps that under ~100 ns a point.
 * Python owns all state (numpy record arrays, a bytearray arena, lists of chunk blobs) and hands it over as
 * one tuple per call; this module keeps nothing between calls.
 *
 * State tuple (order fixed, see tank.py `_state`):
 *   0 slots      Slot[]      one per (series, archive, method): open chunk encoder state and ring position
 *   1 rows       Row[]       one per index row: slot range, aggregator/ROB offsets, last write, partition
 *   2 aggs       Agg[]       rollup bucket state, one per (row, rollup archive)
 *   3 layouts    Layout[]    one per (schema, aggregation) pair in use
 *   4 aggdesc    AggDesc[]   per layout rollup archive: span and slot offsets of sum/cnt/min/max/lst
 *   5 ring_t0    uint32[]    closed chunks: t0
 *   6 ring_meta  uint32[]    closed chunks: bit0 complete, bit1 first chunk of the series, bits 8.. points
 *                            (numchunks entries per slot, see ring_push)
 *   7 ring_blobs list        closed chunks: the finished blobs (bytes) or None
 *   8 arena      bytearray   open chunks' SeriesLong streams; resized here when full
 *   9 meta       int64[]     counters (M_* below)
 *  10 pstart     uint32[]    per partition: timestamp of the first consumed message (0: from log start)
 *  11 rob_ts     uint32[]    reorder buffer entries (0 = empty)
 *  12 rob_val    float64[]
 *  13 events     bytearray   completed-chunk records (Event), appended here
 *  14 ev_blobs   list        the completed chunks' blobs, parallel to events
 *
 * A slot's open chunk lives in arena[off8*8 : off8*8+cap]; appends write 16 bytes at a time, so the region
 * always keeps 16 bytes of headroom past the current bit position. Regions that move or are released count as
 * waste until Python calls compact().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the tank kernel assumes a little-endian machine"
#endif

typedef struct {
    uint32_t t0, last_ts, prev_delta, npoints;
    uint64_t prev_bits;
    uint32_t off8, cap, bitpos, lss, lsf, first_ts, ring_base, row;
    uint8_t leading, trailing, flags, span_code, ring_cap, ring_head, ring_count, pad;
} Slot;

typedef struct {
    uint32_t slot_start, agg_base, rob_base, rob_newest, last_write, partition, interval;
    uint16_t layout, flags;
} Row;

typedef struct {
    uint32_t boundary, cnt;
    double sum, min, max, lst;
} Agg;

typedef struct {
    uint32_t aggdesc_start, n_aggs, fut_tol, rob_window, rob_allow_update, nslots;
} Layout;

typedef struct {
    uint32_t span;
    uint8_t off[5];
    uint8_t pad[3];
} AggDesc;

typedef struct {
    uint32_t slot, t0, flags, npoints;
} Event;

_Static_assert(sizeof(Slot) == 64, "Slot layout");
_Static_assert(sizeof(Row) == 32, "Row layout");
_Static_assert(sizeof(Agg) == 40, "Agg layout");
_Static_assert(sizeof(Layout) == 24, "Layout layout");
_Static_assert(sizeof(AggDesc) == 12, "AggDesc layout");
_Static_assert(sizeof(Event) == 16, "Event layout");

/* slot flags */
#define F_LIVE 1     /* has had a chunk: t0/last_ts/encoder state are meaningful */
#define F_FINISHED 2 /* current chunk got its end marker (GC) and already sits in the ring */
#define F_COMPLETE 4 /* current chunk began after consumption of its partition began */
#define F_FIRST 8    /* current chunk is the first this series had in memory */
#define F_ALLOC 16   /* off8/cap describe an arena region (else cap is the size to allocate) */

/* row flags */
#define R_PRESENT 1

/* ring_meta bits */
#define RM_COMPLETE 1
#define RM_FIRST 2

/* meta counters */
enum {
    M_ADDED,
    M_INVALID,
    M_FUTURE,
    M_OOO,
    M_DUP,
    M_OLD,
    M_LATE,
    M_ARENA_USED,
    M_ARENA_WASTE,
    M_COMPLETED,
    M_POINTS_MEM,
    M_RING_CHUNKS,
    M_ROLLUP_DISCARD,
    M_REORDERED,
    M_RING_BYTES,
    M_EVICT_UNSAVED,
    M_COUNT
};

/* push results */
enum { P_OK = 0, P_DUP, P_OOO, P_OLD, P_LATE, P_ERR = -1 };

static const uint32_t SPANS[32] = {1,     5,     10,    15,    20,    30,    60,    90,    120,   180,   300,
                                   600,   900,   1200,  1800,  2700,  3600,  5400,  7200,  9000,  10800, 14400,
                                   18000, 21600, 25200, 28800, 32400, 36000, 43200, 54000, 64800, 86400};

#define NBUF 11

typedef struct {
    Py_buffer bufs[NBUF];
    int nbufs;
    Slot *slots;
    Py_ssize_t nslots;
    Row *rows;
    Py_ssize_t nrows;
    Agg *aggs;
    Layout *lay;
    Py_ssize_t nlay;
    AggDesc *desc;
    uint32_t *ring_t0;
    uint32_t *ring_meta;
    PyObject *ring_blobs;
    PyObject *arena;
    uint8_t *ab;
    int64_t *meta;
    uint32_t *pstart;
    Py_ssize_t npstart;
    uint32_t *rob_ts;
    double *rob_val;
    PyObject *events;
    PyObject *ev_blobs;
} Ctx;

static void ctx_release(Ctx *c) {
    for (int i = 0; i < c->nbufs; i++) PyBuffer_Release(&c->bufs[i]);
    c->nbufs = 0;
}

static void *ctx_buf(Ctx *c, PyObject *o, Py_ssize_t itemsize, Py_ssize_t *n, const char *what) {
    Py_buffer *b = &c->bufs[c->nbufs];
    if (PyObject_GetBuffer(o, b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    c->nbufs++;
    if (b->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "tank state %s: %zd bytes is not a multiple of %zd", what, b->len, itemsize);
        return NULL;
    }
    if (n) *n = b->len / itemsize;
    return b->buf;
}

static int ctx_open(Ctx *c, PyObject *st) {
    memset(c, 0, sizeof(*c));
    if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) != 15) {
        PyErr_SetString(PyExc_TypeError, "tank state must be a 15-tuple");
        return -1;
    }
    Py_ssize_t n;
#define GET(field, idx, type, cnt, what)                                                        \
    if (!(c->field = (type *)ctx_buf(c, PyTuple_GET_ITEM(st, idx), sizeof(type), cnt, what))) { \
        ctx_release(c);                                                                         \
        return -1;                                                                              \
    }
    GET(slots, 0, Slot, &c->nslots, "slots");
    GET(rows, 1, Row, &c->nrows, "rows");
    GET(aggs, 2, Agg, &n, "aggs");
    GET(lay, 3, Layout, &c->nlay, "layouts");
    GET(desc, 4, AggDesc, &n, "aggdesc");
    GET(ring_t0, 5, uint32_t, &n, "ring_t0");
    GET(ring_meta, 6, uint32_t, &n, "ring_meta");
    GET(meta, 9, int64_t, &n, "meta");
    if (n < M_COUNT) {
        PyErr_SetString(PyExc_ValueError, "tank state meta too short");
        ctx_release(c);
        return -1;
    }
    GET(pstart, 10, uint32_t, &c->npstart, "pstart");
    GET(rob_ts, 11, uint32_t, &n, "rob_ts");
    GET(rob_val, 12, double, &n, "rob_val");
#undef GET
    c->ring_blobs = PyTuple_GET_ITEM(st, 7);
    c->arena = PyTuple_GET_ITEM(st, 8);
    c->events = PyTuple_GET_ITEM(st, 13);
    c->ev_blobs = PyTuple_GET_ITEM(st, 14);
    if (!PyList_Check(c->ring_blobs) || !PyByteArray_Check(c->arena) || !PyByteArray_Check(c->events) ||
        !PyList_Check(c->ev_blobs)) {
        PyErr_SetString(PyExc_TypeError, "tank state: ring_blobs/ev_blobs must be lists, arena/events bytearrays");
        ctx_release(c);
        return -1;
    }
    c->ab = (uint8_t *)PyByteArray_AS_STRING(c->arena);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * arena
 */

static int arena_alloc(Ctx *c, uint32_t cap, uint32_t *off8) {
    uint64_t used = (uint64_t)c->meta[M_ARENA_USED];
    uint64_t need = used + cap;
    if (need / 8 > UINT32_MAX) {
        PyErr_SetString(PyExc_MemoryError, "tank arena above 32 GiB");
        return -1;
    }
    Py_ssize_t size = PyByteArray_GET_SIZE(c->arena);
    if ((uint64_t)size < need) {
        uint64_t nsize = (uint64_t)size + (uint64_t)size / 2;
        if (nsize < need) nsize = need;
        if (nsize < 65536) nsize = 65536;
        if (PyByteArray_Resize(c->arena, (Py_ssize_t)nsize) < 0) return -1;
        c->ab = (uint8_t *)PyByteArray_AS_STRING(c->arena);
    }
    *off8 = (uint32_t)(used / 8);
    c->meta[M_ARENA_USED] = (int64_t)need;
    return 0;
}

/* make room for one more point (at most 114 bits, written as 16 bytes) in the slot's region */
static int ensure_room(Ctx *c, Slot *s) {
    uint32_t need = (s->bitpos >> 3) + 16;
    if (s->flags & F_ALLOC) {
        if (need <= s->cap) return 0;
        uint32_t ncap = s->cap + s->cap / 2;
        if (ncap < need + 8) ncap = need + 8;
        ncap = (ncap + 7) & ~7u;
        uint32_t noff;
        if (arena_alloc(c, ncap, &noff) < 0) return -1;
        memcpy(c->ab + (size_t)noff * 8, c->ab + (size_t)s->off8 * 8, (s->bitpos + 7) >> 3);
        c->meta[M_ARENA_WASTE] += s->cap;
        s->off8 = noff;
        s->cap = ncap;
        return 0;
    }
    uint32_t cap = s->cap;
    if (cap < need + 8) cap = need + 8;
    cap = (cap + 7) & ~7u;
    if (arena_alloc(c, cap, &s->off8) < 0) return -1;
    s->cap = cap;
    s->flags |= F_ALLOC;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * SeriesLong encoding (Metrictank tsz.SeriesLong.Push), one point at a time
 */

typedef struct {
    unsigned __int128 acc;
    int n;
} Bits;

static inline void put(Bits *b, uint64_t v, int n) {
    if (n < 64) v &= (((uint64_t)1) << n) - 1;
    b->acc = (b->acc << n) | v;
    b->n += n;
}

/* write the accumulated bits (<= 121 after alignment) at *bitpos; clobbers the 16 bytes from its byte on */
static inline void flush_bits(uint8_t *region, uint32_t *bitpos, const Bits *b) {
    uint32_t pos = *bitpos;
    uint32_t byte = pos >> 3;
    int off = pos & 7;
    unsigned __int128 x = b->acc << (128 - b->n);
    x >>= off;
    uint64_t hi = __builtin_bswap64((uint64_t)(x >> 64)), lo = __builtin_bswap64((uint64_t)x);
    uint8_t keep = off ? (uint8_t)(region[byte] & (uint8_t)(0xFF << (8 - off))) : 0;
    memcpy(region + byte, &hi, 8);
    memcpy(region + byte + 8, &lo, 8);
    region[byte] |= keep;
    *bitpos = pos + (uint32_t)b->n;
}

static inline void enc_point(uint8_t *region, Slot *s, uint32_t t, double v) {
    Bits b = {0, 0};
    uint32_t delta = s->npoints ? t - s->last_ts : t - s->t0;
    int32_t dod = (int32_t)(delta - s->prev_delta);
    if (dod == 0) {
        put(&b, 0, 1);
    } else if (dod >= -63 && dod <= 64) {
        put(&b, 2, 2);
        put(&b, (uint32_t)dod, 7);
    } else if (dod >= -255 && dod <= 256) {
        put(&b, 6, 3);
        put(&b, (uint32_t)dod, 9);
    } else if (dod >= -2047 && dod <= 2048) {
        put(&b, 14, 4);
        put(&b, (uint32_t)dod, 12);
    } else {
        put(&b, 30, 5);
        put(&b, (uint32_t)dod, 32);
    }
    s->prev_delta = delta;
    s->last_ts = t;
    uint64_t bits;
    memcpy(&bits, &v, 8);
    if (s->npoints == 0) {
        put(&b, bits, 64);
    } else {
        uint64_t x = bits ^ s->prev_bits;
        if (x == 0) {
            put(&b, 0, 1);
        } else {
            int lead = __builtin_clzll(x), trail = __builtin_ctzll(x);
            if (lead >= 32) lead = 31;
            int sig = 64 - lead - trail;
            int cur = 64 - (int)s->leading - (int)s->trailing;
            if (s->leading != 0xFF && lead >= s->leading && trail >= s->trailing && cur - sig < 22) {
                put(&b, 2, 2); /* '1' then '0' */
                put(&b, x >> s->trailing, cur);
            } else {
                s->leading = (uint8_t)lead;
                s->trailing = (uint8_t)trail;
                put(&b, 3, 2); /* '1' then '1' */
                put(&b, (uint64_t)lead, 5);
                put(&b, (uint64_t)(sig & 63), 6);
                /* sig may be 64: put() in two steps so the accumulator shift stays below 128 bits */
                if (sig > 32) {
                    uint64_t y = x >> trail;
                    put(&b, y >> 32, sig - 32);
                    put(&b, y & 0xFFFFFFFFu, 32);
                } else {
                    put(&b, x >> trail, sig);
                }
            }
        }
    }
    s->prev_bits = bits;
    s->npoints++;
    flush_bits(region, &s->bitpos, &b);
}

/* bit writer for small fields into a zeroed tail (end marker of finished copies) */
static void write_bits_slow(uint8_t *p, uint32_t pos, uint32_t v, int n) {
    for (int i = n - 1; i >= 0; i--, pos++) {
        if ((v >> i) & 1) p[pos >> 3] |= (uint8_t)(0x80 >> (pos & 7));
    }
}

/* header + stream + end marker: the chunk as Metrictank stores it (format 0x02) */
static PyObject *finished_blob(Ctx *c, const Slot *s) {
    uint32_t sb = (s->bitpos + 7) >> 3;
    uint32_t total = (s->bitpos + 5 + 7) >> 3;
    PyObject *o = PyBytes_FromStringAndSize(NULL, 2 + (Py_ssize_t)total);
    if (!o) return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(o);
    p[0] = 0x02;
    p[1] = s->span_code;
    if (sb) memcpy(p + 2, c->ab + (size_t)s->off8 * 8, sb);
    if (total > sb) memset(p + 2 + sb, 0, total - sb);
    if (s->bitpos & 7) p[2 + sb - 1] &= (uint8_t)(0xFF << (8 - (s->bitpos & 7)));
    write_bits_slow(p + 2, s->bitpos, 0x1F, 5);
    return o;
}

/* ---------------------------------------------------------------------------------------------------------
 * chunk lifecycle
 */

static int emit_event(Ctx *c, uint32_t si, const Slot *s, PyObject *blob) {
    Py_ssize_t n = PyByteArray_GET_SIZE(c->events);
    if (PyByteArray_Resize(c->events, n + (Py_ssize_t)sizeof(Event)) < 0) return -1;
    Event e = {si, s->t0, (s->flags & F_COMPLETE) ? 1u : 0u, s->npoints};
    memcpy(PyByteArray_AS_STRING(c->events) + n, &e, sizeof(e));
    return PyList_Append(c->ev_blobs, blob);
}

/* drop the oldest closed chunk of a slot; one not covered by the saved mark yet is counted (a read node whose
 * ring is shorter than the writers' save delay: reads of that range find neither memory nor store) */
static void ring_evict(Ctx *c, Slot *s) {
    uint32_t idx = s->ring_base + (uint32_t)((s->ring_head + s->ring_cap - s->ring_count) % s->ring_cap);
    if (c->ring_t0[idx] > s->lsf) c->meta[M_EVICT_UNSAVED]++;
    PyObject *old = PyList_GET_ITEM(c->ring_blobs, idx);
    if (old && PyBytes_Check(old)) c->meta[M_RING_BYTES] -= PyBytes_GET_SIZE(old);
    c->meta[M_POINTS_MEM] -= c->ring_meta[idx] >> 8;
    c->meta[M_RING_CHUNKS]--;
    Py_INCREF(Py_None);
    PyList_SET_ITEM(c->ring_blobs, idx, Py_None);
    Py_XDECREF(old);
    c->ring_meta[idx] = 0;
    s->ring_count--;
}

/* keep at most `limit` closed chunks */
static void ring_trim(Ctx *c, Slot *s, uint32_t limit) {
    while (s->ring_count > limit) ring_evict(c, s);
}

/* The ring has room for numchunks entries (ring_cap): numchunks - 1 closed chunks beside the open one, or
 * numchunks when the current chunk was finished by GC and waits in the ring for its successor. */
static void ring_push(Ctx *c, Slot *s, PyObject *blob) {
    if (s->ring_count == s->ring_cap) ring_evict(c, s);
    uint32_t idx = s->ring_base + s->ring_head;
    PyObject *old = PyList_GET_ITEM(c->ring_blobs, idx);
    Py_INCREF(blob);
    PyList_SET_ITEM(c->ring_blobs, idx, blob);
    Py_XDECREF(old);
    c->ring_t0[idx] = s->t0;
    c->ring_meta[idx] = ((s->flags & F_COMPLETE) ? RM_COMPLETE : 0) | ((s->flags & F_FIRST) ? RM_FIRST : 0) |
                        (s->npoints << 8);
    c->meta[M_RING_CHUNKS]++;
    c->meta[M_RING_BYTES] += PyBytes_GET_SIZE(blob);
    s->ring_head = (uint8_t)((s->ring_head + 1) % s->ring_cap);
    s->ring_count++;
}

/* end marker, completed-chunk event, into the ring; by_gc keeps it as the current chunk for now */
static int finish_chunk(Ctx *c, uint32_t si, Slot *s, int by_gc) {
    PyObject *blob = finished_blob(c, s);
    if (!blob) return -1;
    if (emit_event(c, si, s, blob) < 0) {
        Py_DECREF(blob);
        return -1;
    }
    ring_push(c, s, blob);
    Py_DECREF(blob);
    ring_trim(c, s, (uint32_t)s->ring_cap - 1 + (by_gc ? 1 : 0));
    s->flags |= F_FINISHED;
    c->meta[M_COMPLETED]++;
    return 0;
}

static inline int is_complete(const Ctx *c, uint32_t t0, uint32_t lead, uint32_t part) {
    uint32_t start = part < (uint64_t)c->npstart ? c->pstart[part] : 0;
    return start == 0 || (int64_t)t0 - (int64_t)lead >= (int64_t)start;
}

static void start_chunk(Ctx *c, Slot *s, uint32_t t0, int first, int complete) {
    if ((s->flags & (F_ALLOC | F_LIVE)) == (F_ALLOC | F_LIVE)) {
        /* size the region after the chunk just closed: give back what it clearly did not need */
        uint32_t want = (((s->bitpos + 7) >> 3) * 5 / 4 + 24 + 7) & ~7u;
        if (s->cap > 2 * want) {
            c->meta[M_ARENA_WASTE] += s->cap - want;
            s->cap = want;
        }
    }
    s->t0 = t0;
    s->last_ts = 0;
    s->prev_delta = 60;
    s->npoints = 0;
    s->prev_bits = 0;
    s->leading = 0xFF;
    s->trailing = 0;
    s->bitpos = 0;
    s->flags = (uint8_t)((s->flags & ~(F_FINISHED | F_COMPLETE | F_FIRST)) | F_LIVE | (complete ? F_COMPLETE : 0) |
                         (first ? F_FIRST : 0));
}

/* Metrictank AggMetric.add for one slot: the chunk rules, then the SeriesLong append */
static int slot_push(Ctx *c, uint32_t si, uint32_t t, double v, uint32_t lead, uint32_t part) {
    Slot *s = &c->slots[si];
    uint32_t span = SPANS[s->span_code & 31];
    uint32_t t0 = t - t % span;
    if (!(s->flags & F_LIVE)) {
        start_chunk(c, s, t0, 1, is_complete(c, t0, lead, part));
        s->first_ts = t;
    } else if (t0 == s->t0) {
        if (s->flags & F_FINISHED) return P_LATE;
        if (t == s->last_ts) return P_DUP;
        if (t < s->last_ts) return P_OOO;
    } else if (t0 < s->t0) {
        return P_OLD;
    } else {
        if (!(s->flags & F_FINISHED)) {
            if (finish_chunk(c, si, s, 0) < 0) return P_ERR;
        } else {
            ring_trim(c, s, (uint32_t)s->ring_cap - 1);
        }
        start_chunk(c, s, t0, 0, is_complete(c, t0, lead, part));
    }
    if (ensure_room(c, s) < 0) return P_ERR;
    enc_point(c->ab + (size_t)s->off8 * 8, s, t, v);
    c->meta[M_POINTS_MEM]++;
    return P_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * rollups (Metrictank Aggregator): bucket (B-span, B], B the next multiple of span >= ts
 */

static inline double go_min(double a, double b) {
    if (isnan(a) || isnan(b)) return NAN;
    if (a == 0 && b == 0) return signbit(a) ? a : b;
    return a < b ? a : b;
}

static inline double go_max(double a, double b) {
    if (isnan(a) || isnan(b)) return NAN;
    if (a == 0 && b == 0) return signbit(a) ? b : a;
    return a > b ? a : b;
}

static int agg_flush(Ctx *c, const Row *rw, const AggDesc *d, Agg *a) {
    double vals[5] = {a->sum, (double)a->cnt, a->min, a->max, a->lst};
    for (int m = 0; m < 5; m++) {
        if (d->off[m] == 0xFF) continue;
        int r = slot_push(c, rw->slot_start + d->off[m], a->boundary, vals[m], d->span - 1, rw->partition);
        if (r == P_ERR) return -1;
        if (r != P_OK) c->meta[M_ROLLUP_DISCARD]++;
    }
    a->cnt = 0;
    a->sum = 0;
    a->min = DBL_MAX;
    a->max = -DBL_MAX;
    return 0;
}

static int feed_aggs(Ctx *c, const Row *rw, const Layout *L, uint32_t t, double v) {
    for (uint32_t k = 0; k < L->n_aggs; k++) {
        const AggDesc *d = &c->desc[L->aggdesc_start + k];
        Agg *a = &c->aggs[rw->agg_base + k];
        uint32_t span = d->span;
        uint32_t b = t + span - ((t - 1) % span + 1);
        if (b < a->boundary) continue;
        if (b > a->boundary) {
            if (a->cnt && agg_flush(c, rw, d, a) < 0) return -1;
            a->boundary = b;
        }
        a->min = go_min(v, a->min);
        a->max = go_max(v, a->max);
        a->sum += v;
        a->cnt++;
        a->lst = v;
        if (t == b && agg_flush(c, rw, d, a) < 0) return -1;
    }
    return 0;
}

/* a point that made it past the reorder buffer (if any): raw chunk, then the rollups */
static int ingest(Ctx *c, const Row *rw, const Layout *L, uint32_t t, double v) {
    int r = slot_push(c, rw->slot_start, t, v, 0, rw->partition);
    if (r == P_OK && L->n_aggs && feed_aggs(c, rw, L, t, v) < 0) return P_ERR;
    return r;
}

static void count(Ctx *c, int r) {
    switch (r) {
        case P_DUP: c->meta[M_DUP]++; break;
        case P_OOO: c->meta[M_OOO]++; break;
        case P_OLD: c->meta[M_OLD]++; break;
        case P_LATE: c->meta[M_LATE]++; break;
        default: break;
    }
}

/* a point flushed out of the reorder buffer: its fate is counted like a direct one */
static int rob_emit(Ctx *c, const Row *rw, const Layout *L, uint32_t t, double v) {
    int r = ingest(c, rw, L, t, v);
    if (r == P_ERR) return -1;
    count(c, r);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * reorder buffer (Metrictank ReorderBuffer): W slots of `interval`, timestamps quantised up to the interval
 */

static int rob_add(Ctx *c, Row *rw, const Layout *L, uint32_t t, double v) {
    uint32_t w = L->rob_window, iv = rw->interval ? rw->interval : 1;
    uint32_t *ts = c->rob_ts + rw->rob_base;
    double *vs = c->rob_val + rw->rob_base;
    t = t + iv - ((t - 1) % iv + 1);
    uint32_t newest = ts[rw->rob_newest];
    if (newest && t < newest && (uint64_t)(newest - t) >= (uint64_t)w * iv) return P_OOO;
    uint32_t idx = (t / iv) % w;
    if (ts[idx] == t) {
        if (!L->rob_allow_update) return P_DUP;
        vs[idx] = v;
    } else if (t > newest) {
        uint64_t flush = (t - newest) / iv;
        if (flush > w) flush = w;
        uint32_t oldest = (rw->rob_newest + 1) % w;
        for (uint64_t i = 0; i < flush; i++) {
            if (ts[oldest]) {
                uint32_t ft = ts[oldest];
                ts[oldest] = 0;
                if (rob_emit(c, rw, L, ft, vs[oldest]) < 0) return P_ERR;
            }
            oldest = (oldest + 1) % w;
        }
        ts[idx] = t;
        vs[idx] = v;
        rw->rob_newest = idx;
    } else {
        c->meta[M_REORDERED]++;
        ts[idx] = t;
        vs[idx] = v;
    }
    return P_OK;
}

static int rob_flush_all(Ctx *c, Row *rw, const Layout *L) {
    uint32_t w = L->rob_window;
    uint32_t *ts = c->rob_ts + rw->rob_base;
    double *vs = c->rob_val + rw->rob_base;
    uint32_t pos = (rw->rob_newest + 1) % w;
    for (uint32_t i = 0; i < w; i++) {
        if (ts[pos]) {
            uint32_t ft = ts[pos];
            ts[pos] = 0;
            if (rob_emit(c, rw, L, ft, vs[pos]) < 0) return -1;
        }
        pos = (pos + 1) % w;
    }
    rw->rob_newest = 0;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * entry points
 */

#ifndef PF_ROW
#define PF_ROW 32
#endif
#ifndef PF_SLOT
#define PF_SLOT 16
#endif
#ifndef PF_ARENA
#define PF_ARENA 6
#endif

static PyObject *py_add_points(PyObject *self, PyObject *args) {
    PyObject *st;
    Py_buffer rb, tb, vb;
    unsigned long long now;
    if (!PyArg_ParseTuple(args, "Oy*y*y*K", &st, &rb, &tb, &vb, &now)) return NULL;
    PyObject *ret = NULL;
    Ctx c;
    Py_ssize_t n = rb.len / 8;
    if (rb.len % 8 || tb.len != n * 4 || vb.len != n * 8) {
        PyErr_SetString(PyExc_ValueError, "rows (int64), ts (uint32) and values (float64) must have equal lengths");
        goto out;
    }
    if (ctx_open(&c, st) < 0) goto out;
    const int64_t *rows = rb.buf;
    const uint32_t *ts = tb.buf;
    const double *vals = vb.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Points of different series arrive in no useful order, so each one costs a few cache misses (row,
         * slot, arena bytes). Prefetch them in stages a few points ahead, each stage using what the previous
         * one brought in. */
        if (i + PF_ROW < n) {
            int64_t pr = rows[i + PF_ROW];
            if (pr >= 0 && pr < c.nrows) __builtin_prefetch(&c.rows[pr], 0, 1);
        }
        if (i + PF_SLOT < n) {
            int64_t pr = rows[i + PF_SLOT];
            if (pr >= 0 && pr < c.nrows && (c.rows[pr].flags & R_PRESENT)) {
                const Row *prw = &c.rows[pr];
                if (prw->slot_start < (uint64_t)c.nslots) __builtin_prefetch(&c.slots[prw->slot_start], 1, 1);
                if (c.lay[prw->layout].n_aggs) __builtin_prefetch(&c.aggs[prw->agg_base], 1, 1);
            }
        }
        if (i + PF_ARENA < n) {
            int64_t pr = rows[i + PF_ARENA];
            const Row *prw = (pr >= 0 && pr < c.nrows) ? &c.rows[pr] : NULL;
            if (prw && (prw->flags & R_PRESENT) && prw->slot_start < (uint64_t)c.nslots) {
                const Slot *ps = &c.slots[prw->slot_start];
                if (ps->flags & F_ALLOC) {
                    size_t at = (size_t)ps->off8 * 8 + (ps->bitpos >> 3);
                    if (at < (size_t)PyByteArray_GET_SIZE(c.arena)) __builtin_prefetch(c.ab + at, 1, 1);
                }
            }
        }
        int64_t r = rows[i];
        uint32_t t = ts[i];
        double v = vals[i];
        if (r < 0 || r >= c.nrows || !(c.rows[r].flags & R_PRESENT) || t == 0) {
            c.meta[M_INVALID]++;
            continue;
        }
        Row *rw = &c.rows[r];
        const Layout *L = &c.lay[rw->layout];
        if (t > L->fut_tol && (uint64_t)(t - L->fut_tol) > now) {
            c.meta[M_FUTURE]++;
            continue;
        }
        int res = L->rob_window ? rob_add(&c, rw, L, t, v) : ingest(&c, rw, L, t, v);
        if (res == P_OK) {
            c.meta[M_ADDED]++;
            rw->last_write = (uint32_t)now;
        } else if (res == P_ERR) {
            ctx_release(&c);
            goto out;
        } else {
            count(&c, res);
        }
    }
    ctx_release(&c);
    ret = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&rb);
    PyBuffer_Release(&tb);
    PyBuffer_Release(&vb);
    return ret;
}

/* gc(state, now, chunk_min_ts, metric_min_ts) -> (finished, removed rows as uint32 bytes) */
static PyObject *py_gc(PyObject *self, PyObject *args) {
    PyObject *st;
    unsigned long long now, chunk_min, metric_min;
    if (!PyArg_ParseTuple(args, "OKKK", &st, &now, &chunk_min, &metric_min)) return NULL;
    Ctx c;
    if (ctx_open(&c, st) < 0) return NULL;
    PyObject *removed = PyByteArray_FromStringAndSize(NULL, 0);
    if (!removed) goto fail;
    long long finished = 0;
    for (Py_ssize_t r = 0; r < c.nrows; r++) {
        Row *rw = &c.rows[r];
        if (!(rw->flags & R_PRESENT) || rw->last_write >= chunk_min) continue;
        const Layout *L = &c.lay[rw->layout];
        if (L->rob_window) {
            uint32_t lw = rw->last_write;
            if (rob_flush_all(&c, rw, L) < 0) goto fail;
            rw->last_write = lw;
        }
        Slot *raw = &c.slots[rw->slot_start];
        if ((raw->flags & F_LIVE) && (uint64_t)raw->t0 + SPANS[raw->span_code & 31] + 900 >= now) continue;
        if ((raw->flags & F_LIVE) && !(raw->flags & F_FINISHED)) {
            if (finish_chunk(&c, rw->slot_start, raw, 1) < 0) goto fail;
            finished++;
        }
        int stale = 1;
        for (uint32_t k = 0; k < L->n_aggs; k++) {
            const AggDesc *d = &c.desc[L->aggdesc_start + k];
            Agg *a = &c.aggs[rw->agg_base + k];
            if ((uint64_t)rw->last_write + d->span > chunk_min) {
                stale = 0;
                continue;
            }
            if (a->cnt && agg_flush(&c, rw, d, a) < 0) goto fail;
            for (int m = 0; m < 5; m++) {
                if (d->off[m] == 0xFF) continue;
                uint32_t si = rw->slot_start + d->off[m];
                Slot *s = &c.slots[si];
                if (!(s->flags & F_LIVE) || (s->flags & F_FINISHED)) continue;
                if ((uint64_t)s->t0 + SPANS[s->span_code & 31] + 900 < now) {
                    if (finish_chunk(&c, si, s, 1) < 0) goto fail;
                    finished++;
                } else {
                    stale = 0;
                }
            }
        }
        if (stale && rw->last_write < metric_min) {
            uint32_t row = (uint32_t)r;
            Py_ssize_t n = PyByteArray_GET_SIZE(removed);
            if (PyByteArray_Resize(removed, n + 4) < 0) goto fail;
            memcpy(PyByteArray_AS_STRING(removed) + n, &row, 4);
        }
    }
    ctx_release(&c);
    PyObject *out = Py_BuildValue("(LN)", finished, removed);
    return out;
fail:
    Py_XDECREF(removed);
    ctx_release(&c);
    return NULL;
}

/* release(state, rows int64): forget the rows' chunks (ring blobs, arena regions, reorder buffers) */
static PyObject *py_release(PyObject *self, PyObject *args) {
    PyObject *st;
    Py_buffer rb;
    if (!PyArg_ParseTuple(args, "Oy*", &st, &rb)) return NULL;
    Ctx c;
    if (ctx_open(&c, st) < 0) {
        PyBuffer_Release(&rb);
        return NULL;
    }
    const int64_t *rows = rb.buf;
    Py_ssize_t n = rb.len / 8;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        if (r < 0 || r >= c.nrows || !(c.rows[r].flags & R_PRESENT)) continue;
        Row *rw = &c.rows[r];
        const Layout *L = &c.lay[rw->layout];
        for (uint32_t k = 0; k < L->nslots; k++) {
            Slot *s = &c.slots[rw->slot_start + k];
            if (!(s->flags & F_FINISHED)) c.meta[M_POINTS_MEM] -= s->npoints;
            s->lsf = 0xFFFFFFFFu; /* the series is forgotten, not short of memory: not an unsaved eviction */
            ring_trim(&c, s, 0);
            if (s->flags & F_ALLOC) c.meta[M_ARENA_WASTE] += s->cap;
            s->flags = 0;
            s->npoints = 0;
            s->ring_count = 0;
            s->ring_head = 0;
        }
        if (L->rob_window) memset(c.rob_ts + rw->rob_base, 0, (size_t)L->rob_window * 4);
        rw->flags = 0;
    }
    ctx_release(&c);
    PyBuffer_Release(&rb);
    Py_RETURN_NONE;
}

/* open_blobs(state, slots int64) -> list: each slot's open chunk, finished (header + stream + end marker), or
 * None where there is none */
static PyObject *py_open_blobs(PyObject *self, PyObject *args) {
    PyObject *st;
    Py_buffer sb;
    if (!PyArg_ParseTuple(args, "Oy*", &st, &sb)) return NULL;
    Ctx c;
    if (ctx_open(&c, st) < 0) {
        PyBuffer_Release(&sb);
        return NULL;
    }
    const int64_t *slots = sb.buf;
    Py_ssize_t n = sb.len / 8;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        int64_t si = slots[i];
        PyObject *o;
        if (si < 0 || si >= c.nslots) {
            PyErr_SetString(PyExc_IndexError, "slot out of range");
            o = NULL;
        } else {
            const Slot *s = &c.slots[si];
            if ((s->flags & F_LIVE) && !(s->flags & F_FINISHED) && (s->flags & F_ALLOC)) {
                o = finished_blob(&c, s);
            } else {
                o = Py_NewRef(Py_None);
            }
        }
        if (!o) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, o);
    }
    ctx_release(&c);
    PyBuffer_Release(&sb);
    return out;
}

/* compact(state) -> a new arena holding only the live regions, in slot order; updates the slots */
static PyObject *py_compact(PyObject *self, PyObject *args) {
    PyObject *st;
    if (!PyArg_ParseTuple(args, "O", &st)) return NULL;
    Ctx c;
    if (ctx_open(&c, st) < 0) return NULL;
    uint64_t live = 0;
    for (Py_ssize_t i = 0; i < c.nslots; i++)
        if (c.slots[i].flags & F_ALLOC) live += c.slots[i].cap;
    uint64_t size = live + live / 8 + 65536;
    PyObject *na = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!na) {
        ctx_release(&c);
        return NULL;
    }
    uint8_t *dst = (uint8_t *)PyByteArray_AS_STRING(na);
    uint64_t pos = 0;
    for (Py_ssize_t i = 0; i < c.nslots; i++) {
        Slot *s = &c.slots[i];
        if (!(s->flags & F_ALLOC)) continue;
        memcpy(dst + pos, c.ab + (size_t)s->off8 * 8, (s->bitpos + 7) >> 3);
        s->off8 = (uint32_t)(pos / 8);
        pos += s->cap;
    }
    c.meta[M_ARENA_USED] = (int64_t)pos;
    c.meta[M_ARENA_WASTE] = 0;
    ctx_release(&c);
    return na;
}

static PyMethodDef methods[] = {
    {"add_points", py_add_points, METH_VARARGS, "add_points(state, rows, ts, values, now): ingest a batch"},
    {"gc", py_gc, METH_VARARGS, "gc(state, now, chunk_min_ts, metric_min_ts) -> (finished, removed rows)"},
    {"release", py_release, METH_VARARGS, "release(state, rows): drop the rows' chunks"},
    {"open_blobs", py_open_blobs, METH_VARARGS, "open_blobs(state, slots) -> [open_blob per slot]"},
    {"compact", py_compact, METH_VARARGS, "compact(state) -> new arena without waste"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_tank", "Tank kernel (see _tank.c).", -1, methods};

PyMODINIT_FUNC PyInit__tank(void) {
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "SLOT_SIZE", sizeof(Slot)) < 0 ||
        PyModule_AddIntConstant(m, "ROW_SIZE", sizeof(Row)) < 0 ||
        PyModule_AddIntConstant(m, "AGG_SIZE", sizeof(Agg)) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_SIZE", sizeof(Layout)) < 0 ||
        PyModule_AddIntConstant(m, "AGGDESC_SIZE", sizeof(AggDesc)) < 0 ||
        PyModule_AddIntConstant(m, "EVENT_SIZE", sizeof(Event)) < 0 ||
        PyModule_AddIntConstant(m, "META_COUNT", M_COUNT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
