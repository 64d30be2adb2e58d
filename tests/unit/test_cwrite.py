"""The C event encoder (`Encoder` in streams/codec/_cavro.c) is the generated Python encoder of
streams/codec/encoder.py, in C: for any event, odd values included, it writes the same bytes or
steps aside the same way (None, or a raise: the caller then takes the reference path), holds no
reference it shouldn't, and stays inside its buffers (checked under AddressSanitizer).

test_codec_encoder holds whichever encoder runs equal to fastavro; CI runs it on both (the native
build, then DIVMON_PURE=1)."""

from __future__ import annotations

import dataclasses
import gc
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import _native
from streams.codec import EventCodec, default_schemas
from streams.codec.decimals import exact_writer
from streams.codec.encoder import _spec, compile_encoder, varint
from streams.codec.errors import EncodeError
from streams.core.events import EVENT_TYPES, AvailGapFlip, PositionMismatch
from tests.support import cnative
from tests.unit.test_codec_encoder import _events
from tests.unit.test_codec_fast import BASE_MISMATCH, EVENTS

SCHEMAS = default_schemas()


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return cnative.module("_cavro", tmp_path_factory.mktemp("cavro"))


def _spec_of(cls: type) -> tuple[Any, ...]:
    fields = SCHEMAS[cls.__name__].definition["fields"]
    attrs = {("class" if f.name == "cls" else f.name): f.name for f in dataclasses.fields(cls)}
    return ("record", tuple((attrs[f["name"]], _spec(f["type"])) for f in fields))


def _head(cls: type) -> bytes:
    return b"\xc3\x01" + SCHEMAS[cls.__name__].fingerprint


def _outcome(encode: Any, event: Any, head: bytes) -> Any:
    """bytes, or "aside" for both ways of stepping aside (None or a raise)."""
    try:
        out = encode(event, head)
    except Exception:  # raising is the other way to step aside
        return "aside"
    return "aside" if out is None else out


def assert_twins(c: ModuleType, event: Any) -> None:
    cls = type(event)
    python = compile_encoder(cls, SCHEMAS[cls.__name__].definition, native=False)
    assert python is not None
    native = c.Encoder(_spec_of(cls))
    head = _head(cls)
    assert _outcome(native, event, head) == _outcome(python, event, head)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_events(fitting=True))
def test_c_encoder_equals_python_encoder_for_any_event(c: ModuleType, event: Any) -> None:
    assert_twins(c, event)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_events(fitting=False))
def test_c_encoder_steps_aside_like_python_for_odd_values(c: ModuleType, event: Any) -> None:
    assert_twins(c, event)


def test_the_native_build_encodes_with_c_and_pure_runs_python(c: ModuleType) -> None:
    """Which encoder an EventCodec uses follows the build this process runs; both write the same."""
    compiled = _native.engine_build() == "compiled"
    codec = EventCodec()
    assert {type(enc).__name__ for _, enc in codec._compiled.values()} == {"Encoder" if compiled else "function"}
    for event in EVENTS:
        assert_twins(c, event)
    assert len(codec._compiled) == len(EVENT_TYPES)


def test_no_reference_is_leaked_or_lost(c: ModuleType) -> None:
    """Events written, stepped aside from and refused half-way leave every shared object's count as it was."""
    encoder = c.Encoder(_spec_of(PositionMismatch))
    head = _head(PositionMismatch)
    fresh = Decimal("1.25")
    odd = [dataclasses.replace(BASE_MISMATCH, version=True), dataclasses.replace(BASE_MISMATCH, version=1 << 70),
           dataclasses.replace(BASE_MISMATCH, mark=Decimal("sNaN")), dataclasses.replace(BASE_MISMATCH, delta=1.5),
           dataclasses.replace(BASE_MISMATCH, account_id="\udcff"), dataclasses.replace(BASE_MISMATCH, delta=fresh)]
    for event in [BASE_MISMATCH, *odd]:  # warm the decimal caches
        _outcome(encoder, event, head)
    gc.collect()
    watched = (PositionMismatch, BASE_MISMATCH, BASE_MISMATCH.delta, BASE_MISMATCH.account_id, fresh, head, encoder)
    counts = [sys.getrefcount(x) for x in watched]
    for _ in range(2000):
        for event in [BASE_MISMATCH, *odd]:
            _outcome(encoder, event, head)
    gc.collect()
    assert [sys.getrefcount(x) for x in watched] == counts


def test_fields_are_what_getattr_reads_even_after_the_class_changed(c: ModuleType) -> None:
    """The encoder reads an event's fields straight from their slots, where it learnt them per
    class; once a class changes (a field made a property), it reads what getattr reads again."""
    encoder = c.Encoder(_spec_of(PositionMismatch))
    head = _head(PositionMismatch)
    local = dataclasses.make_dataclass("Local", [(f.name, object) for f in dataclasses.fields(PositionMismatch)],
                                       frozen=True, slots=True)
    event = local(**{f.name: getattr(BASE_MISMATCH, f.name) for f in dataclasses.fields(PositionMismatch)})
    assert encoder(event, head) == encoder(BASE_MISMATCH, head) == encoder(event, head)
    local.symbol = property(lambda self: "OTHER-PERP")
    assert event.symbol == "OTHER-PERP"  # (a lookup gives the changed class a new version tag)
    assert encoder(event, head) == encoder(dataclasses.replace(BASE_MISMATCH, symbol="OTHER-PERP"), head)
    del local.symbol  # an empty slot raises as getattr does: the caller takes the reference path
    with pytest.raises(AttributeError):
        encoder(event, head)


def test_long_arrays_grow_the_buffer(c: ModuleType) -> None:
    """Events far larger than the encoder's first buffer (512 bytes) come out whole."""
    flip = next(e for e in EVENTS if isinstance(e, AvailGapFlip))
    python = compile_encoder(AvailGapFlip, SCHEMAS["AvailGapFlip"].definition, native=False)
    encoder = c.Encoder(_spec_of(AvailGapFlip))
    for n in (0, 40, 1000):
        event = dataclasses.replace(flip, im_delta_symbols=tuple(f"SYMBOL-{i}" for i in range(n)),
                                    im_deltas=tuple(Decimal(i) / 8 if i % 2 else None for i in range(n)))
        out = encoder(event, _head(AvailGapFlip))
        assert out == python(event, _head(AvailGapFlip))  # type: ignore[misc]
        assert len(out) > 12 * n  # each symbol ~9 bytes, each delta ~1 or ~8


@dataclasses.dataclass(frozen=True)
class _One:
    a: Any


def _exact_encoding(scale: int) -> Any:
    exact = exact_writer(scale, 38)

    def encoding(v: Any) -> bytes:  # what encoder.py's miss returns (no union prefix)
        raw = exact(v, "a")
        return varint(len(raw) << 1) + raw

    return encoding


_DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=12),
    st.builds(lambda u, e: Decimal(u).scaleb(e), st.integers(-(10**40), 10**40), st.integers(-60, 60)),
    st.sampled_from([Decimal(x) for x in ("0", "-0", "0E-30", "0E+30", "1E+25", "-1E+26", "0.000000000001",
                                          "0.0000000000001", "1.000000000000000", "-128", "127.5", "NaN",
                                          "Infinity", "-Infinity", "99999999999999999999999999.999999999999",
                                          "100000000000000000000000000")]),
)


@settings(max_examples=500, deadline=None)
@given(v=_DECIMALS, scale=st.sampled_from([0, 2, 12, 38]))
def test_a_decimal_written_in_c_has_exact_writers_bytes(c: ModuleType, v: Decimal, scale: int) -> None:
    """A Decimal is written from its text in C: exactly `exact_writer`'s bytes, the first time and
    again (the same object, or an equal one); whatever C doesn't decide (not at the scale, too wide,
    not finite) goes to the miss, which gives the same bytes or the same EncodeError."""
    encoding = _exact_encoding(scale)
    missed: list[Any] = []

    def miss(x: Any) -> bytes:
        missed.append(x)
        return encoding(x)

    cache: dict[Decimal, bytes] = {}
    bound = SimpleNamespace(MAX=1 << 14)
    encoder = c.Encoder(("record", (("a", ("decimal", cache, scale, 38, Decimal, bound, "MAX", miss)),)))
    try:
        want: Any = encoding(v)
    except EncodeError as exc:
        want = str(exc)
    for value in (v, v, Decimal(str(v))):
        try:
            got: Any = encoder(_One(value), b"")
        except EncodeError as exc:
            got = str(exc)
        assert got == want
    assert (not missed) == isinstance(want, bytes)  # every value the exact writer takes, C writes itself


_IN_PLACE = ["0", "-0", "0E-30", "0E+40", "1", "-1", "0.000000000001", "-0.000000000001", "12.5", "-12.5",
             "1E+25", "-1E+25", "1.000000000000", "127", "-128", "255.00", "-256", "9999999999999999999",
             "-10000000000000000000", "12345678901234567890.123456789012", "-99999999999999999999999999.999999999999",
             "99999999999999999999999999.9999999999990", "1E-13", "1.0000000000001", "1E+26", "1E+27"]


@pytest.mark.parametrize("scale", [0, 2, 12, 38])
def test_decimals_are_written_from_their_digits_in_place(c: ModuleType, scale: int) -> None:
    """On this build's Decimal (CPython's _decimal, laid out as the C writer expects: confirmed on
    probes when a decimal writer is made), a Decimal's digits are read from the object instead of
    its text: one and two 19-digit words, both signs, exponents on both sides of the scale, and at
    the edges of the scale and of the precision, each written as `exact_writer` writes it, or left
    to the miss (not at the scale, too wide) exactly when `exact_writer` refuses it. A Decimal
    subclass or another type is never read in place."""
    assert c.decimal_layout(Decimal) is True
    assert c.decimal_layout(type("Sub", (Decimal,), {})) is False and c.decimal_layout(int) is False
    encoding = _exact_encoding(scale)
    missed: list[Any] = []

    def miss(x: Any) -> bytes:
        missed.append(x)
        return encoding(x)

    encoder = c.Encoder(("record", (("a", ("decimal", {}, scale, 38, Decimal, SimpleNamespace(MAX=64), "MAX",
                                          miss)),)))
    for text in _IN_PLACE:
        v = Decimal(text)
        try:
            want: Any = encoding(v)
        except EncodeError as exc:
            want = str(exc)
        missed.clear()
        try:
            got: Any = encoder(_One(v), b"")
        except EncodeError as exc:
            got = str(exc)
        assert got == want, text
        assert (not missed) == isinstance(want, bytes), text


def test_the_c_decimal_writes_keep_the_cache_bounded(c: ModuleType) -> None:
    cache: dict[Decimal, bytes] = {}
    bound = SimpleNamespace(MAX=8)
    encoder = c.Encoder(("record", (("a", ("decimal", cache, 3, 38, Decimal, bound, "MAX", _exact_encoding(3))),)))
    for u in range(100):
        assert encoder(_One(Decimal(u) / 1000), b"") == _exact_encoding(3)(Decimal(u) / 1000)
        assert len(cache) <= 8


def test_a_decimal_is_never_written_with_another_ones_bytes(c: ModuleType) -> None:
    """The C writer remembers the bytes of the Decimals it wrote by identity: thousands of values
    made and dropped (their memory reused for the next ones), and the first ones written again,
    each comes out as its own value's bytes; the encoder gone, it keeps none of them alive."""
    encoding = _exact_encoding(12)
    encoder = c.Encoder(("record", (("a", ("decimal", {}, 12, 38, Decimal, SimpleNamespace(MAX=8), "MAX",
                                          encoding)),)))
    kept = [Decimal(u) / 7 for u in range(-40, 40)]
    kept = [d.quantize(Decimal("1E-12")) for d in kept]
    for d in kept:
        assert encoder(_One(d), b"") == encoding(d)
    for u in range(5000):
        d = Decimal(u) / 1000  # dropped at the next round: its address is free for the next value
        assert encoder(_One(d), b"") == encoding(d), d
    for d in reversed(kept):
        assert encoder(_One(d), b"") == encoding(d), d
    gc.collect()
    held = [sys.getrefcount(d) for d in kept]
    del encoder
    gc.collect()
    freed = [sys.getrefcount(d) for d in kept]
    assert all(after <= before for after, before in zip(freed, held, strict=True))
    assert freed != held  # it did hold some


def test_a_bad_spec_or_argument_is_refused_with_what_was_wrong(c: ModuleType) -> None:
    with pytest.raises(ValueError, match="the root must be"):
        c.Encoder(("long",))
    with pytest.raises(ValueError, match="unknown kind"):
        c.Encoder(("record", (("a", ("double",)),)))
    with pytest.raises(ValueError, match="null index must be 0 or 1"):
        c.Encoder(("record", (("a", ("union", 3, ("long",))),)))
    with pytest.raises(ValueError, match="a decimal needs"):
        c.Encoder(("record", (("a", ("decimal", [], 12, 38, Decimal, SimpleNamespace(MAX=9), "MAX", print)),)))
    with pytest.raises(ValueError, match="a field must be"):
        c.Encoder(("record", (("a",),)))
    deep: Any = ("long",)
    for _ in range(40):
        deep = ("array", deep, False)
    with pytest.raises(ValueError, match="nested too deep"):
        c.Encoder(("record", (("a", deep),)))
    with pytest.raises(TypeError, match="head must be bytes"):
        c.Encoder(_spec_of(PositionMismatch))(BASE_MISMATCH, "head")


ASAN_PROBE = """
import dataclasses, random, sys
from decimal import Decimal
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.support import cnative
c = cnative.load(Path(sys.argv[1]))
from tests.unit.test_cwrite import _head, _outcome, _spec_of
from tests.unit.test_codec_fast import EVENTS
from streams.codec import default_schemas
from streams.codec.encoder import compile_encoder
rng = random.Random(11)
odd = [None, True, False, 0, -1, 1 << 63, -(1 << 63) - 1, 1.5, "", "é" * 40, "\\udcff", b"x", Decimal("0.5"),
       Decimal("1E+40"), Decimal("NaN"), Decimal("sNaN"), "2.5", [], (), ["A"] * 70, (Decimal(1), None) * 40, {}]
checked = 0
for event in EVENTS:
    cls = type(event)
    python = compile_encoder(cls, default_schemas()[cls.__name__].definition, native=False)
    native = c.Encoder(_spec_of(cls))
    names = [f.name for f in dataclasses.fields(cls)]
    for _ in range(int(sys.argv[3])):
        grown = ["S" * rng.randint(0, 30)] * rng.randint(1, 120)  # past the first 512 bytes, at any offset
        fresh = Decimal(rng.randint(-10**40, 10**40)).scaleb(rng.randint(-30, 10))  # converted in C, or refused
        pick = odd + [grown, tuple(grown), "L" * rng.randint(100, 2000), [Decimal(rng.randint(-9, 9))] * 90, fresh]
        changed = dataclasses.replace(event, **{n: rng.choice(pick) for n in rng.sample(names, rng.randint(1, 3))})
        assert _outcome(native, changed, _head(cls)) == _outcome(python, changed, _head(cls)), changed
        checked += 1
print(checked)
"""


@pytest.mark.slow
def test_the_c_encoder_stays_inside_its_buffers_under_address_sanitizer(tmp_path: Path) -> None:
    """Compiled with -fsanitize=address, the encoder writes thousands of events with odd values in
    random fields (growing its buffer, stepping aside half-way): any access outside a buffer would
    abort the process."""
    run = cnative.run_under_asan("_cavro", tmp_path, ASAN_PROBE, "1000")
    assert run.returncode == 0, run.stderr[-4000:]
    assert int(run.stdout.split()[-1]) == 1000 * len(EVENTS)
