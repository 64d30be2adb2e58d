"""`divmon replay TAPE...`: the engine over tapes, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from streams.commands._options import engine_config, engine_options, load_settings
from streams.tapes.errors import TapeError


@click.command("replay")
@click.argument("tapes", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, in its final state.")
@click.option("--skip-bad", is_flag=True, help="Skip malformed records (counted) instead of stopping.")
@click.option("--sort", is_flag=True, help="Sort each JSON Lines tape by ts_ms in memory first.")
@click.option("--store", is_flag=True,
              help="Also write events to the configured ClickHouse (embedded chdb by default).")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr [default: when a terminal].")
@engine_options
def command(tapes: tuple[Path, ...], as_json: bool, skip_bad: bool, sort: bool, store: bool,
            progress: bool | None, **opts: Any) -> None:
    """Run the engine over TAPES (JSON Lines or Avro), merged by ts_ms, and print the verdict.

    Exit status: 0 on success, 1 when a tape is malformed (the message names the file and line),
    2 on bad usage.
    """
    from streams.tapes import replay
    from streams.tapes.summary import Summary, render

    settings = load_settings(**opts)
    readers = [replay.open_tape(p, skip_bad=skip_bad, sort=sort) for p in tapes]
    show = sys.stderr.isatty() if progress is None else progress
    sink = _open_store(settings) if store else None
    summary = Summary()

    def on_events(events: list[Any]) -> None:
        summary.add(events)
        if sink is not None:
            sink.write(events)

    try:
        result = replay.run(replay.merge(readers), engine_config(settings), on_events=on_events,
                            progress=_progress if show else None, keep=as_json)
    except TapeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if sink is not None:
            sink.close()
    if show:
        click.echo("", err=True)
    skipped = sum(getattr(r, "skipped", 0) for r in readers)
    if as_json:
        out = sys.stdout
        for ev in result.final_events():
            out.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
    else:
        click.echo(render(summary.result(result.stats, result.records)))
    if skipped:
        click.echo(f"skipped {skipped} malformed record(s)", err=True)


def _progress(n: int) -> None:
    if n % 65536 == 0:
        click.echo(f"\r{n:,} records", err=True, nl=False)


def _open_store(settings: Any) -> Any:
    from streams.sinks import open_sink

    sink = open_sink(settings)
    sink.setup()
    return sink
