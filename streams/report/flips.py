"""Positions-source flip state from `source_transition` rows: which source is primary, since when.

Several workers (and every account's margin sweep) may report the same config flip at slightly
different times. Reports to the same `to_source` that follow each other within `window_ms` are one
flip; a report to a different source always starts a new flip. Guarantees, all fail-closed:

- no transition seen -> `primary` is None (unknown), never assumed;
- the soak starts at the *last* report of the latest flip to EP3 with no later flip away from EP3
  (the latest report, so duplicate reports can only shorten the soak, never lengthen it);
- a first sighting (`UNKNOWN` -> the current primary) later than the window is continuity, not a
  flip: a new account or a backfill that starts mid-soak does not restart the clock, while
  `UNKNOWN` -> another source still starts a new flip;
- `lagging_accounts` lists accounts whose own latest transition is not to the current primary (a
  partial rollout or a per-instance revert), so a mixed fleet is never read as "on EP3".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

EP3 = "EP3"
UNKNOWN = "UNKNOWN"
FLIP_DEDUP_MS = 60_000


@dataclass(frozen=True, slots=True)
class Transition:
    ts_ms: int
    from_source: str
    to_source: str
    account_id: str
    scope: str


@dataclass(frozen=True, slots=True)
class Flip:
    """One config flip, however many reports it arrived as."""

    to_source: str
    first_ts_ms: int
    last_ts_ms: int
    reports: int


@dataclass(frozen=True, slots=True)
class FlipState:
    primary: str | None
    primary_since_ms: int | None
    soak_start_ms: int | None
    flips: tuple[Flip, ...]
    lagging_accounts: tuple[str, ...]


def normalise(source: str) -> str:
    """`ep3`, `EP3`, ` Ep3 ` -> `EP3`; `risk-engine` -> `RISK_ENGINE` (config and record spellings)."""
    return source.strip().upper().replace("-", "_")


def dedup(transitions: Iterable[Transition], window_ms: int = FLIP_DEDUP_MS) -> list[Flip]:
    """Collapse reports into flips, in time order (input order does not matter)."""
    flips: list[Flip] = []
    for t in sorted(transitions, key=lambda t: t.ts_ms):
        target = normalise(t.to_source)
        last = flips[-1] if flips else None
        if last is not None and last.to_source == target and t.ts_ms - last.last_ts_ms <= window_ms:
            flips[-1] = Flip(target, last.first_ts_ms, t.ts_ms, last.reports + 1)
        elif last is not None and last.to_source == target and normalise(t.from_source) == UNKNOWN:
            # first sighting of an account (or a backfill starting mid-soak) already on the primary:
            # continuity, not a flip — it must not restart the soak clock
            flips[-1] = Flip(target, last.first_ts_ms, last.last_ts_ms, last.reports + 1)
        else:
            flips.append(Flip(target, t.ts_ms, t.ts_ms, 1))
    return flips


def _lagging(transitions: Sequence[Transition], primary: str) -> tuple[str, ...]:
    latest: dict[str, Transition] = {}
    for t in sorted(transitions, key=lambda t: t.ts_ms):
        latest[t.account_id] = t
    return tuple(sorted(a for a, t in latest.items() if normalise(t.to_source) != primary))


def flip_state(transitions: Sequence[Transition], window_ms: int = FLIP_DEDUP_MS) -> FlipState:
    """Primary source, since when, and the soak start (None unless the primary is EP3)."""
    flips = dedup(transitions, window_ms)
    if not flips:
        return FlipState(None, None, None, (), ())
    current = flips[-1]
    soak_start = current.last_ts_ms if current.to_source == EP3 else None
    return FlipState(
        primary=current.to_source,
        primary_since_ms=current.first_ts_ms,
        soak_start_ms=soak_start,
        flips=tuple(flips),
        lagging_accounts=_lagging(transitions, current.to_source),
    )
