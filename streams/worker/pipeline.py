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

import msgspec

from streams.codec import Codec, DecodeError
from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.core.records import Feed
from streams.worker.globals import GlobalLog
from streams.worker.partition import GLOBAL_FEEDS, PartitionEngine

# State rows are compact JSON: msgspec writes what json.dumps(separators=(",", ":"), default=str) wrote,
# ~9x faster (35 -> 4 µs an account), except that non-ASCII text is UTF-8 instead of \u escapes (json.loads
# reads both the same). A Decimal is written as its text, as `streams.core.serde` expects; rows written by
# earlier versions read back as before.
encode_row = msgspec.json.Encoder().encode

Raw = tuple[int, int, bytes | None, bytes | None]  # offset, ts_ms, key, value


def _fresh(raws: Sequence[Raw], start: int) -> list[Raw]:
    """The records at or above `start` that extend the offset sequence, in order. One hand-over may
    hold a partition's records twice: fetched once from the position the consumer had when the
    partition was resumed, then again after Faust seeks it to the committed offset (both end up in
    the same batch), so checking only the first record is not enough."""
    kept = []
    end = start
    for r in raws:
        if r[0] >= end:
            kept.append(r)
            end = r[0] + 1
    return kept


class StateStore(Protocol):
    """Where checkpoints live (a changelog-backed Faust table in the worker, a dict in tests).

    `write` returns receipts: awaitables that complete once the rows are durable (the changelog
    producer's acks), or nothing when writes are durable on return. Offsets are never made
    committable before a checkpoint's receipts complete (see `streams.worker.commit`)."""

    def rows(self, partition: int) -> Iterable[bytes]: ...

    def write(self, partition: int, rows: Mapping[str, bytes]) -> Sequence[Any]: ...


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

    @classmethod
    def of(cls, feed: Feed, topic: str, partition: int, raw: Raw, error: DecodeError) -> DeadLetter:
        """The dead letter of `raw` (offset, ts_ms, key, value), which the codec refused with `error`."""
        return cls(feed, topic, partition, raw[0], raw[2], raw[3], error.reason, str(error))


@dataclass(slots=True)
class Checkpoint:
    """A consistent cut of every engine: the events it covers, the state rows that reproduce it
    (serialized when the cut was taken, written by the commit gate only once the events are
    stored), and the offsets it makes safe to commit once that state is durable."""

    seq: int
    events: list[Event]
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    state: dict[int, dict[str, bytes]] = field(default_factory=dict)


class Pipeline:
    """See the module docstring."""

    def __init__(self, topics: Mapping[Feed, str], codecs: Mapping[Feed, Codec],
                 config_for: Callable[[int], EngineConfig], store: StateStore, idle_ms: int,
                 clock_idle_ms: int | None = None, skew_ms: int = 0) -> None:
        self.topics = dict(topics)
        self.feed_of = {t: f for f, t in topics.items()}
        self.codecs = codecs
        self.config_for = config_for
        self.store = store
        self.idle_ms = idle_ms
        self.clock_idle_ms = clock_idle_ms
        self.skew_ms = skew_ms
        self.engines: dict[int, PartitionEngine] = {}
        self.logs: dict[str, GlobalLog] = {}
        self.events: list[Event] = []
        self.consumed: dict[Feed, int] = dict.fromkeys(Feed, 0)
        self.applied = 0  # records released to an engine (a mark or instrument once per engine)
        self.backlog = False  # the last bounded step left records below an engine's watermark
        self._seq = 0

    # --- engines ---------------------------------------------------------------------------------

    def engine(self, partition: int, now: float) -> PartitionEngine:
        pe = self.engines.get(partition)
        if pe is None:
            rows = [json.loads(b) for b in self.store.rows(partition)]
            pe = PartitionEngine.restore(partition, self.config_for(partition), rows, self.logs,
                                         self.idle_ms, now, self.clock_idle_ms, self.skew_ms)
            self.engines[partition] = pe
        return pe

    def resume(self, now: float, globals_too: bool = True) -> None:
        """Fetching resumes after a pause of our own (rebalance, restore, backpressure): the pause
        is not idleness, so the idle clocks of the paused inputs restart now (else event time would
        jump by the pause and make the records fetched next late). Backpressure pauses only the
        account inputs (`globals_too=False`): the shared logs kept being read, their idleness is
        real, and restarting it would hold every engine at the last instrument's timestamp."""
        for pe in self.engines.values():
            for lane in pe.lanes.values():
                lane.last_arrival = now
        if globals_too:
            for log in self.logs.values():
                log.last_arrival = now

    def rewind(self, topic: str, partition: int, topic_id: str | None) -> None:
        """The log of an account topic-partition was replaced (its topic deleted and made again,
        now with `topic_id`): its engine reads the new log from its start (`PartitionEngine.rewind`)."""
        self.engines[partition].rewind(self.feed_of[topic], topic_id)

    def retain(self, partitions: Iterable[int]) -> list[int]:
        """Drop the engines of partitions no longer assigned; returns the dropped ones."""
        keep = set(partitions)
        dropped = [p for p in self.engines if p not in keep]
        for p in dropped:
            self.engines.pop(p).close()
        return dropped

    # --- input -----------------------------------------------------------------------------------

    def log_key(self, topic: str, partition: int) -> str:
        """The key of a global partition's log (and of the engines' cursors into it): "marks/0"."""
        return f"{self.feed_of[topic].value}/{partition}"

    def global_start(self, topic: str, partition: int) -> int:
        """Where a global partition must be read from for the engines there are: the lowest cursor
        they restored for it (0 if one has none: from the beginning, whatever the broker holds)."""
        key = self.log_key(topic, partition)
        return min((pe.cursors.get(key, 0) for pe in self.engines.values()), default=0)

    def cursors(self, topic: str, partition: int) -> list[int]:
        """The next offset each engine needs from a global partition, as far as it is known
        (declared; 0 for an engine that restored no cursor for it)."""
        log = self.logs.get(self.log_key(topic, partition))
        return sorted(lane.offset for lane in log.lanes) if log is not None else []

    def declare(self, topic: str, partition: int, now: float, start: int = 0) -> GlobalLog:
        """A global (marks/instruments) partition exists: from now on every engine waits for it
        (until it is idle) before moving event time, even before its first record arrives. Its log
        holds entries from `start` on (where the reader starts it: see `global_start`)."""
        key = self.log_key(topic, partition)
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = GlobalLog(start, now)
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
        codec = self.codecs[feed]
        fast = codec.entries(raws, start, feed) if isinstance(raws, list) else None
        if fast is None:
            return self._decode_each(feed, topic, partition, raws, start, sink)
        entries, slow, kept, end = fast
        if not kept:
            return []
        dead: list[DeadLetter] = []
        if slow:  # the general way, record by record: the same records, or their dead letters
            for i in slow:
                raw = entries[i]
                rec = codec.decode_many([raw[3] or b""])[0]
                if isinstance(rec, DecodeError):
                    dead.append(DeadLetter.of(feed, topic, partition, raw, rec))
                    entries[i] = None
                else:
                    entries[i] = (raw[1], feed, rec, raw[0])
            if dead:
                entries = [e for e in entries if e is not None]
        self.consumed[feed] += kept
        sink(entries, end)
        return dead

    def _decode_each(self, feed: Feed, topic: str, partition: int, raws: Sequence[Raw], start: int,
                     sink: Callable[[list[Any], int], None]) -> list[DeadLetter]:
        """`_decode` without the C batch loop (pure build): the reference the fast path matches."""
        raws = _fresh(raws, start)
        if not raws:
            return []
        decoded = self.codecs[feed].decode_many([r[3] or b"" for r in raws])
        entries = []
        dead: list[DeadLetter] = []
        for raw, rec in zip(raws, decoded, strict=True):
            if isinstance(rec, DecodeError):
                dead.append(DeadLetter.of(feed, topic, partition, raw, rec))
            else:
                entries.append((raw[1], feed, rec, raw[0]))
        self.consumed[feed] += len(raws)
        sink(entries, raws[-1][0] + 1)
        return dead

    # --- processing ------------------------------------------------------------------------------

    def step(self, now: float, limit: int | None = None) -> list[Event]:
        """Run every engine as far as its watermark allows, each applying about its share of `limit`
        records at most (`backlog` then says whether any left some); events are also kept for the
        checkpoint."""
        out: list[Event] = []
        share = None if limit is None or not self.engines else max(1, limit // len(self.engines))
        backlog = False
        for pe in self.engines.values():
            before = pe.applied
            out.extend(pe.step(now, share))
            self.applied += pe.applied - before
            backlog = backlog or pe.backlog
        self.backlog = backlog
        for log in self.logs.values():
            log.trim()
        self.events.extend(out)
        return out

    @property
    def quiet(self) -> bool:
        """Every engine's last step found all of its inputs idle and applied everything they had
        delivered: nothing is on its way, the state is as complete as it will be until records arrive."""
        return bool(self.engines) and all(pe.quiet for pe in self.engines.values())

    def rewinds(self) -> dict[str, int]:
        """Global logs that a restored engine needs re-read from an older offset (key -> offset)."""
        return {k: o for k, log in self.logs.items() if (o := log.needs_rewind()) is not None}

    def checkpoint(self) -> Checkpoint:
        """Take a checkpoint of every engine: its events and state rows (not written yet: see
        `write_state`) and the offsets below which the state reflects every record."""
        self._seq += 1
        cp = Checkpoint(self._seq, self.events)
        self.events = []
        for p, pe in self.engines.items():
            cp.state[p] = pe.checkpoint(encode_row)
            for feed, offset in pe.commit_offsets().items():
                cp.offsets[(self.topics[feed], p)] = offset
        return cp

    def write_state(self, cp: Checkpoint) -> list[Any]:
        """Write a checkpoint's state rows to the store; returns the store's receipts.

        Only once the checkpoint's events are stored: state must never get ahead of the events
        derived from it, or a worker that dies in between loses those events for good (whoever
        takes over restores the newer state and never derives them again). Written in checkpoint
        order, partitions in the order they were cut."""
        receipts: list[Any] = []
        for p, rows in cp.state.items():
            if rows:  # an engine that changed nothing has none
                receipts.extend(self.store.write(p, rows))
        return receipts

    def pending(self) -> int:
        """Records decoded but not yet released to an engine."""
        return sum(pe.aligner.pending() for pe in self.engines.values())
