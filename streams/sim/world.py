"""The simulated world: accounts, market, the positions source in force, and an event-time scheduler.

Guarantees:
- records come out in non-decreasing `ts_ms` (an action only ever schedules work at or after its own
  time, and the scheduler is a heap keyed by (time, insertion order));
- memory is bounded by the number of accounts and symbols (the heap holds a few pending actions per
  account), never by the length of the day;
- the same config yields the same records: one seeded `random.Random`, deterministic tie-breaks.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    OgMargin,
    PositionQty,
    PositionsSource,
    Record,
    RiskPosition,
    RiskSnapshot,
)
from streams.sim.accounts import Account
from streams.sim.config import SimConfig
from streams.sim.market import Market

Emitted = tuple[Feed, int, Record]
Action = Callable[..., list[tuple[Feed, Record]] | None]


class World:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.market = Market(self.rng)
        self.accounts: dict[str, Account] = {}
        self.source: PositionsSource = "RISK_ENGINE"
        self.silent_marks: set[str] = set()  # symbols whose marks are not published (yet)
        self.fill_seq = 0
        self._heap: list[tuple[int, int, Action, tuple[Any, ...]]] = []
        self._n = 0

    # --- scheduling ------------------------------------------------------------------------------

    def at(self, ts_ms: int, action: Action, *args: Any) -> None:
        """Run `action(world, ts_ms, *args)` at event time `ts_ms`; it returns records emitted then."""
        self._n += 1
        heapq.heappush(self._heap, (ts_ms, self._n, action, args))

    def run(self) -> Iterator[Emitted]:
        """Pop actions in time order until the end of the day, yielding what they emit."""
        heap, end = self._heap, self.cfg.end_ms
        pop = heapq.heappop
        while heap and heap[0][0] < end:
            ts, _, action, args = pop(heap)
            out = action(self, ts, *args)
            if out:
                for feed, record in out:
                    yield feed, ts, record

    def in_burst(self, ts_ms: int) -> bool:
        """Bursts start half a period into the day and repeat every `burst_every_ms`."""
        cfg = self.cfg
        phase = (ts_ms - cfg.start_ms - cfg.burst_every_ms // 2) % cfg.burst_every_ms
        return ts_ms - cfg.start_ms >= cfg.burst_every_ms // 2 and phase < cfg.burst_len_ms

    # --- record builders -------------------------------------------------------------------------

    def ep3_event(self, acct: Account, ts_ms: int, kind: str, positions: dict[str, Decimal],
                  seq: int | None = None) -> Ep3PositionEvent:
        """An EP3 event with the account's next seq (or an explicit, possibly stale, one)."""
        if seq is None:
            acct.ep3_seq += 1
            seq = acct.ep3_seq
        listed = tuple(PositionQty(s, q) for s, q in sorted(positions.items()))
        return Ep3PositionEvent(acct.account_id, kind, seq, ts_ms, listed)  # type: ignore[arg-type]

    def risk_snapshot(self, acct: Account, ts_ms: int) -> RiskSnapshot:
        """RE's full state of the account, valued at current marks; avail = equity - IM - oom."""
        im = self.market.im
        positions = tuple(RiskPosition(s, q, im(s, q)) for s, q in sorted(acct.re.items()))
        total = sum((p.im for p in positions if p.im is not None), Decimal(0))
        acct.re_im_total = total
        return RiskSnapshot(acct.account_id, ts_ms, positions, total, acct.oom, acct.equity,
                            acct.equity - total - acct.oom)

    def og_margin(self, acct: Account, ts_ms: int) -> OgMargin:
        """The gateway's sweep: IM from RE's last snapshot or from its EP3 cache, per the source in force."""
        if self.source == "EP3":
            im = self.market.total_im(acct.ep3)
        else:
            im = acct.re_im_total if acct.re_im_total is not None else self.market.total_im(acct.re)
        oom = acct.oom + acct.og_extra
        return OgMargin(acct.account_id, ts_ms, self.source, im, oom, acct.equity, acct.equity - im - oom)
