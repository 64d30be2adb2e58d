"""Typed decoding of JSON Lines tape records with msgspec: the reader's fast path.

One `msgspec.json.Decoder` per topic map decodes a whole line (`{"topic", "ts_ms", "value"}`) in C
straight into small structs, checking on the way what the contract checks first: the topic is known,
`ts_ms` and `seq` are integers (not bools, not floats), names are non-empty strings, `kind` and
`positions_source` are one of their values, decimals are strings. Each value struct then builds the
record (`record()`), converting decimals and checking what msgspec can't (finite decimals, symbols
listed once).

It only ever accepts, never rejects: a line it can't take whole (bad JSON, NaN, a lone surrogate, an
int quantity, a contract violation, anything unusual) raises, and the reader then reads that line the
json way, which accepts it or rejects it with the same message as before. So it must never accept a
line the json path would reject, nor build a different record: tests/unit/test_tapes_jsonl.py
compares the two paths on a corpus of valid and bad lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, Union

import msgspec

from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    RiskPosition,
    RiskSnapshot,
    _DecimalCache,
)

Name = Annotated[str, msgspec.Meta(min_length=1)]

# Decimals come two ways. Quantities, prices, rates and most equities repeat ("1", "-0.5", "400"),
# so they go through a cache (a hit is a dict subscript, no call). Computed margins (im, im_total,
# avail, im_positions) rarely repeat (on a simulated day 50-99% are new), a cache miss costs ~4x a
# plain Decimal(), and they would evict the values that do repeat: they are converted directly and
# checked finite here (the cache checks its own misses).
_cached = _DecimalCache()
_D = Decimal
_new = tuple.__new__  # what a NamedTuple's generated __new__ calls, without its Python frame


def _not_finite() -> Any:
    """Raised from inside an expression, where the unusual value was met (the json path then says why)."""
    raise ValueError


class _Qty(msgspec.Struct, gc=False):
    symbol: Name
    qty: str


class _Ep3(msgspec.Struct, gc=False):
    account_id: Name
    kind: Literal["SNAPSHOT", "UPDATE"]
    seq: int
    ts_ms: int
    positions: list[_Qty]

    def record(self) -> Ep3PositionEvent:
        c, ps = _cached, self.positions
        if len(ps) == 1:  # most events move one position: no list comprehension, nothing to compare
            p = ps[0]
            pos: tuple[PositionQty, ...] = (_new(PositionQty, (p.symbol, c[p.qty])),)
        else:
            pos = tuple([_new(PositionQty, (p.symbol, c[p.qty])) for p in ps])
            if len({p.symbol for p in ps}) != len(pos):
                raise ValueError
        return _new(Ep3PositionEvent, (self.account_id, self.kind, self.seq, self.ts_ms, pos))


class _RiskPos(msgspec.Struct, gc=False):
    symbol: Name
    qty: str
    im: str | None = None


class _Risk(msgspec.Struct, gc=False):
    account_id: Name
    published_ts_ms: int
    positions: list[_RiskPos]
    open_orders_margin: str
    equity: str
    avail: str
    im_total: str | None = None

    def record(self) -> RiskSnapshot:
        # each margin is checked finite where it is converted (a call of _finite(*all of them) and
        # the list it needed were ~12% of this method)
        c, d, ps = _cached, _D, self.positions
        pos = tuple([_new(RiskPosition, (p.symbol, c[p.qty], None if (im := p.im) is None
                                         else x if (x := d(im)).is_finite() else _not_finite()))
                     for p in ps])
        if len(pos) > 1 and len({p.symbol for p in ps}) != len(pos):
            raise ValueError
        im_total, avail = None if (t := self.im_total) is None else d(t), d(self.avail)
        if not avail.is_finite() or (im_total is not None and not im_total.is_finite()):
            raise ValueError
        return _new(RiskSnapshot, (self.account_id, self.published_ts_ms, pos, im_total,
                                   c[self.open_orders_margin], c[self.equity], avail))


class _Og(msgspec.Struct, gc=False):
    account_id: Name
    ts_ms: int
    positions_source: Literal["RISK_ENGINE", "EP3"]
    open_orders_margin: str
    equity: str
    avail: str
    im_positions: str | None = None

    def record(self) -> OgMargin:
        c, d = _cached, _D
        im, avail = None if (t := self.im_positions) is None else d(t), d(self.avail)
        if not avail.is_finite() or (im is not None and not im.is_finite()):
            raise ValueError
        return _new(OgMargin, (self.account_id, self.ts_ms, self.positions_source, im,
                               c[self.open_orders_margin], c[self.equity], avail))


class _Fill(msgspec.Struct, gc=False):
    fill_id: Name
    account_id: Name
    symbol: Name
    qty: str
    price: str
    ts_ms: int

    def record(self) -> Fill:
        c = _cached
        return _new(Fill, (self.fill_id, self.account_id, self.symbol, c[self.qty], c[self.price],
                           self.ts_ms))


class _Mark(msgspec.Struct, gc=False):
    symbol: Name
    price: str
    ts_ms: int

    def record(self) -> Mark:
        return _new(Mark, (self.symbol, _cached[self.price], self.ts_ms))


class _Instrument(msgspec.Struct, gc=False):
    symbol: Name
    contract_size: str
    im_rate: str

    def record(self) -> Instrument:
        c = _cached
        return _new(Instrument, (self.symbol, c[self.contract_size], c[self.im_rate]))


VALUE_STRUCT: dict[Feed, type[msgspec.Struct]] = {
    Feed.EP3: _Ep3,
    Feed.RISK: _Risk,
    Feed.OG_MARGIN: _Og,
    Feed.FILLS: _Fill,
    Feed.MARKS: _Mark,
    Feed.INSTRUMENTS: _Instrument,
}


class TapeLine(msgspec.Struct, gc=False):
    """A decoded line: `ts_ms`, `value` (a value struct with `record()`), and its topic's `feed`."""

    feed: ClassVar[Feed]
    ts_ms: int
    value: Any


def decoder(topics: Mapping[str, Feed]) -> msgspec.json.Decoder[Any]:
    """A decoder for a line on any of `topics`: a union of line structs tagged by topic name."""
    return _decoder(tuple(sorted(topics.items())))


@lru_cache(maxsize=16)
def _decoder(topics: tuple[tuple[str, Feed], ...]) -> msgspec.json.Decoder[Any]:
    lines = tuple(
        msgspec.defstruct(f"TapeLine{i}", [("value", VALUE_STRUCT[feed])], bases=(TapeLine,), tag_field="topic",
                          tag=topic, namespace={"feed": feed}, gc=False)
        for i, (topic, feed) in enumerate(topics)
    )
    return msgspec.json.Decoder(Union[lines])  # noqa: UP007 (a union of a runtime tuple)

