"""`divmon tapes record`: consume the feeds from Kafka and write one Avro tape per feed per trading day.

Crash-resume contract (at-least-once from Kafka, exactly-once in the files):
- offsets are committed only after every record they cover is written *and fsynced* (`flush` every
  `flush_s` seconds, on partition revocation and on shutdown), so a crash never loses a record:
  what was not committed is consumed again;
- what is consumed again is not written again: a record goes to the file of its own trading day
  (from its Kafka timestamp, so always the same file) and `TapeWriter` refuses offsets that file
  already holds. A torn last block from the crash is cut on open and its records are re-written;
- one recorder per tapes directory (an exclusive `flock` on `<root>/.recorder.lock`): two writers
  on one file would corrupt it;
- SIGTERM/SIGINT (via `stop`) end the loop; the files are flushed, offsets committed and the files
  closed: every file is a valid container afterwards.
Records whose value can't be decoded (poison) are not taped; each is logged with topic, partition,
offset and reason and counted. Tombstones (null values on compacted topics) are counted.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from streams.codec import Codec, DecodeError
from streams.codec.codec import write_body
from streams.codec.framing import single_object_header
from streams.core.records import Feed
from streams.tapes.calendar import tape_path, trading_day
from streams.tapes.writer import TapeWriter

log = logging.getLogger(__name__)
IDLE_CLOSE_S = 60.0


def commit_later(exc: BaseException) -> bool:
    """A commit error that a later commit gets past (the group is moving, its coordinator loading
    or moving, a request timed out), as opposed to one that must end the recorder (authorization,
    a fatal error)."""
    from confluent_kafka import KafkaError, KafkaException

    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(err, KafkaError) or err.fatal():
        return False
    return err.retriable() or err.code() in (
        KafkaError.REBALANCE_IN_PROGRESS, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._WAIT_COORD)


@dataclass(frozen=True)
class RecorderConfig:
    root: Path
    topics: dict[str, Feed]  # topic name -> feed
    consumer: dict[str, Any]  # librdkafka settings (bootstrap, group.id, security)
    flush_s: float = 1.0
    codec: str = "deflate"
    registry: Any = None  # streams.codec.SchemaIds, for Confluent-framed values


class Recorder:
    def __init__(self, cfg: RecorderConfig, consumer_factory: Callable[[dict[str, Any]], Any] | None = None
                 ) -> None:
        self.cfg = cfg
        self.codecs = {feed: Codec(feed, registry=cfg.registry) for feed in set(cfg.topics.values())}
        self.ours = {feed: single_object_header(c.schema) for feed, c in self.codecs.items()}
        self.writers: dict[tuple[Feed, date], TapeWriter] = {}
        self.last_write: dict[tuple[Feed, date], float] = {}
        self.to_commit: dict[tuple[str, int], int] = {}
        self.started: set[tuple[str, int]] = set()  # partitions whose first offset was logged
        self.stats: Counter[str] = Counter()
        self._factory = consumer_factory
        self._lock: Any = None

    def run(self, stop: Callable[[], bool]) -> Counter[str]:
        """Record until `stop()` is true, then close cleanly; returns the counters."""
        from confluent_kafka import Consumer

        self._take_lock()
        conf = {"enable.auto.commit": False, "auto.offset.reset": "earliest", **self.cfg.consumer}
        consumer = (self._factory or Consumer)(conf)
        consumer.subscribe(list(self.cfg.topics), on_assign=self.assigned, on_revoke=self.revoked)
        last_flush = time.monotonic()
        try:
            while not stop():
                for msg in consumer.consume(num_messages=2000, timeout=0.2):
                    self.handle(msg)
                if time.monotonic() - last_flush >= self.cfg.flush_s:
                    self.checkpoint(consumer)
                    self._close_idle()
                    last_flush = time.monotonic()
        finally:
            try:
                self.checkpoint(consumer)
            finally:
                consumer.close()  # may call on_revoke: the writers must still be open
                for w in self.writers.values():
                    w.close()
                log.info("recorder stopped: %s", dict(self.stats))
        return self.stats

    def handle(self, msg: Any) -> None:
        """Tape one consumed message (or count why not)."""
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise RuntimeError(f"kafka: {err}")
            log.warning("kafka: %s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if (topic, partition) not in self.started:
            self.started.add((topic, partition))
            log.info("reading %s[%d] from offset %d", topic, partition, offset)
        self.to_commit[(topic, partition)] = offset + 1
        feed, value = self.cfg.topics[topic], msg.value()
        if value is None:
            self.stats["tombstones"] += 1
            return
        ts_type, ts = msg.timestamp()
        try:
            if ts_type == 0:  # TIMESTAMP_NOT_AVAILABLE
                raise DecodeError("malformed", "record has no timestamp")
            body = self._body(feed, value)
        except DecodeError as exc:
            self.stats["rejected"] += 1
            log.warning("not taped: %s[%d]@%d: %s", topic, partition, offset, exc)
            return
        key = (feed, trading_day(ts))
        writer = self.writers.get(key) or self._open(key)
        self.stats["written" if writer.append(ts, topic, partition, offset, body) else "duplicates"] += 1
        self.last_write[key] = time.monotonic()

    def _body(self, feed: Feed, value: bytes) -> bytes:
        """The value's Avro body under our schema: the bytes as sent when the producer used our
        schema (single-object framing), else decoded and re-encoded. Raises DecodeError."""
        codec = self.codecs[feed]
        decoded = codec.decode_value(value)
        if value.startswith(self.ours[feed]):
            return value[len(self.ours[feed]):]
        return write_body(codec.schema, decoded)

    def _open(self, key: tuple[Feed, date]) -> TapeWriter:
        feed, day = key
        writer = TapeWriter(tape_path(self.cfg.root, day, feed.value), feed, codec=self.cfg.codec)
        self.stats["cut_on_open"] += writer.cut
        self.writers[key] = writer
        log.info("tape open: %s", writer.path)
        return writer

    def checkpoint(self, consumer: Any) -> None:
        """Flush + fsync every open tape, then commit what they cover. The order is the guarantee.
        A commit the group can't take now (`commit_later`) is kept for the next checkpoint: what it
        covers is on disk, so at worst it is consumed again and found there."""
        from confluent_kafka import KafkaException, TopicPartition

        for w in self.writers.values():
            w.flush()
        if self.to_commit:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.to_commit.items()]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                if not commit_later(exc):
                    raise
                self.stats["commits_deferred"] += 1
                log.warning("commit deferred to the next checkpoint: %s", exc)
                return
            self.stats["commits"] += 1
            self.to_commit.clear()

    def assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """Say which partitions this recorder now reads, and from where (for operators)."""
        log.info("assigned: %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing")

    def revoked(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions taken away: commit what was taped of them; if the commit has to wait, forget
        their offsets (the next owner reads them again; committed later, they could overwrite its own)."""
        self.checkpoint(consumer)
        for tp in partitions:
            self.to_commit.pop((tp.topic, tp.partition), None)

    def _close_idle(self) -> None:
        """Close tapes of past trading days that received nothing for a while (late records reopen)."""
        today, now = trading_day(int(time.time() * 1000)), time.monotonic()
        for key in [k for k in self.writers if k[1] < today and now - self.last_write[k] > IDLE_CLOSE_S]:
            self.writers.pop(key).close()
            log.info("tape closed: %s %s", key[0].value, key[1])

    def _take_lock(self) -> None:
        self.cfg.root.mkdir(parents=True, exist_ok=True)
        self._lock = (self.cfg.root / ".recorder.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another recorder holds {self.cfg.root}/.recorder.lock") from None
