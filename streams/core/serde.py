"""Checkpoint and restore of engine state, as JSON-ready mappings (pure: no I/O, no clock).

A stream worker writes one mapping per account (`account_to_dict`) and one per partition engine
(`engine_to_dict`) to a changelog-backed table; a worker that takes the partition over rebuilds the
engine with `restore_engine`. Decimals in an account's mapping are left as `Decimal`: the writer
encodes each as its text (msgspec's default; `json.dumps(..., default=str)` writes the same bytes),
which is what restore reads back, and what rows written before held. Converting them here first cost
a dict and a string per value. Guarantees:

- a round trip loses nothing a verdict depends on: positions (absent stays absent, zero stays zero),
  sequence numbers, snapshots, the witness ledger and baseline, and every open episode with its
  version, so re-emitted events keep their ids and continue their version count;
- what is derived is recomputed, never persisted: set checksums, the unvaluable index, the
  open-anomaly count and the timers (an unconfirmed mismatch or anomaly re-arms its confirm timer at
  first_seen + grace; the sweep timer re-arms at its deadline);
- work not yet settled is persisted too (an account's dirty symbols, margin flag and baseline
  candidates): a driver may checkpoint between applying an instant's records and settling it (a
  stream worker does whenever every input is idle, so event time does not move on). Restored, that
  work is settled when time next moves, exactly as it would have been.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from streams.core import compare, witness
from streams.core.engine import MINUTE_MS, Engine
from streams.core.params import EngineConfig
from streams.core.records import Feed, Instrument, OgMargin, RiskSnapshot, parse_value
from streams.core.state import (
    AccountState,
    AnomalyEpisode,
    FlipEpisode,
    MismatchEpisode,
    UnvaluableEpisode,
)
from streams.core.tally import Tally

FORMAT = 1


def _D(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


def _Dmap(m: Mapping[str, Any]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in m.items()}


def _tagged(v: object) -> object:
    """Flip fields hold decimals, tuples, bools, ints and strings: tag what JSON would blur."""
    if isinstance(v, Decimal):
        return {"d": str(v)}
    if isinstance(v, tuple):
        return {"t": [_tagged(x) for x in v]}
    return v


def _untagged(v: Any) -> object:
    if isinstance(v, dict):
        return Decimal(v["d"]) if "d" in v else tuple(_untagged(x) for x in v["t"])
    return v


def _snap(s: RiskSnapshot | None) -> dict[str, Any] | None:
    """`record_to_value(s)`, spelled out (decimals left to the encoder): a snapshot is written with
    every account's checkpoint."""
    if s is None:
        return None
    return {"account_id": s.account_id, "published_ts_ms": s.published_ts_ms,
            "positions": [{"symbol": p.symbol, "qty": p.qty, "im": p.im} for p in s.positions],
            "im_total": s.im_total, "open_orders_margin": s.open_orders_margin,
            "equity": s.equity, "avail": s.avail}


def _og(m: OgMargin | None) -> dict[str, Any] | None:
    """`record_to_value(m)`, spelled out, as `_snap`."""
    if m is None:
        return None
    return {"account_id": m.account_id, "ts_ms": m.ts_ms, "positions_source": m.positions_source,
            "im_positions": m.im_positions, "open_orders_margin": m.open_orders_margin,
            "equity": m.equity, "avail": m.avail}


def _Snap(v: Any) -> RiskSnapshot | None:
    return None if v is None else parse_value(Feed.RISK, v)  # type: ignore[return-value]


def _mismatch(ep: MismatchEpisode) -> dict[str, Any]:
    return {"id": ep.event_id, "symbol": ep.symbol, "first_seen": ep.first_seen, "source": ep.source,
            "confirmed": ep.confirmed, "cls": ep.cls, "version": ep.version, "ep3_qty": ep.ep3_qty,
            "re_qty": ep.re_qty, "fresher": ep.fresher, "mark": ep.mark, "im_delta": ep.im_delta,
            "snapshot_age_ms": ep.snapshot_age_ms, "re_snapshot": _snap(ep.re_snapshot)}


def _Mismatch(v: Mapping[str, Any]) -> MismatchEpisode:
    return MismatchEpisode(v["id"], v["symbol"], v["first_seen"], v["source"], v["confirmed"], v["cls"],
                           v["version"], _D(v["ep3_qty"]), _D(v["re_qty"]), v["fresher"], _D(v["mark"]),
                           _D(v["im_delta"]), v["snapshot_age_ms"], _Snap(v["re_snapshot"]))


def _anomaly(ep: AnomalyEpisode) -> dict[str, Any]:
    return {"id": ep.event_id, "symbol": ep.symbol, "first_seen": ep.first_seen, "source": ep.source,
            "confirmed": ep.confirmed, "status": ep.status, "version": ep.version,
            "ledger_qty": ep.ledger_qty, "ep3_qty": ep.ep3_qty}


def _Anomaly(v: Mapping[str, Any]) -> AnomalyEpisode:
    return AnomalyEpisode(v["id"], v["symbol"], v["first_seen"], v["source"], v["confirmed"], v["status"],
                          v["version"], _D(v["ledger_qty"]), _D(v["ep3_qty"]))


def _flip(ep: FlipEpisode) -> dict[str, Any]:
    return {"id": ep.event_id, "threshold": str(ep.threshold), "opened": ep.opened, "source": ep.source,
            "version": ep.version, "fields": {k: _tagged(v) for k, v in ep.fields.items()}}


def _Flip(v: Mapping[str, Any]) -> FlipEpisode:
    return FlipEpisode(v["id"], Decimal(v["threshold"]), v["opened"], v["source"], v["version"],
                       {k: _untagged(x) for k, x in v["fields"].items()})


def _unvaluable(ep: UnvaluableEpisode) -> dict[str, Any]:
    return {"id": ep.event_id, "symbol": ep.symbol, "source": ep.source, "first_seen": ep.first_seen,
            "qty": ep.qty, "reason": ep.reason, "in_force": ep.source_in_force, "version": ep.version}


def _Unvaluable(v: Mapping[str, Any]) -> UnvaluableEpisode:
    return UnvaluableEpisode(v["id"], v["symbol"], v["source"], v["first_seen"], Decimal(v["qty"]), v["reason"],
                             v["in_force"], v["version"])


def _pending(a: AccountState) -> dict[str, Any] | None:
    if not a.unsettled:
        return None
    return {"dirty": sorted(a.dirty), "margin": a.margin_dirty,
            "candidates": {src: [ts, pos] for src, (ts, pos) in a.baseline_candidates.items()}}


def account_to_dict(a: AccountState) -> dict[str, Any]:
    """Everything of one account but its checksums and its RE view (`re`, `re_im`: restored from the
    snapshot they were made of), including work not settled yet. Written per
    touched account at every checkpoint: the live dicts and decimals go in as they are, so the row
    must be encoded before the engine runs again."""
    return {
        "account_id": a.account_id, "ep3": a.ep3, "ep3_touch": a.ep3_touch, "ep3_seq": a.ep3_seq,
        "ep3_ready": a.ep3_ready, "re_snapshot": _snap(a.re_snapshot), "og": _og(a.og),
        "ledger": a.ledger, "ledger_touch": a.ledger_touch,
        "baseline": a.baseline, "baseline_ts": a.baseline_ts,
        "mismatches": [_mismatch(e) for e in a.mismatches.values()],
        "anomalies": [_anomaly(e) for e in a.anomalies.values()],
        "flips": [_flip(e) for e in a.flips.values()],
        "unvaluable": [_unvaluable(e) for e in a.unvaluable.values()],
        "pending": _pending(a),
    }


def account_from_dict(v: Mapping[str, Any]) -> AccountState:
    """The inverse of `account_to_dict` (the set checksums are recomputed when a sweep needs them)."""
    a = AccountState(v["account_id"])
    a.ep3 = _Dmap(v["ep3"])
    a.ep3_touch = dict(v["ep3_touch"])
    a.ep3_seq, a.ep3_ready = v["ep3_seq"], v["ep3_ready"]
    a.re_snapshot = snap = _Snap(v["re_snapshot"])
    if "re" in v:  # rows written before the RE view was derived from the snapshot on restore
        a.re = None if v["re"] is None else _Dmap(v["re"])
        a.re_im = {k: _D(x) for k, x in v["re_im"].items()}
    elif snap is not None:  # the view `mirror.apply_risk` made of this snapshot
        a.re = {p.symbol: p.qty for p in snap.positions}
        a.re_im = {p.symbol: p.im for p in snap.positions}
    a.og = None if v["og"] is None else parse_value(Feed.OG_MARGIN, v["og"])  # type: ignore[assignment]
    a.ledger = None if v["ledger"] is None else _Dmap(v["ledger"])
    a.ledger_touch = dict(v["ledger_touch"])
    a.baseline, a.baseline_ts = v["baseline"], v["baseline_ts"]
    a.mismatches = {e.symbol: e for e in map(_Mismatch, v["mismatches"])}
    a.anomalies = {e.symbol: e for e in map(_Anomaly, v["anomalies"])}
    a.flips = {e.threshold: e for e in map(_Flip, v["flips"])}
    a.unvaluable = {(e.source, e.symbol): e for e in map(_Unvaluable, v["unvaluable"])}
    pending = v.get("pending")
    if pending:
        a.dirty = set(pending["dirty"])
        a.margin_dirty = pending["margin"]
        a.baseline_candidates = {src: (ts, _Dmap(pos)) for src, (ts, pos) in pending["candidates"].items()}
    return a


def engine_to_dict(e: Engine) -> dict[str, Any]:
    """The engine-wide part of a checkpoint: clock, positions source, prices, instruments, minute."""
    return {
        "format": FORMAT, "now": e.now, "started": e.started, "source": e.source,
        "source_key": list(e._source_key), "last_risk_ts": e.last_risk_ts,
        "marks": {symbol: str(price) for symbol, price in e.marks.items()},
        "instruments": {s: [str(i.contract_size), str(i.im_rate)] for s, i in e.instruments.items()},
        "next_sweep": e._next_sweep, "minute": e._minute, "minute_counts": e.minute_counts(),
        "stats": dict(e.stats),
    }


def restore_engine(cfg: EngineConfig, meta: Mapping[str, Any] | None, accounts: Iterable[AccountState]
                   ) -> Engine:
    """A settled engine equal (for every future verdict) to the one that was checkpointed."""
    e = Engine(cfg)
    if meta is not None:
        e.now, e.started, e.source = meta["now"], meta["started"], meta["source"]
        ts, account = meta.get("source_key", (0, ""))
        e._source_key, e.last_risk_ts = (ts, account), meta.get("last_risk_ts")
        e.marks = _Dmap(meta["marks"])
        e.instruments = {s: Instrument(s, Decimal(cs), Decimal(r)) for s, (cs, r) in meta["instruments"].items()}
        e._next_sweep, e._minute = meta["next_sweep"], meta["minute"]
        if e._minute is not None:
            e._minute_end = e._minute + MINUTE_MS
        e.set_minute_counts({Feed(feed): n for feed, n in meta["minute_counts"].items()})
        e.stats = Tally(meta["stats"])
        if e._next_sweep is not None:
            e.schedule(e._next_sweep, witness.SWEEP_TIMER, "", "", 0)
    for a in sorted(accounts, key=lambda a: a.account_id):
        _adopt(e, a)
    return e


def _adopt(e: Engine, a: AccountState) -> None:
    e.accounts[a.account_id] = a
    grace = e.cfg.grace_ms
    for m in a.mismatches.values():
        if m.confirmed is None:
            e.schedule(m.first_seen + grace, compare.MISMATCH_TIMER, a.account_id, m.symbol, m.first_seen)
    for an in a.anomalies.values():
        if an.confirmed is None:
            e.schedule(an.first_seen + grace, witness.ANOMALY_TIMER, a.account_id, an.symbol, an.first_seen)
        else:
            e.open_anomalies += 1
    for source, symbol in a.unvaluable:
        if source == "EP3":
            e.unvaluable_index.setdefault(symbol, set()).add(a.account_id)
    if a.unsettled:
        e._dirty[a.account_id] = a  # settled when time next moves, as before the checkpoint

