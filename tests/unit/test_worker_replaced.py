"""The worker driver's side of an input topic deleted and made again, without a broker: which
partitions are missing, which lanes read a new log (a new topic id) and where the consumer must
then read from, the commits it leaves out, and the metadata requests that never create a topic."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import client as aiokafka_client
from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v5
from confluent_kafka import KafkaError, KafkaException
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.agents import runtime as runtime_mod
from streams.agents.consumer import no_topic_creation
from streams.agents.runtime import Worker
from streams.core.engine import Engine
from streams.core.records import Feed
from streams.worker.partition import ACCOUNT_FEEDS, PartitionEngine
from tests.unit.test_worker_runtime import new_worker

PARTITIONS = 4


def _value(worker: Worker, name: str, **labels: str) -> float | None:
    return worker.registry.get_sample_value(name, {"env": worker.s.env, **labels})


def _tps(worker: Worker, feeds: tuple[Feed, ...], partitions: range | list[int] = range(PARTITIONS)) -> set[TP]:
    return {TP(worker.topics[f], p) for f in feeds for p in partitions}


def _engines(worker: Worker) -> None:
    pipe = worker.pipeline
    for p in range(PARTITIONS):
        pipe.engines[p] = PartitionEngine(p, Engine(), {f.value: 50 for f in ACCOUNT_FEEDS}, pipe.logs, {},
                                          pipe.idle_ms, 0.0)


def test_an_input_missing_from_the_assignment_is_counted_logged_and_its_return_too(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker = new_worker(tmp_path)
    others = (Feed.EP3, Feed.RISK, Feed.OG_MARGIN)
    with caplog.at_level(logging.INFO, logger="divmon.worker"):
        worker._note_missing(_tps(worker, others) | _tps(worker, (Feed.FILLS,), [0]))
        assert _value(worker, "divmon_input_missing_partitions", feed="fills") == 3
        assert _value(worker, "divmon_input_missing_partitions", feed="ep3.positions") == 0
        assert f"input missing: {worker.topics[Feed.FILLS]} has no partition 1, 2, 3" in caplog.text
        worker._note_missing(_tps(worker, (*others, Feed.FILLS)))
    assert _value(worker, "divmon_input_missing_partitions", feed="fills") == 0
    assert f"input back: {worker.topics[Feed.FILLS]}" in caplog.text


def _ids(monkeypatch: pytest.MonkeyPatch, worker: Worker, **by_feed: str) -> None:
    ids = {worker.topics[f]: by_feed.get(f.name.lower(), f"id-{f.value}") for f in ACCOUNT_FEEDS}
    monkeypatch.setattr(runtime_mod, "topic_ids", lambda s, topics, timeout: {t: ids[t] for t in topics})


def test_lanes_of_a_topic_with_a_new_id_read_its_log_from_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The first ids asked are taken as the ones the engines read; a later assignment that finds
    the fills topic with another id rewinds the fills lanes and moves their partitions to offset 0
    (only those assigned now: the one assigned later is moved then)."""
    worker = new_worker(tmp_path)
    _engines(worker)
    fills = worker.topics[Feed.FILLS]
    everything = _tps(worker, ACCOUNT_FEEDS)
    committed = dict.fromkeys(everything, 50)
    _ids(monkeypatch, worker)
    assert asyncio.run(worker._starts(committed)) == {}
    assert {pe.lanes[Feed.FILLS].topic_id for pe in worker.pipeline.engines.values()} == {"id-fills"}

    _ids(monkeypatch, worker, fills="id-fills-2")
    now = dict.fromkeys(everything - {TP(fills, 3)}, 50)
    with caplog.at_level(logging.ERROR, logger="divmon.worker"):
        assert asyncio.run(worker._starts(now)) == {TP(fills, p): 0 for p in range(3)}
    for p, pe in worker.pipeline.engines.items():
        lane = pe.lanes[Feed.FILLS]
        assert (lane.epoch, lane.topic_id, lane.next_offset) == (1, "id-fills-2", 0)
        assert pe.lanes[Feed.EP3].next_offset == 50  # the other inputs read on
        assert f"input replaced: {fills}[{p}] is a new log (topic id id-fills-2, was id-fills" in caplog.text
    assert _value(worker, "divmon_input_replaced_total", feed="fills") == PARTITIONS
    # the partition assigned later is read from the start of the new log then, and rewound only once
    # (the others have committed offsets of the new log by then)
    later = {**committed, **{TP(fills, p): 0 for p in range(3)}}
    assert asyncio.run(worker._starts(later)) == {TP(fills, 3): 0}
    assert asyncio.run(worker._starts({**later, TP(fills, 3): 0})) == {}
    assert _value(worker, "divmon_input_replaced_total", feed="fills") == PARTITIONS


def test_without_topic_ids_every_partition_reads_from_its_committed_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    worker = new_worker(tmp_path)
    _engines(worker)

    def unavailable(*_: Any) -> dict[str, str | None]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    monkeypatch.setattr(runtime_mod, "topic_ids", unavailable)
    with caplog.at_level(logging.WARNING, logger="divmon.worker"):
        assert asyncio.run(worker._starts(dict.fromkeys(_tps(worker, ACCOUNT_FEEDS), 50))) == {}
    assert "input topic ids unknown" in caplog.text
    assert all(lane.epoch == 0 for pe in worker.pipeline.engines.values() for lane in pe.lanes.values())


def test_offsets_of_a_topic_the_cluster_no_longer_has_are_not_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka retries a commit refused with UNKNOWN_TOPIC_OR_PARTITION for as long as it is
    refused: a rebalance after a deletion waited on it for good. Those offsets are left out."""
    worker = new_worker(tmp_path)
    consumer: Any = worker.app.consumer
    fills, ep3 = worker.topics[Feed.FILLS], worker.topics[Feed.EP3]
    cluster = SimpleNamespace(partitions_for_topic=lambda t: None if t == fills else {0, 1})
    client = SimpleNamespace(_client=SimpleNamespace(cluster=cluster))
    consumer._thread = SimpleNamespace(_ensure_consumer=lambda: client)
    sent: list[dict[TP, int]] = []

    async def commit(self: Any, offsets: dict[TP, int]) -> bool:
        sent.append(dict(offsets))
        return True

    monkeypatch.setattr(faust_aiokafka.Consumer, "_commit", commit)
    assert asyncio.run(consumer._commit({TP(fills, 0): 7, TP(ep3, 0): 9})) is True
    assert asyncio.run(consumer._commit({TP(fills, 1): 3})) is True
    assert sent == [{TP(ep3, 0): 9}]


def test_metadata_requests_never_have_the_broker_create_a_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    # aiokafka's own (a worker run in this process may have replaced it already); restored after
    monkeypatch.setattr(aiokafka_client, "MetadataRequest", MetadataRequest)
    assert aiokafka_client.MetadataRequest(["t"]).build(MetadataRequest_v5).allow_auto_topic_creation is True
    no_topic_creation()
    request = aiokafka_client.MetadataRequest(["t"])  # as aiokafka's client builds it
    assert request.build(MetadataRequest_v5).allow_auto_topic_creation is False


def _shared(worker: Worker, monkeypatch: pytest.MonkeyPatch, marks_id: str) -> None:
    monkeypatch.setattr(runtime_mod, "topic_ids",
                        lambda s, topics, timeout: {t: (marks_id if t == worker.topics[Feed.MARKS] else "i-1")
                                                    for t in topics})


def test_a_shared_topic_with_a_new_id_is_read_again_from_its_start_by_every_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = new_worker(tmp_path)
    marks = worker.topics[Feed.MARKS]
    pipe = worker.pipeline
    glog = pipe.declare(marks, 0, 0.0, 30)
    glog.append([(1_000 + i, Feed.MARKS, None, 30 + i) for i in range(10)], 40, 0.0)
    for p in range(2):
        pipe.engines[p] = PartitionEngine(p, Engine(), {}, pipe.logs, {"marks/0": 40}, pipe.idle_ms, 0.0)
    rewound: list[tuple[str, int, int]] = []
    worker.reader = SimpleNamespace(assigned={(marks, 0)}, rewind=lambda t, p, o: rewound.append((t, p, o)))  # type: ignore[assignment]
    _shared(worker, monkeypatch, "m-1")
    worker._check_shared_logs(1_000.0)  # the first answer: the ids the engines read
    assert [pe.global_ids for pe in pipe.engines.values()] == [{"marks": "m-1", "instruments": "i-1"}] * 2
    assert rewound == [] and glog.next_offset == 40

    _shared(worker, monkeypatch, "m-2")
    worker._check_shared_logs(2_000.0)
    assert rewound == [(marks, 0, 0)] and (glog.start, glog.next_offset, glog.entries) == (0, 0, [])
    assert [pe.globals["marks/0"].offset for pe in pipe.engines.values()] == [0, 0]
    assert _value(worker, "divmon_input_replaced_total", feed="marks") == 2  # one per engine
    # an engine restored later, from a checkpoint cut before: its cursor is of the old topic
    late = PartitionEngine(5, Engine(), {}, pipe.logs, {"marks/0": 40}, pipe.idle_ms, 0.0,
                           global_ids={"marks": "m-1", "instruments": "i-1"})
    worker._check_shared_cursors(late)
    assert late.globals["marks/0"].offset == 0 and late.global_ids["marks"] == "m-2"
    assert _value(worker, "divmon_input_replaced_total", feed="marks") == 3


def test_a_shared_partition_gone_from_the_metadata_is_no_longer_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """librdkafka forgets the end offset of a deleted topic's partition (and would read a topic made
    again under the name from the old offset on): the worker stops reading it, looks for it every
    second, and its log holds event time meanwhile."""
    worker = new_worker(tmp_path)
    marks = worker.topics[Feed.MARKS]
    glog = worker.pipeline.declare(marks, 0, 0.0)
    forgotten: list[tuple[str, int]] = []
    assigned = {(marks, 0)}
    ends: list[int | None] = [5, None]

    def forget(topic: str, partition: int) -> None:
        forgotten.append((topic, partition))
        assigned.discard((topic, partition))

    worker.reader = SimpleNamespace(highwater=lambda t, p: ends[0], assigned=assigned,  # type: ignore[assignment]
                                    forget=forget)
    worker._next_refresh = 60_000.0
    with caplog.at_level(logging.ERROR, logger="divmon.worker"):
        worker._mark_caught_up(10_000.0)
        assert forgotten == []
        ends.pop(0)
        worker._mark_caught_up(11_000.0)
        worker._mark_caught_up(12_000.0)
    assert forgotten == [(marks, 0)] and glog.caught_up is False
    assert worker._next_refresh == 12_000.0
    assert f"input missing: {marks}[0] is gone" in caplog.text


def test_an_engine_restored_outside_a_recovery_seeks_a_replaced_input_to_its_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine restored at a tick (its partition had no committed offset, so the recovery's seek
    did not restore it) whose fills lane read another topic id than the current one: rewound, and
    its assigned partition read from offset 0."""
    worker = new_worker(tmp_path)
    pipe = worker.pipeline
    fills = worker.topics[Feed.FILLS]
    restored = PartitionEngine(2, Engine(), {f.value: 50 for f in ACCOUNT_FEEDS}, pipe.logs, {}, pipe.idle_ms,
                               0.0, topic_ids={Feed.FILLS.value: "old", Feed.EP3.value: "e-1"})

    def engine(partition: int, now: float) -> PartitionEngine:
        pipe.engines[partition] = restored
        return restored

    monkeypatch.setattr(pipe, "engine", engine)
    consumer: Any = worker.app.consumer
    sought: list[TP] = []
    monkeypatch.setattr(consumer, "assignment", lambda: _tps(worker, ACCOUNT_FEEDS))
    monkeypatch.setattr(consumer, "seek_start", sought.append)
    worker._topic_ids = {worker.topics[f]: ("new" if f is Feed.FILLS else "e-1") for f in ACCOUNT_FEEDS}
    assert worker._engine(2, 0.0) is restored
    assert sought == [TP(fills, 2)]
    assert (restored.lanes[Feed.FILLS].epoch, restored.lanes[Feed.FILLS].next_offset) == (1, 0)
    assert restored.lanes[Feed.EP3].next_offset == 50 and restored.lanes[Feed.RISK].topic_id == "e-1"
    worker._engine(2, 0.0)  # known now: not checked again
    assert sought == [TP(fills, 2)]


def test_a_worker_with_no_input_partition_says_why_it_waits(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """It never creates its input topics: started before them, it says so instead of waiting mute."""
    worker = new_worker(tmp_path)
    with caplog.at_level(logging.WARNING, logger="divmon.worker"):
        worker._note_missing({TP(f"divmon-{worker.s.group_id}-state-changelog", 0)})
    assert "no partition of the input topics" in caplog.text and worker.topics[Feed.FILLS] in caplog.text
    assert _value(worker, "divmon_input_missing_partitions", feed="fills") == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="divmon.worker"):
        worker._note_missing(_tps(worker, ACCOUNT_FEEDS))
    assert "no partition of the input topics" not in caplog.text


def _unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: Any) -> dict[str, str | None]:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))

    monkeypatch.setattr(runtime_mod, "topic_ids", unavailable)


@pytest.mark.parametrize("ids", [True, False])
def test_a_partition_whose_state_is_behind_its_committed_offset_is_read_from_where_the_state_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, ids: bool) -> None:
    """Committed offsets are never ahead of the stored state while the commit gate orders them, but
    a state read from a table whose recovery had not ended was behind them: read from the committed
    offset, the records in between were never applied. The worker reads from where its engine's
    state ends instead, and says so (topic ids known or not)."""
    worker = new_worker(tmp_path)
    _engines(worker)  # every lane holds what is below offset 50
    if ids:
        _ids(monkeypatch, worker)
    else:
        _unavailable(monkeypatch)
    fills = worker.topics[Feed.FILLS]
    committed = {**dict.fromkeys(_tps(worker, ACCOUNT_FEEDS), 50), TP(fills, 2): 80}
    with caplog.at_level(logging.WARNING, logger="divmon.worker"):
        assert asyncio.run(worker._starts(committed)) == {TP(fills, 2): 50}
    assert f"p2: its state holds {fills} only below offset 50, the committed offset is 80: read from 50" in caplog.text
    assert asyncio.run(worker._starts(dict.fromkeys(_tps(worker, ACCOUNT_FEEDS), 50))) == {}

