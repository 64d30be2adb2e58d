/* The direct reader of `streams/codec/direct.py`, in C: the same reads, the same records, without
 * the interpreter's cost per byte and per field (~8 µs of the worker's ~10 µs decode a record).
 *
 * `Reader(spec, unsure)` compiles a schema spec that direct.py builds from an Avro schema:
 *
 *   ("long",) | ("string",) | ("decimal", cache) | ("union", null_index, spec) | ("array", spec)
 *   | ("record", cls, (spec, ...))
 *
 * `cache` is a `decimals.ReadCache` (a dict subclass whose __missing__ converts); `cls` a
 * NamedTuple class with the record's fields in order. The reader then has two methods, the two
 * shapes of direct.py:
 *
 *   reader(data, offset)      -> record    (the body must end exactly at the end of `data`)
 *   reader.body(data, pos)    -> (record, end)
 *
 * Contract, as direct.py's: a fast path, never a second opinion. It reads the canonical,
 * well-formed encoding and raises (`unsure`, or whatever a decimal conversion or UTF-8 decode
 * raises) for anything else: a varint of 10 bytes or more, a negative length, a negative or
 * over-long array count, a union branch byte other than 0 or 2, bytes missing (here: anything read
 * past the end is refused at once, where Python slices short and refuses later), or left over.
 * The caller then decodes the same bytes on the generic path. tests/unit/test_cread.py holds it
 * equal to the Python reader on valid, damaged and random bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_DEPTH 32

typedef enum { K_LONG, K_STRING, K_DECIMAL, K_UNION, K_ARRAY, K_RECORD } Kind;

typedef struct Node {
    Kind kind;
    PyObject *obj;          /* DECIMAL: the cache; RECORD: the class (strong references) */
    int null_index;         /* UNION: the branch that reads null (0 or 1) */
    Py_ssize_t n;           /* RECORD: number of fields; UNION, ARRAY: 1 */
    struct Node **children; /* UNION: the non-null branch; ARRAY: the item; RECORD: the fields */
} Node;

typedef struct {
    PyObject_HEAD
    Node *root;
    PyObject *unsure;
} Reader;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t pos;
} Cur;

/* ---- the spec -------------------------------------------------------------------------------- */

static void node_free(Node *node) {
    if (node == NULL) {
        return;
    }
    if (node->children != NULL) {
        for (Py_ssize_t i = 0; i < node->n; i++) {
            node_free(node->children[i]);
        }
        PyMem_Free(node->children);
    }
    Py_XDECREF(node->obj);
    PyMem_Free(node);
}

static int record_class_ok(PyObject *cls) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        return 0;
    }
    PyTypeObject *t = (PyTypeObject *)cls;
    /* a tuple with nothing more (NamedTuple: __slots__ = ()): its items are all it holds */
    return t->tp_basicsize == PyTuple_Type.tp_basicsize && t->tp_itemsize == PyTuple_Type.tp_itemsize
           && t->tp_dictoffset == 0 && t->tp_weaklistoffset == 0;
}

static Node *node_new(PyObject *spec, int depth);

static Node *node_alloc(Kind kind, Py_ssize_t n) {
    Node *node = PyMem_Calloc(1, sizeof(Node));
    if (node == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    node->kind = kind;
    if (n > 0) {
        node->children = PyMem_Calloc((size_t)n, sizeof(Node *));
        if (node->children == NULL) {
            PyMem_Free(node);
            PyErr_NoMemory();
            return NULL;
        }
        node->n = n;
    }
    return node;
}

static Node *spec_error(Node *node, const char *what) {
    node_free(node);
    if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "bad reader spec: %s", what);
    }
    return NULL;
}

static Node *node_new(PyObject *spec, int depth) {
    if (depth > MAX_DEPTH) {
        return spec_error(NULL, "nested too deep");
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1 || !PyUnicode_Check(PyTuple_GET_ITEM(spec, 0))) {
        return spec_error(NULL, "expected a tuple starting with a kind");
    }
    PyObject *kind = PyTuple_GET_ITEM(spec, 0);
    Py_ssize_t size = PyTuple_GET_SIZE(spec);
    Node *node = NULL;
    if (PyUnicode_CompareWithASCIIString(kind, "long") == 0 && size == 1) {
        return node_alloc(K_LONG, 0);
    }
    if (PyUnicode_CompareWithASCIIString(kind, "string") == 0 && size == 1) {
        return node_alloc(K_STRING, 0);
    }
    if (PyUnicode_CompareWithASCIIString(kind, "decimal") == 0 && size == 2) {
        PyObject *cache = PyTuple_GET_ITEM(spec, 1);
        if (!PyDict_Check(cache)) {
            return spec_error(NULL, "a decimal's cache must be a dict");
        }
        node = node_alloc(K_DECIMAL, 0);
        if (node == NULL) {
            return NULL;
        }
        Py_INCREF(cache);
        node->obj = cache;
        return node;
    }
    if (PyUnicode_CompareWithASCIIString(kind, "union") == 0 && size == 3) {
        long index = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        if (index == -1 && PyErr_Occurred()) {
            return spec_error(NULL, "a union's null index must be an int");
        }
        if (index != 0 && index != 1) {
            return spec_error(NULL, "a union's null index must be 0 or 1");
        }
        node = node_alloc(K_UNION, 1);
        if (node == NULL) {
            return NULL;
        }
        node->null_index = (int)index;
        node->children[0] = node_new(PyTuple_GET_ITEM(spec, 2), depth + 1);
        return node->children[0] == NULL ? spec_error(node, "union branch") : node;
    }
    if (PyUnicode_CompareWithASCIIString(kind, "array") == 0 && size == 2) {
        node = node_alloc(K_ARRAY, 1);
        if (node == NULL) {
            return NULL;
        }
        node->children[0] = node_new(PyTuple_GET_ITEM(spec, 1), depth + 1);
        return node->children[0] == NULL ? spec_error(node, "array item") : node;
    }
    if (PyUnicode_CompareWithASCIIString(kind, "record") == 0 && size == 3) {
        PyObject *cls = PyTuple_GET_ITEM(spec, 1), *fields = PyTuple_GET_ITEM(spec, 2);
        if (!record_class_ok(cls)) {
            return spec_error(NULL, "a record's class must be a tuple subclass without slots (a NamedTuple)");
        }
        if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) < 1) {
            return spec_error(NULL, "a record's fields must be a non-empty tuple");
        }
        node = node_alloc(K_RECORD, PyTuple_GET_SIZE(fields));
        if (node == NULL) {
            return NULL;
        }
        Py_INCREF(cls);
        node->obj = cls;
        for (Py_ssize_t i = 0; i < node->n; i++) {
            node->children[i] = node_new(PyTuple_GET_ITEM(fields, i), depth + 1);
            if (node->children[i] == NULL) {
                return spec_error(node, "record field");
            }
        }
        return node;
    }
    return spec_error(NULL, "unknown kind or wrong arity");
}

/* ---- reading --------------------------------------------------------------------------------- */

static PyObject *read_node(const Node *node, Cur *c, PyObject *unsure);

static int unsure_at(Cur *c, PyObject *unsure, const char *what) {
    PyErr_Format(unsure, "%s at byte %zd", what, c->pos);
    return -1;
}

/* A zig-zag varint of at most 9 bytes (where Python ints and 64-bit ones agree), as read_long. */
static int read_long(Cur *c, int64_t *out, PyObject *unsure) {
    if (c->pos >= c->len) {
        return unsure_at(c, unsure, "data ends");
    }
    uint64_t b = c->buf[c->pos++];
    if (b < 0x80) {
        *out = (int64_t)(b >> 1) ^ -(int64_t)(b & 1);
        return 0;
    }
    uint64_t n = b & 0x7F;
    for (int shift = 7; shift <= 56; shift += 7) {
        if (c->pos >= c->len) {
            return unsure_at(c, unsure, "data ends");
        }
        b = c->buf[c->pos++];
        if (b < 0x80) {
            n |= b << shift;
            *out = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
            return 0;
        }
        n |= (b & 0x7F) << shift;
    }
    return unsure_at(c, unsure, "varint of 10 bytes or more");
}

/* A byte length that fits in what is left: the start of the bytes in *start, their count returned. */
static Py_ssize_t read_size(Cur *c, Py_ssize_t *start, PyObject *unsure) {
    int64_t n;
    if (read_long(c, &n, unsure) < 0) {
        return -1;
    }
    if (n < 0 || n > c->len - c->pos) {
        unsure_at(c, unsure, n < 0 ? "negative length" : "length past the end");
        return -1;
    }
    *start = c->pos;
    c->pos += (Py_ssize_t)n;
    return (Py_ssize_t)n;
}

static PyObject *read_decimal(const Node *node, Cur *c, PyObject *unsure) {
    Py_ssize_t start, n = read_size(c, &start, unsure);
    if (n < 0) {
        return NULL;
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)c->buf + start, n);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *d = PyDict_GetItemWithError(node->obj, raw); /* borrowed; a hit is the common case */
    if (d != NULL) {
        Py_INCREF(d);
    } else if (!PyErr_Occurred()) {
        d = PyObject_GetItem(node->obj, raw); /* the cache's __missing__ converts (or raises) */
    }
    Py_DECREF(raw);
    return d;
}

static PyObject *read_array(const Node *node, Cur *c, PyObject *unsure) {
    PyObject *items = PyList_New(0);
    if (items == NULL) {
        return NULL;
    }
    int64_t n;
    if (read_long(c, &n, unsure) < 0) {
        goto fail;
    }
    while (n) {
        if (n < 0 || n > c->len - c->pos) { /* a sized block, or more items than bytes left */
            unsure_at(c, unsure, "array block");
            goto fail;
        }
        for (int64_t i = 0; i < n; i++) {
            PyObject *v = read_node(node->children[0], c, unsure);
            if (v == NULL) {
                goto fail;
            }
            int err = PyList_Append(items, v);
            Py_DECREF(v);
            if (err < 0) {
                goto fail;
            }
        }
        if (read_long(c, &n, unsure) < 0) {
            goto fail;
        }
    }
    PyObject *out = PyList_AsTuple(items);
    Py_DECREF(items);
    return out;
fail:
    Py_DECREF(items);
    return NULL;
}

static PyObject *read_record(const Node *node, Cur *c, PyObject *unsure) {
    PyTypeObject *cls = (PyTypeObject *)node->obj;
    /* as tuple.__new__(cls, values): a tuple of the subclass, items set as they are read (a tuple
       being filled holds NULLs, which its traversal and deallocation accept) */
    PyObject *out = cls->tp_alloc(cls, node->n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < node->n; i++) {
        PyObject *v = read_node(node->children[i], c, unsure);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, v);
    }
    return out;
}

static PyObject *read_node(const Node *node, Cur *c, PyObject *unsure) {
    switch (node->kind) {
    case K_LONG: {
        int64_t v;
        return read_long(c, &v, unsure) < 0 ? NULL : PyLong_FromLongLong(v);
    }
    case K_STRING: {
        Py_ssize_t start, n = read_size(c, &start, unsure);
        return n < 0 ? NULL : PyUnicode_DecodeUTF8((const char *)c->buf + start, n, NULL);
    }
    case K_DECIMAL:
        return read_decimal(node, c, unsure);
    case K_UNION: {
        if (c->pos >= c->len) {
            unsure_at(c, unsure, "data ends");
            return NULL;
        }
        unsigned char b = c->buf[c->pos];
        if (b != 0 && b != 2) { /* the branch index: one byte, 0 or 1 */
            unsure_at(c, unsure, "union branch");
            return NULL;
        }
        c->pos++;
        if ((b >> 1) == node->null_index) {
            Py_RETURN_NONE;
        }
        return read_node(node->children[0], c, unsure);
    }
    case K_ARRAY:
        return read_array(node, c, unsure);
    case K_RECORD:
        return read_record(node, c, unsure);
    }
    PyErr_SetString(PyExc_SystemError, "_cread: unknown node kind");
    return NULL;
}

/* ---- the Reader type ------------------------------------------------------------------------- */

static int cursor(PyObject *data, Py_ssize_t pos, Cur *c) {
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, got %.100s", Py_TYPE(data)->tp_name);
        return -1;
    }
    c->buf = (const unsigned char *)PyBytes_AS_STRING(data);
    c->len = PyBytes_GET_SIZE(data);
    if (pos < 0 || pos > c->len) {
        PyErr_Format(PyExc_IndexError, "position %zd outside the data (%zd bytes)", pos, c->len);
        return -1;
    }
    c->pos = pos;
    return 0;
}

static PyObject *Reader_call(Reader *self, PyObject *args, PyObject *kwargs) {
    PyObject *data;
    Py_ssize_t offset;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Reader takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "On:Reader", &data, &offset)) {
        return NULL;
    }
    Cur c;
    if (cursor(data, offset, &c) < 0) {
        return NULL;
    }
    PyObject *out = read_node(self->root, &c, self->unsure);
    if (out != NULL && c.pos != c.len) {
        Py_DECREF(out);
        unsure_at(&c, self->unsure, "bytes left over");
        return NULL;
    }
    return out;
}

static PyObject *Reader_body(Reader *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "body(data, pos) takes 2 arguments");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Cur c;
    if (cursor(args[0], pos, &c) < 0) {
        return NULL;
    }
    PyObject *out = read_node(self->root, &c, self->unsure);
    if (out == NULL) {
        return NULL;
    }
    PyObject *end = PyLong_FromSsize_t(c.pos);
    if (end == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, out, end);
    Py_DECREF(out);
    Py_DECREF(end);
    return pair;
}

static PyObject *Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *spec, *unsure;
    static char *names[] = {"spec", "unsure", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:Reader", names, &spec, &unsure)) {
        return NULL;
    }
    if (!PyExceptionClass_Check(unsure)) {
        PyErr_SetString(PyExc_TypeError, "unsure must be an exception class");
        return NULL;
    }
    Node *root = node_new(spec, 0);
    if (root == NULL) {
        return NULL;
    }
    if (root->kind != K_RECORD) {
        node_free(root);
        PyErr_SetString(PyExc_ValueError, "bad reader spec: the root must be a record");
        return NULL;
    }
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        node_free(root);
        return NULL;
    }
    self->root = root;
    Py_INCREF(unsure);
    self->unsure = unsure;
    return (PyObject *)self;
}

static void Reader_dealloc(Reader *self) {
    node_free(self->root);
    Py_XDECREF(self->unsure);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"body", (PyCFunction)(void (*)(void))Reader_body, METH_FASTCALL,
     "body(data, pos) -> (record, end): one body among others, e.g. an entry of a container block"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.codec._cread.Reader",
    .tp_doc = "Reader(spec, unsure): reader(data, offset) -> record, the whole of data from offset on.",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_call = (ternaryfunc)Reader_call,
    .tp_methods = Reader_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams.codec._cread",
    .m_doc = "The direct Avro reader of streams/codec/direct.py, in C (see the source's head comment).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__cread(void) {
    if (PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
