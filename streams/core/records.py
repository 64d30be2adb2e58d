"""Input records of DESIGN section 2, as immutable typed tuples, and their validating parser.

Records are `NamedTuple`s rather than frozen dataclasses on purpose: they are built once per input
record on the hot path, and a frozen dataclass costs ~2 µs to construct against ~0.4 µs here
(measured in this repo), which alone would exceed the replay's budget. They are just as immutable.

Quantities and money are `Decimal`, never floats. A position that is *absent* is simply not listed;
a listed position with qty 0 is *present and flat*. The parser keeps that distinction: it never
invents a zero.

`parse_value(feed, mapping)` turns a decoded mapping (from JSON Lines or Avro) into a record and
raises `RecordError` naming the offending field, so drivers can report file/line or send the record
to a dead-letter topic with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, NamedTuple

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


# --- parsing -------------------------------------------------------------------------------------


def _get(m: Mapping[str, Any], name: str, where: str) -> Any:
    if type(m) is not dict and not isinstance(m, Mapping):
        raise RecordError(f"expected an object, got {type(m).__name__}", where or "value")
    try:
        return m[name]
    except KeyError:
        raise RecordError("missing", f"{where}{name}") from None


def _str(m: Mapping[str, Any], name: str, where: str = "") -> str:
    v = _get(m, name, where)
    if not isinstance(v, str) or not v:
        raise RecordError(f"expected a non-empty string, got {v!r}", f"{where}{name}")
    return v


def _int(m: Mapping[str, Any], name: str, where: str = "") -> int:
    v = _get(m, name, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecordError(f"expected an integer, got {v!r}", f"{where}{name}")
    return v


def to_decimal(v: Any, field: str) -> Decimal:
    """Decimal from a string, int or Decimal. Floats are refused: positions are never binary floats."""
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, str):
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise RecordError(f"not a decimal: {v!r}", field) from None
    elif isinstance(v, int) and not isinstance(v, bool):
        d = Decimal(v)
    else:
        raise RecordError(f"expected a decimal string, got {v!r}", field)
    if not d.is_finite():
        raise RecordError(f"not a finite decimal: {v!r}", field)
    return d


def _dec(m: Mapping[str, Any], name: str, where: str = "") -> Decimal:
    return to_decimal(_get(m, name, where), f"{where}{name}")


def _opt_dec(m: Mapping[str, Any], name: str, where: str = "") -> Decimal | None:
    v = m.get(name) if isinstance(m, Mapping) else None
    return None if v is None else to_decimal(v, f"{where}{name}")


def _list(m: Mapping[str, Any], name: str) -> Sequence[Any]:
    v = _get(m, name, "")
    if not isinstance(v, list | tuple):
        raise RecordError(f"expected a list, got {type(v).__name__}", name)
    return v


def _symbols_unique(symbols: list[str], field: str) -> None:
    if len(set(symbols)) != len(symbols):
        dup = next(s for s in symbols if symbols.count(s) > 1)
        raise RecordError(f"symbol {dup!r} listed twice", field)


def _checked_ep3(m: Mapping[str, Any]) -> Ep3PositionEvent:
    kind = _get(m, "kind", "")
    if kind not in ("SNAPSHOT", "UPDATE"):
        raise RecordError(f"expected SNAPSHOT or UPDATE, got {kind!r}", "kind")
    positions = tuple(
        PositionQty(_str(p, "symbol", f"positions[{i}]."), _dec(p, "qty", f"positions[{i}]."))
        for i, p in enumerate(_list(m, "positions"))
    )
    _symbols_unique([p.symbol for p in positions], "positions")
    return Ep3PositionEvent(_str(m, "account_id"), kind, _int(m, "seq"), _int(m, "ts_ms"), positions)


def _checked_risk(m: Mapping[str, Any]) -> RiskSnapshot:
    positions = tuple(
        RiskPosition(
            _str(p, "symbol", f"positions[{i}]."),
            _dec(p, "qty", f"positions[{i}]."),
            _opt_dec(p, "im", f"positions[{i}]."),
        )
        for i, p in enumerate(_list(m, "positions"))
    )
    _symbols_unique([p.symbol for p in positions], "positions")
    return RiskSnapshot(
        _str(m, "account_id"),
        _int(m, "published_ts_ms"),
        positions,
        _opt_dec(m, "im_total"),
        _dec(m, "open_orders_margin"),
        _dec(m, "equity"),
        _dec(m, "avail"),
    )


def _checked_og_margin(m: Mapping[str, Any]) -> OgMargin:
    source = _get(m, "positions_source", "")
    if source not in ("RISK_ENGINE", "EP3"):
        raise RecordError(f"expected RISK_ENGINE or EP3, got {source!r}", "positions_source")
    return OgMargin(
        _str(m, "account_id"),
        _int(m, "ts_ms"),
        source,
        _opt_dec(m, "im_positions"),
        _dec(m, "open_orders_margin"),
        _dec(m, "equity"),
        _dec(m, "avail"),
    )


def _checked_fill(m: Mapping[str, Any]) -> Fill:
    return Fill(
        _str(m, "fill_id"),
        _str(m, "account_id"),
        _str(m, "symbol"),
        _dec(m, "qty"),
        _dec(m, "price"),
        _int(m, "ts_ms"),
    )


def _checked_mark(m: Mapping[str, Any]) -> Mark:
    return Mark(_str(m, "symbol"), _dec(m, "price"), _int(m, "ts_ms"))


def _checked_instrument(m: Mapping[str, Any]) -> Instrument:
    return Instrument(_str(m, "symbol"), _dec(m, "contract_size"), _dec(m, "im_rate"))



# Fast paths: the common, valid record is built with plain lookups and exact type checks; anything
# unusual (a missing key, a wrong type, an int where a string is usual) falls through to the checked
# parser above, which either accepts it or raises the precise RecordError.

_D = Decimal


def _s(v: Any) -> bool:
    return type(v) is str and v != ""


_DEC_CACHE: dict[str, Decimal] = {}  # quantities and margins repeat ("0", "1", "-2"): Decimals are immutable
_DEC_CACHE_MAX = 1 << 16


def _d(v: Any) -> Decimal:
    tv = type(v)
    if tv is str:
        cached = _DEC_CACHE.get(v)
        if cached is not None:
            return cached
        d = _D(v)
        if d.is_finite() and len(_DEC_CACHE) < _DEC_CACHE_MAX:
            _DEC_CACHE[v] = d
    elif tv is _D:  # the Avro codec hands over finished decimals
        d = v
    else:
        raise TypeError
    if not d.is_finite():
        raise ValueError
    return d


def _positions(raw: Any) -> tuple[PositionQty, ...]:
    out = tuple(PositionQty(p["symbol"], _d(p["qty"])) for p in raw)
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
    return _checked_ep3(m)


def parse_risk(m: Mapping[str, Any]) -> RiskSnapshot:
    try:
        pos = tuple(RiskPosition(p["symbol"], _d(p["qty"]), None if p.get("im") is None else _d(p["im"]))
                    for p in m["positions"])
        im = m.get("im_total")
        r = RiskSnapshot(m["account_id"], m["published_ts_ms"], pos, None if im is None else _d(im),
                         _d(m["open_orders_margin"]), _d(m["equity"]), _d(m["avail"]))
        if (_s(r.account_id) and type(r.published_ts_ms) is int and all(_s(p.symbol) for p in pos)
                and len({p.symbol for p in pos}) == len(pos)):
            return r
    except Exception:
        pass
    return _checked_risk(m)


def parse_og_margin(m: Mapping[str, Any]) -> OgMargin:
    try:
        im = m.get("im_positions")
        r = OgMargin(m["account_id"], m["ts_ms"], m["positions_source"], None if im is None else _d(im),
                     _d(m["open_orders_margin"]), _d(m["equity"]), _d(m["avail"]))
        if _s(r.account_id) and type(r.ts_ms) is int and r.positions_source in ("RISK_ENGINE", "EP3"):
            return r
    except Exception:
        pass
    return _checked_og_margin(m)


def parse_fill(m: Mapping[str, Any]) -> Fill:
    try:
        r = Fill(m["fill_id"], m["account_id"], m["symbol"], _d(m["qty"]), _d(m["price"]), m["ts_ms"])
        if _s(r.fill_id) and _s(r.account_id) and _s(r.symbol) and type(r.ts_ms) is int:
            return r
    except Exception:
        pass
    return _checked_fill(m)


def parse_mark(m: Mapping[str, Any]) -> Mark:
    try:
        r = Mark(m["symbol"], _d(m["price"]), m["ts_ms"])
        if _s(r.symbol) and type(r.ts_ms) is int:
            return r
    except Exception:
        pass
    return _checked_mark(m)


def parse_instrument(m: Mapping[str, Any]) -> Instrument:
    try:
        r = Instrument(m["symbol"], _d(m["contract_size"]), _d(m["im_rate"]))
        if _s(r.symbol):
            return r
    except Exception:
        pass
    return _checked_instrument(m)


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
    if not isinstance(value, Mapping):
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
