"""Unit tests of the engine's rules, one behaviour each, driven with an explicit event clock."""

from __future__ import annotations

import heapq
import json
import os
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.engine import Engine, TimerQueue
from streams.core.events import AvailGapFlip, PositionMismatch, Unvaluable, WitnessCheck
from streams.core.mirror import apply_ep3, apply_risk
from streams.core.params import EngineConfig
from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    RiskPosition,
    RiskSnapshot,
)
from streams.core.state import AccountState
from streams.core.valuation import differ, position_im, total_im

T0 = 1_780_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def ep3(acct: str, seq: int, ts: int, kind: str = "UPDATE", **pos: str) -> Ep3PositionEvent:
    return Ep3PositionEvent(acct, kind, seq, ts, tuple(PositionQty(s.replace("_", "-"), D(q)) for s, q in pos.items()))


def risk(acct: str, ts: int, avail: str = "1000", **pos: str) -> RiskSnapshot:
    positions = tuple(RiskPosition(s.replace("_", "-"), D(q), D("1")) for s, q in pos.items())
    return RiskSnapshot(acct, ts, positions, D(len(positions)), D(0), D(2000), D(avail))


class Driver:
    """Feeds records at explicit times and keeps the final state of every event."""

    def __init__(self, **cfg: object) -> None:
        self.engine = Engine(EngineConfig(**cfg))  # type: ignore[arg-type]
        self.final: dict[str, object] = {}
        self.emitted: list[object] = []

    def at(self, dt: int, feed: Feed, record: object) -> Driver:
        self.engine.process(feed, T0 + dt, record)  # type: ignore[arg-type]
        return self

    def advance(self, dt: int) -> Driver:
        self.engine.advance(T0 + dt)
        return self

    def events(self, kind: type | None = None) -> list:
        self.engine.flush()
        for ev in self.engine.take_events():
            self.emitted.append(ev)
            self.final[ev.event_id] = ev
        return [e for e in self.final.values() if kind is None or isinstance(e, kind)]


# --- EP3 mirror ----------------------------------------------------------------------------------


def test_full_snapshot_replaces_and_unlisted_symbols_become_absent() -> None:
    """A SNAPSHOT with positions is a full replace: symbols it doesn't list become absent, not zero."""
    acct = AccountState("A")
    apply_ep3(acct, ep3("A", 1, T0, "SNAPSHOT", BTC="1", XAU="13"))
    apply_ep3(acct, ep3("A", 2, T0, "SNAPSHOT", BTC="2"))
    assert acct.ep3 == {"BTC": D(2)}
    assert "XAU" not in acct.ep3


def test_bookmark_snapshot_replaces_nothing() -> None:
    """An empty SNAPSHOT is the bookmark: it marks the account ready and keeps every position."""
    acct = AccountState("A")
    apply_ep3(acct, ep3("A", 1, T0, "SNAPSHOT", XAU="13"))
    assert apply_ep3(acct, ep3("A", 2, T0, "SNAPSHOT")) == "bookmark"
    assert acct.ep3 == {"XAU": D(13)} and acct.ep3_ready


def test_update_with_zero_is_present_and_flat() -> None:
    """UPDATE qty 0 keeps the symbol present with 0; it does not remove it."""
    acct = AccountState("A")
    apply_ep3(acct, ep3("A", 1, T0, BTC="3"))
    apply_ep3(acct, ep3("A", 2, T0, BTC="0"))
    assert acct.ep3 == {"BTC": D(0)}


@pytest.mark.parametrize("seq", [5, 4, 1])
def test_stale_or_duplicate_seq_is_not_applied(seq: int) -> None:
    """An event whose seq is not above the last applied one is counted and ignored."""
    acct = AccountState("A")
    apply_ep3(acct, ep3("A", 5, T0, BTC="3"))
    assert apply_ep3(acct, ep3("A", seq, T0, BTC="9")) == "stale"
    assert acct.ep3 == {"BTC": D(3)}


# --- valuation -----------------------------------------------------------------------------------


# a RE book: symbol -> (qty, IM or None); equal quantities in other notations (1, 1.0) on purpose
_book = st.dictionaries(st.sampled_from(["BTC", "ETH", "SOL", "XAU"]),
                        st.tuples(st.sampled_from([D(0), D(1), D("1.0"), D(-2)]),
                                  st.sampled_from([None, D(0), D(5), D("5.00")])), max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), _book), _book, st.sampled_from([{}, {"ETH": D(1)}, {"DOGE": D(3)}]))
def test_a_risk_snapshot_marks_every_symbol_whose_re_view_changed(old: dict | None, new: dict, held: dict) -> None:
    """The symbols a new RE snapshot marks for comparison are exactly those whose RE quantity changed
    (listed, unlisted, or another value) or whose IM became known or unknown; the first snapshot marks
    everything either side holds. A symbol left out is a verdict never made. The view then holds
    exactly the snapshot's positions (updated in place, not rebuilt)."""
    def snap(ts: int, book: dict) -> RiskSnapshot:
        return RiskSnapshot("A", ts, tuple(RiskPosition(s, q, im) for s, (q, im) in book.items()), D(0), D(0),
                            D(0), D(0))

    acct = AccountState("A", ep3=dict(held))
    if old is not None:
        assert apply_risk(acct, snap(T0, old))
    acct.dirty.clear()
    assert apply_risk(acct, snap(T0 + 1, new))
    if old is None:
        want = set(new) | set(held)
    else:
        want = {s for s in set(old) | set(new)
                if (s in old) != (s in new)
                or (s in old and (old[s][0] != new[s][0] or (old[s][1] is None) != (new[s][1] is None)))}
    assert acct.dirty == want
    assert acct.re == {s: q for s, (q, _) in new.items()} and acct.re_im == {s: im for s, (_, im) in new.items()}
    # the snapshot's own objects: an equal quantity written another way (1.0 for 1) is what events report
    assert all(acct.re[s] is q and acct.re_im[s] is im for s, (q, im) in new.items())
    assert not apply_risk(acct, snap(T0, new)), "an older snapshot is not applied"


def test_unknown_mark_makes_im_unknown_never_zero() -> None:
    """IM of a position without a mark is None, and so is any total including it (fail closed)."""
    inst = {"XAU": Instrument("XAU", D(1), D("0.05"))}
    assert position_im("XAU", D(13), inst, {}) is None
    assert total_im({"XAU": D(13), "BTC": D(0)}, inst, {}) is None
    assert position_im("XAU", D(-13), inst, {"XAU": D(11700)}) == D("7605.00")
    assert position_im("BTC", D(0), {}, {}) == 0


_quantities = st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=3) | st.sampled_from(
    [D(0), D("0.000"), D("-0"), D(62), D("62.0"), D("1E+3")])


@settings(max_examples=500)
@given(_quantities, _quantities, st.booleans())
def test_differ_is_not_equal_for_any_two_quantities(a: D | None, b: D | None, same: bool) -> None:
    """The engine's shortcut comparison of quantities is `!=`: absent against present, equal values
    written differently (62, 62.0), one object against itself."""
    if same:
        b = a
    assert differ(a, b) is (a != b)


# --- mismatch lifecycle --------------------------------------------------------------------------


def test_disagreement_resolved_exactly_at_grace_is_a_race() -> None:
    """Grace is inclusive: resolving at first_seen + grace is a propagation_race, one event, resolved."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, BTC="1")).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
    d.at(10, Feed.EP3, ep3("A", 2, T0 + 10, BTC="2")).at(2010, Feed.RISK, risk("A", T0 + 2010, BTC="2"))
    d.advance(60_000)
    [m] = d.events(PositionMismatch)
    assert (m.cls, m.state, m.confirmed_ts_ms, m.resolved_ts_ms) == ("propagation_race", "resolved", None, T0 + 2010)
    assert m.fresher == "EP3" and m.delta == D(1)


def test_disagreement_one_ms_past_grace_is_persistent_and_keeps_class_when_resolved() -> None:
    """Outliving grace confirms the mismatch; its later resolution keeps the class and sets resolved_ts."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, BTC="1")).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
    d.at(10, Feed.EP3, ep3("A", 2, T0 + 10, BTC="2")).at(2011, Feed.RISK, risk("A", T0 + 2011, BTC="2"))
    [m] = d.events(PositionMismatch)
    assert (m.cls, m.state, m.confirmed_ts_ms, m.resolved_ts_ms) == ("persistent", "resolved", T0 + 2010, T0 + 2011)
    assert m.version == 2
    assert [e.state for e in d.emitted if isinstance(e, PositionMismatch)] == ["confirmed", "resolved"]


TIMER_SPY = """
import json
import tests.unit.test_engine as t
from streams.core.engine import Engine
fired = []
real_fire = Engine._fire
def spy(self, deadline, kind, account_id, symbol, first_seen):
    fired.append((kind, symbol))
    real_fire(self, deadline, kind, account_id, symbol, first_seen)
Engine._fire = spy
d = t.Driver().at(0, t.Feed.RISK, t.risk("A", t.T0, BTC="1", ETH="1"))
d.at(0, t.Feed.EP3, t.ep3("A", 1, t.T0, "SNAPSHOT", BTC="1", ETH="1"))
d.at(10, t.Feed.EP3, t.ep3("A", 2, t.T0 + 10, BTC="2", ETH="2"))
d.at(500, t.Feed.RISK, t.risk("A", t.T0 + 500, BTC="2", ETH="1"))  # BTC resolves as a race, ETH stays apart
d.advance(61_000)
mismatches = sorted((m.symbol, m.cls, m.state) for m in d.events(t.PositionMismatch))
print(json.dumps({"fired": fired, "timers": [t[1] for t in d.engine.timers()], "mismatches": mismatches}))
"""


def test_timers_of_resolved_episodes_are_dropped_and_live_ones_fire() -> None:
    """advance() drops a grace timer whose episode is gone (a race) without firing it; a timer whose
    episode is still open fires and confirms it, and the sweep timer always fires.

    It spies on Engine._fire, which a compiled engine's own calls never look up: the scenario runs in
    a subprocess on the pure-Python modules (DIVMON_PURE=1), the same source the compiled ones are."""
    out = subprocess.run([sys.executable, "-c", TIMER_SPY], cwd=ROOT, env={**os.environ, "DIVMON_PURE": "1"},
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    # BTC's mismatch timer never reached _fire (the witness's anomaly timers are live here: no fills)
    assert [tuple(f) for f in got["fired"] if f[0] != 1] == [(0, "ETH"), (2, "")]
    assert got["timers"] and all(kind == 2 for kind in got["timers"])
    assert [tuple(m) for m in got["mismatches"]] == [
        ("BTC", "propagation_race", "resolved"), ("ETH", "persistent", "confirmed")]


_timer = st.tuples(st.integers(0, 40), st.integers(0, 2), st.sampled_from(["A", "B", "C"]),
                   st.sampled_from(["BTC", "ETH"]), st.integers(0, 3))
# a script: ("push", timer, in-order hint) or ("pop", before); pushes mostly in order, as the engine's are
_step = st.one_of(st.tuples(st.just("push"), _timer, st.booleans()), st.tuples(st.just("pop"), st.integers(0, 45)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=60))
def test_timer_queue_pops_in_the_order_of_one_heap(script: list[tuple]) -> None:
    """Whatever order timers arrive in (ties, duplicates, out of order, the hint right or wrong), the
    queue pops exactly what a single heap pops: verdicts depend on the order timers fire in."""
    q, heap = TimerQueue(), []
    for op, arg, *rest in script:
        if op == "push":
            q.push(arg, rest[0])
            heapq.heappush(heap, arg)
        else:
            got = []
            while (t := q.pop_before(arg)) is not None:
                got.append(t)
            want = []
            while heap and heap[0][0] < arg:
                want.append(heapq.heappop(heap))
            assert got == want
        assert q.pending() == sorted(heap) and len(q) == len(heap)


def test_re_older_than_ep3_update_names_ep3_fresher() -> None:
    """When RE's snapshot predates EP3's word on the symbol, EP3 is the fresher side."""
    d = Driver().at(0, Feed.RISK, risk("A", T0 - 500, BTC="1"))
    d.at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="2")).advance(10_000)
    [m] = d.events(PositionMismatch)
    assert m.fresher == "EP3" and m.cls == "persistent" and m.snapshot_age_ms == 500


def test_absent_in_ep3_is_never_in_cache_and_reported_as_null() -> None:
    """RE non-zero, EP3 absent, past grace: never_in_cache with ep3_qty None (not 0)."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, XAU="13")).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
    d.advance(5_000)
    [m] = [e for e in d.events(PositionMismatch) if e.symbol == "XAU"]
    assert m.cls == "never_in_cache" and m.ep3_qty is None and m.to_dict()["ep3_qty"] is None
    assert m.delta == D(-13)


def test_zero_in_ep3_versus_absent_in_re_is_no_mismatch() -> None:
    """Present-and-flat on one side and absent on the other agree on the signed position."""
    d = Driver().at(0, Feed.RISK, risk("A", T0)).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="0"))
    d.advance(10_000)
    assert d.events(PositionMismatch) == []


def test_records_at_the_same_instant_are_compared_after_all_applied() -> None:
    """EP3 and RE changing together at one instant never open a mismatch, in either order."""
    for order in (0, 1):
        d = Driver().at(0, Feed.RISK, risk("A", T0, BTC="1")).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
        recs = [(Feed.EP3, ep3("A", 2, T0 + 5, BTC="4")), (Feed.RISK, risk("A", T0 + 5, BTC="4"))]
        for feed, rec in recs[::-1] if order else recs:
            d.at(5, feed, rec)
        d.advance(10_000)
        assert d.events(PositionMismatch) == []


def test_a_feed_given_by_its_value_is_that_feed_and_an_unknown_one_is_refused() -> None:
    """Drivers pass `Feed` members; the feed's text (a tape's, a config's) selects the same handler and
    counts in the same minute's feed_health row. A name that is no feed is refused, naming it."""
    def minute(feed: object) -> list[tuple[str, int]]:
        eng = Engine(EngineConfig())
        eng.process(feed, T0, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))  # type: ignore[arg-type]
        eng.advance(T0 + 60_000)
        assert eng.accounts["A"].ep3 == {"BTC": D(1)}
        return [(e.feed, e.records) for e in eng.take_events() if e.TYPE == "feed_health"]

    assert minute("ep3.positions") == minute(Feed.EP3) == [("ep3.positions", 1)]
    with pytest.raises(ValueError, match="'ep3'"):
        Engine(EngineConfig()).process("ep3", T0, ep3("A", 1, T0))  # type: ignore[arg-type]


def test_late_record_is_applied_at_the_current_instant() -> None:
    """A record older than the clock is applied now (counted), never rewinding time."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, BTC="1")).at(100, Feed.EP3, ep3("A", 1, T0 + 100, "SNAPSHOT", BTC="1"))
    d.at(50, Feed.MARKS, Mark("BTC", D(10), T0 + 50))
    assert d.engine.now == T0 + 100 and d.engine.stats["late_records"] == 1


# --- unvaluable ----------------------------------------------------------------------------------


def test_late_mark_resolves_unvaluable() -> None:
    """A present position without a mark opens `unvaluable`; the mark's late arrival resolves it."""
    d = Driver().at(0, Feed.INSTRUMENTS, Instrument("XAU", D(1), D("0.05")))
    d.at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", XAU="13"))
    [u] = d.events(Unvaluable)
    assert (u.state, u.source, u.reason, u.qty) == ("opened", "EP3", "missing_mark", D(13))
    d.at(30_000, Feed.MARKS, Mark("XAU", D(11700), T0 + 30_000)).advance(30_001)
    [u] = d.events(Unvaluable)
    assert (u.state, u.resolved_ts_ms, u.version) == ("resolved", T0 + 30_000, 2)


def test_process_entries_is_process_in_order_and_names_the_holders_a_mark_may_value() -> None:
    """A driver's batch (`process_entries`) gives the events of `process` per record, and a mark
    or instrument adds the accounts holding its symbol unvaluable to `touched` before it applies."""
    entries = [
        (T0, Feed.INSTRUMENTS, Instrument("XAU", D(1), D("0.05")), 0),
        (T0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", XAU="13"), 0),
        (T0 + 5, Feed.EP3, ep3("B", 1, T0 + 5, "SNAPSHOT", XAU="2"), 1),
        (T0 + 5, Feed.RISK, risk("A", T0 + 5, XAU="12"), 0),
        (T0 + 10, Feed.INSTRUMENTS, Instrument("ZZZ", D(1), D("0.05")), 1),
        (T0 + 30_000, Feed.MARKS, Mark("XAU", D(11700), T0 + 30_000), 0),
    ]
    one = Engine(EngineConfig())
    for ts, feed, rec, _ in entries:
        one.process(feed, ts, rec)
    one.advance(T0 + 30_001)
    batch = Engine(EngineConfig())
    touched: set[str] = set()
    batch.process_entries(entries[:5], touched)
    assert touched == set()  # ZZZ is held unvaluable by nobody
    batch.process_entries(entries[5:], touched)
    assert touched == {"A", "B"}  # both held XAU unvaluable (no mark) when its mark came
    batch.advance(T0 + 30_001)
    got, want = batch.take_events(), one.take_events()
    assert [e.to_dict() for e in got] == [e.to_dict() for e in want]
    assert {type(e) for e in got} >= {Unvaluable, PositionMismatch}


# --- avail-gap flips -----------------------------------------------------------------------------


def _og(acct: str, ts: int, avail: str, source: str = "EP3") -> OgMargin:
    return OgMargin(acct, ts, source, D(1), D(5), D(2000), D(avail))  # type: ignore[arg-type]


def test_flip_at_exactly_the_threshold_counts_as_allowed() -> None:
    """avail == threshold passes (computed ≥ threshold), so 0 vs 0 is no flip and 0 vs -1 is one."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, avail="0")).at(0, Feed.OG_MARGIN, _og("A", T0, "0"))
    assert d.events(AvailGapFlip) == []
    d.at(2000, Feed.OG_MARGIN, _og("A", T0 + 2000, "-0.01"))
    [f] = d.events(AvailGapFlip)
    assert (f.state, f.computed_avail, f.published_avail, f.gap) == ("opened", D("-0.01"), D(0), D("-0.01"))
    assert f.position_mismatch is False and f.og_open_orders_margin == D(5)


def test_flip_is_one_episode_across_sweeps_and_resolves() -> None:
    """Repeated sweeps with the decisions apart keep one event; agreement resolves it."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, avail="10"))
    for i in range(5):
        d.at(i * 2000, Feed.OG_MARGIN, _og("A", T0 + i * 2000, "-5"))
    d.at(10_000, Feed.OG_MARGIN, _og("A", T0 + 10_000, "3"))
    [f] = d.events(AvailGapFlip)
    assert (f.state, f.opened_ts_ms, f.resolved_ts_ms, f.version) == ("resolved", T0, T0 + 10_000, 2)


def test_flip_with_feed_divergence_is_flagged_with_im_deltas() -> None:
    """A flip while the views disagree on a position says position_mismatch and lists IM deltas."""
    d = Driver().at(0, Feed.INSTRUMENTS, Instrument("BTC", D(1), D("0.1"))).at(0, Feed.MARKS, Mark("BTC", D(100), T0))
    d.at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="3")).at(0, Feed.RISK, risk("A", T0, avail="10", BTC="1"))
    d.at(0, Feed.OG_MARGIN, _og("A", T0, "-10"))
    [f] = d.events(AvailGapFlip)
    assert f.position_mismatch is True
    assert dict(zip(f.im_delta_symbols, f.im_deltas, strict=True)) == {"BTC": D("29.0")}


def test_thresholds_are_configurable() -> None:
    """Each configured threshold has its own episodes."""
    d = Driver(thresholds=(D(0), D(100))).at(0, Feed.RISK, risk("A", T0, avail="150"))
    d.at(0, Feed.OG_MARGIN, _og("A", T0, "50"))
    assert [f.threshold for f in d.events(AvailGapFlip)] == [D(100)]


# --- witness -------------------------------------------------------------------------------------


def test_fill_racing_its_ep3_update_is_not_an_anomaly() -> None:
    """A fill seen 500 ms before EP3 reflects it stays within grace: no witness anomaly."""
    d = Driver(witness_baseline="ep3").at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
    d.at(1000, Feed.FILLS, Fill("f1", "A", "BTC", D(2), D(100), T0 + 1000))
    d.at(1500, Feed.EP3, ep3("A", 2, T0 + 1500, BTC="3")).advance(120_000)
    assert [e for e in d.events(WitnessCheck) if e.kind == "anomaly"] == []


def test_witness_works_without_risk_and_catches_a_dormant_drop_in_the_sweep() -> None:
    """With no RE at all, the EP3-seeded ledger catches a position a later snapshot dropped."""
    d = Driver(witness_baseline="first").at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1", XAU="13"))
    d.at(700_000, Feed.EP3, ep3("A", 2, T0 + 700_000, "SNAPSHOT", BTC="1")).advance(800_000)
    anomalies = [e for e in d.events(WitnessCheck) if e.kind == "anomaly"]
    assert [(a.symbol, a.status, a.ledger_qty, a.ep3_qty, a.baseline) for a in anomalies] == [
        ("XAU", "never_in_cache", D(13), None, f"EP3@{T0}")]
    sweeps = [e for e in d.events(WitnessCheck) if e.kind == "sweep"]
    before_drop = [s for s in sweeps if s.ts_ms < T0 + 700_000]
    assert before_drop[-1].dormant_positions == 2 and before_drop[-1].accounts_differing == 0
    assert sweeps[-1].anomalies == 1 and sweeps[-1].accounts_differing == 1


def test_same_input_gives_same_event_ids() -> None:
    """Event ids depend only on input: two runs give identical ids and content."""
    def run() -> list[dict]:
        d = Driver().at(0, Feed.RISK, risk("A", T0, XAU="13")).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
        d.advance(200_000)
        return [e.to_dict() for e in d.events()]
    assert run() == run()


def test_comparison_stands_down_when_re_retires_but_witness_keeps_watching() -> None:
    """With risk_silence_ms set, EP3 moving after RE went silent opens no mismatch; the witness still sees."""
    d = Driver(risk_silence_ms=30_000).at(0, Feed.RISK, risk("A", T0, BTC="1"))
    d.at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
    d.at(60_000, Feed.FILLS, Fill("f1", "A", "BTC", D(1), D(100), T0 + 60_000))
    d.at(60_050, Feed.EP3, ep3("A", 2, T0 + 60_050, BTC="2"))
    d.at(120_000, Feed.EP3, ep3("A", 3, T0 + 120_000, "SNAPSHOT", ETH="1")).advance(200_000)
    assert d.events(PositionMismatch) == []
    assert d.engine.stats["compare_held_risk_silent"] >= 1
    statuses = sorted((a.symbol, a.status) for a in d.events(WitnessCheck) if a.kind == "anomaly")
    assert statuses == [("BTC", "never_in_cache"), ("ETH", "phantom")]


def test_without_risk_silence_a_frozen_re_keeps_comparing() -> None:
    """By default a quiet RE is still a witness: the same input gives a persistent mismatch."""
    d = Driver().at(0, Feed.RISK, risk("A", T0, BTC="1")).at(0, Feed.EP3, ep3("A", 1, T0, "SNAPSHOT", BTC="1"))
    d.at(60_050, Feed.EP3, ep3("A", 2, T0 + 60_050, BTC="2")).advance(200_000)
    assert [m.cls for m in d.events(PositionMismatch)] == ["persistent"]


@pytest.mark.parametrize(("raw", "text"), [("13.000000000000", "13"), ("0.500", "0.5"), ("1E+1", "10"),
                                           ("-0", "0"), ("1E-7", "0.0000001"),
                                           ("12345678901234567890123456.123456789012",
                                            "12345678901234567890123456.123456789012")])
def test_decimals_print_canonically_and_exactly(raw: str, text: str) -> None:
    """Event JSON prints a decimal the same whatever form it arrived in, never rounded or in exponent form."""
    from streams.core.events import decimal_text

    assert decimal_text(D(raw)) == text
