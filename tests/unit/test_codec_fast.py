"""The codec's fast paths give byte for byte, and error for error, what the reference paths give."""

from __future__ import annotations

import dataclasses
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.codec import EncodeError, EventCodec, canonical, default_schemas
from streams.codec import decimals as decimals_module
from streams.codec.codec import write_body
from streams.codec.convert import dataclass_wire, to_mapping
from streams.codec.decimals import decimal_reader, decimal_writer, exact_reader, exact_writer, to_exact_decimal
from streams.codec.framing import single_object_header
from streams.core.events import (
    EVENT_TYPES,
    AvailGapFlip,
    FeedHealth,
    PositionMismatch,
    SourceTransition,
    Unvaluable,
    WitnessCheck,
)

D = Decimal
TS = 1_780_000_000_000
SCALE, PRECISION = 12, 38  # every decimal in schemas/

EDGE_DECIMALS = [
    "0", "-0", "0.000", "0E-30", "0E+5", "1", "-1", "1.5", "1.50", "-1.500000000000", "0.000000000001",
    "-0.000000000001", "1.000000000000000000000", "-7605", "1E+10", "255", "-256", "128", "-129",
    "99999999999999999999999999.999999999999", "-99999999999999999999999999.999999999999",
]
REFUSED_DECIMALS = [
    "0.0000000000001",  # more fractional digits than the scale
    "100000000000000000000000000",  # more digits than the precision
    "NaN", "sNaN", "Infinity", "-Infinity",
]


def _outcome(write: Any, v: Any) -> bytes | str:
    """The bytes `write` makes of `v`, or the text of the EncodeError it raises."""
    try:
        return write(v, "f")  # type: ignore[no-any-return]
    except EncodeError as exc:
        return f"EncodeError: {exc}"


@pytest.mark.parametrize("text", EDGE_DECIMALS + REFUSED_DECIMALS)
def test_cached_decimal_bytes_equal_exact_on_miss_and_hit(text: str) -> None:
    """A cached writer gives the exact writer's bytes (or error) the first time and every time after."""
    cached, exact = decimal_writer(SCALE, PRECISION), exact_writer(SCALE, PRECISION)
    expected = _outcome(exact, D(text))
    assert _outcome(cached, D(text)) == expected
    assert _outcome(cached, D(text)) == expected


FINITE = st.one_of(st.decimals(allow_nan=False, allow_infinity=False),
                   *[st.decimals(allow_nan=False, allow_infinity=False, places=p) for p in (0, 3, 12, 13)])


@given(FINITE)
def test_cached_decimal_bytes_equal_exact_for_any_value(d: Decimal) -> None:
    """For any finite decimal, cached and exact conversion agree, twice in a row."""
    cached, exact = decimal_writer(SCALE, PRECISION), exact_writer(SCALE, PRECISION)
    assert _outcome(cached, d) == _outcome(exact, d) == _outcome(cached, d)


def test_equal_values_in_other_forms_hit_with_identical_bytes() -> None:
    """`1.5`, `1.50` and `15E-1` (equal, so one cache entry) write the same bytes; so do 0 and -0."""
    write = decimal_writer(SCALE, PRECISION)
    assert write(D("1.5"), "f") == write(D("1.50"), "f") == write(D("15E-1"), "f")
    assert write(D("0"), "f") == write(D("-0"), "f") == write(D("0E-12"), "f") == b"\x00"


def test_cached_values_do_not_let_refused_types_through() -> None:
    """After Decimal(1) and Decimal("0.5") are cached, True and 0.5 (equal to them) are still refused."""
    write = decimal_writer(SCALE, PRECISION)
    write(D(1), "f")
    write(D("0.5"), "f")
    for refused in (True, False, 0.5, 1.0):
        with pytest.raises(EncodeError, match="expected a Decimal, int or decimal string"):
            write(refused, "f")
    assert write(1, "f") == write("1", "f") == write(D(1), "f")


def test_refused_value_names_its_field_every_time() -> None:
    """A value that doesn't fit raises with the field path on every call: failures are not cached."""
    write = decimal_writer(SCALE, PRECISION)
    for field in ("a.qty", "b.price"):
        with pytest.raises(EncodeError, match="refusing to round") as info:
            write(D("0.0000000000001"), field)
        assert info.value.field == field


def test_cache_stays_bounded_and_exact_past_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct values than the cache holds: it starts over, never grows past its bound, stays exact."""
    monkeypatch.setattr(decimals_module, "WRITE_CACHE_MAX", 8)
    cached, exact = decimal_writer(SCALE, PRECISION), exact_writer(SCALE, PRECISION)
    decimals_module.WRITE_CACHES[(SCALE, PRECISION)].clear()  # shared per process: other tests filled it
    values = [D(i) / 7 for i in range(-50, 50)] + [D(i).scaleb(-12) for i in range(100)]
    for _ in range(2):
        for v in values:
            v = v.quantize(D("1E-12"))  # noqa: PLW2901
            assert cached(v, "f") == exact(v, "f")
            assert len(decimals_module.WRITE_CACHES[(SCALE, PRECISION)]) <= 8


def _old_exact(v: Any, field: str) -> bytes | str:
    """The exact writer as it was before its fast branch (the general path alone)."""
    ctx = Context(prec=100, traps=[Inexact, InvalidOperation])
    try:
        d = to_exact_decimal(v, field)
        try:
            u = int(d.scaleb(12, ctx).to_integral_exact(context=ctx))
        except Inexact as exc:
            raise EncodeError(f"{d} has more fractional digits than the schema scale 12; refusing to round",
                              field) from exc
        if not -(10**38) < u < 10**38:
            raise EncodeError(f"{d} does not fit decimal(38,12)", field)
        return u.to_bytes((u + (u < 0)).bit_length() // 8 + 1, "big", signed=True)
    except EncodeError as exc:
        return f"EncodeError: {exc}"


def _new_exact(v: Any) -> bytes | str:
    try:
        return exact_writer(12, 38)(v, "f")
    except EncodeError as exc:
        return f"EncodeError: {exc}"


@given(st.one_of(st.decimals(), st.sampled_from([D(t) for t in EDGE_DECIMALS + REFUSED_DECIMALS]),
                 st.sampled_from([None, True, 0.5, 2, "7", "1.5", "abc", b"x", 10**40, D("1E+999990")]),
                 st.decimals(allow_nan=False, allow_infinity=False, places=13),
                 st.integers(-(10**40), 10**40).map(lambda u: D(u).scaleb(-12))))
def test_exact_writer_fast_branch_equals_general_path(v: Any) -> None:
    """For any value, the exact writer (with its fast branch) gives the general path's bytes or error."""
    assert _new_exact(v) == _old_exact(v, "f")


def _read(read: Any, raw: bytes) -> tuple[str, Any] | str:
    """The decoded value of `raw` with its exact representation, or the text of the ValueError."""
    try:
        d = read(raw)
    except ValueError as exc:
        return f"ValueError: {exc}"
    return str(d), d.as_tuple()


def _unscaled(u: int) -> bytes:
    return u.to_bytes((u + (u < 0)).bit_length() // 8 + 1, "big", signed=True)


EDGE_UNSCALED = [0, 1, -1, 10**12, -(10**12), 15 * 10**11, -(10**38) + 1, 10**38 - 1, 10**38, -(10**38),
                 2**127, 10**50]


@pytest.mark.parametrize("u", EDGE_UNSCALED)
def test_cached_decimal_read_equals_exact_on_miss_and_hit(u: int) -> None:
    """A cached read gives the exact reader's canonical Decimal (or error) the first time and every time after."""
    cached, exact = decimal_reader(SCALE, PRECISION), exact_reader(SCALE, PRECISION)
    for raw in {_unscaled(u), b"\x00" * 3 + _unscaled(u) if u >= 0 else b"\xff" * 3 + _unscaled(u)}:
        expected = _read(exact, raw)
        assert _read(cached, raw) == expected
        assert _read(cached, raw) == expected


@given(st.integers(-(10**40), 10**40))
def test_cached_decimal_read_equals_exact_for_any_bytes(u: int) -> None:
    """For any unscaled value (fitting the precision or not), cached and exact reads agree, twice in a row."""
    cached, exact = decimal_reader(SCALE, PRECISION), exact_reader(SCALE, PRECISION)
    assert _read(cached, _unscaled(u)) == _read(exact, _unscaled(u)) == _read(cached, _unscaled(u))


@given(st.integers(-(10**38) + 1, 10**38 - 1), st.sampled_from([0, 2, 6, 12, 18]))
def test_exact_read_is_the_canonical_value(u: int, scale: int) -> None:
    """Decoding the bytes of any unscaled value gives `canonical(u * 10**-scale)`, representation included."""
    expected = canonical(D(u).scaleb(-scale, Context(prec=100)))
    got = exact_reader(scale, 38)(_unscaled(u))
    assert (str(got), got.as_tuple()) == (str(expected), expected.as_tuple())


def test_read_cache_stays_bounded_and_exact_past_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct byte strings than the cache holds: it starts over, never grows past its bound, stays exact."""
    monkeypatch.setattr(decimals_module, "READ_CACHE_MAX", 8)
    cached, exact = decimal_reader(SCALE, PRECISION), exact_reader(SCALE, PRECISION)
    decimals_module.READ_CACHES[(SCALE, PRECISION)].clear()  # shared per process: other tests filled it
    for _ in range(2):
        for u in range(-100, 100, 3):
            assert _read(cached, _unscaled(u * 10**9)) == _read(exact, _unscaled(u * 10**9))
            assert len(decimals_module.READ_CACHES[(SCALE, PRECISION)]) <= 8


BASE_MISMATCH = PositionMismatch(
    "e1", 2, "demo", "EP3", "ACC-1", "XAU-PERP", "confirmed", "never_in_cache", None, D("13"), D("-13"),
    TS, TS + 2000, None, "RE", D("2342.1"), D("-7612.5"), D("100000"), 150, D("7612.5"), D("92387.5"), D("0"),
)

EVENTS: list[Any] = [
    BASE_MISMATCH,
    dataclasses.replace(BASE_MISMATCH, cls=None, ep3_qty=D("0"), re_qty=None, delta=D("-0.000000000001"),
                        mark=None, im_delta=D("-99999999999999999999999999.999999999999"), equity=D("-0")),
    AvailGapFlip("e2", 1, "prod", "RISK_ENGINE", "ACC-1", D("0"), "opened", TS, None, D("-5"), D("10"), D("-15"),
                 D("1"), D("2"), None, D("7612.5"), D("1000"), 300, True, ("XAU-PERP", "BTC"), (None, D("0.5"))),
    AvailGapFlip("e2", 2, "prod", "EP3", "ACC-1", D("1.5"), "resolved", TS, TS, D("0"), D("0"), D("0"),
                 D("0"), D("0"), D("0"), None, D("0"), 0, False, (), ()),
    Unvaluable("e3", 1, "demo", "EP3", "ACC-1", "DOGE", "EP3", "opened", D("0"), "missing_mark", TS, None),
    WitnessCheck("e4", 1, "demo", "EP3", "anomaly", TS, "ACC-1", "XAU-PERP", D("13"), None, "never_in_cache",
                 "confirmed", "re_snapshot@1780000000000", TS, TS + 2000, None, "p0", None, None, None, None, None),
    WitnessCheck("e5", 1, "demo", "EP3", "sweep", TS, None, None, None, None, None, None, None, None, None, None,
                 "p0", 120, 1, 1, 4, 3_600_000),
    SourceTransition("e6", 1, "prod", "EP3", TS, "RISK_ENGINE", "EP3", "ACC-1", "p0"),
    FeedHealth("e7", 1, "prod", "EP3", TS, "ep3.positions", 1200, "p0"),
]


def _reference(event: Any) -> bytes | str:
    """What encoding `event` gave before the fast path: to_mapping, then the generic body writer."""
    schema = default_schemas()[EVENT_TYPES[event.TYPE].__name__]
    try:
        return single_object_header(schema) + write_body(schema, to_mapping(event))
    except EncodeError as exc:
        return f"EncodeError: {exc}"


def _fast(codec: EventCodec, event: Any) -> bytes | str:
    try:
        return codec.encode_event(event)
    except EncodeError as exc:
        return f"EncodeError: {exc}"


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: f"{type(e).__name__}")
def test_event_fast_path_bytes_equal_reference(event: Any) -> None:
    """Every event type, with absent, zero, negative and extreme decimals, encodes to the reference bytes."""
    codec = EventCodec()
    assert _fast(codec, event) == _reference(event)
    assert _fast(codec, event) == _reference(event)  # again, now from the decimal cache


@given(
    st.lists(st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False, places=12)),
             min_size=8, max_size=8),
    st.sampled_from([None, "persistent", "phantom"]),
)
def test_mismatch_fast_path_bytes_equal_reference(decimals: list[Decimal | None], cls: Any) -> None:
    """Any mix of absent and present decimals (fitting or not) gives the reference bytes, or its error."""
    ep3, re_, mark, im, equity, im_total, avail, oom = decimals
    event = dataclasses.replace(BASE_MISMATCH, cls=cls, ep3_qty=ep3, re_qty=re_, mark=mark, im_delta=im,
                                equity=equity, re_im_total=im_total, re_avail=avail, re_open_orders_margin=oom)
    codec = EventCodec()
    assert _fast(codec, event) == _reference(event)


@pytest.mark.parametrize(("field", "value"), [("delta", 1.5), ("delta", None), ("mark", "abc"),
                                              ("mark", D("0.0000000000001")), ("version", "2")])
def test_event_fast_path_errors_equal_reference(field: str, value: Any) -> None:
    """A value of the wrong type or precision fails on the fast path with the reference error."""
    event = dataclasses.replace(BASE_MISMATCH, **{field: value})
    codec = EventCodec()
    reference = _reference(event)
    assert isinstance(reference, str)
    assert _fast(codec, event) == reference


def test_event_subclass_takes_the_generic_path() -> None:
    """A subclass of an event type (not compiled) still encodes, or fails, exactly as before."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class Same(PositionMismatch):
        pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Extra(PositionMismatch):
        note: str = "x"

    codec = EventCodec()
    same = Same(*[getattr(BASE_MISMATCH, f.name) for f in dataclasses.fields(BASE_MISMATCH)])
    extra = Extra(*[getattr(BASE_MISMATCH, f.name) for f in dataclasses.fields(BASE_MISMATCH)])
    assert _fast(codec, same) == _reference(same) == codec.encode_event(BASE_MISMATCH)
    assert "more fields than the schema" in str(_fast(codec, extra))


def test_dataclass_wire_matches_generic_conversion_for_every_event_type() -> None:
    """The compiled per-class conversion gives the same mapping as to_mapping + the schema's wire converter."""
    schemas = default_schemas()
    for event in EVENTS:
        schema = schemas[type(event).__name__]
        to_wire = dataclass_wire(type(event), schema.definition)
        assert to_wire is not None
        generic = to_mapping(event) if schema.to_wire is None else schema.to_wire(to_mapping(event), "")
        assert to_wire(event) == generic
    assert set(EVENT_TYPES.values()) == {type(e) for e in EVENTS}


def test_dataclass_wire_refuses_a_class_the_schema_does_not_fit() -> None:
    """No fast path when the fields differ: the generic path then reports the difference at encode time."""
    assert dataclass_wire(FeedHealth, default_schemas()["SourceTransition"].definition) is None
