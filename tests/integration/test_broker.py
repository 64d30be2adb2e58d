"""The session broker is a real Kafka: keyed records round-trip and its offsets are exact."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

pytestmark = pytest.mark.kafka

PARTITIONS = 4
RECORDS = 400
ACCOUNTS = 37


def _produce(bootstrap: str, topic: str) -> Counter[int]:
    """Produce RECORDS keyed records, return how many each partition acknowledged."""
    acked: Counter[int] = Counter()
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[msg.partition()] += 1  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(RECORDS):
        producer.produce(topic, key=f"acct-{i % ACCOUNTS}", value=f"v{i}", on_delivery=on_delivery)
    assert producer.flush(30) == 0, "records left unsent"
    assert not errors, errors
    return acked


def _consume(bootstrap: str, topic: str, expected: int) -> list[tuple[str, str, int]]:
    """Read ``expected`` records from the start of ``topic``: (key, value, partition) each."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[tuple[str, str, int]] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert key is not None and value is not None and partition is not None
            got.append((key.decode(), value.decode(), partition))
    finally:
        consumer.close()
    return got


def _offsets(admin: AdminClient, topic: str, spec: OffsetSpec) -> dict[int, int]:
    """Return the broker's ListOffsets answer for every partition of ``topic``."""
    request = {TopicPartition(topic, p): spec for p in range(PARTITIONS)}
    futures = admin.list_offsets(request, request_timeout=10)
    return {tp.partition: future.result(timeout=10).offset for tp, future in futures.items()}


def test_keyed_records_round_trip_and_list_offsets_latest_is_exact(
    kafka_bootstrap: str, kafka_admin: AdminClient, kafka_topics: Callable[..., list[str]]
) -> None:
    """Every produced record is consumed once, keys stick to one partition, and LATEST equals the count."""
    (topic,) = kafka_topics(f"broker-probe-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS)

    acked = _produce(kafka_bootstrap, topic)
    got = _consume(kafka_bootstrap, topic, RECORDS)

    assert sorted(v for _, v, _ in got) == sorted(f"v{i}" for i in range(RECORDS))
    assert len({p for _, _, p in got}) > 1, "keys should spread over partitions"
    partition_of_key = {k: p for k, _, p in got}
    assert all(partition_of_key[k] == p for k, _, p in got), "a key moved between partitions"
    assert Counter(p for _, _, p in got) == acked
    assert _offsets(kafka_admin, topic, OffsetSpec.earliest()) == dict.fromkeys(range(PARTITIONS), 0)
    assert _offsets(kafka_admin, topic, OffsetSpec.latest()) == {p: acked[p] for p in range(PARTITIONS)}


def test_topics_keep_records_whose_timestamps_are_months_old(kafka_admin: AdminClient,
                                                              kafka_topics: Callable[..., None]) -> None:
    """The tests produce tapes with historical timestamps; under the default 7-day retention the
    broker's retention pass deleted them unread (a consumer then skipped to the end), so a test
    failed when a pass fell between its produce and its consume. The session broker's topics keep
    records for good."""
    from confluent_kafka.admin import ConfigResource

    topic = f"old-{uuid.uuid4().hex[:8]}"
    kafka_topics([topic])
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = kafka_admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["retention.ms"].value == "-1"
