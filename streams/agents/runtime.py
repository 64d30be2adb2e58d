"""`Worker`: the stream-worker driver of the engine, on Faust (see `streams.agents.app`).

One task runs the pipeline in ticks: take the batches the fetch loop handed over, read the global
feeds, decode and merge into the partition engines, produce events and dead letters, and every
checkpoint interval (`checkpoint_ms`, stretched up to `checkpoint_max_ms` while checkpoints are
costly), and at once when every input has gone idle with work not checkpointed yet, write a checkpoint
to the state table and submit it to the commit gate. Guarantees:

- while Faust rebalances or restores tables the worker reports warming (metric `divmon_warming` and a
  log line) and feeds nothing to the engines, so no verdict is made on half-restored state;
- after a rebalance, engines of revoked partitions are dropped and new ones are restored from the
  recovered table; re-delivered records (Faust seeks to the committed offsets) are ignored; a
  partition whose engine's state ends below its committed offset is read from where the state ends;
- offsets are committed only through the commit gate (see `streams.worker.commit`);
- a record that can't be decoded or violates the contract goes to the dead-letter topic, is counted
  and is committed like any other: the worker never stops on input;
- input the broker deleted before the worker read it (a position below the log start, reset to the
  earliest offset held) is counted (`divmon_input_lost_records_total`) and logged with its offsets;
- an account input whose topic is gone (deleted) leaves its partition engines without that input:
  event time waits for it, so verdicts are held rather than made without it. The worker logs it and
  counts the partitions missing (`divmon_input_missing_partitions`). A topic made again under the
  same name has a new id (Kafka's topic ids): each time partitions are assigned, and when an engine
  is restored, an input whose id is not the one the engine read is a new log, read from its start
  (`divmon_input_replaced_total`, logged). Its committed offsets are the old log's; read from there,
  the new log's first records were skipped, or taken for records read before, without a trace. The
  shared inputs (marks, instruments) likewise: a partition gone from the metadata is not read (and
  holds event time) until its topic is listed again; a new id is read from its start, by every
  engine (their checkpoints keep the ids their cursors are offsets of).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams import metrics as metrics_mod
from streams.agents.app import TABLE, TableStore, create_app, revoke_wait_s
from streams.agents.consumer import no_topic_creation
from streams.agents.kafka_io import ChangelogWriter, GlobalReader, Outputs, ensure_topics, output_topics, topic_ids
from streams.agents.loss import InputLoss, Lost, OffsetResetWatch
from streams.agents.router import Router, WorkerMetrics
from streams.codec import EventCodec, SchemaIds, input_codecs
from streams.commands._options import engine_config
from streams.config import Settings
from streams.core.records import Feed
from streams.sinks.base import Sink
from streams.sinks.batching import BatchingSink
from streams.worker.commit import CommitGate
from streams.worker.partition import ACCOUNT_FEEDS, GLOBAL_FEEDS
from streams.worker.pipeline import Checkpoint, Pipeline

log = logging.getLogger("divmon.worker")
TICK_S = 0.05
# records the engines apply per tick at most (see `Aligner.release_runs`): ~0.1-0.2 s of the loop
# thread on the worker bench. Unbounded, a worker catching up on a backlog applied ~80k records in one
# tick and kept its event loop (commits, the web server's health checks, Faust's timers) blocked for
# 2 s and more at a time
TICK_RECORDS = 8_000
# the decoded records a worker holds in its account lanes waiting for the watermark, all lanes together,
# are bounded by the `held_records` setting (400k by default, ~0.4 KB a record decoded): a lane holding more
# than its share (at least LANE_MIN) is left out of fetches until the engine catches up. Per lane (100k
# each) a worker held 1.6M records with 4 partitions after a restart, and 3x that with 12, while an
# input nearly idle (instruments) held the watermark for `idle_ms`
LANE_MIN = 5_000
GATE_BACKLOG = 4  # checkpoints waiting for the commit gate beyond which fetching pauses
# An account input counts as caught up only on a fetch response this recent. Faust long-polls with
# fetch_max_wait_ms 1,500, so a running consumer thread reports on every assigned partition at least
# that often, records or not.
FETCH_FRESH_MS = 3_000
# the shared inputs' consumer (librdkafka) long-polls the broker this long at most (fetch.wait.max.ms,
# 500 by default), so its cached high watermark is at most that old plus a round trip; counted as
# GLOBAL_HW_AGE_MS old, which leaves the rest for a host short of CPU
GLOBAL_FETCH_WAIT_MS = 100
GLOBAL_HW_AGE_MS = 1_000
# listing the shared topics' partitions (see `_read_globals`): how long the loop waits for the
# broker's answer, and when it asks again after none came
REFRESH_TIMEOUT_S = 2.0
REFRESH_RETRY_MS = 5_000
# CPython's cyclic GC in the worker process (see `tune_gc`): a young collection every 50,000 net
# container allocations instead of 700; the older generations keep CPython's ratios
GC_THRESHOLDS = (50_000, 10, 10)
# the most of the loop thread's time that checkpoints may take (see checkpoint_interval). A tenth
# before ticks were bounded: checkpoints then came at most once per tick, and a catching-up tick
# lasted seconds; on schedule, a tenth was ~2 µs a record on the worker bench (2,000 accounts)
CHECKPOINT_SHARE = 0.05


def tune_gc() -> None:
    """Set the worker process's cyclic GC for a heap of records in flight (once, at start-up).

    With CPython's default threshold (700) a young collection ran every ~150 records, while the
    records of a fetch were still held between hand-over, decode and the engine: nearly every
    record's objects (ConsumerRecord, tuples, decoded NamedTuples) survived two collections, were
    promoted to the old generation, and every 25% of promotions paid a full collection of the
    whole heap (~0.1 s each on the worker bench). That was ~10 µs of CPU per record, most of it
    charged to the decode stage, where the allocations are. At 50,000 most records are released,
    and freed by reference counting, before a collection sees them. Only *when* cyclic garbage is
    freed changes (a few MB later at most), nothing the worker computes."""
    gc.set_threshold(*GC_THRESHOLDS)


def checkpoint_interval(cost_s: float, min_ms: int, max_ms: int) -> float:
    """Seconds from one checkpoint to the next, given what the last one cost (`cost_s`, loop-thread
    CPU: cutting it, and writing the state rows of the checkpoint the gate stored meanwhile).

    A checkpoint writes a row per account touched since the last one. With many accounts nearly
    every record touches one not yet in the cut, so at a fixed interval the cost grows with the
    account count: with 20,000 accounts at 0.5 s it was 22% of the loop thread on the worker bench
    (7 µs a record). The interval stretches from `min_ms` so that a checkpoint costs at most
    CHECKPOINT_SHARE of it, up to `max_ms`; a longer one rewrites each account less often. What it
    trades: events reach the sink, and offsets are committed, once per interval, and a worker that
    dies re-reads up to an interval of input. Never below `min_ms`."""
    floor = min_ms / 1000
    return min(max(floor, cost_s / CHECKPOINT_SHARE), max(floor, max_ms / 1000))


def lane_limit(engines: int, held: int) -> int:
    """Decoded records an account lane may hold before its partition is left out of fetches: an
    equal share of `held` (the worker's bound) over its account lanes, at least LANE_MIN."""
    return max(LANE_MIN, held // max(1, engines * len(ACCOUNT_FEEDS)))


class Worker:
    """See the module docstring. `run()` blocks until the worker is stopped (SIGTERM / SIGINT)."""

    def __init__(self, settings: Settings, sink: Sink, registry: CollectorRegistry | None = None) -> None:
        self.s = s = settings
        self.app = app = create_app(s)
        self.topics = {f: s.topic_for(f.value) for f in Feed}
        account_topics = [self.topics[f] for f in ACCOUNT_FEEDS]
        # bytes keys and values: Faust derives the changelog serializers ("raw") from these types
        self.table = app.Table(TABLE, key_type=bytes, value_type=bytes, partitions=s.partitions)
        app.topics.add(app.topic(*account_topics, key_type=bytes, value_type=bytes, partitions=s.partitions))
        self.store = TableStore(self.table, self.topics[Feed.EP3])
        registry_ids = SchemaIds.from_url(s.schema_registry_url) if s.schema_registry_url else None
        self.pipeline = Pipeline(self.topics, input_codecs(registry_ids, self.topics),
                                 lambda p: engine_config(s, scope=f"{s.group_id}/p{p}"), self.store, s.idle_ms,
                                 s.clock_idle_ms, s.skew_ms)
        self.event_codec = EventCodec(registry=registry_ids, topics=output_topics(s))
        self.router = Router(frozenset(account_topics))
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(metrics_mod.create(self.registry, env=s.env))
        self.clock = metrics_mod.StageClock(self.metrics.m)
        self.sink = BatchingSink(sink, max_rows=s.sink_batch_rows, max_ms=s.sink_batch_ms)
        self.outputs: Outputs | None = None
        self.reader: GlobalReader | None = None
        self.loss = InputLoss()  # input deleted by the broker before it was read (see streams.agents.loss)
        self.gate: CommitGate | None = None
        self._assigned: set[int] = set()
        self._missing: dict[Feed, list[int]] = {}  # account inputs' partitions the engines lack
        self._topic_ids: dict[str, str | None] = {}  # the account inputs' topic ids, as last asked
        self._reborn: set[TP] = set()  # lanes rewound to a new log not sought there yet (not assigned then)
        # account partitions found ending below the offset read to: that offset (kept through a rebalance: a
        # partition revoked and assigned again, still truncated, is the same truncation, counted once)
        self._truncated: dict[TP, int] = {}
        self._shared_ids: dict[str, str] = {}  # the shared topics' ids, of the logs the reader reads
        self._shared_seen: set[str] = set()  # shared logs whose end offset the reader has known
        self._warming: bool | None = None
        # the consumer generation of the assignment being worked on; None from a revoke until the
        # next assignment (see `_warm`)
        self._assigned_gen: int | None = None
        self._next_refresh = 0.0
        self._last_cp = 0.0
        self._cp_interval = s.checkpoint_ms / 1000
        self._last_busy = 0.0  # when a tick last took records from the fetch loop or left released ones (monotonic s)
        self._state_cpu = 0.0  # loop-thread CPU of state writes since the last checkpoint was cut
        self._cp_applied = 0  # the pipeline's applied count when the last checkpoint was cut
        self._committing: asyncio.Future[None] | None = None  # a commit of `_mark_safe`'s, while it runs
        self._commit_again = False  # offsets were marked safe while it ran
        consumer: Any = app.consumer
        consumer.attach(self.router)
        consumer.starts = self._starts
        app.task(self._main)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    def run(self) -> None:
        from faust.worker import Worker as FaustWorker

        tune_gc()
        OffsetResetWatch(self.loss).install()  # before Faust's consumer starts fetching
        no_topic_creation()  # an input topic deleted stays gone (and missing) until it is made again
        FaustWorker(self.app, loglevel=logging.getLevelName(logging.getLogger().level).lower(),
                    quiet=True).execute_from_commandline()

    # --- lifecycle -------------------------------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.s.metrics_port:
            metrics_mod.serve(self.registry, self.s.metrics_port)
        await loop.run_in_executor(None, ensure_topics, self.s, self.s.partitions)
        await loop.run_in_executor(None, self.sink.setup)
        self.outputs = Outputs(self.s, self.event_codec)
        self.store.writer = ChangelogWriter(self.s, self.table.changelog_topic.get_topic_name())
        self.reader = GlobalReader(self.s, [self.topics[f] for f in GLOBAL_FEEDS], self.loss,
                                   fetch_wait_ms=GLOBAL_FETCH_WAIT_MS)
        self.gate = CommitGate(self.sink, self.outputs.deliver, self._write_state, self._mark_safe,
                               self.metrics.m.sink_write_failures.inc, self.metrics.m.sink_batch_latency.observe)

    async def _main(self) -> None:
        await self._start()
        assert self.gate is not None
        gate_task = asyncio.ensure_future(self.gate.run())
        self._last_cp = last_metrics = last_status = time.monotonic()
        try:
            while not self.app.should_stop:
                if self.pipeline.backlog:  # released records are left: straight on, after the loop's other work
                    await asyncio.sleep(0)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.router.arrived.wait(), TICK_S)
                self.router.arrived.clear()
                if gate_task.done():  # only on error: a worker that can't commit must not go on
                    gate_task.result()
                    raise RuntimeError("commit gate stopped")
                now = time.monotonic()
                if not self._tick(now * 1000):
                    continue
                self._maybe_checkpoint(now)
                if now - last_metrics >= 1.0:
                    last_metrics = now
                    self._observe_state(time.time() * 1000)
                if now - last_status >= 10.0:
                    last_status = now
                    self._log_status(now * 1000)
        finally:
            gate_task.cancel()
            if self._committing is not None:
                self._committing.cancel()

    def _maybe_checkpoint(self, now: float) -> None:
        """Cut a checkpoint every interval (`checkpoint_ms`, stretched while checkpoints are costly
        and records keep coming: see `checkpoint_interval`); hold fetching while the gate is behind.

        Backpressure starts when more than GATE_BACKLOG checkpoints wait and lasts until the gate
        has stored them all, and no checkpoint is cut meanwhile (the next one covers the work). Cut
        regardless, checkpoints from a gate slower than the interval (a slow sink) kept the backlog
        above the limit, so fetching never resumed."""
        gate = self.gate
        assert gate is not None
        held = self.router.gate_full and gate.backlog > 0
        # stretched only while records keep coming or a backlog is being worked off: once there was
        # neither for `checkpoint_ms` (inputs drained), the last events reach the sink, and their
        # offsets are committed, as usual
        if self.pipeline.backlog:
            self._last_busy = now
        floor = self.s.checkpoint_ms / 1000
        interval = self._cp_interval if now - self._last_busy < floor else floor
        pipeline = self.pipeline
        # inputs gone quiet with work not checkpointed yet: its events reach the sink, and its offsets
        # are committed, now rather than up to an interval later (nothing more is on its way)
        settled = pipeline.quiet and (pipeline.applied != self._cp_applied or bool(pipeline.events))
        if not held and (now - self._last_cp >= interval or settled):
            self._last_cp = now
            self._cp_applied = pipeline.applied
            t = self.clock.start()
            gate.submit(self.pipeline.checkpoint())
            cost = self.clock.lap("checkpoint", t) - t + self._state_cpu
            self._state_cpu = 0.0
            self._cp_interval = checkpoint_interval(cost, self.s.checkpoint_ms, self.s.checkpoint_max_ms)
            self.metrics.m.checkpoint_interval.set(self._cp_interval)
        self.router.set_gate_full(held or gate.backlog > GATE_BACKLOG)

    def _mark_safe(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """The gate stored a checkpoint: its offsets may be committed. Faust's commit loop commits
        them on its interval (`commit_interval_ms`); when the inputs are quiet they are committed at
        once, so that a burst's offsets are committed as soon as its events and state are stored
        rather than up to an interval later (while records flow, the interval's cadence is kept: a
        commit per checkpoint would be one more request every `checkpoint_ms` for nothing)."""
        consumer: Any = self.app.consumer
        consumer.mark_safe(offsets)
        if not self.pipeline.quiet or not self._warm():
            return
        if self._committing is not None and not self._committing.done():
            self._commit_again = True
            return
        self._committing = asyncio.ensure_future(self._commit_safe(consumer))

    async def _commit_safe(self, consumer: Any) -> None:
        """Commit what is marked safe (again if more was marked meanwhile: Faust's `commit` returns
        without committing while another commit runs). A failed commit is Faust's to handle, as for
        its periodic ones; anything that escapes it is logged, and the next periodic commit carries
        the same offsets."""
        while True:
            self._commit_again = False
            try:
                await consumer.commit()
            except Exception as exc:  # the next periodic commit carries the same offsets
                log.warning("commit after a quiet checkpoint failed (the commit loop retries): %r", exc)
                return
            if not self._commit_again:
                return

    def _warm(self) -> bool:
        """Partitions are assigned and Faust has ended the rebalance that gave them (tables
        recovered, partitions sought): only then may engines be restored and fed. `rebalancing`
        alone is not enough (see `DivmonApp.on_rebalance_end`): the assignment's own generation
        must be the one Faust ended the rebalance for."""
        app = self.app
        return (not app.rebalancing and self._assigned_gen is not None
                and app.settled_generation == self._assigned_gen and bool(app.consumer.assignment()))

    def _tick(self, now: float) -> bool:
        """One pipeline step; False while warming (nothing is fed to the engines)."""
        warming = not self._warm()
        # our own pauses (rebalance, restore, backpressure while the sink is behind) are not the
        # inputs going quiet: idleness must not accrue, or records fetched afterwards are late
        if self._warming and not warming:
            self.pipeline.resume(now)
        elif self.router.gate_full:
            self.pipeline.resume(now, globals_too=False)
        self._set_warming(warming)
        if warming:
            # table recovery reads the changelogs through the fetch loop that the gate's backpressure
            # holds (Faust pauses the inputs meanwhile): held now, recovery would never end and the
            # worker would stay warming for good. The first warm tick sets it again.
            self.router.set_gate_full(False)
            self.pipeline.backlog = False  # nothing is fed meanwhile: no tick is due before records arrive
            return False
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topics[Feed.EP3]}
        if assigned != self._assigned:
            self.pipeline.retain(assigned)
            self._assigned = assigned
        for p in sorted(assigned):
            self._engine(p, now)
        clock = self.clock
        t = clock.start()
        self._read_globals(now)
        taken = self.router.take()
        if taken:
            self._last_busy = now / 1000
        for tp, raws in taken.items():  # (offset, ts_ms, key, value): see consumer.py
            self._ingest(tp.topic, tp.partition, raws, now)
        self._mark_caught_up(now)
        t = clock.lap("decode", t)
        applied = self.pipeline.applied
        events = self.pipeline.step(now, TICK_RECORDS)
        self.metrics.m.records_applied.inc(self.pipeline.applied - applied)
        t = clock.lap("engine", t)
        if events:
            assert self.outputs is not None
            self.outputs.events(events)
            t = clock.lap("encode", t)
            self.metrics.events(events)
            clock.lap("metrics", t)
        self.router.ahead = self._ahead()
        return True

    def _engine(self, partition: int, now: float) -> Any:
        """The partition engine of `partition`, restored if it is new here; a restored engine whose
        inputs' topic ids are not those it read (topics made again meanwhile) reads their new logs
        from the start (`_starts` has sought them there, see `BatchConsumer.seek_to_committed`)."""
        pe, new = self._restored(partition, now)
        if new:
            consumer: Any = self.app.consumer
            assigned = consumer.assignment()
            self._check_logs(partition)  # (not restored by `_starts`: no offset committed for it)
            for tp in [tp for tp in self._reborn if tp.partition == partition and tp in assigned]:
                consumer.seek_start(tp)
                self._reborn.discard(tp)
        return pe

    def _restored(self, partition: int, now: float) -> tuple[Any, bool]:
        """The partition engine of `partition`, and whether it was restored just now (then its
        cursors into the shared topics are checked against their ids)."""
        new = partition not in self.pipeline.engines
        pe = self.pipeline.engine(partition, now)
        if new:
            self._check_shared_cursors(pe)
        return pe, new

    def _shared_gone(self, topic: str, partition: int, key: str, now: float) -> None:
        """The reader no longer knows the end of a shared partition it knew: its topic is gone from
        the cluster's metadata (deleted). It stops reading it, so that nothing of a topic made again
        under the name is read before `_check_shared_logs` knows which one it is (librdkafka would
        read it from the old offset on); the log holds event time meanwhile (not caught up), and
        the shared topics are listed again every second until it is back."""
        assert self.reader is not None
        log.error("input missing: %s[%d] is gone from the cluster's metadata (topic deleted?); event time "
                  "waits for it", topic, partition)
        self.reader.forget(topic, partition)
        self._shared_seen.discard(key)
        self._next_refresh = min(self._next_refresh, now + 1_000)

    def _check_shared_logs(self, now: float) -> set[str]:
        """Ask the shared topics' ids (KafkaException if the brokers can't say). A topic whose id
        changed since the last answer was deleted and made again: its logs are read again from the
        start of the new one, and every engine's cursors into it too. Engines restored with
        cursors into another id than the current one (replaced while nobody read it) also read the
        new one from its start (the lowest cursor decides where the reader reads: 0). Returns the
        shared topics that exist (with the id checked)."""
        shared = {self.topics[f]: f for f in GLOBAL_FEEDS}
        ids = topic_ids(self.s, sorted(shared), REFRESH_TIMEOUT_S)
        reader = self.reader
        assert reader is not None
        present = set()
        for topic, feed in shared.items():
            now_id = ids.get(topic)
            if now_id is None:
                continue  # gone (deleted): nothing to read; its logs hold event time meanwhile
            present.add(topic)
            before = self._shared_ids.get(topic)
            self._shared_ids[topic] = now_id
            if before is not None and before != now_id:
                for key, glog in self.pipeline.logs.items():
                    if key.startswith(f"{feed.value}/"):
                        partition = int(key.rsplit("/", 1)[1])
                        self.loss.forget(topic, partition)
                        glog.rewind(0, now)
                        if (topic, partition) in reader.assigned:
                            reader.rewind(topic, partition, 0)
        for pe in self.pipeline.engines.values():
            self._check_shared_cursors(pe)
        return present

    def _check_shared_cursors(self, pe: Any) -> None:
        """An engine's cursors into a shared topic are offsets of the id it recorded: of another id
        than the one read now, they are reset to 0 (the new log is read from its start)."""
        for feed in GLOBAL_FEEDS:
            now_id = self._shared_ids.get(self.topics[feed])
            if now_id is None:
                continue
            recorded = pe.global_ids.get(feed.value)
            if recorded is None:
                pe.global_ids[feed.value] = now_id
            elif recorded != now_id:
                log.error("input replaced: %s is a new log (topic id %s, was %s: the topic was deleted and made "
                          "again) for engine p%d; read from its start", self.topics[feed], now_id, recorded,
                          pe.partition)
                self.metrics.m.input_replaced.labels(feed=feed.value).inc(pe.reread_global(feed, now_id))

    def _check_logs(self, partition: int) -> list[TP]:
        """Compare engine `partition`'s account lanes with the inputs' topic ids (as last asked):
        a lane that read no id yet takes the current one; a lane that read another is rewound to the
        new log. Returns the topic-partitions rewound."""
        pe = self.pipeline.engines[partition]
        rewound = []
        for feed, lane in pe.lanes.items():
            topic = self.topics[feed]
            now_id = self._topic_ids.get(topic)
            if now_id is None:
                continue  # not known (the brokers did not say), or the topic is gone
            if lane.topic_id is None:
                lane.topic_id = now_id
            elif lane.topic_id != now_id:
                log.error("input replaced: %s[%d] is a new log (topic id %s, was %s: the topic was deleted and "
                          "made again); read from its start, the old log's records not applied yet are applied "
                          "as they are", topic, partition, now_id, lane.topic_id)
                self.pipeline.rewind(topic, partition, now_id)
                self.loss.forget(topic, partition)  # a failed read of the old log concerns it no more
                self.metrics.m.input_replaced.labels(feed=feed.value).inc()
                rewound.append(TP(topic, partition))
        self._reborn.update(rewound)
        return rewound

    async def _starts(self, committed: Mapping[TP, int]) -> dict[TP, int]:
        """Where the assigned account partitions must be read from instead of their committed
        offsets (see `BatchConsumer.seek_to_committed`): where their engine's state ends, if that is
        below (see `_behind`), and the start of a log that replaced the one their engine read. Asks
        the brokers for the topic ids (the engines of newly assigned partitions are restored here,
        from the recovered table, to know which ids they read); if they can't say, no log counts
        as replaced."""
        account = {self.topics[f] for f in ACCOUNT_FEEDS}
        try:
            loop = asyncio.get_running_loop()
            self._topic_ids = await loop.run_in_executor(None, topic_ids, self.s, sorted(account),
                                                         REFRESH_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("input topic ids unknown (brokers unavailable?): a topic deleted and made again "
                        "meanwhile is not detected: %s", exc)
            return self._behind(committed)
        now = time.monotonic() * 1000
        for p in sorted({tp.partition for tp in committed if tp.topic == self.topics[Feed.EP3]}):
            self._restored(p, now)  # restored here if new: its lanes say which ids they read
            self._check_logs(p)
        moved = self._behind(committed)
        # rewound here, or before while their topic was not assigned (made again, not listed yet)
        reborn = {tp: 0 for tp in self._reborn if tp in committed}
        self._reborn -= set(reborn)
        moved.update(reborn)
        return moved

    def _behind(self, committed: Mapping[TP, int]) -> dict[TP, int]:
        """Account partitions whose engine needs records below their committed offset: read from
        where the engine needs them instead (returned, logged). The commit gate never commits
        ahead of the stored state, but the state a worker holds can still be older: a table read
        before its recovery had ended (see `DivmonApp.on_rebalance_end`), an engine kept through a
        rebalance while another worker moved the partition on, a changelog lost. Read from the
        committed offset, the records in between were applied by nobody, without a trace: the
        verdicts of every account they touched differed from the replay's."""
        out: dict[TP, int] = {}
        for tp, offset in committed.items():
            feed = self.pipeline.feed_of.get(tp.topic)
            pe = self.pipeline.engines.get(tp.partition)
            if feed is None or feed in GLOBAL_FEEDS or pe is None or not isinstance(offset, int):
                continue
            need = pe.lanes[feed].next_offset
            if need < offset:
                log.warning("p%d: its state holds %s only below offset %d, the committed offset is %d: read from "
                            "%d (a state older than the committed offsets: its changelog lost, or read before "
                            "its recovery ended, or the partition moved on by another worker)",
                            tp.partition, tp.topic, need, offset, need)
                out[tp] = need
        return out

    def _ahead(self) -> set[TP]:
        """The account topic-partitions whose lane holds more than its share of `held_records`."""
        engines = self.pipeline.engines
        limit = lane_limit(len(engines), self.s.held_records)
        return {TP(self.topics[f], p) for p, pe in engines.items()
                for f, lane in pe.lanes.items() if lane.pending() > limit}

    def _write_state(self, cp: Checkpoint) -> Sequence[Any]:
        t = self.clock.start()
        receipts = self.pipeline.write_state(cp)
        self._state_cpu += self.clock.lap("state", t) - t
        return receipts

    def _log_status(self, now: float) -> None:
        """One line per partition engine: event time, watermark, records held and late (for operators)."""
        for p, pe in sorted(self.pipeline.engines.items()):
            late = ", ".join(f"{feed.value} {n}" for feed, n in sorted(pe.late.items(), key=lambda kv: kv[0].value))
            log.info("p%d: event time %d, watermark %s, applied %d (late %d%s), held %s, idle/caught-up %s", p,
                     pe.engine.now, pe.aligner.watermark(now), pe.applied, pe.engine.stats.get("late_records", 0),
                     f": {late} here" if late else "", [lane.pending() for lane in pe.aligner.lanes],
                     [(now - lane.last_arrival >= self.s.idle_ms, lane.caught_up) for lane in pe.aligner.lanes])

    def _mark_caught_up(self, now: float) -> None:
        """An input may count as idle only when the broker has nothing more for it, and its lane
        knows as of when (`fresh_at`, on this loop's clock `now`: an idle input holds event time at
        what had arrived `skew_ms` before then, see `streams.worker.reorder`).

        For an account input, as of a fetch response received in the last FETCH_FRESH_MS: the high
        watermark is only as new as the last response, and while the consumer thread is starved of
        CPU (it is a Python thread: it waits for the GIL) records produced since would otherwise be
        counted as not there, and applied late when they come. For a shared input, read by
        librdkafka's own thread, which long-polls the broker every GLOBAL_FETCH_WAIT_MS: its cached
        high watermark is taken as GLOBAL_HW_AGE_MS old."""
        wall = time.time() * 1000
        since, to_loop = wall - FETCH_FRESH_MS, now - wall
        for p, pe in self.pipeline.engines.items():
            for feed, lane in pe.lanes.items():
                tp = TP(self.topics[feed], p)
                hw = self._highwater(tp)
                at = self._fetched_at(tp)
                lane.caught_up = hw is not None and lane.next_offset >= hw and at is not None and at >= since
                if at is not None:
                    lane.fresh_at = at + to_loop
        assert self.reader is not None
        for key, log in self.pipeline.logs.items():
            feed_value, part = key.rsplit("/", 1)
            topic = self.topics[Feed(feed_value)]
            hw = self.reader.highwater(topic, int(part))
            log.caught_up = hw is not None and log.next_offset >= hw
            log.fresh_at = now - GLOBAL_HW_AGE_MS
            if hw is not None:
                self._shared_seen.add(key)
            elif key in self._shared_seen and (topic, int(part)) in self.reader.assigned:
                self._shared_gone(topic, int(part), key, now)

    def _highwater(self, tp: TP) -> int | None:
        consumer: Any = self.app.consumer
        try:
            hw = consumer.highwater(tp)
        except (AssertionError, KeyError, RuntimeError):  # not (or no longer) assigned
            return None
        return None if hw is None else int(hw)

    def _fetched_at(self, tp: TP) -> float | None:
        """Wall time (ms) of the last fetch response that reported on `tp` (None: none yet)."""
        consumer: Any = self.app.consumer
        try:
            at = consumer.fetched_at(tp)
        except (AssertionError, KeyError, RuntimeError):  # not (or no longer) assigned
            return None
        return None if at is None else float(at)

    def _ingest(self, topic: str, partition: int, raws: list[Any], now: float) -> None:
        assert self.outputs is not None
        if raws:
            self._check_reread(topic, partition, raws[0][0])
            lost = self.loss.arrived(topic, partition, raws[0][0])
            if lost is not None:
                self._lost(lost)
        self.metrics.consumed(self.pipeline.feed_of[topic].value, len(raws))
        for dead in self.pipeline.ingest(topic, partition, raws, now):
            log.warning("dead letter: %s[%d]@%d: %s", dead.topic, dead.partition, dead.offset, dead.reason)
            self.outputs.dead_letter(dead)
            self.metrics.dead_letter(dead)

    def _check_reread(self, topic: str, partition: int, first: int) -> None:
        """A fetch of an account partition failed out of range at offset `failed`, and the client
        reset its position to the earliest offset held: if records below both `failed` and what the
        lane has read arrive now, the broker holds offsets below `failed` but none at it: its log
        ends below what this worker had read (truncated), where retention (the other cause) moves
        reading forward. This sees a truncation even when new records carry the log past the old
        end before the next look at its end offset (`_check_truncated`)."""
        failed = self.loss.failed_at(topic, partition)
        if failed is None:  # (nearly always: one lookup a batch)
            return
        feed = self.pipeline.feed_of[topic]
        pe = self.pipeline.engines.get(partition)
        if feed in GLOBAL_FEEDS or pe is None:
            return
        read = pe.lanes[feed].next_offset
        if first >= min(failed, read):
            return
        self.loss.forget(topic, partition)  # not a loss of records never read: those are below `failed`
        tp, read_to = TP(topic, partition), max(failed, read)
        end = self._highwater(tp)  # (from the fetch that read these: past `read_to` if new records are)
        self._truncation(feed, tp, end if end is not None and end < read_to else None, read_to)

    def _lost(self, lost: Lost) -> None:
        feed = self.pipeline.feed_of[lost.topic]
        log.warning("input lost: %s[%d] offsets %d to %d (%d records) were deleted by the broker before this "
                    "worker read them (retention shorter than its lag); verdicts for the accounts they "
                    "concerned may be wrong", lost.topic, lost.partition, lost.first, lost.resumed - 1, lost.records)
        self.metrics.m.input_lost.labels(feed=feed.value).inc(lost.records)

    def _read_globals(self, now: float) -> None:
        reader = self.reader
        assert reader is not None
        if now >= self._next_refresh:
            # new partitions of the shared topics are looked for every 10 s; every second while a
            # topic has none yet (created after the worker started); a broker that does not answer
            # (an outage) is asked again later, never fatal: a worker that stopped on it would
            # drop its engines and restore them, for nothing
            start_at = self.pipeline.global_start
            try:
                # first: a replaced topic is then read from the new cursors, and only topics whose
                # id was just checked are assigned
                present = self._check_shared_logs(now)
                new = reader.refresh(start_at, timeout=REFRESH_TIMEOUT_S, only=present)
            except KafkaException as exc:
                log.warning("shared topics not listed (broker unavailable?), again in %d s: %s",
                            REFRESH_RETRY_MS // 1000, exc)
                self._next_refresh = now + REFRESH_RETRY_MS
            else:
                for topic, partition in new:
                    start = start_at(topic, partition)
                    log.info("reading shared input %s[%d] from offset %d", topic, partition, start)
                    self.pipeline.declare(topic, partition, now, start)
                    if start == 0:
                        self._check_earliest(topic, partition)
                self._next_refresh = now + (10_000 if {t for t, _ in reader.assigned} >= set(reader.topics) else 1_000)
        for key, offset in self.pipeline.rewinds().items():
            feed_value, part = key.rsplit("/", 1)
            log.info("re-reading %s from offset %d for a restored engine", key, offset)
            topic = self.topics[Feed(feed_value)]
            reader.rewind(topic, int(part), offset)
            self.pipeline.logs[key].rewind(offset, now)
            if offset == 0:
                self._check_earliest(topic, int(part))
        for (topic, partition), raws in reader.poll().items():
            self._ingest(topic, partition, raws, now)

    def _check_earliest(self, topic: str, partition: int) -> None:
        """A shared partition is read from the beginning (an engine has no cursor for it) while
        other engines restored one: a cursor below the broker's earliest offset means that engine
        skips the records in between, which retention deleted before it read them. No fetch fails
        (the read starts at the earliest offset), so it is counted here, as `InputLoss` counts a
        failed one. A broker that does not answer leaves it unchecked, with a warning."""
        cursors = [c for c in self.pipeline.cursors(topic, partition) if c > 0]
        if not cursors:
            return
        assert self.reader is not None
        try:
            earliest = self.reader.earliest(topic, partition, timeout=REFRESH_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("%s[%d]: earliest offset unknown (broker unavailable?); input deleted below it for "
                        "restored engines (cursors %s) is not checked: %s", topic, partition, cursors, exc)
            return
        if cursors[0] < earliest:
            lost = self.loss.skipped(topic, partition, cursors[0], earliest)
            if lost is not None:
                self._lost(lost)

    def _set_warming(self, warming: bool) -> None:
        if warming != self._warming:
            self._warming = warming
            self.metrics.m.warming.set(1 if warming else 0)
            if warming:
                log.info("warming: rebalancing / restoring tables, verdicts held")
            else:
                log.info("warm: partitions %s", sorted(tp.partition for tp in self.app.consumer.assignment()
                                                       if tp.topic == self.topics[Feed.EP3]))

    def _observe_state(self, wall_ms: float) -> None:
        lag: dict[str, int] = {}
        for p, pe in self.pipeline.engines.items():
            for feed, lane in pe.lanes.items():
                tp = TP(self.topics[feed], p)
                hw = self._highwater(tp)
                if hw is not None:
                    lag[feed.value] = lag.get(feed.value, 0) + max(0, hw - lane.next_offset)
                    self._check_truncated(feed, tp, hw, lane.next_offset)
        self.metrics.state(self.pipeline, wall_ms, lag)
        self.metrics.m.sink_buffered_rows.set(self.sink.buffered_rows)

    def _truncation(self, feed: Feed, tp: TP, end: int | None, read_to: int) -> None:
        """`tp`, an account partition, lost records from its end: it ends (at `end`, if known) below
        `read_to`, an offset this worker had read it to. Its log was truncated (an unclean leader
        election, a broker that lost data it had acknowledged). The records written there since
        have offsets this worker read before, from the old log: they are taken as read and not
        applied, up to `read_to`. Not silent: counted once per truncation, and an error names the
        range. A topic deleted and made again is not this: its new log has a new topic id, and is
        read from its start (see `_check_logs`)."""
        if tp in self._truncated:
            self._truncated[tp] = max(self._truncated[tp], read_to)
            return
        self._truncated[tp] = read_to
        self.metrics.m.input_truncated.labels(feed=feed.value).inc()
        log.error("input truncated: %s[%d] ends %s, below offset %d that this worker had read it to (unclean "
                  "leader election, or a broker lost acknowledged data?); records written below that offset "
                  "since are taken as read and NOT applied: verdicts for their accounts may be wrong",
                  tp.topic, tp.partition, f"at offset {end}" if end is not None else "lower", read_to)

    def _check_truncated(self, feed: Feed, tp: TP, end: int, read_to: int) -> None:
        """The end offset of an account partition (as the last fetch response gave it) against the
        offset this worker has read it to: below it, the log was truncated; at or past it again
        after a truncation, records are applied again."""
        if end < read_to:
            self._truncation(feed, tp, end, read_to)
        elif tp in self._truncated and end >= self._truncated[tp]:
            log.warning("input past its truncation: %s[%d] reached offset %d again; its records are applied "
                        "from there", tp.topic, tp.partition, self._truncated.pop(tp))

    # --- rebalance -------------------------------------------------------------------------------

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Checkpoint, store and commit what was processed, then forget in-flight batches (re-fetched).

        If the gate can't get through in time (sink outage), its unwritten checkpoints are
        abandoned and every engine is dropped: engines would be ahead of the stored state, so they
        are restored from it and re-fed from the committed offsets instead."""
        self._assigned_gen = None
        self.router.clear()
        for tp in revoked:
            self.loss.forget(tp.topic, tp.partition)
        consumer: Any = self.app.consumer
        gate = self.gate
        if gate is not None and self.pipeline.engines and not self._warming:
            cp = self.pipeline.checkpoint()
            gate.submit(cp)
            wait = revoke_wait_s(self.s)
            deadline = time.monotonic() + wait
            while gate.committed_seq < cp.seq and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if gate.committed_seq < cp.seq:
                log.warning("rebalance: %d checkpoint(s) not stored in %.0fs; dropping the engines, "
                            "they restart from the stored state", gate.abandon(), wait)
                self.pipeline.retain(())
            await self.app.producer.flush()
            await consumer.commit()
        consumer.forget()
        self._set_warming(True)

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        self._assigned_gen = self.app.consumer_generation_id
        self.store.invalidate()
        self._assigned = set()
        self.pipeline.retain({tp.partition for tp in assigned if tp.topic == self.topics[Feed.EP3]})
        self._note_missing(assigned)

    def _note_missing(self, assigned: set[TP]) -> None:
        """Account inputs lacking partitions that the other inputs have in this assignment (the
        inputs are co-partitioned: each partition engine reads one partition of each): their topic
        was deleted, or has fewer partitions. Logged when it starts and ends; counted by a gauge."""
        topics = {self.topics[f]: f for f in ACCOUNT_FEEDS}
        partitions = {tp.partition for tp in assigned if tp.topic in topics}
        if not partitions:
            # nothing to compare with: every input topic is missing here, or other workers hold all
            # of their partitions (more workers than partitions): say which, once, for whoever waits
            log.warning("no partition of the input topics %s is assigned to this worker: they don't exist yet "
                        "(the worker never creates them: make them, co-partitioned, with the same partition "
                        "count), or other workers hold every partition", ", ".join(sorted(topics)))
        for topic, feed in topics.items():
            missing = sorted(p for p in partitions if TP(topic, p) not in assigned)
            before = self._missing.get(feed, [])
            if missing and missing != before:
                log.error("input missing: %s has no partition %s in this worker's assignment (topic deleted?); "
                          "event time waits for it there, verdicts are held", topic, ", ".join(map(str, missing)))
            elif before and not missing:
                log.warning("input back: %s is assigned again on every partition", topic)
            self._missing[feed] = missing
            self.metrics.m.input_missing.labels(feed=feed.value).set(len(missing))
