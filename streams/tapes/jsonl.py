"""JSON Lines tapes (DESIGN section 5): one `{"topic", "ts_ms", "value"}` object per line.

Reading streams line by line; memory stays bounded by one record. Lines must be in `ts_ms` order
(a hand-written tape that isn't can be sorted in memory on request). A bad line raises
`MalformedRecord` naming the file and line, unless the caller asked to skip bad records, in which
case they are counted in `skipped`.

Each line is first decoded by msgspec into typed structs (`jsonl_typed`, ~2x cheaper); a line that
path doesn't take whole is read with `json` as before, which accepts it or says why not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

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
        with self.path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                # fast path (jsonl_typed): the line decoded in C into typed structs, the record built
                # from them; it raises on anything it doesn't take whole, and that line is then read
                # the json way below, which accepts or rejects it exactly as before.
                try:
                    tl = typed(line)
                    ts, feed, rec = tl.ts_ms, tl.feed, tl.value.record()
                except Exception:  # any refusal means: read this line the json way
                    feed = None
                if feed is None:
                    if not line.strip():
                        continue
                    try:
                        ts, feed, rec = parse(line)
                    except (ValueError, KeyError, TypeError) as exc:
                        if not self.skip_bad:
                            raise MalformedRecord(str(self.path), f"line {lineno}", _why(exc)) from exc
                        self.skipped += 1
                        continue
                if in_order:
                    if ts < last:
                        raise MalformedRecord(str(self.path), f"line {lineno}",
                                              f"ts_ms {ts} goes back before {last}: tapes must be in "
                                              "ts_ms order (use --sort for a small hand-written tape)")
                    last = ts
                yield _new(TapeRecord, (ts, feed, rec, Line(lineno)))

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


def _no_typed(line: str) -> Any:
    raise ValueError("typed decoding is off")


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
