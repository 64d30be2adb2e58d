"""The codec: exact round trips, framing, canonical decimals, registry ids, and typed poison errors."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.codec import (
    Codec,
    DecodeError,
    EncodeError,
    EventCodec,
    SchemaIds,
    canonical,
    default_schemas,
    input_codecs,
    rabin_fingerprint,
)
from streams.core.events import (
    AvailGapFlip,
    FeedHealth,
    PositionMismatch,
    SourceTransition,
    Unvaluable,
    WitnessCheck,
)
from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    Record,
    RiskPosition,
    RiskSnapshot,
)
from tests.support.fake_registry import FakeRegistry, evolved_mark, serve_fake_registry

D = Decimal
TS = 1_780_000_000_000

RECORDS: list[Record] = [
    Ep3PositionEvent("ACC-1", "SNAPSHOT", 7, TS, (PositionQty("XAU-PERP", D("13")), PositionQty("BTC", D("0")))),
    Ep3PositionEvent("ACC-1", "SNAPSHOT", 8, TS + 1, ()),
    Ep3PositionEvent("ACC-1", "UPDATE", 9, TS + 2, (PositionQty("ETH", D("-2.5")),)),
    RiskSnapshot(
        "ACC-1", TS, (RiskPosition("XAU-PERP", D("13"), D("7612.5")), RiskPosition("BTC", D("0"), None)),
        None, D("0"), D("100000.25"), D("92387.75"),
    ),
    OgMargin("ACC-1", TS, "EP3", None, D("12.5"), D("1000"), D("987.5")),
    OgMargin("ACC-2", TS, "RISK_ENGINE", D("0"), D("0"), D("0"), D("-3.000000000001")),
    Fill("F-1", "ACC-1", "XAU-PERP", D("-0.000000000001"), D("2342.1"), TS),
    Mark("XAU-PERP", D("2342.123456789012"), TS),
    Instrument("XAU-PERP", D("10"), D("0.025")),
]


BASE_MISMATCH = PositionMismatch(
    "e1", 2, "demo", "EP3", "ACC-1", "XAU-PERP", "confirmed", "never_in_cache", None, D("13"), D("-13"),
    TS, TS + 2000, None, "RE", D("2342.1"), D("-7612.5"), D("100000"), 150, D("7612.5"), D("92387.5"), D("0"),
)


def _mismatch(**kw: Any) -> PositionMismatch:
    return dataclasses.replace(BASE_MISMATCH, **kw)


EVENTS: list[Any] = [
    _mismatch(),
    _mismatch(cls=None, state="opened", ep3_qty=D("0"), confirmed_ts_ms=None, mark=None, im_delta=None,
              equity=None, snapshot_age_ms=None, re_im_total=None, re_avail=None, re_open_orders_margin=None),
    AvailGapFlip(
        "e2", 1, "prod", "RISK_ENGINE", "ACC-1", D("0"), "opened", TS, None, D("-5"), D("10"), D("-15"),
        D("1"), D("2"), None, D("7612.5"), D("1000"), 300, True, ("XAU-PERP", "BTC"), (None, D("0.5")),
    ),
    Unvaluable("e3", 1, "demo", "EP3", "ACC-1", "DOGE", "EP3", "opened", D("0"), "missing_mark", TS, None),
    WitnessCheck(
        "e4", 1, "demo", "EP3", "anomaly", TS, "ACC-1", "XAU-PERP", D("13"), None, "never_in_cache",
        "confirmed", "re_snapshot@1780000000000", TS, TS + 2000, None, "p0", None, None, None, None, None,
    ),
    WitnessCheck(
        "e5", 1, "demo", "EP3", "sweep", TS, None, None, None, None, None, None, None, None, None, None, "p0",
        120, 1, 1, 4, 3_600_000,
    ),
    SourceTransition("e6", 1, "prod", "EP3", TS, "RISK_ENGINE", "EP3", "ACC-1", "p0"),
    FeedHealth("e7", 1, "prod", "EP3", TS, "ep3.positions", 1200, "p0"),
]


def _codec(record: Record) -> Codec:
    return input_codecs()[next(f for f in Feed if Codec(f).record_type is type(record))]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_input_round_trip(record: Record) -> None:
    """Every input record decodes to an equal record: None stays None, 0 stays 0, the bookmark stays empty."""
    codec = _codec(record)
    assert codec.decode(codec.encode(record)) == record


def test_absent_and_zero_stay_distinct() -> None:
    """An `im` of None comes back None (not 0) and a qty of 0 comes back 0 (not absent)."""
    snap = RECORDS[3]
    assert isinstance(snap, RiskSnapshot)
    back = Codec(Feed.RISK).decode(Codec(Feed.RISK).encode(snap))
    assert isinstance(back, RiskSnapshot)
    assert back.im_total is None
    assert back.positions[1].im is None
    assert back.positions[1].qty == 0
    assert str(back.positions[1].qty) == "0"


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{e.TYPE}-{e.event_id}")
def test_event_round_trip(event: Any) -> None:
    """decode_event(encode_event(e)) is exactly e.to_dict(), nulls, booleans and arrays included."""
    codec = EventCodec()
    assert codec.decode_event(codec.encode_event(event)) == event.to_dict()


def test_decode_event_typed_keeps_decimals() -> None:
    """With as_json=False decimals come back as Decimal, and `class` keeps its Avro name."""
    out = EventCodec().decode_event(EventCodec().encode_event(EVENTS[0]), as_json=False)
    assert out["re_qty"] == D("13")
    assert isinstance(out["re_qty"], Decimal)
    assert out["class"] == "never_in_cache"
    assert out["ep3_qty"] is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("13.000000000000", "13"), ("0.500", "0.5"), ("10", "10"), ("1E+1", "10"), ("-0.000", "0"),
     ("-2500.0", "-2500"), ("123.456789012345", "123.456789012345"), ("0.000000000001", "1E-12")],
)
def test_decoded_decimals_are_canonical(given: str, expected: str) -> None:
    """Decimals decode without trailing fractional zeros and without positive exponents."""
    codec = Codec(Feed.MARKS)
    back = codec.decode(codec.encode(Mark("X", D(given), TS)))
    assert isinstance(back, Mark)
    assert str(back.price) == expected
    assert str(canonical(D(given))) == expected


@pytest.mark.parametrize("value", ["0.0000000000001", "1.0000000000001", "100000000000000000000000000"])
def test_encode_refuses_to_round(value: str) -> None:
    """A decimal that does not fit decimal(38,12) exactly raises EncodeError naming the field."""
    with pytest.raises(EncodeError, match="price"):
        Codec(Feed.MARKS).encode(Mark("X", D(value), TS))


def test_encode_accepts_trailing_zeros_beyond_scale() -> None:
    """Zeros beyond the scale are not digits: 1.50000000000000 encodes as 1.5."""
    codec = Codec(Feed.MARKS)
    back = codec.decode(codec.encode(Mark("X", D("1.50000000000000"), TS)))
    assert isinstance(back, Mark)
    assert back.price == D("1.5")


def test_encode_refuses_floats_and_wrong_record_type() -> None:
    """Floats never reach the wire; a record of another feed is refused."""
    with pytest.raises(EncodeError, match="float"):
        Codec(Feed.MARKS).encode_value({"symbol": "X", "price": 1.5, "ts_ms": TS})
    with pytest.raises(EncodeError, match="Mark"):
        Codec(Feed.FILLS).encode(RECORDS[7])


def test_single_object_header_and_fingerprint() -> None:
    """Bytes start with C3 01 and the 8-byte little-endian CRC-64-AVRO fingerprint fastavro computes."""
    for schema in default_schemas().values():
        form = to_parsing_canonical_form(dict(schema.definition))
        assert schema.canonical_form == form
        assert schema.fingerprint == bytes.fromhex(fingerprint(form, "CRC-64-AVRO"))
        assert rabin_fingerprint(form) == schema.fingerprint
    data = Codec(Feed.MARKS).encode(RECORDS[7])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == default_schemas()["Mark"].fingerprint


def test_body_is_plain_avro_of_the_logical_schema() -> None:
    """After the header, the body is what fastavro itself writes for the logical schema."""
    schema = default_schemas()["Fill"]
    data = Codec(Feed.FILLS).encode(RECORDS[6])
    decoded: Any = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema.parsed, None)
    assert decoded["qty"] == D("-0.000000000001")
    assert decoded["fill_id"] == "F-1"


def test_rabin_known_vector() -> None:
    """The Avro spec's fingerprint of the primitive schema "int" (cross-checked with fastavro)."""
    assert rabin_fingerprint('"int"').hex() == fingerprint('"int"', "CRC-64-AVRO")


# --- poison ---------------------------------------------------------------------------------------


def _valid() -> bytes:
    return Codec(Feed.EP3).encode(RECORDS[0])


def _ep3_value(**kw: Any) -> dict[str, Any]:
    return {"account_id": "ACC-1", "kind": "UPDATE", "seq": 1, "ts_ms": TS, "positions": [], **kw}


POISON: list[tuple[str, bytes, str]] = [
    ("empty", b"", "empty"),
    ("garbage", b"\x17hello, world\xff\xfe", "bad_magic"),
    ("json", b'{"account_id": "ACC-1"}', "bad_magic"),
    ("wrong_second_magic", b"\xc3\x02" + _valid()[2:], "bad_magic"),
    ("short_header", _valid()[:6], "truncated"),
    ("truncated_body", _valid()[:-3], "truncated"),
    ("header_only", _valid()[:10], "truncated"),
    ("trailing_bytes", _valid() + b"\x00", "trailing_bytes"),
    ("other_feed_schema", Codec(Feed.MARKS).encode(RECORDS[7]), "unknown_schema"),
    ("unknown_fingerprint", b"\xc3\x01" + b"\x00" * 8 + _valid()[10:], "unknown_schema"),
    ("confluent_without_registry", b"\x00\x00\x00\x00\x01" + _valid()[10:], "unknown_schema"),
    ("bad_utf8", _valid()[:10] + b"\x04\xff\xfe" + _valid()[16:], "malformed"),
    ("kind_bogus", Codec(Feed.EP3).encode_value(_ep3_value(kind="BOGUS")), "contract"),
    ("empty_account", Codec(Feed.EP3).encode_value(_ep3_value(account_id="")), "contract"),
    ("duplicate_symbol", Codec(Feed.EP3).encode_value(
        _ep3_value(positions=[{"symbol": "X", "qty": "1"}, {"symbol": "X", "qty": "2"}])), "contract"),
]


@pytest.mark.parametrize(("data", "reason"), [(d, r) for _, d, r in POISON], ids=[n for n, _, _ in POISON])
def test_poison_raises_decode_error_with_reason(data: bytes, reason: str) -> None:
    """Undecodable or contract-violating bytes raise DecodeError with a stable, specific reason."""
    with pytest.raises(DecodeError) as info:
        Codec(Feed.EP3).decode(data)
    assert info.value.reason == reason


def test_contract_error_keeps_field_and_cause() -> None:
    """A contract violation names the field and chains the RecordError."""
    with pytest.raises(DecodeError) as info:
        Codec(Feed.EP3).decode(POISON[-3][1])
    assert info.value.field == "kind"
    assert type(info.value.__cause__).__name__ == "RecordError"


def test_decode_many_isolates_poison() -> None:
    """A batch yields one slot per input in order; poison slots hold their DecodeError."""
    good = _valid()
    batch = [good, *(d for _, d, _ in POISON), good]
    out = Codec(Feed.EP3).decode_many(batch)
    assert len(out) == len(batch)
    assert out[0] == out[-1] == RECORDS[0]
    assert [e.reason for e in out[1:-1] if isinstance(e, DecodeError)] == [r for _, _, r in POISON]


def test_decode_many_equals_decode() -> None:
    """Batch decoding gives exactly what per-record decoding gives."""
    codec = Codec(Feed.EP3)
    batch = [codec.encode(r) for r in RECORDS[:3]] * 5
    assert codec.decode_many(batch) == [codec.decode(b) for b in batch]


# --- Confluent framing against a fake Schema Registry ---------------------------------------------


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with serve_fake_registry() as reg:
        yield reg


def test_confluent_round_trip(registry: FakeRegistry) -> None:
    """With a registry, bytes are 00 + 4-byte id + body, and they decode on a fresh codec."""
    writer = Codec(Feed.EP3, registry=SchemaIds.from_url(registry.url))
    data = writer.encode(RECORDS[0])
    sid = registry.ids[default_schemas()["Ep3PositionEvent"].text]
    assert data[:5] == b"\x00" + sid.to_bytes(4, "big")
    reader = Codec(Feed.EP3, registry=SchemaIds.from_url(registry.url))
    assert reader.decode(data) == RECORDS[0]
    assert ("POST", "/subjects/ep3.positions-value/versions?normalize=False") in registry.requests


def test_confluent_ids_are_cached(registry: FakeRegistry) -> None:
    """The registry is asked once to register and once per id to fetch, not once per record."""
    ids = SchemaIds.from_url(registry.url)
    codec = Codec(Feed.FILLS, registry=ids)
    batch = [codec.encode(RECORDS[6]) for _ in range(50)]
    fresh = Codec(Feed.FILLS, registry=SchemaIds.from_url(registry.url))
    assert fresh.decode_many(batch) == [RECORDS[6]] * 50
    assert [fresh.decode(b) for b in batch[:5]] == [RECORDS[6]] * 5
    assert len(registry.requests) == 2


def test_confluent_lookup_without_auto_register(registry: FakeRegistry) -> None:
    """With auto_register=False the id of an already-registered schema is looked up, not registered."""
    sid = registry.add(default_schemas()["Mark"].text, subject="marks-value")
    codec = Codec(Feed.MARKS, registry=SchemaIds.from_url(registry.url, auto_register=False))
    assert codec.encode(RECORDS[7])[1:5] == sid.to_bytes(4, "big")
    assert all(path.startswith("/subjects/marks-value?") for _, path in registry.requests)


def test_confluent_events_round_trip(registry: FakeRegistry) -> None:
    """Events framed with registry ids decode to their to_dict() shape."""
    codec = EventCodec(registry=SchemaIds.from_url(registry.url))
    reader = EventCodec(registry=SchemaIds.from_url(registry.url))
    for event in EVENTS:
        assert reader.decode_event(codec.encode_event(event)) == event.to_dict()


def test_confluent_evolved_writer_schema_is_resolved(registry: FakeRegistry) -> None:
    """A newer writer schema with an extra field still decodes (Avro resolution), decimals canonical."""
    data = evolved_mark(registry, "XAU-PERP", D("2342.100000000000"), TS)
    back = Codec(Feed.MARKS, registry=SchemaIds.from_url(registry.url)).decode(data)
    assert back == Mark("XAU-PERP", D("2342.1"), TS)
    assert isinstance(back, Mark)
    assert str(back.price) == "2342.1"


def test_confluent_unknown_id_and_foreign_schema(registry: FakeRegistry) -> None:
    """An unknown id, or an id whose schema is another record, is unknown_schema (and asked once)."""
    codec = Codec(Feed.MARKS, registry=SchemaIds.from_url(registry.url))
    other = registry.add(default_schemas()["Fill"].text)
    for data in (b"\x00\x00\x00\x03\xe7" + b"\x02", b"\x00" + other.to_bytes(4, "big") + b"\x02"):
        for _ in range(3):
            with pytest.raises(DecodeError) as info:
                codec.decode(data)
            assert info.value.reason == "unknown_schema"
    assert len(registry.requests) == 2


def test_single_object_still_decodes_with_registry(registry: FakeRegistry) -> None:
    """A worker configured for the registry still reads registry-free single-object records."""
    codec = Codec(Feed.MARKS, registry=SchemaIds.from_url(registry.url))
    assert codec.decode(Codec(Feed.MARKS).encode(RECORDS[7])) == RECORDS[7]


def test_decimal_wider_than_precision_is_malformed() -> None:
    """Decimal bytes beyond decimal(38,12) are refused as malformed, never truncated."""
    schema = default_schemas()["Mark"]
    body = io.BytesIO()
    wide = (10**38).to_bytes(17, "big", signed=True)
    fastavro.schemaless_writer(body, schema.raw, {"symbol": "X", "price": wide, "ts_ms": TS})
    with pytest.raises(DecodeError) as info:
        Codec(Feed.MARKS).decode(b"\xc3\x01" + schema.fingerprint + body.getvalue())
    assert info.value.reason == "malformed"
