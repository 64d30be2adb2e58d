"""Hand-over point between the fetch loop and the pipeline, with backpressure; and worker metrics.

`Router` is the `BatchSink` of `BatchConsumer`: `deliver` only appends the fetched list (no decode, no
task, no await), so the fetch loop costs O(1) per batch. Backpressure is by *not fetching*:
- while more than `max_pending` raw records wait for the pipeline, or the commit gate is behind,
  `wait_capacity` blocks the fetch loop (the gate only while the worker is warm: during a rebalance
  the same loop reads the table changelogs that recovery waits for);
- partitions whose lane is far *ahead* of its engine's watermark (holding more than its share of the
  worker's `held_records` decoded records: see `streams.agents.runtime`) are left out of fetches
  (`held_back`), so memory stays bounded while the lagging input, which holds the watermark, keeps
  being fetched (watermark alignment).

`WorkerMetrics` updates the metrics of `streams.metrics` from pipeline state; labels never carry
account ids.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

from faust.types import TP

from streams import metrics as m
from streams.core.events import Event
from streams.worker.pipeline import DeadLetter, Pipeline


class Router:
    """See the module docstring."""

    def __init__(self, topics: frozenset[str], max_pending: int = 200_000) -> None:
        self.topics = topics
        self.max_pending = max_pending
        self.pending: dict[TP, list[Any]] = defaultdict(list)
        self.count = 0
        self.arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.ahead: set[TP] = set()
        self.gate_full = False

    def deliver(self, tp: TP, records: list[Any]) -> None:
        self.pending[tp].extend(records)
        self.count += len(records)
        self.arrived.set()
        if self.count >= self.max_pending:
            self._room.clear()

    def take(self) -> dict[TP, list[Any]]:
        out, self.pending, self.count = self.pending, defaultdict(list), 0
        self._update_room()
        return out

    def clear(self) -> None:
        self.take()

    def discard(self, tps: set[TP]) -> None:
        """Drop what is held for `tps` (see `BatchConsumer.seek_to_committed`)."""
        for tp in tps:
            self.count -= len(self.pending.pop(tp, ()))
        self._update_room()

    def set_gate_full(self, full: bool) -> None:
        self.gate_full = full
        self._update_room()

    def _update_room(self) -> None:
        if self.count < self.max_pending and not self.gate_full:
            self._room.set()
        else:
            self._room.clear()

    def held_back(self) -> set[TP]:
        return self.ahead

    async def wait_capacity(self) -> None:
        await self._room.wait()


class WorkerMetrics:
    """Feeds `streams.metrics.Metrics` from the pipeline (see the module docstring)."""

    def __init__(self, metrics: m.Metrics) -> None:
        self.m = metrics
        self._source: str | None = None  # the positions source last set (only this object sets it)
        # per engine stat: partition -> (engine, its count when last read)
        self._counted: dict[str, dict[int, tuple[Any, int]]] = {"ep3_stale": {}, "late_records": {}}

    def consumed(self, feed: str, n: int) -> None:
        self.m.records_consumed.labels(feed=feed).inc(n)

    def dead_letter(self, d: DeadLetter) -> None:
        reason = "contract_violation" if d.reason == "contract" else "decode_error"
        self.m.dead_letters.labels(feed=d.feed.value, reason=reason).inc()

    def events(self, events: list[Event]) -> None:
        """Count a batch of events; observe the snapshot ages in one go, and set the positions source
        once, to the batch's last transition (no scrape can see one set in the middle of a batch)."""
        ages: list[float] = []
        source = m.observe_events(self.m, events, ages)
        m.observe_many(self.m.snapshot_age, ages)
        if source is not None and source != self._source:
            m.set_positions_source(self.m, source)
            self._source = source

    def state(self, pipeline: Pipeline, wall_ms: float, lag: dict[str, int]) -> None:
        """Gauges derived from engine state: open episodes, engine lag, consumer lag; and the engines'
        ep3-stale and late-record counts."""
        open_mm: Counter[str] = Counter()
        open_an: Counter[str] = Counter()
        oldest: int | None = None
        self.m.ep3_stale.inc(self._increase("ep3_stale", pipeline))
        self.m.late_records.inc(self._increase("late_records", pipeline))
        for pe in pipeline.engines.values():
            eng = pe.engine
            if eng.started:
                oldest = eng.now if oldest is None else min(oldest, eng.now)
            mm, an = pe.open_counts()
            open_mm.update(mm)
            open_an.update(an)
        m.set_open(self.m.open_mismatches, "class", open_mm, m.OPEN_MISMATCH_CLASSES)
        m.set_open(self.m.open_witness_anomalies, "status", open_an, m.WITNESS_STATUSES)
        if oldest is not None:
            self.m.engine_lag.set(max(0.0, (wall_ms - oldest) / 1000))
        for feed, n in lag.items():
            self.m.consumer_lag.labels(feed=feed).set(n)

    def _increase(self, stat: str, pipeline: Pipeline) -> int:
        """How much the engines' counter `stat` grew since the last call. An engine restored after a
        rebalance counts from its restored value (its earlier counts were this or another worker's),
        and a dropped engine's counts stay counted."""
        engines = pipeline.engines
        seen = self._counted[stat]
        for p in [p for p in seen if p not in engines]:  # not kept alive here: an engine holds every account
            del seen[p]
        grown = 0
        for p, pe in engines.items():
            eng = pe.engine
            n = eng.stats.get(stat, 0)
            last = seen.get(p)
            grown += n - (last[1] if last is not None and last[0] is eng else pe.stats_at_start.get(stat, 0))
            seen[p] = (eng, n)
        return grown
