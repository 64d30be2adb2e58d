"""`ClickHouseSink`: the `Sink` for ClickHouse, server (HTTP/S) or embedded (chdb), one code path.

Guarantees beyond the `Sink` protocol:
- `setup()` connects and applies pending migrations (see `migrations`); `__init__` does no I/O.
- One INSERT per table per batch, each with `insert_deduplication_token` derived from the batch's
  (event_id, version) list for that table. The tables enable deduplication for non-replicated
  MergeTree (`non_replicated_deduplication_window`), so a retried batch that had in fact landed is
  dropped by the server; anything that slips past the window still collapses in ReplacingMergeTree.
- A partially written batch (table A inserted, table B failed) is safe to retry whole: A's insert
  carries the same token again and is dropped.
- Not thread-safe: one sink per writer thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from streams.config import Settings
from streams.core.events import Event
from streams.sinks import migrations
from streams.sinks.connect import connect, describe, translate
from streams.sinks.errors import SinkError
from streams.sinks.schema import TABLES, check_identifier, columns, dedup_token, group_by_table, to_row

log = logging.getLogger(__name__)


class ClickHouseSink:
    """Writes events to `<clickhouse_database>.<event TYPE>` tables."""

    def __init__(self, settings: Settings, *, migrate: bool = True, retry_after: float = 1.0) -> None:
        self.settings = settings
        self.database = check_identifier(settings.clickhouse_database)
        self._migrate = migrate
        self._retry_after = retry_after
        self._client: Any = None
        self._types: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"ClickHouseSink({describe(self.settings)})"

    @property
    def client(self) -> Any:
        """The connected clickhouse-connect client (for queries by the report and the gate)."""
        if self._client is None:
            raise SinkError(f"{self!r} is not set up (call setup() first)")
        return self._client

    def setup(self) -> None:
        if self._client is not None:
            return
        client = connect(self.settings)
        try:
            if self._migrate:
                applied = migrations.migrate(client, self.database, self.settings.clickhouse_ttl_days)
                for m in applied:
                    log.info("applied migration %d (%s) to %s", m.version, m.name, describe(self.settings))
            self._types = self._column_types(client)
        except Exception as exc:
            client.close()
            raise translate(exc, f"set up {describe(self.settings)}", self._retry_after) from exc
        self._client = client
        log.info("ClickHouse sink ready: %s", describe(self.settings))

    def _column_types(self, client: Any) -> dict[str, list[str]]:
        """Insert column types, read once so inserts need no DESCRIBE round trip."""
        out: dict[str, list[str]] = {}
        for table in TABLES:
            rows = client.query(f"DESCRIBE TABLE {self.database}.{table}").result_rows
            by_name = {r[0]: r[1] for r in rows}
            out[table] = [by_name[c] for c in columns(table)]
        return out

    def write(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        client = self.client
        for table, events in group_by_table(batch).items():
            settings = {"insert_deduplicate": 1, "insert_deduplication_token": dedup_token(table, events)}
            try:
                client.insert(f"{self.database}.{table}", [to_row(e) for e in events],
                              column_names=columns(table), column_type_names=self._types[table],
                              settings=settings)
            except Exception as exc:
                raise translate(exc, f"insert {len(events)} rows into {self.database}.{table}",
                                self._retry_after) from exc

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a dead connection must not mask the caller's error
                log.debug("error closing ClickHouse client", exc_info=True)
