"""The Faust app of `divmon worker`: group membership, assignment, the state table, web, timers.

Faust does what it is good at here: consumer-group membership and co-partitioned assignment of the
four account topics (they have equal partition counts, so its assignor gives one worker the same
partition numbers of all of them), the changelog-backed state table and its recovery (memory store
in tests, RocksDB via rocksdict in production), standby replicas, the web endpoint. Records reach
the engines through `BatchConsumer`, not through agents.

`TableStore` is the pipeline's `StateStore` over the Faust table: one table keyed by account id
(plus one `meta` row per partition), values are JSON bytes, written to the partition of the input
they came from. Faust keeps the table, its recovery and standbys; the worker's rows reach the
changelog through librdkafka (`streams.agents.kafka_io.ChangelogWriter`, see `TableStore.write`).

`DivmonApp.settled_generation` says which assignment's rebalance Faust last ended, tables recovered:
the worker feeds its engines only for that one. It takes the generation from the recovery that ends
(`track_recoveries`: Faust's `Recovery.on_recovery_completed` and `_resume_streams`, faust-streaming
0.15.x internals, pinned in pyproject.toml like those of `streams.agents.consumer`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.types import TP, TransportT

from streams.agents.consumer import BatchTransport
from streams.agents.kafka_io import ChangelogWriter
from streams.config import Settings

TABLE = "divmon-state"


class DivmonApp(faust.App):
    """faust.App whose consumer hands input batches to the pipeline (`BatchTransport`), and which
    says for which assignment its last rebalance ended (`settled_generation`)."""

    # the consumer generation whose rebalance (table recovery included) Faust last ended; None before
    settled_generation: int | None = None
    # the generation whose recovery is ending, while it ends (see `track_recoveries`)
    ending_generation: int | None = None

    def _new_transport(self) -> TransportT:
        return BatchTransport(self.conf.broker_consumer, self)

    def on_rebalance_end(self) -> None:
        """Faust's end of a rebalance, noting the generation it ended for. `rebalancing` alone can't
        say whether the tables are recovered: the recovery of one assignment may end after the next
        rebalance has begun (its revoke set `rebalancing`), and then `rebalancing` reads False
        through the whole next recovery. A worker that believed it then restored the partitions it
        was given from a table not read from the changelog yet. The generation is the recovery's
        own, not the consumer's latest: a next assignment may come while a recovery ends (it seeks
        the partitions, which takes a request to the brokers)."""
        super().on_rebalance_end()
        ending = self.ending_generation
        self.settled_generation = self.consumer_generation_id if ending is None else ending


def track_recoveries(app: DivmonApp, recovery: Any) -> None:
    """Have `app.ending_generation` say which generation Faust's table recovery (`recovery`) is
    ending while it ends: the two methods that end a rebalance (`on_recovery_completed`, and
    `_resume_streams` for an app without tables) take the generation they recovered, then call
    `app.on_rebalance_end`. Wrapped on the instance; faust-streaming 0.15.x (pinned)."""
    for name in ("on_recovery_completed", "_resume_streams"):
        original = getattr(recovery, name)

        async def ending(generation_id: int = 0, _original: Any = original) -> None:
            app.ending_generation = generation_id
            try:
                await _original(generation_id=generation_id)
            finally:
                app.ending_generation = None

        setattr(recovery, name, ending)


def credentials(s: Settings) -> Any:
    ctx = ssl.create_default_context(cafile=s.ssl_cafile or None) if "SSL" in s.security_protocol else None
    if s.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=s.sasl_username, password=s.sasl_password.get(),
                                     ssl_context=ctx, mechanism=s.sasl_mechanism)
    return faust.SSLCredentials(ctx) if ctx is not None else None


def rebalance_timeout_s(s: Settings) -> float:
    """How long the group waits for members to rejoin a rebalance (their revoke callbacks included)."""
    return max(s.session_timeout_ms / 1000, 10.0)


def revoke_wait_s(s: Settings) -> float:
    """How long a revoke may wait for the commit gate: half the rebalance timeout, at most 10 s, so
    the flush and commit that follow still fit and the worker rejoins in time."""
    return min(10.0, rebalance_timeout_s(s) / 2)


def create_app(s: Settings) -> DivmonApp:
    """The app for settings `s` (time-outs in ms from the kafka section).

    The data directory is created with its parents first: Faust makes only the last level, so the
    default `./var/divmon` failed on a fresh checkout."""
    Path(s.data_dir).mkdir(parents=True, exist_ok=True)
    web = s.web_port > 0
    app = DivmonApp(
        s.group_id,
        broker=[f"kafka://{b.strip()}" for b in s.brokers.split(",") if b.strip()],
        broker_credentials=credentials(s),
        store=s.store,
        datadir=s.data_dir,
        topic_partitions=s.partitions,
        web_enabled=web,
        web_port=s.web_port if web else 6066,
        web_bind="0.0.0.0",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_ms / 1000,
        broker_heartbeat_interval=s.heartbeat_ms / 1000,
        broker_rebalance_timeout=rebalance_timeout_s(s),
        broker_request_timeout=max(s.session_timeout_ms / 1000 + 5, 30.0),
        broker_commit_interval=s.commit_interval_ms / 1000,
        broker_max_poll_records=20_000,
        stream_recovery_delay=s.recovery_delay_ms / 1000,
        # Faust's default is 5 minutes: an input topic deleted and made again was read again (and the
        # worker's event time, held while it was gone, moved again) only that long after
        consumer_metadata_max_age_ms=s.metadata_max_age_ms,
        table_standby_replicas=1,
        producer_acks=-1,
        logging_config=None,
    )
    track_recoveries(app, cast(Any, app.tables).recovery)  # (Faust's TableManager; the type doesn't declare it)
    return app


class _Message:
    __slots__ = ("partition", "topic")

    def __init__(self, partition: int, topic: str) -> None:
        self.partition = partition
        self.topic = topic


class _PartitionEvent:
    """Stands in for the Faust event being processed: tables and stores read its partition."""

    def __init__(self, partition: int, topic: str) -> None:
        self.message = _Message(partition, topic)


class TableStore:
    """`StateStore` over a Faust table (see module docstring)."""

    def __init__(self, table: Any, source_topic: str, writer: ChangelogWriter | None = None) -> None:
        self.table = table
        self.source_topic = source_topic
        self.writer = writer
        self._by_partition: dict[int, list[bytes]] | None = None
        self._taken: set[int] = set()

    def invalidate(self) -> None:
        """Forget the partition index (after a rebalance and recovery)."""
        self._by_partition = None

    def rows(self, partition: int) -> Iterable[bytes]:
        """Every row of `partition`. One pass over the table indexes all partitions; each partition's
        rows are handed out once, then the index is rebuilt if the partition is asked for again."""
        if self._by_partition is None or partition in self._taken:
            self._taken = set()
            index: dict[int, list[bytes]] = {}
            for _key, value in self.table.items():
                if value:
                    index.setdefault(json.loads(value)["p"], []).append(value)
            self._by_partition = index
        self._taken.add(partition)
        return self._by_partition.pop(partition, [])

    def write(self, partition: int, rows: Mapping[str, bytes]) -> list[Any]:
        """Write rows to the local store and to changelog partition `partition`; returns receipts
        that complete when the broker has acknowledged them.

        Not `table[key] = value`: that discards the sends, and Faust's own pre-commit flush gives
        up after 100 ms without a send (`ProducerBuffer.flush_atmost`), so on a busy event loop it
        committed input offsets past checkpoint rows that were never written, and a worker taking
        over restored state older than the offsets it resumed from. Nor Faust's `send_changelog`:
        it costs ~75 µs of the event loop a row, which with many accounts (a row per touched account
        and checkpoint) was most of the worker's CPU. The rows go out through librdkafka
        (`writer`, set by the worker before its first checkpoint), and the receipt also records the
        acknowledged offsets as the store's persisted ones, as Faust does after its own sends, so a
        RocksDB store recovers from there. The local store needs the current event to find the
        partition (RocksDB keeps one per partition)."""
        if self.writer is None:
            raise RuntimeError("TableStore.write before the worker set its changelog writer")
        encoded = [(key.encode(), value) for key, value in rows.items()]  # bytes, as recovery gives them
        event = _PartitionEvent(partition, self.source_topic)
        token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
        try:
            data = self.table.data
            for k, value in encoded:
                data[k] = value
        finally:
            _current_event.reset(token)
        self.writer.write(partition, encoded)
        return [self._durable()]

    async def _durable(self) -> None:
        """Every row written so far is acknowledged; their offsets become the store's persisted ones."""
        assert self.writer is not None
        acked = await asyncio.get_running_loop().run_in_executor(None, self.writer.deliver)
        # only for partitions still ours: a revoked partition's store may be gone, and an offset
        # written into a fresh one would make a later owner skip the rows it lacks
        owned = {tp.partition for tp in self.table.app.consumer.assignment() if tp.topic == self.source_topic}
        data = self.table.data
        for partition, offset in acked.items():
            if partition in owned:
                data.set_persisted_offset(TP(self.writer.topic, partition), offset)
