"""Direct decoding: an Avro body of one of our own schemas straight into its record, in one pass.

`Codec.decode_many` used to read each body with fastavro into a dict, convert its decimals, then
validate the dict field by field into a record. For bodies written with our own schema, the Avro
types already guarantee what most of that validation checks, so a reader compiled here from the
schema reads the bytes with plain indexing and slicing, builds the record's tuples as it goes
(decimals through the same bounded `ReadCache` as the generic path) and leaves to the caller only
the contract's rules beyond types (`streams.core.records.TYPED_RULES`).

It is a fast path, never a second opinion: it handles the canonical, well-formed encoding and
raises `Unsure` (or lets an IndexError, UnicodeDecodeError, ValueError... escape) for anything else
— a negative or blocked-with-size array count, a varint of 10 bytes or more, an unexpected union
branch, bytes missing or left over, a decimal wider than its precision. The caller then decodes
the same bytes on the generic path, which accepts them or gives the precise `DecodeError`; so
results and rejections are those of the generic path by construction.

Supported shapes: records whose fields match a NamedTuple class of the same name (same field names
in order), `string`, `long`/`int`, decimal `bytes`, arrays (read as tuples) and two-branch unions of
one of those with `null`. `compile_reader` (one body per buffer) and `compile_body` (bodies one after
another, e.g. tape entries) return None for any other schema, which then always takes the generic path.

Each reader built here also carries its `spec`, the same reader as data; with the native build
(`streams._native`, `make install`), `streams/codec/_cavro.c` compiles that spec and does the same
reads in C (~8x less time a record), and the functions here are what runs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from streams.codec import decimals
from streams.codec.decimals import read_cache

Read = Callable[[bytes, int], tuple[Any, int]]
Direct = Callable[[bytes, int], Any]


class Unsure(Exception):
    """These bytes are not the simple case: decode them on the generic path instead."""


_SHIFTS = (7, 14, 21, 28, 35, 42, 49, 56)


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint; only up to 9 bytes, where Python ints and fastavro's 64-bit ones agree."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n = b & 0x7F
    for shift in _SHIFTS:  # a loop over constants: ~20% cheaper than counting the shift (a timestamp: 6 bytes)
        pos += 1
        b = buf[pos]
        if b < 0x80:
            n |= b << shift
            return (n >> 1) ^ -(n & 1), pos + 1
        n |= (b & 0x7F) << shift
    raise Unsure


def _size(buf: bytes, pos: int) -> tuple[int, int]:
    """A byte length (one-byte case inline); a negative length is not ours to judge."""
    b = buf[pos]
    if b < 0x80 and not b & 1:
        return b >> 1, pos + 1
    n, pos = read_long(buf, pos)
    if n < 0:
        raise Unsure
    return n, pos


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    """UTF-8, strict, as fastavro decodes it. A slice past the end is caught by the caller's final length check."""
    b = buf[pos]
    if b < 0x80 and not b & 1:
        end = pos + 1 + (b >> 1)
        return buf[pos + 1:end].decode(), end
    n, pos = _size(buf, pos)
    end = pos + n
    return buf[pos:end].decode(), end


def _decimal(scale: int, precision: int) -> Read:
    cache = read_cache(scale, precision)

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        b = buf[pos]
        if b < 0x80 and not b & 1:
            end = pos + 1 + (b >> 1)
            return cache[buf[pos + 1:end]], end
        n, pos = _size(buf, pos)
        end = pos + n
        return cache[buf[pos:end]], end

    spec = ("decimal", cache, scale, precision, Decimal, decimals, "READ_CACHE_MAX")
    read.inline, read.cache, read.spec = "decimal", cache, spec  # type: ignore[attr-defined]
    return read


def _union(branches: list[Read | None]) -> Read:
    """A nullable value: the branch index is one byte (any other encoding is Unsure); `None` reads null."""

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        b = buf[pos]
        if b & 0x81 or (b >> 1) >= len(branches):
            raise Unsure
        branch = branches[b >> 1]
        return (None, pos + 1) if branch is None else branch(buf, pos + 1)

    value = next(b for b in branches if b is not None)
    read.spec = ("union", branches.index(None), value.spec)  # type: ignore[attr-defined]
    return read


def _array(item: Read) -> Read:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        out: list[Any] = []
        append = out.append
        n, pos = read_long(buf, pos)
        while n:
            if n < 0 or n > len(buf) - pos:  # a sized block, or more items than bytes left
                raise Unsure
            for _ in range(n):
                v, pos = item(buf, pos)
                append(v)
            n, pos = read_long(buf, pos)
        return tuple(out), pos

    read.spec = ("array", item.spec)  # type: ignore[attr-defined]
    return read


# The one-byte case of a field's read, written into its record's reader (saves a call per field);
# anything else goes to the field's reader, `{r}`.
_ONE_BYTE_LENGTH = """\
    b = buf[pos]
    if b < 0x80 and not b & 1:
        end = pos + 1 + (b >> 1)
        {v} = {value}
        pos = end
    else:
        {v}, pos = {r}(buf, pos)"""
_INLINE = {
    "string": _ONE_BYTE_LENGTH.replace("{value}", "buf[pos + 1:end].decode()"),
    "decimal": _ONE_BYTE_LENGTH.replace("{value}", "{c}[buf[pos + 1:end]]"),
    "long": """\
    b = buf[pos]
    if b < 0x80:
        {v} = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        {v}, pos = {r}(buf, pos)""",
}


def _record(cls: type, fields: list[Read]) -> Read:
    """`read(buf, pos)` reading each field in turn, unrolled, with the common case of simple fields inline."""
    scope: dict[str, Any] = {"new": tuple.__new__, "cls": cls}
    lines = ["def read(buf, pos):"]
    for i, field in enumerate(fields):
        scope[f"r{i}"] = field
        scope[f"c{i}"] = getattr(field, "cache", None)
        template = _INLINE.get(getattr(field, "inline", ""), "    {v}, pos = {r}(buf, pos)")
        lines.append(template.format(v=f"v{i}", r=f"r{i}", c=f"c{i}"))
    lines.append(f"    return new(cls, ({''.join(f'v{i}, ' for i in range(len(fields)))})), pos")
    exec("\n".join(lines), scope)  # our own text, as dataclasses and namedtuple do
    read = scope["read"]
    read.spec = ("record", cls, tuple(f.spec for f in fields))  # type: ignore[attr-defined]
    return read  # type: ignore[no-any-return]


read_long.inline, read_long.spec = "long", ("long",)  # type: ignore[attr-defined]
read_string.inline, read_string.spec = "string", ("string",)  # type: ignore[attr-defined]


class _Unsupported(Exception):
    """A schema shape this module does not read."""


def _compile(schema: Any, classes: Mapping[str, type], names: dict[str, Read]) -> Read | None:
    """A reader for `schema`, None for null; raises _Unsupported for shapes this module doesn't read."""
    if isinstance(schema, str):
        if schema in ("long", "int"):
            return read_long
        if schema == "string":
            return read_string
        if schema == "null":
            return None
        if schema in names:
            return names[schema]
        raise _Unsupported(schema)
    if isinstance(schema, list):
        branches = [_compile(b, classes, names) for b in schema]
        if len(branches) != 2 or branches.count(None) != 1:  # only ["null", X] and [X, "null"]
            raise _Unsupported(schema)
        return _union(branches)
    if not isinstance(schema, Mapping):
        raise _Unsupported(schema)
    kind, logical = schema.get("type"), schema.get("logicalType")
    if kind == "bytes" and logical == "decimal":
        return _decimal(int(schema.get("scale", 0)), int(schema["precision"]))
    if logical is not None:
        raise _Unsupported(logical)
    if kind == "array":
        item = _compile(schema["items"], classes, names)
        if item is None:
            raise _Unsupported("array of null")
        return _array(item)
    if kind == "record":
        return _compile_record(schema, classes, names)
    if isinstance(kind, str) and kind in ("long", "int", "string", "null"):
        return _compile(kind, classes, names)
    raise _Unsupported(kind)


def _compile_record(schema: Mapping[str, Any], classes: Mapping[str, type], names: dict[str, Read]) -> Read:
    cls = classes.get(schema["name"])
    fields = schema["fields"]
    if cls is None or getattr(cls, "_fields", None) != tuple(f["name"] for f in fields):
        raise _Unsupported(schema["name"])
    readers = []
    for f in fields:
        r = _compile(f["type"], classes, names)
        if r is None:
            raise _Unsupported("null field")
        readers.append(r)
    read = _record(cls, readers)
    names[schema["name"]] = read
    if "namespace" in schema:
        names[f"{schema['namespace']}.{schema['name']}"] = read
    return read


def compile_body(definition: Mapping[str, Any], classes: Mapping[str, type]) -> Read | None:
    """`read(data, pos) -> (record, end)` for one body of `definition` among others (e.g. entries of a
    container block), or None if unsupported. Like `compile_reader` but without the check that the
    body ends the data: the caller checks `end <= len(data)` (a string or decimal cut by the end of
    the data is sliced short, not refused; whatever follows it then fails) and that nothing is left.
    """
    try:
        read = _compile_record(definition, classes, {})
    except _Unsupported:
        return None
    native = _native_reader(read)
    return read if native is None else native.body


def compile_reader(definition: Mapping[str, Any], classes: Mapping[str, type]) -> Direct | None:
    """`read(data, offset) -> record` for bodies of the logical schema `definition`, or None if unsupported.

    `classes` maps record names to NamedTuple classes. `read` raises (Unsure or another exception)
    whenever the bytes are not a complete, canonical body; it never returns a partial record.
    """
    try:
        record = _compile_record(definition, classes, {})
    except _Unsupported:
        return None
    native = _native_reader(record)
    if native is not None:
        return native  # type: ignore[no-any-return]

    def read(data: bytes, offset: int) -> Any:
        value, end = record(data, offset)
        if end != len(data):
            raise Unsure
        return value

    return read


def _native_reader(read: Read) -> Any:
    """The C reader of `read`'s spec when the native build runs (see `streams._native`), else None."""
    from streams import _native

    c = _native.c_module()
    return None if c is None else c.Reader(read.spec, Unsure)  # type: ignore[attr-defined]
