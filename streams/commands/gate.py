"""`divmon gate`: may the witness-drop land? CLEARED (exit 0) or NOT_CLEARED (exit 1), from data.

Fail-closed: ClickHouse that cannot be opened or queried, or any unexpected error, prints
NOT_CLEARED with the reason and exits 1; a bad option exits 2. Never a crash into CLEARED.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from streams.config import Settings
from streams.report.options import common, env_option, load_settings, setting_option

DEFAULT_FEEDS = "ep3.positions,og.margin,marks,witness.sweep"
MIN_GAP_S = 120  # feed health is per minute: a silence is only known to within two minutes


def feed_names(settings: Settings, feeds: str) -> dict[str, tuple[str, ...]]:
    """Each required feed with the names it may be recorded under (logical name, configured topic)."""
    out: dict[str, tuple[str, ...]] = {}
    for feed in (f.strip() for f in feeds.split(",") if f.strip()):
        try:
            out[feed] = tuple(dict.fromkeys((feed, settings.topic_for(feed))))
        except KeyError:
            out[feed] = (feed,)
    return out


def _fail(reason: str, message: str, as_json: bool) -> NoReturn:
    if as_json:
        import json

        click.echo(json.dumps({"verdict": "NOT_CLEARED", "exit_code": 1,
                               "reasons": [{"code": reason, "message": message}]}, indent=2))
    else:
        click.echo(f"NOT_CLEARED\n  ✗ {reason}: {message}")
    sys.exit(1)


def _run(settings: Settings, now: int | None, feeds: str, as_json: bool, plot: str | None) -> int:
    from streams.report.client import ClientConfigError, ClientError, open_client
    from streams.report.evidence import GateQuery, gather
    from streams.report.gate import judge
    from streams.report.jsonout import dumps, gate_doc
    from streams.report.text import gate_text
    from streams.report.timeutil import HOUR_MS, now_ms

    q = GateQuery(database=settings.clickhouse_database, env=settings.env,
                  now_ms=now if now is not None else now_ms(),
                  target_ms=int(settings.soak_target_h * HOUR_MS), max_silence_ms=settings.feed_gap_s * 1000,
                  feed_names=feed_names(settings, feeds))
    try:
        client = open_client(settings)
    except ClientConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except ClientError as exc:
        _fail("CLICKHOUSE_UNAVAILABLE", str(exc), as_json)
    try:
        result = judge(gather(client, q))
    finally:
        client.close()
    click.echo(dumps(gate_doc(result)) if as_json else gate_text(result))
    if plot:
        _plot(result, plot)
    return 0 if result.verdict == "CLEARED" else 1


def _plot(result: Any, path: str) -> None:
    from streams.report.plots import PlotError, plot_gate

    try:
        plot_gate(result, path)
    except PlotError as exc:
        click.echo(f"warning: {exc}", err=True)


@click.command("gate")
@common
@setting_option("soak_target_h", "Soak target in hours on EP3 without a flip back.", type=float)
@setting_option("feed_gap_s", f"A required feed silent longer than this many seconds (≥ {MIN_GAP_S}) "
                "makes the soak unclean.", type=int)
@env_option("--require-feeds", "DIVMON_GATE_FEEDS", "Comma-separated feeds that must not go silent "
            "(witness.sweep = the witness's sweep rows; risk.snapshots is retired, so not required by "
            "default).", default=DEFAULT_FEEDS, show_default=True)
def command(env: str | None, now: int | None, as_json: bool, plot: str | None, clickhouse_url: str | None,
            clickhouse_path: str | None, clickhouse_database: str | None, soak_target_h: float | None,
            feed_gap_s: int | None, require_feeds: str) -> None:
    """May the witness-drop land? CLEARED (exit 0) or NOT_CLEARED (exit 1) with every reason."""
    settings = load_settings(env=env, clickhouse_url=clickhouse_url, clickhouse_path=clickhouse_path,
                             clickhouse_database=clickhouse_database, soak_target_h=soak_target_h,
                             feed_gap_s=feed_gap_s)
    if settings.feed_gap_s < MIN_GAP_S:
        raise click.UsageError(f"--feed-gap-s must be at least {MIN_GAP_S} (feed health is per minute)")
    if not 0 < settings.soak_target_h < 1e6:  # also refuses NaN and infinity
        raise click.UsageError("--soak-target-h must be a positive number of hours")
    if not feed_names(settings, require_feeds):
        raise click.UsageError("--require-feeds names no feed")
    try:
        code = _run(settings, now, require_feeds, as_json, plot)
    except click.UsageError:
        raise
    except Exception as exc:  # fail closed: anything unexpected is a reason, never CLEARED
        _fail("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}", as_json)
    sys.exit(code)
