"""The batch pipeline: raw Kafka records in, decoded and merged into partition engines, events out.

No Kafka, no Faust, no clock in here: adapters hand in raw records `(offset, ts_ms, key, value)`
per topic-partition and the wall time; the pipeline hands back dead letters, events and checkpoints.
Guarantees:

- a record is decoded once, in a batch (`Codec.decode_many`); one that can't be decoded or violates
  the contract becomes a `DeadLetter` (reason = the codec's stable token) and never reaches an engine;
- a record below a lane's consumed end (re-delivered after a seek) is ignored, so a rebalance or a
  restore never applies a record twice;
- event time is the Kafka record timestamp (what tapes record as `ts_ms`);
- an engine exists only for assigned partitions; it is restored from the state store the first time
  the partition is needed (`engine`), and dropped on revocation (`retain`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.codec import Codec, DecodeError
from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.core.records import Feed
from streams.worker.globals import GlobalLog
from streams.worker.partition import GLOBAL_FEEDS, PartitionEngine

Raw = tuple[int, int, bytes | None, bytes | None]  # offset, ts_ms, key, value


class StateStore(Protocol):
    """Where checkpoints live (a changelog-backed Faust table in the worker, a dict in tests)."""

    def rows(self, partition: int) -> Iterable[bytes]: ...

    def write(self, partition: int, rows: Mapping[str, bytes]) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    feed: Feed
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


@dataclass(slots=True)
class Checkpoint:
    """What a checkpoint wrote, and the offsets it makes safe to commit once its events are stored."""

    seq: int
    events: list[Event]
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    rows: int = 0


class Pipeline:
    """See the module docstring."""

    def __init__(self, topics: Mapping[Feed, str], codecs: Mapping[Feed, Codec],
                 config_for: Callable[[int], EngineConfig], store: StateStore, idle_ms: int,
                 clock_idle_ms: int | None = None) -> None:
        self.topics = dict(topics)
        self.feed_of = {t: f for f, t in topics.items()}
        self.codecs = codecs
        self.config_for = config_for
        self.store = store
        self.idle_ms = idle_ms
        self.clock_idle_ms = clock_idle_ms
        self.engines: dict[int, PartitionEngine] = {}
        self.logs: dict[str, GlobalLog] = {}
        self.events: list[Event] = []
        self.consumed: dict[Feed, int] = dict.fromkeys(Feed, 0)
        self._seq = 0

    # --- engines ---------------------------------------------------------------------------------

    def engine(self, partition: int, now: float) -> PartitionEngine:
        pe = self.engines.get(partition)
        if pe is None:
            rows = [json.loads(b) for b in self.store.rows(partition)]
            pe = PartitionEngine.restore(partition, self.config_for(partition), rows, self.logs,
                                         self.idle_ms, now, self.clock_idle_ms)
            self.engines[partition] = pe
        return pe

    def resume(self, now: float) -> None:
        """Fetching resumes after a pause (rebalance, restore): the pause is not idleness, so every
        input's idle clock restarts now (else event time would jump by the pause and make the
        records fetched next late)."""
        for pe in self.engines.values():
            for lane in pe.lanes.values():
                lane.last_arrival = now
        for log in self.logs.values():
            log.last_arrival = now

    def retain(self, partitions: Iterable[int]) -> list[int]:
        """Drop the engines of partitions no longer assigned; returns the dropped ones."""
        keep = set(partitions)
        dropped = [p for p in self.engines if p not in keep]
        for p in dropped:
            self.engines.pop(p).close()
        return dropped

    # --- input -----------------------------------------------------------------------------------

    def declare(self, topic: str, partition: int, now: float) -> GlobalLog:
        """A global (marks/instruments) partition exists: from now on every engine waits for it
        (until it is idle) before moving event time, even before its first record arrives."""
        key = f"{self.feed_of[topic].value}/{partition}"
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = GlobalLog(0, now)
            for pe in self.engines.values():
                pe.add_global(key, log)
        return log

    def ingest(self, topic: str, partition: int, raws: Sequence[Raw], now: float) -> list[DeadLetter]:
        feed = self.feed_of[topic]
        if feed in GLOBAL_FEEDS:
            log = self.declare(topic, partition, now)
            return self._decode(feed, topic, partition, raws, log.next_offset,
                                lambda entries, end: log.append(entries, end, now))
        lane = self.engine(partition, now).lanes[feed]
        return self._decode(feed, topic, partition, raws, lane.next_offset,
                            lambda entries, end: lane.push(entries, end, now))

    def _decode(self, feed: Feed, topic: str, partition: int, raws: Sequence[Raw], start: int,
                sink: Callable[[list[Any], int], None]) -> list[DeadLetter]:
        if raws and raws[0][0] < start:
            raws = [r for r in raws if r[0] >= start]
        if not raws:
            return []
        decoded = self.codecs[feed].decode_many([r[3] or b"" for r in raws])
        entries = []
        dead: list[DeadLetter] = []
        for raw, rec in zip(raws, decoded, strict=True):
            if isinstance(rec, DecodeError):
                dead.append(DeadLetter(feed, topic, partition, raw[0], raw[2], raw[3], rec.reason, str(rec)))
            else:
                entries.append((raw[1], feed, rec, raw[0]))
        self.consumed[feed] += len(raws)
        sink(entries, raws[-1][0] + 1)
        return dead

    # --- processing ------------------------------------------------------------------------------

    def step(self, now: float) -> list[Event]:
        """Run every engine as far as its watermark allows; events are also kept for the checkpoint."""
        out: list[Event] = []
        for pe in self.engines.values():
            out.extend(pe.step(now))
        for log in self.logs.values():
            log.trim()
        self.events.extend(out)
        return out

    def rewinds(self) -> dict[str, int]:
        """Global logs that a restored engine needs re-read from an older offset (key -> offset)."""
        return {k: o for k, log in self.logs.items() if (o := log.needs_rewind()) is not None}

    def checkpoint(self) -> Checkpoint:
        """Write every engine's checkpoint to the store; return the events and offsets it covers."""
        self._seq += 1
        cp = Checkpoint(self._seq, self.events)
        self.events = []
        dumps = json.dumps
        for p, pe in self.engines.items():
            rows = pe.checkpoint()
            self.store.write(p, {k: dumps(v, separators=(",", ":")).encode() for k, v in rows.items()})
            cp.rows += len(rows)
            for feed, offset in pe.commit_offsets().items():
                cp.offsets[(self.topics[feed], p)] = offset
        return cp

    def pending(self) -> int:
        """Records decoded but not yet released to an engine."""
        return sum(pe.aligner.pending() for pe in self.engines.values())
