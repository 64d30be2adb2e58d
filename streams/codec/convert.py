"""Converters compiled once per schema: decimals between Avro bytes and canonical `Decimal`.

The codec reads and writes with a *raw* copy of each schema in which decimal fields are plain
`bytes`; these converters, built by walking the logical schema once at load time, do the decimal
work on exactly the fields that need it. That keeps per-record work to what the schema requires,
lets decoded decimals come out canonical in one step, and gives encode errors a field path.

Supported shapes (all our schemas use only these): records, arrays, `["null", X]` unions, named
references to records defined earlier in the same schema, and `bytes`/decimal leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from streams.codec.decimals import canonical, decimal_reader, decimal_writer
from streams.codec.errors import EncodeError, SchemaLoadError

Conv = Callable[[Any], Any]
WireConv = Callable[[Any, str], Any]
Names = dict[str, Mapping[str, Any]]


def is_decimal(schema: Any) -> bool:
    """True for a `bytes`/`fixed` schema carrying the decimal logical type."""
    return isinstance(schema, Mapping) and schema.get("logicalType") == "decimal"


def _nullable(schema: list[Any]) -> Any:
    """The non-null branch of a `["null", X]` union, or raise for unions we don't convert."""
    rest = [b for b in schema if b != "null"]
    if len(rest) != 1 or len(schema) != 2:
        raise SchemaLoadError(f"unsupported union with conversions: {schema!r}")
    return rest[0]


def _register(schema: Mapping[str, Any], names: Names) -> None:
    names[schema["name"]] = schema
    if "namespace" in schema:
        names[f"{schema['namespace']}.{schema['name']}"] = schema


def decode_converter(schema: Any, leaf: Callable[[Mapping[str, Any]], Conv], names: Names) -> Conv | None:
    """In-place converter for a decoded value of `schema`, or None when nothing needs converting.

    `leaf(decimal_schema)` builds the function applied to each decimal value (raw bytes or an
    already-decoded Decimal, depending on how the value was read).
    """
    if isinstance(schema, str):
        return decode_converter(names[schema], leaf, names) if schema in names else None
    if isinstance(schema, list):
        inner = decode_converter(_nullable(schema), leaf, names) if _has_decimal(schema, names) else None
        return None if inner is None else (lambda v: v if v is None else inner(v))
    if is_decimal(schema):
        return leaf(schema)
    if schema.get("type") == "array":
        item = decode_converter(schema["items"], leaf, names)
        return None if item is None else (lambda v: [item(x) for x in v])
    if schema.get("type") == "record":
        _register(schema, names)
        fields = [(f["name"], decode_converter(f["type"], leaf, names)) for f in schema["fields"]]
        return _record_decoder([(n, c) for n, c in fields if c is not None])
    return None


def _record_decoder(fields: list[tuple[str, Conv]]) -> Conv | None:
    if not fields:
        return None

    def conv(rec: dict[str, Any]) -> dict[str, Any]:
        for name, c in fields:
            rec[name] = c(rec[name])
        return rec

    return conv


def _has_decimal(schema: Any, names: Names) -> bool:
    if isinstance(schema, str):
        return schema in names and _has_decimal(names[schema], names)
    if isinstance(schema, list):
        return any(_has_decimal(b, names) for b in schema)
    if is_decimal(schema):
        return True
    if schema.get("type") == "array":
        return _has_decimal(schema["items"], names)
    if schema.get("type") == "record":
        return any(_has_decimal(f["type"], names) for f in schema["fields"])
    return False


def raw_leaf(schema: Mapping[str, Any]) -> Conv:
    """Leaf for values read with the raw schema: bytes -> canonical Decimal."""
    return decimal_reader(int(schema.get("scale", 0)), int(schema["precision"]))


def logical_leaf(schema: Mapping[str, Any]) -> Conv:
    """Leaf for values fastavro already decoded as Decimal (schema resolution path)."""
    return canonical


def wire_converter(schema: Any, names: Names, path: str = "") -> WireConv | None:
    """Converter from a plain mapping (decimals as Decimal/int/str) to raw-schema-ready values.

    Returns new containers (the caller's mapping is never mutated); None when nothing converts.
    """
    if isinstance(schema, str):
        return wire_converter(names[schema], names, path) if schema in names else None
    if isinstance(schema, list):
        inner = wire_converter(_nullable(schema), names, path) if _has_decimal(schema, names) else None
        return None if inner is None else (lambda v, p: v if v is None else inner(v, p))
    if is_decimal(schema):
        return decimal_writer(int(schema.get("scale", 0)), int(schema["precision"]))
    if schema.get("type") == "array":
        item = wire_converter(schema["items"], names, f"{path}[]")
        return None if item is None else (lambda v, p: [item(x, p) for x in v])
    if schema.get("type") == "record":
        _register(schema, names)
        fields = [(f["name"], wire_converter(f["type"], names, _join(path, f["name"])))
                  for f in schema["fields"]]
        return _record_wire([(n, c, _join(path, n)) for n, c in fields if c is not None])
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _record_wire(fields: list[tuple[str, WireConv, str]]) -> WireConv | None:
    if not fields:
        return None

    def conv(rec: Mapping[str, Any], _path: str) -> dict[str, Any]:
        if not isinstance(rec, Mapping):
            raise EncodeError(f"expected a mapping, got {type(rec).__name__}", _path)
        out = dict(rec)
        for name, c, path in fields:
            try:
                out[name] = c(rec[name], path)
            except KeyError:
                raise EncodeError("missing", path) from None
        return out

    return conv


def _items(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple records
        return list(zip(obj._fields, obj, strict=True))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    raise EncodeError(f"expected a record or event, got {type(obj).__name__}")


def _is_struct(x: Any) -> bool:
    return (isinstance(x, tuple) and hasattr(x, "_fields")) or dataclasses.is_dataclass(x)


def _avro_name(attr: str) -> str:
    return "class" if attr == "cls" else attr


def _plain_tuple(value: tuple[Any, ...]) -> list[Any]:
    return [to_mapping(x) if _is_struct(x) else x for x in value]


def to_mapping(obj: Any) -> dict[str, Any]:
    """A record (NamedTuple) or event (dataclass) as a plain mapping keyed by Avro field names.

    `cls` becomes `class`; decimals stay `Decimal`; tuples become lists (of mappings for nested records).
    """
    out: dict[str, Any] = {}
    for name, value in _items(obj):
        out[_avro_name(name)] = _plain_tuple(value) if isinstance(value, tuple) else value
    return out


def dataclass_wire(cls: type, definition: Mapping[str, Any]) -> Callable[[Any], dict[str, Any]] | None:
    """`to_wire(to_mapping(obj), "")` for instances of exactly the dataclass `cls`, in one pass.

    This is how output events are encoded: the fields and their converters are looked up once here
    instead of per event, and no intermediate mapping is built. Each value goes through the same
    steps as on the generic path (tuples to lists, then the field's converter with the same error
    path), so the result, and any EncodeError, is the same. None when `cls` and the schema don't
    name the same fields: the generic path then reports the difference when encoding.
    """
    attrs = [f.name for f in dataclasses.fields(cls)]
    if sorted(map(_avro_name, attrs)) != sorted(f["name"] for f in definition["fields"]):
        return None
    names: Names = {}
    _register(definition, names)
    types = {f["name"]: f["type"] for f in definition["fields"]}
    fields: list[tuple[str, str, WireConv | None]] = []
    for attr in attrs:
        name = _avro_name(attr)
        fields.append((attr, name, wire_converter(types[name], names, name)))

    def to_wire(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, name, conv in fields:
            value = getattr(obj, attr)
            if isinstance(value, tuple):
                value = _plain_tuple(value)
            out[name] = value if conv is None else conv(value, name)
        return out

    return to_wire


def jsonable(v: Any) -> Any:
    """Decimals as strings, lists recursively; the shape `Event.to_dict()` produces."""
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v
