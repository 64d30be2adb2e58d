"""Compiled event encoders write fastavro's bytes, or step aside so the reference path raises its error."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import EventCodec, SchemaIds, default_schemas
from streams.codec import decimals as decimals_module
from streams.codec import encoder as encoder_module
from streams.codec.codec import write_body
from streams.codec.convert import to_mapping
from streams.codec.encoder import compile_encoder, varint
from streams.core.events import EVENT_TYPES, AvailGapFlip, PositionMismatch
from tests.support.fake_registry import FakeRegistry, serve_fake_registry
from tests.unit.test_codec_fast import BASE_MISMATCH, EVENTS, _reference

D = Decimal
TS = 1_780_000_000_000
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
FIT = D("99999999999999999999999999.999999999999")  # the largest decimal(38,12)
NEG_FIT = D("-99999999999999999999999999.999999999999")  # (unary minus would round to 28 digits)

EDGE_LONGS = [0, 1, -1, 63, -64, 64, -65, 8191, 8192, -8193, 16383, 16384, TS, -TS, LONG_MAX, LONG_MIN,
              1 << 62, -(1 << 62), (1 << 49) - 1, 1 << 49]
EDGE_TEXT = ["", "prod", "EP3", "XAU-PERP", "é", "€", "日本語", "😀", "a" * 63, "b" * 64, "c" * 200, "\x00"]
EDGE_DECIMALS = [D(x) for x in ("0", "-0", "0.000", "0E-30", "0E+5", "1", "-1", "1.5", "-1.500000000000",
                                "0.000000000001", "-0.000000000001", "1E+10", "255", "-256", "128", "-129",
                                "13.000000000000000000000")] + [FIT, NEG_FIT]


def _decimals(fitting: bool) -> st.SearchStrategy[Any]:
    bounds = {"min_value": NEG_FIT, "max_value": FIT} if fitting else {}
    drawn = [st.decimals(allow_nan=False, allow_infinity=False, places=p, **bounds) for p in (0, 3, 12)]
    if fitting:  # the bounds are rounded to `places`, which can step outside them
        drawn = [s.filter(lambda d: NEG_FIT <= d <= FIT) for s in drawn]
    return st.one_of(st.sampled_from(EDGE_DECIMALS), *drawn)


# Values the reference path treats in its own way (converts, or refuses): the compiled encoder must
# give the same bytes or let the reference raise.
ODD_VALUES = st.sampled_from([
    None, True, False, 0.5, 1.0, 2, -3, "7", "1.5", "abc", b"bytes", D("NaN"), D("sNaN"), D("Infinity"),
    D("0.0000000000001"), D("1E+26"), LONG_MAX + 1, LONG_MIN - 1, 1 << 70, "\ud800", ["x"], ("x",), {"a": 1},
])


class Text(str):
    """A str subclass: not a shape the compiled encoder claims to know."""


def _value(schema: Any, fitting: bool) -> st.SearchStrategy[Any]:
    """A strategy of values of the logical `schema`; with `fitting=False` it mixes in odd values."""
    if isinstance(schema, list):
        branch = next(b for b in schema if b != "null")
        inner = st.one_of(st.none(), _value(branch, fitting))
    elif isinstance(schema, dict) and schema.get("logicalType") == "decimal":
        inner = _decimals(fitting)
    elif isinstance(schema, dict) and schema["type"] == "array":
        items = st.lists(_value(schema["items"], fitting), max_size=70)
        inner = st.one_of(items.map(tuple), items)
    elif schema == "string":
        inner = st.one_of(st.sampled_from(EDGE_TEXT), st.text())
        inner = inner if fitting else st.one_of(inner, inner.map(Text))
    elif schema == "long":
        inner = st.one_of(st.sampled_from(EDGE_LONGS), st.integers(LONG_MIN, LONG_MAX))
    elif schema == "boolean":
        inner = st.booleans()
    else:
        raise AssertionError(schema)
    return inner if fitting else st.one_of(inner, inner, inner, ODD_VALUES)


def _events(fitting: bool) -> st.SearchStrategy[Any]:
    def one(cls: type) -> st.SearchStrategy[Any]:
        types = {f["name"]: f["type"] for f in default_schemas()[cls.__name__].definition["fields"]}
        attrs = {f.name: _value(types["class" if f.name == "cls" else f.name], fitting)
                 for f in dataclasses.fields(cls)}
        return st.builds(cls, **attrs)

    return st.one_of(*[one(cls) for cls in EVENT_TYPES.values()])


def _outcome(fn: Any) -> Any:
    """What `fn()` returns, or the type and text of what it raises (not only EncodeError: e.g. a
    TypeError for None where an array belongs, as the reference path has always raised)."""
    try:
        return fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _compiled(event: Any) -> Any:
    """The compiled encoder an EventCodec uses for this event's class."""
    return EventCodec()._compiled[type(event)][1]


def _decoded(event: Any, data: bytes) -> dict[str, Any]:
    schema = default_schemas()[type(event).__name__]
    value: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema.parsed, None)  # type: ignore[assignment]
    return value


def _as_read(v: Any) -> Any:
    """What fastavro gives back for `v`: arrays as lists (decimals compare by value)."""
    return [_as_read(x) for x in v] if isinstance(v, tuple) else v


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(_events(fitting=True))
def test_compiled_bytes_equal_fastavro_and_decode_back(event: Any) -> None:
    """Any well-typed event that fits its schema is written by the compiled encoder (no fallback), to
    fastavro's bytes, and fastavro reads the same values back."""
    head = b"\xc3\x01" + default_schemas()[type(event).__name__].fingerprint
    compiled = _compiled(event)(event, head)
    assert compiled is not None
    assert compiled == _reference(event) == EventCodec().encode_event(event)
    decoded = _decoded(event, compiled)
    assert decoded == {k: _as_read(v) for k, v in to_mapping(event).items()}


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(_events(fitting=False))
def test_any_value_shape_gives_reference_bytes_or_error(event: Any) -> None:
    """With odd values mixed in (wrong types, out of range, unencodable), encode_event gives exactly the
    reference outcome: the same bytes, or an EncodeError with the same message."""
    codec = EventCodec()
    expected = _outcome(lambda: _reference(event))
    assert _outcome(lambda: codec.encode_event(event)) == expected
    assert _outcome(lambda: codec.encode_event(event)) == expected  # again, from the caches


@pytest.mark.parametrize(("field", "value"), [
    ("version", True), ("version", LONG_MAX + 1), ("version", LONG_MIN - 1), ("first_seen_ts_ms", 1 << 80),
    ("confirmed_ts_ms", 1.5), ("account_id", Text("ACC-1")), ("account_id", "\udcff"), ("cls", 3),
    ("delta", 1.5), ("delta", None), ("delta", True), ("mark", D("sNaN")), ("mark", D("NaN")),
    ("mark", D("0.0000000000001")), ("re_qty", D("1E+26")),
])
def test_compiled_encoder_steps_aside_for_what_it_does_not_know(field: str, value: Any) -> None:
    """The compiled encoder returns None or raises for such values; encode_event then gives the reference outcome."""
    event = dataclasses.replace(BASE_MISMATCH, **{field: value})
    try:
        result = _compiled(event)(event, b"")
    except Exception:  # raising is the other way to step aside
        result = None
    assert result is None
    assert _outcome(lambda: EventCodec().encode_event(event)) == _outcome(lambda: _reference(event))


def test_decimal_ints_and_strings_take_the_compiled_path() -> None:
    """An int or a decimal string in a decimal field is converted like the reference does, without fallback."""
    event = dataclasses.replace(BASE_MISMATCH, delta=-7, mark="2342.100", equity=D(5))
    data = _compiled(event)(event, b"\xc3\x01" + default_schemas()["PositionMismatch"].fingerprint)
    assert data == _reference(event)


def test_arrays_as_lists_and_tuples() -> None:
    """im_delta_symbols / im_deltas as tuples or lists, empty, short and beyond 64 items, write the reference bytes."""
    flip = next(e for e in EVENTS if isinstance(e, AvailGapFlip))
    codec = EventCodec()
    for n in (0, 1, 63, 64, 65, 200):
        symbols = [f"S{i}" for i in range(n)]
        deltas = [None if i % 3 == 0 else D(i) / 7 for i in range(n)]
        deltas = [d if d is None else d.quantize(D("1E-12")) for d in deltas]
        for shape in (tuple, list):
            event = dataclasses.replace(flip, im_delta_symbols=shape(symbols), im_deltas=shape(deltas))
            assert codec.encode_event(event) == _reference(event)


def test_every_event_type_is_compiled() -> None:
    """Each output event class has a compiled encoder, and it writes the reference bytes."""
    codec = EventCodec()
    for event in EVENTS:
        assert _compiled(event) is not None
        assert codec.encode_event(event) == _reference(event)


@dataclasses.dataclass(frozen=True)
class _Probe:
    a: Any


@pytest.mark.parametrize("field_type", [
    "double", "int", "bytes", {"type": "map", "values": "string"}, ["null", "string", "long"], ["string", "long"],
    {"type": "fixed", "name": "F", "size": 16, "logicalType": "decimal", "precision": 38, "scale": 12},
    {"type": "enum", "name": "E", "symbols": ["A"]},
])
def test_unsupported_schema_shapes_are_not_compiled(field_type: Any) -> None:
    """A schema using a shape the compiler doesn't handle gets no compiled encoder (the reference path is used)."""
    definition = {"type": "record", "name": "Probe", "fields": [{"name": "a", "type": field_type}]}
    assert compile_encoder(_Probe, definition) is None


def test_fields_must_match_exactly() -> None:
    """A class whose fields differ from the schema's gets no compiled encoder."""
    definition = {"type": "record", "name": "Probe", "fields": [{"name": "b", "type": "long"}]}
    assert compile_encoder(_Probe, definition) is None
    assert compile_encoder(_Probe, {"type": "record", "name": "Probe", "fields": [{"name": "a", "type": "long"}]})


def test_null_second_union_and_nested_array() -> None:
    """`[X, "null"]` unions and arrays inside unions encode as fastavro does."""
    definition = {"type": "record", "name": "Probe", "fields": [
        {"name": "a", "type": [{"type": "array", "items": ["long", "null"]}, "null"]}]}
    encode = compile_encoder(_Probe, definition)
    assert encode is not None
    parsed = fastavro.parse_schema(definition)
    for a in (None, (), [], (1, None, -5), [TS] * 70):
        bio = io.BytesIO()
        # (as a list: fastavro reads a tuple in a union as (branch name, value); events' arrays reach
        # fastavro as lists, and the compiled encoder takes tuples only at the top of a field)
        fastavro.schemaless_writer(bio, parsed, {"a": a if a is None else list(a)}, strict=True)
        assert encode(_Probe(a), b"") == bio.getvalue()


@given(st.integers(0, (1 << 64) - 1))
def test_varint_is_fastavros(z: int) -> None:
    """The varint helper writes a zig-zagged long as fastavro does."""
    v = (z >> 1) ^ -(z & 1)  # un-zig-zag
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, "long", v)
    assert varint(z) == bio.getvalue()


def test_caches_stay_bounded_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct strings, decimals and timestamps than the caches hold: they start over, stay exact."""
    monkeypatch.setattr(encoder_module, "STRING_CACHE_MAX", 4)
    monkeypatch.setattr(encoder_module, "HIGH_CACHE_MAX", 2)
    monkeypatch.setattr(decimals_module, "WRITE_CACHE_MAX", 4)
    codec = EventCodec()  # with the native build, its C encoders share the decimal caches (prefix b"")
    python = compile_encoder(PositionMismatch, default_schemas()["PositionMismatch"].definition, native=False)
    assert python is not None
    head = b"\xc3\x01" + default_schemas()["PositionMismatch"].fingerprint
    caches = [v for k, v in python.__globals__.items() if k != "__builtins__" and isinstance(v, dict)]
    caches += [c for c in encoder_module.DECIMAL_CACHES.values() if all(c is not x for x in caches)]
    assert len(caches) > 10
    for cache in caches:
        cache.clear()  # shared per process: other tests filled them
    for _ in range(2):
        for i in range(60):
            event = dataclasses.replace(BASE_MISMATCH, account_id=f"ACC-{i}", delta=D(i) / 8, mark=D(-i) / 4,
                                        first_seen_ts_ms=TS + i * 100_000, version=i)
            assert codec.encode_event(event) == _reference(event) == python(event, head)
            assert all(len(c) <= 4 for c in caches)


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with serve_fake_registry() as reg:
        yield reg


def test_confluent_framing_with_compiled_encoders(registry: FakeRegistry) -> None:
    """With a registry, compiled bytes are 00 + id + the same body as single-object framing carries."""
    codec = EventCodec(registry=SchemaIds.from_url(registry.url))
    plain = EventCodec()
    for event in EVENTS:
        data = codec.encode_event(event)
        sid = registry.ids[default_schemas()[type(event).__name__].text]
        assert data[:5] == b"\x00" + sid.to_bytes(4, "big")
        assert data[5:] == plain.encode_event(event)[10:]


def test_reference_body_is_fastavro_of_the_logical_schema() -> None:
    """Sanity of the reference itself: its body is what fastavro writes from the logical schema."""
    schema = default_schemas()["PositionMismatch"]
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, schema.parsed, to_mapping(BASE_MISMATCH), strict=True)
    assert write_body(schema, to_mapping(BASE_MISMATCH)) == bio.getvalue()
    assert isinstance(BASE_MISMATCH, PositionMismatch)
