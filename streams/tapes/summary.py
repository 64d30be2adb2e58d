"""The off-line verdict of a replay: counts by type and class, the unexplained, flip decomposition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from streams.core.events import UNEXPLAINED_CLASSES, AvailGapFlip, Event, PositionMismatch, WitnessCheck


class Summary:
    """Folds emitted events into the off-line verdict as they come, so memory is bounded by the
    unexplained and anomalous episodes, not by the tape (a day has hundreds of thousands of races).

    Every episode is counted once, at its first emission (version 1): its type, and for a mismatch
    its class, are fixed from then on (a race is emitted once, resolved; an unexplained one is
    confirmed first; one still inside grace at the end of input appears once, opened, class None).
    """

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.by_class: Counter[str] = Counter()
        self.flips = self.flips_with_mismatch = 0
        self.unexplained: dict[str, PositionMismatch] = {}
        self.anomalies: dict[str, WitnessCheck] = {}

    def add(self, events: Iterable[Event]) -> None:
        for ev in events:
            first = ev.version == 1
            if first:
                self.by_type[ev.TYPE] += 1
            if isinstance(ev, PositionMismatch):
                if first:
                    self.by_class[ev.cls or "pending"] += 1
                if ev.cls in UNEXPLAINED_CLASSES:
                    self.unexplained[ev.event_id] = ev
            elif isinstance(ev, AvailGapFlip):
                if first:
                    self.flips += 1
                    self.flips_with_mismatch += ev.position_mismatch
            elif isinstance(ev, WitnessCheck) and ev.kind == "anomaly":
                self.anomalies[ev.event_id] = ev

    def result(self, stats: dict[str, int], records: int) -> dict[str, Any]:
        unexplained = [e.to_dict() for e in self.unexplained.values()]
        return {
            "records": records,
            "events_by_type": dict(sorted(self.by_type.items())),
            "mismatches_by_class": dict(sorted(self.by_class.items())),
            "unexplained_mismatches": unexplained,
            "open_unexplained": [u for u in unexplained if u["resolved_ts_ms"] is None],
            "pending_within_grace": self.by_class.get("pending", 0),
            "flips": {"total": self.flips, "position_mismatch": self.flips_with_mismatch,
                      "agreed_on_positions": self.flips - self.flips_with_mismatch},
            "witness_anomalies": [e.to_dict() for e in self.anomalies.values()],
            "engine": dict(sorted(stats.items())),
        }


def summarize(emitted: Iterable[Event], stats: dict[str, int], records: int) -> dict[str, Any]:
    """The verdict of a sequence of emitted events (all versions, in emission order)."""
    summary = Summary()
    summary.add(emitted)
    return summary.result(stats, records)


def render(summary: dict[str, Any]) -> str:
    """A readable page for a person; the same content as `--json`, less the detail rows."""
    lines = [f"records replayed: {summary['records']}", "", "events by type:"]
    lines += [f"  {t:<20} {n:>8}" for t, n in summary["events_by_type"].items()] or ["  (none)"]
    lines += ["", "position mismatches by class:"]
    lines += [f"  {c:<20} {n:>8}" for c, n in summary["mismatches_by_class"].items()] or ["  (none)"]
    f = summary["flips"]
    lines += ["", f"avail-gap flips: {f['total']} — {f['agreed_on_positions']} agreed on positions, "
              f"{f['position_mismatch']} with a position mismatch"]
    unexplained = summary["unexplained_mismatches"]
    lines += ["", f"unexplained mismatches: {len(unexplained)} ({len(summary['open_unexplained'])} still open)"]
    for u in unexplained:
        state = "OPEN" if u["resolved_ts_ms"] is None else f"resolved@{u['resolved_ts_ms']}"
        lines.append(f"  {u['class']:<15} {u['account_id']:<12} {u['symbol']:<12} ep3={_q(u['ep3_qty'])} "
                     f"re={_q(u['re_qty'])} delta={u['delta']} first_seen={u['first_seen_ts_ms']} {state}")
    anomalies = summary["witness_anomalies"]
    lines += ["", f"witness anomalies: {len(anomalies)}"]
    for a in anomalies:
        state = "OPEN" if a["resolved_ts_ms"] is None else f"resolved@{a['resolved_ts_ms']}"
        lines.append(f"  {a['status']:<15} {a['account_id']:<12} {a['symbol']:<12} ledger={_q(a['ledger_qty'])} "
                     f"ep3={_q(a['ep3_qty'])} baseline={a['baseline']} {state}")
    if summary["pending_within_grace"]:
        lines += ["", f"{summary['pending_within_grace']} disagreement(s) still within grace at end of input"]
    eng = summary["engine"]
    notes = {k: eng[k] for k in ("ep3_stale", "ep3_bookmark", "risk_stale", "og_stale", "late_records",
                                 "fills_before_baseline") if eng.get(k)}
    if notes:
        lines += ["", "input notes: " + ", ".join(f"{k}={v}" for k, v in notes.items())]
    return "\n".join(lines)


def _q(v: str | None) -> str:
    return "absent" if v is None else v
