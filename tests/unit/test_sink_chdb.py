"""ClickHouseSink on the embedded chdb interface: schema, round trip, versions, dedup, rollup, TTL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streams.sinks import ClickHouseSink, SinkConfigError, connect, migrations
from streams.sinks.ddl_v1 import COLUMNS
from streams.sinks.schema import TABLES, columns


def _stop_merges(sink: Any) -> None:
    """Raw (non-FINAL) counts prove exactly-once only if background merges don't collapse rows."""
    for table in TABLES:
        sink.client.command(f"SYSTEM STOP MERGES {sink.database}.{table}")


@pytest.fixture
def sink(ch_settings: Any) -> Any:
    s = ClickHouseSink(ch_settings)
    s.setup()
    _stop_merges(s)
    yield s
    s.close()


def _tables(client: Any, db: str) -> list[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = {d:String} ORDER BY name",
                        parameters={"d": db}).result_rows
    return [r[0] for r in rows]


def test_ddl_columns_match_event_fields() -> None:
    """Every event field has a column of the same name (cls -> class), in field order."""
    for table in TABLES:
        assert [n for n, _ in COLUMNS[table]] == columns(table)


def test_migrations_are_idempotent(ch_settings: Any) -> None:
    """Migrating twice leaves the same tables and records each version once."""
    client = connect(ch_settings)
    try:
        db = ch_settings.clickhouse_database
        first = migrations.migrate(client, db, 90)
        tables = _tables(client, db)
        second = migrations.migrate(client, db, 90)
        assert [m.version for m in first] == [1] and second == []
        assert _tables(client, db) == tables
        assert set(TABLES) | {"events_hourly", "schema_migrations"} <= set(tables)
        assert client.command(f"SELECT count() FROM {db}.schema_migrations") == 1
        assert [s.applied_at is not None for s in migrations.status(client, db)] == [True]
    finally:
        client.close()


def test_status_of_missing_database_is_pending(ch_settings: Any) -> None:
    """status() on a database that does not exist reports every migration pending."""
    client = connect(ch_settings)
    try:
        assert [s.applied_at for s in migrations.status(client, ch_settings.clickhouse_database)] == [None]
    finally:
        client.close()


def test_ttl_follows_setting(ch_settings: Any) -> None:
    """The configured TTL is applied at creation and reconciled when the setting changes (0 = none)."""
    client = connect(ch_settings)
    try:
        db = ch_settings.clickhouse_database
        migrations.migrate(client, db, 90)
        assert set(migrations.current_ttl(client, db).values()) == {90}
        migrations.migrate(client, db, 7)
        assert set(migrations.current_ttl(client, db).values()) == {7}
        migrations.migrate(client, db, 0)
        assert set(migrations.current_ttl(client, db).values()) == {0}
    finally:
        client.close()


def test_every_event_type_round_trips(sink: Any, make_events: Any, read_events: Any) -> None:
    """What is written reads back equal field by field: NULL stays None, 0 stays 0, arrays keep NULLs."""
    batch = make_events()
    sink.write(batch)
    for e in batch:
        got = [x for x in read_events(sink.client, sink.database, e.TYPE) if x.event_id == e.event_id]
        assert got == [e]


def test_versions_collapse_to_highest_with_final(sink: Any, make_events: Any, read_events: Any) -> None:
    """Several versions of one event_id, in any insert order, read back as the highest under FINAL."""
    v1, v3, v2 = make_events(version=1)[0], make_events(version=3)[0], make_events(version=2)[0]
    v3 = replace(v3, state="resolved", resolved_ts_ms=v3.first_seen_ts_ms + 9000)
    for e in (v1, v3, v2):
        sink.write([e])
    assert read_events(sink.client, sink.database, "position_mismatch") == [v3]
    assert len(read_events(sink.client, sink.database, "position_mismatch", final=False)) == 3


def test_retried_batch_is_not_duplicated(sink: Any, make_events: Any, read_events: Any) -> None:
    """Writing the identical batch again (a retry) adds no row, even without FINAL."""
    batch = make_events()
    sink.write(batch)
    sink.write(batch)
    for table in TABLES:
        raw = read_events(sink.client, sink.database, table, final=False)
        assert len(raw) == sum(1 for e in batch if table == e.TYPE)


def test_rollup_counts_are_exact_despite_versions(sink: Any, make_events: Any) -> None:
    """Hourly rollup counts each event once, only once its class is final, whatever its versions."""
    opened = replace(make_events("x")[0], state="opened", cls=None)
    confirmed = replace(opened, version=2, state="confirmed", cls="persistent")
    resolved = replace(confirmed, version=3, state="resolved", resolved_ts_ms=confirmed.first_seen_ts_ms + 1)
    other = make_events("y")
    sink.write([opened])
    sink.write([confirmed, *other])
    sink.write([resolved])
    sink.write(other)  # redelivery
    rows = sink.client.query(
        f"SELECT type, `class`, uniqExactMerge(events) FROM {sink.database}.events_hourly "
        "WHERE env = 'test' GROUP BY type, `class` ORDER BY type, `class`").result_rows
    assert rows == [("avail_gap_flip", "", 1), ("position_mismatch", "never_in_cache", 1),
                    ("position_mismatch", "persistent", 1), ("source_transition", "EP3", 1),
                    ("unvaluable", "missing_mark", 1), ("witness_check", "never_in_cache", 1)]


def test_bad_database_name_is_a_config_error(ch_settings: Any) -> None:
    """A database name that is not a plain identifier is refused before any I/O."""
    with pytest.raises(SinkConfigError, match="DIVMON_CLICKHOUSE_DATABASE"):
        ClickHouseSink(replace(ch_settings, clickhouse_database="x; DROP"))


def test_insert_speed_is_recorded(sink: Any, make_events: Any) -> None:
    """20k mismatch rows go in within a few seconds through chdb (measured ~0.2 s here)."""
    import time

    base = make_events()[0]
    batch = [replace(base, event_id=f"bulk{i}") for i in range(20_000)]
    t0 = time.perf_counter()
    sink.write(batch)
    elapsed = time.perf_counter() - t0
    assert sink.client.command(f"SELECT count() FROM {sink.database}.position_mismatch") == 20_000
    assert elapsed < 10, elapsed
