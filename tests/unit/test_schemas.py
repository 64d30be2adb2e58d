"""The Avro schemas in `schemas/`: valid for fastavro, faithful to the record/event types, exact decimals."""

from __future__ import annotations

import dataclasses
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.codec import SCHEMA_DIR
from streams.core.events import EVENT_TYPES
from streams.core.records import FEED_OF

TYPES: dict[str, type] = {c.__name__: c for c in [*FEED_OF, *EVENT_TYPES.values()]}
SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.avsc"))


def _load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def _avro_names(cls: Any) -> list[str]:
    names = cls._fields if hasattr(cls, "_fields") else [f.name for f in dataclasses.fields(cls)]
    return ["class" if n == "cls" else n for n in names]


def _sample(schema: Any, variant: int) -> Any:
    """A value of `schema`; `variant` 0 takes the null branch of optional fields, 1 the other."""
    if isinstance(schema, list):
        return None if variant == 0 and "null" in schema else _sample(schema[-1], variant)
    if isinstance(schema, dict) and schema.get("logicalType") == "decimal":
        return Decimal("-1234.000000000001")
    kind = schema["type"] if isinstance(schema, dict) else schema
    if kind == "record":
        return {f["name"]: _sample(f["type"], variant) for f in schema["fields"]}
    if kind == "array":
        return [_sample(schema["items"], variant), _sample(schema["items"], 1)]
    return {"string": "XAU-PERP", "long": 1_780_000_000_000, "boolean": True}[kind]


def test_one_schema_per_record_and_event() -> None:
    """Every input record and output event has exactly one schema file, named after its class."""
    assert {p.stem for p in SCHEMA_FILES} == set(TYPES)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_schema_parses_with_fastavro(path: Path) -> None:
    """fastavro accepts the schema and it lives in the io.divmon namespace."""
    schema = _load(path)
    fastavro.parse_schema(schema)
    assert schema["namespace"] == "io.divmon"
    assert schema["name"] == path.stem


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_fields_match_record_type(path: Path) -> None:
    """Field names and order are exactly the type's (with `cls` spelled `class`)."""
    schema = _load(path)
    assert [f["name"] for f in schema["fields"]] == _avro_names(TYPES[path.stem])


def _decimal_schemas(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, list):
        return [d for b in schema for d in _decimal_schemas(b)]
    if not isinstance(schema, dict):
        return []
    if schema.get("logicalType") == "decimal":
        return [schema]
    found = [d for f in schema.get("fields", []) for d in _decimal_schemas(f["type"])]
    return found + (_decimal_schemas(schema["items"]) if "items" in schema else [])


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_decimals_are_bytes_38_12(path: Path) -> None:
    """Every decimal is Avro bytes decimal(38,12): one exact type for positions, prices and money."""
    for dec in _decimal_schemas(_load(path)):
        assert (dec["type"], dec["precision"], dec["scale"]) == ("bytes", 38, 12)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_optional_fields_are_null_first_with_null_default(path: Path) -> None:
    """Optional fields are `["null", X]` unions defaulting to null (absent stays absent)."""
    for field in _load(path)["fields"]:
        if isinstance(field["type"], list):
            assert field["type"][0] == "null"
            assert "default" in field
            assert field["default"] is None


@pytest.mark.parametrize("variant", [0, 1], ids=["nulls", "values"])
@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_sample_round_trips_through_fastavro(path: Path, variant: int) -> None:
    """A sample of each schema survives fastavro write/read unchanged, nulls and decimals included."""
    parsed = fastavro.parse_schema(_load(path))
    sample = _sample(_load(path), variant)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, sample)
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, parsed, None) == sample
