"""Versioned, idempotent schema migrations, recorded in `<db>.schema_migrations`.

Guarantees:
- `migrate()` applies, in version order, every migration not yet recorded, and records each one once
  (after all its statements succeeded). Statements are idempotent, so a crash mid-migration is
  repaired by running it again; two processes migrating at once converge (the record table is a
  ReplacingMergeTree keyed on version and is read with FINAL).
- `migrate()` then makes the event tables' TTL match `ttl_days` (0 = no TTL), so the TTL setting keeps
  meaning something after the tables exist.
- Released migrations are never edited; a schema change is a new `Migration` appended to MIGRATIONS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.sinks import ddl_v1
from streams.sinks.schema import MIGRATIONS_TABLE, TIME_COLUMN, check_identifier


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str, int], list[str]]  # (database, ttl_days) -> SQL statements


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None  # None: pending


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "event tables, hourly rollup", ddl_v1.statements),
)
LATEST = MIGRATIONS[-1].version


def _bootstrap(client: Any, db: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE} (version UInt32, name String, "
        f"applied_at DateTime64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )


def applied(client: Any, db: str) -> dict[int, datetime]:
    """Recorded versions and when each was first applied ({} when the database does not exist)."""
    exists = client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": db, "t": MIGRATIONS_TABLE},
    )
    if not int(exists):
        return {}
    rows = client.query(
        f"SELECT version, min(applied_at) FROM {db}.{MIGRATIONS_TABLE} FINAL GROUP BY version"
    ).result_rows
    return {int(v): at for v, at in rows}


def migrate(client: Any, database: str, ttl_days: int) -> list[Migration]:
    """Apply pending migrations; return the ones applied now (empty when up to date)."""
    db = check_identifier(database)
    _bootstrap(client, db)
    done = applied(client, db)
    newly: list[Migration] = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for sql in m.statements(db, ttl_days):
            client.command(sql)
        client.insert(f"{db}.{MIGRATIONS_TABLE}", [[m.version, m.name, datetime.now()]],
                      column_names=["version", "name", "applied_at"])
        newly.append(m)
    reconcile_ttl(client, db, ttl_days)
    return newly


def status(client: Any, database: str) -> list[MigrationStatus]:
    """Every known migration with its applied time, or None when pending."""
    done = applied(client, check_identifier(database))
    return [MigrationStatus(m.version, m.name, done.get(m.version)) for m in MIGRATIONS]


_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.S)


def current_ttl(client: Any, db: str) -> dict[str, int]:
    """Table -> TTL days as the server reports it (0 = none)."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        parameters={"db": db},
    ).result_rows
    out: dict[str, int] = {}
    for name, engine_full in rows:
        if name in TIME_COLUMN:
            m = _TTL_DAYS.search(engine_full)
            out[name] = int(m.group(1)) if m else 0
    return out


def reconcile_ttl(client: Any, db: str, ttl_days: int) -> list[str]:
    """Make every event table's TTL equal `ttl_days`; return the tables altered."""
    changed = []
    for table, days in current_ttl(client, db).items():
        if days == ttl_days:
            continue
        if ttl_days == 0:
            client.command(f"ALTER TABLE {db}.{table} REMOVE TTL")
        else:
            expr = ddl_v1.day_expr(TIME_COLUMN[table])
            client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {expr} + INTERVAL {int(ttl_days)} DAY")
        changed.append(table)
    return changed
