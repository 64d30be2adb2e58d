"""Typed rows the report reads from ClickHouse (one final version per event), and a distribution.

Kept apart from the SQL so that `attribution` is a pure function of these rows and can be tested
without a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class MismatchRow:
    account_id: str
    symbol: str
    cls: str | None
    fresher: str
    state: str
    delta: Decimal
    first_seen_ts_ms: int
    confirmed_ts_ms: int | None
    resolved_ts_ms: int | None
    snapshot_age_ms: int | None


@dataclass(frozen=True, slots=True)
class FlipRow:
    account_id: str
    threshold: Decimal
    opened_ts_ms: int
    resolved_ts_ms: int | None
    position_mismatch: bool
    gap: Decimal
    og_open_orders_margin: Decimal
    re_open_orders_margin: Decimal
    snapshot_age_ms: int


@dataclass(frozen=True, slots=True)
class UnvaluableRow:
    account_id: str
    symbol: str
    source: str
    reason: str
    state: str
    first_seen_ts_ms: int
    resolved_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    account_id: str | None
    symbol: str | None
    status: str | None
    state: str | None
    ts_ms: int
    resolved_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class SweepSummary:
    sweeps: int
    accounts_checked_max: int
    oldest_dormant_age_ms_max: int | None


def _tidy(d: Decimal) -> Decimal:
    """Drop the trailing zeros of Decimal(38,12) values without switching to exponent notation."""
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


@dataclass(frozen=True, slots=True)
class Dist:
    """Nearest-rank distribution; all None when there are no values (never a made-up zero)."""

    n: int
    min: Decimal | None
    p50: Decimal | None
    p90: Decimal | None
    p99: Decimal | None
    max: Decimal | None

    @classmethod
    def of(cls, values: Iterable[Decimal | int]) -> Dist:
        xs = sorted(_tidy(Decimal(v)) for v in values)
        if not xs:
            return cls(0, None, None, None, None, None)

        def rank(q: int) -> Decimal:
            return xs[max(0, -(-q * len(xs) // 100) - 1)]

        return cls(len(xs), xs[0], rank(50), rank(90), rank(99), xs[-1])
