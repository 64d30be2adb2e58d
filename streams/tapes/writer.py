"""Appending writer of one Avro tape file, crash-safe and idempotent per Kafka offset.

Guarantees of `TapeWriter`:
- the file is always a valid container up to its last complete block: the header is created via a
  temporary file and an atomic rename, entries are written as whole blocks (at most `block_records`
  entries or `block_bytes` bytes each), and `flush()` writes pending entries and fsyncs;
- idempotent: an entry whose (topic, partition, offset) is not above the highest offset the file
  already holds for that topic-partition is refused (`append` returns False). Within one file the
  offsets of a partition only grow, so this is exact: a record re-consumed after a crash is never
  written twice;
- repair on open: a torn last block (the process or machine died while writing it) is cut off at the
  last good sync marker and logged with the number of records it declared (they were never committed
  to Kafka, so they are consumed again). Damage anywhere but the tail is never "repaired": opening
  raises `TapeError`, and the file is left as it is for a person to look at;
- a checkpoint `<file>.offsets.json` (size + offsets as of the last flush) saves re-reading the
  whole file on open; it is only trusted when it ends on a sync marker within the file, else ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from streams.codec import Codec
from streams.codec.codec import write_body
from streams.codec.convert import to_mapping
from streams.codec.schemas import AvroSchema, prepare
from streams.core.records import Feed, Record
from streams.tapes.avro import (
    FEED_KEY,
    MAGIC,
    Corrupt,
    Header,
    entry_schema,
    iter_entries,
    next_block,
    read_header,
    resync,
)
from streams.tapes.errors import TapeError

log = logging.getLogger(__name__)
Key = tuple[str, int]


def zigzag(n: int) -> bytes:
    """Avro `long`: zig-zag, then little-endian base-128 varint."""
    u = (n << 1) ^ (n >> 63)
    out = bytearray()
    while u > 0x7F:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def _string(s: bytes) -> bytes:
    return zigzag(len(s)) + s


class TapeWriter:
    def __init__(self, path: Path, feed: Feed, codec: str = "deflate", block_records: int = 4096,
                 block_bytes: int = 1 << 20) -> None:
        self.path, self.feed, self.codec = path, feed, codec
        self.block_records, self.block_bytes = block_records, block_bytes
        self.schema: AvroSchema = prepare(entry_schema(feed))
        self.max_offsets: dict[Key, int] = {}
        self.written = self.duplicates = self.cut = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._sync = self._open()
        self._fh = self.path.open("ab")

    # --- open, create, repair --------------------------------------------------------------------

    def _open(self) -> bytes:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return self._create()
        with self.path.open("rb") as fh:
            try:
                header = read_header(fh)
            except Corrupt as exc:
                raise TapeError(str(self.path), "header (byte 0)", f"{exc}; not touching it") from exc
            good = self._scan(fh, header, self._checkpoint(header))
            size = fh.seek(0, os.SEEK_END)
        if good < size:
            with self.path.open("r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
            self._save_checkpoint(good, header.sync)
        return header.sync

    def _create(self) -> bytes:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sync = os.urandom(16)
        meta = {"avro.schema": json.dumps(self.schema.definition, separators=(",", ":")).encode(),
                "avro.codec": self.codec.encode(), FEED_KEY: self.feed.value.encode()}
        body = MAGIC + zigzag(len(meta)) + b"".join(_string(k.encode()) + _string(v) for k, v in meta.items())
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(body + zigzag(0) + sync)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        return sync

    def _checkpoint(self, header: Header) -> int:
        """Where scanning must start: after the checkpoint if it is consistent, else the first block."""
        try:
            cp = json.loads(self._checkpoint_path.read_text())
            size = int(cp["size"])
            with self.path.open("rb") as fh:
                fh.seek(size - 16)
                ok = size == header.end or (size > header.end and fh.read(16) == header.sync)
            if ok:
                self.max_offsets = {(t, int(p)): int(o) for t, p, o in cp["max_offsets"]}
                return size
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self.max_offsets = {}
        return header.end

    def _scan(self, fh: Any, header: Header, start: int) -> int:
        """Read blocks from `start`, learning offsets; the byte offset where good data ends."""
        fh.seek(start)
        index, good = 0, start
        while True:
            try:
                block = next_block(fh, header, index)
                if block is None:
                    return good
                for _, e in iter_entries(block, self.schema):
                    self._saw(e["topic"], e["partition"], e["offset"])
            except Corrupt as exc:
                if resync(fh, header.sync, exc.at + 1):
                    raise TapeError(str(self.path), f"byte {exc.at}",
                                    f"{exc}, and good blocks follow: not a torn tail; not touching it") from exc
                self.cut = exc.count or 0
                log.warning("%s: torn last block at byte %d (%s): cut %s record(s); they will be consumed "
                            "again from the committed offsets", self.path, exc.at, exc,
                            exc.count if exc.count is not None else "an unknown number of")
                return exc.at
            good = block.end
            index += 1

    # --- writing ---------------------------------------------------------------------------------

    def _saw(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset > self.max_offsets.get(key, -1):
            self.max_offsets[key] = offset

    def append(self, ts_ms: int, topic: str, partition: int, offset: int, body: bytes) -> bool:
        """Queue one entry (`body` = the value's Avro encoding); False if the file already has it."""
        key = (topic, partition)
        if offset <= self.max_offsets.get(key, -1):
            self.duplicates += 1
            return False
        self.max_offsets[key] = offset
        entry = zigzag(ts_ms) + _string(topic.encode()) + zigzag(partition) + zigzag(offset) + body
        self._pending.append(entry)
        self._pending_bytes += len(entry)
        if len(self._pending) >= self.block_records or self._pending_bytes >= self.block_bytes:
            self._write_block()
        return True

    def _write_block(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        if self.codec == "deflate":
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = c.compress(data) + c.flush()
        self._fh.write(zigzag(len(self._pending)) + zigzag(len(data)) + data + self._sync)
        self.written += len(self._pending)
        self._pending, self._pending_bytes = [], 0

    def flush(self) -> None:
        """Write what is pending and fsync; after this returns, every accepted entry is on disk."""
        self._write_block()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._save_checkpoint(self._fh.tell(), self._sync)

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()

    @property
    def _checkpoint_path(self) -> Path:
        return self.path.with_name(self.path.name + ".offsets.json")

    def _save_checkpoint(self, size: int, sync: bytes) -> None:
        doc = {"size": size, "max_offsets": [[t, p, o] for (t, p), o in sorted(self.max_offsets.items())]}
        tmp = self._checkpoint_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self._checkpoint_path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def record_body(feed: Feed, record: Record) -> bytes:
    """The Avro body of a record under its feed's schema (what a producer would have sent)."""
    return write_body(Codec(feed).schema, to_mapping(record))


def convert_jsonl(sources: list[Path], root: Path, sort: bool = False, codec: str = "deflate") -> dict[Path, int]:
    """JSON Lines tapes -> Avro tapes under `root`, per feed and trading day; records per file.

    Entries get partition -1 and offset = ordinal per feed. Raises TapeError if a target exists or a
    source line is malformed (nothing is half-converted silently: files written so far are listed).
    """
    from streams.tapes.calendar import tape_path, trading_day
    from streams.tapes.jsonl import JsonlTape
    from streams.tapes.replay import merge

    writers: dict[Path, TapeWriter] = {}
    counts: dict[Path, int] = {}
    ordinal: dict[Feed, int] = {}
    try:
        for rec in merge([JsonlTape(p, sort=sort) for p in sources]):
            path = tape_path(root, trading_day(rec.ts_ms), rec.feed.value)
            if path not in writers:
                if path.exists():
                    raise TapeError(str(path), "file", "already exists; convert never appends to a tape")
                writers[path] = TapeWriter(path, rec.feed, codec=codec)
            n = ordinal[rec.feed] = ordinal.get(rec.feed, -1) + 1
            writers[path].append(rec.ts_ms, rec.feed.value, -1, n, record_body(rec.feed, rec.record))
            counts[path] = counts.get(path, 0) + 1
    finally:
        for w in writers.values():
            w.close()
    return counts
