"""How events map onto ClickHouse tables: one table per event type, named by its `TYPE`.

Columns are named like the dataclass fields, except `cls`, which is the column `class`. Each table
has a *stable time column* (never changes across versions of one event_id): it is the partition day,
part of the ORDER BY and the TTL anchor, so every version of an event lands in the same part range
and ReplacingMergeTree(version) can collapse them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from streams.core.events import EVENT_TYPES, Event
from streams.sinks.errors import SinkConfigError

TIME_COLUMN: dict[str, str] = {
    "position_mismatch": "first_seen_ts_ms",
    "avail_gap_flip": "opened_ts_ms",
    "unvaluable": "first_seen_ts_ms",
    "witness_check": "ts_ms",
    "source_transition": "ts_ms",
    "feed_health": "minute_ts_ms",
}
"""Table name -> its stable time column (epoch ms)."""

TABLES: tuple[str, ...] = tuple(TIME_COLUMN)
ROLLUP_TABLE = "events_hourly"
MIGRATIONS_TABLE = "schema_migrations"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str, what: str = "DIVMON_CLICKHOUSE_DATABASE") -> str:
    """A database name goes into DDL verbatim, so it must be a plain identifier."""
    if not _IDENT.match(name):
        raise SinkConfigError(f"{what}: {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def column_name(field_name: str) -> str:
    return "class" if field_name == "cls" else field_name


def columns(table: str) -> list[str]:
    """Insert column list of a table, in dataclass field order."""
    return [column_name(f.name) for f in fields(EVENT_TYPES[table])]


def to_row(event: Event) -> list[Any]:
    """Dataclass attributes as clickhouse-connect values: Decimals stay Decimal, tuples become lists."""
    out: list[Any] = []
    for f in fields(event):
        v = getattr(event, f.name)
        out.append(list(v) if isinstance(v, tuple) else v)
    return out


def group_by_table(batch: Sequence[Event]) -> dict[str, list[Event]]:
    """Events of a batch per table, keeping batch order within each table."""
    out: dict[str, list[Event]] = {}
    for e in batch:
        out.setdefault(e.TYPE, []).append(e)
    return out


def dedup_token(table: str, events: Sequence[Event]) -> str:
    """Deterministic insert deduplication token: the same (event_id, version) list gives the same
    token, so a retried insert whose first attempt did land is dropped by ClickHouse."""
    h = hashlib.blake2b(table.encode(), digest_size=16)
    for e in events:
        h.update(f"\x1e{e.event_id}\x1f{e.version}".encode())
    return f"divmon-{table}-{len(events)}-{h.hexdigest()}"
