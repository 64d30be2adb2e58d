"""The worker driver without a broker: what it tells Faust's fetch loop, around rebalances."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust.worker
import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.errors import CorruptRecordException
from aiokafka.record import _crc32c as crc32c
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.agents import app as app_mod
from streams.agents import consumer as consumer_mod
from streams.agents import runtime as runtime_mod
from streams.agents.app import create_app, rebalance_timeout_s, revoke_wait_s
from streams.agents.consumer import raw_records, take_raw
from streams.agents.runtime import (
    CHECKPOINT_SHARE,
    FETCH_FRESH_MS,
    GATE_BACKLOG,
    GC_THRESHOLDS,
    GLOBAL_FETCH_WAIT_MS,
    GLOBAL_HW_AGE_MS,
    LANE_MIN,
    Worker,
    checkpoint_interval,
    lane_limit,
)
from streams.config import Settings
from streams.core.records import Feed
from streams.sinks import MemorySink


@pytest.fixture(autouse=True)
def _topic_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """No broker here: every topic the worker asks about exists, with one id for good."""
    monkeypatch.setattr(runtime_mod, "topic_ids", lambda s, topics, timeout: dict.fromkeys(topics, "id-1"))


def new_worker(tmp_path: Path, **settings: Any) -> Worker:
    """A worker that is never started (no broker): its Faust app and consumer exist, unconnected."""
    return Worker(Settings.load({"data_dir": str(tmp_path), "web_port": 0, "metrics_port": 0, **settings},
                                environ={}), MemorySink())


def test_a_rebalance_is_not_held_by_the_commit_gates_backpressure(tmp_path: Path) -> None:
    """The gate's backpressure holds the whole fetch loop, and table recovery reads the changelogs
    through that loop. A worker whose gate was behind at its last warm tick (a loaded machine) kept
    the loop held through the rebalance: recovery never ended, so it stayed warming for good and
    never fed the partitions it took over. While warming the loop must be free to fetch."""

    async def run() -> None:
        worker = new_worker(tmp_path)
        worker.router.set_gate_full(True)  # the last warm tick: more than 4 checkpoints waiting
        worker.app.rebalancing = True  # Faust: on_rebalance_start, then the revoke callbacks
        await worker._on_revoked(worker.app, set())
        assert worker._tick(1_000.0) is False  # warming: recovery under way, nothing fed
        await asyncio.wait_for(worker.router.wait_capacity(), 1.0)

    asyncio.run(run())


def test_faust_pauses_and_resumes_partitions_while_lanes_are_held_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust pauses and resumes partitions (rebalance, recovery) by editing the set that
    `_get_active_partitions` returns. Leaving the held-back partitions (lanes far ahead of their
    watermark) out of fetches must not hand Faust a copy of that set, where its edits are lost: a
    partition resumed while another was held back stayed paused for good, and one paused then went
    on being fetched."""
    asked: list[set[TP]] = []
    ep3, risk, fills = TP("ep3", 0), TP("risk", 0), TP("fills", 0)

    async def getmany(self: Any, active_partitions: set[TP], timeout: float) -> dict[TP, list[Any]]:
        asked.append(set(active_partitions))
        return {}

    monkeypatch.setattr(faust_aiokafka.Consumer, "_getmany", getmany)

    async def run() -> None:
        worker = new_worker(tmp_path)
        consumer: Any = worker.app.consumer
        consumer._set_active_tps({ep3, risk, fills})  # Faust, on assignment
        consumer.pause_partitions({ep3})  # Faust, during the rebalance
        worker.router.ahead = {fills}  # the fills lane runs far ahead
        await consumer._wait_next_records(0.0)
        consumer.resume_partitions({ep3})  # Faust, recovery done
        await consumer._wait_next_records(0.0)
        consumer.pause_partitions({risk})
        await consumer._wait_next_records(0.0)
        worker.router.ahead = set()
        await consumer._wait_next_records(0.0)

    asyncio.run(run())
    assert asked == [{risk}, {ep3, risk}, {ep3}, {ep3, fills}]


class SlowGate:
    """A commit gate that stores one checkpoint per `cycle_s`: slower than the checkpoint interval."""

    def __init__(self, cycle_s: float) -> None:
        self.cycle_s = cycle_s
        self.backlog = 0
        self.submitted = 0
        self._busy_until = 0.0

    def submit(self, _cp: object) -> None:
        self.backlog += 1
        self.submitted += 1

    def advance(self, now: float) -> None:
        while self.backlog and now >= self._busy_until:
            self._busy_until = max(self._busy_until, now) + self.cycle_s
            self.backlog -= 1


def test_a_gate_slower_than_the_checkpoint_interval_does_not_hold_fetching_for_good(tmp_path: Path) -> None:
    """Backpressure holds fetching once more than GATE_BACKLOG checkpoints wait. Cut on every
    interval regardless, checkpoints from a gate slower than the interval (a slow sink) kept the
    backlog above that, and fetching never resumed. Now none is cut while fetching is held, which
    lasts until the gate has stored them all: the backlog stays bounded, fetching resumes, and the
    gate stores a checkpoint per cycle, as many as it can."""
    worker = new_worker(tmp_path)
    interval = worker.s.checkpoint_ms / 1000
    gate = SlowGate(cycle_s=3 * interval)
    worker.gate = gate  # type: ignore[assignment]
    fetching = []
    now = 0.0
    ticks = 1_000  # of a tenth of the interval: 100 intervals, 33 gate cycles
    for _ in range(ticks):
        now += interval / 10
        gate.advance(now)
        worker._maybe_checkpoint(now)
        assert gate.backlog <= GATE_BACKLOG + 1
        fetching.append(not worker.router.gate_full)
    releases = sum(1 for before, after in itertools.pairwise(fetching) if not before and after)
    assert releases >= 3  # held, released, held again...: never held for good
    assert gate.submitted >= ticks / 10 / 3 - GATE_BACKLOG  # about a checkpoint per gate cycle


@pytest.mark.parametrize("session_ms", [1_000, 6_000, 20_000, 30_000, 120_000])
def test_a_revoke_waits_for_the_gate_well_inside_the_rebalance_timeout(tmp_path: Path, session_ms: int) -> None:
    """A revoke waits for the commit gate, then flushes and commits. Waiting as long as the group
    waits for members to rejoin (a fixed 10 s did, with a 6 s session timeout) risks missing the
    rebalance, which starts another one. It waits half the timeout at most, and never over 10 s."""
    s = Settings.load({"data_dir": str(tmp_path), "session_timeout_ms": session_ms}, environ={})
    timeout = create_app(s).conf.broker_rebalance_timeout
    timeout_s = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
    assert timeout_s == rebalance_timeout_s(s) >= session_ms / 1000
    assert revoke_wait_s(s) <= min(10.0, timeout_s / 2)


def test_the_worker_process_runs_with_its_gc_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Worker.run` (the worker process) sets the cyclic GC's thresholds before Faust starts: a young
    collection every 700 allocations promoted nearly every record in flight and paid full collections
    for them (~10 µs per record). Only the thresholds change: the GC stays on."""
    seen: list[tuple[tuple[int, ...], bool]] = []

    class FaustWorker:
        def __init__(self, app: Any, **_: Any) -> None:
            pass

        def execute_from_commandline(self) -> None:
            seen.append((gc.get_threshold(), gc.isenabled()))

    monkeypatch.setattr(faust.worker, "Worker", FaustWorker)
    before = gc.get_threshold()
    try:
        new_worker(tmp_path).run()
    finally:
        gc.set_threshold(*before)
    assert seen == [(GC_THRESHOLDS, True)]


def _fetched(topic: str, rows: list[tuple[int, int, bytes | None, bytes | None]], start: int = 0,
             deserializer: Any = None) -> list[Any]:
    """What aiokafka's fetcher yields for one fetched batch of `topic` (real record-batch bytes)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for offset, ts, key, value in rows:
        builder.append(offset, timestamp=ts, key=key, value=value, headers=[("h", b"1")])
    records = MemoryRecords(bytes(builder.build()))
    return list(PartitionRecords(TopicPartition(topic, 3), records, [], start, deserializer, deserializer, True, 0))


def test_the_worker_consumer_fetch_waits_at_the_broker_briefly(tmp_path: Path) -> None:
    """aiokafka keeps one fetch in flight per broker, for the partitions with nothing buffered when it
    was sent; Faust lets it wait 1.5 s for data. One sent for inputs read to their end then kept the
    input holding event time back from being fetched that long (fetching and applying stopped for
    ~0.5 s several times a 1.5M-record bench run). The worker's consumer waits FETCH_WAIT_MS at most:
    this fails if Faust stops making its consumer where the worker's override is (its pin moved)."""

    async def run() -> None:
        worker = new_worker(tmp_path)
        thread = worker.app.consumer._thread
        assert isinstance(thread, consumer_mod.BatchConsumerThread)
        made = thread._create_worker_consumer(worker.app.transport)
        try:
            assert made._fetch_max_wait_ms == consumer_mod.FETCH_WAIT_MS <= 100
            assert made._fetcher is None  # not started: its fetcher is made, with this wait, on start
        finally:
            await made.stop()

    asyncio.run(run())


class _Resetting:
    """aiokafka's state of a partition whose offset is being reset: no position (aiokafka 0.14's
    `position` asserts there is one)."""

    has_valid_position = False

    @property
    def position(self) -> int:
        raise AssertionError("no position")


def test_faust_livelock_check_skips_a_partition_whose_offset_is_being_reset(tmp_path: Path) -> None:
    """Faust's livelock detector reads every partition's position; while aiokafka resets one (a read
    out of range on a truncated log) it has none, aiokafka asserts, and the consumer crashed, taking
    the worker down. The worker's consumer thread skips such a partition (there is nothing to check)."""
    worker = new_worker(tmp_path)
    thread = worker.app.consumer._thread
    thread.time_started = time.monotonic()  # (what Faust's check reads before the position)
    states = {TopicPartition("fills", 2): _Resetting()}
    assignment = SimpleNamespace(state_value=states.get)
    thread._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=SimpleNamespace(
        subscription=SimpleNamespace(assignment=assignment))))
    assert thread.verify_event_path(time.monotonic(), TP("fills", 2)) is None
    thread._consumer = None  # not started: nothing to check either
    assert thread.verify_event_path(time.monotonic(), TP("fills", 2)) is None


def test_the_fetcher_hands_input_records_over_raw_and_others_as_aiokafka_records(tmp_path: Path) -> None:
    """The worker's consumer makes aiokafka yield `(offset, timestamp, key, value)` for its input
    topics, exactly the fields of the record aiokafka would have built (and skips what aiokafka
    skips: records below the fetch position); a changelog or any other topic, and a consumer with
    deserializers, still get aiokafka's `ConsumerRecord`s."""
    rows = [(0, 1_780_000_000_000, b"A1", b"\x01\x02"), (1, 1_780_000_000_005, None, b""), (2, 7, b"B", None)]
    other = "divmon-test-changelog"
    before = _fetched("divmon-test-input", rows, start=1)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in before] == rows[1:]
    worker = new_worker(tmp_path)
    inputs = worker.router.topics
    assert worker.app.consumer.batch_sink is worker.router
    assert not {"divmon-test-input", other} & inputs
    raw_records(frozenset({"divmon-test-input"}))
    try:
        assert _fetched("divmon-test-input", rows, start=1) == rows[1:]
        for topic in inputs:
            assert _fetched(topic, rows) == rows
        assert _fetched(other, rows) == _fetched(other, rows) and all(
            isinstance(r, ConsumerRecord) for r in _fetched(other, rows))
        assert all(isinstance(r, ConsumerRecord) for r in _fetched("divmon-test-input", rows, deserializer=lambda b: b))
    finally:
        consumer_mod._RAW_TOPICS.discard("divmon-test-input")


def _batch(rows: list[tuple[int, int, bytes | None, bytes | None]], *, control: bool = False) -> bytes:
    """One v2 record batch (a control batch: attribute bit 5 set, CRC-32C recomputed)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=int(control), producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for offset, ts, key, value in rows:
        builder.append(offset, timestamp=ts, key=key, value=value, headers=[])
    data = bytearray(builder.build())
    if control:
        data[22] |= 0x20  # attributes: bytes 21-22 (big-endian); the CRC covers byte 21 to the end
        data[17:21] = crc32c.crc(bytes(data[21:])).to_bytes(4, "big")
    return bytes(data)


@st.composite
def _fetches(draw: st.DrawFn) -> tuple[bytes, int, list[int]]:
    """Fetched bytes (batches of records with offset gaps, some control batches), a fetch offset
    inside the first batch, and the max_records of each call."""
    batches, offset = [], draw(st.integers(0, 1_000))
    first = offset
    for _ in range(draw(st.integers(1, 6))):
        rows = []
        for _ in range(draw(st.integers(1, 8))):
            rows.append((offset, 1_780_000_000_000 + offset, draw(st.none() | st.binary(max_size=4)),
                         draw(st.none() | st.binary(max_size=6))))
            offset += draw(st.integers(1, 3))  # gaps: compacted away
        batches.append(_batch(rows, control=draw(st.booleans()) and len(batches) > 0))
    start = draw(st.integers(first, first + 3))
    return b"".join(batches), start, draw(st.lists(st.none() | st.integers(1, 10), min_size=1, max_size=8))


@settings(max_examples=300, deadline=None)
@given(fetch=_fetches())
def test_raw_records_are_taken_a_batch_at_a_time_as_aiokafka_yields_them(fetch: tuple[bytes, int, list[int]]) -> None:
    """`take_raw` (the input topics' fetch path) hands over exactly what aiokafka's per-record
    generator yields, as raw tuples, in the same portions for any `max_records`, and leaves the same
    fetch position: records below the fetch offset and control batches skipped, offset gaps kept."""
    data, start, limits = fetch
    tp = TopicPartition("divmon-test-input", 0)
    reference = PartitionRecords(tp, MemoryRecords(data), [], start, None, None, True, 0)
    records = PartitionRecords(tp, MemoryRecords(data), [], start, None, None, True, 0)
    done = False
    for limit in itertools.chain(limits, itertools.repeat(None, 1)):
        if done:
            break
        want = [(r.offset, r.timestamp, r.key, r.value) for r in itertools.islice(reference, limit)]
        got, done = take_raw(records, limit)
        assert got == want
        if got:
            assert records.next_fetch_offset >= got[-1][0] + 1
    assert done
    if reference._records_iterator is not None:  # paused after its last record: nothing more, but resumed
        assert list(reference) == []  # it moves its position past the batch, as take_raw did
    assert records.next_fetch_offset == reference.next_fetch_offset


def test_a_corrupt_batch_is_refused_as_aiokafka_refuses_it() -> None:
    """A record batch whose CRC doesn't match raises aiokafka's CorruptRecordException (it is fetched again)."""
    data = bytearray(_batch([(0, 1, b"k", b"v")]))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        take_raw(PartitionRecords(TopicPartition("t", 0), MemoryRecords(bytes(data)), [], 0, None, None, True, 0), None)


class _Writer:
    """A `ChangelogWriter` stand-in: records rows, acknowledges them at flush like the real one."""

    topic = "divmon-test-state-changelog"

    def __init__(self) -> None:
        self.rows: list[tuple[int, bytes, bytes]] = []
        self.flushed = 0

    def write(self, partition: int, rows: Any) -> None:
        self.rows.extend((partition, k, v) for k, v in rows)

    def deliver(self) -> dict[int, int]:
        self.flushed = len(self.rows)
        acked: dict[int, int] = {}
        for offset, (partition, _, _) in enumerate(self.rows):
            acked[partition] = offset
        return acked


def test_state_rows_go_to_the_store_and_the_writer_and_offsets_persist_only_for_owned_partitions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`TableStore.write` with a writer: the rows are in the local store at once, in the writer (the
    changelog), and its receipt completes only after the writer has delivered them; the acknowledged offsets
    become the store's persisted ones for the partitions this worker still owns, never for one it
    lost meanwhile (a later owner would trust that offset and skip rows its store lacks)."""
    worker = new_worker(tmp_path)
    store = worker.store
    writer = _Writer()
    store.writer = writer  # type: ignore[assignment]
    persisted: dict[TP, int] = {}
    data = worker.table.data
    monkeypatch.setattr(data, "set_persisted_offset", persisted.__setitem__)
    ep3 = worker.topics[Feed.EP3]
    monkeypatch.setattr(worker.app.consumer, "assignment", lambda: {TP(ep3, 0), TP(ep3, 2), TP("other", 1)})

    async def run() -> None:
        receipts = [*store.write(0, {"A1": b'{"p":0}', "A2": b'{"p":0,"x":1}'}),
                    *store.write(1, {"B1": b'{"p":1}'}), *store.write(2, {})]
        assert writer.flushed == 0 and persisted == {}
        await asyncio.gather(*receipts)

    asyncio.run(run())
    assert writer.rows == [(0, b"A1", b'{"p":0}'), (0, b"A2", b'{"p":0,"x":1}'), (1, b"B1", b'{"p":1}')]
    assert writer.flushed == 3
    assert persisted == {TP(writer.topic, 0): 1}  # partition 1 was not ours any more
    for key, value in ((b"A1", b'{"p":0}'), (b"B1", b'{"p":1}')):
        assert data[key] == value


@pytest.mark.parametrize(("cost_s", "want_s"), [(0.0, 0.5), (0.01, 0.5), (0.025, 0.5), (0.05, 1.0), (0.2, 4.0),
                                                (0.45, 9.0), (0.5, 10.0), (5.0, 10.0)])
def test_the_checkpoint_interval_stretches_so_checkpoints_take_a_twentieth_of_the_time(cost_s: float,
                                                                                      want_s: float) -> None:
    """Cheap checkpoints keep `checkpoint_ms`; a costly one (a row per touched account: many accounts)
    stretches the next interval to twenty times its cost, up to `checkpoint_max_ms`."""
    assert checkpoint_interval(cost_s, 500, 10_000) == pytest.approx(want_s)
    assert CHECKPOINT_SHARE == 0.05


def test_a_checkpoint_max_below_the_interval_never_stretches_it() -> None:
    assert checkpoint_interval(3.0, 500, 100) == checkpoint_interval(3.0, 500, 500) == 0.5


class FakeClock:
    """A stage clock where cutting a checkpoint costs `cut_s` and writing state `state_s` of CPU."""

    def __init__(self, cut_s: float, state_s: float = 0.0) -> None:
        self.cost = {"checkpoint": cut_s, "state": state_s}
        self.laps: list[str] = []

    def start(self) -> float:
        return 100.0

    def lap(self, stage: str, since: float) -> float:
        self.laps.append(stage)
        return since + self.cost[stage]


def test_a_costly_checkpoint_defers_the_next_one_while_records_keep_coming(tmp_path: Path) -> None:
    """The worker cuts the next checkpoint once the stretched interval has passed, not before, counts
    the state writes of the checkpoints stored meanwhile in the cost, and reports the interval
    (divmon_checkpoint_interval_seconds)."""
    worker = new_worker(tmp_path)
    gate = SlowGate(cycle_s=0.0)
    worker.gate = gate  # type: ignore[assignment]
    worker.clock = FakeClock(cut_s=0.075, state_s=0.025)  # type: ignore[assignment]

    def at(now: float) -> int:
        worker._last_busy = now  # a tick has just taken records
        worker._maybe_checkpoint(now)
        return gate.submitted

    assert at(1.0) == 1  # the first: due at once
    assert worker.registry.get_sample_value("divmon_checkpoint_interval_seconds", {"env": "demo"}) == pytest.approx(1.5)
    assert [at(now) for now in (1.6, 2.0, 2.49)] == [1, 1, 1]  # 0.5 s (checkpoint_ms) passed, 1.5 s not yet
    worker._write_state(worker.pipeline.checkpoint())
    worker._write_state(worker.pipeline.checkpoint())  # the gate stores two meanwhile: 0.05 s of CPU
    assert at(2.51) == 2
    assert worker.registry.get_sample_value("divmon_checkpoint_interval_seconds", {"env": "demo"}) == pytest.approx(2.5)
    assert at(5.0) == 2
    assert at(5.02) == 3
    # nothing stored since: back to the cut's own cost
    assert worker.registry.get_sample_value("divmon_checkpoint_interval_seconds", {"env": "demo"}) == pytest.approx(1.5)


def test_once_the_inputs_are_drained_checkpoints_come_at_the_usual_cadence(tmp_path: Path) -> None:
    """A stretched interval applies while records keep coming. Once none came for `checkpoint_ms`, the
    next checkpoint is due then: the last events reach the sink, and their offsets are committed,
    without waiting out an interval sized for the load that just ended."""
    worker = new_worker(tmp_path)
    gate = SlowGate(cycle_s=0.0)
    worker.gate = gate  # type: ignore[assignment]
    worker.clock = FakeClock(cut_s=0.25)  # type: ignore[assignment]
    worker._last_busy = 1.0
    worker._maybe_checkpoint(1.0)
    assert gate.submitted == 1  # the next is due at 6.0 while records come
    worker._maybe_checkpoint(1.4)  # the last records were taken at 1.0
    assert gate.submitted == 1
    worker._maybe_checkpoint(1.5)
    assert gate.submitted == 2


def test_a_backlog_being_worked_off_keeps_the_stretched_interval(tmp_path: Path) -> None:
    """Records fetched long ago but still being applied (ticks apply at most TICK_RECORDS) are load
    like records coming: the interval stays stretched until the backlog is gone."""
    worker = new_worker(tmp_path)
    gate = SlowGate(cycle_s=0.0)
    worker.gate = gate  # type: ignore[assignment]
    worker.clock = FakeClock(cut_s=1.0)  # type: ignore[assignment]
    worker._last_busy = 1.0  # the last records were taken at 1.0
    worker._maybe_checkpoint(1.0)
    assert gate.submitted == 1  # stretched to 10 s
    worker.pipeline.backlog = True
    assert [worker._maybe_checkpoint(now) or gate.submitted for now in (1.5, 5.0, 9.0)] == [1, 1, 1]
    worker.pipeline.backlog = False  # worked off at 9.0
    worker._maybe_checkpoint(9.4)
    assert gate.submitted == 1
    worker._maybe_checkpoint(9.5)  # drained for checkpoint_ms: the usual cadence
    assert gate.submitted == 2


@pytest.mark.parametrize("held", [Settings().held_records, 100_000, 1_000_000])
@pytest.mark.parametrize("engines", [1, 4, 12, 20, 100])
def test_a_worker_holds_at_most_held_records_whatever_its_partition_count(engines: int, held: int) -> None:
    """Lanes far ahead of the watermark stop being fetched at an equal share of one worker-wide
    bound (`held_records`), so a worker with more partitions does not hold more decoded records (only
    the floor, LANE_MIN a lane, can take it over the bound)."""
    lanes = engines * 4
    limit = lane_limit(engines, held)
    assert limit >= LANE_MIN
    if limit > LANE_MIN:  # the share: as much of the bound as equal lanes can have, no more
        assert limit * lanes <= held < (limit + 1) * lanes
    else:
        assert (LANE_MIN + 1) * lanes > held  # the floor only where the share would be below it


@pytest.mark.parametrize(("held", "ahead"), [(None, False), (40_000, True)])
def test_the_held_records_setting_bounds_what_a_worker_fetches_ahead(tmp_path: Path, held: int | None,
                                                                      ahead: bool) -> None:
    """A lane holding more than its share of `held_records` leaves its partition out of fetches:
    10,001 records waiting in one lane of one engine are within the default bound's share (100k)
    and over the share of 40,000 (10k)."""
    worker = new_worker(tmp_path, **({} if held is None else {"held_records": held}))
    pe = worker.pipeline.engine(0, 0.0)
    pe.lanes[Feed.FILLS].push([(1_000 + i, Feed.FILLS, None, i) for i in range(10_001)], 10_001, 0.0)
    assert worker._ahead() == ({TP(worker.topics[Feed.FILLS], 0)} if ahead else set())


@pytest.mark.parametrize(("hw", "age_ms", "caught_up"), [
    (3, 500, True),  # reported on half a second ago: nothing more than what the lane has
    (5, 500, False),  # the broker holds two records the lane has not had
    (3, 10_000, False),  # the last response is 10 s old (a starved consumer thread): not trusted
    (3, None, False),  # no response yet
    (None, 500, False),  # no high watermark yet
])
def test_an_account_input_is_caught_up_only_on_a_recent_fetch_response(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hw: int | None, age_ms: int | None, caught_up: bool) -> None:
    """A lane counts as caught up (so may go idle and stop holding event time) only when the broker
    has nothing more for it as of a fetch response received in the last FETCH_FRESH_MS."""
    worker = new_worker(tmp_path)
    pe = worker.pipeline.engine(0, 0.0)
    pe.lanes[Feed.FILLS].push([(1_000 + i, Feed.FILLS, None, i) for i in range(3)], 3, 0.0)
    consumer = worker.app.consumer
    monkeypatch.setattr(consumer, "highwater", lambda tp: hw)
    monkeypatch.setattr(consumer, "fetched_at",
                        lambda tp: None if age_ms is None else time.time() * 1000 - age_ms)
    worker.reader = SimpleNamespace(highwater=lambda topic, partition: None)  # type: ignore[assignment]
    worker._mark_caught_up(50_000.0)  # the loop's (monotonic) clock, not the wall clock
    lane = pe.lanes[Feed.FILLS]
    assert lane.caught_up is caught_up
    assert FETCH_FRESH_MS < 10_000
    if age_ms is not None:  # and as of when: that response, on the loop's clock
        assert abs(lane.fresh_at - (50_000.0 - age_ms)) < 1_000


@pytest.mark.parametrize(("skew_ms", "watermark"), [(1_000, 1_000), (200, 1_500)])
def test_an_idle_input_holds_event_time_at_what_arrived_skew_ms_before_its_last_response(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew_ms: int, watermark: int) -> None:
    """The `skew_ms` setting and the fetch responses' times reach the partition engines: the fills
    lane, idle and caught up as of a response 100 ms ago, lets event time pass only what had arrived
    `skew_ms` before that response. The EP3 lane's 1,500 arrived 1 s ago, its 1,600 just now (the
    live EP3 lane itself holds event time at 1,600)."""
    worker = new_worker(tmp_path, skew_ms=skew_ms, idle_ms=2_000)
    pe = worker.pipeline.engine(0, 0.0)
    pe.lanes[Feed.FILLS].push([(1_000, Feed.FILLS, None, 0)], 1, 0.0)
    pe.lanes[Feed.EP3].push([(1_500, Feed.EP3, None, 0)], 1, 9_000.0)
    pe.aligner.watermark(9_000.0)  # the worker's tick after the records arrive
    pe.lanes[Feed.EP3].push([(1_600, Feed.EP3, None, 1)], 2, 10_000.0)
    for feed in (Feed.RISK, Feed.OG_MARGIN):  # never delivered: skipped once idle, as before
        pe.lanes[feed].push([], 0, 0.0)
    consumer = worker.app.consumer
    monkeypatch.setattr(consumer, "highwater", lambda tp: 2 if tp.topic == worker.topics[Feed.EP3] else
                        (1 if tp.topic == worker.topics[Feed.FILLS] else 0))
    monkeypatch.setattr(consumer, "fetched_at", lambda tp: time.time() * 1000 - 100)
    worker.reader = SimpleNamespace(highwater=lambda topic, partition: None)  # type: ignore[assignment]
    worker._mark_caught_up(10_000.0)
    assert pe.aligner.skew_ms == skew_ms
    assert pe.aligner.watermark(10_000.0) == watermark


def test_a_shared_inputs_cached_high_watermark_counts_as_global_hw_age_ms_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka does not say when it last fetched a shared (marks, instruments) partition: it
    long-polls every GLOBAL_FETCH_WAIT_MS, and its cached high watermark counts as GLOBAL_HW_AGE_MS
    old, on the loop's clock. Caught up when the log holds everything below it."""
    worker = new_worker(tmp_path)
    worker.pipeline.engine(0, 0.0)
    log = worker.pipeline.declare(worker.topics[Feed.MARKS], 0, 0.0)
    log.append([(1_000, Feed.MARKS, None, 0)], 1, 0.0)
    monkeypatch.setattr(worker.app.consumer, "highwater", lambda tp: None)
    monkeypatch.setattr(worker.app.consumer, "fetched_at", lambda tp: None)
    for hw, caught_up in ((1, True), (2, False), (None, False)):
        worker.reader = SimpleNamespace(highwater=lambda topic, partition, hw=hw: hw,  # type: ignore[assignment]
                                        assigned=set())
        worker._mark_caught_up(50_000.0)
        assert log.caught_up is caught_up and log.fresh_at == 50_000.0 - GLOBAL_HW_AGE_MS
    assert GLOBAL_FETCH_WAIT_MS < GLOBAL_HW_AGE_MS


def test_a_broker_that_does_not_answer_the_shared_topics_listing_is_asked_again_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The shared topics are listed every 10 s from the event loop. During a broker outage the
    listing raised, and the worker crashed (found by the broker-outage test): now it logs, asks
    again 5 s later, and reads on once the broker answers."""
    from confluent_kafka import KafkaError, KafkaException

    worker = new_worker(tmp_path, topic_marks="m", topic_instruments="i")
    answers: list[Any] = [KafkaException(KafkaError(KafkaError._TRANSPORT)), [("m", 0), ("i", 0)]]
    assigned: set[tuple[str, int]] = set()

    def refresh(start_at: Any, timeout: float, only: Any = None) -> list[tuple[str, int]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assigned.update(answer)
        return list(answer)

    worker.reader = SimpleNamespace(refresh=refresh, assigned=assigned, topics=["m", "i"],  # type: ignore[assignment]
                                    poll=dict, rewind=None)
    worker._read_globals(1_000.0)
    assert "shared topics not listed" in caplog.text and worker.pipeline.logs == {}
    worker._read_globals(3_000.0)  # not yet asked again
    assert len(answers) == 1
    worker._read_globals(6_000.0)
    assert set(worker.pipeline.logs) == {"marks/0", "instruments/0"} and answers == []
    assert worker._next_refresh == 16_000.0  # both topics found: next look in 10 s


def _engine_at(worker: Worker, partition: int, cursors: dict[str, int]) -> None:
    """An engine of `partition`, restored with these shared-log cursors."""
    from streams.core.engine import Engine
    from streams.worker.partition import PartitionEngine

    pipe = worker.pipeline
    pipe.engines[partition] = PartitionEngine(partition, Engine(), {}, pipe.logs, cursors, pipe.idle_ms, 0.0)


@pytest.mark.parametrize(("earliest", "lost"), [(80, 30), (50, 0), (40, 0)])
def test_a_restored_cursor_below_the_earliest_offset_is_counted_when_a_new_engine_reads_from_the_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, earliest: int, lost: int) -> None:
    """A restored engine (marks cursor 50) beside one with no cursor: the shared log is read from the
    beginning, i.e. from the earliest offset the broker holds. Records between the cursor and it
    were deleted before the restored engine read them: they are lost, and counted, though no read
    fails. Only there: a cursor at or above the earliest offset loses nothing."""
    worker = new_worker(tmp_path, topic_marks="m", topic_instruments="i")
    _engine_at(worker, 0, {"marks/0": 50})
    _engine_at(worker, 1, {})
    asked: list[tuple[str, int]] = []

    def earliest_of(topic: str, partition: int, timeout: float) -> int:
        asked.append((topic, partition))
        return earliest

    starts: dict[tuple[str, int], int] = {}

    def refresh(start_at: Any, timeout: float, only: Any = None) -> list[tuple[str, int]]:
        starts.update({("m", 0): start_at("m", 0), ("i", 0): start_at("i", 0)})
        return [("m", 0), ("i", 0)]

    worker.reader = SimpleNamespace(refresh=refresh, assigned={("m", 0), ("i", 0)}, topics=["m", "i"],  # type: ignore[assignment]
                                    poll=dict, rewind=None, earliest=earliest_of)
    worker._read_globals(1_000.0)
    assert starts == {("m", 0): 0, ("i", 0): 0}  # from the beginning: engine 1 has no cursor
    assert asked == [("m", 0)]  # instruments: no engine restored a cursor, nothing to check
    assert worker.metrics.m.input_lost.labels(feed="marks")._value.get() == lost
    assert ("offsets 50 to 79 (30 records)" in caplog.text) is bool(lost)


def test_a_new_engine_re_reading_a_shared_log_from_the_start_counts_what_a_restored_one_skips(
        tmp_path: Path) -> None:
    """The same when the log is already read from a restored cursor and an engine with none comes
    (a partition that never had a checkpoint): re-read from the beginning, and checked."""
    worker = new_worker(tmp_path, topic_marks="m", topic_instruments="i")
    _engine_at(worker, 0, {"marks/0": 200})
    rewound: list[tuple[str, int, int]] = []
    worker.reader = SimpleNamespace(refresh=lambda start_at, timeout, only=None: [("m", 0)], assigned={("m", 0)},  # type: ignore[assignment]
                                    topics=["m"], poll=dict, earliest=lambda t, p, timeout: 150,
                                    rewind=lambda t, p, o: rewound.append((t, p, o)))
    worker._read_globals(1_000.0)  # read from 200: every engine has a cursor, a failed read would say
    assert rewound == [] and worker.metrics.m.input_lost.labels(feed="marks")._value.get() == 0
    _engine_at(worker, 1, {})
    worker.pipeline.engines[1].add_global("marks/0", worker.pipeline.logs["marks/0"])
    _engine_at(worker, 2, {"marks/0": 120})  # restored in the same rebalance, behind the earliest offset
    worker.pipeline.engines[2].add_global("marks/0", worker.pipeline.logs["marks/0"])
    worker._read_globals(2_000.0)
    assert rewound == [("m", 0, 0)]
    assert worker.metrics.m.input_lost.labels(feed="marks")._value.get() == 30  # engine 2: 120 to 149


def _rebalancing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Worker, Any, set[TP], Any]:
    """A worker whose consumer has partition 0 of every account input, its app, those partitions, and
    `assign(generation)`: what aiokafka's listener, then Faust's signal, do on an assignment."""
    worker = new_worker(tmp_path)
    app: Any = worker.app
    tps = {TP(worker.topics[f], 0) for f in Feed if f not in (Feed.MARKS, Feed.INSTRUMENTS)}
    monkeypatch.setattr(app.consumer, "assignment", lambda: tps)

    async def assign(generation: int) -> None:
        app.consumer_generation_id = generation
        await worker._on_assigned(app, tps)

    return worker, app, tps, assign


def test_the_worker_warms_only_once_faust_has_ended_the_rebalance_of_its_assignment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's recovery of one assignment may end after the next rebalance has begun: its revoke
    set `rebalancing`, and the late recovery's end cleared it before the next assignment came (the
    generation still matched). Through the whole next recovery `rebalancing` then read False, and a
    worker that took that for warm restored the partitions it was given from a table not read from
    the changelog yet: it lacked what the committed offsets said was stored, and never read it."""

    async def run() -> None:
        worker, app, tps, assign = _rebalancing(tmp_path, monkeypatch)

        app.on_rebalance_start()  # generation 1: revoke (nothing held yet), assign, recover
        await worker._on_revoked(app, set())
        await assign(1)
        assert not worker._warm() and worker._tick(1_000.0) is False
        app.on_rebalance_end()
        assert worker._warm()

        app.on_rebalance_start()  # generation 2 begins: its revoke
        await worker._on_revoked(app, tps)
        assert not worker._warm()
        app.on_rebalance_end()  # generation 1's recovery ends late (the generation is still 1)
        assert not worker._warm() and worker._tick(1_050.0) is False
        await assign(2)  # generation 2's assignment: its recovery has not even started
        assert not app.rebalancing
        assert not worker._warm() and worker._tick(1_100.0) is False
        app.on_rebalance_end()  # generation 2's recovery ends
        assert worker._warm()

    asyncio.run(run())



def test_records_fetched_before_a_partition_is_sought_elsewhere_are_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust resumes the partitions before it seeks them: records fetched from the committed offset
    meanwhile wait in the hand-over. For a partition the worker moves (its state ends below the
    committed offset, or its log was replaced) they would pass for the records after the offset
    sought: dropped as it is sought; the other partitions' records are kept."""

    async def run() -> None:
        worker = new_worker(tmp_path)
        consumer: Any = worker.app.consumer
        fills, ep3 = TP(worker.topics[Feed.FILLS], 0), TP(worker.topics[Feed.EP3], 0)

        async def committed(self: Any) -> dict[TP, int]:
            return {fills: 80, ep3: 50}

        async def starts(offsets: Any) -> dict[TP, int]:
            return {fills: 50}

        sought: list[tuple[TP, int]] = []

        async def seek(tp: TP, offset: int) -> None:
            sought.append((tp, offset))

        monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", committed)
        monkeypatch.setattr(consumer, "seek", seek)
        consumer.starts = starts
        worker.router.deliver(fills, [(80, 1, None, b"x")])  # fetched from the committed offsets
        worker.router.deliver(ep3, [(50, 1, None, b"y")])
        assert await consumer.seek_to_committed() == {fills: 50, ep3: 50}
        assert sought == [(fills, 50)]
        assert worker.router.count == 1
        assert dict(worker.router.take()) == {ep3: [(50, 1, None, b"y")]}

    asyncio.run(run())


def test_a_rebalance_ending_while_the_next_assignment_comes_does_not_warm_the_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's recovery of generation 1 seeks the partitions before it ends the rebalance (a request
    to the brokers): generation 2's assignment may come meanwhile. The rebalance that ends is
    generation 1's, whatever the consumer's latest generation says by then: the worker stays
    warming until generation 2's own recovery ends."""

    async def run() -> None:
        worker, app, tps, assign = _rebalancing(tmp_path, monkeypatch)

        class Recovery:  # what Faust's does, in the order it does it
            async def on_recovery_completed(self, generation_id: int = 0) -> None:
                app.on_rebalance_start()  # while its partitions are sought: the next rebalance
                await worker._on_revoked(app, tps)
                await assign(generation_id + 1)
                app.on_rebalance_end()

            async def _resume_streams(self, generation_id: int = 0) -> None:
                app.on_rebalance_end()

        recovery = Recovery()
        app_mod.track_recoveries(app, recovery)
        app.on_rebalance_start()
        await worker._on_revoked(app, set())
        await assign(1)
        await recovery.on_recovery_completed(1)  # generation 2 assigned meanwhile
        assert app.settled_generation == 1 and app.consumer_generation_id == 2
        assert not worker._warm() and worker._tick(1_000.0) is False
        await recovery._resume_streams(generation_id=2)
        assert app.settled_generation == 2 and worker._warm()

    asyncio.run(run())
