"""The gate's SQL: reads the evidence for `judge` from ClickHouse, with bound parameters only.

Guarantee: a query that fails (missing table, unreachable server, bad data) never raises out of
`gather`; its piece of evidence becomes None and a QUERY_ERROR reason names the query and the
error, so a broken database can only yield NOT_CLEARED. Exact queries read `FINAL` (the highest
version of each event). A mismatch, anomaly or unvaluable position counts when its active interval
[confirmed (or first seen), resolved or still open] overlaps the judged window: one confirmed before
the soak and still open inside it blocks; one resolved before the soak does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from streams.core.events import UNEXPLAINED_CLASSES
from streams.report.flips import FlipState, Transition, flip_state
from streams.report.gaps import all_gaps
from streams.report.gate import Finding, GateEvidence, Reason

T = TypeVar("T")
TABLES = ("position_mismatch", "avail_gap_flip", "unvaluable", "witness_check", "source_transition",
          "feed_health")
WITNESS_FEED = "witness.sweep"
EXPOSURE_FEED = "og.margin"

SQL_TRANSITIONS = """
SELECT ts_ms, from_source, to_source, account_id, scope
FROM {db:Identifier}.source_transition FINAL
WHERE env = {env:String} AND ts_ms <= {now:Int64}
ORDER BY ts_ms, event_id"""

SQL_UNEXPLAINED = """
SELECT account_id, symbol, `class`, toString(delta), fresher,
       coalesce(confirmed_ts_ms, first_seen_ts_ms) AS since, resolved_ts_ms
FROM {db:Identifier}.position_mismatch FINAL
WHERE env = {env:String} AND `class` IN {classes:Array(String)}
  AND coalesce(confirmed_ts_ms, first_seen_ts_ms) <= {now:Int64}
  AND (resolved_ts_ms IS NULL OR resolved_ts_ms >= {start:Int64})
ORDER BY since, event_id"""

SQL_ANOMALIES = """
SELECT account_id, symbol, status, toString(ledger_qty), toString(ep3_qty),
       coalesce(confirmed_ts_ms, first_seen_ts_ms, ts_ms) AS since, resolved_ts_ms
FROM {db:Identifier}.witness_check FINAL
WHERE env = {env:String} AND kind = 'anomaly'
  AND NOT (confirmed_ts_ms IS NULL AND resolved_ts_ms IS NOT NULL)
  AND coalesce(confirmed_ts_ms, first_seen_ts_ms, ts_ms) <= {now:Int64}
  AND (resolved_ts_ms IS NULL OR resolved_ts_ms >= {start:Int64})
ORDER BY since, event_id"""

SQL_UNVALUABLE = """
SELECT account_id, symbol, source, reason, toString(qty), first_seen_ts_ms, resolved_ts_ms
FROM {db:Identifier}.unvaluable FINAL
WHERE env = {env:String} AND first_seen_ts_ms <= {now:Int64}
  AND (resolved_ts_ms IS NULL OR resolved_ts_ms >= {start:Int64})
ORDER BY first_seen_ts_ms, event_id"""

SQL_FEED_MINUTES = """
SELECT feed, minute_ts_ms FROM {db:Identifier}.feed_health FINAL
WHERE env = {env:String} AND feed IN {feeds:Array(String)}
  AND minute_ts_ms >= {start:Int64} - 60000 AND minute_ts_ms <= {now:Int64}
GROUP BY feed, minute_ts_ms HAVING sum(records) > 0
ORDER BY feed, minute_ts_ms"""

SQL_SWEEP_MINUTES = """
SELECT intDiv(ts_ms, 60000) * 60000 AS minute FROM {db:Identifier}.witness_check FINAL
WHERE env = {env:String} AND kind = 'sweep'
  AND ts_ms >= {start:Int64} - 60000 AND ts_ms <= {now:Int64}
GROUP BY minute ORDER BY minute"""

SQL_CHECKS = """
SELECT sum(records) FROM {db:Identifier}.feed_health FINAL
WHERE env = {env:String} AND feed IN {feeds:Array(String)}
  AND minute_ts_ms >= {start:Int64} AND minute_ts_ms <= {now:Int64}"""


@dataclass(frozen=True, slots=True)
class GateQuery:
    """What to judge: env, the instant, the target, the silence threshold and the required feeds.

    `feed_names` maps each required logical feed to the names it may be recorded under in
    `feed_health` (the logical name and the configured topic).
    """

    database: str
    env: str
    now_ms: int
    target_ms: int
    max_silence_ms: int
    feed_names: dict[str, tuple[str, ...]]
    flip_window_ms: int = 60_000


class _Reader:
    """Runs queries and turns each failure into a QUERY_ERROR reason instead of an exception."""

    def __init__(self, client: Any, q: GateQuery) -> None:
        self.client, self.q, self.errors = client, q, list[Reason]()

    def rows(self, name: str, sql: str, **params: Any) -> list[Sequence[Any]] | None:
        bound = {"db": self.q.database, "env": self.q.env, "now": self.q.now_ms, **params}
        try:
            return list(self.client.query(sql, parameters=bound).result_rows)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.errors.append(Reason("QUERY_ERROR", f"{name}: {type(exc).__name__}: {first_line[:300]}"))
            return None

    def mapped(self, name: str, sql: str, fn: Callable[[Sequence[Any]], T], **params: Any) -> list[T] | None:
        rows = self.rows(name, sql, **params)
        return None if rows is None else [fn(r) for r in rows]


def _count_rows(r: _Reader) -> int | None:
    union = " UNION ALL ".join(
        f"SELECT count() AS n FROM {{db:Identifier}}.{t} WHERE env = {{env:String}}" for t in TABLES)
    rows = r.rows("rows in database", f"SELECT sum(n) FROM ({union})")
    return None if rows is None else int(rows[0][0] or 0)


def _flip(r: _Reader) -> FlipState | None:
    ts = r.mapped("source transitions", SQL_TRANSITIONS,
                  lambda x: Transition(int(x[0]), str(x[1]), str(x[2]), str(x[3]), str(x[4])))
    return None if ts is None else flip_state(ts, r.q.flip_window_ms)


def _findings(r: _Reader, start: int) -> tuple[list[Finding] | None, ...]:
    mism = r.mapped("unexplained mismatches", SQL_UNEXPLAINED, lambda x: Finding(
        "mismatch", x[0], x[1], f"{x[2]} delta={_q(x[3])} fresher={x[4]}", x[5], x[6]),
        classes=sorted(UNEXPLAINED_CLASSES), start=start)
    anom = r.mapped("witness anomalies", SQL_ANOMALIES, lambda x: Finding(
        "anomaly", x[0], x[1], f"{x[2]} ledger={_q(x[3])} ep3={_q(x[4])}", x[5], x[6]), start=start)
    unval = r.mapped("unvaluable positions", SQL_UNVALUABLE, lambda x: Finding(
        "unvaluable", x[0], x[1], f"{x[2]} {x[3]} qty={_q(x[4])}", x[5], x[6]), start=start)
    return mism, anom, unval


def _q(v: Any) -> str:
    """A quantity for people: `absent` for NULL, canonical digits otherwise (never `None`, never 12 zeros)."""
    from decimal import Decimal

    from streams.core.events import decimal_text

    if v is None:
        return "absent"
    return decimal_text(v) if isinstance(v, Decimal) else str(v)


def _minutes(r: _Reader, start: int) -> dict[str, list[int]] | None:
    names = {n: feed for feed, ns in r.q.feed_names.items() for n in ns if feed != WITNESS_FEED}
    out: dict[str, list[int]] = {feed: [] for feed in r.q.feed_names}
    rows = r.rows("feed health", SQL_FEED_MINUTES, feeds=sorted(names), start=start)
    if WITNESS_FEED in r.q.feed_names:
        sweeps = r.rows("witness sweeps", SQL_SWEEP_MINUTES, start=start)
        if sweeps is None:
            return None
        out[WITNESS_FEED] = [int(s[0]) for s in sweeps]
    if rows is None:
        return None
    for feed, minute in rows:
        out[names[feed]].append(int(minute))
    return out


def _checks(r: _Reader, start: int) -> int | None:
    names = list(r.q.feed_names.get(EXPOSURE_FEED, (EXPOSURE_FEED,)))
    rows = r.rows("exposure", SQL_CHECKS, feeds=names, start=start)
    return None if rows is None else int(rows[0][0] or 0)


def gather(client: Any, q: GateQuery) -> GateEvidence:
    """All the evidence for `judge`; never raises for a database problem (see module docstring)."""
    r = _Reader(client, q)
    rows_in_db = _count_rows(r)
    flip = _flip(r)
    soak_start = flip.soak_start_ms if flip is not None else None
    start = soak_start if soak_start is not None else q.now_ms - q.target_ms
    mism, anom, unval = _findings(r, start)
    minutes = _minutes(r, start)
    gaps = None if minutes is None else all_gaps(minutes, q.feed_names, start, q.now_ms, q.max_silence_ms)
    checks = _checks(r, start)
    return GateEvidence(
        env=q.env, now_ms=q.now_ms, target_ms=q.target_ms, window_start_ms=start, flip=flip,
        rows_in_db=rows_in_db, unexplained=mism, anomalies=anom, unvaluable=unval, gaps=gaps,
        checks=checks, required_feeds=tuple(q.feed_names), errors=tuple(r.errors))

