"""Input records (re-exported from `streams.core.inputs`) and their fast validating parser.

`parse_value(feed, mapping)` turns a decoded mapping (from JSON Lines or Avro) into a record and
raises `RecordError` naming the offending field, so drivers can report file/line or send the record
to a dead-letter topic with a reason. The parser never invents a zero: absent stays absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from streams.core.checked import (
    checked_ep3,
    checked_fill,
    checked_instrument,
    checked_mark,
    checked_og_margin,
    checked_risk,
    to_decimal,
)
from streams.core.inputs import (
    FEED_OF,
    Ep3Kind,
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    PositionsSource,
    Record,
    RecordError,
    RiskPosition,
    RiskSnapshot,
)
from streams.core.rules import TYPED_RULES

__all__ = [
    "FEED_OF", "PARSERS", "TYPED_RULES", "Ep3Kind", "Ep3PositionEvent", "Feed", "Fill", "Instrument", "Mark",
    "OgMargin", "PositionQty", "PositionsSource", "Record", "RecordError", "RiskPosition", "RiskSnapshot", "parse_ep3",
    "parse_fill", "parse_instrument", "parse_mark", "parse_og_margin", "parse_risk", "parse_value",
    "record_to_value", "to_decimal",
]

# Fast paths: the common, valid record is built with plain lookups and exact type checks; anything
# unusual (a missing key, a wrong type, an int where a string is usual) falls through to the checked
# parser above, which either accepts it or raises the precise RecordError.

_D = Decimal


def _s(v: Any) -> bool:
    return type(v) is str and v != ""


_DEC_CACHE_MAX = 1 << 16


class _DecimalCache(dict[str, Decimal]):
    """Decimal text -> Decimal, for the fast parsers: `_dec[v]`.

    Quantities and margins repeat ("0", "1", "-2") and Decimals are immutable, so most values (~3 in
    4 on a simulated day) are cache hits, and as a dict subscript a hit costs no Python call (a
    replay converts ~4.6 values per record; the former `_d()` call was the parser's largest cost).
    A miss lands in `__missing__`, which converts and validates: anything but a str or Decimal (or
    an unhashable value) raises TypeError, a non-finite value ValueError, so the caller falls back
    to the checked parser exactly as before."""

    def __missing__(self, v: Any) -> Decimal:
        tv = type(v)
        if tv is str:
            d = _D(v)
            if not d.is_finite():
                raise ValueError
            if len(self) >= _DEC_CACHE_MAX:
                # start over rather than keep the first values forever: a long tape drifts away from
                # them (on a 1M-record day this halves the misses: 2.1M -> 1.1M of 4.6M lookups)
                self.clear()
            self[v] = d
            return d
        if tv is _D:  # the Avro codec hands over finished decimals: nothing to convert or cache
            if not v.is_finite():
                raise ValueError
            return v  # type: ignore[no-any-return]
        raise TypeError


_dec = _DecimalCache()


def _positions(raw: Any) -> tuple[PositionQty, ...]:
    dec = _dec
    out = tuple([PositionQty(p["symbol"], dec[p["qty"]]) for p in raw])
    if not all(_s(p.symbol) for p in out) or len({p.symbol for p in out}) != len(out):
        raise ValueError
    return out


def parse_ep3(m: Mapping[str, Any]) -> Ep3PositionEvent:
    try:
        r = Ep3PositionEvent(m["account_id"], m["kind"], m["seq"], m["ts_ms"], _positions(m["positions"]))
        if _s(r.account_id) and r.kind in ("SNAPSHOT", "UPDATE") and type(r.seq) is int and type(r.ts_ms) is int:
            return r
    except Exception:
        pass
    return checked_ep3(m)


def parse_risk(m: Mapping[str, Any]) -> RiskSnapshot:
    try:
        dec = _dec
        # a list comprehension, not tuple(<generator>): a generator resumes once per position
        pos = tuple([RiskPosition(p["symbol"], dec[p["qty"]], None if (im := p.get("im")) is None else dec[im])
                     for p in m["positions"]])
        im = m.get("im_total")
        r = RiskSnapshot(m["account_id"], m["published_ts_ms"], pos, None if im is None else dec[im],
                         dec[m["open_orders_margin"]], dec[m["equity"]], dec[m["avail"]])
        if (_s(r.account_id) and type(r.published_ts_ms) is int and all(_s(p.symbol) for p in pos)
                and len({p.symbol for p in pos}) == len(pos)):
            return r
    except Exception:
        pass
    return checked_risk(m)


def parse_og_margin(m: Mapping[str, Any]) -> OgMargin:
    try:
        im = m.get("im_positions")
        r = OgMargin(m["account_id"], m["ts_ms"], m["positions_source"], None if im is None else _dec[im],
                     _dec[m["open_orders_margin"]], _dec[m["equity"]], _dec[m["avail"]])
        if _s(r.account_id) and type(r.ts_ms) is int and r.positions_source in ("RISK_ENGINE", "EP3"):
            return r
    except Exception:
        pass
    return checked_og_margin(m)


def parse_fill(m: Mapping[str, Any]) -> Fill:
    try:
        r = Fill(m["fill_id"], m["account_id"], m["symbol"], _dec[m["qty"]], _dec[m["price"]], m["ts_ms"])
        if _s(r.fill_id) and _s(r.account_id) and _s(r.symbol) and type(r.ts_ms) is int:
            return r
    except Exception:
        pass
    return checked_fill(m)


def parse_mark(m: Mapping[str, Any]) -> Mark:
    try:
        r = Mark(m["symbol"], _dec[m["price"]], m["ts_ms"])
        if _s(r.symbol) and type(r.ts_ms) is int:
            return r
    except Exception:
        pass
    return checked_mark(m)


def parse_instrument(m: Mapping[str, Any]) -> Instrument:
    try:
        r = Instrument(m["symbol"], _dec[m["contract_size"]], _dec[m["im_rate"]])
        if _s(r.symbol):
            return r
    except Exception:
        pass
    return checked_instrument(m)


PARSERS: dict[Feed, Callable[[Mapping[str, Any]], Record]] = {
    Feed.EP3: parse_ep3,
    Feed.RISK: parse_risk,
    Feed.OG_MARGIN: parse_og_margin,
    Feed.FILLS: parse_fill,
    Feed.MARKS: parse_mark,
    Feed.INSTRUMENTS: parse_instrument,
}


def parse_value(feed: Feed, value: Mapping[str, Any]) -> Record:
    """Validate a decoded mapping against the contract of `feed` and build its record."""
    if type(value) is not dict and not isinstance(value, Mapping):  # the exact check first: ABC checks are slow
        raise RecordError(f"expected an object, got {type(value).__name__}", "value")
    return PARSERS[feed](value)


def record_to_value(record: Record) -> dict[str, Any]:
    """The inverse of `parse_value`: plain mapping, decimals as strings, absent `im` as None."""
    out: dict[str, Any] = {}
    for name in record._fields:
        v = getattr(record, name)
        if isinstance(v, Decimal):
            v = str(v)
        elif isinstance(v, tuple):
            v = [{k: (str(x) if isinstance(x, Decimal) else x) for k, x in zip(p._fields, p, strict=True)}
                 for p in v]
        out[name] = v
    return out
