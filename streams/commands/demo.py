"""`divmon demo`: broker, worker, embedded ClickHouse, a simulated day with every fault, report, gate."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("demo")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep ClickHouse data, logs and plots here (must not hold a previous demo) "
                   "[default: a new temporary directory, kept and printed at the end].")
@click.option("--accounts", type=click.IntRange(10), default=300, show_default=True,
              help="Accounts in the simulated day, including the 8 fault accounts.")
@click.option("--duration", type=click.IntRange(120), default=1800, show_default=True,
              help="Event-time length of the simulated day, in seconds (it ends now).")
@click.option("--speed", type=click.FloatRange(0), default=0.0,
              help="Event time runs this many times faster than wall time [default: the day in ~45 s].")
@click.option("--seed", type=int, default=7, show_default=True, help="Simulator seed.")
@click.option("--partitions", type=click.IntRange(1), default=4, show_default=True,
              help="Partitions of the account topics.")
def command(data_dir: Path | None, accounts: int, duration: int, speed: float, seed: int, partitions: int) -> None:
    """Run the whole product locally, nothing to install: a Tansu broker (memory only), one divmon
    worker, embedded ClickHouse, a simulated trading day with every failure class injected; then the
    attribution report, the gate verdict, plots, and injected-vs-found.

    Ignores DIVMON_* variables (the demo never touches a configured Kafka or ClickHouse). Exit
    status: 0 when the demo ran and found every injected fault (the gate's NOT_CLEARED is the
    expected verdict), 1 on failure, 130 when interrupted. Every process it starts is stopped.
    """
    from streams.demo.run import DemoOptions, main_stdio

    sys.exit(main_stdio(DemoOptions(data_dir=data_dir, accounts=accounts, duration_s=duration, seed=seed,
                                    speed=speed, partitions=partitions)))
