"""JSON Lines tapes (DESIGN section 5): one `{"topic", "ts_ms", "value"}` object per line.

Reading streams a block of lines at a time (256 KiB; `_blocks`), read as bytes and decoded only where
not ASCII, split as text-mode reading splits them. Lines must be in `ts_ms` order
(a hand-written tape that isn't can be sorted in memory on request). A bad line raises
`MalformedRecord` naming the file and line, unless the caller asked to skip bad records, in which
case they are counted in `skipped`. A line that isn't UTF-8 is such a bad line.

Each line is first decoded by msgspec into typed structs (`jsonl_typed`, ~2x cheaper); a line that
path doesn't take whole is read with `json` as before, which accepts it or says why not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from streams.core.records import Feed, RecordError, parse_value, record_to_value
from streams.tapes.errors import MalformedRecord
from streams.tapes.jsonl_typed import decoder
from streams.tapes.model import TapeRecord, topic_map


@dataclass
class JsonlTape:
    path: Path
    topics: dict[str, Feed] = field(default_factory=topic_map)
    skip_bad: bool = False
    sort: bool = False
    skipped: int = 0
    typed: bool = True  # try the msgspec fast path first; False reads every line the json way (tests)

    def __iter__(self) -> Iterator[TapeRecord]:
        """Records in file order; a `ts_ms` that goes backwards is an error (or, with `sort`, the
        whole file is read and stably sorted first: fine for hand-written tapes, not for a day)."""
        return self._sorted() if self.sort else self._read(in_order=True)

    def _sorted(self) -> Iterator[TapeRecord]:
        yield from sorted(self._read(in_order=False), key=lambda r: r.ts_ms)

    def _read(self, in_order: bool) -> Iterator[TapeRecord]:
        typed = decoder(self.topics).decode if self.typed else _no_typed
        parse = self._parse
        last: float = -math.inf
        lineno = 0
        with self.path.open("rb") as fh:
            for lines in _blocks(fh):
                # the lines' positions made in one C loop, not a Line(lineno) call each (-135 instructions)
                wheres = map(Line, range(lineno + 1, lineno + 1 + len(lines)))
                for line, where in zip(lines, wheres, strict=True):
                    # fast path (jsonl_typed): the line decoded in C into typed structs, the record
                    # built from them; it raises on anything it doesn't take whole, and that line is
                    # then read the json way below, which accepts or rejects it exactly as before.
                    try:
                        tl = typed(line)
                        ts, feed, rec = tl.ts_ms, tl.feed, tl.value.record()
                    except Exception:  # any refusal means: read this line the json way
                        feed = None
                    if feed is None:
                        try:
                            text = _text(line)
                            if not text.strip():
                                continue
                            ts, feed, rec = parse(text)
                        except (ValueError, KeyError, TypeError) as exc:
                            if not self.skip_bad:
                                raise MalformedRecord(str(self.path), str(where), _why(exc)) from exc
                            self.skipped += 1
                            continue
                    if in_order:
                        if ts < last:
                            raise MalformedRecord(str(self.path), str(where),
                                                  f"ts_ms {ts} goes back before {last}: tapes must be in "
                                                  "ts_ms order (use --sort for a small hand-written tape)")
                        last = ts
                    yield _new(TapeRecord, (ts, feed, rec, where))
                lineno += len(lines)

    def _parse(self, line: str) -> tuple[int, Feed, Any]:
        """The json path: ts_ms, feed and record of one line, or the exception that says why not."""
        try:
            # json.loads(line) is raw_decode wrapped in two calls and two whitespace regex matches,
            # ~20% of its cost on a tape line. A line that is one object then "\n" is decoded
            # directly; anything else (leading blanks, trailing text, invalid JSON) is left to loads,
            # which accepts or rejects it, with its message, exactly as before.
            obj, end = _DECODER.raw_decode(line)
            whole = end == len(line) or line[end:] == "\n"
        except ValueError:
            whole = False
        if not whole:
            obj = json.loads(line)
        # a well-formed line; anything else goes through _build for the error
        if type(obj) is dict and type(ts := obj.get("ts_ms")) is int and "value" in obj:
            feed = self.topics.get(obj.get("topic"))  # type: ignore[arg-type]
            if feed is not None:
                return ts, feed, parse_value(feed, obj["value"])
        feed = self.topics.get(obj["topic"]) if isinstance(obj, dict) and "topic" in obj else None
        return _build(obj, feed)


def _no_typed(line: bytes | str) -> Any:
    raise ValueError("typed decoding is off")


_BLOCK = 1 << 18  # bytes read at a time


def _blocks(fh: BinaryIO) -> Iterator[Sequence[bytes | str]]:
    """The lines of a binary file, a block at a time, as text-mode reading (UTF-8, universal newlines)
    would give them but without decoding what needn't be: "\r\n" and "\r" end a line as "\n" and
    read as "\n"; an ASCII line comes as bytes, any other as str. A line that isn't valid UTF-8
    comes as str with its bad bytes as lone surrogates ("surrogateescape"): msgspec refuses it and
    `_text` reports it, so it is one bad line (text-mode reading raised UnicodeDecodeError for the
    whole file, losing the lines before it in the same 8 KiB)."""
    tail = b""
    while data := fh.read(_BLOCK):
        if b"\r" in data:
            while data[-1] == 13 and (more := fh.read(1)):  # never cut a "\r\n" in two
                data += more
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines: list[bytes] = BytesIO(data).readlines()  # split at "\n" in C, sharing `data`'s buffer
        if tail:
            lines[0] = tail + lines[0]  # the line the block before ended in
        ascii = data.isascii() and lines[0].isascii()
        tail = b"" if lines[-1][-1] == 10 else lines.pop()  # the line this one ends in: wait for its end
        yield lines if ascii else _decoded(lines)
    if tail:
        yield _decoded([tail])


def _decoded(lines: list[bytes]) -> list[bytes | str]:
    return [x if x.isascii() else x.decode("utf-8", "surrogateescape") for x in lines]


def _text(line: bytes | str) -> str:
    """The line as text-mode reading would give it, or UnicodeDecodeError if it isn't UTF-8."""
    if isinstance(line, bytes):
        return line.decode("ascii")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that weren't UTF-8 (see _blocks)
        line.encode("utf-8", "surrogateescape").decode("utf-8")  # raises what decoding the bytes raises
    return line


_new = tuple.__new__  # TapeRecord's generated __new__ does just this, in a Python frame
_DECODER = json.JSONDecoder()  # what json.loads uses when given no options


class Line(int):
    """A line number that prints as a position ("line 12"), formatted only if ever printed."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"line {int(self)}"

    def __format__(self, spec: str) -> str:
        return str(self)


def _build(obj: Any, feed: Feed | None) -> tuple[int, Feed, Any]:
    if not isinstance(obj, dict):
        raise RecordError("expected a JSON object with topic, ts_ms and value")
    if feed is None:
        raise RecordError(f"unknown topic {obj.get('topic')!r}" if "topic" in obj else "missing", "topic")
    ts = obj.get("ts_ms")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise RecordError(f"expected an integer, got {ts!r}", "ts_ms")
    if "value" not in obj:
        raise RecordError("missing", "value")
    try:
        return ts, feed, parse_value(feed, obj["value"])
    except RecordError as exc:
        raise RecordError(str(exc), "") from exc


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8: {exc.reason} at byte {exc.start + 1} of the line"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecordError):
        return f"contract violation: {exc}"
    return f"malformed record: {exc}"


def write_record(out: TextIO, feed: Feed, ts_ms: int, record: Any, topic: str | None = None) -> None:
    """Append one record as a JSON line (decimals as strings; absent stays absent)."""
    out.write(json.dumps({"topic": topic or feed.value, "ts_ms": ts_ms, "value": record_to_value(record)},
                         separators=(",", ":")))
    out.write("\n")
