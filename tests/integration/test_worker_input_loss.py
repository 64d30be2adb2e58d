"""Input the broker deleted before a worker read it (retention shorter than the worker's lag) is
counted and logged with its offsets, for the account inputs (aiokafka, under Faust) and for the
shared marks (librdkafka); the worker carries on from the earliest offset the broker holds.

Deletion is made with the DeleteRecords API, which moves a partition's log start exactly as a
retention pass does, at a known offset."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.agents.kafka_io import GlobalReader
from streams.agents.loss import InputLoss, Lost
from streams.config import Settings
from streams.core.records import Feed
from streams.demo.procs import free_port
from streams.worker.synth import traffic
from tests.integration.worker_support import (
    Names,
    committed,
    create_inputs,
    high_watermarks,
    produce,
    run_to_the_end,
    scrape,
    start_worker,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.kafka]


def _delete_before(admin: AdminClient, topic: str, partition: int, offset: int) -> None:
    for future in admin.delete_records([TopicPartition(topic, partition, offset)]).values():
        future.result(timeout=30)


def _end(bootstrap: str, topic: str, partition: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex[:6]}"})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
    finally:
        c.close()


def _offsets_read(reader: GlobalReader, n: int, deadline: float) -> list[int]:
    """The offsets of the next `n` records the reader gives (fewer if `deadline` passes first)."""
    offsets: list[int] = []
    while len(offsets) < n and time.monotonic() < deadline:
        for raws in reader.poll().values():
            offsets += [r[0] for r in raws]
        time.sleep(0.05)
    return offsets


def test_the_global_reader_reports_a_read_from_deleted_offsets(kafka_bootstrap: str, kafka_topics: object,
                                                              kafka_admin: AdminClient) -> None:
    """Started at an offset the broker deleted, the reader goes on from the earliest one it holds
    and the loss is sized: a silent reset (librdkafka's "earliest") would leave no trace."""
    topic = f"{uuid.uuid4().hex[:8]}.marks"
    kafka_topics(topic, config={"retention.ms": "-1"})  # type: ignore[operator]
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(100):
        p.produce(topic, str(i).encode(), b"SYM", timestamp=1_780_000_000_000 + i)
    assert p.flush(30) == 0
    _delete_before(kafka_admin, topic, 0, 60)
    loss = InputLoss()
    reader = GlobalReader(Settings.load({"brokers": kafka_bootstrap, "group_id": f"g-{topic}"}, environ={}),
                          [topic], loss)
    try:
        assert reader.refresh(lambda t, part: 10) == [(topic, 0)]
        deadline = time.monotonic() + 30
        offsets = _offsets_read(reader, 40, deadline)
        assert offsets == list(range(60, 100))
        assert loss.pending() == {(topic, 0): 10}
        assert loss.arrived(topic, 0, offsets[0]) == Lost(topic, 0, 10, 60)
        # a restored engine asks for a re-read while a failed read is still unhandled (librdkafka
        # refuses a seek then): the reader assigns the partition anew at that offset instead
        reader.rewind(topic, 0, 5)
        failed = []
        while not failed and time.monotonic() < deadline:
            failed = [m for m in reader._consumer.consume(100, 0.5) if m.error() is not None]
        assert failed and failed[0].offset() == 5
        reader.rewind(topic, 0, 70)
        assert _offsets_read(reader, 30, deadline) == list(range(70, 100))
        assert reader.earliest(topic, 0) == 60
        # re-read from 0 (an engine with no cursor): from the earliest offset held, and no loss
        # (a seek to 0 was an out-of-range read, reported as 60 records lost)
        assert loss.pending() == {}
        reader.rewind(topic, 0, 0)
        assert _offsets_read(reader, 40, deadline) == list(range(60, 100))
        assert loss.pending() == {}
    finally:
        reader.close()


@pytest.mark.slow
def test_a_worker_counts_input_deleted_while_it_was_down(kafka_bootstrap: str, kafka_topics: object,
                                                        kafka_admin: AdminClient, tmp_path: Path) -> None:
    """A worker stops; records are produced and the oldest unread ones deleted, on an account input
    and on the marks; the restarted worker counts exactly those (`divmon_input_lost_records_total`),
    logs their offsets, and commits everything after them."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=24, n_fills=400, seed=19)
    half = len(records) // 2
    produce(kafka_bootstrap, names, records[:half])
    logs = [tmp_path / "run0.log", tmp_path / "run1.log"]
    ends = run_to_the_end(kafka_bootstrap, names, logs[0], "run 0")

    ep3, marks = names.inputs[Feed.EP3], names.inputs[Feed.MARKS]
    ep3_read, marks_read = ends[(ep3, 0)], _end(kafka_bootstrap, marks, 0)
    produce(kafka_bootstrap, names, records[half:])
    lost_ep3, lost_marks = 7, 11
    assert _end(kafka_bootstrap, ep3, 0) > ep3_read + lost_ep3
    assert _end(kafka_bootstrap, marks, 0) > marks_read + lost_marks
    _delete_before(kafka_admin, ep3, 0, ep3_read + lost_ep3)
    _delete_before(kafka_admin, marks, 0, marks_read + lost_marks)

    port = free_port()
    proc = start_worker(kafka_bootstrap, names, logs[1], ["--metrics-port", str(port)])
    try:
        ends = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: proc.poll() is None and committed(kafka_bootstrap, names) == ends, 120,
                 "run 1 to commit to the end")
        metrics = scrape(port)
        lost = {labels[0][1]: v for (name, labels), v in metrics.items()
                if name == "divmon_input_lost_records_total"}
        assert lost == {**dict.fromkeys((f.value for f in Feed), 0.0), Feed.EP3.value: lost_ep3,
                        Feed.MARKS.value: lost_marks}, logs[1].read_text()[-3000:]
        text = logs[1].read_text()
        assert (f"input lost: {ep3}[0] offsets {ep3_read} to {ep3_read + lost_ep3 - 1} ({lost_ep3} records)"
                in text), text[-3000:]
        assert f"input lost: {marks}[0] offsets {marks_read} to {marks_read + lost_marks - 1}" in text
        assert "is out of range" not in text  # aiokafka's own line is replaced by the worker's
    finally:
        stop(proc)
