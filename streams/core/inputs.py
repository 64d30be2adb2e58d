"""Input records of DESIGN section 2, as immutable typed tuples.

Records are `NamedTuple`s rather than frozen dataclasses on purpose: they are built once per input
record on the hot path, and a frozen dataclass costs ~2 µs to construct against ~0.4 µs here
(measured in this repo), which alone would exceed the replay's budget. They are just as immutable.
Quantities and money are `Decimal`, never floats. A position that is *absent* is simply not listed;
a listed position with qty 0 is *present and flat*.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal, NamedTuple

Ep3Kind = Literal["SNAPSHOT", "UPDATE"]
PositionsSource = Literal["RISK_ENGINE", "EP3"]


class Feed(StrEnum):
    """Logical feeds; the values are the default Kafka topic names."""

    EP3 = "ep3.positions"
    RISK = "risk.snapshots"
    OG_MARGIN = "og.margin"
    FILLS = "fills"
    MARKS = "marks"
    INSTRUMENTS = "instruments"


class RecordError(ValueError):
    """A record violates the input contract; `field` names where."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class PositionQty(NamedTuple):
    symbol: str
    qty: Decimal


class Ep3PositionEvent(NamedTuple):
    account_id: str
    kind: Ep3Kind
    seq: int
    ts_ms: int
    positions: tuple[PositionQty, ...]


class RiskPosition(NamedTuple):
    symbol: str
    qty: Decimal
    im: Decimal | None


class RiskSnapshot(NamedTuple):
    account_id: str
    published_ts_ms: int
    positions: tuple[RiskPosition, ...]
    im_total: Decimal | None
    open_orders_margin: Decimal
    equity: Decimal
    avail: Decimal


class OgMargin(NamedTuple):
    account_id: str
    ts_ms: int
    positions_source: PositionsSource
    im_positions: Decimal | None
    open_orders_margin: Decimal
    equity: Decimal
    avail: Decimal


class Fill(NamedTuple):
    fill_id: str
    account_id: str
    symbol: str
    qty: Decimal
    price: Decimal
    ts_ms: int


class Mark(NamedTuple):
    symbol: str
    price: Decimal
    ts_ms: int


class Instrument(NamedTuple):
    symbol: str
    contract_size: Decimal
    im_rate: Decimal


Record = Ep3PositionEvent | RiskSnapshot | OgMargin | Fill | Mark | Instrument

FEED_OF: dict[type, Feed] = {
    Ep3PositionEvent: Feed.EP3,
    RiskSnapshot: Feed.RISK,
    OgMargin: Feed.OG_MARGIN,
    Fill: Feed.FILLS,
    Mark: Feed.MARKS,
    Instrument: Feed.INSTRUMENTS,
}
