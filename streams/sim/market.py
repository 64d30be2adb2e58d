"""The simulated market: an instrument catalogue and marks that random-walk on whole ticks.

Money is exact: a mark is an integer number of ticks times a decimal tick, a quantity an integer
number of lots times a decimal lot, so every IM (|qty| × contract_size × mark × im_rate) is an exact
`Decimal` with few fractional digits (well within the schemas' scale 12). No float ever becomes money.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from streams.core.records import Instrument, Mark

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Spec:
    """One instrument and how it trades: start price in ticks, lot size, position limit in lots."""

    symbol: str
    contract_size: Decimal
    im_rate: Decimal
    tick: Decimal
    start_ticks: int
    lot: Decimal
    max_lots: int


CATALOGUE: tuple[Spec, ...] = (
    Spec("BTC-PERP", Decimal(1), Decimal("0.05"), Decimal("0.5"), 120_000, Decimal("0.001"), 400),
    Spec("ETH-PERP", Decimal(1), Decimal("0.05"), Decimal("0.05"), 60_000, Decimal("0.01"), 600),
    Spec("SOL-PERP", Decimal(1), Decimal("0.1"), Decimal("0.01"), 15_000, Decimal("0.1"), 500),
    Spec("XAU-PERP", Decimal(1), Decimal("0.2"), Decimal("0.1"), 29_000, Decimal(1), 20),
    Spec("DOGE-PERP", Decimal(1000), Decimal("0.1"), Decimal("0.00001"), 15_000, Decimal(1), 200),
    Spec("AVAX-PERP", Decimal(1), Decimal("0.1"), Decimal("0.01"), 3_500, Decimal("0.5"), 400),
    Spec("LINK-PERP", Decimal(1), Decimal("0.1"), Decimal("0.001"), 15_000, Decimal(1), 300),
    Spec("EUR-PERP", Decimal(1000), Decimal("0.02"), Decimal("0.0001"), 10_800, Decimal(1), 100),
    # A new listing whose mark is late: only fault accounts hold it (see faults.missing_mark).
    Spec("NEW-PERP", Decimal(1), Decimal("0.25"), Decimal("0.001"), 2_000, Decimal(1), 1_000),
)
SPECS: dict[str, Spec] = {s.symbol: s for s in CATALOGUE}
LATE_MARK_SYMBOL = "NEW-PERP"
TRADED: tuple[str, ...] = tuple(s.symbol for s in CATALOGUE if s.symbol != LATE_MARK_SYMBOL)


def instruments() -> list[Instrument]:
    return [Instrument(s.symbol, s.contract_size, s.im_rate) for s in CATALOGUE]


class Market:
    """Current prices, in ticks, for every symbol; the truth both RE and the gateway value with."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.ticks: dict[str, int] = {s.symbol: s.start_ticks for s in CATALOGUE}
        self.prices: dict[str, Decimal] = {s.symbol: self._price(s.symbol) for s in CATALOGUE}

    def _price(self, symbol: str) -> Decimal:
        return self.ticks[symbol] * SPECS[symbol].tick

    def step(self, symbol: str, ts_ms: int) -> Mark:
        """Move `symbol` by a few ticks (about 0.02% a step, never below 1 tick) and return its mark."""
        spec = SPECS[symbol]
        width = max(1, spec.start_ticks // 5_000)
        t = self.ticks[symbol] + self._rng.randint(-width, width)
        self.ticks[symbol] = max(1, t)
        price = self.prices[symbol] = self._price(symbol)
        return Mark(symbol, price, ts_ms)

    def mark(self, symbol: str, ts_ms: int) -> Mark:
        return Mark(symbol, self.prices[symbol], ts_ms)

    def im(self, symbol: str, qty: Decimal) -> Decimal:
        """IM = |qty| × contract_size × mark × im_rate, exact; 0 for a flat position."""
        if not qty:
            return ZERO
        spec = SPECS[symbol]
        return abs(qty) * spec.contract_size * self.prices[symbol] * spec.im_rate

    def total_im(self, positions: dict[str, Decimal]) -> Decimal:
        return sum((self.im(s, q) for s, q in positions.items()), ZERO)

    def max_im(self, symbol: str) -> Decimal:
        """IM of a full-limit position at twice the start price: headroom for any day's drift."""
        spec = SPECS[symbol]
        return spec.max_lots * spec.lot * spec.contract_size * 2 * spec.start_ticks * spec.tick * spec.im_rate
