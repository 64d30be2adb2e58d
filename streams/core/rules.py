"""The contract's rules beyond field types, for records whose fields already have their declared
types (an Avro reader of our schemas guarantees them): `TYPED_RULES[feed](record)` is True when
`streams.core.records.parse_value` would accept exactly this record. False says nothing more: the
caller goes through `parse_value` for the verdict and its precise `RecordError`.

A module of its own so that it is compiled with the engine (`streams._native.COMPILED`): the
worker's batch decode calls one rule per record. On the bench's mixed traffic a call took 3.5k
instructions interpreted (most of them the distinct-symbols check of a risk snapshot's positions),
1.5k compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.core.inputs import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    RiskPosition,
    RiskSnapshot,
)


def symbols_ok(positions: tuple[PositionQty, ...] | tuple[RiskPosition, ...]) -> bool:
    """Every symbol non-empty, none twice."""
    n = len(positions)
    if n < 2:  # most updates list one symbol: no set to build
        return n == 0 or positions[0].symbol != ""
    seen = {p.symbol for p in positions}
    return len(seen) == n and "" not in seen


def ep3_ok(r: Ep3PositionEvent) -> bool:
    return r.account_id != "" and r.kind in ("SNAPSHOT", "UPDATE") and symbols_ok(r.positions)


def risk_ok(r: RiskSnapshot) -> bool:
    return r.account_id != "" and symbols_ok(r.positions)


def og_margin_ok(r: OgMargin) -> bool:
    return r.account_id != "" and r.positions_source in ("RISK_ENGINE", "EP3")


def fill_ok(r: Fill) -> bool:
    return r.fill_id != "" and r.account_id != "" and r.symbol != ""


def symbol_ok(r: Mark | Instrument) -> bool:
    return r.symbol != ""


TYPED_RULES: dict[Feed, Callable[[Any], bool]] = {
    Feed.EP3: ep3_ok,
    Feed.RISK: risk_ok,
    Feed.OG_MARGIN: og_margin_ok,
    Feed.FILLS: fill_ok,
    Feed.MARKS: symbol_ok,
    Feed.INSTRUMENTS: symbol_ok,
}
