"""Per-account engine state and the open episodes it carries.

Everything the engine knows about an account lives in one `AccountState`, so a stream worker can
checkpoint it to a changelog-backed table and a worker that takes over the partition restores it
whole (timers are re-derived from the episodes; checksums are recomputed, never persisted).

Absent and zero stay distinct: a symbol missing from `ep3` is absent; `ep3[s] == 0` is
present-and-flat. The same holds for `re` and `ledger`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from streams import _native
from streams.core.records import OgMargin, RiskSnapshot

# The two episode classes below are opened for every race (most of them resolve within grace), so
# they are plain classes with their own __init__ rather than dataclasses: compiled by mypyc
# (streams/_native.py), a dataclass keeps an interpreted __init__, which cost more than the rest of
# opening an episode. Same fields, same positional order as serde builds them.


class MismatchEpisode:
    """One disagreement between EP3 and RE on (account, symbol), from first sight to resolution."""

    __slots__ = ("event_id", "symbol", "first_seen", "source", "confirmed", "cls", "version", "ep3_qty", "re_qty",  # noqa: RUF023
                 "fresher", "mark", "im_delta", "snapshot_age_ms", "re_snapshot")

    def __init__(self, event_id: str, symbol: str, first_seen: int, source: str = "UNKNOWN",
                 confirmed: int | None = None, cls: str | None = None, version: int = 0,
                 ep3_qty: Decimal | None = None, re_qty: Decimal | None = None, fresher: str = "UNKNOWN",
                 mark: Decimal | None = None, im_delta: Decimal | None = None,
                 snapshot_age_ms: int | None = None, re_snapshot: RiskSnapshot | None = None) -> None:
        self.event_id = event_id
        self.symbol = symbol
        self.first_seen = first_seen
        self.source = source
        self.confirmed = confirmed
        self.cls = cls
        self.version = version
        # the last observation while the views disagreed: what the event reports
        self.ep3_qty = ep3_qty
        self.re_qty = re_qty
        self.fresher = fresher
        self.mark = mark
        self.im_delta = im_delta
        self.snapshot_age_ms = snapshot_age_ms
        self.re_snapshot = re_snapshot

    def __repr__(self) -> str:
        return f"MismatchEpisode({self.symbol!r}, first_seen={self.first_seen}, cls={self.cls!r})"


class AnomalyEpisode:
    """A disagreement between the fills ledger and the EP3 mirror, held for the grace window."""

    __slots__ = ("event_id", "symbol", "first_seen", "source", "confirmed", "status", "version", "ledger_qty",  # noqa: RUF023
                 "ep3_qty")

    def __init__(self, event_id: str, symbol: str, first_seen: int, source: str = "UNKNOWN",
                 confirmed: int | None = None, status: str | None = None, version: int = 0,
                 ledger_qty: Decimal | None = None, ep3_qty: Decimal | None = None) -> None:
        self.event_id = event_id
        self.symbol = symbol
        self.first_seen = first_seen
        self.source = source
        self.confirmed = confirmed
        self.status = status
        self.version = version
        self.ledger_qty = ledger_qty
        self.ep3_qty = ep3_qty

    def __repr__(self) -> str:
        return f"AnomalyEpisode({self.symbol!r}, first_seen={self.first_seen}, status={self.status!r})"


@dataclass(slots=True)
class FlipEpisode:
    event_id: str
    threshold: Decimal
    opened: int
    source: str = "UNKNOWN"
    version: int = 0
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class UnvaluableEpisode:
    event_id: str
    symbol: str
    source: str
    first_seen: int
    qty: Decimal
    reason: str
    source_in_force: str = "UNKNOWN"
    version: int = 0


E = TypeVar("E", MismatchEpisode, AnomalyEpisode)


@dataclass(slots=True)
class AccountState:
    account_id: str
    # EP3 mirror
    ep3: dict[str, Decimal] = field(default_factory=dict)
    ep3_touch: dict[str, int] = field(default_factory=dict)  # symbol -> ts of EP3's last word on it
    ep3_seq: int | None = None
    ep3_ready: bool = False
    # risk-engine view
    re: dict[str, Decimal] | None = None
    re_im: dict[str, Decimal | None] = field(default_factory=dict)
    re_snapshot: RiskSnapshot | None = None
    # order gateway margin sweep
    og: OgMargin | None = None
    # replacement witness: fills ledger
    ledger: dict[str, Decimal] | None = None
    ledger_touch: dict[str, int] = field(default_factory=dict)
    baseline: str | None = None
    baseline_ts: int = 0
    # open episodes
    mismatches: dict[str, MismatchEpisode] = field(default_factory=dict)
    anomalies: dict[str, AnomalyEpisode] = field(default_factory=dict)
    flips: dict[Decimal, FlipEpisode] = field(default_factory=dict)
    unvaluable: dict[tuple[str, str], UnvaluableEpisode] = field(default_factory=dict)
    # work for the next settle (not persisted)
    dirty: set[str] = field(default_factory=set)
    margin_dirty: bool = False
    baseline_candidates: dict[str, tuple[int, dict[str, Decimal]]] = field(default_factory=dict)
    # set-level checksums over non-zero positions, as of the last sweep that needed them; stale once
    # either position set changed since (not persisted: a restored account starts stale)
    ep3_sum: int = 0
    ledger_sum: int = 0
    sums_stale: bool = True

    @property
    def unsettled(self) -> bool:
        """Work the next settle will do (dirty symbols, margin flag, baseline candidates)."""
        return bool(self.dirty or self.margin_dirty or self.baseline_candidates)


def awaiting_confirmation(episodes: dict[str, E], symbol: str, first_seen: int) -> E | None:
    """The episode a grace timer set at `first_seen` is for, if it is still waiting to be confirmed
    (None once it resolved as a race, or a later episode replaced it)."""
    ep = episodes.get(symbol)
    if ep is None or ep.first_seen != first_seen or ep.confirmed is not None:
        return None
    return ep


MASK = (1 << 64) - 1


_SYMBOL_KEYS: dict[str, int] = {}  # symbol -> 64-bit key; symbols are few (one per instrument)


_POS_HASHES: dict[tuple[str, Decimal], int] = {}  # (symbol, qty) -> pos_hash: a bounded memo
POS_HASH_MEMO = 1 << 16


def pos_hash(symbol: str, qty: Decimal) -> int:
    """`position_hash`, memoised: a position's contribution is added when it is set and subtracted
    when it changes, and the EP3 mirror and the ledger hold the same positions, so most calls repeat
    one (~0.2 µs instead of ~0.65). Equal quantities (62, 62.0) share an entry and a hash."""
    key = (symbol, qty)
    h = _POS_HASHES.get(key)
    if h is None:
        if len(_POS_HASHES) >= POS_HASH_MEMO:
            _POS_HASHES.clear()
        h = _POS_HASHES[key] = position_hash(symbol, qty)
    return h


def position_hash(symbol: str, qty: Decimal) -> int:
    """Order-independent contribution of one non-zero position to a set checksum.

    Deterministic across processes and well mixed. Not `hash((symbol, qty))`: str hashes are salted
    per process (a worker and a replay would disagree), and sums of tuple hashes nearly cancel when
    two positions move by opposite amounts: {AVAX -50.5, EUR 62} and {AVAX -53.5, EUR 65} summed
    to the same checksum under a third of hash seeds, so the sweep missed that difference. Here the
    symbol's key (blake2b) is combined with the quantity's numeric hash (unsalted, equal for equal
    values such as 62 and 62.0) and put through the splitmix64 finalizer, a bijection that leaves
    no such linear structure for a sum to cancel."""
    key = _SYMBOL_KEYS.get(symbol)
    if key is None:
        key = _SYMBOL_KEYS[symbol] = int.from_bytes(
            hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "little")
    x = key ^ (hash(qty) & MASK)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def checksum(positions: dict[str, Decimal]) -> int:
    """The set checksum of `positions`: the sum of `pos_hash` over its non-zero quantities, modulo
    2**64. In C (`set_checksum` of streams/core/_cevents.c) while the native build runs, once every
    symbol has its key; the loop below makes the missing keys."""
    if _SET_CHECKSUM is not None:
        total: int | None = _SET_CHECKSUM(positions, _SYMBOL_KEYS)
        if total is not None:
            return total
    result = 0
    for s, q in positions.items():
        if q:
            result = (result + pos_hash(s, q)) & MASK
    return result


_C = _native.c_module("streams.core._cevents")
_SET_CHECKSUM: Callable[[dict[str, Decimal], dict[str, int]], int | None] | None = (
    None if _C is None else _C.set_checksum)
