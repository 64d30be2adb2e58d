"""The Avro schemas of `schemas/`, loaded once and prepared for fast encode/decode.

Each file holds one top-level record in namespace `io.divmon`, named like the dataclass it carries
(`Fill`, `PositionMismatch`, ...). For each we keep the logical schema (what is registered and
fingerprinted), a *raw* copy whose decimals are plain `bytes` (what we read and write with), and the
converters between the two (see `convert.py`). Decimal logical types are not part of the Parsing
Canonical Form, so both copies have the same fingerprint.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.codec.convert import (
    Conv,
    WireConv,
    decode_converter,
    is_decimal,
    logical_leaf,
    raw_leaf,
    wire_converter,
)
from streams.codec.errors import SchemaLoadError

# streams/schemas links to the top-level schemas/ folder and ships in the wheel as package data
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
NAMESPACE = "io.divmon"

_EMPTY_64 = 0xC15D213AA4D7A795


def _rabin_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY_64 & -(fp & 1))
        table.append(fp)
    return tuple(table)


_RABIN = _rabin_table()


def rabin_fingerprint(canonical_form: str) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of a Parsing Canonical Form, as the 8 little-endian bytes
    that follow the magic in Avro single-object encoding."""
    fp = _EMPTY_64
    for byte in canonical_form.encode():
        fp = (fp >> 8) ^ _RABIN[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One loaded schema. Immutable; safe to share between codecs and threads."""

    name: str
    definition: Mapping[str, Any]
    text: str
    canonical_form: str
    fingerprint: bytes
    parsed: Any
    raw: Any
    fix_raw: Conv | None
    fix_logical: Conv | None
    to_wire: WireConv | None

    @property
    def fullname(self) -> str:
        return f"{self.definition.get('namespace', NAMESPACE)}.{self.name}"


def strip_decimals(schema: Any) -> Any:
    """A deep copy of `schema` in which every decimal is plain `bytes` (same canonical form)."""
    if isinstance(schema, list):
        return [strip_decimals(b) for b in schema]
    if not isinstance(schema, Mapping):
        return schema
    if is_decimal(schema):
        return "bytes"
    out = {k: strip_decimals(v) for k, v in schema.items() if k not in ("fields", "items")}
    if "fields" in schema:
        out["fields"] = [{**f, "type": strip_decimals(f["type"])} for f in schema["fields"]]
    if "items" in schema:
        out["items"] = strip_decimals(schema["items"])
    return out


def prepare(definition: Mapping[str, Any]) -> AvroSchema:
    """Parse and compile one schema definition; raises SchemaLoadError if fastavro rejects it."""
    try:
        parsed = fastavro.parse_schema(copy.deepcopy(dict(definition)))
        raw = fastavro.parse_schema(strip_decimals(definition))
        canonical_form = to_parsing_canonical_form(copy.deepcopy(dict(definition)))
    except Exception as exc:
        raise SchemaLoadError(f"invalid Avro schema {definition.get('name')!r}: {exc}") from exc
    return AvroSchema(
        name=str(definition["name"]),
        definition=definition,
        text=json.dumps(definition, separators=(",", ":")),
        canonical_form=canonical_form,
        fingerprint=rabin_fingerprint(canonical_form),
        parsed=parsed,
        raw=raw,
        fix_raw=decode_converter(definition, raw_leaf, {}),
        fix_logical=decode_converter(definition, logical_leaf, {}),
        to_wire=wire_converter(definition, {}),
    )


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[str, AvroSchema]:
    """Every `*.avsc` in `directory`, by record name. Raises SchemaLoadError on any problem."""
    files = sorted(directory.glob("*.avsc"))
    if not files:
        raise SchemaLoadError(f"no *.avsc schemas in {directory}")
    out: dict[str, AvroSchema] = {}
    for path in files:
        try:
            definition = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaLoadError(f"cannot read {path}: {exc}") from exc
        schema = prepare(definition)
        if schema.name != path.stem:
            raise SchemaLoadError(f"{path} defines {schema.name!r}; the file must be named after its record")
        out[schema.name] = schema
    return out


@functools.cache
def default_schemas() -> dict[str, AvroSchema]:
    """The repository's schemas, loaded once per process."""
    return load_schemas(SCHEMA_DIR)
