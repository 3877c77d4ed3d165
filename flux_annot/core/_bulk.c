/* _bulk.c - flux_annot.core._bulk: JobTable.annotate_many's list of patches
 * handed to the C core without joining them.
 *
 * cffi passes bytes, never Python objects, so a list of patches had to be
 * joined into one buffer in Python first (a copy of every patch and a
 * pass over them all, about as long as applying them). This module reads
 * the list itself: each patch's bytes are passed to fa_table_apply_spans
 * where they lie. The table and the limits are the cffi objects of
 * core.JobTable, passed as their addresses (core.py owns them and keeps
 * them alive across the call). The GIL is held for the whole call, as for
 * every call into the core (flux_annot/core/_gen_core.py): no other thread can
 * change the list or the table meanwhile, and no Python code runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fa.h"

/* Patches handed to the core per call: spans on the stack, no allocation. */
#define CHUNK 256

/* apply(table, limits, ids, patches) -> (rc, nchanged, failed_index) or None
 *
 * table, limits: addresses of an fa_table and an fa_limits (borrowed);
 * ids: a buffer of native uint64 (array('Q')), as many as patches;
 * patches: a list or tuple. None when an item is not exactly bytes: then
 * nothing was applied (the caller converts and calls again). Otherwise rc
 * is 0, or -1 with the error in the table's ctx and failed_index the
 * patch it stopped at (the earlier ones stay applied, as in
 * fa_table_apply_spans). TypeError/ValueError for arguments of the wrong
 * shape, before anything is applied. */
static PyObject *bulk_apply (PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4)
        return PyErr_Format (PyExc_TypeError, "apply() takes 4 arguments (%zd given)", nargs);
    unsigned long long taddr = PyLong_AsUnsignedLongLong (args[0]);
    unsigned long long laddr = PyLong_AsUnsignedLongLong (args[1]);
    if (PyErr_Occurred ())
        return NULL;
    if (!taddr || !laddr)
        return PyErr_Format (PyExc_ValueError, "apply(): a null table or limits");
    PyObject *seq = args[3];
    if (!PyList_CheckExact (seq) && !PyTuple_CheckExact (seq))
        return PyErr_Format (PyExc_TypeError, "apply(): patches must be a list or a tuple");
    Py_ssize_t n = PySequence_Fast_GET_SIZE (seq);
    PyObject **items = PySequence_Fast_ITEMS (seq);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyBytes_CheckExact (items[i]))
            Py_RETURN_NONE;
    Py_buffer ids;
    if (PyObject_GetBuffer (args[2], &ids, PyBUF_SIMPLE) < 0)
        return NULL;
    if (ids.len != n * (Py_ssize_t)sizeof (uint64_t)) {
        PyBuffer_Release (&ids);
        return PyErr_Format (PyExc_ValueError, "apply(): %zd bytes of ids for %zd patches",
                             ids.len, n);
    }
    fa_table *t = (fa_table *)(uintptr_t)taddr;
    const fa_limits *lim = (const fa_limits *)(uintptr_t)laddr;
    const uint64_t *idv = ids.buf;
    fa_span spans[CHUNK];
    size_t changed = 0, failed = 0;
    int rc = 0;
    for (Py_ssize_t at = 0; at < n && rc == 0; at += CHUNK) {
        size_t m = (size_t)(n - at < CHUNK ? n - at : CHUNK), nch = 0;
        for (size_t i = 0; i < m; i++) {
            PyObject *b = items[at + (Py_ssize_t)i];
            spans[i].p = PyBytes_AS_STRING (b);
            spans[i].n = (size_t)PyBytes_GET_SIZE (b);
        }
        rc = fa_table_apply_spans (t, idv + at, spans, m, lim, &nch, &failed);
        changed += nch;
        if (rc < 0)
            failed += (size_t)at;
    }
    PyBuffer_Release (&ids);
    return Py_BuildValue ("(inn)", rc, (Py_ssize_t)changed, (Py_ssize_t)failed);
}

static PyMethodDef bulk_methods[] = {
    {"apply", (PyCFunction)(void (*) (void))bulk_apply, METH_FASTCALL,
     "apply(table, limits, ids, patches) -> (rc, nchanged, failed_index) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef bulk_module = {
    PyModuleDef_HEAD_INIT, "_bulk",
    "annotate_many's patches handed to the C core where they lie", -1, bulk_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bulk (void)
{
    return PyModule_Create (&bulk_module);
}
