"""`divmon simulate`: a deterministic simulated trading day, to a JSON Lines tape or to Kafka."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streams.commands._options import load_settings, setting

F = TypeVar("F", bound=Callable[..., Any])


def _env(name: str) -> str:
    return f"DIVMON_SIM_{name.upper()}"


def _opt(flag: str, help: str, *aliases: str, **kw: Any) -> Callable[[F], F]:
    """A simulator option read from `DIVMON_SIM_<NAME>` when not given, saying so in its help."""
    name = flag.lstrip("-").replace("-", "_")
    shown = f" [default: {kw['default']}]" if "default" in kw else ""
    return click.option(flag, *aliases, name, envvar=_env(name), show_envvar=False,
                        help=f"{help}{shown} [env: {_env(name)}]", **kw)


@click.command("simulate")
@click.option("--tape", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON Lines tape here.")
@click.option("--to", "broker", metavar="BROKER", help="Produce to this Kafka bootstrap server (host:port).")
@_opt("--seed", "Random seed: the same seed and options give the same records.", type=int, default=7)
@_opt("--accounts", "Accounts, including the 8 fault accounts.", type=click.IntRange(10), default=300)
@_opt("--duration", "Event-time length of the day, in seconds.", type=click.IntRange(120), default=3600)
@_opt("--start", "Event time of the first record, epoch ms.", type=click.IntRange(0),
      default=1_780_000_000_000)
@_opt("--speed", "With --to: event time runs this many times faster than wall time; 0 = no pacing.", "--rate",
      type=click.FloatRange(0), default=0.0)
@_opt("--faults", "Faults to inject: all, none, or a comma-separated list of kinds.", default="all")
@_opt("--encoding", "Message encoding with --to.", type=click.Choice(["json", "avro"]), default="json")
@click.option("--ground-truth", "truth_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the injected faults and their expected events as JSON here.")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr [default: when a terminal].")
@setting("security_protocol", "Kafka security protocol (with --to).")
def command(tape: Path | None, broker: str | None, seed: int, accounts: int, duration: int, start: int,
            speed: float, faults: str, encoding: str, truth_path: Path | None, progress: bool | None,
            **opts: Any) -> None:
    """Simulate a trading day: marks, fills, EP3 updates, RE snapshots and gateway margin sweeps for
    ACCOUNTS accounts, with every failure class injected at known times (see --faults).

    Give exactly one of --tape or --to. Exit status: 0 on success, 1 when writing or producing
    fails, 2 on bad usage.
    """
    from streams.sim import SimConfig, parse_faults

    if (tape is None) == (broker is None):
        raise click.UsageError("give exactly one of --tape FILE or --to BROKER")
    try:
        cfg = SimConfig(seed=seed, accounts=accounts, duration_ms=duration * 1000, start_ms=start,
                        faults=parse_faults(faults))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    show = sys.stderr.isatty() if progress is None else progress
    report = _progress(cfg.start_ms, cfg.duration_ms) if show else None
    if truth_path is not None:
        _write_truth(cfg, truth_path)
    try:
        n = _to_tape(cfg, tape, report) if tape is not None else _to_kafka(
            cfg, str(broker), speed, encoding, report, opts)
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if show:
            click.echo("", err=True)
    click.echo(f"{n} records, {len(cfg.faults)} fault kind(s) injected, seed {cfg.seed}", err=True)


def _to_tape(cfg: Any, path: Path, report: Any) -> int:
    from streams.sim import simulate
    from streams.sim.writers import write_tape

    return write_tape(simulate(cfg), path, report)


def _to_kafka(cfg: Any, broker: str, speed: float, encoding: str, report: Any, opts: dict[str, Any]) -> int:
    from confluent_kafka import KafkaException, Producer

    from streams.core.records import Feed
    from streams.sim import simulate
    from streams.sim.writers import avro_serializer, json_serializer, produce

    settings = load_settings(brokers=broker, **opts)
    serialize = avro_serializer() if encoding == "avro" else json_serializer
    topics = {f: settings.topic_for(f.value) for f in Feed}
    try:
        producer = Producer(_producer_conf(settings))
        return produce(simulate(cfg), producer, serialize, topics, speed, report)
    except KafkaException as exc:
        raise RuntimeError(f"kafka: {exc}") from exc


def _producer_conf(settings: Any) -> dict[str, Any]:
    """Producer settings from `Settings`; the password is read only here, never printed."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.brokers, "security.protocol": settings.security_protocol,
                            "linger.ms": 20, "compression.type": "lz4", "log_level": 3,
                            "message.timeout.ms": 60_000}
    if settings.security_protocol.startswith("SASL"):
        conf.update({"sasl.mechanism": settings.sasl_mechanism, "sasl.username": settings.sasl_username,
                     "sasl.password": settings.sasl_password.get()})
    if settings.ssl_cafile:
        conf["ssl.ca.location"] = settings.ssl_cafile
    return conf


def _write_truth(cfg: Any, path: Path) -> None:
    import dataclasses
    import json

    from streams.sim import ground_truth

    faults = [dataclasses.asdict(f) for f in ground_truth(cfg)]
    path.write_text(json.dumps(faults, indent=1) + "\n", encoding="utf-8")


def _progress(start_ms: int, duration_ms: int) -> Any:
    def report(n: int, ts: int) -> None:
        pct = 100 * (ts - start_ms) / duration_ms
        click.echo(f"\r{n:,} records, {pct:5.1f}% of the day", err=True, nl=False)

    return report
