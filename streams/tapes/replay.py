"""Offline replay: tapes merged by event time, run through the same engine as the stream workers.

Several tapes are stream-merged by `ts_ms` (ties keep the order of the tapes as given, then file
order), so memory is bounded by the engine's live state, not by tape length. The result holds every
event in its final state (highest version), in order of first emission.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.engine import Engine
from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.tapes.jsonl import JsonlTape
from streams.tapes.model import TapeRecord, topic_map

BATCH = 1024


def open_tape(path: Path, topics: dict[str, str] | None = None, skip_bad: bool = False, sort: bool = False
              ) -> Any:
    """A tape reader chosen by file name: `.avro` is an Avro container, anything else JSON Lines."""
    if path.suffix == ".avro":
        from streams.tapes.avro import AvroTape

        return AvroTape(path, topics=topic_map(topics), skip_bad=skip_bad)
    return JsonlTape(path, topics=topic_map(topics), skip_bad=skip_bad, sort=sort)


def merge(tapes: Sequence[Iterable[TapeRecord]]) -> Iterator[TapeRecord]:
    """Stream-merge by ts_ms; ties keep the order of the tapes as given, then file order."""
    if len(tapes) == 1:
        return iter(tapes[0])
    return heapq.merge(*tapes, key=_ts)


def _ts(r: TapeRecord) -> int:
    return r.ts_ms


@dataclass
class ReplayResult:
    events: dict[str, Event] = field(default_factory=dict)
    emitted: int = 0
    records: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    engine: Engine | None = None

    def final_events(self) -> list[Event]:
        return list(self.events.values())


def run(records: Iterable[TapeRecord], cfg: EngineConfig,
        on_events: Callable[[list[Event]], None] | None = None,
        progress: Callable[[int], None] | None = None, keep: bool = True) -> ReplayResult:
    """Drive a fresh engine over `records`; `on_events` sees every emission (for sinks, summaries).

    With `keep=False` the final states are not kept (`result.events` stays empty): memory is then
    bounded by the engine's live state, whatever the tape's length."""
    engine = Engine(cfg)
    result = ReplayResult(engine=engine)
    final: dict[str, Event] | None = result.events if keep else None
    process = engine.process
    n = 0
    for n, (ts_ms, feed, record, _where) in enumerate(records, 1):
        process(feed, ts_ms, record)
        if n % BATCH == 0:
            _collect(engine, final, result, on_events)
            if progress is not None:
                progress(n)
    engine.flush()
    engine.close_minute()
    _collect(engine, final, result, on_events)
    pending = engine.pending()
    if pending:  # disagreements still inside grace at the end of input: their final state is `opened`
        result.emitted += len(pending)
        if final is not None:
            final.update((ev.event_id, ev) for ev in pending)
        if on_events is not None:
            on_events(list(pending))
    result.records = n
    result.stats = dict(engine.stats)
    return result


def _collect(engine: Engine, final: dict[str, Event] | None, result: ReplayResult,
             on_events: Callable[[list[Event]], None] | None) -> None:
    events = engine.take_events()
    if not events:
        return
    result.emitted += len(events)
    if final is not None:
        final.update((ev.event_id, ev) for ev in events)
    if on_events is not None:
        on_events(events)
