"""The readable source of the golden scenario tapes: `python -m tests.scenarios.build` rewrites them.

Only the tapes (`<name>.jsonl`) come from here. The `<name>.expected.jsonl` files are written by hand
from DESIGN's rules, never by running the engine. Times are ms after `tests.support.tapes.BASE`
(a whole minute: the first witness sweep falls at +60 000). Default engine config: grace 2 000 ms
(inclusive), sweep every 60 s, dormant after 10 min, threshold [0], witness baseline `first`
(the first full snapshot; RE preferred when RE and EP3 arrive at the same instant).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.tapes import T

HERE = Path(__file__).parent


def _market() -> T:
    return (T().instrument("XAU-PERP").mark("XAU-PERP", "11700")
            .instrument("BTC-PERP").mark("BTC-PERP", "60000")
            .instrument("ETH-PERP").mark("ETH-PERP", "3000"))


def xau_bookmark_wipe() -> T:
    """The historical case: a dormant 13-lot XAU-PERP survives the bookmark, dies in a later snapshot."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13", BTC_PERP="2")
            .risk("A1", at=0, XAU_PERP="13", BTC_PERP="2")            # witness baseline RE@+0
            .ep3_snapshot("A1", seq=2, at=1_000)                       # bookmark: replaces nothing
            .fill("A1", "BTC-PERP", "1", at=10_000)
            .ep3_update("A1", seq=3, at=10_000, BTC_PERP="3")
            .risk("A1", at=10_000, XAU_PERP="13", BTC_PERP="3")
            .ep3_snapshot("A1", seq=4, at=720_000, BTC_PERP="3")      # omits the dormant XAU-PERP
            .tick(725_000))


def bookmark_only() -> T:
    """A bookmark after a full snapshot changes nothing."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13")
            .risk("A1", at=0, XAU_PERP="13")
            .ep3_snapshot("A1", seq=2, at=1_000)
            .risk("A1", at=5_000, XAU_PERP="13")
            .tick(10_000))


def phantom() -> T:
    """EP3 gains ETH-PERP that no fill and no RE snapshot ever shows."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2")
            .ep3_update("A1", seq=2, at=5_000, ETH_PERP="5")
            .tick(10_000))


def persistent_lots() -> T:
    """RE lags a fill beyond grace (A1, later catches up); A2's EP3 is flat at 0 while RE keeps 4."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2")
            .ep3_snapshot("A2", seq=1, at=0, ETH_PERP="4")
            .risk("A2", at=0, ETH_PERP="4")
            .fill("A1", "BTC-PERP", "1", at=3_000)
            .ep3_update("A1", seq=2, at=3_000, BTC_PERP="3")
            .fill("A2", "ETH-PERP", "-4", at=3_000)
            .ep3_update("A2", seq=2, at=3_000, ETH_PERP="0")
            .risk("A1", at=20_000, BTC_PERP="3")
            .tick(25_000))


def propagation_race_ep3_fresher() -> T:
    """EP3 shows the fill first; RE catches up within grace (A2 exactly at the grace boundary)."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2")
            .ep3_snapshot("A2", seq=1, at=0, ETH_PERP="1")
            .risk("A2", at=0, ETH_PERP="1")
            .fill("A1", "BTC-PERP", "1", at=3_000)
            .ep3_update("A1", seq=2, at=3_000, BTC_PERP="3")
            .fill("A2", "ETH-PERP", "1", at=3_000)
            .ep3_update("A2", seq=2, at=3_000, ETH_PERP="2")
            .risk("A1", at=4_500, BTC_PERP="3")
            .risk("A2", at=5_000, ETH_PERP="2")
            .tick(10_000))


def propagation_race_re_fresher() -> T:
    """RE publishes the fill first; the EP3 update follows within grace."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2")
            .fill("A1", "BTC-PERP", "1", at=3_000)
            .risk("A1", at=3_000, BTC_PERP="3")
            .ep3_update("A1", seq=2, at=4_000, BTC_PERP="3")
            .tick(10_000))


def unvaluable_late_mark() -> T:
    """XAU-PERP has no mark until +30 s (A1, EP3 side); A2's RE publishes a position without IM."""
    return (T().instrument("XAU-PERP").instrument("BTC-PERP").mark("BTC-PERP", "60000")
            .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13")
            .risk("A1", at=0, XAU_PERP=("13", "7605"))
            .fill("A1", "XAU-PERP", "1", at=10_000)
            .ep3_update("A1", seq=2, at=10_000, XAU_PERP="14")
            .risk("A1", at=11_000, XAU_PERP=("14", "8190"))
            .ep3_snapshot("A2", seq=1, at=0, BTC_PERP="1")
            .risk("A2", at=0, BTC_PERP=("1", None), im_total=None)
            .mark("XAU-PERP", "11700", at=30_000)
            .tick(35_000))


def stale_seq() -> T:
    """A duplicate seq, a backwards seq and a stale bookmark are ignored and counted."""
    return (_market()
            .ep3_snapshot("A1", seq=5, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2")
            .fill("A1", "BTC-PERP", "1", at=1_000)
            .ep3_update("A1", seq=6, at=1_000, BTC_PERP="3")
            .risk("A1", at=1_000, BTC_PERP="3")
            .ep3_update("A1", seq=6, at=2_000, BTC_PERP="9")
            .ep3_update("A1", seq=4, at=3_000, BTC_PERP="0")
            .ep3_snapshot("A1", seq=3, at=4_000, ETH_PERP="7")
            .tick(10_000))


def qty_zero_vs_absent() -> T:
    """EP3 flat vs RE absent is agreement; flat vs non-zero is a present-vs-present mismatch ("0")."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2", ETH_PERP="1")
            .risk("A1", at=0, BTC_PERP="2", ETH_PERP="1")
            .fill("A1", "BTC-PERP", "-2", at=3_000)
            .ep3_update("A1", seq=2, at=3_000, BTC_PERP="0")
            .risk("A1", at=3_000, ETH_PERP="1")                        # BTC-PERP absent in RE
            .fill("A1", "ETH-PERP", "-1", at=5_000)
            .ep3_update("A1", seq=3, at=5_000, ETH_PERP="0")           # RE never catches up
            .ep3_snapshot("A2", seq=1, at=0, BTC_PERP="1")
            .risk("A2", at=0, BTC_PERP="1", XAU_PERP="0", ETH_PERP="0")
            .fill("A2", "ETH-PERP", "2", at=5_000)
            .ep3_update("A2", seq=2, at=5_000, ETH_PERP="2")
            .tick(10_000))


def avail_flip_valuation() -> T:
    """OG revalues on a new mark and drops below 0 while RE still publishes 500; positions agree."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2", avail="500", oom="3500")
            .og("A1", at=0, avail="500", im="6000", oom="3500")
            .mark("BTC-PERP", "67000", at=30_000)
            .og("A1", at=30_000, avail="-200", im="6700", oom="3500")
            .risk("A1", at=32_000, BTC_PERP=("2", "6700"), avail="-200", oom="3500")
            .tick(35_000))


def avail_flip_feed() -> T:
    """OG on EP3 sees a fill RE hasn't published: avail goes negative with a position mismatch."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .risk("A1", at=0, BTC_PERP="2", avail="500")
            .og("A1", at=0, avail="500", source="EP3", im="6000")
            .fill("A1", "BTC-PERP", "1", at=3_000)
            .ep3_update("A1", seq=2, at=3_000, BTC_PERP="3")
            .og("A1", at=3_000, avail="-2500", source="EP3", im="9000")
            .risk("A1", at=10_000, BTC_PERP="3", avail="-2500")
            .tick(12_000))


def flip_at_threshold() -> T:
    """avail exactly 0 is allowed (>= threshold) on either side; -0.01 is not."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="1")
            .risk("A1", at=0, BTC_PERP="1", avail="0")
            .og("A1", at=0, avail="0", im="3000")
            .og("A1", at=5_000, avail="-0.01", im="3000")
            .og("A1", at=10_000, avail="0", im="3000")
            .ep3_snapshot("A2", seq=1, at=0, BTC_PERP="1")
            .risk("A2", at=0, BTC_PERP="1", avail="-1")
            .og("A2", at=0, avail="0", im="3000")
            .tick(12_000))


def witness_only_drop() -> T:
    """No RE at all: the ledger is seeded from EP3, advanced by fills, and catches the dropped XAU-PERP."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13", BTC_PERP="2")  # witness baseline EP3@+0
            .fill("A1", "BTC-PERP", "1", at=10_000)
            .ep3_update("A1", seq=2, at=10_000, BTC_PERP="3")
            .fill("A1", "XAU-PERP", "-3", at=20_000)
            .ep3_update("A1", seq=3, at=20_000, XAU_PERP="10")
            .ep3_snapshot("A1", seq=4, at=90_000, BTC_PERP="3")             # drops XAU-PERP
            .tick(125_000))


def update_racing_fill() -> T:
    """The EP3 update trails its fill by 500 ms (A1) or exactly grace (A2): no anomaly; A3 is late by 2001 ms."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .ep3_snapshot("A2", seq=1, at=0, ETH_PERP="1")
            .ep3_snapshot("A3", seq=1, at=0, XAU_PERP="1")
            .fill("A1", "BTC-PERP", "1", at=3_000)
            .fill("A2", "ETH-PERP", "1", at=3_000)
            .fill("A3", "XAU-PERP", "1", at=3_000)
            .ep3_update("A1", seq=2, at=3_500, BTC_PERP="3")
            .ep3_update("A2", seq=2, at=5_000, ETH_PERP="2")
            .ep3_update("A3", seq=2, at=5_001, XAU_PERP="2")
            .tick(10_000))


def re_older_than_ep3() -> T:
    """RE's first snapshot arrives after the EP3 update but was computed before it; then a stale one."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2")
            .fill("A1", "BTC-PERP", "1", at=3_000)
            .ep3_update("A1", seq=2, at=3_000, BTC_PERP="3")
            .risk("A1", at=3_200, published=2_900, BTC_PERP="2")
            .risk("A1", at=4_000, BTC_PERP="3")
            .risk("A1", at=4_500, published=3_500, BTC_PERP="2")     # older than the one applied: ignored
            .tick(10_000))


def phantom_before_first_risk() -> T:
    """EP3 holds BTC-PERP before RE's first snapshot arrives without it: a phantom all the same."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="2", ETH_PERP="1")   # witness baseline EP3@+0
            .risk("A1", at=1_000, ETH_PERP="1")
            .tick(10_000))


def re_missing_im_resolves() -> T:
    """RE publishes a position without IM, then the same qty with IM: the RE-side unvaluable resolves."""
    return (_market()
            .ep3_snapshot("A1", seq=1, at=0, BTC_PERP="1")
            .risk("A1", at=0, BTC_PERP=("1", None), im_total=None)
            .risk("A1", at=5_000, BTC_PERP=("1", "3000"))
            .tick(10_000))


SCENARIOS: dict[str, Callable[[], T]] = {f.__name__: f for f in (
    xau_bookmark_wipe, bookmark_only, phantom, persistent_lots, propagation_race_ep3_fresher,
    propagation_race_re_fresher, unvaluable_late_mark, stale_seq, qty_zero_vs_absent, avail_flip_valuation,
    avail_flip_feed, flip_at_threshold, witness_only_drop, update_racing_fill, re_older_than_ep3,
    phantom_before_first_risk, re_missing_im_resolves,
)}


def main() -> None:
    for name, build in SCENARIOS.items():
        build().write_jsonl(HERE / f"{name}.jsonl")


if __name__ == "__main__":
    main()
