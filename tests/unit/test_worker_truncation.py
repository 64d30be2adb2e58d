"""The worker driver's side of an account partition truncated (its log lost records from its end:
unclean leader election, a broker that lost acknowledged data), without a broker: how it is seen,
by the partition's end offset below what the worker read, or by records read again below the
offset whose fetch failed out of range, and that it is counted and logged once per truncation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from faust.types import TP

from streams.agents.runtime import Worker
from streams.core.engine import Engine
from streams.core.records import Feed
from streams.worker.partition import ACCOUNT_FEEDS, PartitionEngine
from tests.unit.test_worker_runtime import new_worker

READ_TO = 50


def _worker(tmp_path: Path) -> Worker:
    """A worker whose engines for partitions 0 and 1 have read every account input to READ_TO."""
    worker = new_worker(tmp_path)
    pipe = worker.pipeline
    for p in (0, 1):
        pipe.engines[p] = PartitionEngine(p, Engine(), {f.value: READ_TO for f in ACCOUNT_FEEDS}, pipe.logs, {},
                                          pipe.idle_ms, 0.0)
    return worker


def _truncated(worker: Worker, feed: Feed) -> float | None:
    return worker.registry.get_sample_value("divmon_input_truncated_total", {"env": worker.s.env, "feed": feed.value})


def test_a_partition_ending_below_what_was_read_is_counted_once_per_truncation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    worker = _worker(tmp_path)
    fills = TP(worker.topics[Feed.FILLS], 1)
    ends = {fills: READ_TO + 10}
    monkeypatch.setattr(worker, "_highwater", lambda tp: ends.get(tp, READ_TO))
    with caplog.at_level(logging.INFO, logger="divmon.worker"):
        worker._observe_state(0.0)
        assert _truncated(worker, Feed.FILLS) == 0  # ahead of what was read: as usual
        ends[fills] = 20
        worker._observe_state(1_000.0)
        worker._observe_state(2_000.0)  # still below: the same truncation
        assert _truncated(worker, Feed.FILLS) == 1
        assert f"input truncated: {fills.topic}[1] ends at offset 20, below offset {READ_TO}" in caplog.text
        ends[fills] = READ_TO - 1
        worker._observe_state(3_000.0)
        assert "input past its truncation" not in caplog.text
        ends[fills] = READ_TO
        worker._observe_state(4_000.0)
        assert f"input past its truncation: {fills.topic}[1] reached offset {READ_TO} again" in caplog.text
        ends[fills] = 5
        worker._observe_state(5_000.0)  # truncated again: a new truncation
    assert _truncated(worker, Feed.FILLS) == 2
    assert {f: _truncated(worker, f) for f in ACCOUNT_FEEDS if f is not Feed.FILLS} == dict.fromkeys(
        (f for f in ACCOUNT_FEEDS if f is not Feed.FILLS), 0)


def test_records_read_again_below_a_failed_offset_are_a_truncation_not_a_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """After a fetch out of range at the offset read to, the client reads from the earliest offset
    held. Retention moves that forward (a loss: `InputLoss`); records below what was read mean the
    log ends below it (truncated). Records of the failed fetch's predecessors still in flight (at
    or past what the lane has read) are neither."""
    worker = _worker(tmp_path)
    ep3 = worker.topics[Feed.EP3]
    monkeypatch.setattr(worker, "_highwater", lambda tp: 3)  # the end the fetch that read them again gave
    worker.pipeline.engines[0].lanes[Feed.EP3].next_offset = 40  # records 40..49 fetched, not handed over yet
    worker.loss.reset(ep3, 0, READ_TO)
    worker._check_reread(ep3, 0, 45)  # in flight: fetched before the failed fetch
    assert _truncated(worker, Feed.EP3) == 0
    with caplog.at_level(logging.ERROR, logger="divmon.worker"):
        worker._check_reread(ep3, 0, 0)  # read again from the start: the broker has nothing at 50
    assert _truncated(worker, Feed.EP3) == 1
    assert f"input truncated: {ep3}[0] ends at offset 3, below offset {READ_TO}" in caplog.text
    assert worker.loss.pending() == {}  # not also counted as records lost to retention later

    worker.loss.reset(ep3, 1, READ_TO)
    worker._check_reread(ep3, 1, READ_TO + 7)  # forward: retention deleted 50..56, counted as lost
    assert _truncated(worker, Feed.EP3) == 1
    lost = worker.loss.arrived(ep3, 1, READ_TO + 7)
    assert lost is not None and lost.records == 7
