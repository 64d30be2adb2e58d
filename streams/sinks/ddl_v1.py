"""Schema version 1: the event tables of DESIGN section 3 and the hourly rollup.

Frozen once released: a later schema change is a new migration (ALTER ...), never an edit here.
Every statement is idempotent (IF NOT EXISTS), so a half-applied migration can be re-run.

Event tables: ReplacingMergeTree(version) ordered by (env, <stable time column>, event_id) and
partitioned by the UTC day of the stable time column, so all versions of one event_id share a sort
key and a partition and collapse to the highest version (exact queries use FINAL). Plain-MergeTree
insert deduplication is off by default; `non_replicated_deduplication_window` turns it on, and the
sink sends a deterministic `insert_deduplication_token` per batch and table.

Rollup: `events_hourly` (AggregatingMergeTree) holds `uniqExactState(event_id)` per
(env, type, class, hour of the stable time column), fed by one materialized view per table. Counting
distinct event ids makes it exact however many versions or redeliveries of an event arrive, provided
an event's class never changes once it is fed: mismatches feed only rows whose class is final
(`class IS NOT NULL`; it is null while opened, then fixed forever), witness rows only anomalies with a
status, unvaluable rows use `reason`, transitions `to_source`, flips have no class (''). feed_health is
not rolled up (it already is a per-minute count). The query::

    SELECT hour, env, type, class, uniqExactMerge(events) AS events
    FROM {db}.events_hourly
    WHERE env = {env:String} AND hour >= {start:DateTime} AND hour < {end:DateTime}
    GROUP BY hour, env, type, class ORDER BY hour, type, class
"""

from __future__ import annotations

from streams.sinks.schema import ROLLUP_TABLE, TIME_COLUMN

D = "Decimal(38, 12)"
ND = f"Nullable({D})"
LC = "LowCardinality(String)"
NLC = "LowCardinality(Nullable(String))"
NI = "Nullable(Int64)"
_HEAD = [("event_id", "String"), ("version", "UInt64"), ("env", LC), ("positions_source", LC)]

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "position_mismatch": [*_HEAD, ("account_id", "String"), ("symbol", "String"), ("state", LC),
                          ("class", NLC), ("ep3_qty", ND), ("re_qty", ND), ("delta", D),
                          ("first_seen_ts_ms", "Int64"), ("confirmed_ts_ms", NI), ("resolved_ts_ms", NI),
                          ("fresher", LC), ("mark", ND), ("im_delta", ND), ("equity", ND),
                          ("snapshot_age_ms", NI), ("re_im_total", ND), ("re_avail", ND),
                          ("re_open_orders_margin", ND)],
    "avail_gap_flip": [*_HEAD, ("account_id", "String"), ("threshold", D), ("state", LC),
                       ("opened_ts_ms", "Int64"), ("resolved_ts_ms", NI), ("computed_avail", D),
                       ("published_avail", D), ("gap", D), ("og_open_orders_margin", D),
                       ("re_open_orders_margin", D), ("og_im", ND), ("re_im", ND), ("equity", D),
                       ("snapshot_age_ms", "Int64"), ("position_mismatch", "Bool"),
                       ("im_delta_symbols", "Array(String)"), ("im_deltas", f"Array({ND})")],
    "unvaluable": [*_HEAD, ("account_id", "String"), ("symbol", "String"), ("source", LC), ("state", LC),
                   ("qty", D), ("reason", LC), ("first_seen_ts_ms", "Int64"), ("resolved_ts_ms", NI)],
    "witness_check": [*_HEAD, ("kind", LC), ("ts_ms", "Int64"), ("account_id", "Nullable(String)"),
                      ("symbol", "Nullable(String)"), ("ledger_qty", ND), ("ep3_qty", ND), ("status", NLC),
                      ("state", NLC), ("baseline", "Nullable(String)"), ("first_seen_ts_ms", NI),
                      ("confirmed_ts_ms", NI), ("resolved_ts_ms", NI), ("scope", LC),
                      ("accounts_checked", NI), ("accounts_differing", NI), ("anomalies", NI),
                      ("dormant_positions", NI), ("oldest_dormant_age_ms", NI)],
    "source_transition": [*_HEAD, ("ts_ms", "Int64"), ("from_source", "String"), ("to_source", "String"),
                          ("account_id", "String"), ("scope", LC)],
    "feed_health": [*_HEAD, ("minute_ts_ms", "Int64"), ("feed", LC), ("records", "Int64"), ("scope", LC)],
}

# table -> (class expression, extra filter) for the rollup views; filters use the `src.` qualifier
# because an output alias named `class` would otherwise shadow the column inside WHERE.
ROLLUP_FEEDS: dict[str, tuple[str, str]] = {
    "position_mismatch": ("assumeNotNull(src.`class`)", "src.`class` IS NOT NULL"),
    "avail_gap_flip": ("''", "1"),
    "unvaluable": ("toString(src.reason)", "1"),
    "witness_check": ("assumeNotNull(src.status)", "src.kind = 'anomaly' AND src.status IS NOT NULL"),
    "source_transition": ("src.to_source", "1"),
}


def day_expr(col: str) -> str:
    return f"toDate(fromUnixTimestamp64Milli({col}, 'UTC'))"


def ttl_clause(expr: str, ttl_days: int) -> str:
    """TTL clause for a day expression; ttl_days == 0 keeps data forever (backfills of old tapes)."""
    return f"TTL {expr} + INTERVAL {int(ttl_days)} DAY" if ttl_days > 0 else ""


def table_ddl(db: str, table: str, ttl_days: int) -> str:
    col = TIME_COLUMN[table]
    cols = ",\n  ".join(f"`{n}` {t}" for n, t in COLUMNS[table])
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{table} (\n  {cols},\n"
        f"  `inserted_at` DateTime64(3) DEFAULT now64(3)\n)\n"
        f"ENGINE = ReplacingMergeTree(version)\nPARTITION BY {day_expr(col)}\n"
        f"ORDER BY (env, {col}, event_id)\n{ttl_clause(day_expr(col), ttl_days)}\n"
        f"SETTINGS non_replicated_deduplication_window = 10000"
    )


def rollup_ddl(db: str, ttl_days: int) -> list[str]:
    stmts = [
        f"CREATE TABLE IF NOT EXISTS {db}.{ROLLUP_TABLE} (\n  hour DateTime('UTC'),\n"
        f"  env {LC},\n  type {LC},\n  `class` {LC},\n  events AggregateFunction(uniqExact, String)\n)\n"
        f"ENGINE = AggregatingMergeTree\nPARTITION BY toYYYYMM(hour)\nORDER BY (env, type, `class`, hour)\n"
        f"{ttl_clause('toDate(hour)', ttl_days)}"
    ]
    for table, (cls_expr, where) in ROLLUP_FEEDS.items():
        col = TIME_COLUMN[table]
        stmts.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_{table}_hourly TO {db}.{ROLLUP_TABLE} AS\n"
            f"SELECT toStartOfHour(toDateTime(intDiv(src.{col}, 1000), 'UTC')) AS hour, src.env AS env,\n"
            f"  '{table}' AS type, {cls_expr} AS `class`, uniqExactState(src.event_id) AS events\n"
            f"FROM {db}.{table} AS src\nWHERE {where}\nGROUP BY hour, env, type, `class`"
        )
    return stmts


def statements(db: str, ttl_days: int) -> list[str]:
    """Every statement of schema version 1, in order."""
    return [*(table_ddl(db, t, ttl_days) for t in COLUMNS), *rollup_ddl(db, ttl_days)]
