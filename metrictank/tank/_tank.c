/* Placeholder: replaced by the tank kernel. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_tank", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__tank(void) { return PyModule_Create(&mod); }
