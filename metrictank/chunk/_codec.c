/*
 * Metrictank-compatible chunk codec (private; use metrictank.chunk).
 *
 * Blob formats (first byte):
 *   0x02  span code byte + SeriesLong bitstream (read + write)
 *   0x01  span code byte + Series4h bitstream   (read only)
 *   0x00  Series4h bitstream                     (read only)
 *
 * The bit order is MSB first, the last byte is zero padded.  The Python wrapper
 * converts arguments: uint32 arrays for timestamps and t0s, float64 for values,
 * int64 for counts; the exact buffer types are checked here (see get_vec).
 *
 * Speed notes: the writer keeps pending bits in a 64-bit accumulator and flushes
 * 32 bits at a time; the reader copies the payload into a zero-padded scratch
 * buffer so that every read is an unaligned 64-bit big-endian load at the bit
 * position, without a per-read bounds check.  Reading past the real end lands in
 * the zero padding; the position is compared with the real bit length after every
 * point, and a point that ends beyond it is a truncation error.  A point reads at
 * most 5+32+2+11+64 = 114 bits, so PAD bytes of padding always suffice.
 *
 * The batch functions release the GIL; their outputs live in malloc'd memory that
 * is handed to Python through the small RawBuf type (buffer protocol, zero copy).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAD 40

static PyObject *ChunkError;

/* ------------------------------------------------------------------------- */
/* RawBuf: owns a malloc'd block, exposes it through the buffer protocol.    */

typedef struct {
    PyObject_HEAD
    void *data;
    Py_ssize_t size;
} RawBuf;

static void rawbuf_dealloc(RawBuf *self) {
    free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int rawbuf_getbuffer(RawBuf *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, 0, flags);
}

static PyBufferProcs rawbuf_as_buffer = {(getbufferproc)rawbuf_getbuffer, NULL};

static PyTypeObject RawBufType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "metrictank.chunk._codec.RawBuf",
    .tp_basicsize = sizeof(RawBuf),
    .tp_dealloc = (destructor)rawbuf_dealloc,
    .tp_as_buffer = &rawbuf_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory block returned by the codec; read it with numpy.frombuffer.",
};

/* Takes ownership of data (freed on failure too).  size bytes are exposed. */
static PyObject *rawbuf_new(void *data, Py_ssize_t size) {
    if (data == NULL) {
        data = malloc(1);
        if (data == NULL) return PyErr_NoMemory();
    }
    RawBuf *self = PyObject_New(RawBuf, &RawBufType);
    if (self == NULL) {
        free(data);
        return NULL;
    }
    self->data = data;
    self->size = size;
    return (PyObject *)self;
}

/* ------------------------------------------------------------------------- */
/* Errors                                                                    */

enum {
    OK = 0,
    E_NOMEM,
    E_EMPTY,
    E_FORMAT,
    E_SHORT,
    E_SPANCODE,
    E_TRUNC,
    E_TRAILING,
    E_WINDOW,
    E_SIGBITS,
    E_TS_ORDER,
    E_TS_RANGE,
    E_IN_BEFORE_T0,
    E_IN_ZERO,
    E_IN_ORDER,
};

static const char *err_text(int code) {
    switch (code) {
    case E_EMPTY: return "empty blob";
    case E_FORMAT: return "unknown chunk format byte";
    case E_SHORT: return "blob too short for its header";
    case E_SPANCODE: return "invalid span code";
    case E_TRUNC: return "truncated chunk: bitstream ends without an end-of-stream marker";
    case E_TRAILING: return "corrupt chunk: data after the end-of-stream marker";
    case E_WINDOW: return "corrupt chunk: value reuses a leading/trailing window that was never set";
    case E_SIGBITS: return "corrupt chunk: leading zeros + significant bits exceed 64";
    case E_TS_ORDER: return "corrupt chunk: decoded timestamps are not strictly increasing";
    case E_TS_RANGE: return "corrupt chunk: decoded timestamp outside the uint32 range or zero";
    case E_IN_BEFORE_T0: return "timestamp before the chunk's t0";
    case E_IN_ZERO: return "timestamp 0 cannot be stored (Metrictank treats it as 'no point yet')";
    case E_IN_ORDER: return "timestamps must be strictly increasing";
    default: return "chunk codec error";
    }
}

static PyObject *raise_code(int code, Py_ssize_t index) {
    if (code == E_NOMEM) return PyErr_NoMemory();
    if (index >= 0)
        PyErr_Format(ChunkError, "chunk %zd: %s", index, err_text(code));
    else
        PyErr_SetString(ChunkError, err_text(code));
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* Bit writer                                                                */

typedef struct {
    uint8_t *out;
    uint64_t acc; /* pending bits in the low `n` bits */
    unsigned n;   /* always < 32 between calls */
} bw_t;

static inline void store_be32(uint8_t *p, uint32_t x) {
    x = __builtin_bswap32(x);
    memcpy(p, &x, 4);
}

/* Append the k (<= 32) low bits of v; v must have no bits above k. */
static inline void bw_put(bw_t *w, uint64_t v, unsigned k) {
    w->acc = (w->acc << k) | v;
    w->n += k;
    if (w->n >= 32) {
        w->n -= 32;
        store_be32(w->out, (uint32_t)(w->acc >> w->n));
        w->out += 4;
    }
}

/* Append the k (1..64) low bits of v; v must have no bits above k. */
static inline void bw_put_long(bw_t *w, uint64_t v, unsigned k) {
    if (k > 32) {
        bw_put(w, v >> 32, k - 32);
        bw_put(w, v & 0xffffffffu, 32);
    } else {
        bw_put(w, v, k);
    }
}

static inline uint8_t *bw_finish(bw_t *w) {
    uint8_t *p = w->out;
    unsigned n = w->n;
    if (n) {
        uint32_t x = (uint32_t)(w->acc << (32 - n));
        for (unsigned b = 0; b < n; b += 8) {
            *p++ = (uint8_t)(x >> 24);
            x <<= 8;
        }
    }
    return p;
}

/* ------------------------------------------------------------------------- */
/* SeriesLong encoder                                                        */

/* Worst case: header 2 bytes, first point 5+32+64 bits, later points
 * 5+32 + 2+5+6+64 bits, end marker 5 bits; plus slack for the 32-bit flushes. */
static inline size_t enc_bound(size_t n) { return 2 + (106 + 114 * n + 7) / 8 + 8; }

static inline void put_dod(bw_t *w, int32_t dod) {
    if (dod == 0) {
        bw_put(w, 0, 1);
    } else if (dod >= -63 && dod <= 64) {
        bw_put(w, (0x2u << 7) | ((uint32_t)dod & 0x7f), 9);
    } else if (dod >= -255 && dod <= 256) {
        bw_put(w, (0x6u << 9) | ((uint32_t)dod & 0x1ff), 12);
    } else if (dod >= -2047 && dod <= 2048) {
        bw_put(w, (0xeu << 12) | ((uint32_t)dod & 0xfff), 16);
    } else {
        bw_put(w, 0x1e, 5);
        bw_put(w, (uint32_t)dod, 32);
    }
}

/* Encodes one chunk into out (capacity enc_bound(n)).  Returns the length, or
 * -(error code); *bad receives the offending point index. */
static Py_ssize_t encode_one(uint8_t *out, uint32_t t0, uint8_t code, const uint32_t *ts, const uint64_t *vb,
                             size_t n, size_t *bad) {
    out[0] = 0x02;
    out[1] = code;
    bw_t w = {out + 2, 0, 0};
    if (n > 0) {
        uint32_t t = ts[0];
        if (t < t0) {
            *bad = 0;
            return -E_IN_BEFORE_T0;
        }
        if (t == 0) {
            *bad = 0;
            return -E_IN_ZERO;
        }
        uint32_t delta = t - t0;
        put_dod(&w, (int32_t)(delta - 60u));
        uint64_t prev = vb[0];
        bw_put_long(&w, prev, 64);
        uint32_t prev_t = t;
        uint32_t prev_delta = delta;
        unsigned L = 0, T = 0;
        int wset = 0;
        for (size_t i = 1; i < n; i++) {
            t = ts[i];
            if (t <= prev_t) {
                *bad = i;
                return -E_IN_ORDER;
            }
            delta = t - prev_t;
            int32_t dod = (int32_t)(delta - prev_delta);
            prev_delta = delta;
            prev_t = t;
            uint64_t v = vb[i];
            uint64_t x = v ^ prev;
            prev = v;
            if (dod == 0 && x == 0) {
                bw_put(&w, 0, 2);
                continue;
            }
            put_dod(&w, dod);
            if (x == 0) {
                bw_put(&w, 0, 1);
                continue;
            }
            unsigned lead = (unsigned)__builtin_clzll(x);
            unsigned trail = (unsigned)__builtin_ctzll(x);
            if (lead > 31) lead = 31;
            unsigned sig = 64 - lead - trail;
            unsigned cur = 64 - L - T;
            if (wset && lead >= L && trail >= T && cur - sig < 22) {
                bw_put(&w, 0x2, 2);
                bw_put_long(&w, x >> T, cur);
            } else {
                L = lead;
                T = trail;
                wset = 1;
                bw_put(&w, (0x3u << 11) | (lead << 6) | (sig & 63), 13);
                bw_put_long(&w, x >> trail, sig);
            }
        }
    }
    bw_put(&w, 0x1f, 5);
    return (Py_ssize_t)(bw_finish(&w) - out);
}

/* ------------------------------------------------------------------------- */
/* Bit reader helpers and decoder output                                     */

static inline uint64_t load_be64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return __builtin_bswap64(x);
}

/* At least 57 valid bits starting at bit `pos`, MSB-aligned. */
#define PEEK(buf, pos) (load_be64((buf) + ((pos) >> 3)) << ((pos) & 7))

/* k in 1..64 bits at pos. */
static inline uint64_t read_bits(const uint8_t *buf, uint64_t pos, unsigned k) {
    if (k <= 57) return PEEK(buf, pos) >> (64 - k);
    uint64_t hi = PEEK(buf, pos) >> 32;
    uint64_t lo = PEEK(buf, pos + 32) >> (96 - k);
    return (hi << (k - 32)) | lo;
}

typedef struct {
    uint32_t *ts;
    uint64_t *vb;
    size_t n, cap;
} out_t;

/* Fresh output memory costs a page fault per 4 KiB page, which for a large batch
 * took longer than the decoding itself; asking for transparent huge pages (where
 * the kernel allows it, e.g. THP mode "madvise") cuts that to one per 2 MiB. */
#define HUGE_MIN_POINTS ((size_t)1 << 18)

static void advise_huge(void *p, size_t len) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t e = ((uintptr_t)p + len) & ~(huge - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)len;
#endif
}

/* Resizes the output to `cap` points (grow or shrink); on failure it is unchanged. */
static int out_reserve(out_t *o, size_t cap) {
    if (cap == 0) cap = 1;
    uint32_t *ts = realloc(o->ts, cap * sizeof(uint32_t));
    if (ts == NULL) return E_NOMEM;
    o->ts = ts;
    uint64_t *vb = realloc(o->vb, cap * sizeof(uint64_t));
    if (vb == NULL) return E_NOMEM;
    o->vb = vb;
    o->cap = cap;
    if (cap >= HUGE_MIN_POINTS) {
        advise_huge(o->ts, cap * sizeof(uint32_t));
        advise_huge(o->vb, cap * sizeof(uint64_t));
    }
    return OK;
}

static int out_grow(out_t *o) { return out_reserve(o, o->cap * 2); }

static void out_free(out_t *o) {
    free(o->ts);
    free(o->vb);
    o->ts = NULL;
    o->vb = NULL;
}

/* After an end marker ending at `pos`, only the zero padding of the last byte may follow. */
static inline int check_tail(const uint8_t *buf, uint64_t pos, uint64_t total, uint64_t max) {
    if (total - pos > max) return E_TRAILING;
    if (pos < total && (PEEK(buf, pos) >> (64 - (total - pos))) != 0) return E_TRAILING;
    return OK;
}

/* Decodes the value part of a non-first point (shared by both formats). */
#define DECODE_VALUE()                                                                 \
    do {                                                                               \
        uint64_t w_ = PEEK(buf, pos);                                                  \
        if (!(w_ >> 63)) {                                                             \
            pos += 1;                                                                  \
        } else if (!((w_ >> 62) & 1)) {                                                \
            if (!wset) return E_WINDOW;                                                \
            unsigned k_ = 64 - L - T;                                                  \
            if (k_ <= 55) {                                                            \
                val ^= ((w_ << 2) >> (64 - k_)) << T;                                  \
            } else {                                                                   \
                val ^= read_bits(buf, pos + 2, k_) << T;                               \
            }                                                                          \
            pos += 2 + k_;                                                             \
        } else {                                                                       \
            unsigned lead_ = (unsigned)(w_ >> 57) & 31;                                \
            unsigned sig_ = (unsigned)(w_ >> 51) & 63;                                 \
            if (sig_ == 0) sig_ = 64;                                                  \
            if (lead_ + sig_ > 64) return E_SIGBITS;                                   \
            L = lead_;                                                                 \
            T = 64 - lead_ - sig_;                                                     \
            wset = 1;                                                                  \
            if (sig_ <= 44) {                                                          \
                val ^= ((w_ << 13) >> (64 - sig_)) << T;                               \
            } else {                                                                   \
                val ^= read_bits(buf, pos + 13, sig_) << T;                            \
            }                                                                          \
            pos += 13 + sig_;                                                          \
        }                                                                              \
    } while (0)

static const uint8_t DOD_WIDTH[5] = {0, 7, 9, 12, 32};

/* buf: payload with PAD zero bytes after `len` real bytes. */
static int decode_long(const uint8_t *buf, size_t len, uint32_t t0, out_t *o) {
    const uint64_t total = (uint64_t)len * 8;
    uint64_t pos = 0;
    uint64_t t = t0;
    uint32_t delta = 60;
    uint64_t val = 0;
    unsigned L = 0, T = 0;
    int wset = 0;
    size_t n = o->n;
    int first = 1;
    for (;;) {
        uint64_t w = PEEK(buf, pos);
        unsigned ones = (unsigned)__builtin_clzll(~w | (1ULL << 58));
        if (ones == 0) {
            pos += 1;
        } else if (ones < 4) {
            unsigned wd = DOD_WIDTH[ones];
            uint32_t raw = (uint32_t)((w << (ones + 1)) >> (64 - wd));
            if (raw > (1u << (wd - 1))) raw -= (1u << wd);
            delta += raw;
            pos += ones + 1 + wd;
        } else if (ones == 4) {
            delta += (uint32_t)((w << 5) >> 32);
            pos += 37;
        } else {
            pos += 5;
            if (pos > total) return E_TRUNC;
            o->n = n;
            return check_tail(buf, pos, total, 7);
        }
        if (first) {
            t += delta;
            if (t == 0 || t > 0xffffffffu) return E_TS_RANGE;
            val = read_bits(buf, pos, 64);
            pos += 64;
            first = 0;
        } else {
            if (delta == 0) return E_TS_ORDER;
            t += delta;
            if (t > 0xffffffffu) return E_TS_ORDER;
            DECODE_VALUE();
        }
        if (pos > total) return E_TRUNC;
        if (n == o->cap) {
            o->n = n;
            if (out_grow(o)) return E_NOMEM;
        }
        o->ts[n] = (uint32_t)t;
        o->vb[n] = val;
        n++;
    }
}

/* Reads a Series4h delta-of-delta at pos.  Returns 1 and sets *dod / *adv for a
 * dod, 0 for the end marker (adv = 36), -1 when it runs past the end. */
static inline int read_dod4h(const uint8_t *buf, uint64_t pos, uint64_t total, int32_t *dod, unsigned *adv) {
    uint64_t w = PEEK(buf, pos);
    unsigned ones = (unsigned)__builtin_clzll(~w | (1ULL << 59));
    if (ones == 0) {
        *dod = 0;
        *adv = 1;
    } else if (ones < 4) {
        unsigned wd = DOD_WIDTH[ones];
        uint32_t raw = (uint32_t)((w << (ones + 1)) >> (64 - wd));
        if (raw > (1u << (wd - 1))) raw -= (1u << wd);
        *dod = (int32_t)raw;
        *adv = ones + 1 + wd;
    } else {
        uint32_t raw = (uint32_t)((w << 4) >> 32);
        *adv = 36;
        if (pos + 36 > total) return -1;
        if (raw == 0xffffffffu) return 0;
        *dod = (int32_t)raw;
    }
    return pos + *adv > total ? -1 : 1;
}

static int decode_4h(const uint8_t *buf, size_t len, out_t *o) {
    const uint64_t total = (uint64_t)len * 8;
    if (total < 32) return E_TRUNC;
    uint64_t pos = 32;
    uint64_t t0 = PEEK(buf, 0) >> 32;
    uint64_t val = 0;
    unsigned L = 0, T = 0;
    int wset = 0;
    size_t n = o->n;
    /* first point: 14-bit delta and a raw value.  Like Metrictank, a stream too
     * short for one is read as empty, which is only valid with an end marker
     * (the marker's trailing zero bit is checked as part of the padding). */
    if (pos + 78 > total) {
        int32_t d;
        unsigned adv;
        if (read_dod4h(buf, pos, total, &d, &adv) != 0 || pos + adv + 1 > total) return E_TRUNC;
        return check_tail(buf, pos + adv, total, 8);
    }
    uint32_t delta = (uint32_t)(PEEK(buf, pos) >> 50);
    pos += 14;
    val = read_bits(buf, pos, 64);
    pos += 64;
    {
        /* Metrictank's remedy for 14-bit first-delta overflow (chunks > 4.5h):
         * if the next delta would be negative, the first delta wrapped. */
        int32_t d;
        unsigned adv;
        if (read_dod4h(buf, pos, total, &d, &adv) == 1 && (int32_t)((uint32_t)d + delta) < 0) delta += 16384;
    }
    uint64_t t = t0 + delta;
    if (t == 0 || t > 0xffffffffu) return E_TS_RANGE;
    if (n == o->cap && out_grow(o)) return E_NOMEM;
    o->ts[n] = (uint32_t)t;
    o->vb[n] = val;
    n++;
    for (;;) {
        int32_t dod;
        unsigned adv;
        int r = read_dod4h(buf, pos, total, &dod, &adv);
        if (r < 0) return E_TRUNC;
        pos += adv;
        if (r == 0) {
            /* the marker's final zero bit is checked as part of the padding */
            if (pos + 1 > total) return E_TRUNC;
            o->n = n;
            return check_tail(buf, pos, total, 8);
        }
        delta += (uint32_t)dod;
        if (delta == 0) return E_TS_ORDER;
        t += delta;
        if (t > 0xffffffffu) return E_TS_ORDER;
        DECODE_VALUE();
        if (pos > total) return E_TRUNC;
        if (n == o->cap) {
            o->n = n;
            if (out_grow(o)) return E_NOMEM;
        }
        o->ts[n] = (uint32_t)t;
        o->vb[n] = val;
        n++;
    }
}

typedef struct {
    uint8_t *p;
    size_t cap;
} scratch_t;

/* Decodes one blob, appending its points to o.  On error o->n is unchanged. */
static int decode_blob(const uint8_t *blob, size_t len, uint32_t t0, scratch_t *s, out_t *o) {
    if (len < 1) return E_EMPTY;
    size_t hdr;
    uint8_t fmt = blob[0];
    if (fmt == 0x02 || fmt == 0x01) {
        if (len <= 2) return E_SHORT;
        if (blob[1] >= 32) return E_SPANCODE;
        hdr = 2;
    } else if (fmt == 0x00) {
        if (len <= 1) return E_SHORT;
        hdr = 1;
    } else {
        return E_FORMAT;
    }
    size_t plen = len - hdr;
    if (plen + PAD > s->cap) {
        size_t cap = (plen + PAD) * 2;
        uint8_t *p = realloc(s->p, cap);
        if (p == NULL) return E_NOMEM;
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p, blob + hdr, plen);
    memset(s->p + plen, 0, PAD);
    size_t n0 = o->n;
    int rc = fmt == 0x02 ? decode_long(s->p, plen, t0, o) : decode_4h(s->p, plen, o);
    if (rc != OK) o->n = n0;
    return rc;
}

/* ------------------------------------------------------------------------- */
/* Argument helpers                                                          */

static int get_u32(PyObject *o, uint32_t *out, const char *what) {
    unsigned long long v;
    if (PyLong_CheckExact(o)) {
        v = PyLong_AsUnsignedLongLong(o);
    } else {
        PyObject *ix = PyNumber_Index(o);
        if (ix == NULL) {
            v = (unsigned long long)-1;
        } else {
            v = PyLong_AsUnsignedLongLong(ix);
            Py_DECREF(ix);
        }
    }
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(ChunkError, "%s must be an integer in [0, 2**32)", what);
        return -1;
    }
    if (v > 0xffffffffULL) {
        PyErr_Format(ChunkError, "%s must be an integer in [0, 2**32)", what);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* Vector arguments must be 1-d, C-contiguous, native-endian buffers whose struct
 * format is one of `codes` (e.g. "I" for uint32): anything else raises TypeError,
 * which the Python wrapper answers by converting (checked) and calling again. */
static int get_vec(PyObject *o, Py_buffer *b, Py_ssize_t itemsize, const char *codes, const char *what) {
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous buffer", what);
        return -1;
    }
    const char *f = b->format ? b->format : "B";
    if (*f == '@' || *f == '=' || (*f == '<' && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)) f++;
    if (b->itemsize != itemsize || b->ndim != 1 || f[0] == '\0' || f[1] != '\0' || strchr(codes, f[0]) == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: expected a 1-d array of type %s", what, codes);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* encode(t0, code, ts_u32, values_f64) -> bytes                              */

static PyObject *py_encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode(t0, span_code, ts, values)");
        return NULL;
    }
    uint32_t t0, code;
    if (get_u32(args[0], &t0, "t0") < 0 || get_u32(args[1], &code, "span code") < 0) return NULL;
    if (code >= 32) return raise_code(E_SPANCODE, -1);
    Py_buffer bt, bv;
    if (get_vec(args[2], &bt, 4, "I", "ts") < 0) return NULL;
    if (get_vec(args[3], &bv, 8, "d", "values") < 0) {
        PyBuffer_Release(&bt);
        return NULL;
    }
    PyObject *res = NULL;
    size_t n = (size_t)(bt.len / 4);
    if ((size_t)(bv.len / 8) != n) {
        PyErr_SetString(ChunkError, "ts and values differ in length");
        goto done;
    }
    uint8_t stackbuf[8192];
    size_t bound = enc_bound(n);
    uint8_t *out = bound <= sizeof(stackbuf) ? stackbuf : malloc(bound);
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t bad = 0;
    Py_ssize_t r = encode_one(out, t0, (uint8_t)code, (const uint32_t *)bt.buf, (const uint64_t *)bv.buf, n, &bad);
    if (r < 0) {
        PyErr_Format(ChunkError, "point %zu: %s", bad, err_text((int)-r));
    } else {
        res = PyBytes_FromStringAndSize((const char *)out, r);
    }
    if (out != stackbuf) free(out);
done:
    PyBuffer_Release(&bt);
    PyBuffer_Release(&bv);
    return res;
}

/* ------------------------------------------------------------------------- */
/* encode_many(t0s_u32, code, counts_i64, ts_u32, values_f64) -> list[bytes]  */

static PyObject *py_encode_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "encode_many(t0s, span_code, counts, ts, values)");
        return NULL;
    }
    uint32_t code;
    if (get_u32(args[1], &code, "span code") < 0) return NULL;
    if (code >= 32) return raise_code(E_SPANCODE, -1);
    Py_buffer b0, bc, bt, bv;
    if (get_vec(args[0], &b0, 4, "I", "t0s") < 0) return NULL;
    if (get_vec(args[2], &bc, 8, "lq", "counts") < 0) {
        PyBuffer_Release(&b0);
        return NULL;
    }
    if (get_vec(args[3], &bt, 4, "I", "ts") < 0) {
        PyBuffer_Release(&b0);
        PyBuffer_Release(&bc);
        return NULL;
    }
    if (get_vec(args[4], &bv, 8, "d", "values") < 0) {
        PyBuffer_Release(&b0);
        PyBuffer_Release(&bc);
        PyBuffer_Release(&bt);
        return NULL;
    }
    PyObject *res = NULL;
    size_t *offs = NULL;
    uint8_t *big = NULL;
    size_t nch = (size_t)(b0.len / 4);
    size_t npts = (size_t)(bt.len / 4);
    const int64_t *counts = (const int64_t *)bc.buf;
    if ((size_t)(bc.len / 8) != nch) {
        PyErr_SetString(ChunkError, "t0s and counts differ in length");
        goto done;
    }
    if ((size_t)(bv.len / 8) != npts) {
        PyErr_SetString(ChunkError, "ts and values differ in length");
        goto done;
    }
    size_t total = 0, bound = 0;
    for (size_t i = 0; i < nch; i++) {
        if (counts[i] < 0 || (uint64_t)counts[i] > npts - total) {
            PyErr_SetString(ChunkError, "counts must be >= 0 and sum to len(ts)");
            goto done;
        }
        total += (size_t)counts[i];
        bound += enc_bound((size_t)counts[i]);
    }
    if (total != npts) {
        PyErr_SetString(ChunkError, "counts must be >= 0 and sum to len(ts)");
        goto done;
    }
    offs = malloc((nch + 1) * sizeof(size_t));
    big = malloc(bound ? bound : 1);
    if (offs == NULL || big == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint32_t *t0s = (const uint32_t *)b0.buf;
    const uint32_t *ts = (const uint32_t *)bt.buf;
    const uint64_t *vb = (const uint64_t *)bv.buf;
    Py_ssize_t err = 0;
    size_t bad_chunk = 0, bad_point = 0;
    Py_BEGIN_ALLOW_THREADS;
    size_t o = 0, p = 0;
    for (size_t i = 0; i < nch; i++) {
        size_t c = (size_t)counts[i];
        offs[i] = o;
        Py_ssize_t r = encode_one(big + o, t0s[i], (uint8_t)code, ts + p, vb + p, c, &bad_point);
        if (r < 0) {
            err = r;
            bad_chunk = i;
            break;
        }
        o += (size_t)r;
        p += c;
    }
    offs[nch] = o;
    Py_END_ALLOW_THREADS;
    if (err < 0) {
        PyErr_Format(ChunkError, "chunk %zu, point %zu: %s", bad_chunk, bad_point, err_text((int)-err));
        goto done;
    }
    res = PyList_New((Py_ssize_t)nch);
    if (res == NULL) goto done;
    for (size_t i = 0; i < nch; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)big + offs[i], (Py_ssize_t)(offs[i + 1] - offs[i]));
        if (b == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        PyList_SET_ITEM(res, (Py_ssize_t)i, b);
    }
done:
    free(offs);
    free(big);
    PyBuffer_Release(&b0);
    PyBuffer_Release(&bc);
    PyBuffer_Release(&bt);
    PyBuffer_Release(&bv);
    return res;
}

/* ------------------------------------------------------------------------- */
/* decode(t0, blob) -> (RawBuf ts_u32, RawBuf values_f64)                     */

static int get_blob(PyObject *obj, Py_buffer *b) {
    return PyObject_GetBuffer(obj, b, PyBUF_SIMPLE);
}

static PyObject *py_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode(t0, blob)");
        return NULL;
    }
    uint32_t t0;
    if (get_u32(args[0], &t0, "t0") < 0) return NULL;
    Py_buffer bb;
    if (get_blob(args[1], &bb) < 0) return NULL;
    out_t o = {NULL, NULL, 0, 0};
    /* a point takes >= 2 bits: small blobs get their exact bound, large ones grow */
    size_t guess = bb.len <= 4096 ? (size_t)bb.len * 4 + 2 : (size_t)bb.len + 16;
    if (out_reserve(&o, guess) != OK) {
        out_free(&o);
        PyBuffer_Release(&bb);
        return PyErr_NoMemory();
    }
    uint8_t stackbuf[4096];
    scratch_t s = {NULL, 0};
    if ((size_t)bb.len + PAD <= sizeof(stackbuf)) {
        s.p = stackbuf;
        s.cap = sizeof(stackbuf);
    }
    int rc = decode_blob((const uint8_t *)bb.buf, (size_t)bb.len, t0, &s, &o);
    if (s.p != stackbuf) free(s.p);
    PyBuffer_Release(&bb);
    if (rc != OK) {
        out_free(&o);
        return raise_code(rc, -1);
    }
    size_t n = o.n;
    if (n < o.cap) (void)out_reserve(&o, n); /* shrink to fit; failing keeps the larger block */
    PyObject *pt = rawbuf_new(o.ts, (Py_ssize_t)(n * 4));
    PyObject *pv = rawbuf_new(o.vb, (Py_ssize_t)(n * 8));
    if (pt == NULL || pv == NULL) {
        Py_XDECREF(pt);
        Py_XDECREF(pv);
        return NULL;
    }
    PyObject *res = PyTuple_Pack(2, pt, pv);
    Py_DECREF(pt);
    Py_DECREF(pv);
    return res;
}

/* ------------------------------------------------------------------------- */
/* decode_many(t0s_u32, blobs) -> (RawBuf counts_i64, RawBuf ts, RawBuf vals) */

static PyObject *py_decode_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_many(t0s, blobs)");
        return NULL;
    }
    Py_buffer b0;
    if (get_vec(args[0], &b0, 4, "I", "t0s") < 0) return NULL;
    /* a tuple keeps every blob alive (and immutable) while the GIL is released */
    PyObject *tup = PySequence_Tuple(args[1]);
    if (tup == NULL) {
        PyBuffer_Release(&b0);
        return NULL;
    }
    Py_ssize_t nch = PyTuple_GET_SIZE(tup);
    PyObject *res = NULL;
    const uint8_t **ptrs = NULL;
    size_t *lens = NULL;
    int64_t *counts = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t nviews = 0;
    out_t o = {NULL, NULL, 0, 0};
    scratch_t s = {NULL, 0};
    if (b0.len / 4 != nch) {
        PyErr_SetString(ChunkError, "t0s and blobs differ in length");
        goto done;
    }
    ptrs = malloc((size_t)(nch ? nch : 1) * sizeof(*ptrs));
    lens = malloc((size_t)(nch ? nch : 1) * sizeof(*lens));
    counts = malloc((size_t)(nch ? nch : 1) * sizeof(*counts));
    views = malloc((size_t)(nch ? nch : 1) * sizeof(*views));
    if (!ptrs || !lens || !counts || !views) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total_bytes = 0;
    for (Py_ssize_t i = 0; i < nch; i++) {
        PyObject *it = PyTuple_GET_ITEM(tup, i);
        if (PyBytes_CheckExact(it)) {
            ptrs[i] = (const uint8_t *)PyBytes_AS_STRING(it);
            lens[i] = (size_t)PyBytes_GET_SIZE(it);
        } else {
            /* other bytes-like objects stay locked (exported) until we are done */
            if (get_blob(it, &views[nviews]) < 0) goto done;
            ptrs[i] = views[nviews].buf;
            lens[i] = (size_t)views[nviews].len;
            nviews++;
        }
        total_bytes += lens[i];
    }
    /* typical data needs 0.25-12 bytes a point; start at one point a byte and grow */
    if (out_reserve(&o, total_bytes + 16) != OK) {
        PyErr_NoMemory();
        goto done;
    }
    const uint32_t *t0s = (const uint32_t *)b0.buf;
    int rc = OK;
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t i = 0; i < nch; i++) {
        size_t before = o.n;
        rc = decode_blob(ptrs[i], lens[i], t0s[i], &s, &o);
        if (rc != OK) {
            bad = i;
            break;
        }
        counts[i] = (int64_t)(o.n - before);
    }
    Py_END_ALLOW_THREADS;
    if (rc != OK) {
        raise_code(rc, bad);
        goto done;
    }
    {
        PyObject *pc = rawbuf_new(counts, (Py_ssize_t)nch * 8);
        counts = NULL;
        size_t n = o.n;
        if (n < o.cap) (void)out_reserve(&o, n);
        PyObject *pt = rawbuf_new(o.ts, (Py_ssize_t)(n * 4));
        o.ts = NULL;
        PyObject *pv = rawbuf_new(o.vb, (Py_ssize_t)(n * 8));
        o.vb = NULL;
        if (pc && pt && pv) res = PyTuple_Pack(3, pc, pt, pv);
        Py_XDECREF(pc);
        Py_XDECREF(pt);
        Py_XDECREF(pv);
    }
done:
    for (Py_ssize_t i = 0; i < nviews; i++) PyBuffer_Release(&views[i]);
    free(views);
    free(ptrs);
    free(lens);
    free(counts);
    free(s.p);
    out_free(&o);
    Py_DECREF(tup);
    PyBuffer_Release(&b0);
    return res;
}

/* ------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"encode", (PyCFunction)(void (*)(void))py_encode, METH_FASTCALL,
     "encode(t0, span_code, ts_u32, values_f64) -> bytes"},
    {"encode_many", (PyCFunction)(void (*)(void))py_encode_many, METH_FASTCALL,
     "encode_many(t0s_u32, span_code, counts_i64, ts_u32, values_f64) -> list[bytes]"},
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_FASTCALL,
     "decode(t0, blob) -> (ts buffer, values buffer)"},
    {"decode_many", (PyCFunction)(void (*)(void))py_decode_many, METH_FASTCALL,
     "decode_many(t0s_u32, blobs) -> (counts buffer, ts buffer, values buffer)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_codec", "Metrictank chunk codec (private; use metrictank.chunk).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__codec(void) {
    if (PyType_Ready(&RawBufType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL) return NULL;
    ChunkError = PyErr_NewExceptionWithDoc(
        "metrictank.chunk.ChunkError",
        "A chunk blob is truncated or corrupt, or the points given to the encoder cannot be stored.",
        PyExc_ValueError, NULL);
    if (ChunkError == NULL || PyModule_AddObjectRef(m, "ChunkError", ChunkError) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RawBufType);
    if (PyModule_AddObject(m, "RawBuf", (PyObject *)&RawBufType) < 0) {
        Py_DECREF(&RawBufType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
