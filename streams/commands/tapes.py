"""`divmon tapes record|diff|prune|convert`: position tapes (DESIGN section 5).

Exit status of every sub-command: 0 ok, 1 bad data or runtime failure (the message names the file
and position, or the Kafka error), 2 bad usage.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from streams.commands._options import engine_config, engine_options, load_settings, setting
from streams.config import PREFIX
from streams.tapes.errors import TapeError

FEEDS = ("ep3.positions", "risk.snapshots", "og.margin", "fills", "marks", "instruments")


def env_option(flag: str, name: str, help: str, **kw: Any) -> Callable[[Any], Any]:
    """An option that is not a `Settings` field, still with `[env: DIVMON_…]` in its help."""
    var = PREFIX + name.upper()
    return click.option(flag, name, envvar=var, show_default=False,
                        help=f"{help} [default: {kw.get('default')}] [env: {var}]", **kw)


@click.group("tapes")
def command() -> None:
    """Record the feeds to Avro tapes, diff tapes offline, prune old tapes.

    Layout: <tapes-dir>/<YYYY-MM-DD>/<YYYY-MM-DD>.<feed>.avro, one file per feed per trading day; a
    trading day ends at 17:00 America/New_York and is labelled with the date it ends on.
    """


@command.command("record")
@setting("tapes_dir", "Root directory of the tapes.")
@setting("brokers", "Kafka bootstrap servers, comma-separated.")
@setting("security_protocol", "Kafka security protocol.", click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT",
                                                                        "SASL_SSL"]))
@setting("sasl_mechanism", "SASL mechanism.")
@setting("sasl_username", "SASL user name (the password only from the environment).")
@setting("ssl_cafile", "CA bundle for SSL connections to Kafka.")
@setting("schema_registry_url", "Schema Registry URL, to decode Confluent-framed values.")
@setting("group_id", "Base consumer group; the recorder uses <group-id>-tapes.")
@setting("session_timeout_ms", "Consumer group session timeout in ms.", click.IntRange(1000))
@setting("topic_ep3", "EP3 positions topic.")
@setting("topic_risk", "Risk-engine snapshots topic.")
@setting("topic_og_margin", "OG margin topic.")
@setting("topic_fills", "Fills topic.")
@setting("topic_marks", "Marks topic.")
@setting("topic_instruments", "Instruments topic.")
@env_option("--feeds", "tapes_feeds", "Feeds to record, comma-separated.", default=",".join(FEEDS))
@env_option("--flush-ms", "tapes_flush_ms", "Flush+fsync+commit interval in ms.", type=click.IntRange(50),
            default=1000)
@env_option("--codec", "tapes_codec", "Avro block codec.", type=click.Choice(["deflate", "null"]),
            default="deflate")
def record(tapes_feeds: str, tapes_flush_ms: int, tapes_codec: str, **opts: Any) -> None:
    """Consume the feeds (consumer group <group-id>-tapes) and write per-feed per-day tapes.

    Offsets are committed only after the records are fsynced; after a crash it resumes from them
    without losing or duplicating a record. SIGTERM/SIGINT close the files cleanly.
    """
    from streams.agents.kafka_io import client_config
    from streams.core.records import Feed
    from streams.tapes.record import Recorder, RecorderConfig

    settings = load_settings(**opts)
    wanted = [f.strip() for f in tapes_feeds.split(",") if f.strip()]
    bad = sorted(set(wanted) - set(FEEDS))
    if bad or not wanted:
        raise click.BadParameter(f"unknown feed(s) {bad}; known: {', '.join(FEEDS)}", param_hint="--feeds")
    registry = None
    if settings.schema_registry_url:
        from streams.codec import SchemaIds

        registry = SchemaIds.from_url(settings.schema_registry_url)
    cfg = RecorderConfig(root=Path(settings.tapes_dir),
                         topics={settings.topic_for(f): Feed(f) for f in wanted},
                         consumer={**client_config(settings), "group.id": f"{settings.group_id}-tapes",
                                   # static membership: a restarted recorder takes its partitions back
                                   # at once instead of waiting out the dead member's session
                                   "group.instance.id": f"{settings.group_id}-tapes@{socket.gethostname()}",
                                   "session.timeout.ms": settings.session_timeout_ms},
                         flush_s=tapes_flush_ms / 1000, codec=tapes_codec, registry=registry)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: stopping.append(s))
    try:
        Recorder(cfg).run(stop=lambda: bool(stopping))
    except (RuntimeError, OSError, TapeError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("confluent_kafka"):
            raise click.ClickException(f"kafka: {exc}") from exc
        raise


@command.command("diff")
@click.argument("tapes", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The verdict as one JSON object, for machines.")
@click.option("--skip-bad", is_flag=True, help="Skip malformed records (counted) instead of stopping.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr [default: when a terminal].")
@engine_options
def diff(tapes: tuple[Path, ...], as_json: bool, skip_bad: bool, progress: bool | None, **opts: Any) -> None:
    """Run the engine over EP3_TAPE RISK_TAPE [other feeds...] (Avro or JSON Lines; a directory means
    every .avro tape in it) merged by ts_ms, and print the off-line verdict of the day.
    """
    from streams.tapes import replay
    from streams.tapes.summary import Summary, render

    settings = load_settings(**opts)
    paths = [p for t in tapes for p in (sorted(t.glob("*.avro")) if t.is_dir() else [t])]
    if not paths:
        raise click.UsageError("no tapes found")
    readers = [replay.open_tape(p, skip_bad=skip_bad) for p in paths]
    show = sys.stderr.isatty() if progress is None else progress
    bar = Progress(readers, sum(p.stat().st_size for p in paths)) if show else None
    try:
        folded = Summary()  # folds events as they come: memory bounded by live state, not tape length
        result = replay.run(replay.merge(readers), engine_config(settings), progress=bar,
                            on_events=folded.add, keep=False)
    except TapeError as exc:
        raise click.ClickException(str(exc)) from None
    if bar is not None:
        bar.done(result.records)
    summary = folded.result(result.stats, result.records)
    skipped = sum(getattr(r, "skipped", 0) for r in readers)
    summary["tapes"] = {"files": [str(p) for p in paths], "skipped_records": skipped,
                        "bad_blocks": sum(getattr(r, "bad_blocks", 0) for r in readers),
                        "late_records": sum(getattr(r, "late", 0) for r in readers)}
    if as_json:
        click.echo(json.dumps(summary, default=str, separators=(",", ":")))
    else:
        click.echo(render(summary))
    if skipped:
        click.echo(f"skipped {skipped} malformed record(s)", err=True)


class Progress:
    """`\\r`-updated progress line on stderr: records, share of the tape bytes read, rate."""

    def __init__(self, readers: list[Any], total_bytes: int) -> None:
        self.readers, self.total = readers, max(total_bytes, 1)
        self.start = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        read = sum(getattr(r, "bytes_read", 0) for r in self.readers)
        pct = min(100.0, 100.0 * read / self.total)
        bar = "#" * int(pct / 5)
        click.echo(f"\r[{bar:<20}] {pct:5.1f}%  {n:>12,} records  {n / (now - self.start):>9,.0f} rec/s",
                   err=True, nl=False)

    def done(self, n: int) -> None:
        secs = time.monotonic() - self.start
        click.echo(f"\r{n:,} records in {secs:.1f} s{' ' * 40}", err=True)


@command.command("prune")
@setting("tapes_dir", "Root directory of the tapes.")
@setting("tapes_keep_days", "Keep the current trading day and this many before it.", click.IntRange(0),
         flag="--keep-days")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def prune(dry_run: bool, **opts: Any) -> None:
    """Delete whole trading days of tapes older than --keep-days; never the current day."""
    from streams.tapes.prune import prune as do_prune

    settings = load_settings(**opts)
    items = do_prune(Path(settings.tapes_dir), settings.tapes_keep_days, int(time.time() * 1000), dry_run)
    verb = "would delete" if dry_run else "deleted"
    for item in items:
        click.echo(f"{verb} {item.path} ({item.files} files, {item.bytes:,} bytes)")
    if not items:
        click.echo("nothing to prune")


@command.command("convert")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting("tapes_dir", "Root directory to write the tapes under.")
@click.option("--sort", is_flag=True, help="Sort each JSON Lines tape by ts_ms in memory first.")
@env_option("--codec", "tapes_codec", "Avro block codec.", type=click.Choice(["deflate", "null"]),
            default="deflate")
def convert(sources: tuple[Path, ...], sort: bool, tapes_codec: str, **opts: Any) -> None:
    """Turn JSON Lines tapes into Avro tapes (per feed, per trading day) under --tapes-dir.

    Each entry gets partition -1 and offset = its ordinal in the feed (records have no Kafka origin).
    Refuses to write into a tape that already exists.
    """
    from streams.tapes.writer import convert_jsonl

    settings = load_settings(**opts)
    try:
        written = convert_jsonl(list(sources), Path(settings.tapes_dir), sort=sort, codec=tapes_codec)
    except TapeError as exc:
        raise click.ClickException(str(exc)) from None
    for path, n in written.items():
        click.echo(f"{path}: {n} records")
