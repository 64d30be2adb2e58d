"""Hypothesis strategies for values shaped like our input schemas, valid for the contract or not."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from streams.core.records import Feed

TS = 1_780_000_000_000

# Values shaped like the schemas, including contract violations the Avro types allow.
text = st.sampled_from(["", "ACC-1", "BTC-PERP", "ETH", "é€", "x" * 70])
symbol = st.sampled_from(["", "BTC", "ETH", "SOL", "x" * 70])
longs = st.one_of(st.integers(-200, 200), st.sampled_from([TS, -TS, 2**62 - 1, -(2**62), 2**63 - 1, -(2**63)]),
                  st.integers(-(2**63), 2**63 - 1))
decimals = st.one_of(
    st.sampled_from(["0", "-0", "1", "-1", "0.5", "13", "2342.123456789012", "-0.000000000001",
                     "99999999999999999999999999.999999999999"]),
    st.decimals(min_value=-10**12, max_value=10**12, places=3, allow_nan=False, allow_infinity=False).map(str),
)
opt_decimal = st.one_of(st.none(), decimals)


def _positions(item: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(item, max_size=5)


VALUES: dict[Feed, st.SearchStrategy[dict[str, Any]]] = {
    Feed.EP3: st.fixed_dictionaries({
        "account_id": text, "kind": st.sampled_from(["SNAPSHOT", "UPDATE", "", "snapshot", "DELETE"]),
        "seq": longs, "ts_ms": longs,
        "positions": _positions(st.fixed_dictionaries({"symbol": symbol, "qty": decimals})),
    }),
    Feed.RISK: st.fixed_dictionaries({
        "account_id": text, "published_ts_ms": longs,
        "positions": _positions(st.fixed_dictionaries({"symbol": symbol, "qty": decimals, "im": opt_decimal})),
        "im_total": opt_decimal, "open_orders_margin": decimals, "equity": decimals, "avail": decimals,
    }),
    Feed.OG_MARGIN: st.fixed_dictionaries({
        "account_id": text, "ts_ms": longs, "positions_source": st.sampled_from(["EP3", "RISK_ENGINE", "", "RE"]),
        "im_positions": opt_decimal, "open_orders_margin": decimals, "equity": decimals, "avail": decimals,
    }),
    Feed.FILLS: st.fixed_dictionaries({
        "fill_id": text, "account_id": text, "symbol": symbol, "qty": decimals, "price": decimals, "ts_ms": longs,
    }),
    Feed.MARKS: st.fixed_dictionaries({"symbol": symbol, "price": decimals, "ts_ms": longs}),
    Feed.INSTRUMENTS: st.fixed_dictionaries({"symbol": symbol, "contract_size": decimals, "im_rate": decimals}),
}


def damaged(data: bytes, keep: int = 0) -> st.SearchStrategy[bytes]:
    """`data` with one byte flipped, cut short, extended, or with bytes spliced in, all past its first
    `keep` bytes (a header the damage should leave alone)."""
    flip = st.tuples(st.integers(keep, len(data) - 1), st.integers(0, 255)).map(
        lambda t: data[:t[0]] + bytes([t[1]]) + data[t[0] + 1:])
    cut = st.integers(keep, len(data) - 1).map(lambda n: data[:n])
    extend = st.binary(min_size=1, max_size=4).map(lambda b: data + b)
    insert = st.tuples(st.integers(keep, len(data)), st.binary(min_size=1, max_size=3)).map(
        lambda t: data[:t[0]] + t[1] + data[t[0]:])
    return st.one_of(flip, cut, extend, insert)
