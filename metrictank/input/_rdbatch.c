/*
 * metrictank.input._rdbatch: a librdkafka consumer that hands over a whole batch of messages as a few flat
 * buffers (payloads concatenated, lengths, partitions, offsets, timestamps) instead of one Python object per
 * message.
 *
 * Why: with confluent_kafka's consume(), ~60% of the main thread's time at 100k+ series went into building,
 * reading and freeing one `Message` per point (see docs/benchmarks.md). Here librdkafka's batch call, the copy
 * of the payloads and the release of the messages all run with the GIL released, so they can run on the
 * second core while the main loop ingests the previous batch.
 *
 * librdkafka itself is the copy that confluent_kafka ships (or links): the Python side passes the path of an
 * already loaded object that depends on it (confluent_kafka's extension), and the functions used here are
 * looked up with dlsym through that object's dependencies. The declarations below are librdkafka's public,
 * ABI-stable API (rdkafka.h): the message and topic-partition-list structs and the functions named in
 * `load()`. No callback of this handle calls into Python: errors are recorded in C and read by `errors()`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ librdkafka's public API (subset) */

typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_queue_s rd_kafka_queue_t;
typedef struct rd_kafka_topic_s rd_kafka_topic_t;

typedef struct {
    int err;
    rd_kafka_topic_t *rkt;
    int32_t partition;
    void *payload;
    size_t len;
    void *key;
    size_t key_len;
    int64_t offset;
    void *_private;
} rdk_message_t;

typedef struct {
    char *topic;
    int32_t partition;
    int64_t offset;
    void *metadata;
    size_t metadata_size;
    void *opaque;
    int err;
    void *_private;
} rdk_tp_t;

typedef struct {
    int cnt;
    int size;
    rdk_tp_t *elems;
} rdk_tplist_t;

#define RDK_CONSUMER 1
#define RDK_CONF_OK 0
#define RDK_ERR_PARTITION_EOF (-191)

typedef void (*error_cb_t)(rd_kafka_t *, int, const char *, void *);

static struct {
    int loaded;
    int (*version)(void);
    const char *(*version_str)(void);
    rd_kafka_conf_t *(*conf_new)(void);
    int (*conf_set)(rd_kafka_conf_t *, const char *, const char *, char *, size_t);
    void (*conf_destroy)(rd_kafka_conf_t *);
    void (*conf_set_error_cb)(rd_kafka_conf_t *, error_cb_t);
    void (*conf_set_opaque)(rd_kafka_conf_t *, void *);
    rd_kafka_t *(*new_)(int, rd_kafka_conf_t *, char *, size_t);
    void (*destroy)(rd_kafka_t *);
    int (*poll_set_consumer)(rd_kafka_t *);
    rd_kafka_queue_t *(*queue_get_consumer)(rd_kafka_t *);
    void (*queue_destroy)(rd_kafka_queue_t *);
    Py_ssize_t (*consume_batch_queue)(rd_kafka_queue_t *, int, rdk_message_t **, size_t);
    void (*message_destroy)(rdk_message_t *);
    int64_t (*message_timestamp)(const rdk_message_t *, int *);
    const char *(*err2str)(int);
    rdk_tplist_t *(*tplist_new)(int);
    rdk_tp_t *(*tplist_add)(rdk_tplist_t *, const char *, int32_t);
    void (*tplist_destroy)(rdk_tplist_t *);
    int (*assign)(rd_kafka_t *, const rdk_tplist_t *);
    int (*position)(rd_kafka_t *, rdk_tplist_t *);
    int (*resume_partitions)(rd_kafka_t *, rdk_tplist_t *);
    int (*get_watermark_offsets)(rd_kafka_t *, const char *, int32_t, int64_t *, int64_t *);
    int (*query_watermark_offsets)(rd_kafka_t *, const char *, int32_t, int64_t *, int64_t *, int);
    int (*consumer_close)(rd_kafka_t *);
} R;

static int resolve(void *h, const char *name, void **out) {
    *out = dlsym(h, name);
    if (*out == NULL) {
        PyErr_Format(PyExc_OSError, "librdkafka: symbol %s not found", name);
        return -1;
    }
    return 0;
}

#define RESOLVE(field, name) \
    if (resolve(h, name, (void **)&R.field) < 0) return NULL

static PyObject *mod_load(PyObject *mod, PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s", &path)) return NULL;
    if (!R.loaded) {
        /* RTLD_NOLOAD: only an object the process has loaded already (it keeps it loaded) */
        void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (h == NULL) h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) return PyErr_Format(PyExc_OSError, "cannot open %s: %s", path, dlerror());
        RESOLVE(version, "rd_kafka_version");
        RESOLVE(version_str, "rd_kafka_version_str");
        RESOLVE(conf_new, "rd_kafka_conf_new");
        RESOLVE(conf_set, "rd_kafka_conf_set");
        RESOLVE(conf_destroy, "rd_kafka_conf_destroy");
        RESOLVE(conf_set_error_cb, "rd_kafka_conf_set_error_cb");
        RESOLVE(conf_set_opaque, "rd_kafka_conf_set_opaque");
        RESOLVE(new_, "rd_kafka_new");
        RESOLVE(destroy, "rd_kafka_destroy");
        RESOLVE(poll_set_consumer, "rd_kafka_poll_set_consumer");
        RESOLVE(queue_get_consumer, "rd_kafka_queue_get_consumer");
        RESOLVE(queue_destroy, "rd_kafka_queue_destroy");
        RESOLVE(consume_batch_queue, "rd_kafka_consume_batch_queue");
        RESOLVE(message_destroy, "rd_kafka_message_destroy");
        RESOLVE(message_timestamp, "rd_kafka_message_timestamp");
        RESOLVE(err2str, "rd_kafka_err2str");
        RESOLVE(tplist_new, "rd_kafka_topic_partition_list_new");
        RESOLVE(tplist_add, "rd_kafka_topic_partition_list_add");
        RESOLVE(tplist_destroy, "rd_kafka_topic_partition_list_destroy");
        RESOLVE(assign, "rd_kafka_assign");
        RESOLVE(position, "rd_kafka_position");
        RESOLVE(resume_partitions, "rd_kafka_resume_partitions");
        RESOLVE(get_watermark_offsets, "rd_kafka_get_watermark_offsets");
        RESOLVE(query_watermark_offsets, "rd_kafka_query_watermark_offsets");
        RESOLVE(consumer_close, "rd_kafka_consumer_close");
        /* the message and partition-list layouts above are those of librdkafka 1.x and 2.x */
        if (R.version() < 0x01000000) {
            return PyErr_Format(PyExc_OSError, "librdkafka %s is too old (1.0 or newer needed)", R.version_str());
        }
        R.loaded = 1;
    }
    return PyUnicode_FromString(R.version_str());
}

/* ------------------------------------------------------------------ the consumer */

#define ERR_KEEP 16

typedef struct {
    PyObject_HEAD
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int busy;                  /* calls in progress with the GIL released (guarded by the GIL) */
    pthread_mutex_t err_lock;  /* error_cb runs on whichever thread serves the queue, without the GIL */
    long long client_errors;   /* errors reported through error_cb (transport, all brokers down, ...) */
    int err_code[ERR_KEEP];
    char err_text[ERR_KEEP][160];
    int err_n;                 /* recorded since the last errors() call, at most ERR_KEEP kept */
} BatchConsumer;

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    BatchConsumer *self = (BatchConsumer *)opaque;
    pthread_mutex_lock(&self->err_lock);
    self->client_errors++;
    if (self->err_n < ERR_KEEP) {
        self->err_code[self->err_n] = err;
        snprintf(self->err_text[self->err_n], sizeof self->err_text[0], "%s", reason ? reason : "");
        self->err_n++;
    }
    pthread_mutex_unlock(&self->err_lock);
}

static int BC_init(BatchConsumer *self, PyObject *args, PyObject *kw) {
    PyObject *conf_dict;
    static char *kwlist[] = {"config", NULL};
    char errstr[512];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!", kwlist, &PyDict_Type, &conf_dict)) return -1;
    if (!R.loaded) {
        PyErr_SetString(PyExc_RuntimeError, "librdkafka is not loaded: call load() first");
        return -1;
    }
    if (self->rk != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    rd_kafka_conf_t *conf = R.conf_new();
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(conf_dict, &pos, &key, &value)) {
        PyObject *ks = PyObject_Str(key), *vs = NULL;
        if (ks == NULL) goto fail;
        if (PyBool_Check(value)) {
            vs = PyUnicode_FromString(value == Py_True ? "true" : "false");
        } else {
            vs = PyObject_Str(value);
        }
        if (vs == NULL) {
            Py_DECREF(ks);
            goto fail;
        }
        const char *k = PyUnicode_AsUTF8(ks), *v = PyUnicode_AsUTF8(vs);
        if (k == NULL || v == NULL || R.conf_set(conf, k, v, errstr, sizeof errstr) != RDK_CONF_OK) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "kafka option %s: %s", k, errstr);
            Py_DECREF(ks);
            Py_DECREF(vs);
            goto fail;
        }
        Py_DECREF(ks);
        Py_DECREF(vs);
    }
    R.conf_set_error_cb(conf, on_error);
    R.conf_set_opaque(conf, self);
    rd_kafka_t *rk = R.new_(RDK_CONSUMER, conf, errstr, sizeof errstr); /* owns conf on success */
    if (rk == NULL) {
        PyErr_Format(PyExc_RuntimeError, "cannot create the Kafka consumer: %s", errstr);
        goto fail;
    }
    /* the main queue (errors) is served by the consumer queue, as confluent_kafka's Consumer does */
    R.poll_set_consumer(rk);
    self->rk = rk;
    self->q = R.queue_get_consumer(rk);
    return 0;
fail:
    R.conf_destroy(conf);
    return -1;
}

static int check_open(BatchConsumer *self) {
    if (self->rk == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "consumer is closed");
        return -1;
    }
    return 0;
}

/* A list of (topic, partition[, offset]) tuples as a librdkafka partition list. */
static rdk_tplist_t *to_tplist(PyObject *seq, int with_offset) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of (topic, partition) tuples");
    if (fast == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    rdk_tplist_t *l = R.tplist_new((int)(n > 0 ? n : 1));
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *topic;
        int partition;
        long long offset = -1001;
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        int ok = with_offset ? PyArg_ParseTuple(item, "siL", &topic, &partition, &offset)
                             : PyArg_ParseTuple(item, "si", &topic, &partition);
        if (!ok) {
            R.tplist_destroy(l);
            Py_DECREF(fast);
            return NULL;
        }
        rdk_tp_t *tp = R.tplist_add(l, topic, partition);
        tp->offset = offset;
    }
    Py_DECREF(fast);
    return l;
}

static PyObject *raise_kafka(int err, const char *what) {
    return PyErr_Format(PyExc_RuntimeError, "%s failed: %s", what, R.err2str(err));
}

static PyObject *BC_assign(BatchConsumer *self, PyObject *arg) {
    if (check_open(self) < 0) return NULL;
    rdk_tplist_t *l = to_tplist(arg, 1);
    if (l == NULL) return NULL;
    int err;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    err = R.assign(self->rk, l);
    Py_END_ALLOW_THREADS
    self->busy--;
    R.tplist_destroy(l);
    if (err) return raise_kafka(err, "assign");
    Py_RETURN_NONE;
}

static PyObject *BC_resume(BatchConsumer *self, PyObject *arg) {
    if (check_open(self) < 0) return NULL;
    rdk_tplist_t *l = to_tplist(arg, 0);
    if (l == NULL) return NULL;
    int err = R.resume_partitions(self->rk, l);
    R.tplist_destroy(l);
    if (err) return raise_kafka(err, "resume");
    Py_RETURN_NONE;
}

/* The next offset to consume per (topic, partition), -1001 (invalid) when nothing was consumed yet. */
static PyObject *BC_position(BatchConsumer *self, PyObject *arg) {
    if (check_open(self) < 0) return NULL;
    rdk_tplist_t *l = to_tplist(arg, 0);
    if (l == NULL) return NULL;
    int err = R.position(self->rk, l);
    if (err) {
        R.tplist_destroy(l);
        return raise_kafka(err, "position");
    }
    PyObject *out = PyList_New(l->cnt);
    for (int i = 0; out != NULL && i < l->cnt; i++) {
        PyObject *o = PyLong_FromLongLong(l->elems[i].offset);
        if (o == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, o);
    }
    R.tplist_destroy(l);
    return out;
}

/* (low, high) watermarks: cached from fetch responses when timeout_ms < 0, else asked from the broker. */
static PyObject *BC_watermarks(BatchConsumer *self, PyObject *args) {
    const char *topic;
    int partition, timeout_ms = -1, err;
    int64_t low = -1001, high = -1001;
    if (!PyArg_ParseTuple(args, "si|i", &topic, &partition, &timeout_ms)) return NULL;
    if (check_open(self) < 0) return NULL;
    if (timeout_ms < 0) {
        err = R.get_watermark_offsets(self->rk, topic, partition, &low, &high);
    } else {
        self->busy++;
        Py_BEGIN_ALLOW_THREADS
        err = R.query_watermark_offsets(self->rk, topic, partition, &low, &high, timeout_ms);
        Py_END_ALLOW_THREADS
        self->busy--;
    }
    if (err) return raise_kafka(err, "watermark query");
    return Py_BuildValue("LL", (long long)low, (long long)high);
}

/*
 * consume(max_messages, timeout_ms) -> (payloads, lengths, partitions, offsets, timestamps, n_errors, errors, last)
 *
 * payloads: bytes, every data message's value concatenated in arrival order (tombstones are empty);
 * lengths / partitions: int32 arrays as bytes; offsets / timestamps (ms, -1 unknown): int64 as bytes;
 * n_errors: error events among the messages (partition EOF excluded); errors: the first 16 of them as
 * [(code, partition, offset, text)]; last: [(partition, last offset handed over)] in order of appearance.
 */
static PyObject *BC_consume(BatchConsumer *self, PyObject *args) {
    int max_messages, timeout_ms;
    if (!PyArg_ParseTuple(args, "ii", &max_messages, &timeout_ms)) return NULL;
    if (check_open(self) < 0) return NULL;
    if (max_messages < 1 || max_messages > 1000000)
        return PyErr_Format(PyExc_ValueError, "max_messages must be 1..1000000, not %d", max_messages);
    rdk_message_t **msgs = malloc((size_t)max_messages * sizeof *msgs);
    if (msgs == NULL) return PyErr_NoMemory();

    Py_ssize_t n, good = 0, nerr = 0;
    size_t total = 0;
    char *buf = NULL;
    int32_t *lens = NULL, *parts = NULL;
    int64_t *offs = NULL, *ts = NULL;
    int err_code[ERR_KEEP], err_part[ERR_KEEP];
    int64_t err_off[ERR_KEEP];
    char err_text[ERR_KEEP][160];
    int oom = 0;
    /* the last offset handed over per partition (messages of one partition arrive in offset order) */
    enum { LAST_KEEP = 256 };
    int32_t last_part[LAST_KEEP];
    int64_t last_off[LAST_KEEP];
    int nlast = 0, cur = -1, last_overflow = 0;

    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    n = R.consume_batch_queue(self->q, timeout_ms, msgs, (size_t)max_messages);
    if (n > 0) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (msgs[i]->err == 0) {
                good++;
                total += msgs[i]->payload ? msgs[i]->len : 0;
            }
        }
        buf = malloc(total ? total : 1);
        lens = malloc((size_t)(good ? good : 1) * sizeof *lens);
        parts = malloc((size_t)(good ? good : 1) * sizeof *parts);
        offs = malloc((size_t)(good ? good : 1) * sizeof *offs);
        ts = malloc((size_t)(good ? good : 1) * sizeof *ts);
        oom = !buf || !lens || !parts || !offs || !ts;
        size_t at = 0;
        Py_ssize_t j = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            rdk_message_t *m = msgs[i];
            if (!oom && m->err == 0) {
                size_t len = m->payload ? m->len : 0;
                if (len) memcpy(buf + at, m->payload, len);
                at += len;
                lens[j] = (int32_t)len;
                parts[j] = m->partition;
                offs[j] = m->offset;
                ts[j] = R.message_timestamp(m, NULL);
                j++;
                if (cur < 0 || last_part[cur] != m->partition) {
                    for (cur = 0; cur < nlast && last_part[cur] != m->partition; cur++) {
                    }
                    if (cur == nlast) {
                        if (nlast < LAST_KEEP)
                            last_part[nlast++] = m->partition;
                        else
                            cur = -1;
                    }
                }
                if (cur >= 0)
                    last_off[cur] = m->offset;
                else
                    last_overflow = 1;
            } else if (m->err != 0 && m->err != RDK_ERR_PARTITION_EOF) {
                if (nerr < ERR_KEEP) {
                    err_code[nerr] = m->err;
                    err_part[nerr] = m->partition;
                    err_off[nerr] = m->offset;
                    /* an error event's payload, when set, is its text */
                    if (m->payload && m->len)
                        snprintf(err_text[nerr], sizeof err_text[0], "%.*s", (int)m->len, (const char *)m->payload);
                    else
                        snprintf(err_text[nerr], sizeof err_text[0], "%s", R.err2str(m->err));
                }
                nerr++;
            }
            R.message_destroy(m);
        }
    }
    Py_END_ALLOW_THREADS
    self->busy--;
    free(msgs);

    PyObject *out = NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_RuntimeError, "consume failed (the consumer queue was destroyed?)");
    } else if (oom) {
        PyErr_NoMemory();
    } else {
        PyObject *errors = PyList_New(0);
        for (Py_ssize_t i = 0; errors != NULL && i < nerr && i < ERR_KEEP; i++) {
            PyObject *e = Py_BuildValue("iiLs", err_code[i], err_part[i], (long long)err_off[i], err_text[i]);
            if (e == NULL || PyList_Append(errors, e) < 0) Py_CLEAR(errors);
            Py_XDECREF(e);
        }
        /* None: more partitions in one batch than kept (the caller then asks the client for positions) */
        PyObject *last = last_overflow ? (Py_INCREF(Py_None), Py_None) : PyList_New(nlast);
        for (int i = 0; last != NULL && last != Py_None && i < nlast; i++) {
            PyObject *e = Py_BuildValue("iL", last_part[i], (long long)last_off[i]);
            if (e == NULL) {
                Py_CLEAR(last);
                break;
            }
            PyList_SET_ITEM(last, i, e);
        }
        if (last == NULL) Py_CLEAR(errors);
        if (errors != NULL) {
            /* y# turns a NULL pointer into None: an empty batch has no buffers */
            static const char none[1] = {0};
            out = Py_BuildValue("(y#y#y#y#y#nNN)", buf ? buf : none, (Py_ssize_t)total,
                                lens ? (char *)lens : none, good * (Py_ssize_t)sizeof(int32_t),
                                parts ? (char *)parts : none, good * (Py_ssize_t)sizeof(int32_t),
                                offs ? (char *)offs : none, good * (Py_ssize_t)sizeof(int64_t),
                                ts ? (char *)ts : none, good * (Py_ssize_t)sizeof(int64_t), nerr, errors, last);
        } else {
            Py_XDECREF(last);
        }
    }
    free(buf);
    free(lens);
    free(parts);
    free(offs);
    free(ts);
    return out;
}

/* (errors reported by the client since it started, [(code, text)] since the last call, at most 16) */
static PyObject *BC_errors(BatchConsumer *self, PyObject *unused) {
    (void)unused;
    pthread_mutex_lock(&self->err_lock);
    long long count = self->client_errors;
    int k = self->err_n;
    int codes[ERR_KEEP];
    char texts[ERR_KEEP][160];
    memcpy(codes, self->err_code, sizeof codes);
    memcpy(texts, self->err_text, sizeof texts);
    self->err_n = 0;
    pthread_mutex_unlock(&self->err_lock);
    PyObject *recent = PyList_New(k);
    for (int i = 0; recent != NULL && i < k; i++) {
        PyObject *e = Py_BuildValue("is", codes[i], texts[i]);
        if (e == NULL) {
            Py_CLEAR(recent);
            break;
        }
        PyList_SET_ITEM(recent, i, e);
    }
    if (recent == NULL) return NULL;
    return Py_BuildValue("LN", count, recent);
}

static void shutdown_handle(BatchConsumer *self) {
    rd_kafka_t *rk = self->rk;
    rd_kafka_queue_t *q = self->q;
    self->rk = NULL;
    self->q = NULL;
    Py_BEGIN_ALLOW_THREADS
    R.consumer_close(rk);
    R.queue_destroy(q);
    R.destroy(rk);
    Py_END_ALLOW_THREADS
}

static PyObject *BC_close(BatchConsumer *self, PyObject *unused) {
    (void)unused;
    if (self->rk == NULL) Py_RETURN_NONE;
    if (self->busy) {
        /* another thread is inside a call on this handle: closing now would free it under that call */
        PyErr_SetString(PyExc_RuntimeError, "close() while another thread is consuming; stop it first");
        return NULL;
    }
    shutdown_handle(self);
    Py_RETURN_NONE;
}

static PyObject *BC_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    (void)args;
    (void)kw;
    BatchConsumer *self = (BatchConsumer *)type->tp_alloc(type, 0);
    if (self != NULL) pthread_mutex_init(&self->err_lock, NULL);
    return (PyObject *)self;
}

static void BC_dealloc(BatchConsumer *self) {
    if (self->rk != NULL) shutdown_handle(self); /* busy is 0: a call in progress holds a reference */
    pthread_mutex_destroy(&self->err_lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *BC_closed(BatchConsumer *self, void *unused) {
    (void)unused;
    return PyBool_FromLong(self->rk == NULL);
}

static PyMethodDef BC_methods[] = {
    {"assign", (PyCFunction)BC_assign, METH_O, "assign([(topic, partition, offset), ...])"},
    {"resume", (PyCFunction)BC_resume, METH_O, "resume([(topic, partition), ...])"},
    {"position", (PyCFunction)BC_position, METH_O, "position([(topic, partition), ...]) -> [next offset]"},
    {"watermarks", (PyCFunction)BC_watermarks, METH_VARARGS,
     "watermarks(topic, partition, timeout_ms=-1) -> (low, high); cached when timeout_ms < 0"},
    {"consume", (PyCFunction)BC_consume, METH_VARARGS,
     "consume(max_messages, timeout_ms) -> (payloads, lengths, partitions, offsets, timestamps, n_errors, errors, last)"},
    {"errors", (PyCFunction)BC_errors, METH_NOARGS, "errors() -> (count, [(code, text)] since last call)"},
    {"close", (PyCFunction)BC_close, METH_NOARGS, "close the consumer"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef BC_getset[] = {
    {"closed", (getter)BC_closed, NULL, "whether close() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchConsumerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "metrictank.input._rdbatch.BatchConsumer",
    .tp_basicsize = sizeof(BatchConsumer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A librdkafka consumer returning whole batches as flat buffers (see the module docstring).",
    .tp_new = BC_new,
    .tp_init = (initproc)BC_init,
    .tp_dealloc = (destructor)BC_dealloc,
    .tp_methods = BC_methods,
    .tp_getset = BC_getset,
};

static PyMethodDef mod_methods[] = {
    {"load", mod_load, METH_VARARGS,
     "load(path) -> librdkafka version: resolve librdkafka through an object that depends on it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "metrictank.input._rdbatch",
    "Whole-batch Kafka consumption over librdkafka (see _rdbatch.c).", -1, mod_methods,
};

PyMODINIT_FUNC PyInit__rdbatch(void) {
    if (PyType_Ready(&BatchConsumerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL) return NULL;
    Py_INCREF(&BatchConsumerType);
    if (PyModule_AddObject(m, "BatchConsumer", (PyObject *)&BatchConsumerType) < 0) {
        Py_DECREF(&BatchConsumerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
