"""Avro object container tapes: format, framing checks, and the streaming reader.

A tape holds one feed for one trading day. Each entry is a `TapeEntry` record
`{ts_ms: long, topic: string, partition: int, offset: long, value: <the feed's schema from schemas/>}`:
the Kafka timestamp (the event time the workers use), and where the record came from. The header
metadata names the feed (`divmon.feed`); the writer is `streams.tapes.record.TapeWriter`.

Reader guarantees (`AvroTape`):
- streaming: one block in memory at a time, plus the reorder window (below); never the whole file;
- strict framing: the magic, every block's count/size, its sync marker and the bytes it decodes to are
  checked; a file that ends inside a block (truncated last block), a bad sync marker, an undecodable
  block or record raises `MalformedRecord` naming the file and `block N (byte X)` or
  `block N record M (byte X)`. Nothing is dropped silently. With `skip_bad`, a bad record is skipped
  and counted in `skipped`; a bad block is skipped by searching for the next sync marker, its
  declared record count (when readable) is added to `skipped` and it is counted in `bad_blocks`;
- order: entries come in file order except that a bounded window (`reorder_ms` of event time) puts
  records of interleaved Kafka partitions back in `ts_ms` order, stable for ties. An entry older than
  what was already released is still yielded (next), counted in `late` (the engine counts it too);
- decimals come out canonical, exactly as the Kafka codec gives them to the workers.
"""

from __future__ import annotations

import functools
import heapq
import json
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import fastavro

from streams.codec.codec import INPUT_CLASSES
from streams.codec.direct import Read, compile_body
from streams.codec.schemas import AvroSchema, default_schemas, prepare
from streams.core.records import FEED_OF, TYPED_RULES, Feed, RecordError, parse_value
from streams.tapes.errors import MalformedRecord
from streams.tapes.model import TapeRecord, topic_map

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
MAX_BLOCK_BYTES = 256 << 20
REORDER_MS = 5_000
FEED_KEY = "divmon.feed"
FEED_BY_SCHEMA = {cls.__name__: feed for cls, feed in FEED_OF.items()}


def entry_schema(feed: Feed) -> dict[str, Any]:
    """The container (file) schema of a feed: the Kafka coordinates around the feed's record."""
    value = default_schemas()[next(c.__name__ for c, f in FEED_OF.items() if f is feed)].definition
    return {"type": "record", "name": "TapeEntry", "namespace": "io.divmon.tapes", "fields": [
        {"name": "ts_ms", "type": "long", "doc": "Kafka record timestamp, epoch ms UTC (event time)"},
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "value", "type": value}]}


class Corrupt(Exception):
    """Framing failure at byte `at`; `count` is the block's declared record count when known;
    `resume` is where the next block should start when the framing around it was readable."""

    def __init__(self, message: str, at: int, count: int | None = None, resume: int | None = None) -> None:
        super().__init__(message)
        self.at, self.count, self.resume = at, count, resume


@dataclass(frozen=True)
class Header:
    meta: dict[str, bytes]
    sync: bytes
    end: int  # byte offset of the first block

    @property
    def codec(self) -> str:
        return self.meta.get("avro.codec", b"null").decode()

    def schema(self) -> AvroSchema:
        return prepare(json.loads(self.meta["avro.schema"]))

    def feed(self) -> Feed:
        if FEED_KEY in self.meta:
            return Feed(self.meta[FEED_KEY].decode())
        return FEED_BY_SCHEMA[self.schema().definition["fields"][4]["type"]["name"]]


def read_long(fh: BinaryIO) -> int | None:
    """A zig-zag varint, or None at a clean end of file; raises EOFError if it ends half-way."""
    shift = acc = 0
    while True:
        b = fh.read(1)
        if not b:
            if shift:
                raise EOFError("file ends inside a varint")
            return None
        acc |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return (acc >> 1) ^ -(acc & 1)
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _need(fh: BinaryIO, n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise EOFError(f"file ends {len(data)} bytes into {what} of {n} bytes")
    return data


def read_header(fh: BinaryIO) -> Header:
    """Parse magic, metadata map and sync marker; raises Corrupt (at byte 0) if it can't."""
    try:
        if _need(fh, 4, "magic") != MAGIC:
            raise Corrupt("not an Avro object container file (bad magic)", 0)
        meta: dict[str, bytes] = {}
        while count := read_long(fh):
            if count < 0:
                count = -count
                read_long(fh)
            for _ in range(count):
                key = _need(fh, read_long(fh) or 0, "metadata key").decode()
                meta[key] = _need(fh, read_long(fh) or 0, "metadata value")
        sync = _need(fh, SYNC_SIZE, "sync marker")
    except (EOFError, ValueError, UnicodeDecodeError) as exc:
        raise Corrupt(f"unreadable header: {exc}", 0) from exc
    if "avro.schema" not in meta:
        raise Corrupt("header has no avro.schema", 0)
    return Header(meta, sync, fh.tell())


@dataclass
class Block:
    index: int
    at: int  # byte offset of the block's count
    count: int
    data: bytes  # decompressed
    end: int  # byte offset after its sync marker


def next_block(fh: BinaryIO, header: Header, index: int) -> Block | None:
    """The next block, or None at a clean end of file (exactly after a sync marker). Raises Corrupt."""
    at = fh.tell()
    count = None
    try:
        count = read_long(fh)
        if count is None:
            return None
        size = read_long(fh)
        if size is None or count < 0 or not 0 <= size <= MAX_BLOCK_BYTES:
            raise Corrupt(f"implausible block header (count {count}, size {size})", at, None)
        raw = _need(fh, size, "block data")
        if _need(fh, SYNC_SIZE, "sync marker") != header.sync:
            raise Corrupt("bad sync marker after the block data", at, count, fh.tell())
    except EOFError as exc:
        raise Corrupt(f"truncated last block: {exc}", at, count) from exc
    except ValueError as exc:
        raise Corrupt(f"bad block header: {exc}", at, count) from exc
    try:
        data = zlib.decompress(raw, -15) if header.codec == "deflate" else raw
    except zlib.error as exc:
        raise Corrupt(f"block does not inflate: {exc}", at, count) from exc
    return Block(index, at, count, data, fh.tell())


def resync(fh: BinaryIO, sync: bytes, start: int) -> bool:
    """Seek just past the next sync marker after byte `start`; False if there is none."""
    fh.seek(start)
    tail = b""
    while chunk := fh.read(1 << 20):
        buf = tail + chunk
        i = buf.find(sync)
        if i >= 0:
            fh.seek(fh.tell() - len(buf) + i + SYNC_SIZE)
            return True
        tail = buf[-(SYNC_SIZE - 1):]
    return False


def read_entry(bio: BytesIO, schema: AvroSchema, block: Block, i: int) -> dict[str, Any]:
    """Entry `i` of `block` from `bio`'s position (fastavro), decimals canonical; raises Corrupt if undecodable."""
    try:
        entry: Any = fastavro.schemaless_reader(bio, schema.raw, None)
        return entry if schema.fix_raw is None else schema.fix_raw(entry)  # type: ignore[no-any-return]
    except Exception as exc:
        raise Corrupt(f"record {i}: undecodable: {type(exc).__name__}: {exc}", block.at, block.count) from exc


def check_end(block: Block, end: int) -> None:
    """Raise Corrupt unless the block's entries ended exactly at the end of its data."""
    if end != len(block.data):
        raise Corrupt(f"{len(block.data) - end} bytes left after {block.count} records", block.at, block.count)


def iter_entries(block: Block, schema: AvroSchema) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(record index, entry)` of a block, decimals canonical; raises Corrupt on undecodable bytes."""
    bio = BytesIO(block.data)
    for i in range(block.count):
        yield i, read_entry(bio, schema, block, i)
    check_end(block, bio.tell())


class Entry(NamedTuple):
    """A `TapeEntry` as the direct reader builds it (`value` is the feed's record)."""

    ts_ms: int
    topic: str
    partition: int
    offset: int
    value: Any


@functools.cache
def _direct_entry(feed: Feed) -> Read | None:
    return compile_body(entry_schema(feed), {**INPUT_CLASSES, "TapeEntry": Entry})


def direct_reader(schema: AvroSchema, feed: Feed) -> Read | None:
    """`read(data, pos) -> (Entry, end)` for this file's entries (see `streams.codec.direct`), or None.

    Only for a file whose schema is exactly the one we write for `feed`: there the Avro types are
    the ones `TYPED_RULES` assumes. Any other schema (older, foreign) is read the generic way.
    """
    return _direct_entry(feed) if schema.definition == entry_schema(feed) else None


@dataclass
class AvroTape:
    """One Avro tape as `TapeRecord`s (see the module docstring for the guarantees)."""

    path: Path
    topics: dict[str, Feed] = field(default_factory=topic_map)
    skip_bad: bool = False
    reorder_ms: int = REORDER_MS
    skipped: int = 0
    bad_blocks: int = 0
    late: int = 0
    bytes_read: int = 0

    def __iter__(self) -> Iterator[TapeRecord]:
        # The window holds `(ts_ms, n, record)`, released smallest first. While entries come in ts
        # order (the usual case) the pending ones are in order too and wait in a FIFO; the first one
        # older than the newest moves them into a heap (a sorted list already is one), which serves
        # until only the newest entry is left. Same order as one heap, without its cost per entry.
        fifo: deque[tuple[int, int, TapeRecord]] = deque()
        heap: list[tuple[int, int, TapeRecord]] = []
        newest = released = -(1 << 62)
        window = self.reorder_ms
        push, pop, append, popleft = heapq.heappush, heapq.heappop, fifo.append, fifo.popleft
        for n, rec in enumerate(self._read()):
            ts = rec.ts_ms
            if ts < released:
                self.late += 1
            if ts >= newest and not heap:
                newest = ts
                append((ts, n, rec))
                while fifo[0][0] <= newest - window:
                    released = fifo[0][0]
                    yield popleft()[2]
                continue
            if fifo:
                heap = list(fifo)
                fifo.clear()
            newest = max(newest, ts)
            push(heap, (ts, n, rec))
            while heap[0][0] <= newest - window:
                released = heap[0][0]
                yield pop(heap)[2]
            if len(heap) == 1:  # only the newest entry is left: back to the FIFO
                append(pop(heap))
        while fifo:
            yield popleft()[2]
        while heap:
            yield pop(heap)[2]

    def _read(self) -> Iterator[TapeRecord]:
        with self.path.open("rb") as fh:
            try:
                header = read_header(fh)
                feed, schema = header.feed(), header.schema()
                direct = direct_reader(schema, feed)
            except (Corrupt, KeyError, ValueError) as exc:
                raise MalformedRecord(str(self.path), "header (byte 0)", str(exc)) from exc
            index = 0
            while True:
                try:
                    block = next_block(fh, header, index)
                except Corrupt as exc:
                    self._bad(exc, index)
                    if exc.resume is not None:
                        fh.seek(exc.resume)
                    elif not resync(fh, header.sync, exc.at + 1):
                        return
                    index += 1
                    continue
                if block is None:
                    return
                yield from self._records(block, feed, schema, direct)
                self.bytes_read = block.end
                index += 1

    def _records(self, block: Block, feed: Feed, schema: AvroSchema, direct: Read | None) -> Iterator[TapeRecord]:
        """The block's records in order. Each entry is read by `direct` when it can and its record
        passes `TYPED_RULES`; otherwise (anything unusual, a contract violation) the entry is read
        again from the same byte by fastavro and `parse_value`, which give the verdict and the errors."""
        where = f"block {block.index}"
        data, count = block.data, block.count
        size, rule, bio, new = len(data), TYPED_RULES[feed], BytesIO(data), tuple.__new__
        done = pos = 0
        try:
            for i in range(count):
                done = i
                if direct is not None:
                    try:
                        entry, end = direct(data, pos)
                    except Exception:  # anything unusual: read this entry the generic way below
                        pass
                    else:
                        # end <= size: nothing was sliced short by the end of the data
                        if end <= size and rule(entry[4]):
                            pos = end
                            yield new(TapeRecord, (entry[0], feed, entry[4], f"{where} record {i}"))
                            continue
                bio.seek(pos)
                value = read_entry(bio, schema, block, i)
                pos = bio.tell()
                try:
                    record = parse_value(feed, value["value"])
                except RecordError as exc:
                    if not self.skip_bad:
                        raise MalformedRecord(str(self.path), f"{where} record {i} (byte {block.at})",
                                              f"contract violation: {exc}") from exc
                    self.skipped += 1
                    continue
                yield TapeRecord(value["ts_ms"], feed, record, f"{where} record {i}")
            done = count
            check_end(block, pos)
        except Corrupt as exc:
            exc.count = count - done
            self._bad(exc, block.index)

    def _bad(self, exc: Corrupt, index: int) -> None:
        if not self.skip_bad:
            raise MalformedRecord(str(self.path), f"block {index} (byte {exc.at})", str(exc)) from exc
        self.skipped += exc.count or 0
        self.bad_blocks += 1
