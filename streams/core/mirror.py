"""Applying input records to one account's state, with EP3's exact semantics (DESIGN section 2).

Each function mutates the `AccountState` it is given and marks what changed as dirty; the engine
compares dirty symbols once per event-time instant (`Engine._settle`), so the order of records
that share a timestamp never changes a verdict.
"""

from __future__ import annotations

from decimal import Decimal

from streams.core.records import Ep3PositionEvent, Fill, OgMargin, RiskSnapshot
from streams.core.state import AccountState
from streams.core.valuation import ZERO, differ


def _set_ep3(acct: AccountState, symbol: str, qty: Decimal | None) -> None:
    """Set (or, with None, remove) one EP3 position; the set checksums are recomputed by the next
    sweep that needs them (`witness.sums_differ`)."""
    if qty is None:
        del acct.ep3[symbol]
    else:
        acct.ep3[symbol] = qty
    acct.sums_stale = True
    acct.dirty.add(symbol)


def apply_ep3(acct: AccountState, ev: Ep3PositionEvent) -> str:
    """Apply an EP3 event; returns what it was: 'stale', 'bookmark', 'snapshot' or 'update'.

    - a seq not above the last applied one is stale (duplicate or reorder): counted, not applied;
    - SNAPSHOT with positions replaces the account: unlisted symbols become absent;
    - SNAPSHOT without positions is the bookmark: the account is ready, nothing is replaced;
    - UPDATE sets the listed symbols; qty 0 is present-and-flat, never absent.
    """
    if acct.ep3_seq is not None and ev.seq <= acct.ep3_seq:
        return "stale"
    acct.ep3_seq = ev.seq
    touch = acct.ep3_touch
    if ev.kind == "UPDATE":
        for p in ev.positions:
            touch[p.symbol] = ev.ts_ms
            if differ(acct.ep3.get(p.symbol), p.qty) or p.symbol not in acct.ep3:
                _set_ep3(acct, p.symbol, p.qty)
        return "update"
    acct.ep3_ready = True
    if not ev.positions:
        return "bookmark"
    listed = {p.symbol: p.qty for p in ev.positions}
    for symbol in [s for s in acct.ep3 if s not in listed]:
        touch[symbol] = ev.ts_ms
        _set_ep3(acct, symbol, None)
    for symbol, qty in listed.items():
        touch[symbol] = ev.ts_ms
        if differ(acct.ep3.get(symbol), qty) or symbol not in acct.ep3:
            _set_ep3(acct, symbol, qty)
    if acct.ledger is None:  # a seeded ledger takes no other baseline: don't copy the book for nothing
        acct.baseline_candidates.setdefault("EP3", (ev.ts_ms, listed))
    return "snapshot"


def apply_risk(acct: AccountState, snap: RiskSnapshot) -> bool:
    """Replace the RE view with a newer full snapshot; an older one is ignored (returns False)."""
    prev = acct.re_snapshot
    if prev is not None and snap.published_ts_ms < prev.published_ts_ms:
        return False
    old = acct.re
    dirty = acct.dirty
    if old is None:
        new: dict[str, Decimal] = {}
        new_im: dict[str, Decimal | None] = {}
        for s, q, im in snap.positions:
            new[s] = q
            new_im[s] = im
        # first RE view: everything either side holds is newly comparable
        dirty.update(new)
        dirty.update(acct.ep3)
        acct.re, acct.re_im = new, new_im
        view = new
    else:
        view = old
        # the view is updated in place (building a new one took two dicts a snapshot): each listed
        # symbol takes the snapshot's quantity and IM objects (an equal quantity written another
        # way, 1.0 for 1, is what the next event reports), and is marked if its quantity changed or
        # its IM became known or unknown; symbols are unique (`checked`), so each is met once
        old_im = acct.re_im
        before = len(old)
        kept = 0
        for s, q, im in snap.positions:
            o = old.get(s)
            if o is not None:
                kept += 1
            if differ(o, q) or (im is None) != (old_im.get(s) is None):
                dirty.add(s)
            old[s] = q
            old_im[s] = im
        if kept != before:  # some symbol of the old view is not listed any more: absent now
            listed = {p.symbol for p in snap.positions}
            for s in [s for s in old if s not in listed]:
                del old[s]
                old_im.pop(s, None)
                dirty.add(s)
    acct.re_snapshot = snap
    acct.margin_dirty = True
    if acct.ledger is None:
        acct.baseline_candidates.setdefault("RE", (snap.published_ts_ms, dict(view)))
    return True


def apply_og(acct: AccountState, og: OgMargin) -> bool:
    if acct.og is not None and og.ts_ms < acct.og.ts_ms:
        return False
    acct.og = og
    acct.margin_dirty = True
    return True


def apply_fill(acct: AccountState, fill: Fill) -> bool:
    """Advance the witness ledger; fills at or before the baseline are already in it."""
    ledger = acct.ledger
    if ledger is None or fill.ts_ms <= acct.baseline_ts:
        return False
    ledger[fill.symbol] = (ledger.get(fill.symbol) or ZERO) + fill.qty  # ZERO is Decimal(0), not built anew
    acct.sums_stale = True
    acct.ledger_touch[fill.symbol] = fill.ts_ms
    acct.dirty.add(fill.symbol)
    return True
