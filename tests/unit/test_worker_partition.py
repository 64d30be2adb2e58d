"""A partition engine's two ways of applying released records agree: the fast one (nothing to skip,
accounts touched in bulk) and the general one (accounts restored ahead of `meta` may skip records)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from streams.core.engine import Engine
from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    PositionQty,
    RiskPosition,
    RiskSnapshot,
)
from streams.tapes.model import TapeRecord
from streams.worker.globals import GlobalLog
from streams.worker.partition import PartitionEngine, meta_key
from streams.worker.pipeline import Pipeline
from streams.worker.synth import traffic
from tests.support.stores import DictStore
from tests.unit.test_worker_pipeline import PARTITIONS, new_pipeline, to_topics

# a non-empty skip map that skips nothing: forces the general path
NOBODY: dict[str, dict[str, int]] = {"\x00nobody": {}}


def general(pe: PartitionEngine) -> PartitionEngine:
    """Make `pe` take the general path however `skip` changes."""
    def apply_fresh(entries: list[Any], _runs: object) -> None:
        pe._apply(entries)

    pe._apply_fresh = apply_fresh  # type: ignore[method-assign,assignment]
    return pe


def dicts(events: list[Event]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events]


def test_fast_and_general_apply_agree_on_events_touched_accounts_and_checkpoints() -> None:
    """The same synth traffic through two pipelines, one forced onto the general path, in lockstep:
    equal events after every step, equal touched accounts, equal checkpoints."""
    topics = to_topics(traffic(n_accounts=25, n_fills=600, seed=5))
    fast, slow = new_pipeline(DictStore()), new_pipeline(DictStore())
    calls = {"fast": 0}
    for p in range(PARTITIONS):
        general(slow.engine(p, 0.0))
        pe = fast.engine(p, 0.0)
        original = pe._apply_fresh

        def counted(entries: list[Any], runs: Any, original: Any = original) -> None:
            calls["fast"] += 1
            original(entries, runs)

        pe._apply_fresh = counted  # type: ignore[method-assign,assignment]
    pos = dict.fromkeys(topics, 0)
    now, rounds = 0.0, 0
    while any(pos[tp] < len(raws) for tp, raws in topics.items()):
        for tp, raws in topics.items():
            batch = raws[pos[tp]:pos[tp] + 9]
            pos[tp] += len(batch)
            for pipe in (fast, slow):
                pipe.ingest(tp[0], tp[1], batch, now)
        now += 100
        assert dicts(fast.step(now)) == dicts(slow.step(now))
        assert {p: pe.touched for p, pe in fast.engines.items()} == {p: pe.touched for p, pe in slow.engines.items()}
        rounds += 1
        if rounds % 4 == 0:
            a, b = fast.checkpoint(), slow.checkpoint()
            assert (a.state, a.offsets) == (b.state, b.offsets)
    now += 20_000
    assert dicts(fast.step(now)) == dicts(slow.step(now))
    assert fast.checkpoint().state == slow.checkpoint().state
    assert calls["fast"] > 20 and all(pe.skip == {} for pe in fast.engines.values())


def _engine(general_path: bool) -> tuple[PartitionEngine, GlobalLog, GlobalLog]:
    instruments, marks = GlobalLog(0), GlobalLog(0)
    pe = PartitionEngine(0, Engine(EngineConfig()), {}, {"instruments/0": instruments, "marks/0": marks}, {},
                         idle_ms=1_000, now=0.0)
    if general_path:
        pe.skip = dict(NOBODY)
    return pe, instruments, marks


def test_a_mark_touches_the_holders_of_an_unvaluable_symbol_on_both_paths() -> None:
    """An account holding a symbol that can't be valued is rewritten when a mark for it comes, though
    none of its own records arrived and no event is emitted (the instrument is still missing): on
    the fast path as on the general one."""
    touched = []
    for general_path in (False, True):
        pe, instruments, marks = _engine(general_path)
        instruments.append([(1_000, Feed.INSTRUMENTS, Instrument("ABC", Decimal(1), Decimal("0.1")), 0)], 1, 0.0)
        pe.lanes[Feed.EP3].push([(1_000, Feed.EP3, Ep3PositionEvent(
            "A", "SNAPSHOT", 1, 1_000, (PositionQty("XYZ", Decimal(2)),)), 0)], 1, 0.0)
        pe.lanes[Feed.RISK].push([(1_000, Feed.RISK, RiskSnapshot(
            "A", 1_000, (RiskPosition("XYZ", Decimal(2), None),), None, Decimal(0), Decimal(100), Decimal(50)), 0)],
            1, 0.0)
        pe.step(10_000.0)  # every lane idle: all released, time moves on, A is unvaluable on XYZ
        assert pe.engine.unvaluable_index.get("XYZ") == {"A"}
        pe.checkpoint()
        if general_path:
            pe.skip = dict(NOBODY)
        assert pe.touched == set()
        marks.append([(20_000, Feed.MARKS, Mark("XYZ", Decimal(7), 20_000), 0)], 1, 15_000.0)
        assert pe.step(30_000.0) == []
        touched.append(set(pe.touched))
    assert touched[0] == touched[1] == {"A"}


def test_records_applied_late_are_counted_per_input() -> None:
    """Records released below event time (their input was counted idle, then they came) are what the
    engine counts as late, told apart by input: here two fills and one mark, not the fill on time."""
    marks = GlobalLog(0)
    pe = PartitionEngine(0, Engine(EngineConfig()), {}, {"marks/0": marks}, {}, idle_ms=1_000, now=0.0,
                         clock_idle_ms=10**9)  # event time does not follow the wall clock here
    snap = RiskSnapshot("A", 1_000, (), None, Decimal(0), Decimal(100), Decimal(50))
    later = snap._replace(published_ts_ms=5_000)
    pe.lanes[Feed.RISK].push([(1_000, Feed.RISK, snap, 0), (5_000, Feed.RISK, later, 1)], 2, 0.0)
    pe.step(2_000.0)  # every other lane idle (nothing of their own): risk's 1,000 applied
    pe.step(10_000.0)  # every lane idle: all released, event time 5,000
    assert pe.engine.now == 5_000 and pe.late == {}
    fill = Fill("f", "A", "XYZ", Decimal(1), Decimal(10), 0)
    pe.lanes[Feed.FILLS].push([(3_000, Feed.FILLS, fill._replace(ts_ms=3_000), 0),
                               (4_000, Feed.FILLS, fill._replace(fill_id="g", ts_ms=4_000), 1),
                               (6_000, Feed.FILLS, fill._replace(fill_id="h", ts_ms=6_000), 2)], 3, 20_000.0)
    marks.append([(4_500, Feed.MARKS, Mark("XYZ", Decimal(7), 4_500), 0)], 1, 20_000.0)
    pe.step(30_000.0)
    assert pe.late == {Feed.FILLS: 2, Feed.MARKS: 1} and pe.engine.stats["late_records"] == 3


def test_the_open_counts_include_an_account_that_settled_untouched() -> None:
    """An account whose records are at the last instant when every input goes quiet is unsettled:
    its mismatch episode opens only when another account's record moves event time on, and nothing
    touches it then (no event: the episode is pending). The open counts, kept by checkpoints, see it
    once the next checkpoint has written it."""
    instruments, marks = GlobalLog(0), GlobalLog(0)
    pe = PartitionEngine(0, Engine(EngineConfig()), {}, {"instruments/0": instruments, "marks/0": marks}, {},
                         idle_ms=1_000, now=0.0, clock_idle_ms=10**9)
    instruments.append([(500, Feed.INSTRUMENTS, Instrument("XAU", Decimal(1), Decimal("0.1")), 0)], 1, 0.0)
    marks.append([(500, Feed.MARKS, Mark("XAU", Decimal(7), 500), 0)], 1, 0.0)
    pe.lanes[Feed.EP3].push([(1_000, Feed.EP3, Ep3PositionEvent(
        "A", "SNAPSHOT", 1, 1_000, (PositionQty("XAU", Decimal(1)),)), 0)], 1, 0.0)
    pe.lanes[Feed.RISK].push([(1_000, Feed.RISK, RiskSnapshot(
        "A", 1_000, (RiskPosition("XAU", Decimal(2), Decimal("1.4")),), Decimal("1.4"), Decimal(0), Decimal(100),
        Decimal(50)), 0)], 1, 0.0)
    assert pe.step(5_000.0) == [] and pe.engine.unsettled() == ["A"]
    pe.checkpoint()  # A written, no longer touched
    assert pe.open_counts() == ({}, {})
    pe.lanes[Feed.EP3].push([(3_000, Feed.EP3, Ep3PositionEvent("B", "SNAPSHOT", 1, 3_000, ()), 1)], 2, 6_000.0)
    assert pe.step(10_000.0) == [] and pe.touched == {"B"}
    assert pe.open_counts() == ({}, {})  # as of the last checkpoint
    assert set(pe.checkpoint()) == {"A", "B", meta_key(0)}
    assert pe.open_counts() == ({"": 1}, {})  # A's episode, pending (unclassified)


def test_pipeline_engines_start_on_the_fast_path() -> None:
    """A fresh (or cleanly restored) engine has nothing to skip."""
    pipe: Pipeline = new_pipeline(DictStore())
    assert pipe.engine(0, 0.0).skip == {}


def test_an_idle_engine_writes_no_rows_and_accounts_caught_unsettled_are_written_once_settled() -> None:
    """While every input is quiet a checkpoint changes nothing, so it has no rows: idle engines
    used to rewrite their meta row and every account of the last instant at each checkpoint (5
    times a second in the tests), and a worker stopped while idle left rows in flight that its
    local store lacked. Accounts whose last records were applied but not settled are written again
    once time moves and settles them."""
    from tests.unit.test_worker_pipeline import drive

    pipe = new_pipeline(DictStore(), clock_idle_ms=10**9)  # event time never follows the wall clock
    records = traffic(n_accounts=25, n_fills=300, seed=7)
    last = next(r for r in reversed(records) if r.feed is Feed.FILLS)
    fill = last.record._replace(fill_id="F-last", ts_ms=records[-1].ts_ms + 1_000)  # type: ignore[union-attr]
    topics = to_topics([*records, TapeRecord(fill.ts_ms, Feed.FILLS, fill, "last")])  # the last instant
    drive(pipe, topics, dict.fromkeys(topics, 0), 50)  # ends with a checkpoint of everything applied
    assert {p: rows for p, rows in pipe.checkpoint().state.items() if rows} == {}
    unsettled = {p: set(pe.engine.unsettled()) for p, pe in pipe.engines.items()}
    assert any(unsettled.values())
    for pe in pipe.engines.values():
        pe.engine.advance(pe.engine.now + 1)  # time moves: the last instant settles
    state = pipe.checkpoint().state
    for p, accounts in unsettled.items():
        assert accounts <= set(state[p]) and meta_key(p) in state[p]
    assert {p: rows for p, rows in pipe.checkpoint().state.items() if rows} == {}
