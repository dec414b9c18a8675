/* The common step of Tree.add_many in C: a new leaf under a branch (see tree.py).
 *
 * Why: at a million new series the tree insert was a third of a MetricData's cost, mostly interpreter work
 * around three dict operations per path. Here each path costs its own C calls only: the last dot found, the
 * parent branch looked up through `dir_of` only when it differs from the previous path's (series arrive
 * grouped by parent), the leaf looked up, interned and set to its row.
 *
 * Anything else (the leaf exists: a second row, or a branch that becomes a series too; a path that is not a
 * str) is left to the caller, who applies those in order afterwards. That is the same tree as applying
 * everything in order: a deferred path only ever changes an existing slot, and later paths handled here
 * only create slots that did not exist (a path's rows are kept sorted, so their order does not matter).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* add_new(root, dir_of, paths, rows) -> (added, [deferred indices]) */
static PyObject *add_new(PyObject *self, PyObject *args) {
    PyObject *root, *dir_of, *paths, *rows;
    if (!PyArg_ParseTuple(args, "O!OO!O!", &PyDict_Type, &root, &dir_of, &PyList_Type, &paths, &PyList_Type, &rows))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(paths);
    if (PyList_GET_SIZE(rows) != n) {
        PyErr_SetString(PyExc_ValueError, "paths and rows differ in length");
        return NULL;
    }
    PyObject *deferred = PyList_New(0);
    if (deferred == NULL) return NULL;
    PyObject *prev = NULL; /* dirs of the previous path (NULL: none yet or the root) */
    PyObject *ch = root;
    Py_INCREF(ch);
    int at_root = 1, have = 0;
    Py_ssize_t added = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *path = PyList_GET_ITEM(paths, i), *row = PyList_GET_ITEM(rows, i);
        if (!PyUnicode_CheckExact(path)) goto defer;
        Py_ssize_t len = PyUnicode_GET_LENGTH(path);
        Py_ssize_t dot = PyUnicode_FindChar(path, '.', 0, len, -1);
        if (dot == -2) goto fail;
        if (dot < 0) {
            if (!at_root || !have) {
                Py_SETREF(ch, Py_NewRef(root));
                Py_CLEAR(prev);
                at_root = 1;
                have = 1;
            }
        } else if (!have || at_root || PyUnicode_GET_LENGTH(prev) != dot ||
                   PyUnicode_Tailmatch(path, prev, 0, dot, -1) != 1) {
            PyObject *dirs = PyUnicode_Substring(path, 0, dot);
            if (dirs == NULL) goto fail;
            PyObject *d = PyObject_CallOneArg(dir_of, dirs);
            if (d == NULL) {
                Py_DECREF(dirs);
                goto fail;
            }
            if (!PyDict_CheckExact(d)) {
                Py_DECREF(dirs);
                Py_DECREF(d);
                PyErr_SetString(PyExc_TypeError, "dir_of must return the branch's children dict");
                goto fail;
            }
            Py_SETREF(ch, d);
            Py_XSETREF(prev, dirs);
            at_root = 0;
            have = 1;
        }
        PyObject *last = PyUnicode_Substring(path, dot + 1, len);
        if (last == NULL) goto fail;
        PyObject *child = PyDict_GetItemWithError(ch, last);
        if (child != NULL || PyErr_Occurred()) {
            Py_DECREF(last);
            if (child == NULL) goto fail;
            goto defer;
        }
        PyUnicode_InternInPlace(&last);
        int r = PyDict_SetItem(ch, last, row);
        Py_DECREF(last);
        if (r < 0) goto fail;
        added++;
        continue;
    defer : {
        PyObject *k = PyLong_FromSsize_t(i);
        if (k == NULL || PyList_Append(deferred, k) < 0) {
            Py_XDECREF(k);
            goto fail;
        }
        Py_DECREF(k);
    }
    }
    Py_XDECREF(prev);
    Py_DECREF(ch);
    PyObject *out = Py_BuildValue("(nN)", added, deferred);
    return out;
fail:
    Py_XDECREF(prev);
    Py_DECREF(ch);
    Py_DECREF(deferred);
    return NULL;
}

static PyMethodDef methods[] = {
    {"add_new", add_new, METH_VARARGS,
     "add_new(root, dir_of, paths, rows) -> (added, deferred): new leaves set, the other paths' indices left"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_tree", "Tree insert of new leaves (see _tree.c).", -1,
                                 methods};

PyMODINIT_FUNC PyInit__tree(void) { return PyModule_Create(&mod); }
