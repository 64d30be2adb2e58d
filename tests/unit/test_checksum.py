"""The witness sweep's set checksums: equal for equal position sets, different for different ones,
and the same in every process (a worker and a replay must agree)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from streams.core import state
from streams.core.state import checksum

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from decimal import Decimal as D
from streams.core.state import checksum
a = checksum({"AVAX-PERP": D("-50.5"), "EUR-PERP": D("62")})
b = checksum({"AVAX-PERP": D("-53.5"), "EUR-PERP": D("65")})
print(a, b)
"""


def in_process(seed: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={"PYTHONHASHSEED": str(seed)},
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_opposite_moves_do_not_cancel_and_every_process_agrees() -> None:
    """Two positions moved by -3 and +3: summed tuple hashes cancelled under a third of the seeds."""
    results = {in_process(seed) for seed in range(12)}
    assert len(results) == 1, "the checksum depends on the process's hash seed"
    (a, b), = results
    assert a != b


def test_equal_sets_have_equal_checksums_whatever_the_order_or_scale() -> None:
    one = {"BTC-PERP": D("1.50"), "ETH-PERP": D("-2"), "SOL-PERP": D("0")}
    other = {"ETH-PERP": D("-2.0"), "BTC-PERP": D("1.5")}
    assert checksum(one) == checksum(other)
    assert checksum(one) != checksum({**other, "BTC-PERP": D("1.4")})
    assert checksum({}) == checksum({"X": D("0")}) == 0


def test_memoised_pos_hash_equals_the_computed_one_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "POS_HASH_MEMO", 8)
    monkeypatch.setattr(state, "_POS_HASHES", {})
    cases = [(s, D(q)) for s in ("BTC-PERP", "EUR-PERP") for q in ("1", "-2.5", "62", "62.0", "0.001", "7")]
    for _ in range(3):  # misses, then hits (and a clear when the memo is full)
        for s, q in cases:
            assert state.pos_hash(s, q) == state.position_hash(s, q)
            assert len(state._POS_HASHES) <= 8
    assert state.pos_hash("EUR-PERP", D("62")) == state.pos_hash("EUR-PERP", D("62.000"))


def test_sweep_checksums_follow_every_change_since_they_were_last_computed() -> None:
    """The sweep's cached checksums are recomputed after any fill, EP3 update, snapshot or restore,
    so `sums_differ` always equals a fresh comparison of the two position sets."""
    from streams.core import witness
    from streams.core.engine import Engine
    from streams.core.params import EngineConfig
    from streams.core.records import Ep3PositionEvent, Feed, Fill, PositionQty
    from streams.core.serde import account_from_dict, account_to_dict

    t0 = 1_780_000_000_000
    eng = Engine(EngineConfig(witness_baseline="ep3"))

    def fresh(a: state.AccountState) -> bool:
        assert a.ledger is not None
        return checksum(a.ledger) != checksum(a.ep3)

    def ep3(seq: int, ts: int, kind: str = "UPDATE", **pos: str) -> Ep3PositionEvent:
        return Ep3PositionEvent("A", kind, seq, ts, tuple(PositionQty(s, D(q)) for s, q in pos.items()))

    steps = [
        (Feed.EP3, ep3(1, t0, "SNAPSHOT", BTC="1", ETH="2")),
        (Feed.FILLS, Fill("f1", "A", "BTC", D(2), D(100), t0 + 10)),   # ledger moves first
        (Feed.EP3, ep3(2, t0 + 20, BTC="3")),                            # EP3 catches up
        (Feed.FILLS, Fill("f2", "A", "ETH", D(-2), D(100), t0 + 30)),  # ledger goes flat
        (Feed.EP3, ep3(3, t0 + 40, ETH="0")),                            # present-and-flat: same set
        (Feed.EP3, ep3(4, t0 + 50, "SNAPSHOT", BTC="3")),                # ETH absent: still the same set
        (Feed.EP3, ep3(5, t0 + 60, "SNAPSHOT", BTC="3", XAU="13")),      # a phantom
    ]
    seen = []
    for i, (feed, rec) in enumerate(steps):
        eng.process(feed, rec.ts_ms, rec)
        eng.advance(rec.ts_ms + 1)
        acct = eng.accounts["A"]
        if i != 4:  # read (and cache) after each step but one: a change must show at the next read
            seen.append(witness.sums_differ(acct))
            assert seen[-1] == fresh(acct) and not acct.sums_stale
    restored = account_from_dict(account_to_dict(acct))
    assert restored.sums_stale and witness.sums_differ(restored)
    assert seen == [False, True, False, True, False, True]
