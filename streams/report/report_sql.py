"""The report's SQL: reads final event versions for one env and time range, bound parameters only.

Guarantee: any failure raises `ReportQueryError` naming the query; partial results are never
presented as a report. Row counts are capped at `ROW_CAP` per query; `Fetched.truncated` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.report.rows import AnomalyRow, FlipRow, MismatchRow, SweepSummary, UnvaluableRow

ROW_CAP = 500_000

SQL_MISMATCHES = """
SELECT account_id, symbol, `class`, fresher, state, delta, first_seen_ts_ms, confirmed_ts_ms,
       resolved_ts_ms, snapshot_age_ms
FROM {db:Identifier}.position_mismatch FINAL
WHERE env = {env:String} AND first_seen_ts_ms < {until:Int64}
  AND (first_seen_ts_ms >= {since:Int64} OR resolved_ts_ms IS NULL OR resolved_ts_ms >= {since:Int64})
ORDER BY first_seen_ts_ms, event_id LIMIT {cap:UInt64}"""

SQL_FLIPS = """
SELECT account_id, threshold, opened_ts_ms, resolved_ts_ms, position_mismatch, gap,
       og_open_orders_margin, re_open_orders_margin, snapshot_age_ms
FROM {db:Identifier}.avail_gap_flip FINAL
WHERE env = {env:String} AND opened_ts_ms >= {since:Int64} AND opened_ts_ms < {until:Int64}
ORDER BY opened_ts_ms, event_id LIMIT {cap:UInt64}"""

SQL_UNVALUABLE = """
SELECT account_id, symbol, source, reason, state, first_seen_ts_ms, resolved_ts_ms
FROM {db:Identifier}.unvaluable FINAL
WHERE env = {env:String} AND first_seen_ts_ms >= {since:Int64} AND first_seen_ts_ms < {until:Int64}
ORDER BY first_seen_ts_ms, event_id LIMIT {cap:UInt64}"""

SQL_ANOMALIES = """
SELECT account_id, symbol, status, state, coalesce(first_seen_ts_ms, ts_ms) AS t, resolved_ts_ms
FROM {db:Identifier}.witness_check FINAL
WHERE env = {env:String} AND kind = 'anomaly' AND t >= {since:Int64} AND t < {until:Int64}
ORDER BY t, event_id LIMIT {cap:UInt64}"""

SQL_SWEEPS = """
SELECT count(), max(coalesce(accounts_checked, 0)), max(oldest_dormant_age_ms)
FROM {db:Identifier}.witness_check FINAL
WHERE env = {env:String} AND kind = 'sweep' AND ts_ms >= {since:Int64} AND ts_ms < {until:Int64}"""


class ReportQueryError(RuntimeError):
    """A report query failed; the message names the query and the ClickHouse error."""


@dataclass(frozen=True, slots=True)
class Fetched:
    mismatches: list[MismatchRow]
    flips: list[FlipRow]
    unvaluable: list[UnvaluableRow]
    anomalies: list[AnomalyRow]
    sweeps: SweepSummary
    truncated: bool


def _rows(client: Any, name: str, sql: str, params: dict[str, Any]) -> list[Any]:
    try:
        return list(client.query(sql, parameters=params).result_rows)
    except Exception as exc:
        raise ReportQueryError(f"{name}: {type(exc).__name__}: {str(exc).strip()[:300]}") from exc


def fetch(client: Any, database: str, env: str, since_ms: int, until_ms: int) -> Fetched:
    """Every row the report needs for `env` in `[since_ms, until_ms)`."""
    p = {"db": database, "env": env, "since": since_ms, "until": until_ms, "cap": ROW_CAP}
    mism = [MismatchRow(*r) for r in _rows(client, "mismatches", SQL_MISMATCHES, p)]
    flips = [FlipRow(r[0], r[1], r[2], r[3], bool(r[4]), *r[5:]) for r in _rows(client, "flips", SQL_FLIPS, p)]
    unval = [UnvaluableRow(*r) for r in _rows(client, "unvaluable", SQL_UNVALUABLE, p)]
    anom = [AnomalyRow(*r) for r in _rows(client, "witness anomalies", SQL_ANOMALIES, p)]
    n, checked, oldest = _rows(client, "witness sweeps", SQL_SWEEPS, p)[0]
    sweeps = SweepSummary(int(n), int(checked or 0), None if oldest is None else int(oldest))
    truncated = any(len(x) >= ROW_CAP for x in (mism, flips, unval, anom))
    return Fetched(mism, flips, unval, anom, sweeps, truncated)
