"""PNG pictures for people who would rather look than read: hourly mismatch rates and the soak clock.

matplotlib is imported lazily with the Agg backend (no display needed). Guarantee: on success the
file at `path` is a complete PNG; plotting problems raise `PlotError` naming the file.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from streams.report.attribution import Report
from streams.report.flips import EP3
from streams.report.gate import GateResult
from streams.report.timeutil import HOUR_MS


class PlotError(RuntimeError):
    """The plot could not be drawn or written."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _save(fig: Any, plt: Any, path: str) -> None:
    try:
        fig.savefig(path, format="png", dpi=100)
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot write plot {path}: {exc}") from exc
    finally:
        plt.close(fig)


def plot_report(report: Report, path: str) -> None:
    """Mismatches per hour by class (first-seen hour), one line per class."""
    plt = _pyplot()
    series: dict[str, dict[int, int]] = defaultdict(dict)
    for hour, cls, n in report.hourly:
        series[cls][hour] = n
    first = report.since_ms // HOUR_MS * HOUR_MS
    hours = list(range(first, report.until_ms, HOUR_MS))[:24 * 366]
    fig, ax = plt.subplots(figsize=(10, 4))
    for cls, counts in sorted(series.items()):
        ax.step([_dt(h) for h in hours], [counts.get(h, 0) for h in hours], where="post", label=cls)
    ax.set_title(f"position mismatches per hour by class — env {report.env}")
    ax.set_ylabel("mismatches / hour")
    if series:
        ax.legend(loc="upper left")
    fig.autofmt_xdate()
    _save(fig, plt, path)


def plot_gate(result: GateResult, path: str) -> None:
    """The soak clock: hours on EP3 against the target, flips, blocking events and feed gaps."""
    plt = _pyplot()
    ev = result.evidence
    fig, ax = plt.subplots(figsize=(10, 4))
    start = ev.window_start_ms
    target_h = ev.target_ms / HOUR_MS
    if ev.flip is not None and ev.flip.soak_start_ms is not None:
        s = ev.flip.soak_start_ms
        ax.plot([_dt(s), _dt(ev.now_ms)], [0, (ev.now_ms - s) / HOUR_MS], color="tab:blue", label="soak clock (h)")
    ax.axhline(target_h, color="tab:green", linestyle="--", label=f"target {target_h:g} h")
    for f in ev.flip.flips if ev.flip is not None else ():
        if f.last_ts_ms >= start - ev.target_ms:
            ax.axvline(_dt(f.first_ts_ms), color="tab:blue" if f.to_source == EP3 else "tab:red", alpha=0.6)
    for kind, found in (("mismatch", ev.unexplained), ("anomaly", ev.anomalies), ("unvaluable", ev.unvaluable)):
        xs = [_dt(max(f.since_ms or start, start)) for f in found or ()]
        if xs:
            ax.scatter(xs, [0] * len(xs), marker="x", color="tab:red", label=kind)
    for g in ev.gaps or ():
        ax.axvspan(_dt(g.from_ms), _dt(g.to_ms), color="tab:orange", alpha=0.3)
    ax.set_title(f"{result.verdict} — env {ev.env}")
    ax.set_ylabel("hours on EP3")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    _save(fig, plt, path)
