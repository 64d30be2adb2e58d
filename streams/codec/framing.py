"""Wire framing: Avro single-object encoding and the Confluent wire format, and header resolution.

Single-object (default, registry-free)::  C3 01 | CRC-64-AVRO fingerprint, 8 bytes little-endian | body
Confluent (with a Schema Registry)::       00 | schema id, 4 bytes big-endian | body

A `Resolver` turns a message header into a `Plan` (which schema to read the body with) and caches
that by header, so a batch pays one dict lookup per record and the registry at most once per id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import fastavro

from streams.codec.convert import Conv
from streams.codec.errors import DecodeError
from streams.codec.registry import SchemaIds
from streams.codec.schemas import AvroSchema, prepare

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_LEN = 5


def single_object_header(schema: AvroSchema) -> bytes:
    """The 10-byte single-object header of `schema`."""
    return SINGLE_OBJECT_MAGIC + schema.fingerprint


def confluent_header(schema_id: int) -> bytes:
    """The 5-byte Confluent header of a registry id."""
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Plan:
    """How to read a body: `writer` (parsed), optional `reader` for schema resolution, then `fix`."""

    target: AvroSchema
    writer: Any
    reader: Any
    fix: Conv | None


def fast_plan(schema: AvroSchema) -> Plan:
    """Our own schema wrote it: read with the raw copy, convert decimals ourselves (no resolution)."""
    return Plan(schema, schema.raw, None, schema.fix_raw)


def _fullname(definition: Mapping[str, Any]) -> str:
    name = str(definition.get("name", ""))
    namespace = definition.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


class Resolver:
    """Header -> (Plan, body offset) for a fixed set of target schemas. Raises DecodeError."""

    def __init__(self, targets: Sequence[AvroSchema], registry: SchemaIds | None) -> None:
        self._by_fp = {s.fingerprint: fast_plan(s) for s in targets}
        self._by_name = {s.fullname: s for s in targets}
        self._registry = registry
        self._by_id: dict[int, Plan | None] = {}

    def plan(self, data: bytes) -> tuple[Plan, int]:
        """The plan for `data` and where its body starts."""
        if not data:
            raise DecodeError("empty", "zero-length value")
        if data[0] == 0xC3:
            return self._single_object(data), SINGLE_OBJECT_HEADER_LEN
        if data[0] == 0x00:
            return self._confluent(data), CONFLUENT_HEADER_LEN
        raise DecodeError("bad_magic", f"first byte 0x{data[0]:02x}")

    def _single_object(self, data: bytes) -> Plan:
        if len(data) > 1 and data[1] != 0x01:
            raise DecodeError("bad_magic", f"single-object marker c3 {data[1]:02x}")
        if len(data) < SINGLE_OBJECT_HEADER_LEN:
            raise DecodeError("truncated", f"{len(data)}-byte single-object header")
        plan = self._by_fp.get(bytes(data[2:SINGLE_OBJECT_HEADER_LEN]))
        if plan is None:
            raise DecodeError("unknown_schema", f"fingerprint {bytes(data[2:10]).hex()}")
        return plan

    def _confluent(self, data: bytes) -> Plan:
        if self._registry is None:
            raise DecodeError("unknown_schema", "Confluent framing but no Schema Registry configured")
        if len(data) < CONFLUENT_HEADER_LEN:
            raise DecodeError("truncated", f"{len(data)}-byte Confluent header")
        schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big")
        if schema_id not in self._by_id:
            self._by_id[schema_id] = self._plan_for_writer(self._registry.writer_schema(schema_id))
        plan = self._by_id[schema_id]
        if plan is None:
            raise DecodeError("unknown_schema", f"schema id {schema_id}")
        return plan

    def _plan_for_writer(self, definition: Mapping[str, Any] | None) -> Plan | None:
        """Fast plan if the writer is one of ours; resolution against ours if only its name matches."""
        if definition is None:
            return None
        try:
            writer = prepare(definition)
        except Exception:
            return None
        if writer.fingerprint in self._by_fp:
            return self._by_fp[writer.fingerprint]
        target = self._by_name.get(_fullname(definition))
        if target is None:
            return None
        return Plan(target, writer.parsed, target.parsed, target.fix_logical)


def read_body(plan: Plan, data: bytes, offset: int) -> dict[str, Any]:
    """Decode the body of `data` from `offset` with `plan`; every failure is a DecodeError."""
    bio = BytesIO(data)
    bio.seek(offset)
    try:
        value: dict[str, Any] = fastavro.schemaless_reader(bio, plan.writer, plan.reader)  # type: ignore[assignment]
    except EOFError as exc:
        raise DecodeError("truncated", f"body ends early for {plan.target.name}") from exc
    except Exception as exc:
        raise DecodeError("malformed", f"{plan.target.name}: {type(exc).__name__}: {exc}") from exc
    if bio.tell() != len(data):
        raise DecodeError("trailing_bytes", f"{len(data) - bio.tell()} bytes after {plan.target.name}")
    if plan.fix is None:
        return value
    try:
        return plan.fix(value)  # type: ignore[no-any-return]
    except Exception as exc:
        raise DecodeError("malformed", f"{plan.target.name}: {exc}") from exc
