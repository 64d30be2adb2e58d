"""Plain-text tables for people at a terminal: the gate verdict and the attribution report.

Guarantee: the first line of the gate text is the verdict, and every reason is printed.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.report.attribution import Report
from streams.report.gate import Finding, GateResult
from streams.report.rows import Dist
from streams.report.timeutil import hours, iso

SHOWN = 10


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table; an empty table says '(none)'."""
    if not rows:
        return "  (none)"
    cells = [[str(c) for c in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def dist(d: Dist) -> list[object]:
    return [d.n, d.min, d.p50, d.p90, d.p99, d.max]


DIST_HEAD = ["n", "min", "p50", "p90", "p99", "max"]


def _findings(title: str, found: Sequence[Finding] | None) -> list[str]:
    if found is None:
        return [f"{title}: unknown (query failed)"]
    rows = [[f.account_id, f.symbol, f.detail, iso(f.since_ms), iso(f.resolved_ts_ms)] for f in found[:SHOWN]]
    more = [f"  … and {len(found) - SHOWN} more"] if len(found) > SHOWN else []
    return [f"{title}: {len(found)}", table(["account", "symbol", "what", "since", "resolved"], rows), *more]


def gate_text(result: GateResult) -> str:
    """The verdict first, then every reason, then the evidence behind it."""
    ev, flip, x = result.evidence, result.evidence.flip, result.exposure
    out = [f"{result.verdict}  (env {ev.env}, now {iso(ev.now_ms)})"]
    out += [f"  ✗ {r.code}: {r.message}" for r in result.reasons] or ["  ✓ every check passed"]
    out.append("")
    if flip is not None:
        out.append(f"primary: {flip.primary or 'unknown'} since {iso(flip.primary_since_ms)}; "
                   f"flips recorded: {len(flip.flips)}")
    out.append(f"soak: {hours(result.soak_ms)} h of {hours(ev.target_ms)} h target "
               f"(window judged from {iso(ev.window_start_ms)})")
    out += _findings("unexplained mismatches", ev.unexplained)
    out += _findings("witness anomalies", ev.anomalies)
    out += _findings("unvaluable positions", ev.unvaluable)
    gaps = ev.gaps
    out.append(f"feed gaps (required: {', '.join(ev.required_feeds)}): {'unknown' if gaps is None else len(gaps)}")
    if gaps:
        out.append(table(["feed", "from", "to", "silent ≤ s"],
                         [[g.feed, iso(g.from_ms), iso(g.to_ms), g.silent_ms // 1000] for g in gaps[:SHOWN]]))
    out.append(f"exposure: {x.hours} h, {x.checks if x.checks is not None else '?'} account margin checks; "
               f"unexplained events {x.events}")
    if x.upper95_per_hour is not None:
        per_m = f", < {x.upper95_per_million_checks:.3g} per 1M checks" if x.upper95_per_million_checks else ""
        out.append(f"rule of three: rate < {x.upper95_per_hour:.3g} per hour{per_m} (95 % upper bound)")
    return "\n".join(out)


def report_text(r: Report) -> str:
    """Every section of the report, flip decomposition first."""
    out = [f"divmon report — env {r.env}, {iso(r.since_ms)} → {iso(r.until_ms)}"]
    if r.truncated:
        out.append("WARNING: row cap reached; counts are lower bounds")
    out += ["", r.flips.sentence(), f"  (flips with a mismatch but none matched: {r.flips.unmatched})", ""]
    out.append("position mismatches by class")
    out.append(table(["class", "n", "open", "fresher", *[f"|Δ| {h}" for h in DIST_HEAD[1:]]],
                     [[c.cls, c.n, c.still_open, _kv(c.by_fresher), *dist(c.abs_delta)[1:]] for c in r.classes]))
    out += ["", "top accounts", table(["account", "mismatches", "unexplained"],
                                      [[t.key, t.mismatches, t.unexplained] for t in r.top_accounts])]
    out += ["", "top symbols", table(["symbol", "mismatches", "unexplained"],
                                     [[t.key, t.mismatches, t.unexplained] for t in r.top_symbols])]
    out += ["", "gap statistics", table(["what", *DIST_HEAD], [
        ["snapshot age ms", *dist(r.snapshot_age_ms)],
        ["|open-orders margin og−re|", *dist(r.open_orders_margin_gap)],
        ["|avail gap| at flips", *dist(r.avail_gap)]])]
    out += ["", f"unvaluable positions: {sum(r.unvaluable.values())} ({r.unvaluable_open} still open)",
            table(["source/reason", "n"], sorted(r.unvaluable.items()))]
    out += ["", f"witness anomalies: {sum(r.anomalies.values())} ({r.anomalies_open} still open); "
            f"sweeps: {r.sweeps.sweeps}, oldest dormant ms: {r.sweeps.oldest_dormant_age_ms_max}",
            table(["status", "n"], sorted(r.anomalies.items()))]
    return "\n".join(out)


def _kv(d: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(d.items())) or "-"
