"""What was injected vs what divmon found: the simulator's `ground_truth` against ClickHouse.

Each fault's expected events (`streams.sim.Expect`) are looked up in the event tables in their final
version, keyed like the simulator's own golden test: mismatch class, witness status, the flip's
`position_mismatch`, the unvaluable source, the transition's target source, and whether it was
resolved. Then the other way round: every unexplained mismatch or witness anomaly that no fault
explains is listed too — as `cut-off` when it began so close to the end of the simulated day that
the risk engine's answer to a fill would have come after the simulation stopped (the worker's event
time keeps moving after its input goes quiet, so such a race is, correctly, confirmed), otherwise as
UNEXPECTED. A bookmark snapshot must raise nothing on its account; duplicate seqs must only be
counted as stale. `Line.ok` is False exactly for a missing or an unexpected event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.sim import Expect, Fault, SimConfig

Key = tuple[str, str | None, str | None, str]  # event type, account, symbol, label
Row = tuple[Key, bool, int]  # key, resolved, first seen (ms)

SQL = {
    "position_mismatch": "SELECT account_id, symbol, `class`, resolved_ts_ms IS NOT NULL, first_seen_ts_ms "
                         "FROM {db:Identifier}.position_mismatch FINAL WHERE env = {env:String} "
                         "AND (`class` IN ('persistent', 'never_in_cache', 'phantom') "
                         "OR account_id IN {ids:Array(String)})",
    "witness_check": "SELECT account_id, symbol, status, resolved_ts_ms IS NOT NULL, "
                     "coalesce(first_seen_ts_ms, ts_ms) FROM {db:Identifier}.witness_check FINAL "
                     "WHERE env = {env:String} AND kind = 'anomaly'",
    "avail_gap_flip": "SELECT account_id, NULL, if(position_mismatch, 'true', 'false'), "
                      "resolved_ts_ms IS NOT NULL, opened_ts_ms FROM {db:Identifier}.avail_gap_flip FINAL "
                      "WHERE env = {env:String} AND account_id IN {ids:Array(String)}",
    "unvaluable": "SELECT account_id, symbol, source, resolved_ts_ms IS NOT NULL, first_seen_ts_ms "
                  "FROM {db:Identifier}.unvaluable FINAL WHERE env = {env:String}",
    "source_transition": "SELECT NULL, NULL, to_source, false, ts_ms FROM {db:Identifier}.source_transition "
                         "FINAL WHERE env = {env:String} AND from_source != 'UNKNOWN'",
}
UNEXPLAINED = frozenset({"persistent", "never_in_cache", "phantom", "mismatch"})


@dataclass(frozen=True, slots=True)
class Line:
    """One row of the table: a fault (or a finding no fault explains) and what divmon did."""

    kind: str
    where: str
    expected: str
    status: str

    @property
    def ok(self) -> bool:
        return self.status not in ("✗ MISSING", "✗ UNEXPECTED")


def found_events(client: Any, database: str, env: str, accounts: Sequence[str]) -> list[Row]:
    """Attributable events of `env`, keyed like `Expect` (race mismatches only for `accounts`)."""
    params = {"db": database, "env": env, "ids": list(accounts)}
    return [((event_type, account, symbol, str(label)), bool(resolved), int(first))
            for event_type, sql in SQL.items()
            for account, symbol, label, resolved, first in client.query(sql, parameters=params).result_rows]


def _key(x: Expect) -> Key:
    return (x.event_type, None if x.event_type == "source_transition" else x.account_id, x.symbol, x.label)


def _seen(x: Expect, rows: Sequence[Row]) -> bool:
    states = {resolved for key, resolved, _ in rows if key == _key(x)}
    return bool(states) if x.resolved is None else x.resolved in states


def _describe(x: Expect) -> str:
    label = {"avail_gap_flip": f"flip, positions {'disagree' if x.label == 'true' else 'agree'}",
             "source_transition": f"source → {x.label}"}.get(x.event_type, f"{x.event_type} {x.label}")
    if x.resolved is not None and x.event_type != "source_transition":
        label += ", resolved" if x.resolved else ", open"
    return label


def extras(cfg: SimConfig, faults: Sequence[Fault], rows: Sequence[Row]) -> list[Line]:
    """Unexplained findings no fault explains: `cut-off` near the day's end, else UNEXPECTED."""
    explained = {_key(x) for f in faults for x in f.expected}
    cut_from = cfg.end_ms - cfg.grace_ms - max(cfg.re_lag_ms[1], cfg.re_burst_lag_ms[1])
    out = []
    for key, _resolved, first in sorted(rows, key=lambda r: r[2]):
        if key[0] in ("position_mismatch", "witness_check") and key[3] in UNEXPLAINED and key not in explained:
            cut = first >= cut_from
            out.append(Line("(not injected)", f"{key[1]} {key[2]}", f"{key[0]} {key[3]}"
                            + (" — a fill in flight when the simulation stopped" if cut else ""),
                            "cut-off" if cut else "✗ UNEXPECTED"))
    return out


def compare(cfg: SimConfig, faults: Sequence[Fault], rows: Sequence[Row], stale_seen: int) -> list[Line]:
    """One line per expected event of every fault, per quiet fault, then the extras."""
    more = extras(cfg, faults, rows)
    lines: list[Line] = []
    for f in faults:
        where = " ".join(x for x in (f.account_id, f.symbol) if x) or "gateway"
        for x in f.expected:
            lines.append(Line(f.kind, where, _describe(x), "✓ found" if _seen(x, rows) else "✗ MISSING"))
        if f.kind == "bookmark":
            noisy = any(not ln.ok and ln.where.startswith(f"{f.account_id} ") for ln in more)
            lines.append(Line(f.kind, where, "nothing raised (an empty snapshot is a bookmark)",
                              "✗ UNEXPECTED" if noisy else "✓ quiet"))
        if f.stale_ep3:
            lines.append(Line(f.kind, where, f"{f.stale_ep3} stale EP3 seqs counted, not applied",
                              "✓ found" if stale_seen >= f.stale_ep3 else "✗ MISSING"))
    return lines + more


def render(lines: Sequence[Line]) -> str:
    from streams.report.text import table

    rows = [(ln.kind, ln.where, ln.expected, ln.status) for ln in lines]
    bad = sum(not ln.ok for ln in lines)
    cut = sum(ln.status == "cut-off" for ln in lines)
    summary = f"{len(lines) - bad - cut} as injected, {cut} cut off at the end of the day, {bad} problem(s)"
    return f"{table(('injected', 'where', 'divmon should report', 'divmon'), rows)}\n  {summary}"
