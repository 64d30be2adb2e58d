"""Avro tapes read directly (streams.codec.direct) give exactly what the generic fastavro path gives:
same records, same MalformedRecord (file, position, message, cause), same counters, on good and
damaged tapes, as the reader before the direct path (`Reference`, kept here verbatim) did; and the
reorder window's FIFO/heap gives the order and `late` count of one heap."""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import Codec
from streams.codec.schemas import AvroSchema, prepare
from streams.core.records import Feed, Mark, RecordError, parse_value
from streams.tapes import avro
from streams.tapes.avro import AvroTape, Block, Corrupt, direct_reader, entry_schema, read_header
from streams.tapes.errors import MalformedRecord
from streams.tapes.model import TapeRecord
from streams.tapes.writer import TapeWriter, zigzag
from tests.support.avro_values import TS, VALUES, damaged

HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def body(feed: Feed, value: dict[str, Any]) -> bytes:
    return Codec(feed).encode_value(value)[10:]  # the single-object header is 10 bytes


def entry(ts: int, value_body: bytes, topic: bytes = b"marks", partition: int = 0, offset: int = 0) -> bytes:
    return zigzag(ts) + zigzag(len(topic)) + topic + zigzag(partition) + zigzag(offset) + value_body


def tape(path: Path, feed: Feed, blocks: list[tuple[int, bytes]], codec: str = "null") -> Path:
    """A container of `feed` whose blocks are `(declared count, entry bytes)`, framed correctly."""
    path.unlink(missing_ok=True)  # hypothesis reuses tmp_path
    TapeWriter(path, feed, codec=codec).close()
    path.with_name(path.name + ".offsets.json").unlink()
    with path.open("rb") as fh:
        sync = read_header(fh).sync
    with path.open("ab") as fh:
        for count, raw in blocks:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = c.compress(raw) + c.flush() if codec == "deflate" else raw
            fh.write(zigzag(count) + zigzag(len(data)) + data + sync)
    return path


def iter_entries(block: Block, schema: AvroSchema) -> Iterator[tuple[int, dict[str, Any]]]:
    bio = BytesIO(block.data)
    raw, fix, reader = schema.raw, schema.fix_raw, fastavro.schemaless_reader
    for i in range(block.count):
        try:
            entry: Any = reader(bio, raw, None)
            yield i, (entry if fix is None else fix(entry))
        except Exception as exc:
            raise Corrupt(f"record {i}: undecodable: {type(exc).__name__}: {exc}", block.at, block.count) from exc
    if bio.tell() != len(block.data):
        raise Corrupt(f"{len(block.data) - bio.tell()} bytes left after {block.count} records", block.at,
                      block.count)


class Reference(AvroTape):
    """The reader as it was before the direct path (its `iter_entries` above): fastavro for every entry,
    one heap for the window."""

    def __iter__(self) -> Iterator[TapeRecord]:
        heap: list[tuple[int, int, TapeRecord]] = []
        newest = released = -(1 << 62)
        for n, rec in enumerate(self._read()):
            ts = rec.ts_ms
            if ts < released:
                self.late += 1
            newest = max(newest, ts)
            heapq.heappush(heap, (ts, n, rec))
            while heap[0][0] <= newest - self.reorder_ms:
                released = heap[0][0]
                yield heapq.heappop(heap)[2]
        while heap:
            yield heapq.heappop(heap)[2]

    def _records(self, block: Block, feed: Feed, schema: AvroSchema, direct: Any) -> Iterator[TapeRecord]:
        where = f"block {block.index}"
        done = 0
        try:
            for i, e in iter_entries(block, schema):
                done = i + 1
                try:
                    record = parse_value(feed, e["value"])
                except RecordError as exc:
                    if not self.skip_bad:
                        raise MalformedRecord(str(self.path), f"{where} record {i} (byte {block.at})",
                                              f"contract violation: {exc}") from exc
                    self.skipped += 1
                    continue
                yield TapeRecord(e["ts_ms"], feed, record, f"{where} record {i}")
        except Corrupt as exc:
            exc.count = block.count - done
            self._bad(exc, block.index)


def outcome(t: AvroTape) -> Any:
    """Everything a caller can see of reading the tape: records, the error, the counters."""
    got: list[Any] = []
    error = None
    try:
        for r in t:
            got.append((r.ts_ms, r.feed, repr(r.record), r.where))
    except MalformedRecord as exc:
        cause = exc.__cause__
        error = (exc.path, exc.where, exc.message, str(exc), type(cause).__name__, str(cause))
    return got, error, t.skipped, t.bad_blocks, t.late, t.bytes_read


def generic(path: Path, skip_bad: bool) -> Any:
    """`AvroTape` with the direct reader switched off: fastavro and parse_value for every entry."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(avro, "direct_reader", lambda schema, feed: None)
        return outcome(AvroTape(path, skip_bad=skip_bad))


def assert_same(path: Path) -> None:
    """The reader, with and without its direct path, gives exactly what the reader before it gave."""
    for skip_bad in (False, True):
        expected = outcome(Reference(path, skip_bad=skip_bad))
        assert outcome(AvroTape(path, skip_bad=skip_bad)) == expected
        assert generic(path, skip_bad) == expected


# --- the fast path is in force and really taken -------------------------------------------------

def test_every_feed_has_a_direct_entry_reader() -> None:
    """Files we write for any feed are read directly; a file of any other schema is not."""
    for feed in Feed:
        assert direct_reader(prepare(entry_schema(feed)), feed) is not None
    other = entry_schema(Feed.MARKS)
    other["fields"][4]["type"] = {**other["fields"][4]["type"], "doc": "an older version"}
    assert direct_reader(prepare(other), Feed.MARKS) is None
    assert direct_reader(prepare(entry_schema(Feed.FILLS)), Feed.MARKS) is None


def test_valid_entries_skip_fastavro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid entries never reach the generic reader; an invalid one does, and gets its error."""
    calls: list[int] = []
    read_entry = avro.read_entry

    def counting(bio: Any, schema: Any, block: Any, i: int) -> dict[str, Any]:
        calls.append(i)
        return read_entry(bio, schema, block, i)

    monkeypatch.setattr(avro, "read_entry", counting)
    good = body(Feed.MARKS, {"symbol": "BTC", "price": "1.5", "ts_ms": TS})
    bad = body(Feed.MARKS, {"symbol": "", "price": "1.5", "ts_ms": TS})
    path = tape(tmp_path / "m.avro", Feed.MARKS, [(3, entry(TS, good) + entry(TS + 1, bad) + entry(TS + 2, good))])
    records = [r.record for r in AvroTape(path, skip_bad=True)]
    assert records == [Mark("BTC", records[0].price, TS)] * 2  # type: ignore[union-attr]
    assert calls == [1]
    with pytest.raises(MalformedRecord, match=r"block 0 record 1 \(byte \d+\): contract violation"):
        list(AvroTape(path))


# --- equal outcomes: schema-shaped values, in blocks, damaged or not -----------------------------

def _entries(feed: Feed) -> st.SearchStrategy[list[bytes]]:
    one = st.tuples(st.integers(TS - 20_000, TS + 20_000), VALUES[feed], st.integers(0, 3), st.integers(0, 10**12))
    return st.lists(one, min_size=1, max_size=12).map(
        lambda es: [entry(ts, body(feed, v), feed.value.encode(), p, o) for ts, v, p, o in es])


def _split(entries: list[bytes], cuts: list[int]) -> list[tuple[int, bytes]]:
    """Entries in blocks at the cut points: `(count, bytes)` each."""
    bounds = sorted({0, len(entries), *(c % (len(entries) + 1) for c in cuts)})
    return [(b - a, b"".join(entries[a:b])) for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(data=st.data())
def test_same_outcome_for_any_values(tmp_path: Path, feed: Feed, data: st.DataObject) -> None:
    """Any value the schema can carry, in blocks of any size, interleaved ts: same records, errors, counters."""
    entries = data.draw(_entries(feed))
    blocks = _split(entries, data.draw(st.lists(st.integers(0, 20), max_size=3)))
    assert_same(tape(tmp_path / "t.avro", feed, blocks, data.draw(st.sampled_from(["null", "deflate"]))))


@pytest.mark.parametrize("feed", list(Feed))
@settings(max_examples=80, deadline=None, suppress_health_check=HEALTH)
@given(data=st.data())
def test_same_outcome_for_damaged_blocks(tmp_path: Path, feed: Feed, data: st.DataObject) -> None:
    """Blocks whose entry bytes are flipped, cut, extended or spliced, or whose count is off: the same
    records before the damage, the same MalformedRecord (or the same skipped/bad_blocks with skip_bad)."""
    blocks = _split(data.draw(_entries(feed)), data.draw(st.lists(st.integers(0, 20), max_size=2)))
    k = data.draw(st.integers(0, len(blocks) - 1))
    count, raw = blocks[k]
    blocks[k] = (count + data.draw(st.sampled_from([0, 0, 0, -1, 1])), data.draw(damaged(raw)))
    assert_same(tape(tmp_path / "t.avro", feed, blocks, data.draw(st.sampled_from(["null", "deflate"]))))


SAMPLES: dict[Feed, dict[str, Any]] = {
    Feed.EP3: {"account_id": "A", "kind": "UPDATE", "seq": 3, "ts_ms": TS, "positions": [{"symbol": "B", "qty": "1"}]},
    Feed.RISK: {"account_id": "A", "published_ts_ms": TS, "positions": [], "im_total": None,
                "open_orders_margin": "0", "equity": "12.5", "avail": "-1234567.123"},
    Feed.OG_MARGIN: {"account_id": "A", "ts_ms": TS, "positions_source": "EP3", "im_positions": "2",
                     "open_orders_margin": "0", "equity": "1", "avail": "99999.75"},
    Feed.FILLS: {"fill_id": "F", "account_id": "A", "symbol": "B", "qty": "1", "price": "2", "ts_ms": TS},
    Feed.MARKS: {"symbol": "BTC-PERP", "price": "2.5", "ts_ms": TS},
    Feed.INSTRUMENTS: {"symbol": "BTC-PERP", "contract_size": "1", "im_rate": "0.0512345678"},
}


@pytest.mark.parametrize("feed", list(Feed))
def test_same_outcome_for_every_cut_of_the_last_entry(tmp_path: Path, feed: Feed) -> None:
    """A block cut anywhere in its last entry, including inside its last string or decimal (which a
    slice would silently shorten): the direct reader never yields it; errors are the generic ones."""
    good = entry(TS, body(feed, SAMPLES[feed]), feed.value.encode())
    for n in range(len(good)):
        assert_same(tape(tmp_path / "t.avro", feed, [(2, good + good[:n]), (1, good)]))


def _long(z: int, extra: int = 0) -> bytes:
    """The zig-zagged `z` as a varint padded with `extra` redundant continuation bytes."""
    out = bytearray()
    while True:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
        if not z:
            break
    out += b"\x80" * extra
    out[-1] &= 0x7F
    return bytes(out)


MARK = body(Feed.MARKS, {"symbol": "BTC", "price": "2.5", "ts_ms": TS})
UNUSUAL = {
    "non-minimal ts_ms": _long(2 * TS, 2) + entry(0, MARK)[1:],
    "10-byte ts_ms": _long(2 * TS, 10 - len(zigzag(TS))) + entry(0, MARK)[1:],
    "11-byte ts_ms": _long(2 * TS, 11 - len(zigzag(TS))) + entry(0, MARK)[1:],
    "negative topic length": zigzag(TS) + zigzag(-2) + b"ma" + entry(0, MARK)[7:],
    "invalid utf-8 topic": entry(TS, MARK, topic=b"\xff\xfe"),
    "long topic": entry(TS, MARK, topic=b"m" * 200),
    "negative partition, huge offset": entry(TS, MARK, partition=-1, offset=2**62),
    "blocked price": entry(TS, MARK[:4] + _long(2 * 1, 1) + MARK[5:]),
    "empty": b"",
    "one byte": b"\x02",
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_same_outcome_for_unusual_encodings(tmp_path: Path, name: str, codec: str) -> None:
    """An entry fastavro reads (or refuses) but the direct reader does not take, between good ones."""
    good = entry(TS, MARK)
    path = tape(tmp_path / "t.avro", Feed.MARKS, [(2, good + good), (3, good + UNUSUAL[name] + good), (1, good)],
                codec)
    assert_same(path)


# --- the reorder window ----------------------------------------------------------------------------

def one_heap(ts: list[int], window: int) -> tuple[list[int], int]:
    """The window as it was: every entry through one heap; (release order, late count)."""
    heap: list[tuple[int, int]] = []
    out, late, newest, released = [], 0, -(1 << 62), -(1 << 62)
    for n, t in enumerate(ts):
        late += t < released
        newest = max(newest, t)
        heapq.heappush(heap, (t, n))
        while heap[0][0] <= newest - window:
            released = heap[0][0]
            out.append(heapq.heappop(heap)[1])
    return out + [n for _, n in sorted(heap)], late


class Listed(AvroTape):
    def __init__(self, ts: list[int], window: int) -> None:
        super().__init__(Path("-"), reorder_ms=window)
        self.ts = ts

    def _read(self) -> Iterator[TapeRecord]:
        for n, t in enumerate(self.ts):
            yield TapeRecord(t, Feed.MARKS, Mark("BTC", None, t), n)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(ts=st.lists(st.one_of(st.integers(0, 40), st.integers(0, 3)), max_size=60),
       window=st.sampled_from([1, 2, 5, 30]), sorted_run=st.booleans())
def test_window_releases_as_one_heap(ts: list[int], window: int, sorted_run: bool) -> None:
    """In order, shuffled, with ties, very late entries: same order and `late` count as one heap."""
    if sorted_run:  # mostly in order with a few late ones, the usual shape of a tape
        ts = sorted(ts[: len(ts) // 2]) + ts[len(ts) // 2:]
    tape_ = Listed(ts, window)
    assert ([r.where for r in tape_], tape_.late) == one_heap(ts, window)
