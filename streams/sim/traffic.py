"""Ordinary traffic: marks, fills and their propagation to EP3 and RE, margin sweeps, RE refreshes.

Every action has the signature `(world, ts_ms, *args) -> records emitted at ts_ms` and reschedules
itself. The noise guarantee lives in `fill`: a symbol of an account takes no new fill until both
views have caught up with the previous one, and the two latencies differ by at most the grace window,
so each disagreement it causes is a `propagation_race`.
"""

from __future__ import annotations

from decimal import Decimal

from streams.core.records import Feed, Fill, Record
from streams.sim.accounts import Account
from streams.sim.market import SPECS, instruments
from streams.sim.world import World

Out = list[tuple[Feed, Record]]


def open_day(w: World, ts: int) -> Out:
    """Instruments and first marks, then (1 ms later) every account's EP3 and RE full snapshots."""
    out: Out = [(Feed.INSTRUMENTS, i) for i in instruments()]
    out += [(Feed.MARKS, w.market.mark(s, ts)) for s in sorted(w.market.prices) if s not in w.silent_marks]
    for s in sorted(w.market.prices):
        w.at(ts + w.rng.randint(1, w.cfg.mark_interval_ms), mark_tick, s)
    w.at(ts + 1, open_accounts)
    return out


def open_accounts(w: World, ts: int) -> Out:
    """EP3's full snapshot and RE's snapshot of every account; EP3's bookmark follows within 0.5 s."""
    out: Out = []
    cfg, rng = w.cfg, w.rng
    for acct in w.accounts.values():
        out.append((Feed.EP3, w.ep3_event(acct, ts, "SNAPSHOT", acct.ep3)))
        out.append((Feed.RISK, w.risk_snapshot(acct, ts)))
        w.at(ts + rng.randint(50, 500), bookmark, acct)
        if acct.reports_margin:
            w.at(ts + rng.randint(1, cfg.og_interval_ms), og_tick, acct)
        w.at(ts + rng.randint(1, cfg.re_refresh_ms), re_refresh, acct)
        if acct.trades:
            w.at(ts + 2_000 + _interval(w, acct, ts), fill, acct)
    return out


def bookmark(w: World, ts: int, acct: Account) -> Out:
    """EP3's empty SNAPSHOT: the account is ready; it replaces nothing."""
    return [(Feed.EP3, w.ep3_event(acct, ts, "SNAPSHOT", {}))]


def mark_tick(w: World, ts: int, symbol: str) -> Out:
    mark = w.market.step(symbol, ts)
    step = w.cfg.mark_interval_ms
    w.at(ts + step + w.rng.randint(-step // 5, step // 5), mark_tick, symbol)
    return [] if symbol in w.silent_marks else [(Feed.MARKS, mark)]


def _interval(w: World, acct: Account, ts: int) -> int:
    mean = w.cfg.mm_fill_ms if acct.market_maker else w.cfg.fill_ms
    if w.in_burst(ts):
        mean = max(1, mean // w.cfg.burst_factor)
    return 1 + int(w.rng.expovariate(1.0 / mean))


def fill(w: World, ts: int, acct: Account) -> Out:
    """One fill on a free symbol; EP3 and RE learn of it after their own latencies.

    Closing bell: no fill in the last stretch of the day (the longest RE lag plus grace), so that
    every race of a day resolves inside it and a stream worker, whose clock runs on after the
    input stops, confirms nothing that a replay of the same day would not."""
    rng, cfg = w.rng, w.cfg
    if ts >= cfg.end_ms - max(cfg.re_lag_ms[1], cfg.re_burst_lag_ms[1]) - cfg.grace_ms:
        return []
    w.at(ts + _interval(w, acct, ts), fill, acct)
    free = [s for s in acct.symbols if acct.busy_until.get(s, 0) < ts]
    if not free:
        return []
    symbol = rng.choice(free)
    delta = _delta(acct, symbol, rng.randint(1, 8 if acct.market_maker else 30), rng.random() < 0.5)
    qty = acct.truth[symbol] = acct.truth.get(symbol, Decimal(0)) + delta
    t_ep3 = ts + rng.randint(*cfg.ep3_latency_ms)
    t_re = ts + rng.randint(*(cfg.re_burst_lag_ms if w.in_burst(ts) else cfg.re_lag_ms))
    w.at(t_ep3, ep3_apply, acct, symbol, qty)
    w.at(t_re, re_apply, acct, symbol, qty)
    acct.busy_until[symbol] = max(t_ep3, t_re) + 1
    w.fill_seq += 1
    price = w.market.prices[symbol]
    return [(Feed.FILLS, Fill(f"F{w.cfg.seed}-{w.fill_seq}", acct.account_id, symbol, delta, price, ts))]


def _delta(acct: Account, symbol: str, n: int, buy: bool) -> Decimal:
    """n lots, bought or sold, but always towards flat when the position would pass its limit."""
    spec = SPECS[symbol]
    pos = acct.truth.get(symbol, Decimal(0))
    limit = spec.max_lots * spec.lot
    delta = n * spec.lot * (1 if buy else -1)
    if abs(pos + delta) > limit:
        delta = -delta
    return delta


def ep3_apply(w: World, ts: int, acct: Account, symbol: str, qty: Decimal) -> Out:
    acct.ep3[symbol] = qty
    return [(Feed.EP3, w.ep3_event(acct, ts, "UPDATE", {symbol: qty}))]


def re_apply(w: World, ts: int, acct: Account, symbol: str, qty: Decimal) -> Out:
    acct.re[symbol] = qty
    return [(Feed.RISK, w.risk_snapshot(acct, ts))]


def og_tick(w: World, ts: int, acct: Account) -> Out:
    step = w.cfg.og_interval_ms
    w.at(ts + step + w.rng.randint(-step // 10, step // 10), og_tick, acct)
    return [(Feed.OG_MARGIN, w.og_margin(acct, ts))]


def re_refresh(w: World, ts: int, acct: Account) -> Out:
    w.at(ts + w.cfg.re_refresh_ms, re_refresh, acct)
    return [(Feed.RISK, w.risk_snapshot(acct, ts))]
