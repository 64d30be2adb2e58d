"""The gate's verdict (DESIGN section 6) as a pure function of the evidence read from ClickHouse.

Guarantee: the verdict is CLEARED only when every check has *positive* evidence of cleanliness:
the flip state is known and every account's primary is EP3, the soak reached the target, the
unexplained-mismatch, witness-anomaly and unvaluable counts are known and zero, the feed-gap list is
known and empty, and the database holds data for the env. Anything unknown (a failed query is
`None` here) is a reason. Every failing reason is listed, not just the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from streams.report.flips import EP3, FlipState
from streams.report.gaps import FeedGap
from streams.report.timeutil import HOUR_MS, hours, iso

Verdict = Literal["CLEARED", "NOT_CLEARED"]


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One blocking event inside the window (a mismatch, an anomaly or an unvaluable position)."""

    kind: str
    account_id: str | None
    symbol: str | None
    detail: str
    since_ms: int | None
    resolved_ts_ms: int | None


@dataclass(frozen=True, slots=True)
class Exposure:
    """Rule of three: zero events over T hours bounds the rate below 3/T per hour at 95 %."""

    hours: float
    checks: int | None
    events: int
    rate_per_hour: float | None
    upper95_per_hour: float | None
    upper95_per_million_checks: float | None


@dataclass(frozen=True, slots=True)
class GateEvidence:
    env: str
    now_ms: int
    target_ms: int
    window_start_ms: int
    flip: FlipState | None
    rows_in_db: int | None
    unexplained: Sequence[Finding] | None
    anomalies: Sequence[Finding] | None
    unvaluable: Sequence[Finding] | None
    gaps: Sequence[FeedGap] | None
    checks: int | None
    required_feeds: tuple[str, ...]
    errors: Sequence[Reason] = ()


@dataclass(frozen=True, slots=True)
class GateResult:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    evidence: GateEvidence
    soak_ms: int
    exposure: Exposure = field(default_factory=lambda: Exposure(0.0, None, 0, None, None, None))


def soak_ms(flip: FlipState | None, now_ms: int) -> int:
    """Time on EP3 as primary without a flip back; 0 when unknown or not on EP3."""
    if flip is None or flip.soak_start_ms is None:
        return 0
    return max(0, now_ms - flip.soak_start_ms)


def exposure(ev: GateEvidence) -> Exposure:
    """Exposure over the judged window: hours, and account margin checks (og.margin records)."""
    span_h = max(0, ev.now_ms - ev.window_start_ms) / HOUR_MS
    events = len(ev.unexplained or ()) + len(ev.anomalies or ())
    rate = events / span_h if span_h > 0 else None
    up_h = 3.0 / span_h if events == 0 and span_h > 0 else None
    up_m = 3.0 / ev.checks * 1e6 if events == 0 and ev.checks else None
    return Exposure(round(span_h, 3), ev.checks, events, rate, up_h, up_m)


def _flip_reasons(ev: GateEvidence) -> list[Reason]:
    flip = ev.flip
    if flip is None:
        return []  # the failed query is already an error reason
    if flip.primary is None:
        return [Reason("FLIP_STATE_UNKNOWN", "no positions-source transition recorded: flip state unknown")]
    out: list[Reason] = []
    if flip.primary != EP3:
        out.append(Reason("PRIMARY_NOT_EP3", f"primary is {flip.primary} since {iso(flip.primary_since_ms)}"))
    pairs = zip(flip.flips, flip.flips[1:], strict=False)
    away = [b for a, b in pairs if a.to_source == EP3 != b.to_source and b.first_ts_ms >= ev.now_ms - ev.target_ms]
    if away:
        out.append(Reason("FLIP_BACK", f"{len(away)} flip(s) away from EP3 inside the last "
                          f"{hours(ev.target_ms)} h, latest to {away[-1].to_source} at {iso(away[-1].first_ts_ms)}"))
    if flip.primary == EP3 and flip.lagging_accounts:
        sample = ", ".join(flip.lagging_accounts[:5])
        out.append(Reason("PRIMARY_MIXED", f"{len(flip.lagging_accounts)} account(s) last reported a source "
                          f"other than {flip.primary}: {sample}"))
    return out


def _soak_reasons(ev: GateEvidence) -> list[Reason]:
    if ev.flip is None or ev.flip.primary != EP3:
        return []
    soak = soak_ms(ev.flip, ev.now_ms)
    if soak < ev.target_ms:
        return [Reason("SOAK_SHORT", f"soak {hours(soak)} h < target {hours(ev.target_ms)} h "
                       f"(on EP3 since {iso(ev.flip.soak_start_ms)})")]
    return []


def _finding_reason(code: str, what: str, found: Sequence[Finding] | None) -> list[Reason]:
    if found is None or not found:
        return []
    first = found[0]
    return [Reason(code, f"{len(found)} {what} inside the soak window; first: {first.detail} "
                   f"account={first.account_id} symbol={first.symbol} at {iso(first.since_ms)}")]


def _gap_reasons(gaps: Sequence[FeedGap] | None) -> list[Reason]:
    if not gaps:
        return []
    worst = max(gaps, key=lambda g: g.silent_ms)
    feeds = ", ".join(sorted({g.feed for g in gaps}))
    return [Reason("FEED_GAP", f"{len(gaps)} gap(s) in {feeds}; longest: {worst.feed} silent up to "
                   f"{worst.silent_ms // 1000} s from {iso(worst.from_ms)} to {iso(worst.to_ms)}")]


def _positively_clean(ev: GateEvidence) -> bool:
    """The affirmative predicate: every piece of evidence present and clean (belt and braces)."""
    return (ev.flip is not None and ev.flip.primary == EP3 and not ev.flip.lagging_accounts
            and soak_ms(ev.flip, ev.now_ms) >= ev.target_ms and ev.rows_in_db is not None
            and ev.rows_in_db > 0 and ev.unexplained is not None and not ev.unexplained
            and ev.anomalies is not None and not ev.anomalies and ev.unvaluable is not None
            and not ev.unvaluable and ev.gaps is not None and not ev.gaps and not ev.errors)


def judge(ev: GateEvidence) -> GateResult:
    """Every reason the soak is not clean; CLEARED only when there is none and all evidence is clean."""
    reasons: list[Reason] = list(ev.errors)
    if ev.rows_in_db == 0:
        reasons.append(Reason("EMPTY_DATABASE", f"no events recorded for env {ev.env!r}"))
    reasons += _flip_reasons(ev) + _soak_reasons(ev)
    reasons += _finding_reason("UNEXPLAINED_MISMATCH", "unexplained position mismatch(es)", ev.unexplained)
    reasons += _finding_reason("WITNESS_ANOMALY", "witness anomaly(ies)", ev.anomalies)
    reasons += _finding_reason("UNVALUABLE", "unvaluable position(s)", ev.unvaluable)
    reasons += _gap_reasons(ev.gaps)
    if not reasons and not _positively_clean(ev):
        reasons.append(Reason("INCOMPLETE_EVIDENCE", "evidence incomplete: refusing to clear"))
    verdict: Verdict = "CLEARED" if not reasons else "NOT_CLEARED"
    return GateResult(verdict, tuple(reasons), ev, soak_ms(ev.flip, ev.now_ms), exposure(ev))
