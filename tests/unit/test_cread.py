"""The C reader (`Reader` in streams/codec/_cavro.c) is the Python direct reader of streams/codec/direct.py, in C:
for any bytes it gives the same record or refuses, it holds no references it shouldn't, and it
never reads outside the data (checked under AddressSanitizer).

The codec and tape tests (test_codec_direct, test_tapes_avro_direct) hold whichever reader runs
equal to the generic path; CI runs them on both (the native build, then DIVMON_PURE=1)."""

from __future__ import annotations

import gc
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import _native
from streams.codec import input_codecs
from streams.codec.codec import INPUT_CLASSES
from streams.codec.decimals import ReadCache, exact_reader
from streams.codec.direct import Unsure, _compile_record
from streams.core.records import Feed, Fill
from streams.tapes.avro import direct_reader, entry_schema
from tests.support import cnative
from tests.support.avro_values import VALUES, damaged

CODECS = input_codecs()
HEADER = 10  # single-object encoding: marker and fingerprint


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return cnative.module("_cavro", tmp_path_factory.mktemp("cavro"))


def _python(feed: Feed) -> Any:
    return _compile_record(CODECS[feed].schema.definition, INPUT_CLASSES, {})


def _same(got: Any, want: Any) -> bool:
    """Equal records, decimal for decimal digit by digit (Decimal == ignores exponents)."""
    return repr(got) == repr(want) and got == want


def _outcome_call(read: Any, data: bytes) -> Any:
    try:
        return read(data, HEADER)
    except Exception:
        return "refused"


def _python_call(py: Any, data: bytes) -> Any:
    try:
        record, end = py(data, HEADER)
    except Exception:  # any refusal is the same verdict: take the generic path
        return "refused"
    return record if end == len(data) else "refused"


def _python_body(py: Any, data: bytes, pos: int) -> Any:
    try:
        record, end = py(data, pos)
    except Exception:
        return "refused"
    return (record, end) if end <= len(data) else "refused"  # the caller refuses what ran past the end


def _c_body(reader: Any, data: bytes, pos: int) -> Any:
    try:
        return reader.body(data, pos)
    except Exception:
        return "refused"


def assert_twins(c: ModuleType, feed: Feed, data: bytes) -> None:
    py = _python(feed)
    reader = c.Reader(py.spec, Unsure)
    assert _same(_outcome_call(reader, data), _python_call(py, data))
    for pos in (HEADER, HEADER + 1, len(data)):
        assert _same(_c_body(reader, data, pos), _python_body(py, data, pos))


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_c_reader_equals_python_reader_for_any_value(c: ModuleType, feed: Feed, data: st.DataObject) -> None:
    assert_twins(c, feed, CODECS[feed].encode_value(data.draw(VALUES[feed])))


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_c_reader_equals_python_reader_for_damaged_bytes(c: ModuleType, feed: Feed, data: st.DataObject) -> None:
    good = CODECS[feed].encode_value(data.draw(VALUES[feed]))
    assert_twins(c, feed, data.draw(damaged(good, keep=HEADER)))


@pytest.mark.parametrize("feed", [Feed.RISK, Feed.FILLS])
@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=80))
def test_c_reader_equals_python_reader_for_random_bytes(c: ModuleType, feed: Feed, body: bytes) -> None:
    assert_twins(c, feed, b"\xc3\x01" + bytes(8) + body)


def test_long_edges_read_as_python_reads_them(c: ModuleType) -> None:
    """Varints at the 9-byte limit (the largest both read), and 10 bytes (both refuse)."""
    py = _python(Feed.MARKS)
    reader = c.Reader(py.spec, Unsure)
    head = CODECS[Feed.MARKS].encode_value({"symbol": "BTC", "price": "1", "ts_ms": 0})[:-1]
    for ts in (0, -1, 63, -64, 64, 2**62 - 1, -(2**62), 2**63 - 1, -(2**63)):
        z = (ts << 1) ^ (ts >> 63)
        out = bytearray()
        while z >= 0x80:
            out.append(z & 0x7F | 0x80)
            z >>= 7
        out.append(z)
        data = head + bytes(out)
        want = _python_call(py, data)
        assert _same(reader(data, HEADER) if want != "refused" else _outcome_call(reader, data), want), ts
        assert want == "refused" or want.ts_ms == ts
    ten = head + b"\x80" * 9 + b"\x01"
    assert _outcome_call(reader, ten) == "refused" == _python_call(py, ten)


class _One(NamedTuple):
    d: Any


def _decimal_reader(c: ModuleType, scale: int, cache: dict[bytes, Decimal], cache_max: int = 1 << 14) -> Any:
    bound = SimpleNamespace(MAX=cache_max)
    return c.Reader(("record", _One, (("decimal", cache, scale, 38, Decimal, bound, "MAX"),)), Unsure)


def _body(raw: bytes) -> bytes:
    return bytes([len(raw) << 1]) + raw  # (lengths below 64: one byte)


@settings(max_examples=500, deadline=None)
@given(u=st.integers(-(10**38) + 1, 10**38 - 1), scale=st.sampled_from([0, 1, 2, 6, 12, 18, 38]),
       pad=st.integers(0, 2))
def test_a_decimal_converted_in_c_is_the_canonical_one(c: ModuleType, u: int, scale: int, pad: int) -> None:
    """A cache miss converted in C gives exactly `exact_reader`'s Decimal (digits and exponent) for any
    value that fits, in its shortest encoding or sign-extended, and leaves it in the cache."""
    raw = u.to_bytes((u.bit_length() + 8) // 8 + pad, "big", signed=True)
    cache = ReadCache(exact_reader(scale, 38))  # (past 16 bytes, its own conversion gives the value)
    got = _decimal_reader(c, scale, cache)(_body(raw), 0).d
    want = exact_reader(scale, 38)(raw)
    assert (str(got), got.as_tuple()) == (str(want), want.as_tuple())
    assert cache[raw] is got


def test_what_c_does_not_convert_goes_to_the_cache_and_its_errors(c: ModuleType) -> None:
    """Empty, longer than 16 bytes, or wider than the precision: the cache's __missing__ decides
    (a value, or the ValueError that sends the record to the generic path)."""
    for raw in (b"", bytes(17), b"\x00" * 10 + (10**20).to_bytes(9, "big")):
        cache = ReadCache(exact_reader(12, 38))
        got = _decimal_reader(c, 12, cache)(_body(raw), 0).d
        assert got == exact_reader(12, 38)(raw) and cache[raw] is got
    too_wide = (10**38).to_bytes(17, "big", signed=True)[1:]  # 16 bytes, above 10**38 - 1
    with pytest.raises(ValueError, match="wider than precision 38"):
        _decimal_reader(c, 12, ReadCache(exact_reader(12, 38)))(_body(too_wide), 0)


def test_a_decimal_converted_in_c_is_held_by_the_record_the_caches_and_nothing_else(c: ModuleType) -> None:
    """No reference is leaked on the conversion path (a converted miss once kept one too many), and
    the reader's front cache lets go of its Decimals when the reader goes."""
    cache = ReadCache(exact_reader(3, 38))
    reader = _decimal_reader(c, 3, cache)
    record = reader(_body((12345).to_bytes(2, "big", signed=True)), 0)
    d = record.d
    del record
    assert d == Decimal("12.345") and cache[(12345).to_bytes(2, "big", signed=True)] is d
    assert sys.getrefcount(d) == 4  # `d`, the dict cache's entry, the reader's front slot, getrefcount's argument
    del reader
    assert sys.getrefcount(d) == 3  # the front slot's reference went with the reader


def test_the_c_conversion_keeps_the_cache_bounded(c: ModuleType) -> None:
    cache = ReadCache(exact_reader(3, 38))
    reader = _decimal_reader(c, 3, cache, cache_max=8)
    for u in range(100):
        raw = u.to_bytes(2, "big", signed=True)
        assert reader(_body(raw), 0).d == Decimal(u) / 1000
        assert len(cache) <= 8


def _raw(u: int, pad: int = 0) -> bytes:
    """`u` as Avro decimal bytes: shortest two's complement, sign-extended by `pad` bytes."""
    return u.to_bytes((u.bit_length() + 8) // 8 + pad, "big", signed=True)


def _twin(scale: int, raw: bytes) -> Any:
    """What the Python reader makes of these bytes (its cache's conversion), or "refused"."""
    try:
        return exact_reader(scale, 38)(raw)
    except ValueError:
        return "refused"


def _exactly(got: Any, want: Any) -> bool:
    """The same Decimal digit for digit and exponent for exponent (or both refused)."""
    return got == want == "refused" or (str(got), got.as_tuple()) == (str(want), want.as_tuple())


def _read_or_refused(reader: Any, raw: bytes) -> Any:
    try:
        return reader(_body(raw), 0).d
    except ValueError:
        return "refused"


# Many distinct values of one length (2 bytes), more than the front cache's 256 slots: slots collide
# with equal lengths, so only the bytes tell them apart.
MANY_DECIMALS = [_raw(u) for u in range(-1200, 1200, 3) if u.bit_length() >= 8]


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.integers(-(10**38) + 1, 10**38 - 1), st.integers(-300, 300),
                                 st.sampled_from([0, 10**38 - 1, -(10**38) + 1, 10**38, -(10**38), 2**127 - 1])),
                       min_size=1, max_size=200),
       pads=st.lists(st.integers(0, 2), min_size=1, max_size=5),
       scale=st.sampled_from([0, 2, 12, 38]), seed=st.randoms(use_true_random=False))
def test_decimals_read_through_the_front_cache_are_the_python_readers(
        c: ModuleType, values: list[int], pads: list[int], scale: int, seed: Any) -> None:
    """Whatever was read before (colliding slots, more values than slots, negatives, zero, the
    largest values of precision 38 and ones past it, sign-extended encodings, empty bytes), each read
    gives exactly the Python reader's Decimal for its own bytes, or is refused as it refuses them."""
    reader = _decimal_reader(c, scale, ReadCache(exact_reader(scale, 38)))
    raws = [_raw(u, pads[i % len(pads)]) for i, u in enumerate(values)] + [b""]
    order = raws * 3 + MANY_DECIMALS
    seed.shuffle(order)
    for raw in order + MANY_DECIMALS[::-1] + raws:
        assert _exactly(_read_or_refused(reader, raw), _twin(scale, raw)), raw


def test_a_repeated_decimal_is_read_as_the_same_object(c: ModuleType) -> None:
    """A value read again is the object read the first time, the dict cache's own, also when other
    values of the same length took turns in its slot; a front-cache hit doesn't even ask the dict."""
    cache = ReadCache(exact_reader(12, 38))
    reader = _decimal_reader(c, 12, cache)
    first = {raw: reader(_body(raw), 0).d for raw in MANY_DECIMALS}
    for raw in MANY_DECIMALS[::-1] + MANY_DECIMALS:
        got = reader(_body(raw), 0).d
        assert got is first[raw] and cache[raw] is got and _exactly(got, _twin(12, raw)), raw
    qty = _raw(2 * 10**12)
    two = reader(_body(qty), 0).d
    cache.clear()  # the dict no longer knows it: the front cache answers, the dict stays empty
    assert reader(_body(qty), 0).d is two and str(two) == "2" and len(cache) == 0


def test_decimals_read_after_the_dict_cache_started_over_are_still_right(c: ModuleType) -> None:
    """The dict cache empties itself at its bound (decimals.READ_CACHE_MAX, here 8); the front cache
    keeps its entries, which are still the exact values of their bytes."""
    cache = ReadCache(exact_reader(3, 38))
    reader = _decimal_reader(c, 3, cache, cache_max=8)
    early = [reader(_body(raw), 0).d for raw in MANY_DECIMALS[:8]]
    for raw in MANY_DECIMALS:  # hundreds of distinct values: the dict starts over again and again
        assert _exactly(reader(_body(raw), 0).d, _twin(3, raw)), raw
        assert len(cache) <= 8
    for raw, d in zip(MANY_DECIMALS[:8], early, strict=True):
        again = reader(_body(raw), 0).d
        assert again == d and _exactly(again, _twin(3, raw)), raw
    for raw in MANY_DECIMALS[::-1]:
        assert _exactly(reader(_body(raw), 0).d, _twin(3, raw)), raw
    too_wide = (10**38).to_bytes(17, "big", signed=True)[1:]  # refused each time: a refusal is never cached
    for _ in range(2):
        with pytest.raises(ValueError, match="wider than precision 38"):
            reader(_body(too_wide), 0)


def _string_body(text: bytes) -> bytes:
    z, out = len(text) << 1, bytearray()  # zig-zag varint length, then the bytes
    while z >= 0x80:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    return bytes([*out, z]) + text


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.one_of(st.text(max_size=40), st.text("AB-0123", max_size=6)), min_size=1, max_size=300),
       seed=st.randoms(use_true_random=False))
def test_strings_read_through_the_string_cache_are_the_text_of_their_bytes(
        c: ModuleType, texts: list[str], seed: Any) -> None:
    """Short ASCII strings come from a cache of 4,096 slots keyed by their bytes: whatever was read
    before (colliding slots, non-ASCII text, strings longer than 32 bytes, the empty one), each read
    gives exactly the text of its own bytes."""
    reader = c.Reader(("record", _One, (("string",),)), Unsure)
    order = texts * 2
    seed.shuffle(order)
    for text in order:
        assert reader(_string_body(text.encode()), 0).d == text
    many = [f"A{i:05d}" for i in range(10_000)]  # more than the slots: collisions replace entries
    for text in many + many[::-1]:
        assert reader(_string_body(text.encode()), 0).d == text


def test_a_repeated_short_ascii_string_is_read_as_the_same_object(c: ModuleType) -> None:
    """The point of the cache: an account id read again is the str made the first time, so the
    engine's dict lookups find it by identity with its hash already computed."""
    reader = c.Reader(("record", _One, (("string",),)), Unsure)
    first, again = (reader(_string_body(b"ACC-000417"), 0).d for _ in range(2))
    assert first == "ACC-000417" and first is again
    accented = reader(_string_body("Zürich".encode()), 0).d
    assert accented == "Zürich"
    long = b"X" * 33
    assert reader(_string_body(long), 0).d == long.decode()
    with pytest.raises(UnicodeDecodeError):  # invalid UTF-8 is refused, never cached as text
        reader(_string_body(b"\xff\xfe"), 0)


def _tracked(obj: Any) -> list[Any]:
    """`obj` and whatever tuples it holds, nested, that the cyclic GC tracks (the feed, a member of
    an enum that lives as long as its module, aside)."""
    out = [obj] if gc.is_tracked(obj) and not isinstance(obj, Feed) else []
    if isinstance(obj, tuple):
        for item in obj:
            out += _tracked(item)
    return out


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_records_read_are_left_out_of_the_cyclic_gc(c: ModuleType, feed: Feed, data: st.DataObject) -> None:
    """A record holds only text, numbers, Decimals, None and tuples of those, so it can't be part of
    a reference cycle: the reader untracks it as it is made (as CPython's collector untracks such
    plain tuples when it first meets them), and a worker's entry with it. A worker holds up to 400k
    records while the watermark waits; tracked, each young collection traversed them and promoted
    them through the generations (worker bench: 1.1 of ~9 CPU s in the collector; 0.3 after)."""
    value = data.draw(VALUES[feed])
    reader = c.Reader(_python(feed).spec, Unsure)
    raw = CODECS[feed].encode_value(value)
    record = _outcome_call(reader, raw)
    if record == "refused":
        return
    assert _tracked(record) == []
    entries, slow, kept, _ = reader.entries([(5, 7, b"k", raw)], 0, raw[:HEADER], lambda rec: True, feed)
    assert (slow, kept) == ([], 1) and entries[0][2] == record
    assert _tracked(entries[0]) == []


def test_the_native_build_reads_with_c_and_pure_runs_python(c: ModuleType) -> None:
    """Which reader a codec and an Avro tape use follows the build this process runs."""
    compiled = _native.engine_build() == "compiled"
    kind = "Reader" if compiled else "function"
    assert {type(codec._direct).__name__ for codec in CODECS.values()} == {kind}
    tape_read = direct_reader(SimpleNamespace(definition=entry_schema(Feed.FILLS)), Feed.FILLS)  # type: ignore[arg-type]
    assert type(getattr(tape_read, "__self__", tape_read)).__name__ == kind


def test_no_reference_is_leaked_or_lost(c: ModuleType) -> None:
    """Records read and dropped, valid or refused half-way, leave every shared object's count as it was."""
    codec = CODECS[Feed.FILLS]
    reader = c.Reader(_python(Feed.FILLS).spec, Unsure)
    good = codec.encode_value({"fill_id": "f-1", "account_id": "A", "symbol": "BTC", "qty": "2.5", "price": "10",
                               "ts_ms": 7})
    batch = [good, good[:-3], good[:20] + b"\xff\xff" + good[22:], good + b"\x00"]
    first = reader(good, HEADER)
    qty = first.qty
    for data in batch:  # warm the decimal cache
        _outcome_call(reader, data)
    gc.collect()
    counts = [sys.getrefcount(x) for x in (Fill, qty, Unsure, good, reader)]
    for _ in range(2000):
        for data in batch:
            _outcome_call(reader, data)
            _c_body(reader, data, HEADER)
    gc.collect()
    assert [sys.getrefcount(x) for x in (Fill, qty, Unsure, good, reader)] == counts
    assert reader(good, HEADER).qty is qty and qty == Decimal("2.5")


def test_a_bad_spec_or_argument_is_refused_with_what_was_wrong(c: ModuleType) -> None:
    with pytest.raises(ValueError, match="a record's class must be a tuple subclass"):
        c.Reader(("record", dict, (("long",),)), Unsure)
    with pytest.raises(ValueError, match="unknown kind"):
        c.Reader(("record", Fill, (("float",),)), Unsure)
    with pytest.raises(ValueError, match="the root must be a record"):
        c.Reader(("long",), Unsure)
    with pytest.raises(ValueError, match="null index must be 0 or 1"):
        c.Reader(("record", Fill, (("union", 2, ("long",)),)), Unsure)
    deep: Any = ("long",)
    for _ in range(40):
        deep = ("array", deep)
    with pytest.raises(ValueError, match="nested too deep"):
        c.Reader(("record", Fill, (deep,)), Unsure)
    with pytest.raises(TypeError, match="unsure must be an exception class"):
        c.Reader(_python(Feed.FILLS).spec, "no")
    reader = c.Reader(_python(Feed.FILLS).spec, Unsure)
    with pytest.raises(TypeError, match="expected bytes, got bytearray"):
        reader(bytearray(20), HEADER)
    with pytest.raises(IndexError, match="position 30 outside the data"):
        reader.body(bytes(20), 30)
    with pytest.raises(Unsure, match="data ends at byte 20"):
        reader(bytes(20), 20)


ASAN_PROBE = """
import random, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from tests.support import cnative
c = cnative.load(Path(sys.argv[1]))
from streams.codec import input_codecs
from streams.codec.codec import INPUT_CLASSES
from streams.codec.direct import Unsure, _compile_record
from streams.core.records import Feed
from tests.unit.test_cread import _c_body, _outcome_call, _python_body, _python_call, _same
rng = random.Random(7)
codecs = input_codecs()
values = {
    Feed.RISK: {"account_id": "A", "published_ts_ms": 5, "im_total": "1.5", "open_orders_margin": "0",
                "equity": "100", "avail": "-3", "positions": [{"symbol": "BTC", "qty": "2", "im": None},
                                                              {"symbol": "ETH", "qty": "-0.25", "im": "7"}]},
    Feed.FILLS: {"fill_id": "f", "account_id": "A", "symbol": "BTC", "qty": "1", "price": "2.5", "ts_ms": 9},
}
checked = 0
for feed, value in values.items():
    py = _compile_record(codecs[feed].schema.definition, INPUT_CLASSES, {})
    reader = c.Reader(py.spec, Unsure)
    good = codecs[feed].encode_value(value)
    for _ in range(int(sys.argv[3])):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            i = rng.randrange(10, len(data)) if len(data) > 10 else 10
            if op == 0 and i < len(data):
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i:]
            else:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        data = bytes(data)
        assert _same(_outcome_call(reader, data), _python_call(py, data)), data
        assert _same(_c_body(reader, data, 10), _python_body(py, data, 10)), data
        checked += 1
from decimal import Decimal
from types import SimpleNamespace
from streams.codec.decimals import ReadCache, exact_reader
from tests.unit.test_cread import _One, _exactly, _read_or_refused, _twin
pool = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 18))) for _ in range(400)]  # > 256 slots
for scale in (0, 12):  # the front cache: colliding slots, the dict restarting at its bound of 8, freed at the end
    spec = ("decimal", ReadCache(exact_reader(scale, 38)), scale, 38, Decimal, SimpleNamespace(MAX=8), "MAX")
    reader = c.Reader(("record", _One, (spec,)), Unsure)
    for _ in range(int(sys.argv[3])):
        raw = rng.choice(pool)
        assert _exactly(_read_or_refused(reader, raw), _twin(scale, raw)), raw
        checked += 1
    del reader
print(checked)
"""


@pytest.mark.slow
def test_the_c_reader_stays_inside_the_data_under_address_sanitizer(tmp_path: Path) -> None:
    """Compiled with -fsanitize=address and every Python allocation on the sanitized malloc, the
    reader reads thousands of damaged records and of decimals through its front cache, then is freed:
    any read outside a buffer or of freed memory would abort the process."""
    run = cnative.run_under_asan("_cavro", tmp_path, ASAN_PROBE, "3000")
    assert run.returncode == 0, run.stderr[-4000:]
    assert int(run.stdout.split()[-1]) == 12000
