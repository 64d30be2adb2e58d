"""The one place divmon reaches below Faust's public API: a consumer that hands batches over whole.

Faust delivers every record through `Conductor.on_message` -> `Topic.deliver` -> a stream queue ->
`Stream.__aiter__`, several event-loop iterations and tasks per record (~75 µs measured). Here, the
fetch loop (`_drain_messages`) hands each fetched list of records of the *input* topics straight to a
`BatchSink` (the worker's pipeline) in one call, without creating a Faust message or event per record;
records of every other topic (table changelogs, standbys) take Faust's ordinary path.

Records of the input topics are not even made into aiokafka `ConsumerRecord`s: aiokafka's fetcher
builds one per record (an 11-field dataclass, with headers copied), ~3 µs a record of the worker's
CPU, of which the pipeline reads four fields. For the topics of a `BatchSink`, `attach` makes the
fetcher hand over `(offset, timestamp, key, value)` tuples instead, the raw records the pipeline
takes, a record batch at a time (`_getall`, `take_raw`): aiokafka's fetch result resumes a generator
and calls a method per record, ~1 µs of Python a record in Faust's consumer thread, which holds the
GIL the worker's loop thread needs. Every other topic gets aiokafka's records as before.

Offsets of input topics are never acked per message. The pipeline calls `mark_safe` once the sink
and the output producer have stored everything derived from them, and Faust's own commit loop then
commits exactly those offsets (`_new_offset`), after flushing the table changelog producer.

Fetches wait at the broker `FETCH_WAIT_MS` at most, not Faust's 1.5 s (see `BatchConsumerThread`).

Relies on faust-streaming 0.15.x internals (`_drain_messages`, `_wait_next_records`, `_getmany`,
`_new_offset`, `_filter_tps_with_pending_acks`, `_read_offset`, `_commit`, `perform_seek`'s use
of what `seek_to_committed` returns, and `_new_consumer_thread` / `_create_worker_consumer`, where
its aiokafka consumer is made, whose `_fetch_max_wait_ms` is read when it starts) and on aiokafka 0.14's fetcher
(`FetchResult.getall`, `PartitionRecords`: its batches, its `next_fetch_offset`, and
`_consumer_record`, which it calls once per record after its own offset, control batch, transaction
and CRC handling), and on the name `MetadataRequest` in aiokafka's client (see `no_topic_creation`):
both dependencies are pinned to that minor in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol, cast

from aiokafka import client as aiokafka_client
from aiokafka import errors as aiokafka_errors
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.protocol import metadata as aiokafka_metadata
from aiokafka.structs import TopicPartition as _AioTP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service, ServiceT

log = logging.getLogger("divmon.worker")

# Topics whose records the fetcher hands over as raw tuples (see the module docstring): those of the
# process's batch sink. A process runs one worker; a topic is never both raw and a Faust stream's.
_RAW_TOPICS: set[str] = set()
_aiokafka_consumer_record = aiokafka_fetcher.PartitionRecords._consumer_record
_aiokafka_getall = aiokafka_fetcher.FetchResult.getall
RawRecord = tuple[int, int, bytes | None, bytes | None]  # offset, timestamp (ms), key, value


def _consumer_record(self: Any, tp: Any, record: Any) -> Any:
    """`PartitionRecords._consumer_record`, with raw `(offset, timestamp, key, value)` for input topics."""
    if tp.topic in _RAW_TOPICS and self._key_deserializer is None and self._value_deserializer is None:
        return (record.offset, record.timestamp, record.key, record.value)
    return _aiokafka_consumer_record(self, tp, record)


def take_raw(records: Any, max_records: int | None) -> tuple[list[RawRecord], bool]:
    """Up to `max_records` (all if None) raw records from an aiokafka `PartitionRecords`, whole record
    batches at a time, and whether it is exhausted. What its record generator would yield, tuples as
    `_consumer_record` makes them, with `next_fetch_offset` kept the same way: CRCs checked, control
    batches skipped, records below the fetch offset (the head of a batch fetched from its middle)
    dropped. Not for `read_committed` fetches: `_getall` leaves those to aiokafka (aborted
    transactions)."""
    if max_records is not None and max_records < 1:
        return [], False
    out: list[RawRecord] = []
    left = records.__dict__.pop("_divmon_left", None)
    if left is not None:  # the rest of a batch cut at max_records by the previous call
        out, after = left
        records.next_fetch_offset = after
    batches = records._records
    while (max_records is None or len(out) < max_records) and batches.has_next():
        batch = batches.next_batch()
        if records._check_crcs and not batch.validate_crc():
            raise aiokafka_errors.CorruptRecordException(f"Invalid CRC - {records._tp}")
        if not batch.is_control_batch:
            rows = [(r.offset, r.timestamp, r.key, r.value) for r in batch]
            if rows and rows[0][0] < records.next_fetch_offset:
                first = records.next_fetch_offset
                rows = [row for row in rows if row[0] >= first]
            out += rows
        # the batch's own next offset, past records removed by compaction (as aiokafka does)
        records.next_fetch_offset = batch.next_offset
    if max_records is not None and len(out) > max_records:
        records._divmon_left = (out[max_records:], records.next_fetch_offset)
        out = out[:max_records]
        records.next_fetch_offset = out[-1][0] + 1
        return out, False
    return out, not batches.has_next()


def _getall(self: Any, max_records: int | None = None) -> list[Any]:
    """`FetchResult.getall`, through `take_raw` for the raw topics' records."""
    records = self._partition_records
    tp = self._topic_partition
    if (records is None or tp.topic not in _RAW_TOPICS or records._isolation_level == aiokafka_fetcher.READ_COMMITTED
            or records._key_deserializer is not None or records._value_deserializer is not None):
        every: list[Any] = _aiokafka_getall(self, max_records)
        return every
    if not self.check_assignment(tp):
        return []
    out, done = take_raw(records, max_records)
    self._update_position()
    if done:
        self._partition_records = None
    return out


class _MetadataRequestNoCreate(aiokafka_metadata.MetadataRequest):  # type: ignore[misc]
    """aiokafka's metadata request, asking the broker not to create the topics it names."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


def no_topic_creation() -> None:
    """From now on, this process's aiokafka clients (Faust's consumer and producer) never have the
    broker create a topic by asking for its metadata. aiokafka asks for it (`allow_auto_topic_creation`
    true), and on a broker with `auto.create.topics.enable` (Kafka's default) an input topic deleted
    under a running worker was made again at once by the worker's own consumer, with the broker's
    default partition count (measured: 1 of 4). Every topic divmon writes is created explicitly
    (outputs, dead letters, Faust's changelog and assignor topics); input topics are the users'."""
    aiokafka_client.MetadataRequest = _MetadataRequestNoCreate


def raw_records(topics: frozenset[str]) -> None:
    """From now on, the fetcher hands over raw tuples for `topics` (and aiokafka's records for others)."""
    _RAW_TOPICS.update(topics)
    aiokafka_fetcher.PartitionRecords._consumer_record = _consumer_record
    aiokafka_fetcher.FetchResult.getall = _getall


class BatchSink(Protocol):
    topics: frozenset[str]

    def deliver(self, tp: TP, records: list[RawRecord]) -> None: ...

    def held_back(self) -> set[TP]: ...

    def discard(self, tps: set[TP]) -> None: ...

    async def wait_capacity(self) -> None: ...


class BatchConsumer(faust_aiokafka.Consumer):
    """aiokafka-backed Faust consumer with batch hand-over for input topics (see module docstring)."""

    batch_sink: BatchSink | None = None
    # where input partitions must be read from instead of their committed offsets (see
    # `seek_to_committed`); set by the worker
    starts: Callable[[Mapping[TP, int]], Awaitable[Mapping[TP, int]]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe: dict[TP, int] = {}

    def _new_consumer_thread(self) -> Any:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def attach(self, sink: BatchSink) -> None:
        """Hand the records of `sink.topics` to `sink`, as raw `(offset, timestamp, key, value)`."""
        raw_records(sink.topics)
        self.batch_sink = sink

    # --- commits ---------------------------------------------------------------------------------

    def mark_safe(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Offsets (next to read) whose records are fully processed and stored."""
        assigned = self.assignment()
        for (topic, partition), offset in offsets.items():
            tp = TP(topic, partition)
            if tp in assigned and offset > self._safe.get(tp, -1):
                self._safe[tp] = offset

    def forget(self, tps: set[TP] | None = None) -> None:
        """Drop pending safe offsets (all, or those of `tps`): on rebalance."""
        if tps is None:
            self._safe.clear()
        else:
            for tp in tps:
                self._safe.pop(tp, None)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        seen = set()
        for tp in super()._filter_tps_with_pending_acks(topics):
            seen.add(tp)
            yield tp
        for tp in list(self._safe):
            if tp not in seen and (topics is None or tp in topics or tp.topic in topics):
                yield tp

    def _new_offset(self, tp: TP) -> int | None:
        if tp in self._safe:
            return self._safe.pop(tp)
        return super()._new_offset(tp)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit `offsets`, leaving out partitions of topics the cluster no longer has (deleted):
        aiokafka retries a commit the broker refuses with UNKNOWN_TOPIC_OR_PARTITION for as long as
        it is refused, and the rebalance that follows a deletion waited on that commit for good
        (measured: the worker stayed in it, retrying every 0.1 s, until it was stopped)."""
        cluster = self._thread._ensure_consumer()._client.cluster
        gone = sorted({tp.topic for tp in offsets if cluster.partitions_for_topic(tp.topic) is None})
        if gone:
            log.warning("offsets of %s not committed: no such topic in the cluster's metadata (deleted?)",
                        ", ".join(gone))
            offsets = {tp: o for tp, o in offsets.items() if tp.topic not in gone}
            if not offsets:
                return True
        return bool(await super()._commit(offsets))

    def seek_start(self, tp: TP) -> None:
        """Read `tp` from the start of its log from now on; nothing of it counts as committed."""
        self._thread.seek(tp, 0)
        self._read_offset[tp] = None
        self._committed_offset[tp] = None

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset (Faust's recovery does, each time
        partitions are assigned), except those `starts` moves: a partition whose log was replaced
        (its topic deleted and made again) is read from the start of the new log. Its committed
        offset is of the old log, and read from there the new log's first records were skipped
        without a trace. Returned as moved, so that Faust also counts nothing committed for it
        (offsets of the new log, below the old ones, are committed from then on)."""
        committed = dict(await super().seek_to_committed())
        if self.starts is not None:
            sink = self.batch_sink
            for tp, offset in (await self.starts(committed)).items():
                await self.seek(tp, offset)
                committed[tp] = offset
                if sink is not None:
                    # Faust resumed the partitions before this seek: records fetched from the committed
                    # offset meanwhile wait in the sink. Taken, they would pass for the records after
                    # the offset sought, and those read from it for records read before. (Dropped
                    # right after the seek, nothing fetched from the new position is: aiokafka drops
                    # what it buffered for the partition, and whatever it hands over from now on was
                    # fetched from there. A fetch result already on its way to the fetch loop at this
                    # instant would still get through.)
                    sink.discard({tp})
        return committed

    # --- fetching --------------------------------------------------------------------------------

    def fetched_at(self, tp: TP) -> float | None:
        """Wall-clock time (ms) of the last fetch response that reported on `tp`, with or without
        records (aiokafka's last poll timestamp, as new as `highwater`); None before the first."""
        at = self._thread._ensure_consumer().last_poll_timestamp(tp)
        return None if at is None else float(at)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Fetch, leaving out the partitions the sink holds back. Not in `_get_active_partitions`:
        Faust pauses and resumes partitions by editing the set that one returns, and its edits of a
        filtered copy were lost (a partition resumed while a lane was held back stayed paused)."""
        sink = self.batch_sink
        held = sink.held_back() if sink is not None else None
        if held and active_partitions:
            active_partitions = active_partitions - held
            if not active_partitions:  # all held back (an empty set would fetch every partition)
                await self.sleep(timeout)
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - needs a broker
        sink = self.batch_sink
        assert sink is not None, "BatchConsumer.batch_sink must be set before the worker starts"
        callback = self.callback
        read_offset = self._read_offset
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        inputs = sink.topics
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await sink.wait_capacity()
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                for tp, recs in records.items():
                    if not recs or (active is not None and tp not in active and tp not in self._buffered_partitions):
                        continue
                    if tp.topic in inputs:
                        sink.deliver(tp, recs)
                        read_offset[tp] = recs[-1][0]  # raw tuples: see `raw_records`
                        continue
                    for rec in recs:
                        r_offset = read_offset[tp]
                        if r_offset is None or rec.offset >= r_offset:
                            await self.wait_first(callback(self._to_message(tp, rec)), self.suspend_flow.wait())
                            read_offset[tp] = rec.offset
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


# how long aiokafka's fetch request may wait at the broker for data (Faust sets 1,500 ms). aiokafka keeps
# one fetch in flight per broker, for the partitions that had nothing buffered when it was sent: one
# sent for inputs already read to their end waited there up to that long, while the input holding
# event time back (its buffer taken meanwhile) could not be fetched. On the worker bench (1.5M
# records) such waits stopped fetching, and with it applying, for ~0.5 s several times a run.
FETCH_WAIT_MS = 100


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with fetches that wait `FETCH_WAIT_MS` at most."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_WAIT_MS  # read when it starts (makes its fetcher)
        return consumer

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's livelock check of a partition, skipped while the partition has no position (its
        offset is being reset, e.g. after a read out of range on a truncated log): Faust reads the
        position and expects None then, but aiokafka 0.14 asserts it is set, and the assertion
        crashed the consumer, and with it the worker (seen in the truncated-input test, right
        after the broker came back with the cut logs)."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        subscription = fetcher._subscriptions.subscription if fetcher is not None else None
        assignment = subscription.assignment if subscription is not None else None
        state = assignment.state_value(_AioTP(tp.topic, tp.partition)) if assignment is not None else None
        if state is None or not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)


class BatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport with `BatchConsumer`."""

    Consumer = BatchConsumer
