"""The demo's last act, in-process on the embedded ClickHouse the worker wrote: the attribution report,
the gate verdict, their plots, and the injected-vs-found table.

Runs only after the worker has exited (chdb allows one process per data directory). The report
covers the simulated day; the gate judges at the day's end with a soak target of the day's length
(so its window is the simulated day, not the empty days before it), exactly as `divmon gate --now
<day end> --soak-target-h <day length>` would. Guarantee: `conclude` returns the
texts and plot paths, or raises `DemoError` naming the step; a missing matplotlib is a warning (no
plots), never a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from streams.config import Settings
from streams.demo.procs import DemoError
from streams.demo.truth import Line, compare, found_events, render
from streams.sim import SimConfig, ground_truth

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Results:
    report: str
    gate: str
    verdict: str
    truth: str
    lines: list[Line]
    plots: list[Path]
    warnings: list[str]


def demo_settings(data_dir: Path) -> Settings:
    """The settings the worker ran with, as far as reading ClickHouse goes (embedded, env `demo`)."""
    return replace(Settings(), env="demo", clickhouse_url="", clickhouse_path=str(data_dir / "chdb"))


def _report(client: Any, s: Settings, cfg: SimConfig) -> Any:
    from streams.report.attribution import build_report
    from streams.report.report_sql import fetch

    since, until = report_range(cfg)
    f = fetch(client, s.clickhouse_database, s.env, since, until)
    return build_report(s.env, since, until, f.flips, f.mismatches, f.unvaluable, f.anomalies, f.sweeps,
                        f.truncated)


def report_range(cfg: SimConfig) -> tuple[int, int]:
    """Whole hours around the day, one spare on each side: the hourly plot needs several points to
    draw its steps (a compressed day fits in one or two hours)."""
    return cfg.start_ms // HOUR_MS * HOUR_MS - HOUR_MS, cfg.end_ms // HOUR_MS * HOUR_MS + 2 * HOUR_MS


def _gate(client: Any, s: Settings, cfg: SimConfig) -> Any:
    from streams.commands.gate import DEFAULT_FEEDS, feed_names
    from streams.report.evidence import GateQuery, gather
    from streams.report.gate import judge

    q = GateQuery(database=s.clickhouse_database, env=s.env, now_ms=cfg.end_ms,
                  target_ms=cfg.duration_ms, max_silence_ms=s.feed_gap_s * 1000,
                  feed_names=feed_names(s, DEFAULT_FEEDS))
    return judge(gather(client, q))


def _plots(report: Any, gate: Any, data_dir: Path, warnings: list[str]) -> list[Path]:
    try:
        from streams.report.plots import PlotError, plot_gate, plot_report
    except ImportError as exc:  # pragma: no cover - plots.py itself imports nothing heavy
        warnings.append(f"no plots: {exc}")
        return []
    out: list[Path] = []
    for name, draw, what in (("report.png", plot_report, report), ("gate.png", plot_gate, gate)):
        path = data_dir / name
        try:
            draw(what, str(path))
        except ImportError:
            warnings.append("no plots: matplotlib is not installed (pip install 'divmon[plot]')")
            return out
        except PlotError as exc:
            warnings.append(str(exc))
            continue
        out.append(path)
    return out


def conclude(data_dir: Path, cfg: SimConfig, stale_seen: int) -> Results:
    """Report, gate, plots and the truth table from the demo's chdb (see module docstring)."""
    from streams.report.client import ClientError, open_client
    from streams.report.text import gate_text, report_text

    s = demo_settings(data_dir)
    try:
        client = open_client(s)
    except ClientError as exc:
        raise DemoError(f"cannot open the demo's ClickHouse: {exc}") from exc
    try:
        report = _report(client, s, cfg)
        gate = _gate(client, s, cfg)
        faults = ground_truth(cfg)
        accounts = sorted({f.account_id for f in faults if f.account_id})
        lines = compare(cfg, faults, found_events(client, s.clickhouse_database, s.env, accounts), stale_seen)
    except Exception as exc:
        raise DemoError(f"reading the results from ClickHouse failed: {type(exc).__name__}: {exc}") from exc
    finally:
        client.close()
    warnings: list[str] = []
    plots = _plots(report, gate, data_dir, warnings)
    return Results(report_text(report), gate_text(gate), gate.verdict, render(lines), lines, plots, warnings)
