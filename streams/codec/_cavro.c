/* The codec's two fast paths in C: the direct Avro reader of `streams/codec/direct.py` and the
 * compiled event encoder of `streams/codec/encoder.py`. Each Python side derives a small *spec* from
 * the schema (one schema walker); here a type runs it (a second runner, never a second reading of
 * the schema). Built by the native build (`streams/_native.py`) and used only while it is in use.
 *
 * Reader(spec, unsure) -- the same reads and records as direct.py, without the interpreter's cost
 * per byte and per field (~1.2 instead of ~8 µs a record on the worker's traffic). Its spec:
 *
 *   ("long",) | ("string",) | ("union", null_index, spec) | ("array", spec)
 *   | ("decimal", cache, scale, precision, decimal_type, bound_owner, bound_name) | ("record", cls, (spec, ...))
 *
 * `cache` is a `decimals.ReadCache` (a dict subclass whose __missing__ converts): a miss that fits
 * 16 bytes is converted here instead (`convert_decimal`, to the same canonical Decimal) and
 * remembered as __missing__ would; anything else goes to __missing__. In front of it, each decimal
 * node keeps a small direct-mapped cache of the Decimals it read, keyed by their raw bytes (see
 * read_decimal), which answers most reads without making a key. `cls` is a NamedTuple class
 * with the record's fields in order.
 *
 *   reader(data, offset)      -> record    (the body must end exactly at the end of `data`)
 *   reader.body(data, pos)    -> (record, end)
 *
 * Contract, as direct.py's: a fast path, never a second opinion. It reads the canonical,
 * well-formed encoding and raises (`unsure`, or whatever a decimal conversion or UTF-8 decode
 * raises) for anything else: a varint of 10 bytes or more, a negative length, a negative or
 * over-long array count, a union branch byte other than 0 or 2, bytes missing (here: anything read
 * past the end is refused at once, where Python slices short and refuses later), or left over.
 * The caller then decodes the same bytes on the generic path.
 *
 * Encoder(spec) -- the same bytes as encoder.py's generated Python from the same event attributes
 * (1.9 instead of 5.8 µs a PositionMismatch whose decimals were written before), read straight from
 * their slots where the event's class keeps them in plain ones (`learn_slots`), else with getattr.
 * Its spec:
 *
 *   ("record", ((attribute, node), ...))
 *   node: ("long",) | ("string",) | ("boolean",) | ("union", null_index, node) | ("array", node, top)
 *         | ("decimal", cache, scale, precision, decimal_type, bound_owner, bound_name, miss)
 *
 * A Decimal is written here from its digits, read in place where its layout was confirmed
 * (`decimal_bytes_in_place`), else from its exact text (`decimal_bytes`), and remembered by identity
 * in the node's front cache (see write_decimal). For anything else, `cache` maps a
 * Decimal to its encoding (length-prefixed Avro decimal bytes), and `miss(value)` returns that
 * encoding for any other value or raises (encoder.py's `_decimal_writer`, which also fills the
 * cache). A cache's bound is read at each miss from `getattr(bound_owner, bound_name)`
 * (decimals.WRITE_CACHE_MAX), as the Python code reads it. `top`:
 * the array is a field's value, where a tuple is taken as well as a list.
 *
 *   encoder(event, head) -> head + body | None
 *
 * Contract, as the generated Python's: it writes only value shapes whose encoding it knows exactly
 * (an exact int in the long range, an exact str, True/False, None for a union's null, a Decimal or
 * whatever `miss` converts, a list or tuple for an array) and returns None for any other shape, or
 * raises (a long out of range, a string that isn't UTF-8 encodable, a failed conversion); the caller
 * then takes the reference path (fastavro), which gives the same bytes or the error.
 *
 * tests/unit/test_cread.py and test_cwrite.py hold each equal to its Python twin, count references,
 * and fuzz them under AddressSanitizer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 32

/* ---- specs: what both share ------------------------------------------------------------------ */

static void *bad_spec(const char *what) {
    if (!PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "bad spec: %s", what);
    }
    return NULL;
}

static int is_kind(PyObject *kind, const char *name) {
    return PyUnicode_CompareWithASCIIString(kind, name) == 0;
}

/* What a decimal node of either spec holds, from its items 1..6:
   (cache, scale, precision, decimal_type, bound_owner, bound_name). The cache's bound is read at
   each miss from getattr(bound_owner, bound_name) (decimals.READ_CACHE_MAX or WRITE_CACHE_MAX), as
   the Python code reads its module global. */
typedef struct {
    PyObject *cache, *decimal_type, *bound_owner, *bound_name; /* strong references */
    int scale, precision;
} DecimalSpec;

/* Fill `d` from the decimal node `spec` (a tuple of at least 7 items); -1 with ValueError. */
static int decimal_spec(PyObject *spec, DecimalSpec *d) {
    PyObject *cache = PyTuple_GET_ITEM(spec, 1), *decimal_type = PyTuple_GET_ITEM(spec, 4);
    PyObject *bound_owner = PyTuple_GET_ITEM(spec, 5), *bound_name = PyTuple_GET_ITEM(spec, 6);
    long scale = PyLong_AsLong(PyTuple_GET_ITEM(spec, 2));
    long precision = PyLong_AsLong(PyTuple_GET_ITEM(spec, 3));
    if (PyErr_Occurred()) {
        PyErr_Clear();
        bad_spec("a decimal's scale and precision must be ints");
        return -1;
    }
    if (!PyDict_Check(cache) || !PyType_Check(decimal_type) || !PyUnicode_Check(bound_name)) {
        bad_spec("a decimal needs a dict cache, the Decimal type and its bound's owner and name");
        return -1;
    }
    if (scale < 0 || scale > 1000 || precision < 1 || precision > 1000) {
        bad_spec("a decimal's scale or precision is out of range");
        return -1;
    }
    Py_INCREF(cache);
    Py_INCREF(decimal_type);
    Py_INCREF(bound_owner);
    Py_INCREF(bound_name);
    d->cache = cache;
    d->decimal_type = decimal_type;
    d->bound_owner = bound_owner;
    d->bound_name = bound_name;
    d->scale = (int)scale;
    d->precision = (int)precision;
    return 0;
}

static void decimal_spec_clear(DecimalSpec *d) {
    Py_CLEAR(d->cache);
    Py_CLEAR(d->decimal_type);
    Py_CLEAR(d->bound_owner);
    Py_CLEAR(d->bound_name);
}

/* Remember `value` under `key` in the cache, emptied first when it holds its bound or more (as
   ReadCache.__missing__ and encoder.py's miss do). */
static int remember(const DecimalSpec *d, PyObject *key, PyObject *value) {
    PyObject *bound = PyObject_GetAttr(d->bound_owner, d->bound_name);
    if (bound == NULL) {
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(bound);
    Py_DECREF(bound);
    if (n < 0) {
        return -1;
    }
    if (PyDict_GET_SIZE(d->cache) >= n) {
        PyDict_Clear(d->cache);
    }
    return PyDict_SetItem(d->cache, key, value);
}

#ifdef __SIZEOF_INT128__
__extension__ typedef unsigned __int128 u128;

/* 10**precision, for precision <= 38 (below 2**127) */
/* 10**k for 0 <= k <= 38 (the table is filled at the first call: a loop of k multiplications a
   call cost a decimal up to 38 of them, twice). */
static u128 pow10_u128(int k) {
    static u128 table[39];
    if (table[0] == 0) {
        u128 p = 1;
        for (int i = 0; i <= 38; i++) {
            table[i] = p;
            p *= 10;
        }
    }
    return table[k];
}

/* The number of bits of `x` (0 for 0), as Python's int.bit_length. */
static int bit_length_u128(u128 x) {
    uint64_t hi = (uint64_t)(x >> 64), lo = (uint64_t)x;
    return hi ? 128 - __builtin_clzll(hi) : lo ? 64 - __builtin_clzll(lo) : 0;
}
#endif

/* The kind of a spec node (a tuple starting with a str), or NULL with ValueError. */
static PyObject *spec_kind(PyObject *spec, int depth) {
    if (depth > MAX_DEPTH) {
        return bad_spec("nested too deep");
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1 || !PyUnicode_Check(PyTuple_GET_ITEM(spec, 0))) {
        return bad_spec("expected a tuple starting with a kind");
    }
    return PyTuple_GET_ITEM(spec, 0);
}

/* ======== the reader ======================================================================== */

typedef enum { K_LONG, K_STRING, K_DECIMAL, K_UNION, K_ARRAY, K_RECORD } RKind;

/* A decimal node's front cache: the Decimal last read from these raw bytes (see read_decimal). */
#define DEC_SLOTS 256 /* a power of two */
#define DEC_MAX 16
typedef struct {
    PyObject *value;                /* a strong reference, NULL while the slot is empty */
    unsigned char n;                /* the raw bytes' length, 0..DEC_MAX */
    unsigned char raw[DEC_MAX];
} DecSlot;

typedef struct RNode {
    RKind kind;
    PyObject *obj;          /* RECORD: the class (a strong reference) */
    DecimalSpec dec;        /* DECIMAL */
    DecSlot *front;         /* DECIMAL: DEC_SLOTS slots */
    int null_index;         /* UNION: the branch that reads null (0 or 1) */
    Py_ssize_t n;           /* RECORD: number of fields; UNION, ARRAY: 1 */
    struct RNode **children; /* UNION: the non-null branch; ARRAY: the item; RECORD: the fields */
} RNode;

typedef struct {
    PyObject_HEAD
    RNode *root;
    PyObject *unsure;
    vectorcallfunc vectorcall; /* reader(data, offset) without packing a tuple and parsing it */
} Reader;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t pos;
} Cur;

/* ---- the reader's spec -------------------------------------------------------------------------------- */

static void rnode_free(RNode *node) {
    if (node == NULL) {
        return;
    }
    if (node->children != NULL) {
        for (Py_ssize_t i = 0; i < node->n; i++) {
            rnode_free(node->children[i]);
        }
        PyMem_Free(node->children);
    }
    Py_XDECREF(node->obj);
    decimal_spec_clear(&node->dec);
    if (node->front != NULL) {
        for (int i = 0; i < DEC_SLOTS; i++) {
            Py_CLEAR(node->front[i].value);
        }
        PyMem_Free(node->front);
    }
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

static RNode *rnode_new(PyObject *spec, int depth);

static RNode *rnode_alloc(RKind kind, Py_ssize_t n) {
    RNode *node = PyMem_Calloc(1, sizeof(RNode));
    if (node == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    node->kind = kind;
    if (n > 0) {
        node->children = PyMem_Calloc((size_t)n, sizeof(RNode *));
        if (node->children == NULL) {
            PyMem_Free(node);
            PyErr_NoMemory();
            return NULL;
        }
        node->n = n;
    }
    return node;
}

static RNode *rspec_error(RNode *node, const char *what) {
    rnode_free(node);
    return bad_spec(what);
}

static RNode *rnode_new(PyObject *spec, int depth) {
    PyObject *kind = spec_kind(spec, depth);
    if (kind == NULL) {
        return NULL;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(spec);
    RNode *node = NULL;
    if (is_kind(kind, "long") && size == 1) {
        return rnode_alloc(K_LONG, 0);
    }
    if (is_kind(kind, "string") && size == 1) {
        return rnode_alloc(K_STRING, 0);
    }
    if (is_kind(kind, "decimal") && size == 7) {
        node = rnode_alloc(K_DECIMAL, 0);
        if (node == NULL) {
            return NULL;
        }
        node->front = PyMem_Calloc(DEC_SLOTS, sizeof(DecSlot));
        if (node->front == NULL) {
            rnode_free(node);
            PyErr_NoMemory();
            return NULL;
        }
        return decimal_spec(spec, &node->dec) < 0 ? rspec_error(node, "decimal") : node;
    }
    if (is_kind(kind, "union") && size == 3) {
        long index = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        if (index == -1 && PyErr_Occurred()) {
            return rspec_error(NULL, "a union's null index must be an int");
        }
        if (index != 0 && index != 1) {
            return rspec_error(NULL, "a union's null index must be 0 or 1");
        }
        node = rnode_alloc(K_UNION, 1);
        if (node == NULL) {
            return NULL;
        }
        node->null_index = (int)index;
        node->children[0] = rnode_new(PyTuple_GET_ITEM(spec, 2), depth + 1);
        return node->children[0] == NULL ? rspec_error(node, "union branch") : node;
    }
    if (is_kind(kind, "array") && size == 2) {
        node = rnode_alloc(K_ARRAY, 1);
        if (node == NULL) {
            return NULL;
        }
        node->children[0] = rnode_new(PyTuple_GET_ITEM(spec, 1), depth + 1);
        return node->children[0] == NULL ? rspec_error(node, "array item") : node;
    }
    if (is_kind(kind, "record") && size == 3) {
        PyObject *cls = PyTuple_GET_ITEM(spec, 1), *fields = PyTuple_GET_ITEM(spec, 2);
        if (!record_class_ok(cls)) {
            return rspec_error(NULL, "a record's class must be a tuple subclass without slots (a NamedTuple)");
        }
        if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) < 1) {
            return rspec_error(NULL, "a record's fields must be a non-empty tuple");
        }
        node = rnode_alloc(K_RECORD, PyTuple_GET_SIZE(fields));
        if (node == NULL) {
            return NULL;
        }
        Py_INCREF(cls);
        node->obj = cls;
        for (Py_ssize_t i = 0; i < node->n; i++) {
            node->children[i] = rnode_new(PyTuple_GET_ITEM(fields, i), depth + 1);
            if (node->children[i] == NULL) {
                return rspec_error(node, "record field");
            }
        }
        return node;
    }
    return rspec_error(NULL, "unknown kind or wrong arity");
}

/* ---- reading --------------------------------------------------------------------------------- */

static PyObject *read_node(const RNode *node, Cur *c, PyObject *unsure);

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

/* Short ASCII strings, by their bytes: account ids, symbols, kinds and sources repeat in nearly every
   record. A hit returns the str made before from the same bytes (no UTF-8 decode, no allocation),
   and the engine's dict lookups of it then find the key by identity with its hash already computed.
   Direct-mapped (FNV-1a of the bytes), a slot replaced on a miss; entries live until the process
   ends: at most STR_SLOTS strings of at most STR_MAX bytes. Only compact ASCII strs are kept, whose
   characters are their UTF-8 bytes, so comparing the bytes is comparing the text. */
#define STR_SLOTS 4096 /* a power of two */
#define STR_MAX 32
static PyObject *str_cache[STR_SLOTS];

static PyObject *read_string(const unsigned char *p, Py_ssize_t n) {
    if (n > STR_MAX) {
        return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    }
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    PyObject **slot = &str_cache[h & (STR_SLOTS - 1)];
    PyObject *s = *slot;
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n && memcmp(PyUnicode_DATA(s), p, (size_t)n) == 0) {
        Py_INCREF(s);
        return s;
    }
    s = PyUnicode_DecodeUTF8((const char *)p, n, NULL);
    if (s != NULL && PyUnicode_IS_COMPACT_ASCII(s)) {
        Py_INCREF(s);
        Py_XSETREF(*slot, s);
    }
    return s;
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

#ifdef __SIZEOF_INT128__
/* The canonical Decimal of Avro decimal bytes (big-endian two's complement, `scale`), as
   decimals.exact_reader makes it: integral values with exponent 0 ("100"), others with no trailing
   fractional zeros ("-1.5"), through Decimal(str), which is exact. Only for 1..16 bytes of a value
   below 10**precision (precision and scale <= 38); NULL without an error otherwise: the cache's
   __missing__ then converts (or raises). */
static PyObject *convert_decimal(const DecimalSpec *dec, const unsigned char *p, Py_ssize_t n) {
    if (n < 1 || n > 16 || dec->precision > 38 || dec->scale > 38) { /* text below: at most 78 chars */
        return NULL;
    }
    u128 acc = (p[0] & 0x80) ? ~(u128)0 : 0; /* sign-extended */
    for (Py_ssize_t i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
    }
    int negative = (int)(acc >> 127);
    u128 mag = negative ? ~acc + 1 : acc;
    if (mag >= pow10_u128(dec->precision)) {
        return NULL;
    }
    char digits[48]; /* |u| < 10**38: at most 38 digits */
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + (int)(mag % 10));
        mag /= 10;
    } while (mag);
    /* digits[] holds the unscaled value's digits, least significant first; past nd they are 0 */
    int scale = dec->scale;
    int zeros = 0; /* trailing zeros of the fraction, dropped */
    while (zeros < scale && (zeros >= nd || digits[zeros] == '0')) {
        zeros++;
    }
    char text[96];
    int len = 0;
    if (negative) {
        text[len++] = '-';
    }
    if (nd > scale) {
        for (int i = nd - 1; i >= scale; i--) {
            text[len++] = digits[i];
        }
    } else {
        text[len++] = '0';
    }
    if (zeros < scale) { /* not integral: exactly the significant fractional digits */
        text[len++] = '.';
        for (int i = scale - 1; i >= zeros; i--) {
            text[len++] = i < nd ? digits[i] : '0';
        }
    }
    PyObject *str = PyUnicode_FromStringAndSize(text, len);
    if (str == NULL) {
        return NULL;
    }
    PyObject *d = PyObject_CallOneArg(dec->decimal_type, str);
    Py_DECREF(str);
    return d;
}
#else
static PyObject *convert_decimal(const DecimalSpec *dec, const unsigned char *p, Py_ssize_t n) {
    (void)dec;
    (void)p;
    (void)n;
    return NULL;
}
#endif

/* A decimal: from the node's front cache when these bytes were read here before, else from the
   dict cache (`dec->cache`, a decimals.ReadCache), converting a miss in C or in its __missing__.

   The front cache saves the dict path's cost on the common case (~560 instructions a decimal on
   the worker's traffic: a bytes object made, siphashed, looked up, freed): a hit compares at most
   DEC_MAX raw bytes and returns the Decimal kept for them. Direct-mapped, keyed by FNV-1a of the
   bytes xor-folded (the FNV authors' way to a smaller table), a slot replaced on a miss: at most
   DEC_SLOTS Decimals a node, freed with the reader. Only values the dict path returned are kept
   (a refusal or an error is never cached), so a hit is what the dict path gave for the same bytes.

   It is not emptied when the dict cache starts over at its bound (here in `remember`, or in
   __missing__): a Decimal is immutable and its value is a function of the bytes and this node's
   (scale, precision) alone, so a kept entry stays the exact value the dict path would return for
   those bytes; what may differ after the dict restarts is only the object's identity (the dict
   then makes a new, equal one), which no reader of the value can observe. The memory it keeps
   stays bounded by the slots. Decimals hold no references, so the slots make no cycles and need no
   GC traversal (the Reader type takes no part in GC). */
static PyObject *read_decimal(const RNode *node, Cur *c, PyObject *unsure) {
    Py_ssize_t start, n = read_size(c, &start, unsure);
    if (n < 0) {
        return NULL;
    }
    const unsigned char *p = c->buf + start;
    DecSlot *slot = NULL;
    if (n <= DEC_MAX) {
        uint32_t h = 2166136261u;
        for (Py_ssize_t i = 0; i < n; i++) {
            h = (h ^ p[i]) * 16777619u;
        }
        slot = &node->front[(h ^ (h >> 16)) & (DEC_SLOTS - 1)];
        if (slot->value != NULL && slot->n == n && memcmp(slot->raw, p, (size_t)n) == 0) {
            Py_INCREF(slot->value);
            return slot->value;
        }
    }
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, n);
    if (raw == NULL) {
        return NULL;
    }
    const DecimalSpec *dec = &node->dec;
    PyObject *d = PyDict_GetItemWithError(dec->cache, raw); /* borrowed */
    if (d != NULL) {
        Py_INCREF(d);
    } else if (!PyErr_Occurred()) {
        d = convert_decimal(dec, p, n);
        if (d != NULL) {
            if (remember(dec, raw, d) < 0) {
                Py_CLEAR(d);
            }
        } else if (!PyErr_Occurred()) {
            d = PyObject_GetItem(dec->cache, raw); /* the cache's __missing__ converts (or raises) */
        }
    }
    Py_DECREF(raw);
    if (d != NULL && slot != NULL) { /* the key first: the old value's release comes last */
        slot->n = (unsigned char)n;
        memcpy(slot->raw, p, (size_t)n);
        Py_INCREF(d);
        Py_XSETREF(slot->value, d);
    }
    return d;
}

/* A tuple (or a tuple subclass without a __dict__: the record classes are NamedTuples) whose items
   are all atomic (str, int, Decimal, None) or untracked can't be part of a reference cycle: it is
   untracked, as CPython's own collector untracks such exact tuples when it first meets them. Records
   held in a worker's lanes (up to hundreds of thousands while the watermark waits) are then never
   traversed by the cyclic GC, and never promoted through its generations. */
static void untrack_if_atomic(PyObject *t) {
    if (Py_TYPE(t)->tp_dictoffset != 0 || !PyObject_GC_IsTracked(t)) {
        return;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        PyObject *v = PyTuple_GET_ITEM(t, i);
        if (v == NULL || (PyObject_IS_GC(v) && PyObject_GC_IsTracked(v))) {
            return;
        }
    }
    PyObject_GC_UnTrack(t);
}

static PyObject *read_array(const RNode *node, Cur *c, PyObject *unsure) {
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
    if (out != NULL) {
        untrack_if_atomic(out);
    }
    return out;
fail:
    Py_DECREF(items);
    return NULL;
}

static PyObject *read_record(const RNode *node, Cur *c, PyObject *unsure) {
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
    untrack_if_atomic(out);
    return out;
}

static PyObject *read_node(const RNode *node, Cur *c, PyObject *unsure) {
    switch (node->kind) {
    case K_LONG: {
        int64_t v;
        return read_long(c, &v, unsure) < 0 ? NULL : PyLong_FromLongLong(v);
    }
    case K_STRING: {
        Py_ssize_t start, n = read_size(c, &start, unsure);
        return n < 0 ? NULL : read_string(c->buf + start, n);
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
    PyErr_SetString(PyExc_SystemError, "_cavro: unknown reader node kind");
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

static PyObject *Reader_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Reader *self = (Reader *)callable;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        PyErr_SetString(PyExc_TypeError, "Reader takes no keyword arguments");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) != 2) {
        PyErr_Format(PyExc_TypeError, "Reader takes 2 arguments (data, offset), %zd given",
                     (Py_ssize_t)PyVectorcall_NARGS(nargsf));
        return NULL;
    }
    PyObject *data = args[0];
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred()) {
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

/* entries(raws, start, prefix, rule, feed) -> (out, slow, kept, end): a stream worker's batch of one
   partition, `raws` being (offset, ts_ms, key, value) tuples in fetch order (Pipeline._decode's
   fast path; it gives what the general path gives, record for record).
   - kept: the raws whose offset extends the sequence from `start` (offset >= the end so far; a
     partition delivered twice in one batch is kept once), counted in `kept`; `end` is the last kept
     offset + 1 (`start` if none);
   - a kept raw whose value starts with `prefix`, reads completely after it, and whose record `rule`
     accepts (truthy) becomes the entry (ts_ms, feed, record, offset);
   - any other kept raw goes into `out` as it is, and its index into `slow`: the caller decodes it
     the general way, which gives the same record or its DecodeError.
   Exceptions while reading or in `rule` make a raw slow; only those not derived from Exception
   (KeyboardInterrupt, SystemExit) propagate. */
static int swallow(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

static PyObject *Reader_entries(Reader *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "entries(raws, start, prefix, rule, feed) takes 5 arguments");
        return NULL;
    }
    PyObject *raws = args[0], *prefix = args[2], *rule = args[3], *feed = args[4];
    long long end = PyLong_AsLongLong(args[1]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_Check(raws) || !PyBytes_Check(prefix)) {
        PyErr_SetString(PyExc_TypeError, "entries: raws must be a list and prefix bytes");
        return NULL;
    }
    const char *pre = PyBytes_AS_STRING(prefix);
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix), kept = 0;
    PyObject *out = PyList_New(0), *slow = PyList_New(0);
    if (out == NULL || slow == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(raws); i++) {
        PyObject *r = PyList_GET_ITEM(raws, i);
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 4) {
            PyErr_SetString(PyExc_TypeError, "entries: each raw must be an (offset, ts_ms, key, value) tuple");
            goto fail;
        }
        PyObject *offset = PyTuple_GET_ITEM(r, 0), *value = PyTuple_GET_ITEM(r, 3);
        long long off = PyLong_AsLongLong(offset);
        if (off == -1 && PyErr_Occurred()) {
            goto fail;
        }
        if (off < end) {
            continue;
        }
        end = off + 1;
        kept++;
        PyObject *rec = NULL;
        if (PyBytes_Check(value) && PyBytes_GET_SIZE(value) >= plen
                && memcmp(PyBytes_AS_STRING(value), pre, (size_t)plen) == 0) {
            Cur c = {(const unsigned char *)PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), plen};
            rec = read_node(self->root, &c, self->unsure);
            if (rec == NULL) {
                if (swallow() < 0) {
                    goto fail;
                }
            } else if (c.pos != c.len) {
                Py_CLEAR(rec);  /* bytes left over: not a canonical body */
            } else {
                PyObject *ok = PyObject_CallOneArg(rule, rec);
                int yes = ok == NULL ? -1 : PyObject_IsTrue(ok);
                Py_XDECREF(ok);
                if (yes != 1) {
                    Py_CLEAR(rec);
                    if (yes < 0 && swallow() < 0) {
                        goto fail;
                    }
                }
            }
        }
        PyObject *item;
        if (rec != NULL) {
            item = PyTuple_Pack(4, PyTuple_GET_ITEM(r, 1), feed, rec, offset);
            Py_DECREF(rec);
            if (item == NULL) {
                goto fail;
            }
            /* `feed` is a member of an enum, alive as long as the module: it can't lead back here */
            if (!PyObject_GC_IsTracked(rec)) {
                PyObject_GC_UnTrack(item);
            }
        } else {
            PyObject *at = PyLong_FromSsize_t(PyList_GET_SIZE(out));
            if (at == NULL || PyList_Append(slow, at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
            item = Py_NewRef(r);
        }
        int failed = PyList_Append(out, item);
        Py_DECREF(item);
        if (failed < 0) {
            goto fail;
        }
    }
    return Py_BuildValue("(NNnL)", out, slow, kept, end);
fail:
    Py_XDECREF(out);
    Py_XDECREF(slow);
    return NULL;
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
    RNode *root = rnode_new(spec, 0);
    if (root == NULL) {
        return NULL;
    }
    if (root->kind != K_RECORD) {
        rnode_free(root);
        PyErr_SetString(PyExc_ValueError, "bad spec: the root must be a record");
        return NULL;
    }
    Reader *self = (Reader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        rnode_free(root);
        return NULL;
    }
    self->root = root;
    Py_INCREF(unsure);
    self->unsure = unsure;
    self->vectorcall = Reader_vectorcall;
    return (PyObject *)self;
}

static void Reader_dealloc(Reader *self) {
    rnode_free(self->root);
    Py_XDECREF(self->unsure);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"body", (PyCFunction)(void (*)(void))Reader_body, METH_FASTCALL,
     "body(data, pos) -> (record, end): one body among others, e.g. an entry of a container block"},
    {"entries", (PyCFunction)(void (*)(void))Reader_entries, METH_FASTCALL,
     "entries(raws, start, prefix, rule, feed) -> (out, slow, kept, end): a worker's batch (see the source)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.codec._cavro.Reader",
    .tp_doc = "Reader(spec, unsure): reader(data, offset) -> record, the whole of data from offset on.",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_new = Reader_new,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_methods = Reader_methods,
};

/* ======== the encoder ======================================================================= */

typedef enum { W_LONG, W_STRING, W_BOOLEAN, W_DECIMAL, W_UNION, W_ARRAY } WKind;

/* A decimal writer node's front cache: the encoding last written for this very Decimal object
   (see write_decimal). */
#define WDEC_SLOTS 64 /* a power of two */
typedef struct {
    PyObject *value;                /* a strong reference (the identity key), NULL while empty */
    unsigned char n;                /* the encoding's length: prefix and bytes, 2..18 */
    unsigned char enc[18];
} WDecSlot;

typedef struct WNode {
    WKind kind;
    DecimalSpec dec;        /* DECIMAL */
    PyObject *miss;         /* DECIMAL */
    WDecSlot *front;        /* DECIMAL: WDEC_SLOTS slots */
    int in_place;           /* DECIMAL: its Decimals are read in place (see dec_layout_check) */
    int null_index;         /* UNION */
    int top;                /* ARRAY */
    struct WNode *child;     /* UNION, ARRAY */
} WNode;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    PyObject **names; /* attribute names, strong references */
    WNode **fields;
    vectorcallfunc vectorcall;
    /* where the fields of the last event class seen live (see read_field): the class (a strong
       reference), its version tag then, and each field's slot offset */
    PyTypeObject *slot_type;
    unsigned int slot_version;
    Py_ssize_t *slot_offsets;
} Encoder;

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char inline_buf[512];
} Out;

/* ---- the encoder's spec -------------------------------------------------------------------------------- */

static void wnode_free(WNode *node) {
    if (node == NULL) {
        return;
    }
    wnode_free(node->child);
    decimal_spec_clear(&node->dec);
    Py_XDECREF(node->miss);
    if (node->front != NULL) {
        for (int i = 0; i < WDEC_SLOTS; i++) {
            Py_XDECREF(node->front[i].value);
        }
        PyMem_Free(node->front);
    }
    PyMem_Free(node);
}

static WNode *wspec_error(WNode *node, const char *what) {
    wnode_free(node);
    return bad_spec(what);
}

static int dec_layout_check(PyObject *decimal_type);

static WNode *wnode_new(PyObject *spec, int depth) {
    PyObject *kind = spec_kind(spec, depth);
    if (kind == NULL) {
        return NULL;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(spec);
    WNode *node = PyMem_Calloc(1, sizeof(WNode));
    if (node == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (is_kind(kind, "long") && size == 1) {
        node->kind = W_LONG;
    } else if (is_kind(kind, "string") && size == 1) {
        node->kind = W_STRING;
    } else if (is_kind(kind, "boolean") && size == 1) {
        node->kind = W_BOOLEAN;
    } else if (is_kind(kind, "decimal") && size == 8) {
        node->kind = W_DECIMAL;
        if (decimal_spec(spec, &node->dec) < 0) {
            return wspec_error(node, "decimal");
        }
        PyObject *miss = PyTuple_GET_ITEM(spec, 7);
        if (!PyCallable_Check(miss)) {
            return wspec_error(node, "a decimal needs a callable miss");
        }
        Py_INCREF(miss);
        node->miss = miss;
        node->front = PyMem_Calloc(WDEC_SLOTS, sizeof(WDecSlot));
        if (node->front == NULL) {
            PyErr_NoMemory();
            wnode_free(node);
            return NULL;
        }
        node->in_place = dec_layout_check(node->dec.decimal_type);
    } else if (is_kind(kind, "union") && size == 3) {
        node->kind = W_UNION;
        long index = PyLong_AsLong(PyTuple_GET_ITEM(spec, 1));
        if ((index == -1 && PyErr_Occurred()) || (index != 0 && index != 1)) {
            PyErr_Clear();
            return wspec_error(node, "a union's null index must be 0 or 1");
        }
        node->null_index = (int)index;
        node->child = wnode_new(PyTuple_GET_ITEM(spec, 2), depth + 1);
        if (node->child == NULL) {
            return wspec_error(node, "union branch");
        }
    } else if (is_kind(kind, "array") && size == 3) {
        node->kind = W_ARRAY;
        node->top = PyObject_IsTrue(PyTuple_GET_ITEM(spec, 2));
        if (node->top < 0) {
            return wspec_error(node, "array top flag");
        }
        node->child = wnode_new(PyTuple_GET_ITEM(spec, 1), depth + 1);
        if (node->child == NULL) {
            return wspec_error(node, "array items");
        }
    } else {
        return wspec_error(node, "unknown kind or wrong arity");
    }
    return node;
}

/* ---- writing --------------------------------------------------------------------------------- */

static int reserve(Out *o, Py_ssize_t more) {
    if (o->len + more <= o->cap) {
        return 0;
    }
    Py_ssize_t cap = o->cap * 2;
    while (cap < o->len + more) {
        cap *= 2;
    }
    char *buf;
    if (o->buf == o->inline_buf) {
        buf = PyMem_Malloc((size_t)cap);
        if (buf != NULL) {
            memcpy(buf, o->buf, (size_t)o->len);
        }
    } else {
        buf = PyMem_Realloc(o->buf, (size_t)cap);
    }
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static int put_byte(Out *o, unsigned char b) {
    if (reserve(o, 1) < 0) {
        return -1;
    }
    o->buf[o->len++] = (char)b;
    return 0;
}

static int put_bytes(Out *o, const char *p, Py_ssize_t n) {
    if (reserve(o, n) < 0) {
        return -1;
    }
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

/* a zig-zag varint of a long */
static int put_long(Out *o, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    if (reserve(o, 10) < 0) {
        return -1;
    }
    while (z >= 0x80) {
        o->buf[o->len++] = (char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    o->buf[o->len++] = (char)z;
    return 0;
}

/* 1: written; 0: a shape this encoder doesn't know (the result is None); -1: raised */
static int write_node(const WNode *node, PyObject *v, Out *o);

static int write_array(const WNode *node, PyObject *v, Out *o) {
    if (!(PyList_CheckExact(v) || (node->top && PyTuple_CheckExact(v)))) {
        return 0;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
    if (n > 0) {
        if (put_long(o, (int64_t)n) < 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            /* a list may change under a callback (a decimal's miss): index it afresh each time */
            if (i >= PySequence_Fast_GET_SIZE(v)) {
                return 0;
            }
            PyObject *item = PySequence_Fast_GET_ITEM(v, i);
            Py_INCREF(item);
            int r = write_node(node->child, item, o);
            Py_DECREF(item);
            if (r <= 0) {
                return r;
            }
        }
    }
    return put_byte(o, 0) < 0 ? -1 : 1;
}

#ifdef __SIZEOF_INT128__
/* The two's complement bytes of the unscaled integer (-1)**negative * mag (mag below 10**38), as
   u.to_bytes((u + (u < 0)).bit_length() // 8 + 1, "big", signed=True): 1..17 bytes in `raw`,
   their count returned. */
static int mag_bytes(u128 mag, int negative, unsigned char *raw) {
    if (mag == 0) {
        negative = 0;
    }
    int len = bit_length_u128(negative ? mag - 1 : mag) / 8 + 1;
    u128 twos = negative ? ~mag + 1 : mag;
    for (int k = len - 1; k >= 0; k--) {
        raw[k] = (unsigned char)(twos & 0xFF);
        twos >>= 8;
    }
    return len;
}

/* A Decimal of CPython's _decimal read in place: its object as Modules/_decimal/_decimal.c lays it
   out (PyDecObject: the head, the hash, libmpdec's mpd_t, then the inline words), with libmpdec's
   64-bit configuration (words of 19 decimal digits). Nothing public gives a Decimal's digits
   without making its text (`str`: ~1,500 instructions with the string made and freed, most of
   writing an event's fresh decimals). Read only once `dec_layout_check` has confirmed the layout
   on Decimals of known parts, for the exact type it checked; any other build (another layout,
   32-bit words) keeps the text path. */
typedef struct {
    uint8_t flags;
    int64_t exp;
    int64_t digits;
    int64_t len;
    int64_t alloc;
    uint64_t *data;
} MpdView;

typedef struct {
    PyObject_HEAD
    Py_hash_t hash;
    MpdView dec;
    uint64_t data[4];
} DecView;

#define DEC_NEG 1
#define DEC_SPECIAL 14 /* infinite, NaN or signaling NaN */
#define DEC_RADIX 10000000000000000000ULL

static PyObject *dec_layout_type = NULL; /* the Decimal type the layout was confirmed for (a strong reference) */

/* The sign, coefficient and exponent of a finite Decimal whose coefficient has at most 2 words
   (38 digits; below 2**127); 0 for anything else. */
static int dec_parts(PyObject *v, int *negative, u128 *coeff, int64_t *exp) {
    const MpdView *d = &((const DecView *)v)->dec;
    if (d->flags & DEC_SPECIAL || d->len < 1 || d->len > 2) {
        return 0;
    }
    u128 c = d->data[0];
    if (d->len == 2) {
        c += (u128)d->data[1] * DEC_RADIX;
    }
    *negative = d->flags & DEC_NEG;
    *coeff = c;
    *exp = d->exp;
    return 1;
}

/* Whether `decimal_type` is laid out as DecView: 1 if so, 0 if not (also when it can't make the
   probes). Confirmed on Decimals made from text, whose parts are known: the object's size,
   its words inline where a new small Decimal keeps them, and sign, coefficient and exponent each as
   the text says (one and two words, either sign, both exponent signs, zero); NaN, Infinity and
   sNaN flagged special. The first type confirmed is remembered (normally the only one there is). */
static int dec_layout_check(PyObject *decimal_type) {
    if (decimal_type == dec_layout_type) {
        return 1;
    }
    static const struct {
        const char *text;
        int negative;
        uint64_t hi, lo; /* the coefficient's words */
        int64_t exp;
    } probes[] = {
        {"0", 0, 0, 0, 0},
        {"-0", 1, 0, 0, 0},
        {"0E-5", 0, 0, 0, -5},
        {"-12.345", 1, 0, 12345, -3},
        {"1E+30", 0, 0, 1, 30},
        {"-7E-20", 1, 0, 7, -20},
        {"9999999999999999999", 0, 0, 9999999999999999999ULL, 0},
        {"10000000000000000000", 0, 1, 0, 0},
        {"-123456789012345678901234567890.5", 1, 123456789012ULL, 3456789012345678905ULL, -1},
    };
    if (!PyType_Check(decimal_type) || ((PyTypeObject *)decimal_type)->tp_basicsize != (Py_ssize_t)sizeof(DecView)) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        PyObject *v = PyObject_CallFunction(decimal_type, "s", probes[i].text);
        if (v == NULL) { /* not a type that makes these from text: not this layout */
            PyErr_Clear();
            return 0;
        }
        const DecView *d = (const DecView *)v;
        int ok = Py_TYPE(v) == (PyTypeObject *)decimal_type && d->dec.data == d->data;
        int negative = 0;
        u128 coeff = 0;
        int64_t exp = 0;
        ok = ok && dec_parts(v, &negative, &coeff, &exp) && negative == probes[i].negative
             && coeff == (((u128)probes[i].hi * DEC_RADIX) + probes[i].lo) && exp == probes[i].exp;
        Py_DECREF(v);
        if (!ok) {
            return 0;
        }
    }
    const char *special[] = {"NaN", "-Infinity", "sNaN"};
    for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++) {
        PyObject *v = PyObject_CallFunction(decimal_type, "s", special[i]);
        if (v == NULL) {
            PyErr_Clear();
            return 0;
        }
        int ok = (((const DecView *)v)->dec.flags & DEC_SPECIAL) != 0;
        Py_DECREF(v);
        if (!ok) {
            return 0;
        }
    }
    if (dec_layout_type == NULL) {
        Py_INCREF(decimal_type);
        dec_layout_type = decimal_type;
    }
    return 1;
}

/* The Avro decimal bytes of a Decimal at the node's scale, as `decimal_bytes` gives them, read from
   the object itself (the layout confirmed): 1..17 bytes, or 0 for anything this doesn't decide
   (not finite, a coefficient over 38 digits, not exactly at the scale, wider than the precision). */
static int decimal_bytes_in_place(const DecimalSpec *dec, PyObject *v, unsigned char *raw) {
    int negative;
    u128 coeff;
    int64_t exp;
    if (dec->precision > 38 || dec->scale > 38 || !dec_parts(v, &negative, &coeff, &exp)) {
        return 0;
    }
    u128 mag = 0;
    if (coeff != 0) {
        if (exp < -76 || exp > 76) {
            return 0; /* (at any scale <= 38 and 38 digits: not at the scale, or wider than 38) */
        }
        int64_t shift = exp + dec->scale;
        if (shift < 0) { /* the coefficient must end in -shift zeros, or the value isn't at this scale */
            if (-shift > 38) {
                return 0;
            }
            u128 p = pow10_u128((int)-shift);
            if (coeff % p != 0) {
                return 0;
            }
            mag = coeff / p;
        } else {
            if (shift > dec->precision || coeff >= pow10_u128(dec->precision - (int)shift)) {
                return 0; /* wider than the precision */
            }
            mag = coeff * pow10_u128((int)shift);
        }
    }
    return mag_bytes(mag, negative, raw);
}

/* The Avro decimal bytes of a Decimal at the node's scale, as decimals.exact_writer writes them
   (the shortest big-endian two's complement of the unscaled integer), read from its exact text:
   1..17 bytes in `raw`, their count returned. 0 (no error) for anything this doesn't decide:
   not finite, not exactly at the scale, wider than the precision, precision or scale above 38;
   the Python miss then converts or raises. -1 with an error set. */
static int decimal_bytes(const DecimalSpec *dec, PyObject *v, unsigned char *raw) {
    if (dec->precision > 38 || dec->scale > 38) {
        return 0;
    }
    PyObject *str = PyObject_Str(v);
    if (str == NULL) {
        return -1;
    }
    Py_ssize_t n;
    const char *t = PyUnicode_AsUTF8AndSize(str, &n);
    if (t == NULL) {
        Py_DECREF(str);
        return -1;
    }
    int result = 0;
    Py_ssize_t i = 0;
    int negative = 0;
    if (i < n && (t[i] == '-' || t[i] == '+')) {
        negative = t[i++] == '-';
    }
    char digits[128];
    int nd = 0, fraction = 0, dot = 0, seen_digit = 0;
    for (; i < n; i++) {
        char ch = t[i];
        if (ch >= '0' && ch <= '9') {
            seen_digit = 1;
            if (nd == (int)sizeof(digits)) {
                goto done; /* more digits than any schema's precision: the Python miss decides */
            }
            if (nd > 0 || ch != '0' || dot) { /* (leading zeros of the integer part carry nothing) */
                digits[nd++] = ch;
            }
            fraction += dot;
        } else if (ch == '.' && !dot) {
            dot = 1;
        } else {
            break;
        }
    }
    long exponent = 0;
    if (i < n && (t[i] == 'E' || t[i] == 'e')) {
        int exp_negative = 0, exp_digits = 0;
        i++;
        if (i < n && (t[i] == '-' || t[i] == '+')) {
            exp_negative = t[i++] == '-';
        }
        for (; i < n && t[i] >= '0' && t[i] <= '9'; i++) {
            if (++exp_digits > 6) {
                goto done;
            }
            exponent = exponent * 10 + (t[i] - '0');
        }
        if (exp_digits == 0) {
            goto done;
        }
        exponent = exp_negative ? -exponent : exponent;
    }
    if (i != n || !seen_digit) {
        goto done; /* NaN, Infinity, or anything unexpected */
    }
    /* the value is int(digits) * 10**(exponent - fraction); scaled: * 10**(that + scale) */
    long shift = exponent - fraction + dec->scale;
    int lead = 0;
    while (lead < nd && digits[lead] == '0') {
        lead++;
    }
    int significant = nd - lead;
    if (shift < 0) { /* the last -shift digits must all be zeros, or the value isn't at this scale */
        long drop = -shift;
        for (long k = 0; k < drop && k < significant; k++) {
            if (digits[nd - 1 - k] != '0') {
                goto done;
            }
        }
        significant = drop >= significant ? 0 : significant - (int)drop;
        shift = 0;
    }
    if (significant > 0 && significant + shift > dec->precision) {
        goto done; /* wider than the precision */
    }
    u128 mag = 0;
    for (int k = 0; k < significant; k++) {
        mag = mag * 10 + (u128)(digits[lead + k] - '0');
    }
    if (mag) { /* (then significant + shift <= precision <= 38, checked above) */
        mag *= pow10_u128((int)shift);
    }
    if (mag >= pow10_u128(dec->precision)) {
        goto done;
    }
    result = mag_bytes(mag, negative, raw);
done:
    Py_DECREF(str);
    return result;
}
#else
static int decimal_bytes(const DecimalSpec *dec, PyObject *v, unsigned char *raw) {
    (void)dec;
    (void)v;
    (void)raw;
    return 0;
}
static int decimal_bytes_in_place(const DecimalSpec *dec, PyObject *v, unsigned char *raw) {
    return decimal_bytes(dec, v, raw);
}
static PyObject *dec_layout_type = NULL;
static int dec_layout_check(PyObject *decimal_type) {
    (void)decimal_type;
    return 0;
}
#endif

/* A decimal: for a Decimal, from the node's front cache when this very object was written here
   before, else from its digits read in place (`decimal_bytes_in_place`, where the node's type was
   confirmed) or from its exact text (`decimal_bytes`), then kept in the front cache; anything
   neither decides (and any other type) goes the dict cache's way, then the miss.

   The dict cache (keyed by value) cost more than the text: most Decimals an event carries are new
   objects (a delta, an IM figure), so each lookup computed the Decimal's hash (a modular power in
   libmpdec) and compared it with an equal one (~70% of encoding a PositionMismatch). The front
   cache is keyed by identity, the cheapest test there is: direct-mapped by the object's address,
   it holds a strong reference, so the address can't be reused by another object while the slot
   keeps it, and a Decimal is immutable, so its encoding at this node's scale never changes. It
   answers for the objects events share with the engine's state (a snapshot's figures, a mark) and
   costs a compare for the rest. At most WDEC_SLOTS Decimals a node, freed with the encoder; they
   hold no references, so no cycles. */
static int write_decimal(const WNode *node, PyObject *v, Out *o) {
    const DecimalSpec *dec = &node->dec;
    PyObject *enc = NULL;
    if (Py_TYPE(v) == (PyTypeObject *)dec->decimal_type) {
        uintptr_t a = (uintptr_t)v;
        WDecSlot *slot = &node->front[((a >> 4) ^ (a >> 10)) & (WDEC_SLOTS - 1)];
        if (slot->value == v) {
            return put_bytes(o, (const char *)slot->enc, slot->n) < 0 ? -1 : 1;
        }
        unsigned char raw[18];
        int len = node->in_place ? decimal_bytes_in_place(dec, v, raw + 1) : 0;
        if (len == 0) { /* (not decided in place: the text decides, or not either) */
            len = decimal_bytes(dec, v, raw + 1);
        }
        if (len < 0) {
            return -1;
        }
        if (len > 0) { /* the length (one zig-zag byte: len <= 17), then the bytes */
            raw[0] = (unsigned char)(len << 1);
            PyObject *old = slot->value;
            Py_INCREF(v);
            slot->value = v;
            slot->n = (unsigned char)(len + 1);
            memcpy(slot->enc, raw, (size_t)len + 1);
            Py_XDECREF(old); /* last: freeing it runs no code of ours, but the slot is whole first */
            return put_bytes(o, (const char *)raw, len + 1) < 0 ? -1 : 1;
        }
        enc = PyDict_GetItemWithError(dec->cache, v); /* borrowed */
        if (enc != NULL) {
            if (!PyBytes_Check(enc)) {
                PyErr_SetString(PyExc_TypeError, "decimal cache holds a non-bytes value");
                return -1;
            }
            return put_bytes(o, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc)) < 0 ? -1 : 1;
        }
        if (PyErr_Occurred()) { /* an unhashable value (a signaling NaN) */
            return -1;
        }
    }
    enc = PyObject_CallOneArg(node->miss, v);
    if (enc == NULL) {
        return -1;
    }
    int r;
    if (!PyBytes_Check(enc)) {
        PyErr_SetString(PyExc_TypeError, "decimal miss returned a non-bytes value");
        r = -1;
    } else {
        r = put_bytes(o, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc)) < 0 ? -1 : 1;
    }
    Py_DECREF(enc);
    return r;
}

static int write_node(const WNode *node, PyObject *v, Out *o) {
    switch (node->kind) {
    case W_LONG: {
        if (!PyLong_CheckExact(v)) {
            return 0;
        }
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "outside the Avro long range");
            return -1;
        }
        if (x == -1 && PyErr_Occurred()) {
            return -1;
        }
        return put_long(o, (int64_t)x) < 0 ? -1 : 1;
    }
    case W_STRING: {
        if (!PyUnicode_CheckExact(v)) {
            return 0;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) {
            return -1;
        }
        if (put_long(o, (int64_t)n) < 0 || put_bytes(o, s, n) < 0) {
            return -1;
        }
        return 1;
    }
    case W_BOOLEAN:
        if (v == Py_True || v == Py_False) {
            return put_byte(o, v == Py_True ? 1 : 0) < 0 ? -1 : 1;
        }
        return 0;
    case W_DECIMAL:
        return write_decimal(node, v, o);
    case W_UNION:
        if (v == Py_None) {
            return put_byte(o, (unsigned char)(node->null_index << 1)) < 0 ? -1 : 1;
        }
        if (put_byte(o, (unsigned char)((1 - node->null_index) << 1)) < 0) {
            return -1;
        }
        return write_node(node->child, v, o);
    case W_ARRAY:
        return write_array(node, v, o);
    }
    PyErr_SetString(PyExc_SystemError, "_cavro: unknown writer node kind");
    return -1;
}

/* ---- the Encoder type ------------------------------------------------------------------------ */

/* Learn where class `t` keeps every field: each name must resolve, through the class's MRO, to a
   slot (a member descriptor of an object slot) of a class with the generic attribute lookup, so
   that reading the slot is what getattr does. 1 when learnt (and remembered, with the class's
   version tag, which CPython changes whenever the class or a base is modified), 0 when not. */
static int learn_slots(Encoder *self, PyTypeObject *t) {
    Py_CLEAR(self->slot_type);
    if (t->tp_getattro != PyObject_GenericGetAttr) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *d = _PyType_Lookup(t, self->names[i]); /* borrowed; assigns a version tag */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            return 0;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)d)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READ_RESTRICTED)) {
            return 0;
        }
        self->slot_offsets[i] = member->offset;
    }
    if (!PyType_HasFeature(t, Py_TPFLAGS_VALID_VERSION_TAG)) {
        return 0;
    }
    Py_INCREF(t);
    self->slot_type = t;
    self->slot_version = t->tp_version_tag;
    return 1;
}

/* Field i of `event` (a new reference), NULL with an exception set: from its slot when the event's
   class is the one learnt (exactly getattr's answer, without its lookup through the MRO: ~30% of
   the instructions of an event's encoding), else through getattr; an empty slot goes through
   getattr too, which raises AttributeError as it should. */
static inline PyObject *read_field(Encoder *self, PyObject *event, Py_ssize_t i, int slotted) {
    if (slotted) {
        PyObject *v = *(PyObject **)((char *)event + self->slot_offsets[i]);
        if (v != NULL) {
            return Py_NewRef(v);
        }
    }
    return PyObject_GetAttr(event, self->names[i]);
}

static PyObject *Encoder_vectorcall(Encoder *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        PyErr_SetString(PyExc_TypeError, "Encoder takes no keyword arguments");
        return NULL;
    }
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "Encoder takes 2 arguments (event, head), %zd given", nargs);
        return NULL;
    }
    PyObject *event = args[0], *head = args[1];
    if (!PyBytes_Check(head)) {
        PyErr_Format(PyExc_TypeError, "head must be bytes, not %.100s", Py_TYPE(head)->tp_name);
        return NULL;
    }
    Out o;
    o.buf = o.inline_buf;
    o.len = 0;
    o.cap = (Py_ssize_t)sizeof(o.inline_buf);
    PyObject *result = NULL;
    if (put_bytes(&o, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head)) < 0) {
        goto done;
    }
    PyTypeObject *t = Py_TYPE(event);
    int slotted = t == self->slot_type && self->slot_version == t->tp_version_tag
                  && PyType_HasFeature(t, Py_TPFLAGS_VALID_VERSION_TAG);
    if (!slotted) {
        slotted = learn_slots(self, t);
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *v = read_field(self, event, i, slotted);
        if (v == NULL) {
            goto done;
        }
        int r = write_node(self->fields[i], v, &o);
        Py_DECREF(v);
        if (r < 0) {
            goto done;
        }
        if (r == 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(o.buf, o.len);
done:
    if (o.buf != o.inline_buf) {
        PyMem_Free(o.buf);
    }
    return result;
}

static void Encoder_free_fields(Encoder *self) {
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (self->names != NULL) {
            Py_XDECREF(self->names[i]);
        }
        if (self->fields != NULL) {
            wnode_free(self->fields[i]);
        }
    }
    PyMem_Free(self->names);
    PyMem_Free(self->fields);
    PyMem_Free(self->slot_offsets);
    Py_CLEAR(self->slot_type);
    self->names = NULL;
    self->fields = NULL;
    self->slot_offsets = NULL;
    self->n = 0;
}

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *spec;
    static char *kwlist[] = {"spec", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Encoder", kwlist, &spec)) {
        return NULL;
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(spec, 0))
        || !is_kind(PyTuple_GET_ITEM(spec, 0), "record") || !PyTuple_Check(PyTuple_GET_ITEM(spec, 1))) {
        PyErr_SetString(PyExc_ValueError, "bad spec: the root must be (\"record\", ((attribute, node), ...))");
        return NULL;
    }
    PyObject *fields = PyTuple_GET_ITEM(spec, 1);
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    Encoder *self = (Encoder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->names = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof(PyObject *));
    self->fields = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof(WNode *));
    self->slot_offsets = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof(Py_ssize_t));
    self->vectorcall = (vectorcallfunc)Encoder_vectorcall;
    if (self->names == NULL || self->fields == NULL || self->slot_offsets == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    self->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        if (!PyTuple_Check(field) || PyTuple_GET_SIZE(field) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(field, 0))) {
            PyErr_SetString(PyExc_ValueError, "bad spec: a field must be (attribute name, node)");
            goto fail;
        }
        PyObject *name = PyTuple_GET_ITEM(field, 0);
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        self->names[i] = name;
        self->fields[i] = wnode_new(PyTuple_GET_ITEM(field, 1), 0);
        if (self->fields[i] == NULL) {
            goto fail;
        }
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static void Encoder_dealloc(Encoder *self) {
    Encoder_free_fields(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streams.codec._cavro.Encoder",
    .tp_doc = "Encoder(spec): encoder(event, head) -> head + Avro body, or None (see the source's head comment).",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Encoder_new,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Encoder, vectorcall),
};

static PyObject *decimal_layout(PyObject *self, PyObject *decimal_type) {
    (void)self;
    return PyBool_FromLong(dec_layout_check(decimal_type));
}

static PyMethodDef module_methods[] = {
    {"decimal_layout", decimal_layout, METH_O,
     "decimal_layout(decimal_type) -> whether an Encoder reads the Decimals of this type in place (their "
     "layout confirmed on probes), instead of making their text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams.codec._cavro",
    .m_doc = "The codec's fast paths in C: Reader (direct.py) and Encoder (encoder.py); see the source's head comment.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__cavro(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    /* PyModule_AddType readies each type and adds it under the last part of its tp_name */
    if (PyModule_AddType(m, &ReaderType) < 0 || PyModule_AddType(m, &EncoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
