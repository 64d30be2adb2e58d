"""confluent-kafka clients of the worker: the output producer and the reader of the global feeds.

- `Outputs` produces every event to the topic of its TYPE (`topic_prefix_out` + type), keyed by
  account_id (scope for rows that describe a slice: sweeps, feed health), value Avro (`EventCodec`),
  and every dead letter to `topic_dead_letter` with headers `reason`, `detail`, `feed`,
  `source_topic`, `source_partition`, `source_offset`. `flush()` returns only once everything
  produced before it is acknowledged by the brokers (raises if a delivery failed).
- `ChangelogWriter` writes the state table's changelog rows (see `streams.agents.app.TableStore`):
  librdkafka sends them from its own threads, where Faust's aiokafka producer spent ~75 µs of the
  event loop's CPU on each; `flush()` returns once every row written before it is acknowledged
  (raises if a delivery failed) and hands back the highest acknowledged offset per partition.
- `GlobalReader` reads *all* partitions of the marks and instruments topics, with no consumer group
  (every worker needs all of them), and can seek a partition back when a restored engine needs it.
  A read from an offset the broker no longer holds (deleted by retention) restarts the partition
  at its earliest offset and is reported to `InputLoss` (see `streams.agents.loss`).
- `topic_ids` asks the brokers which id each topic has: a topic deleted and made again under the
  same name has a new one (Kafka's topic ids, KIP-516), the one sign of it that offsets don't give.

SASL/SSL settings pass through `client_config`; secrets never appear in logs.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.agents.loss import InputLoss
from streams.codec import EventCodec
from streams.config import Settings
from streams.core.events import EVENT_TYPES, Event
from streams.worker.pipeline import DeadLetter, Raw

log = logging.getLogger(__name__)


def client_config(s: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": s.brokers, "security.protocol": s.security_protocol}
    if s.security_protocol.startswith("SASL"):
        conf.update({"sasl.mechanism": s.sasl_mechanism, "sasl.username": s.sasl_username,
                     "sasl.password": s.sasl_password.get()})
    if s.ssl_cafile:
        conf["ssl.ca.location"] = s.ssl_cafile
    return conf


def output_topics(s: Settings) -> dict[str, str]:
    return {t: f"{s.topic_prefix_out}{t}" for t in EVENT_TYPES}


@functools.lru_cache(maxsize=4)
def _admin(conf: tuple[tuple[str, Any], ...]) -> AdminClient:
    return AdminClient(dict(conf))


def topic_ids(s: Settings, topics: Iterable[str], timeout: float = 10.0) -> dict[str, str | None]:
    """The id the brokers gave each topic (None: no such topic now). Raises KafkaException if the
    brokers can't say within `timeout` (unreachable, not authorised). One admin client per
    configuration, kept: the worker asks every 10 s, and a new client meant new connections (and
    SASL handshakes) each time."""
    admin = _admin(tuple(sorted(client_config(s).items())))
    out: dict[str, str | None] = {}
    for topic, fut in admin.describe_topics(TopicCollection(list(topics)), request_timeout=timeout).items():
        try:
            out[topic] = str(fut.result(timeout).topic_id)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                out[topic] = None
            else:
                raise
        except TimeoutError as exc:  # the future's own wait, beyond the request's
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no answer about {topic} in {timeout} s")) from exc
    return out


def ensure_topics(s: Settings, partitions: int, timeout: float = 30.0) -> None:
    """Create the output and dead-letter topics if missing (existing ones are left alone)."""
    admin = AdminClient(client_config(s))
    names = [*output_topics(s).values(), s.topic_dead_letter]
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [NewTopic(n, num_partitions=partitions, replication_factor=-1) for n in names if n not in existing]
    for name, fut in (admin.create_topics(new) if new else {}).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            log.debug("topic %s already exists", name)


def produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
    """`producer.produce`, serving delivery reports while librdkafka's queue is full. Keywords
    only when there are some: `headers=None` alone cost ~0.5 µs a message (confluent-kafka parses
    keywords with a format string; ~1.3 instead of ~0.8 µs a produce), a tenth of an event's output."""
    while True:
        try:
            if kwargs:
                producer.produce(topic, value, key, **kwargs)
            else:
                producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


_UNKNOWN: Any = object()  # an event class not looked up yet (see `Outputs.events`)
# how long `patiently` waits for a producer's flush before it logs that deliveries are still pending
DELIVERY_STEP_S = 10.0
T = TypeVar("T")


class Undelivered(KafkaException):
    """A flush timed out with messages still in flight (librdkafka is still retrying them)."""


def patiently(flush: Callable[[], T], what: str, step: float) -> T:
    """`flush()` until it returns, through any number of `Undelivered` (a warning after each).

    While the brokers are unreachable librdkafka keeps every message and retries it until
    `message.timeout.ms` (5 minutes by default), then reports it failed: that failure raises here.
    Before, the commit gate gave up after one 60 s flush and the worker stopped, so an outage of
    a minute took the worker down while librdkafka would still have delivered everything."""
    waited = 0.0
    while True:
        try:
            return flush()
        except Undelivered as exc:
            waited += step
            log.warning("%s: not all delivered after %.0f s (brokers unavailable?), still trying: %s",
                        what, waited, exc)


class Outputs:
    """See the module docstring."""

    def __init__(self, s: Settings, codec: EventCodec, producer_config: Mapping[str, Any] | None = None) -> None:
        """`producer_config`: extra producer settings over the defaults (tests: a short message.timeout.ms)."""
        self.topics = output_topics(s)
        self.dead_topic = s.topic_dead_letter
        self.codec = codec
        self._fast: dict[type, Any] = {}  # event class -> its compiled encoder and header, or None
        self.errors: list[str] = []
        # Delivery reports of failures only, to one producer-level callback: no Python call per
        # delivered message. A message not yet delivered still counts in flush()'s return value.
        self._producer = Producer({**client_config(s), "linger.ms": 20, "acks": "all",
                                   "enable.idempotence": True, "queue.buffering.max.messages": 1_000_000,
                                   "error_cb": lambda err: log.warning("kafka producer: %s", err),
                                   **(producer_config or {}),
                                   "delivery.report.only.error": True, "on_delivery": self._on_delivery})

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def events(self, events: Iterable[Event]) -> None:
        """Produce each event to its type's topic, keyed by account (or scope). The loop calls the
        compiled encoder of each event class and the producer itself: through `encode_event` and
        `produce`, two Python calls an event were 7% of the output's instructions (callgrind)."""
        topics, producer, fast = self.topics, self._producer, self._fast
        send = producer.produce
        for ev in events:
            cls = type(ev)
            enc = fast.get(cls, _UNKNOWN)
            if enc is _UNKNOWN:
                enc = fast[cls] = self.codec.fast_encoder(cls)
            data = None
            if enc is not None:
                try:
                    data = enc[0](ev, enc[1])
                except Exception:  # encode_event raises the right error
                    data = None
            if data is None:
                data = self.codec.encode_event(ev)
            key: str = getattr(ev, "account_id", None) or getattr(ev, "scope", None) or ""
            try:
                send(topics[ev.TYPE], data, key.encode())
            except BufferError:  # librdkafka's queue is full: serve deliveries until it has room
                produce(producer, topics[ev.TYPE], key.encode(), data)
        producer.poll(0)

    def dead_letter(self, d: DeadLetter) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", d.reason.encode()), ("detail", d.detail[:500].encode()), ("feed", d.feed.value.encode()),
            ("source_topic", d.topic.encode()), ("source_partition", str(d.partition).encode()),
            ("source_offset", str(d.offset).encode())]
        produce(self._producer, self.dead_topic, d.key, d.value, headers=headers)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait up to `timeout` for everything produced so far to be delivered. Raises KafkaException
        naming a delivery failure, or `Undelivered` if messages are still in flight at `timeout`."""
        left = self._producer.flush(timeout)
        if self.errors:
            errors, self.errors = self.errors, []
            raise KafkaException(f"output producer: {left} undelivered, errors: {errors[:3]}")
        if left:
            raise Undelivered(f"output producer: {left} undelivered, errors: []")

    def deliver(self, step: float = DELIVERY_STEP_S) -> None:
        """`flush` for as long as the brokers take (the commit gate's): see `patiently`."""
        patiently(lambda: self.flush(step), "output producer", step)


class ChangelogWriter:
    """See the module docstring. Rows go to an explicit partition; one idempotent producer keeps
    them in order per partition, so a later row is never durable before an earlier one."""

    def __init__(self, s: Settings, topic: str, producer_config: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self.errors: list[str] = []
        self._acked: dict[int, int] = {}
        self._lock = threading.Lock()
        self._producer = Producer({**client_config(s), "linger.ms": 5, "acks": "all", "enable.idempotence": True,
                                   "queue.buffering.max.messages": 1_000_000,
                                   "error_cb": lambda err: log.warning("changelog producer: %s", err),
                                   **(producer_config or {}), "on_delivery": self._on_delivery})

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # librdkafka's thread hands reports over in flush(): one Python call a row (~1 µs)
        if err is not None:
            self.errors.append(str(err))
        else:
            partition, offset = msg.partition(), msg.offset()
            if offset > self._acked.get(partition, -1):
                self._acked[partition] = offset

    def write(self, partition: int, rows: Iterable[tuple[bytes, bytes]]) -> None:
        producer, topic = self._producer, self.topic
        for key, value in rows:
            produce(producer, topic, key, value, partition=partition)

    def flush(self, timeout: float = 60.0) -> dict[int, int]:
        """Wait until every row written so far is acknowledged; returns the highest acknowledged
        offset per partition since the last flush. Thread-safe (the commit gate runs it in a thread).
        Raises KafkaException naming a delivery failure, or `Undelivered` if rows are still in
        flight at `timeout` (the offsets acknowledged meanwhile are then kept for the next call)."""
        with self._lock:
            left = self._producer.flush(timeout)
            errors, self.errors = self.errors, []
            if errors:
                self._acked = {}
                raise KafkaException(f"changelog producer: {left} undelivered, errors: {errors[:3]}")
            if left:
                raise Undelivered(f"changelog producer: {left} undelivered, errors: []")
            acked, self._acked = self._acked, {}
        return acked

    def deliver(self, step: float = DELIVERY_STEP_S) -> dict[int, int]:
        """`flush` for as long as the brokers take (the commit gate's): see `patiently`."""
        return patiently(lambda: self.flush(step), "changelog producer", step)


class GlobalReader:
    """All partitions of the global topics, no group, each from where the worker's engines need it
    (the beginning, or their restored cursors: see `refresh`); see the module docstring."""

    def __init__(self, s: Settings, topics: Iterable[str], loss: InputLoss | None = None,
                 fetch_wait_ms: int = 500) -> None:
        self.topics = list(topics)
        self.loss = loss or InputLoss()
        # "error": an out-of-range read comes back as an error naming the offset, instead of a
        # silent reset (the only trace of which would be a log line of librdkafka's)
        self._consumer = Consumer({**client_config(s), "group.id": f"{s.group_id}-globals",
                                   "enable.auto.commit": False, "auto.offset.reset": "error",
                                   "enable.partition.eof": False, "fetch.wait.max.ms": fetch_wait_ms})
        self.assigned: set[tuple[str, int]] = set()

    def refresh(self, start_at: Callable[[str, int], int] | None = None, timeout: float = 5.0,
                only: Iterable[str] | None = None) -> list[tuple[str, int]]:
        """Assign partitions that appeared (topic created, partitions added), each from the offset
        `start_at` gives (the engines' restored cursors), from the beginning if that is 0; returns
        them. With `only`, of those topics alone (the ones whose id the caller has just checked:
        this consumer's metadata may list a topic that the cluster says is gone, or one made again
        before the caller knows it is a new log, whose partitions `start_at` would place at the old
        log's offsets). An offset the broker no longer holds is reported to `loss` once read (see
        `poll`)."""
        meta = self._consumer.list_topics(timeout=timeout)
        allowed = set(self.topics if only is None else only)
        new = [TopicPartition(t, p, (start_at(t, p) if start_at else 0) or OFFSET_BEGINNING)
               for t in self.topics if t in meta.topics and t in allowed
               for p in meta.topics[t].partitions if (t, p) not in self.assigned]
        if new:
            self._consumer.incremental_assign(new)
            self.assigned.update((tp.topic, tp.partition) for tp in new)
        return [(tp.topic, tp.partition) for tp in new]

    def poll(self, max_records: int = 50_000) -> dict[tuple[str, int], list[Raw]]:
        out: dict[tuple[str, int], list[Raw]] = defaultdict(list)
        for msg in self._consumer.consume(max_records, 0):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._AUTO_OFFSET_RESET:
                    self._restart(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
                else:
                    log.warning("global reader: %s", err)
                continue
            tp = (str(msg.topic()), int(msg.partition() or 0))
            out[tp].append((int(msg.offset() or 0), msg.timestamp()[1], msg.key(), msg.value()))
        return out

    def forget(self, topic: str, partition: int) -> None:
        """Stop reading `topic[partition]` (its topic is gone); `refresh` assigns it again once the
        topic is listed again."""
        self._consumer.incremental_unassign([TopicPartition(topic, partition)])
        self.assigned.discard((topic, partition))

    def _restart(self, topic: str, partition: int, offset: int) -> None:
        """Reading `topic[partition]` at `offset` failed: the broker no longer holds it. Go on from
        the earliest offset it holds (a seek is refused in this state: assign it anew)."""
        self.loss.reset(topic, partition, offset)
        self._assign_anew(topic, partition, OFFSET_BEGINNING)

    def highwater(self, topic: str, partition: int) -> int | None:
        """The last known end offset (from fetch responses, no request), None if unknown yet, or if
        the partition is not read (`forget`): librdkafka still answered from its cache then, with
        the end of the deleted topic's log, which the engines had read to, so a topic gone (and the
        one made again under its name, not read yet) counted as caught up and stopped holding event
        time: records written with the new one were applied before its own, and those came late."""
        if (topic, partition) not in self.assigned:
            return None
        _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        return None if high is None or high < 0 else int(high)

    def earliest(self, topic: str, partition: int, timeout: float = 5.0) -> int:
        """The earliest offset the broker holds for `topic[partition]` (a request; raises
        KafkaException if the broker does not answer within `timeout`)."""
        low, _high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout,
                                                          cached=False)
        return int(low)

    def rewind(self, topic: str, partition: int, offset: int) -> None:
        """Read `topic[partition]` again from `offset` (a restored engine needs it), from the
        beginning if that is 0 (an engine with no cursor: whatever the broker still holds, which
        is not a loss; a seek to 0 below the log start was reported as one)."""
        offset = offset or OFFSET_BEGINNING
        try:
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException:  # refused while a failed read (out of range) is not handled yet
            self._assign_anew(topic, partition, offset)

    def _assign_anew(self, topic: str, partition: int, offset: int) -> None:
        self._consumer.incremental_unassign([TopicPartition(topic, partition)])
        self._consumer.incremental_assign([TopicPartition(topic, partition, offset)])

    def close(self) -> None:
        self._consumer.close()
