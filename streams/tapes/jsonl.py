"""JSON Lines tapes (DESIGN section 5): one `{"topic", "ts_ms", "value"}` object per line.

Reading streams line by line; memory stays bounded by one record. Lines must be in `ts_ms` order
(a hand-written tape that isn't can be sorted in memory on request). A bad line raises
`MalformedRecord` naming the file and line, unless the caller asked to skip bad records, in which
case they are counted in `skipped`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from streams.core.records import Feed, RecordError, parse_value, record_to_value
from streams.tapes.errors import MalformedRecord
from streams.tapes.model import TapeRecord, topic_map


@dataclass
class JsonlTape:
    path: Path
    topics: dict[str, Feed] = field(default_factory=topic_map)
    skip_bad: bool = False
    sort: bool = False
    skipped: int = 0

    def __iter__(self) -> Iterator[TapeRecord]:
        """Records in file order; a `ts_ms` that goes backwards is an error (or, with `sort`, the
        whole file is read and stably sorted first: fine for hand-written tapes, not for a day)."""
        if self.sort:
            yield from sorted(self._read(), key=lambda r: r.ts_ms)
            return
        last = None
        for rec in self._read():
            if last is not None and rec.ts_ms < last:
                raise MalformedRecord(str(self.path), str(rec.where),
                                      f"ts_ms {rec.ts_ms} goes back before {last}: tapes must be in "
                                      "ts_ms order (use --sort for a small hand-written tape)")
            last = rec.ts_ms
            yield rec

    def _read(self) -> Iterator[TapeRecord]:
        loads = json.loads
        raw_decode = _DECODER.raw_decode
        topics = self.topics
        with self.path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    # json.loads(line) is raw_decode wrapped in two calls and two whitespace regex
                    # matches, ~20% of its cost on a tape line. A line that is one object then "\n" is
                    # decoded directly; anything else (leading blanks, trailing text, invalid JSON) is
                    # left to loads, which accepts or rejects it, with its message, exactly as before.
                    try:
                        obj, end = raw_decode(line)
                        whole = end == len(line) or line[end:] == "\n"
                    except ValueError:
                        whole = False
                    if not whole:
                        obj = loads(line)
                    # fast path: a well-formed line; anything else goes through _build for the error
                    if type(obj) is dict and type(ts := obj.get("ts_ms")) is int and "value" in obj:
                        feed = topics.get(obj.get("topic"))  # type: ignore[arg-type]
                        if feed is not None:
                            yield TapeRecord(ts, feed, parse_value(feed, obj["value"]), Line(lineno))
                            continue
                    feed = topics.get(obj["topic"]) if isinstance(obj, dict) and "topic" in obj else None
                    yield TapeRecord(*_build(obj, feed), Line(lineno))
                except (ValueError, KeyError, TypeError) as exc:
                    if not self.skip_bad:
                        raise MalformedRecord(str(self.path), f"line {lineno}", _why(exc)) from exc
                    self.skipped += 1


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
