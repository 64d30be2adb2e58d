"""The checked parser: validates a decoded mapping field by field and names what is wrong.

It is the slow path of `streams.core.records.parse_value`, taken only when the fast path meets
anything unusual, so a bad record always gets a `RecordError` that names the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.core.inputs import (
    Ep3PositionEvent,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    PositionQty,
    RecordError,
    RiskPosition,
    RiskSnapshot,
)


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


def checked_ep3(m: Mapping[str, Any]) -> Ep3PositionEvent:
    kind = _get(m, "kind", "")
    if kind not in ("SNAPSHOT", "UPDATE"):
        raise RecordError(f"expected SNAPSHOT or UPDATE, got {kind!r}", "kind")
    positions = tuple(
        PositionQty(_str(p, "symbol", f"positions[{i}]."), _dec(p, "qty", f"positions[{i}]."))
        for i, p in enumerate(_list(m, "positions"))
    )
    _symbols_unique([p.symbol for p in positions], "positions")
    return Ep3PositionEvent(_str(m, "account_id"), kind, _int(m, "seq"), _int(m, "ts_ms"), positions)


def checked_risk(m: Mapping[str, Any]) -> RiskSnapshot:
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


def checked_og_margin(m: Mapping[str, Any]) -> OgMargin:
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


def checked_fill(m: Mapping[str, Any]) -> Fill:
    return Fill(
        _str(m, "fill_id"),
        _str(m, "account_id"),
        _str(m, "symbol"),
        _dec(m, "qty"),
        _dec(m, "price"),
        _int(m, "ts_ms"),
    )


def checked_mark(m: Mapping[str, Any]) -> Mark:
    return Mark(_str(m, "symbol"), _dec(m, "price"), _int(m, "ts_ms"))


def checked_instrument(m: Mapping[str, Any]) -> Instrument:
    return Instrument(_str(m, "symbol"), _dec(m, "contract_size"), _dec(m, "im_rate"))
