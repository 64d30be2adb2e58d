"""Checkpoint/restore of the engine (what a worker that takes a partition over relies on)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core import mirror
from streams.core.engine import Engine
from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.core.records import OgMargin, RiskPosition, RiskSnapshot, record_to_value
from streams.core.serde import account_from_dict, account_to_dict, engine_to_dict, restore_engine
from streams.core.state import AccountState
from streams.tapes.model import TapeRecord
from streams.worker.pipeline import encode_row
from streams.worker.synth import traffic


def run(eng: Engine, records: list[TapeRecord]) -> list[Event]:
    out: list[Event] = []
    for r in records:
        eng.process(r.feed, r.ts_ms, r.record)
        out += eng.take_events()
    return out


def finish(eng: Engine, end: int) -> list[Event]:
    eng.advance(end)
    eng.flush()
    return eng.take_events()


def through_json(eng: Engine) -> Engine:
    """What the worker's state table holds, and what a new owner rebuilds from it."""
    meta = json.loads(json.dumps(engine_to_dict(eng)))
    rows = [json.loads(encode_row(account_to_dict(a))) for a in eng.accounts.values()]
    return restore_engine(eng.cfg, meta, (account_from_dict(r) for r in rows))


def rows(events: list[Event]) -> list[dict[str, object]]:
    return sorted((e.to_dict() for e in events), key=lambda d: (str(d["event_id"]), int(d["version"])))  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def tape() -> list[TapeRecord]:
    return traffic(n_accounts=10, n_fills=300, seed=5)


@pytest.mark.parametrize("cut", [1, 2, 3, 50, 137, 301, 640, 901, 1111])
def test_restoring_mid_instant_changes_no_event(tape: list[TapeRecord], cut: int) -> None:
    """Checkpointed right after a record (its instant applied, not settled: a worker whose inputs are
    all idle does that), restored and fed the rest, the engine emits exactly what it would have."""
    end = tape[-1].ts_ms + 60_000
    whole = Engine(EngineConfig())
    want = run(whole, tape) + finish(whole, end)
    first = Engine(EngineConfig())
    got = run(first, tape[:cut])
    second = through_json(first)
    got += run(second, tape[cut:]) + finish(second, end)
    assert len(want) > 100
    assert rows(got) == rows(want)


def test_unsettled_work_survives_the_round_trip(tape: list[TapeRecord]) -> None:
    eng = Engine(EngineConfig())
    first_ep3 = next(i for i, r in enumerate(tape) if r.feed.value == "ep3.positions")
    run(eng, tape[:first_ep3 + 1])
    assert eng.unsettled()
    restored = through_json(eng)
    assert sorted(restored.unsettled()) == sorted(eng.unsettled())
    for account in eng.unsettled():
        a, b = eng.accounts[account], restored.accounts[account]
        assert (a.dirty, a.margin_dirty, a.baseline_candidates) == (b.dirty, b.margin_dirty, b.baseline_candidates)


_decimal = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**9, max_value=10**9)
_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)  # what parse_value accepts
_snapshots = st.builds(
    RiskSnapshot, _text, st.integers(0, 2**62),
    st.lists(st.builds(RiskPosition, _text, _decimal, st.none() | _decimal), max_size=4,
             unique_by=lambda p: p.symbol).map(tuple),
    st.none() | _decimal, _decimal, _decimal, _decimal)
_margins = st.builds(OgMargin, _text, st.integers(0, 2**62), st.sampled_from(["EP3", "RISK_ENGINE"]),
                     st.none() | _decimal, _decimal, _decimal, _decimal)


@given(snap=st.none() | _snapshots, og=st.none() | _margins)
def test_an_accounts_records_are_written_as_record_to_value_writes_them(
        snap: RiskSnapshot | None, og: OgMargin | None) -> None:
    """The checkpoint spells the snapshot and margin rows out (they are written with every account);
    a restore reads them with `parse_value`, so they must stay exactly `record_to_value`'s form. The
    RE view is not written: restored, it is the one `apply_risk` made of the snapshot."""
    a = AccountState("A1")
    if snap is not None:
        assert mirror.apply_risk(a, snap)
    a.og = og
    written = json.loads(encode_row(account_to_dict(a)))
    assert written["re_snapshot"] == (None if snap is None else record_to_value(snap))
    assert written["og"] == (None if og is None else record_to_value(og))
    assert "re" not in written and "re_im" not in written
    back = account_from_dict(written)
    assert (back.re_snapshot, back.og, back.re, back.re_im) == (snap, og, a.re, a.re_im)


@given(snap=_snapshots)
def test_rows_of_earlier_versions_restore_the_re_view_they_hold(snap: RiskSnapshot) -> None:
    """Rows written before the RE view was derived on restore carry it as text, and restore it."""
    a = AccountState("A1")
    mirror.apply_risk(a, snap)
    assert a.re is not None
    old = json.loads(encode_row(account_to_dict(a)))
    old["re"] = {s: str(q) for s, q in a.re.items()}
    old["re_im"] = {s: None if im is None else str(im) for s, im in a.re_im.items()}
    old["re_snapshot"] = None  # so the view can only come from what the row holds
    back = account_from_dict(old)
    assert (back.re, back.re_im) == (a.re, a.re_im)
