"""Deterministic mixed traffic for worker tests and the worker benchmark (not a market simulator).

`traffic(n_accounts, n_fills, seed)` returns tape records in `ts_ms` order: instruments and marks,
an RE + EP3 baseline per account, then fills, each followed by its EP3 update and RE snapshot after
random latencies, OG margin sweeps and mark ticks. A few faults are injected so that every verdict
kind appears: dropped EP3 updates (persistent / never_in_cache), phantom positions, a missing mark
(unvaluable) and avail flips. It ends with clock marks well past the grace window, so nothing is
pending at the end. The same arguments always yield the same records (one `random.Random`).
"""

from __future__ import annotations

import random
from decimal import Decimal

from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    Record,
    RiskPosition,
    RiskSnapshot,
)
from streams.tapes.model import TapeRecord

START = 1_780_000_020_000
SYMBOLS = ("BTC-PERP", "ETH-PERP", "XAU-PERP", "SOL-PERP", "EUR-PERP", "OIL-PERP")
UNPRICED = "NOPRICE-PERP"


class _Gen:
    def __init__(self, n_accounts: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.out: list[tuple[int, int, Feed, Record]] = []
        self.accounts = [f"A{i:05d}" for i in range(n_accounts)]
        self.pos: dict[str, dict[str, Decimal]] = {a: {} for a in self.accounts}
        self.ep3: dict[str, dict[str, Decimal]] = {a: {} for a in self.accounts}
        self.seq = dict.fromkeys(self.accounts, 0)
        self.n = 0

    def add(self, ts: int, feed: Feed, rec: Record) -> None:
        self.n += 1
        self.out.append((ts, self.n, feed, rec))

    def risk(self, a: str, ts: int, avail: str = "1000") -> None:
        pos = tuple(RiskPosition(s, q, abs(q) * Decimal("5")) for s, q in sorted(self.pos[a].items()))
        total = sum((p.im or Decimal(0) for p in pos), Decimal(0))
        self.add(ts, Feed.RISK, RiskSnapshot(a, ts, pos, total, Decimal(0), Decimal(10000), Decimal(avail)))

    def ep3_event(self, a: str, ts: int, kind: str, positions: dict[str, Decimal]) -> None:
        self.seq[a] += 1
        pq = tuple(PositionQty(s, q) for s, q in sorted(positions.items()))
        self.add(ts, Feed.EP3, Ep3PositionEvent(a, kind, self.seq[a], ts, pq))  # type: ignore[arg-type]


def traffic(n_accounts: int = 50, n_fills: int = 2_000, seed: int = 7, step_ms: int = 40) -> list[TapeRecord]:
    """Mixed records in ts order; about 4.5 records per fill (see the module docstring)."""
    g = _Gen(n_accounts, seed)
    rng = g.rng
    for s in (*SYMBOLS, UNPRICED):
        g.add(START, Feed.INSTRUMENTS, Instrument(s, Decimal(1), Decimal("0.05")))
    for s in SYMBOLS:
        g.add(START, Feed.MARKS, Mark(s, Decimal(100), START))
    for i, a in enumerate(g.accounts):
        g.pos[a] = {s: Decimal(rng.randint(-5, 5)) for s in rng.sample(SYMBOLS, 2)}
        ts = START + 1 + i
        g.risk(a, ts)
        g.ep3[a] = dict(g.pos[a])
        g.ep3_event(a, ts, "SNAPSHOT", g.ep3[a])
        g.add(ts, Feed.OG_MARGIN, OgMargin(a, ts, "RISK_ENGINE", Decimal(0), Decimal(0), Decimal(10000),
                                           Decimal(1000)))
    t = START + 1_000
    for k in range(n_fills):
        t += rng.randint(1, step_ms)
        a = rng.choice(g.accounts)
        sym = UNPRICED if k == n_fills // 3 else rng.choice(SYMBOLS)
        qty = Decimal(rng.choice((-2, -1, 1, 2)))
        g.add(t, Feed.FILLS, Fill(f"F{k}", a, sym, qty, Decimal(100), t))
        g.pos[a][sym] = g.pos[a].get(sym, Decimal(0)) + qty
        fault = rng.random()
        if fault > 0.01:  # 1%: EP3 drops the update -> persistent / never_in_cache / witness anomaly
            g.ep3[a][sym] = g.pos[a][sym]
            g.ep3_event(a, t + rng.randint(5, 300), "UPDATE", {sym: g.pos[a][sym]})
        if fault < 0.003:  # phantom: EP3 invents a position on another symbol
            g.ep3_event(a, t + 350, "UPDATE", {"PHANTOM-PERP": Decimal(3)})
        g.risk(a, t + rng.randint(20, 700), avail="-5" if rng.random() < 0.01 else "1000")
        if k % 3 == 0:
            b = rng.choice(g.accounts)
            g.add(t, Feed.OG_MARGIN, OgMargin(b, t, "EP3" if k > n_fills // 2 else "RISK_ENGINE", Decimal(0),
                                              Decimal(0), Decimal(10000), Decimal(1000)))
        if k % 5 == 0:
            s = rng.choice(SYMBOLS)
            g.add(t, Feed.MARKS, Mark(s, Decimal(100 + rng.randint(-3, 3)), t))
    for i in range(1, 6):  # trailing clock marks well past grace
        g.add(t + 1_000 + i * 2_000, Feed.MARKS, Mark("CLOCK", Decimal(1), t + 1_000 + i * 2_000))
    g.out.sort(key=lambda x: (x[0], x[1]))
    return [TapeRecord(ts, feed, rec, f"#{n}") for ts, n, feed, rec in g.out]
