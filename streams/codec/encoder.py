"""Avro encoders compiled once per event class: Python source generated from the schema, then `exec`'d
(or, with the native build, the same encoder in C: `streams/codec/_cavro.c`, from a spec of the schema).

fastavro's writer walks the schema for every value and resolves each union by trying its branches
(about 1 µs a field; 19 µs for a `PositionMismatch` even with decimals already bytes). For our own
event classes the walk is done once here instead: `compile_encoder(cls, definition)` generates one
function that reads the dataclass attributes in schema order and returns the framed message as one
`b"".join` of the parts: a union's branch index, zig-zag varints, length-prefixed UTF-8 and
decimal bytes (the latter from bounded caches of recently written values, prefix included).

Guarantee: the bytes are fastavro's bytes, or there are none. The generated code accepts only
value shapes whose encoding it knows exactly (`str`, `int` in the long range, `bool`, `None`,
`Decimal`/int/decimal-string decimals, tuples and lists for arrays); for anything else, or when
anything raises, it returns None and the caller takes the reference path (fastavro, strict), which
gives the same bytes or raises the same error. Schemas using other shapes compile to None.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from streams.codec import decimals
from streams.codec.convert import is_decimal

Encoder = Callable[[Any, bytes], "bytes | None"]

# String fields whose values (nearly) never repeat: caching their encoding would only churn the cache.
UNCACHED_STRINGS = frozenset({"event_id"})
STRING_CACHE_MAX = 1 << 14
HIGH_CACHE_MAX = 1 << 12

_SMALL = tuple(bytes([z]) for z in range(128))  # zig-zagged values below 128 are one byte
_ZERO, _TRUE = _SMALL[0], _SMALL[1]


def varint(z: int) -> bytes:
    """Little-endian base-128 varint of a non-negative (already zig-zagged) integer."""
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@functools.cache
def _low14() -> tuple[bytes, ...]:
    """The two leading bytes of every varint at or above 2**14, by its low 14 bits."""
    return tuple(bytes([(lo & 0x7F) | 0x80, ((lo >> 7) & 0x7F) | 0x80]) for lo in range(1 << 14))


def _remember(cache: dict[Any, bytes], key: Any, out: bytes, limit: int) -> bytes:
    if len(cache) >= limit:
        cache.clear()  # a full cache starts over, like decimals.WRITE_CACHES
    cache[key] = out
    return out


def _high_writer() -> tuple[dict[int, bytes], Callable[[int], bytes]]:
    """(cache, miss) for the varint of `z >> 14`, the part after the 14 low bits of a long of 3+ bytes.

    Timestamps (42 bits zig-zagged) share it for 8 s, so the varint loop runs rarely. `miss` raises
    OverflowError when `z` is beyond 64 bits, i.e. the value was outside the long range.
    """
    cache: dict[int, bytes] = {}

    def miss(hi: int) -> bytes:
        if hi >> 50:
            raise OverflowError("outside the Avro long range")
        return _remember(cache, hi, varint(hi), HIGH_CACHE_MAX)

    return cache, miss


# union branch prefix -> {str: prefix + length-prefixed UTF-8}, shared by every string field (bounded).
STRING_CACHES: dict[bytes, dict[str, bytes]] = {}


def _string_writer(cache: dict[str, bytes] | None, prefix: bytes) -> Callable[[str], bytes]:
    """`prefix` + length-prefixed UTF-8 of a `str`, remembered in `cache` (bounded) when one is given."""

    def write(s: str) -> bytes:
        raw = s.encode()
        n = len(raw) << 1
        out = prefix + (_SMALL[n] if n < 0x80 else varint(n)) + raw
        return out if cache is None else _remember(cache, s, out, STRING_CACHE_MAX)

    return write


# (scale, precision, union branch prefix) -> {Decimal: prefix + length-prefixed Avro decimal bytes}.
DECIMAL_CACHES: dict[tuple[int, int, bytes], dict[Decimal, bytes]] = {}


@functools.cache
def _decimal_writer(scale: int, precision: int, prefix: bytes) -> tuple[dict[Decimal, bytes], Callable[[Any], bytes]]:
    """(cache, miss) for a decimal field: `cache[d]` holds its encoding (`prefix` = union branch, if any).

    `miss` converts exactly through `decimals.exact_writer` (raising EncodeError, never rounding) and
    remembers values of type exactly `Decimal`, the only ones the generated code looks up (see
    `decimals.decimal_writer` for why). Caches are per (scale, precision, prefix), bounded like
    `decimals.WRITE_CACHES` (a fresh value costs its conversion and one hash, ~2 µs; a hit ~0.1 µs).
    """
    cache = DECIMAL_CACHES.setdefault((scale, precision, prefix), {})
    exact = decimals.exact_writer(scale, precision)

    def miss(v: Any) -> bytes:
        raw = exact(v, "")
        n = len(raw) << 1
        out = prefix + (_SMALL[n] if n < 0x80 else varint(n)) + raw
        if type(v) is Decimal:
            if len(cache) >= decimals.WRITE_CACHE_MAX:
                cache.clear()
            cache[v] = out
        return out

    return cache, miss


class _Unsupported(Exception):
    """A schema shape this compiler does not handle: no compiled encoder (the reference path is used)."""


class _Source:
    """Lines of the generated function and the constants its code refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        high_cache, high = _high_writer()
        self.names: dict[str, Any] = {
            "SMALL": _SMALL, "LOW": _low14(), "HIGH": high_cache, "high": high, "Decimal": Decimal,
        }
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, prefix: str, value: Any) -> str:
        name = self.fresh(prefix)
        self.names[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _null_union(schema: list[Any]) -> tuple[int, Any]:
    """(index of the non-null branch, its schema) of a two-branch union with null."""
    if len(schema) != 2 or "null" not in schema or schema[0] == schema[1]:
        raise _Unsupported(f"union {schema!r}")
    index = 1 - schema.index("null")
    return index, schema[index]


def _value(
    src: _Source, schema: Any, v: str, out: str, indent: int, field: str, prefix: bytes = b"", top: bool = True
) -> None:
    """Emit statements assigning to `out` `prefix` + the encoding of the value in variable `v`.

    The emitted code does `return None` for a value it cannot encode exactly as fastavro would.
    `top`: `v` is a field's value (the reference path turns a tuple there into a list; deeper down
    it doesn't, and fastavro reads a tuple in a union as (branch name, value)).
    """
    if isinstance(schema, list):
        index, branch = _null_union(schema)
        src.emit(indent, f"if {v} is None:")
        src.emit(indent + 1, f"{out} = {prefix + bytes([(1 - index) << 1])!r}")
        src.emit(indent, "else:")
        _value(src, branch, v, out, indent + 1, field, prefix + bytes([index << 1]), top)
    elif is_decimal(schema):
        if schema.get("type") != "bytes":
            raise _Unsupported(f"decimal {schema!r}")
        cache, miss = _decimal_writer(int(schema.get("scale", 0)), int(schema["precision"]), prefix)
        c, m = src.const("dc", cache), src.const("dmiss", miss)
        src.emit(indent, f"{out} = {c}.get({v}) if type({v}) is Decimal else None")
        src.emit(indent, f"if {out} is None:")
        src.emit(indent + 1, f"{out} = {m}({v})")
    elif isinstance(schema, Mapping) and schema.get("type") == "array" and len(schema) == 2:
        _array(src, schema["items"], v, out, indent, field, prefix, top)
    elif isinstance(schema, Mapping):
        raise _Unsupported(f"type {schema!r}")
    elif schema == "string":
        _string(src, v, out, indent, field, prefix)
    elif schema == "long":
        src.emit(indent, f"if type({v}) is not int:")
        src.emit(indent + 1, "return None")
        _long(src, v, out, indent, prefix)
    elif schema == "boolean":
        src.emit(indent, f"if {v} is True:")
        src.emit(indent + 1, f"{out} = {prefix + _TRUE!r}")
        src.emit(indent, f"elif {v} is False:")
        src.emit(indent + 1, f"{out} = {prefix + _ZERO!r}")
        src.emit(indent, "else:")
        src.emit(indent + 1, "return None")
    else:
        raise _Unsupported(f"type {schema!r}")


def _long(src: _Source, v: str, out: str, indent: int, prefix: bytes) -> None:
    """Zig-zag varint of the int in `v`, inlined: one byte, two bytes, or table bytes + cached high part.

    `z = (v << 1) ^ (v >> 63)` is below 2**64 exactly when `v` is in the long range; `high` raises
    OverflowError for a larger one (the caller then takes the reference path, which reports it).
    """
    z, hi = src.fresh("z"), src.fresh("h")
    pre = f"{prefix!r} + " if prefix else ""
    src.emit(indent, f"{z} = ({v} << 1) ^ ({v} >> 63)")
    src.emit(indent, f"if {z} < 128:")
    src.emit(indent + 1, f"{out} = {pre}SMALL[{z}]")
    src.emit(indent, f"elif {z} < 16384:")
    src.emit(indent + 1, f"{out} = {pre}bytes((({z} & 127) | 128, {z} >> 7))")
    src.emit(indent, "else:")
    src.emit(indent + 1, f"{hi} = HIGH.get({z} >> 14)")
    src.emit(indent + 1, f"if {hi} is None:")
    src.emit(indent + 2, f"{hi} = high({z} >> 14)")
    src.emit(indent + 1, f"{out} = {pre}LOW[{z} & 16383] + {hi}")


def _string(src: _Source, v: str, out: str, indent: int, field: str, prefix: bytes) -> None:
    src.emit(indent, f"if type({v}) is not str:")
    src.emit(indent + 1, "return None")
    if field in UNCACHED_STRINGS:
        src.emit(indent, f"{out} = {src.const('sw', _string_writer(None, prefix))}({v})")
        return
    cache = STRING_CACHES.setdefault(prefix, {})
    c, w = src.const("sc", cache), src.const("sw", _string_writer(cache, prefix))
    src.emit(indent, f"{out} = {c}.get({v})")
    src.emit(indent, f"if {out} is None:")
    src.emit(indent + 1, f"{out} = {w}({v})")


def _array(src: _Source, items: Any, v: str, out: str, indent: int, field: str, prefix: bytes, top: bool) -> None:
    """Arrays as fastavro writes them: one block (count, items) then the zero count; empty is just 0."""
    parts, item, enc, n = src.fresh("a"), src.fresh("i"), src.fresh("e"), src.fresh("n")
    src.emit(indent, f"if type({v}) is not tuple and type({v}) is not list:" if top else f"if type({v}) is not list:")
    src.emit(indent + 1, "return None")
    src.emit(indent, f"if {v}:")
    src.emit(indent + 1, f"{n} = len({v})")
    _long(src, n, parts, indent + 1, prefix)
    src.emit(indent + 1, f"{parts} = [{parts}]")
    src.emit(indent + 1, f"for {item} in {v}:")
    _value(src, items, item, enc, indent + 2, field, top=False)
    src.emit(indent + 2, f"{parts}.append({enc})")
    src.emit(indent + 1, f"{parts}.append(b'\\x00')")
    src.emit(indent + 1, f"{out} = b''.join({parts})")
    src.emit(indent, "else:")
    src.emit(indent + 1, f"{out} = {prefix + _ZERO!r}")


def _spec(schema: Any, top: bool = True) -> tuple[Any, ...]:
    """The node of `schema` for the C encoder (streams/codec/_cavro.c): the shapes `_value` writes."""
    if isinstance(schema, list):
        index, branch = _null_union(schema)
        return ("union", 1 - index, _spec(branch, top))
    if is_decimal(schema):
        scale, precision = int(schema.get("scale", 0)), int(schema["precision"])
        cache, miss = _decimal_writer(scale, precision, b"")
        return ("decimal", cache, scale, precision, Decimal, decimals, "WRITE_CACHE_MAX", miss)
    if isinstance(schema, Mapping) and schema.get("type") == "array" and len(schema) == 2:
        return ("array", _spec(schema["items"], top=False), top)
    if schema in ("string", "long", "boolean"):
        return (schema,)
    raise _Unsupported(f"type {schema!r}")  # (compile_encoder has refused it already)


def compile_encoder(cls: type, definition: Mapping[str, Any], native: bool = True) -> Encoder | None:
    """`encode(event, header) -> header + body | None` for instances of exactly the dataclass `cls`.

    None (no encoder) when `cls` and the record schema don't name the same fields or the schema uses
    a shape not handled here. Attribute `cls` carries Avro field `class`. With the native build
    (`streams._native`) and `native`, the encoder is its C twin (streams/codec/_cavro.c), which
    writes the same bytes from the same spec; otherwise the generated Python below.
    """
    attrs = {("class" if f.name == "cls" else f.name): f.name for f in dataclasses.fields(cls)}
    schema_fields = definition.get("fields", [])
    if definition.get("type") != "record" or sorted(attrs) != sorted(f["name"] for f in schema_fields):
        return None
    src = _Source()
    outs = []
    try:
        for f in schema_fields:
            out = src.fresh("x")
            src.emit(1, f"v = ev.{attrs[f['name']]}")
            _value(src, f["type"], "v", out, 1, f["name"])
            outs.append(out)
    except _Unsupported:
        return None
    body = "\n".join(src.lines)
    code = f"def encode(ev, head):\n{body}\n    return b''.join((head, {', '.join(outs)}))\n"
    namespace = dict(src.names)
    exec(compile(code, f"<avro encoder {definition.get('name')}>", "exec"), namespace)
    encode: Encoder = namespace["encode"]
    encode.__doc__ = code  # the generated source, for debugging
    if native:
        from streams import _native

        c = _native.c_module()
        if c is not None:
            spec = ("record", tuple((attrs[f["name"]], _spec(f["type"])) for f in schema_fields))
            return c.Encoder(spec)  # type: ignore[no-any-return]
    return encode
