/* The engine's two per-event costs in C: event ids and event construction, the twins of
 * `streams/core/events.py` (which stays interpreted and picks these only while the native build
 * runs, `streams._native`). Neither decides anything: each either gives exactly what its Python
 * twin gives or hands the call to it.
 *
 * IdDigest(fallback, arity=-1) -- `event_id(*parts)`: the BLAKE2b-128 hex digest (RFC 7693, keyless,
 * digest length 16, implemented below) of the parts' text joined with "\x1f". A part that is an
 * exact str (its UTF-8), an exact int within 64 bits (its decimal digits) or None (nothing) is
 * written here; a call with any other part (a Decimal, a str or int subclass, a bool, an int
 * beyond 64 bits, a str with a lone surrogate), with keywords, or with a count other than `arity`
 * (when >= 0) is `fallback(*args, **kwargs)` instead: the Python function, whose text and errors
 * are the reference. ~0.2 instead of ~1.8 µs an episode id.
 *
 *   digest(part, ...) -> str (32 hex digits)
 *   blake2b_128_hex(data) -> str   hashlib.blake2b(data, digest_size=16).hexdigest(), for the tests
 *
 * set_checksum(positions, keys) -- `state.checksum(positions)`, the witness sweep's set checksum:
 * for each non-zero quantity, the symbol's 64-bit key (`keys[symbol]`, an int) xor the quantity's
 * hash (`hash(qty)`, as its 64-bit two's complement) through the splitmix64 finalizer, summed modulo
 * 2**64. None, to have the Python twin answer, when a symbol has no key yet (the twin makes it) or
 * a key isn't an int below 2**64. ~0.1 instead of ~1 µs a position (compiled, the twin's 64-bit
 * arithmetic is on boxed ints).
 *
 * SlotBuilder(cls, names) -- `cls(*values)` for a frozen slots dataclass whose every field is
 * required and set as given (events.py's `fast_constructor` decides which classes qualify): a
 * fresh instance from `cls->tp_alloc` (no __init__, whose `object.__setattr__` per field is the
 * cost) with each value stored, as a new reference, at the offset of the field's slot, read from
 * the class's own member descriptor. The constructor refuses (TypeError) any layout it can't fill
 * completely: not a type, a custom __new__, a __dict__ or __weakref__ or variable size, a name whose
 * descriptor isn't a writable object slot of `cls` itself, or slots other than exactly `names`. A
 * call with keywords or the wrong count is `cls(*args, **kwargs)`, whose error names the class.
 * ~0.15 instead of ~1.1 µs a 22-field event.
 *
 *   builder(value, ...) -> instance of cls, equal to cls(value, ...)
 *
 * tests/unit/test_cevents.py holds both equal to their twins (Hypothesis) and counts references.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- BLAKE2b (RFC 7693), keyless, digest length 16 -------------------------------------------- */

static const uint64_t B2_IV[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL,
};

static const uint8_t B2_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

#define B2_BLOCK 128
#define B2_OUT 16

typedef struct {
    uint64_t h[8];
    uint64_t t;              /* bytes compressed so far (the counter's high word stays 0 here) */
    size_t used;             /* bytes waiting in buf */
    uint8_t buf[B2_BLOCK];
} B2;

static inline uint64_t rotr64(uint64_t x, unsigned n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64_le(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
           | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

#define B2_G(a, b, c, d, x, y)                                  \
    do {                                                        \
        v[a] = v[a] + v[b] + (x); v[d] = rotr64(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y); v[d] = rotr64(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];       v[b] = rotr64(v[b] ^ v[c], 63); \
    } while (0)

#define B2_ROUND(r)                                                   \
    do {                                                              \
        B2_G(0, 4, 8, 12, m[B2_SIGMA[r][0]], m[B2_SIGMA[r][1]]);      \
        B2_G(1, 5, 9, 13, m[B2_SIGMA[r][2]], m[B2_SIGMA[r][3]]);      \
        B2_G(2, 6, 10, 14, m[B2_SIGMA[r][4]], m[B2_SIGMA[r][5]]);     \
        B2_G(3, 7, 11, 15, m[B2_SIGMA[r][6]], m[B2_SIGMA[r][7]]);     \
        B2_G(0, 5, 10, 15, m[B2_SIGMA[r][8]], m[B2_SIGMA[r][9]]);     \
        B2_G(1, 6, 11, 12, m[B2_SIGMA[r][10]], m[B2_SIGMA[r][11]]);   \
        B2_G(2, 7, 8, 13, m[B2_SIGMA[r][12]], m[B2_SIGMA[r][13]]);    \
        B2_G(3, 4, 9, 14, m[B2_SIGMA[r][14]], m[B2_SIGMA[r][15]]);    \
    } while (0)

/* F: compress one 128-byte block into h; `last` marks the final block. */
static void b2_compress(B2 *s, const uint8_t *block, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) {
        m[i] = load64_le(block + 8 * i);
    }
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= s->t;  /* low word of the counter; the high word (v[13]) is 0 below 2**64 bytes */
    if (last) {
        v[14] = ~v[14];
    }
    /* 12 rounds, unrolled: with constant message indices the words stay in registers (~30% fewer
     * instructions than a loop over the schedule) */
    B2_ROUND(0); B2_ROUND(1); B2_ROUND(2); B2_ROUND(3); B2_ROUND(4); B2_ROUND(5);
    B2_ROUND(6); B2_ROUND(7); B2_ROUND(8); B2_ROUND(9); B2_ROUND(0); B2_ROUND(1);
    for (int i = 0; i < 8; i++) {
        s->h[i] ^= v[i] ^ v[i + 8];
    }
}

static void b2_init(B2 *s) {
    memcpy(s->h, B2_IV, sizeof s->h);
    s->h[0] ^= 0x01010000ULL ^ B2_OUT;  /* parameter block: depth 1, fanout 1, no key, 16 bytes out */
    s->t = 0;
    s->used = 0;
}

/* Absorb `n` bytes. A full buffer is compressed only once more input arrives: the last block,
 * full or not, must be compressed with the final flag. */
static void b2_update(B2 *s, const uint8_t *p, size_t n) {
    while (n > 0) {
        if (s->used == B2_BLOCK) {
            s->t += B2_BLOCK;
            b2_compress(s, s->buf, 0);
            s->used = 0;
        }
        size_t take = B2_BLOCK - s->used;
        if (take > n) {
            take = n;
        }
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
    }
}

/* The digest as a new str of 32 lowercase hex digits. */
static PyObject *b2_final_hex(B2 *s) {
    static const char hex[] = "0123456789abcdef";
    s->t += s->used;
    memset(s->buf + s->used, 0, B2_BLOCK - s->used);
    b2_compress(s, s->buf, 1);
    PyObject *out = PyUnicode_New(2 * B2_OUT, 127);
    if (out == NULL) {
        return NULL;
    }
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(out);
    for (int i = 0; i < B2_OUT; i++) {
        uint8_t byte = (uint8_t)(s->h[i / 8] >> (8 * (i % 8)));
        d[2 * i] = (Py_UCS1)hex[byte >> 4];
        d[2 * i + 1] = (Py_UCS1)hex[byte & 15];
    }
    return out;
}

static PyObject *blake2b_128_hex(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    B2 s;
    b2_init(&s);
    b2_update(&s, (const uint8_t *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return b2_final_hex(&s);
}

/* ---- IdDigest ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback;
    Py_ssize_t arity;
} IdDigest;

/* Absorb one part's text: 1 done, 0 not a part written here (the caller falls back), -1 error. */
static int absorb_part(B2 *s, PyObject *part) {
    if (part == Py_None) {
        return 1;
    }
    if (PyUnicode_CheckExact(part)) {
        if (PyUnicode_IS_ASCII(part)) {
            b2_update(s, (const uint8_t *)PyUnicode_DATA(part), (size_t)PyUnicode_GET_LENGTH(part));
            return 1;
        }
        /* a temporary encoding: PyUnicode_AsUTF8AndSize would keep one in the string for its life */
        PyObject *utf8 = PyUnicode_AsUTF8String(part);
        if (utf8 == NULL) {  /* a lone surrogate: the twin raises its own error for it */
            PyErr_Clear();
            return 0;
        }
        b2_update(s, (const uint8_t *)PyBytes_AS_STRING(utf8), (size_t)PyBytes_GET_SIZE(utf8));
        Py_DECREF(utf8);
        return 1;
    }
    if (PyLong_CheckExact(part)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(part, &overflow);
        if (overflow) {
            return 0;
        }
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        char digits[24];
        char *end = digits + sizeof digits, *p = end;
        unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (x < 0) {
            *--p = '-';
        }
        b2_update(s, (const uint8_t *)p, (size_t)(end - p));
        return 1;
    }
    return 0;
}

static PyObject *IdDigest_vectorcall(IdDigest *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if ((kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) || (self->arity >= 0 && n != self->arity)) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    static const uint8_t sep = 0x1f;
    B2 s;
    b2_init(&s);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0) {
            b2_update(&s, &sep, 1);
        }
        int done = absorb_part(&s, args[i]);
        if (done < 0) {
            return NULL;
        }
        if (done == 0) {
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
    }
    return b2_final_hex(&s);
}

static PyObject *IdDigest_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fallback", "arity", NULL};
    PyObject *fallback;
    Py_ssize_t arity = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n:IdDigest", kwlist, &fallback, &arity)) {
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "IdDigest: fallback must be callable");
        return NULL;
    }
    IdDigest *self = (IdDigest *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)IdDigest_vectorcall;
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->arity = arity;
    return (PyObject *)self;
}

static int IdDigest_traverse(IdDigest *self, visitproc visit, void *arg) {
    Py_VISIT(self->fallback);
    return 0;
}

static int IdDigest_clear(IdDigest *self) {
    Py_CLEAR(self->fallback);
    return 0;
}

static void IdDigest_dealloc(IdDigest *self) {
    PyObject_GC_UnTrack(self);
    IdDigest_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *IdDigest_repr(IdDigest *self) {
    return PyUnicode_FromFormat("<IdDigest falling back to %R>", self->fallback);
}

static PyMemberDef IdDigest_members[] = {
    {"fallback", T_OBJECT, offsetof(IdDigest, fallback), READONLY, "the Python function it stands in for"},
    {"arity", T_PYSSIZET, offsetof(IdDigest, arity), READONLY, "the argument count it takes (-1: any)"},
    {NULL},
};

static PyTypeObject IdDigestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.core._cevents.IdDigest",
    .tp_doc = "IdDigest(fallback, arity=-1): digest(*parts) -> event id (see the source's head comment).",
    .tp_basicsize = sizeof(IdDigest),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(IdDigest, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = IdDigest_new,
    .tp_traverse = (traverseproc)IdDigest_traverse,
    .tp_clear = (inquiry)IdDigest_clear,
    .tp_dealloc = (destructor)IdDigest_dealloc,
    .tp_repr = (reprfunc)IdDigest_repr,
    .tp_members = IdDigest_members,
};

/* ---- SlotBuilder ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t *offsets;  /* n offsets, in field order */
} SlotBuilder;

static PyObject *SlotBuilder_vectorcall(SlotBuilder *self, PyObject *const *args, size_t nargsf,
                                        PyObject *kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n != self->n || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)) {
        return PyObject_Vectorcall((PyObject *)self->cls, args, nargsf, kwnames);
    }
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) {
        return NULL;
    }
    char *base = (char *)obj;
    int atomic = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(args[i]);
        *(PyObject **)(base + self->offsets[i]) = args[i];
        if (PyObject_IS_GC(args[i]) && PyObject_GC_IsTracked(args[i])) {
            atomic = 0;
        }
    }
    /* Frozen, no __dict__, every field atomic (str, int, Decimal, None) or untracked: the instance
       can't be part of a reference cycle, so the cyclic GC need not track it (as CPython untracks
       such tuples). Events wait in the worker until their checkpoint, and would otherwise be
       traversed by every collection until then. */
    if (atomic) {
        PyObject_GC_UnTrack(obj);
    }
    return obj;
}

static PyObject *refuse(PyTypeObject *cls, const char *why) {
    PyErr_Format(PyExc_TypeError, "SlotBuilder: can't build %s: %s", cls->tp_name, why);
    return NULL;
}

static PyObject *SlotBuilder_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"cls", "names", NULL};
    PyObject *cls_obj, *names;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!:SlotBuilder", kwlist, &cls_obj, &PyTuple_Type, &names)) {
        return NULL;
    }
    if (!PyType_Check(cls_obj)) {
        PyErr_SetString(PyExc_TypeError, "SlotBuilder: cls must be a class");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)cls_obj;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (!(cls->tp_flags & Py_TPFLAGS_HEAPTYPE) || cls->tp_new != PyBaseObject_Type.tp_new
            || cls->tp_alloc != PyType_GenericAlloc) {
        return refuse(cls, "not a plain class (its own __new__ or allocator)");
    }
    if (cls->tp_itemsize != 0 || cls->tp_dictoffset != 0 || cls->tp_weaklistoffset != 0
            || (cls->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        return refuse(cls, "it has a __dict__, a __weakref__ or a variable size");
    }
    if (n < 1 || n > 4096 || cls->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) + (size_t)n * sizeof(PyObject *))) {
        return refuse(cls, "its instances hold other slots than the names given");
    }
    Py_ssize_t *offsets = PyMem_New(Py_ssize_t, n);
    char *seen = PyMem_Calloc((size_t)n, 1);
    if (offsets == NULL || seen == NULL) {
        PyMem_Free(offsets);
        PyMem_Free(seen);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *descr = PyUnicode_CheckExact(name) ? PyDict_GetItemWithError(cls->tp_dict, name) : NULL;
        const char *why = NULL;
        if (descr == NULL) {
            why = PyErr_Occurred() ? NULL : "a name is not a slot of the class itself";
        } else if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || ((PyDescrObject *)descr)->d_type != cls) {
            why = "a name is not a slot of the class itself";
        } else {
            PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
            Py_ssize_t off = member->offset;
            Py_ssize_t k = (off - (Py_ssize_t)sizeof(PyObject)) / (Py_ssize_t)sizeof(PyObject *);
            if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
                why = "a slot that is not a writable object slot";
            } else if (off < (Py_ssize_t)sizeof(PyObject) || off % (Py_ssize_t)sizeof(PyObject *) != 0
                       || k >= n || seen[k]) {
                why = "a slot outside the instance or named twice";
            } else {
                seen[k] = 1;
                offsets[i] = off;
            }
        }
        if (descr == NULL || why != NULL) {
            PyMem_Free(offsets);
            PyMem_Free(seen);
            return why == NULL ? NULL : refuse(cls, why);
        }
    }
    PyMem_Free(seen);  /* n distinct slots in n places: every slot of the instance is filled */
    SlotBuilder *self = (SlotBuilder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyMem_Free(offsets);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)SlotBuilder_vectorcall;
    Py_INCREF(cls);
    self->cls = cls;
    self->n = n;
    self->offsets = offsets;
    return (PyObject *)self;
}

static int SlotBuilder_traverse(SlotBuilder *self, visitproc visit, void *arg) {
    Py_VISIT(self->cls);
    return 0;
}

static int SlotBuilder_clear(SlotBuilder *self) {
    Py_CLEAR(self->cls);
    return 0;
}

static void SlotBuilder_dealloc(SlotBuilder *self) {
    PyObject_GC_UnTrack(self);
    SlotBuilder_clear(self);
    PyMem_Free(self->offsets);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *SlotBuilder_name(SlotBuilder *self, void *Py_UNUSED(closure)) {
    if (self->cls == NULL) {
        return PyUnicode_FromString("new_?");
    }
    return PyUnicode_FromFormat("new_%s", _PyType_Name(self->cls));
}

static PyObject *SlotBuilder_repr(SlotBuilder *self) {
    PyObject *name = SlotBuilder_name(self, NULL);
    if (name == NULL) {
        return NULL;
    }
    PyObject *out = PyUnicode_FromFormat("<SlotBuilder %U>", name);
    Py_DECREF(name);
    return out;
}

static PyGetSetDef SlotBuilder_getset[] = {
    {"__name__", (getter)SlotBuilder_name, NULL, "new_ and the class's name", NULL},
    {NULL},
};

static PyMemberDef SlotBuilder_members[] = {
    {"cls", T_OBJECT, offsetof(SlotBuilder, cls), READONLY, "the class it builds"},
    {NULL},
};

static PyTypeObject SlotBuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.core._cevents.SlotBuilder",
    .tp_doc = "SlotBuilder(cls, names): builder(*values) -> cls(*values) (see the source's head comment).",
    .tp_basicsize = sizeof(SlotBuilder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(SlotBuilder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = SlotBuilder_new,
    .tp_traverse = (traverseproc)SlotBuilder_traverse,
    .tp_clear = (inquiry)SlotBuilder_clear,
    .tp_dealloc = (destructor)SlotBuilder_dealloc,
    .tp_repr = (reprfunc)SlotBuilder_repr,
    .tp_getset = SlotBuilder_getset,
    .tp_members = SlotBuilder_members,
};

/* ---- set_checksum ------------------------------------------------------------------------------ */

static PyObject *set_checksum(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_checksum(positions: dict, keys: dict)");
        return NULL;
    }
    PyObject *positions = args[0], *keys = args[1], *symbol, *qty;
    Py_ssize_t pos = 0;
    uint64_t total = 0;
    while (PyDict_Next(positions, &pos, &symbol, &qty)) {
        /* held while a quantity's own code (its truth, its hash) runs: that code could change the dict */
        Py_INCREF(symbol);
        Py_INCREF(qty);
        int nonzero = PyObject_IsTrue(qty);
        Py_hash_t h = nonzero > 0 ? PyObject_Hash(qty) : 0;
        PyObject *key = nonzero > 0 && h != -1 ? PyDict_GetItemWithError(keys, symbol) : NULL;  /* borrowed */
        Py_DECREF(symbol);
        Py_DECREF(qty);
        if (nonzero < 0 || h == -1 || (key == NULL && PyErr_Occurred())) {
            return NULL;
        }
        if (!nonzero) {
            continue;
        }
        if (key == NULL || !PyLong_CheckExact(key)) {
            Py_RETURN_NONE;
        }
        uint64_t k = PyLong_AsUnsignedLongLong(key);
        if (k == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear();  /* negative or beyond 64 bits: not a key made here */
            Py_RETURN_NONE;
        }
        uint64_t x = k ^ (uint64_t)h;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
        total += x ^ (x >> 31);
    }
    return PyLong_FromUnsignedLongLong(total);
}

/* ---- module ------------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"blake2b_128_hex", blake2b_128_hex, METH_O,
     "blake2b_128_hex(data) -> hashlib.blake2b(data, digest_size=16).hexdigest()"},
    {"set_checksum", (PyCFunction)(void (*)(void))set_checksum, METH_FASTCALL,
     "set_checksum(positions, keys) -> state.checksum(positions), or None to let it answer"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams.core._cevents",
    .m_doc = "The engine's event ids (IdDigest) and constructors (SlotBuilder) in C; see the source's head comment.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__cevents(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    /* PyModule_AddType readies each type and adds it under the last part of its tp_name */
    if (PyModule_AddType(m, &IdDigestType) < 0 || PyModule_AddType(m, &SlotBuilderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
