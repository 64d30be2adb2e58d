"""JSON documents for `--json`: stable shapes, decimals as strings, instants as ms and ISO.

Guarantee: the output is plain JSON (no floats for decimals); the gate document always carries
`verdict`, `exit_code` and the full list of `reasons`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from streams.report.attribution import Report
from streams.report.gate import Finding, GateResult
from streams.report.timeutil import hours, iso

SAMPLE = 50


def plain(value: Any) -> Any:
    """Dataclasses, decimals, tuples and dicts made JSON-ready, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def _findings(found: Sequence[Finding] | None) -> dict[str, Any]:
    if found is None:
        return {"count": None, "sample": []}
    return {"count": len(found), "sample": plain(list(found[:SAMPLE]))}


def gate_doc(result: GateResult) -> dict[str, Any]:
    """The gate result as one JSON object."""
    ev, flip = result.evidence, result.evidence.flip
    return {
        "verdict": result.verdict,
        "exit_code": 0 if result.verdict == "CLEARED" else 1,
        "env": ev.env, "now_ms": ev.now_ms, "now": iso(ev.now_ms),
        "reasons": [{"code": r.code, "message": r.message} for r in result.reasons],
        "flip": None if flip is None else {
            "primary": flip.primary, "primary_since_ms": flip.primary_since_ms,
            "soak_start_ms": flip.soak_start_ms, "flips": plain(list(flip.flips[-SAMPLE:])),
            "lagging_accounts": list(flip.lagging_accounts[:SAMPLE]),
            "lagging_accounts_count": len(flip.lagging_accounts)},
        "soak_h": hours(result.soak_ms), "target_h": hours(ev.target_ms),
        "window_start_ms": ev.window_start_ms, "rows_in_db": ev.rows_in_db,
        "unexplained_mismatches": _findings(ev.unexplained),
        "witness_anomalies": _findings(ev.anomalies),
        "unvaluable": _findings(ev.unvaluable),
        "required_feeds": list(ev.required_feeds),
        "feed_gaps": None if ev.gaps is None else [
            {**plain(g), "silent_s": g.silent_ms // 1000} for g in ev.gaps[:SAMPLE]],
        "feed_gaps_count": None if ev.gaps is None else len(ev.gaps),
        "exposure": plain(result.exposure),
    }


def report_doc(report: Report) -> dict[str, Any]:
    """The report as one JSON object (the flip sentence included, for people reading JSON)."""
    doc: dict[str, Any] = plain(report)
    doc["flips"]["sentence"] = report.flips.sentence()
    doc["hourly"] = [{"hour_ms": h, "class": c, "count": n} for h, c, n in report.hourly]
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)
