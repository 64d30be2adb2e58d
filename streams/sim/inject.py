"""Fault injection: schedules, on the world, exactly the faults that `ground_truth` announces.

The times, accounts and symbols come from `streams.sim.faults` (the one place that states them), so
injection and ground truth cannot drift apart.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from streams.core.records import Feed
from streams.sim import faults as F
from streams.sim.accounts import Account
from streams.sim.market import LATE_MARK_SYMBOL, SPECS
from streams.sim.traffic import Out, bookmark
from streams.sim.world import World


def schedule(w: World) -> None:
    """Register every fault of the config; the late mark is silenced from the start of the day."""
    plans = {"bookmark": _plan_bookmark, "missing_mark": _plan_late_mark, "dropped_dormant": _plan_dropped,
             "oom_gap_flip": _plan_gap, "phantom": _plan_phantom, "persistent": _plan_persistent,
             "duplicate_seq": _plan_dup, "source_flip": _plan_source, "witness_only_drop": _plan_witness}
    for fault in F.ground_truth(w.cfg):
        acct = w.accounts[fault.account_id] if fault.account_id else None
        end = fault.end_ms if fault.end_ms is not None else fault.start_ms
        plans[fault.kind](w, fault, acct, end)


def _plan_bookmark(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.at(f.start_ms, bookmark, a)


def _plan_late_mark(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.silent_marks.add(LATE_MARK_SYMBOL)
    w.at(end, _late_mark)


def _plan_dropped(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.at(f.start_ms, _resync_without, a, "XAU-PERP", False)


def _plan_gap(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.at(f.start_ms, _og_extra, a, F.GAP_EXTRA_OOM)
    w.at(end, _og_extra, a, Decimal(0))


def _plan_phantom(w: World, f: F.Fault, a: Any, end: int) -> None:
    symbol, qty = F.PHANTOM
    w.at(f.start_ms, _ep3_set, a, symbol, qty)
    w.at(end, _ep3_set, a, symbol, Decimal(0) * SPECS[symbol].lot)


def _plan_persistent(w: World, f: F.Fault, a: Any, end: int) -> None:
    true = a.truth["SOL-PERP"]
    w.at(f.start_ms, _ep3_set, a, "SOL-PERP", true + F.PERSISTENT_DELTA)
    w.at(end, _ep3_set, a, "SOL-PERP", true)


def _plan_dup(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.at(f.start_ms, _duplicates, a, "BTC-PERP")


def _plan_source(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.at(f.start_ms, _source, "EP3")
    w.at(end, _source, "RISK_ENGINE")


def _plan_witness(w: World, f: F.Fault, a: Any, end: int) -> None:
    w.at(f.start_ms, _resync_without, a, F.WITNESS_DROP, True)


def _late_mark(w: World, ts: int) -> Out:
    w.silent_marks.discard(LATE_MARK_SYMBOL)
    return [(Feed.MARKS, w.market.mark(LATE_MARK_SYMBOL, ts))]


def _resync_without(w: World, ts: int, acct: Account, symbol: str, re_too: bool) -> Out:
    """EP3 re-sends a full snapshot that leaves `symbol` out; with `re_too`, RE loses it as well."""
    del acct.ep3[symbol]
    if re_too:
        w.at(ts + F.WITNESS_RE_DELAY_MS, _re_drop, acct, symbol)
    return [(Feed.EP3, w.ep3_event(acct, ts, "SNAPSHOT", acct.ep3))]


def _re_drop(w: World, ts: int, acct: Account, symbol: str) -> Out:
    del acct.re[symbol]
    return [(Feed.RISK, w.risk_snapshot(acct, ts))]


def _og_extra(w: World, ts: int, acct: Account, extra: Decimal) -> Out:
    acct.og_extra = extra
    return []


def _ep3_set(w: World, ts: int, acct: Account, symbol: str, qty: Decimal) -> Out:
    acct.ep3[symbol] = qty
    return [(Feed.EP3, w.ep3_event(acct, ts, "UPDATE", {symbol: qty}))]


def _duplicates(w: World, ts: int, acct: Account, symbol: str) -> Out:
    """An UPDATE, the same UPDATE again, then an older seq carrying a wrong qty: two stale events."""
    qty = acct.ep3[symbol]
    update = w.ep3_event(acct, ts, "UPDATE", {symbol: qty})
    stale = w.ep3_event(acct, ts, "UPDATE", {symbol: qty + 5 * SPECS[symbol].lot}, seq=update.seq - 1)
    return [(Feed.EP3, update), (Feed.EP3, update), (Feed.EP3, stale)]


def _source(w: World, ts: int, source: str) -> Out:
    w.source = source  # type: ignore[assignment]
    return []
