"""The direct decode path gives exactly the generic path's records and errors, and is really taken."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codec import Codec, DecodeError, SchemaIds, input_codecs
from streams.codec import codec as codec_module
from streams.codec.codec import INPUT_CLASSES
from streams.codec.direct import Unsure, compile_reader, read_long
from streams.codec.encoder import varint
from streams.codec.framing import read_body
from streams.core.records import Feed
from tests.support.avro_values import TS, VALUES, damaged
from tests.support.fake_registry import evolved_mark, serve_fake_registry

CODECS = input_codecs()


def _outcome(value: Any) -> Any:
    """A record as itself, an error as everything a caller or a dead-letter header can see of it."""
    if isinstance(value, DecodeError):
        cause = value.__cause__
        return ("DecodeError", value.reason, value.detail, value.field, str(value),
                type(cause).__name__, str(cause))
    return value


def _reference(codec: Codec, data: bytes) -> Any:
    """The generic path alone: framing, fastavro read, decimal fix, contract parser."""
    try:
        plan, offset = codec._resolver.plan(data)
        return codec._validate(read_body(plan, data, offset))
    except DecodeError as exc:
        return exc


def _decode(codec: Codec, data: bytes) -> Any:
    try:
        return codec.decode(data)
    except DecodeError as exc:
        return exc


def assert_same(codec: Codec, batch: list[bytes]) -> None:
    expected = [_outcome(_reference(codec, d)) for d in batch]
    assert [_outcome(x) for x in codec.decode_many(batch)] == expected
    assert [_outcome(_decode(codec, d)) for d in batch] == expected
    for got, want in zip(codec.decode_many(batch), expected, strict=True):
        if not isinstance(got, DecodeError):  # same decimals, digit for digit (Decimal == ignores exponents)
            assert repr(got) == repr(want)


def test_every_input_schema_has_a_direct_reader() -> None:
    """The fast path is in force for all six feeds (a schema change that disables it fails here)."""
    assert all(c._direct is not None for c in CODECS.values())


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_direct_equals_generic_for_any_value(feed: Feed, data: st.DataObject) -> None:
    """Any value the schema can carry, valid for the contract or not, decodes as on the generic path."""
    codec = CODECS[feed]
    values = data.draw(st.lists(VALUES[feed], min_size=1, max_size=4))
    assert_same(codec, [codec.encode_value(v) for v in values])


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_direct_equals_generic_for_damaged_bytes(feed: Feed, data: st.DataObject) -> None:
    """Flipped, cut, extended or spliced bodies: same record or same DecodeError (reason, detail, cause)."""
    codec = CODECS[feed]
    good = codec.encode_value(data.draw(VALUES[feed]))
    bad = data.draw(st.lists(damaged(good, keep=10), min_size=1, max_size=4))
    assert_same(codec, [good, *bad])


# --- hand-made bodies: encodings fastavro never writes but must be read (or refused) the same ---

def _long(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63) if n >= 0 else ((n << 1) ^ -1))


def _str(s: str) -> bytes:
    b = s.encode()
    return _long(len(b)) + b


def _ep3(positions: bytes, *, kind: str = "UPDATE", seq: bytes = b"\x02", ts: bytes | None = None) -> bytes:
    header = CODECS[Feed.EP3].encode_value(
        {"account_id": "A", "kind": "UPDATE", "seq": 1, "ts_ms": 1, "positions": []})[:10]
    return header + _str("A") + _str(kind) + seq + (_long(TS) if ts is None else ts) + positions


def _pos(symbol: str, raw: bytes) -> bytes:
    return _str(symbol) + _long(len(raw)) + raw


HAND_MADE = {
    "two blocks": _ep3(_long(1) + _pos("BTC", b"\x01") + _long(1) + _pos("ETH", b"\x02") + b"\x00"),
    "sized block": _ep3(_long(-1) + _long(5) + _pos("BTC", b"\x01") + b"\x00"),
    "sized block, bad size": _ep3(_long(-2) + _long(0) + _pos("BTC", b"\x01") + _pos("ETH", b"\x01") + b"\x00"),
    "duplicate symbol across blocks": _ep3(_long(1) + _pos("BTC", b"\x01") + _long(1) + _pos("BTC", b"\x02") + b"\x00"),
    "count beyond the bytes": _ep3(_long(1000) + _pos("BTC", b"\x01") + b"\x00"),
    "non-minimal varint": _ep3(b"\x00", seq=b"\x82\x80\x00"),
    "10-byte varint": _ep3(b"\x00", ts=b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    "11-byte varint": _ep3(b"\x00", ts=b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    "10-byte varint, high bits": _ep3(b"\x00", ts=b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x7f"),
    "long string length": _ep3(b"\x00", kind="SNAPSHOT" + " " * 100),
    "negative string length": _ep3(b"\x00")[:11] + _long(-3) + b"abc",
    "invalid utf-8": _ep3(b"\x00")[:10] + _long(2) + b"\xff\xfe" + _ep3(b"\x00")[12:],
    "decimal of 20 bytes": _ep3(_long(1) + _pos("BTC", b"\x7f" * 20) + b"\x00"),
    "empty decimal": _ep3(_long(1) + _pos("BTC", b"") + b"\x00"),
    "negative decimal length": _ep3(_long(1) + _str("BTC") + _long(-1) + b"\x00"),
    "truncated varint": _ep3(b"")[:-3],
}


@pytest.mark.parametrize("name", sorted(HAND_MADE))
def test_direct_equals_generic_for_unusual_encodings(name: str) -> None:
    """Blocked arrays, long varints, odd lengths, bad UTF-8: whatever the generic path says, decode says."""
    assert_same(CODECS[Feed.EP3], [HAND_MADE[name]])


def test_unusual_union_branches_and_bytearray() -> None:
    """A union index other than the schema's two, and bytearray input, decode as on the generic path."""
    codec = CODECS[Feed.MARKS]
    good = codec.encode_value({"symbol": "BTC", "price": "1.5", "ts_ms": TS})
    og = CODECS[Feed.OG_MARGIN]
    value = {"account_id": "A", "ts_ms": 1, "positions_source": "EP3", "im_positions": "2",
             "open_orders_margin": "0", "equity": "0", "avail": "0"}
    body = og.encode_value(value)
    at = 10 + 2 + 1 + 4  # header, "A", ts 1, "EP3": the union index of im_positions
    assert body[at] == 2
    assert_same(og, [body[:at] + bytes([b]) + body[at + 1:] for b in (0, 1, 3, 4, 0x82)])
    assert_same(codec, [bytearray(good)])  # type: ignore[list-item]


def test_read_long_refuses_what_64_bits_cannot_hold() -> None:
    """Up to 9 bytes (63 bits) the direct varint reader decodes; beyond, it defers (fastavro wraps at 64)."""
    assert read_long(b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f", 0) == (2**62 - 1, 9)
    assert read_long(b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 0) == (-(2**62), 9)
    with pytest.raises(Unsure):
        read_long(b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 0)


def test_valid_records_skip_the_generic_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid record of our own schema is decoded without fastavro; an invalid one still gets its error."""
    calls: list[bytes] = []

    def counting(plan: Any, data: bytes, offset: int) -> dict[str, Any]:
        calls.append(data)
        return read_body(plan, data, offset)

    monkeypatch.setattr(codec_module, "read_body", counting)
    codec = CODECS[Feed.EP3]
    good = codec.encode_value({"account_id": "A", "kind": "UPDATE", "seq": 1, "ts_ms": TS,
                               "positions": [{"symbol": "BTC", "qty": "1.5"}]})
    bad = codec.encode_value({"account_id": "A", "kind": "DELETE", "seq": 1, "ts_ms": TS, "positions": []})
    out = codec.decode_many([good, bad, good])
    assert out[0] == out[2] == codec.decode(good)
    assert isinstance(out[1], DecodeError)
    assert out[1].reason == "contract"
    assert out[1].field == "kind"
    assert calls == [bad]


def test_compile_reader_refuses_shapes_it_does_not_read() -> None:
    """Unknown record names, mismatched fields, other types or unions: no direct reader."""
    def schema(name: str, fields: list[Any]) -> dict[str, Any]:
        return {"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields]}

    assert compile_reader(schema("Nope", [("symbol", "string")]), INPUT_CLASSES) is None
    assert compile_reader(schema("Mark", [("symbol", "string"), ("ts_ms", "long")]), INPUT_CLASSES) is None
    mark: list[tuple[str, Any]] = [("symbol", "string"), ("price", "double"), ("ts_ms", "long")]
    assert compile_reader(schema("Mark", mark), INPUT_CLASSES) is None
    mark[1] = ("price", "bytes")
    assert compile_reader(schema("Mark", mark), INPUT_CLASSES) is None
    mark[1] = ("price", {"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 12})
    mark[2] = ("ts_ms", {"type": "long", "logicalType": "timestamp-millis"})
    assert compile_reader(schema("Mark", mark), INPUT_CLASSES) is None
    mark[2] = ("ts_ms", ["string", "long"])
    assert compile_reader(schema("Mark", mark), INPUT_CLASSES) is None
    mark[2] = ("ts_ms", ["null", "string", "long"])
    assert compile_reader(schema("Mark", mark), INPUT_CLASSES) is None
    mark[2] = ("ts_ms", {"type": "long"})
    read = compile_reader(schema("Mark", mark), INPUT_CLASSES)
    assert read is not None
    assert read(b"\x06BTC\x02\x01\x04", 0) == INPUT_CLASSES["Mark"]("BTC", Decimal("1E-12"), 2)
    mark[1] = ("price", [mark[1][1], "null"])  # null second: index 0 is the decimal
    read = compile_reader(schema("Mark", mark), INPUT_CLASSES)
    assert read is not None
    assert read(b"\x06BTC\x00\x02\x01\x04", 0) == INPUT_CLASSES["Mark"]("BTC", Decimal("1E-12"), 2)
    assert read(b"\x06BTC\x02\x04", 0) == INPUT_CLASSES["Mark"]("BTC", None, 2)
    with pytest.raises(Unsure):
        read(b"\x06BTC\x04\x04", 0)


def test_confluent_own_schema_goes_direct_and_resolution_does_not() -> None:
    """Confluent bytes of our own schema are read directly; an evolved writer schema is resolved by fastavro."""
    with serve_fake_registry() as registry:
        codec = Codec(Feed.MARKS, registry=SchemaIds.from_url(registry.url))
        data = codec.encode_value({"symbol": "BTC", "price": "2", "ts_ms": TS})
        plan, _ = codec._resolver.plan(data)
        assert codec._direct_for(plan) is not None
        assert_same(codec, [data, data[:-1], data + b"\x00"])
        evolved = evolved_mark(registry, "BTC", Decimal("2.50"), TS)
        plan, _ = codec._resolver.plan(evolved)
        assert codec._direct_for(plan) is None
        assert_same(codec, [evolved, evolved[:-1]])


