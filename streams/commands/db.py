"""`divmon db migrate|status`: the ClickHouse schema (server, or embedded chdb by default).

Exit status: 0 ok; 2 bad usage or configuration; 1 the store is unreachable, locked by another
process, or refused a statement. The password is read only from DIVMON_CLICKHOUSE_PASSWORD (a flag
would show it in the process list) and is never printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from streams.commands._options import load_settings, setting
from streams.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


def store_options(f: F) -> F:
    for opt in reversed([
        setting("clickhouse_url", "ClickHouse server URL, http(s)://host:port; empty = embedded chdb."),
        setting("clickhouse_user", "ClickHouse user (password: DIVMON_CLICKHOUSE_PASSWORD only)."),
        setting("clickhouse_database", "Database holding divmon's tables."),
        setting("clickhouse_path", "Data directory of the embedded chdb (one process at a time)."),
        setting("clickhouse_ca_cert", "CA bundle to verify an https server; empty = system trust."),
        setting("clickhouse_ttl_days", "Days to keep events (0 = forever).", click.IntRange(0)),
    ]):
        f = opt(f)
    return f


@contextmanager
def _client(settings: Settings) -> Iterator[Any]:
    """A connected client; sink errors become exit codes (config 2, unreachable/locked/refused 1)."""
    from streams.sinks import SinkConfigError, SinkError, connect, describe

    client = None
    try:
        client = connect(settings)
        yield client
    except SinkConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except SinkError as exc:
        click.echo(f"divmon db: {describe(settings)}: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        from streams.sinks.connect import translate

        click.echo(f"divmon db: {describe(settings)}: {translate(exc, 'query')}", err=True)
        sys.exit(1)
    finally:
        if client is not None:
            client.close()


@click.group("db")
def command() -> None:
    """ClickHouse schema: apply migrations, show which are applied."""


@command.command("migrate")
@store_options
def migrate(**opts: Any) -> None:
    """Apply pending migrations (idempotent) and set the tables' TTL to the configured days."""
    from streams.sinks import describe, migrations

    settings = load_settings(**opts)
    with _client(settings) as client:
        applied = migrations.migrate(client, settings.clickhouse_database, settings.clickhouse_ttl_days)
    for m in applied:
        click.echo(f"applied {m.version}: {m.name}")
    click.echo(f"{describe(settings)}: schema at version {migrations.LATEST}"
               + ("" if applied else " (already up to date)"))


@command.command("status")
@store_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool, **opts: Any) -> None:
    """Show each migration (applied when, or pending) and each table's TTL. Exit 0 even if pending."""
    from streams.sinks import describe, migrations
    from streams.sinks.schema import check_identifier

    settings = load_settings(**opts)
    with _client(settings) as client:
        rows = migrations.status(client, settings.clickhouse_database)
        ttl = migrations.current_ttl(client, check_identifier(settings.clickhouse_database))
    if as_json:
        click.echo(json.dumps({
            "store": describe(settings),
            "migrations": [{"version": r.version, "name": r.name,
                            "applied_at": r.applied_at.isoformat() if r.applied_at else None} for r in rows],
            "ttl_days": ttl,
        }, indent=2))
        return
    click.echo(describe(settings))
    for r in rows:
        when = r.applied_at.strftime("%Y-%m-%d %H:%M:%S") if r.applied_at else "PENDING"
        click.echo(f"  {r.version:>4}  {when:<19}  {r.name}")
    for table, days in sorted(ttl.items()):
        click.echo(f"  ttl {table}: {days or 'none'}{' days' if days else ''}")
