"""An account input's topic deleted and made again under the same name, under a running worker or
while it was down: the worker holds its verdicts while the topic is gone (and says so), reads the
new topic from its start, and its verdicts are the replay's of everything written to both.

Before, the new topic was read from the old one's committed offsets (the group keeps them: Kafka
does not delete a group's offsets with the topic), and the records below them were skipped, or
dropped as records read before: 172 of 205 fills of the new topic in the first measurement."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from streams.core.records import Feed
from streams.demo.procs import free_port
from streams.worker.partition import GLOBAL_FEEDS
from streams.worker.synth import traffic
from tests.integration.conftest import wait_for_leaders
from tests.integration.worker_support import (
    PARTITIONS,
    Names,
    commits_ahead_of_state,
    committed,
    create_inputs,
    expected,
    high_watermarks,
    produce,
    run_to_the_end,
    scrape,
    start_worker,
    stop,
    wait_for,
    wait_for_the_replay,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
WHOLE_TAPE = "the worker's verdicts to equal the replay's of the whole tape"


def _topic_id(admin: AdminClient, topic: str) -> str | None:
    try:
        return str(admin.describe_topics(TopicCollection([topic]))[topic].result(10).topic_id)
    except KafkaException:
        return None


def _make_again(admin: AdminClient, topic: str, old_id: str | None, partitions: int = PARTITIONS) -> None:
    """Create `topic` again once the broker has forgotten the deleted one (a new id), every
    partition led."""
    deadline = time.monotonic() + 60
    while _topic_id(admin, topic) in (old_id, None):
        assert time.monotonic() < deadline, f"{topic} could not be made again"
        try:
            admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # the old one is still being deleted
                raise
            time.sleep(0.5)
    wait_for_leaders(admin, topic, partitions)


def _delete(admin: AdminClient, topic: str) -> str | None:
    """Delete `topic`; returns the id it had."""
    old_id = _topic_id(admin, topic)
    for fut in admin.delete_topics([topic], operation_timeout=30).values():
        fut.result(30)
    return old_id


def _replaced_while_down(bootstrap: str, names: Names, admin: AdminClient, tmp_path: Path, feed: Feed,
                         records: list[Any], half: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Run a worker over `records[:half]`, stop it, replace the topic of `feed` (4 partitions, or 1
    for a shared input), write the rest, start a worker again: once it gives the replay's verdicts
    of everything, its metrics."""
    want = expected(records)
    produce(bootstrap, names, records[:half])
    logs = [tmp_path / "run0.log", tmp_path / "run1.log"]
    run_to_the_end(bootstrap, names, logs[0], "run 0")
    topic = names.inputs[feed]
    _make_again(admin, topic, _delete(admin, topic), partitions=1 if feed in GLOBAL_FEEDS else PARTITIONS)
    produce(bootstrap, names, records[half:])
    port = free_port()
    proc = start_worker(bootstrap, names, logs[1], ["--metrics-port", str(port)])
    try:
        wait_for_the_replay(bootstrap, names, proc, want, [logs[1]], WHOLE_TAPE)
        ends = high_watermarks(bootstrap, names)
        wait_for(lambda: committed(bootstrap, names) == ends, 60, "offsets committed to the end")
        assert commits_ahead_of_state(bootstrap, names) == []
        return scrape(port)
    finally:
        stop(proc)


def _by_feed(metrics: dict, name: str) -> dict[str, float]:
    return {labels[0][1]: v for (n, labels), v in metrics.items() if n == name}


def test_a_worker_reads_a_topic_made_again_from_its_start(kafka_bootstrap: str, kafka_topics: object,
                                                         kafka_admin: AdminClient, tmp_path: Path) -> None:
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=24, n_fills=400, seed=19)
    half = len(records) // 2
    want = expected(records)
    produce(kafka_bootstrap, names, records[:half])
    log, port = tmp_path / "worker.log", free_port()
    proc = start_worker(kafka_bootstrap, names, log, ["--metrics-port", str(port)],
                        env_extra={"DIVMON_IDLE_MS": "1000", "DIVMON_METADATA_MAX_AGE_MS": "2000"})
    fills = names.inputs[Feed.FILLS]
    try:
        def alive() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]

        wait_for(lambda: (alive(), "warm: partitions [0, 1, 2, 3]" in log.read_text())[1], 120, "the worker warm")
        ends = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: (alive(), committed(kafka_bootstrap, names) == ends)[1], 90, "the first half committed")
        old_ends = {p: ends.get((fills, p), 0) for p in range(PARTITIONS)}

        old_id = _delete(kafka_admin, fills)
        wait_for(lambda: _by_feed(scrape(port), "divmon_input_missing_partitions").get(Feed.FILLS.value) == PARTITIONS,
                 60, "the worker to count the fills partitions missing")
        assert f"input missing: {fills} has no partition 0, 1, 2, 3" in log.read_text()

        _make_again(kafka_admin, fills, old_id)
        produce(kafka_bootstrap, names, records[half:])
        new_ends = high_watermarks(kafka_bootstrap, names)
        # the new log's offsets start at 0 again: below the old log's end on some partition
        assert any(new_ends.get((fills, p), 0) < old_ends[p] + 10 for p in range(PARTITIONS))

        wait_for_the_replay(kafka_bootstrap, names, proc, want, [log], WHOLE_TAPE)
        wait_for(lambda: committed(kafka_bootstrap, names) == new_ends, 60,
                 "offsets of the new fills topic to be committed to its end")
        assert commits_ahead_of_state(kafka_bootstrap, names) == []
        metrics = scrape(port)
        assert _by_feed(metrics, "divmon_input_replaced_total") == {
            **dict.fromkeys((f.value for f in Feed), 0.0), Feed.FILLS.value: float(PARTITIONS)}
        assert set(_by_feed(metrics, "divmon_input_missing_partitions").values()) == {0.0}
        assert set(_by_feed(metrics, "divmon_input_truncated_total").values()) == {0.0}  # a new log, not a cut one
        assert metrics[("divmon_late_records_total", ())] == 0.0
        text = log.read_text()
        for p in range(PARTITIONS):
            assert f"input replaced: {fills}[{p}] is a new log" in text, text[-3000:]
        assert f"input back: {fills}" in text
    finally:
        stop(proc)


def test_a_worker_restarted_reads_a_topic_made_again_while_it_was_down(
        kafka_bootstrap: str, kafka_topics: object, kafka_admin: AdminClient, tmp_path: Path) -> None:
    """Nobody reads the topic while it is deleted and made again: the restored engines' checkpoints
    name the topic id they read, and the new one is read from its start."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=24, n_fills=400, seed=23)
    metrics = _replaced_while_down(kafka_bootstrap, names, kafka_admin, tmp_path, Feed.FILLS, records,
                                   len(records) // 2)
    replaced = _by_feed(metrics, "divmon_input_replaced_total")
    assert replaced[Feed.FILLS.value] == PARTITIONS and sum(replaced.values()) == PARTITIONS
    assert set(_by_feed(metrics, "divmon_input_truncated_total").values()) == {0.0}


def test_a_worker_reads_a_shared_topic_made_again_from_its_start(
        kafka_bootstrap: str, kafka_topics: object, kafka_admin: AdminClient, tmp_path: Path) -> None:
    """The marks topic (read whole by every worker, outside the group) deleted and made again under
    a running worker: the worker stops reading it once it is gone, and reads the new one from its
    start, for every partition engine."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=24, n_fills=400, seed=29)
    # cut after the 15th mark: the new marks topic gets the other 76, more than the old one's end
    # offset, so that a reader going on from that offset reads (and skips) records of the new one
    half = [i for i, r in enumerate(records) if r.feed is Feed.MARKS][15]
    want = expected(records)
    produce(kafka_bootstrap, names, records[:half])
    log, port = tmp_path / "worker.log", free_port()
    proc = start_worker(kafka_bootstrap, names, log, ["--metrics-port", str(port)],
                        env_extra={"DIVMON_IDLE_MS": "1000"})
    marks = names.inputs[Feed.MARKS]
    try:
        wait_for(lambda: "warm: partitions [0, 1, 2, 3]" in log.read_text(), 120, "the worker warm")
        ends = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: committed(kafka_bootstrap, names) == ends, 90, "the first half committed")
        old_id = _delete(kafka_admin, marks)
        wait_for(lambda: f"input missing: {marks}[0] is gone" in log.read_text(), 60, "the worker to miss the marks")
        _make_again(kafka_admin, marks, old_id, partitions=1)
        produce(kafka_bootstrap, names, records[half:])
        wait_for_the_replay(kafka_bootstrap, names, proc, want, [log], WHOLE_TAPE)
        metrics = scrape(port)
        replaced = _by_feed(metrics, "divmon_input_replaced_total")
        assert replaced[Feed.MARKS.value] == PARTITIONS and sum(replaced.values()) == PARTITIONS  # one per engine
        assert metrics[("divmon_late_records_total", ())] == 0.0
        assert f"input replaced: {marks} is a new log" in log.read_text()
    finally:
        stop(proc)


def test_a_worker_restarted_reads_a_shared_topic_made_again_while_it_was_down(
        kafka_bootstrap: str, kafka_topics: object, kafka_admin: AdminClient, tmp_path: Path) -> None:
    """The restored engines' checkpoints name the marks topic id their cursors are offsets of: the
    new topic is read from its start, not from those cursors."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=24, n_fills=400, seed=31)
    half = [i for i, r in enumerate(records) if r.feed is Feed.MARKS][15]  # see the running case
    metrics = _replaced_while_down(kafka_bootstrap, names, kafka_admin, tmp_path, Feed.MARKS, records, half)
    replaced = _by_feed(metrics, "divmon_input_replaced_total")
    assert replaced[Feed.MARKS.value] == PARTITIONS and sum(replaced.values()) == PARTITIONS
    assert metrics[("divmon_late_records_total", ())] == 0.0
