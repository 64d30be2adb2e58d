"""`divmon report`: attribution from ClickHouse for one env and time range, as text, JSON or a plot.

Exit 0 with a report; 1 when ClickHouse cannot be opened or queried (the message names the query);
2 for a bad option.
"""

from __future__ import annotations

import sys

import click

from streams.config import Settings
from streams.report.options import common, instant_option, load_settings

DEFAULT_SPAN_MS = 24 * 3_600_000


def _run(settings: Settings, since: int, until: int, as_json: bool, plot: str | None) -> None:
    from streams.report.attribution import build_report
    from streams.report.client import open_client
    from streams.report.jsonout import dumps, report_doc
    from streams.report.report_sql import fetch
    from streams.report.text import report_text

    client = open_client(settings)
    try:
        f = fetch(client, settings.clickhouse_database, settings.env, since, until)
    finally:
        client.close()
    report = build_report(settings.env, since, until, f.flips, f.mismatches, f.unvaluable, f.anomalies,
                          f.sweeps, f.truncated)
    click.echo(dumps(report_doc(report)) if as_json else report_text(report))
    if plot:
        from streams.report.plots import plot_report

        plot_report(report, plot)


@click.command("report")
@common
@instant_option("--since", "DIVMON_REPORT_SINCE", "Start of the range, inclusive (default: 24 h before --until).")
@instant_option("--until", "DIVMON_REPORT_UNTIL", "End of the range, exclusive (default: --now).")
def command(env: str | None, now: int | None, as_json: bool, plot: str | None, clickhouse_url: str | None,
            clickhouse_path: str | None, clickhouse_database: str | None, since: int | None,
            until: int | None) -> None:
    """Attribution report: flips, mismatches by class and fresher side, gaps, unvaluable, witness."""
    from streams.report.timeutil import now_ms

    settings = load_settings(env=env, clickhouse_url=clickhouse_url, clickhouse_path=clickhouse_path,
                             clickhouse_database=clickhouse_database)
    until = until if until is not None else (now if now is not None else now_ms())
    since = since if since is not None else until - DEFAULT_SPAN_MS
    if since >= until:
        raise click.UsageError("--since must be before --until")
    from streams.report.client import ClientConfigError

    try:
        _run(settings, since, until, as_json, plot)
    except ClientConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
