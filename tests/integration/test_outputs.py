"""`Outputs` (the worker's output producer): what it produces arrives, and `flush()` raises whenever
something produced before it was not delivered, so the commit gate never marks those offsets safe."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaException

from streams.agents.kafka_io import ChangelogWriter, Outputs, output_topics
from streams.codec import EventCodec
from streams.config import Settings
from streams.core.records import Feed
from streams.worker.pipeline import DeadLetter
from tests.integration.worker_support import read_topics

UNREACHABLE = "127.0.0.1:1"


def _settings(brokers: str, tag: str) -> Settings:
    return Settings.load({"brokers": brokers, "topic_prefix_out": f"{tag}.out.",
                          "topic_dead_letter": f"{tag}.dead"}, environ={})


def _dead_letter(value: bytes) -> DeadLetter:
    return DeadLetter(Feed.EP3, "ep3.positions", 0, 7, b"A1", value, "decode", "bad bytes")


@pytest.mark.kafka
def test_events_arrive_on_their_topics_keyed_by_account(kafka_bootstrap: str, kafka_topics: Callable[..., list[str]],
                                                        make_events: Callable[..., list[Any]]) -> None:
    """Every event lands on the topic of its type, keyed by account (scope if none), Avro-decodable; flush is quiet."""
    s = _settings(kafka_bootstrap, f"outputs-{uuid.uuid4().hex[:8]}")
    topics = output_topics(s)
    kafka_topics([*topics.values(), s.topic_dead_letter])
    codec = EventCodec()
    events = make_events()
    outputs = Outputs(s, codec)
    outputs.events(events)
    outputs.dead_letter(_dead_letter(b"\x00junk"))
    outputs.flush(30)

    got = read_topics(kafka_bootstrap, [*topics.values(), s.topic_dead_letter])
    want = [(topics[e.TYPE], (getattr(e, "account_id", None) or e.scope).encode(),
             codec.decode_event(codec.encode_event(e))) for e in events]
    assert sorted((t, k, codec.decode_event(v)) for t, k, v, _ in got if t != s.topic_dead_letter and v) == \
        sorted(want, key=lambda r: (r[0], r[1], r[2]["event_id"]))
    dead = [(k, v, h) for t, k, v, h in got if t == s.topic_dead_letter]
    assert dead == [(b"A1", b"\x00junk", {"reason": b"decode", "detail": b"bad bytes", "feed": Feed.EP3.value.encode(),
                                         "source_topic": b"ep3.positions", "source_partition": b"0",
                                         "source_offset": b"7"})]


@pytest.mark.kafka
def test_a_message_the_broker_rejects_makes_flush_raise(kafka_bootstrap: str,
                                                        kafka_topics: Callable[..., list[str]]) -> None:
    """A dead letter over the topic's max.message.bytes is refused by the broker: flush raises naming the error,
    once, and a later flush with nothing failed is quiet again."""
    s = _settings(kafka_bootstrap, f"outputs-{uuid.uuid4().hex[:8]}")
    kafka_topics(s.topic_dead_letter, config={"max.message.bytes": "1024"})
    outputs = Outputs(s, EventCodec())
    outputs.dead_letter(_dead_letter(b"x" * 8000))
    too_large = r"0 undelivered, errors: \[.*MSG_SIZE_TOO_LARGE.*Broker: Message size too large"
    with pytest.raises(KafkaException, match=too_large):
        outputs.flush(30)
    outputs.dead_letter(_dead_letter(b"small"))
    outputs.flush(30)


def test_flush_raises_with_the_count_of_undelivered_messages() -> None:
    """With no broker to deliver to, flush(timeout) gives up and raises naming how many are still undelivered."""
    outputs = Outputs(_settings(UNREACHABLE, "outputs"), EventCodec(), {"log_level": 0})
    for i in range(3):
        outputs.dead_letter(_dead_letter(b"v%d" % i))
    with pytest.raises(KafkaException, match=r"output producer: 3 undelivered, errors: \[\]"):
        outputs.flush(0.5)


def test_a_message_that_times_out_makes_flush_raise() -> None:
    """A message librdkafka gives up on (message.timeout.ms) is reported as failed: flush raises naming it."""
    outputs = Outputs(_settings(UNREACHABLE, "outputs"), EventCodec(), {"message.timeout.ms": 300, "log_level": 0})
    outputs.dead_letter(_dead_letter(b"v"))
    with pytest.raises(KafkaException, match=r"0 undelivered, errors: \[.*_MSG_TIMED_OUT.*Local: Message timed out"):
        outputs.flush(10)


def test_events_wait_for_room_when_the_producer_queue_is_full_and_none_is_lost(
        make_events: Callable[..., list[Any]]) -> None:
    """More events than librdkafka's queue holds: `events()` serves deliveries until each fits
    (here each times out, with no broker) and returns; every event was produced, and every one is
    reported as failed, none dropped."""
    outputs = Outputs(_settings(UNREACHABLE, "outputs"), EventCodec(),
                      {"queue.buffering.max.messages": 4, "message.timeout.ms": 200, "log_level": 0})
    events = make_events("a") + make_events("b")
    assert len(events) > 4
    outputs.events(events)
    assert outputs._producer.flush(10) == 0  # (librdkafka's own: nothing left in flight)
    assert len(outputs.errors) == len(events) and all("_MSG_TIMED_OUT" in e for e in outputs.errors)


@pytest.mark.kafka
def test_changelog_rows_arrive_in_order_and_flush_returns_their_offsets(
        kafka_bootstrap: str, kafka_topics: Callable[..., list[str]]) -> None:
    """`ChangelogWriter` (the state table's rows): each row on the partition it names, in order;
    `flush()` returns the highest acknowledged offset per partition, then nothing until more rows."""
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    kafka_topics(topic, partitions=3)
    writer = ChangelogWriter(_settings(kafka_bootstrap, "changelog"), topic)
    writer.write(2, [(b"A1", b"one"), (b"A2", b"two")])
    writer.write(0, [(b"B1", b"three")])
    writer.write(2, [(b"A1", b"four")])
    assert writer.flush(30) == {2: 2, 0: 0}
    assert writer.flush(30) == {}
    writer.write(1, [(b"C1", b"five")])
    assert writer.deliver() == {1: 0}
    got = read_topics(kafka_bootstrap, [topic])
    assert [(k, v) for _, k, v, _ in got if k.startswith(b"A")] == [(b"A1", b"one"), (b"A2", b"two"), (b"A1", b"four")]
    assert [(k, v) for _, k, v, _ in got if k.startswith(b"B")] == [(b"B1", b"three")]


def test_deliver_waits_while_the_brokers_are_unreachable_and_fails_only_when_librdkafka_gives_up(
        caplog: pytest.LogCaptureFixture) -> None:
    """The commit gate's `deliver`: with no broker it keeps waiting (a warning per step), where a
    single flush gave up after its timeout and stopped the worker; it raises once librdkafka
    reports the message failed (message.timeout.ms), naming the failure."""
    outputs = Outputs(_settings(UNREACHABLE, "outputs"), EventCodec(), {"message.timeout.ms": 2500, "log_level": 0})
    outputs.dead_letter(_dead_letter(b"v"))
    began = time.monotonic()
    with pytest.raises(KafkaException, match=r"errors: \[.*_MSG_TIMED_OUT"):
        outputs.deliver(step=0.5)
    assert time.monotonic() - began >= 2.0
    assert "output producer: not all delivered after 1 s (brokers unavailable?), still trying" in caplog.text
    writer = ChangelogWriter(_settings(UNREACHABLE, "changelog"), "state-changelog",
                             {"message.timeout.ms": 2500, "log_level": 0})
    writer.write(0, [(b"A1", b"v")])
    with pytest.raises(KafkaException, match=r"errors: \[.*_MSG_TIMED_OUT"):
        writer.deliver(step=0.5)
    assert "changelog producer: not all delivered after 1 s" in caplog.text


def test_changelog_flush_raises_when_rows_are_not_delivered() -> None:
    """No broker: flush raises naming the undelivered rows (the gate then marks nothing safe)."""
    writer = ChangelogWriter(_settings(UNREACHABLE, "changelog"), "state-changelog", {"log_level": 0})
    writer.write(0, [(b"A1", b"v"), (b"A2", b"w")])
    with pytest.raises(KafkaException, match=r"changelog producer: 2 undelivered, errors: \[\]"):
        writer.flush(0.5)
