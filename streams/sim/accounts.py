"""Simulated accounts: the true position book and the two views the monitor compares.

Each account keeps three books: `truth` (fills applied at fill time), `ep3` (what EP3 has sent) and
`re` (what the risk engine has applied). Traffic moves the views towards the truth after a latency;
faults make them diverge on purpose. Ids are stable for a given account count, so ground truth can
name accounts without running the simulation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

from streams.sim.config import FAULT_ACCOUNTS, SimConfig
from streams.sim.market import SPECS, TRADED, Market

ZERO = Decimal(0)


@dataclass(slots=True)
class Account:
    account_id: str
    market_maker: bool
    equity: Decimal
    oom: Decimal  # open-orders margin as RE publishes it
    og_extra: Decimal = ZERO  # extra open-orders margin only the gateway counts (gap-flip fault)
    reports_margin: bool = True
    trades: bool = True  # fault accounts take no random fills
    symbols: tuple[str, ...] = ()
    truth: dict[str, Decimal] = field(default_factory=dict)
    ep3: dict[str, Decimal] = field(default_factory=dict)
    re: dict[str, Decimal] = field(default_factory=dict)
    re_im_total: Decimal | None = None  # last published RE im_total (the gateway's RE-sourced IM)
    ep3_seq: int = 0
    busy_until: dict[str, int] = field(default_factory=dict)


def account_ids(cfg: SimConfig) -> list[str]:
    width = max(5, len(str(cfg.accounts)))
    return [f"A{i:0{width}d}" for i in range(cfg.accounts)]


def fault_account_ids(cfg: SimConfig) -> list[str]:
    """The last FAULT_ACCOUNTS ids: reserved for injected faults, never filled at random."""
    return account_ids(cfg)[-FAULT_ACCOUNTS:]


def market_maker_count(cfg: SimConfig) -> int:
    return max(1, round((cfg.accounts - FAULT_ACCOUNTS) * cfg.mm_share))


def lots(symbol: str, n: int) -> Decimal:
    return n * SPECS[symbol].lot


def ordinary_accounts(cfg: SimConfig, rng: random.Random, market: Market) -> list[Account]:
    """Market makers first, then ordinary accounts; each holds 1-5 symbols with equity far above IM."""
    out = []
    n_mm = market_maker_count(cfg)
    for i, account_id in enumerate(account_ids(cfg)[:-FAULT_ACCOUNTS]):
        mm = i < n_mm
        symbols = tuple(sorted(rng.sample(TRADED, rng.randint(3, 5) if mm else rng.randint(1, 3))))
        headroom = sum((market.max_im(s) for s in symbols), ZERO)
        oom = Decimal(rng.randint(0, 50) * 100)
        equity = 2 * headroom + oom + rng.randint(1, 100) * 1_000
        acct = Account(account_id, mm, equity.quantize(Decimal(1)), oom, symbols=symbols,
                       reports_margin=mm or rng.random() < cfg.og_share)
        for s in symbols:
            limit = SPECS[s].max_lots
            acct.truth[s] = lots(s, rng.randint(-limit // 2, limit // 2) or 1)
        out.append(acct)
    return out


def seed_views(acct: Account) -> None:
    """At the start of the day both views agree with the truth."""
    acct.ep3 = dict(acct.truth)
    acct.re = dict(acct.truth)
