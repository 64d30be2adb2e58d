"""The attribution report (issue 4 item 5) as a pure function of the rows read for one env and range.

Guarantees: every count is over the final version of each event; a flip with
`position_mismatch=true` is attributed to the mismatches of the same account whose lifetime
[first seen, resolved or still open] contains the flip's opening instant (none found is counted as
`unmatched`, never dropped); distributions over no values are empty, never zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streams.core.events import UNEXPLAINED_CLASSES
from streams.report.rows import AnomalyRow, Dist, FlipRow, MismatchRow, SweepSummary, UnvaluableRow
from streams.report.timeutil import HOUR_MS

UNCLASSIFIED = "unclassified"
TOP_N = 10


@dataclass(frozen=True, slots=True)
class FlipDecomposition:
    flips: int
    agreed: int
    with_mismatch: int
    by_class: dict[str, int]
    by_fresher: dict[str, int]
    abs_delta: Dist
    unmatched: int

    def sentence(self) -> str:
        """The hand-made summary: 'of 61 flips, 57 agreed on positions; 4 had a position mismatch: …'."""
        head = f"of {self.flips} flips, {self.agreed} agreed on positions; {self.with_mismatch} had a position_mismatch"
        if not self.with_mismatch:
            return head
        classes = ", ".join(f"{n} {c}" for c, n in sorted(self.by_class.items()))
        fresher = ", ".join(f"{f} fresher {n}" for f, n in sorted(self.by_fresher.items()))
        span = f"|delta| {self.abs_delta.min}–{self.abs_delta.max}" if self.abs_delta.n else "no delta"
        return f"{head}: {classes}; {fresher}; {span}"


@dataclass(frozen=True, slots=True)
class ClassRow:
    cls: str
    n: int
    still_open: int
    by_fresher: dict[str, int]
    abs_delta: Dist


@dataclass(frozen=True, slots=True)
class TopRow:
    key: str
    mismatches: int
    unexplained: int


@dataclass(frozen=True, slots=True)
class Report:
    env: str
    since_ms: int
    until_ms: int
    flips: FlipDecomposition
    classes: list[ClassRow]
    top_accounts: list[TopRow]
    top_symbols: list[TopRow]
    snapshot_age_ms: Dist
    open_orders_margin_gap: Dist
    avail_gap: Dist
    unvaluable: dict[str, int]
    unvaluable_open: int
    anomalies: dict[str, int]
    anomalies_open: int
    sweeps: SweepSummary
    hourly: list[tuple[int, str, int]]
    truncated: bool = False


def _cls(m: MismatchRow) -> str:
    return m.cls or UNCLASSIFIED


def _overlapping(flip: FlipRow, ms: Sequence[MismatchRow]) -> list[MismatchRow]:
    t = flip.opened_ts_ms
    return [m for m in ms if m.first_seen_ts_ms <= t and (m.resolved_ts_ms is None or m.resolved_ts_ms >= t)]


def decompose(flips: Sequence[FlipRow], mismatches: Sequence[MismatchRow]) -> FlipDecomposition:
    """Flips split by whether the views agreed on positions, the disagreeing ones by class and fresher."""
    by_account: dict[str, list[MismatchRow]] = {}
    for m in mismatches:
        by_account.setdefault(m.account_id, []).append(m)
    classes: Counter[str] = Counter()
    fresher: Counter[str] = Counter()
    deltas, unmatched = [], 0
    for f in (f for f in flips if f.position_mismatch):
        found = _overlapping(f, by_account.get(f.account_id, []))
        unmatched += not found
        for m in found:
            classes[_cls(m)] += 1
            fresher[m.fresher] += 1
            deltas.append(abs(m.delta))
    k = sum(f.position_mismatch for f in flips)
    return FlipDecomposition(len(flips), len(flips) - k, k, dict(classes), dict(fresher), Dist.of(deltas),
                             unmatched)


def by_class(mismatches: Sequence[MismatchRow]) -> list[ClassRow]:
    """One row per class (unconfirmed ones as 'unclassified'), largest first."""
    groups: dict[str, list[MismatchRow]] = {}
    for m in mismatches:
        groups.setdefault(_cls(m), []).append(m)
    rows = [ClassRow(c, len(ms), sum(m.resolved_ts_ms is None for m in ms), dict(Counter(m.fresher for m in ms)),
                     Dist.of(abs(m.delta) for m in ms)) for c, ms in groups.items()]
    return sorted(rows, key=lambda r: (-r.n, r.cls))


def top(mismatches: Sequence[MismatchRow], key: str, n: int = TOP_N) -> list[TopRow]:
    """The n accounts (key='account_id') or symbols (key='symbol') with the most mismatches."""
    total: Counter[str] = Counter(getattr(m, key) for m in mismatches)
    unexplained: Counter[str] = Counter(getattr(m, key) for m in mismatches if m.cls in UNEXPLAINED_CLASSES)
    ordered = sorted(total.items(), key=lambda kv: (-unexplained[kv[0]], -kv[1], kv[0]))
    return [TopRow(k, c, unexplained[k]) for k, c in ordered[:n]]


def hourly(mismatches: Iterable[MismatchRow]) -> list[tuple[int, str, int]]:
    """(hour start ms, class, mismatches first seen in that hour), sorted."""
    c: Counter[tuple[int, str]] = Counter((m.first_seen_ts_ms // HOUR_MS * HOUR_MS, _cls(m)) for m in mismatches)
    return [(h, cls, n) for (h, cls), n in sorted(c.items())]


def build_report(env: str, since_ms: int, until_ms: int, flips: Sequence[FlipRow],
                 mismatches: Sequence[MismatchRow], unvaluable: Sequence[UnvaluableRow],
                 anomalies: Sequence[AnomalyRow], sweeps: SweepSummary, truncated: bool = False) -> Report:
    """The whole report from its rows.

    `mismatches` may include episodes first seen before `since_ms` that were still open in the range:
    they are used to attribute flips, but counted in the tables only when first seen inside the range.
    """
    all_mismatches = mismatches
    mismatches = [m for m in mismatches if since_ms <= m.first_seen_ts_ms < until_ms]
    ages = [m.snapshot_age_ms for m in mismatches if m.snapshot_age_ms is not None]
    ages += [f.snapshot_age_ms for f in flips]
    return Report(
        env=env, since_ms=since_ms, until_ms=until_ms, flips=decompose(flips, all_mismatches),
        classes=by_class(mismatches), top_accounts=top(mismatches, "account_id"),
        top_symbols=top(mismatches, "symbol"), snapshot_age_ms=Dist.of(ages),
        open_orders_margin_gap=Dist.of(abs(f.og_open_orders_margin - f.re_open_orders_margin) for f in flips),
        avail_gap=Dist.of(abs(f.gap) for f in flips),
        unvaluable=dict(Counter(f"{u.source}/{u.reason}" for u in unvaluable)),
        unvaluable_open=sum(u.resolved_ts_ms is None for u in unvaluable),
        anomalies=dict(Counter(a.status or "unknown" for a in anomalies)),
        anomalies_open=sum(a.resolved_ts_ms is None for a in anomalies),
        sweeps=sweeps, hourly=hourly(mismatches), truncated=truncated)
