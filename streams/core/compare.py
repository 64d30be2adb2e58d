"""The windowed EP3-vs-RE comparison: mismatch lifecycles, unvaluable positions, avail-gap flips.

Class rules (DESIGN section 3): a disagreement resolved within the grace window (inclusive) is a
`propagation_race`, whatever its shape; one that outlives grace is `never_in_cache` if EP3 has the
symbol absent, `phantom` if RE has it absent, else `persistent`, and keeps that class when it later
resolves. Absent counts as 0 for the delta, but it is reported as None, never as 0.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final

from streams.core import events
from streams.core.events import AvailGapFlip, PositionMismatch, event_id, new_unvaluable
from streams.core.state import AccountState, FlipEpisode, MismatchEpisode, UnvaluableEpisode, awaiting_confirmation
from streams.core.valuation import ZERO, differ, im_delta, position_im, unvaluable_reason

if TYPE_CHECKING:
    from streams.core.engine import Engine

MISMATCH_TIMER: Final = 0
# what each mismatch event is made with (events.py, interpreted, picks the C ones): Final, compiled,
# a C static read per call instead of a lookup in this module's globals
_episode_id: Final = events.episode_id
_new_position_mismatch: Final = events.new_position_mismatch


def compare_symbol(eng: Engine, acct: AccountState, symbol: str) -> None:
    """Open, observe or resolve the mismatch episode of one symbol at `eng.now`."""
    re = acct.re
    if re is None:
        return
    e = acct.ep3.get(symbol)
    r = re.get(symbol)
    ep = acct.mismatches.get(symbol)
    if differ(e or ZERO, r or ZERO):
        now = eng.now
        if ep is None:
            if not eng.risk_live():
                eng.stats["compare_held_risk_silent"] += 1
                return
            ep = MismatchEpisode("", symbol, now, eng.source_for(acct))
            acct.mismatches[symbol] = ep  # the id is made when first emitted: most episodes are races
            eng.schedule(now + eng.grace_ms, MISMATCH_TIMER, acct.account_id, symbol, now)
        _observe(eng, acct, ep, e, r, now)
    elif ep is not None:
        del acct.mismatches[symbol]
        if ep.confirmed is None:
            ep.cls = "propagation_race"
        _emit_mismatch(eng, acct, ep, "resolved", eng.now)


def _observe(eng: Engine, acct: AccountState, ep: MismatchEpisode, e: Decimal | None, r: Decimal | None,
             now: int) -> None:
    snap = acct.re_snapshot
    symbol = ep.symbol
    ep.ep3_qty, ep.re_qty, ep.re_snapshot = e, r, snap
    ep.mark = eng.marks.get(symbol)
    ep.im_delta = im_delta(symbol, e, r, eng.instruments, eng.marks)
    if snap is not None:
        published = snap.published_ts_ms
        ep.snapshot_age_ms = now - published
        ep3_ts = acct.ep3_touch.get(symbol)
        if ep3_ts is None or ep3_ts == published:
            ep.fresher = "UNKNOWN"
        else:
            ep.fresher = "EP3" if ep3_ts > published else "RE"


def confirm_mismatch(eng: Engine, acct: AccountState, symbol: str, first_seen: int, at: int) -> None:
    """Grace ran out with the views still apart: the mismatch is confirmed and classified."""
    ep = awaiting_confirmation(acct.mismatches, symbol, first_seen)
    if ep is None:
        return
    if not eng.risk_live():
        del acct.mismatches[symbol]
        eng.stats["mismatch_withdrawn_risk_silent"] += 1
        return
    ep.confirmed = at
    if ep.ep3_qty is None and ep.re_qty:
        ep.cls = "never_in_cache"
    elif ep.re_qty is None and ep.ep3_qty:
        ep.cls = "phantom"
    else:
        ep.cls = "persistent"
    _emit_mismatch(eng, acct, ep, "confirmed", None)


def _emit_mismatch(eng: Engine, acct: AccountState, ep: MismatchEpisode, state: str, resolved: int | None
                   ) -> None:
    ep.version += 1
    eng.emit(mismatch_event(eng, acct, ep, state, resolved, ep.version))


def mismatch_event(eng: Engine, acct: AccountState, ep: MismatchEpisode, state: str, resolved: int | None,
                   version: int) -> PositionMismatch:
    snap = ep.re_snapshot
    if not ep.event_id:
        ep.event_id = _episode_id(eng.env, "position_mismatch", acct.account_id, ep.symbol, ep.first_seen)
    return _new_position_mismatch(
        ep.event_id, version, eng.env, ep.source, acct.account_id, ep.symbol, state,  # type: ignore[arg-type]
        ep.cls, ep.ep3_qty, ep.re_qty, (ep.ep3_qty or ZERO) - (ep.re_qty or ZERO),  # type: ignore[arg-type]
        ep.first_seen, ep.confirmed, resolved, ep.fresher, ep.mark, ep.im_delta,  # type: ignore[arg-type]
        snap.equity if snap else None, ep.snapshot_age_ms, snap.im_total if snap else None,
        snap.avail if snap else None, snap.open_orders_margin if snap else None,
    )


# --- unvaluable ----------------------------------------------------------------------------------


def check_unvaluable(eng: Engine, acct: AccountState, symbol: str) -> None:
    """Open or resolve the unvaluable episodes of one symbol, for both sources."""
    ep3_reason = unvaluable_reason(symbol, acct.ep3.get(symbol), eng.instruments, eng.marks)
    _unvaluable_episode(eng, acct, "EP3", symbol, acct.ep3.get(symbol), ep3_reason)
    re_qty = acct.re.get(symbol) if acct.re is not None else None
    re_reason = "missing_im" if re_qty and acct.re_im.get(symbol) is None else None
    _unvaluable_episode(eng, acct, "RE", symbol, re_qty, re_reason)


def _unvaluable_episode(eng: Engine, acct: AccountState, source: str, symbol: str, qty: Decimal | None,
                        reason: str | None) -> None:
    key = (source, symbol)
    ep = acct.unvaluable.get(key)
    if reason is not None and ep is None and qty is not None:
        ep = UnvaluableEpisode(event_id(eng.cfg.env, "unvaluable", acct.account_id, source, symbol, eng.now),
                               symbol, source, eng.now, qty, reason, eng.source_for(acct))
        acct.unvaluable[key] = ep
        if source == "EP3":
            eng.unvaluable_index.setdefault(symbol, set()).add(acct.account_id)
        _emit_unvaluable(eng, acct, ep, "opened", None)
    elif reason is None and ep is not None:
        del acct.unvaluable[key]
        if source == "EP3" and not any(k[1] == symbol for k in acct.unvaluable):
            eng.unvaluable_index.get(symbol, set()).discard(acct.account_id)
        _emit_unvaluable(eng, acct, ep, "resolved", eng.now)


def _emit_unvaluable(eng: Engine, acct: AccountState, ep: UnvaluableEpisode, state: str,
                     resolved: int | None) -> None:
    ep.version += 1
    eng.emit(new_unvaluable(ep.event_id, ep.version, eng.cfg.env, ep.source_in_force, acct.account_id, ep.symbol,
                        ep.source, state, ep.qty, ep.reason, ep.first_seen, resolved))  # type: ignore[arg-type]


# --- avail-gap flips -----------------------------------------------------------------------------


def check_flips(eng: Engine, acct: AccountState) -> None:
    """Per threshold: open an episode when OG's and RE's order decisions first differ, close it when
    they agree again. One event per episode, not one per margin sweep."""
    og, snap = acct.og, acct.re_snapshot
    if og is None or snap is None:
        return
    for th in eng.thresholds:
        differ = (og.avail >= th) != (snap.avail >= th)
        ep = acct.flips.get(th)
        if differ and ep is None and eng.risk_live():
            ep = FlipEpisode(event_id(eng.cfg.env, "avail_gap_flip", acct.account_id, _num(th), eng.now),
                             th, eng.now, eng.source_for(acct))
            ep.fields = _flip_fields(eng, acct)
            acct.flips[th] = ep
            _emit_flip(eng, acct, ep, "opened", None)
        elif not differ and ep is not None:
            del acct.flips[th]
            _emit_flip(eng, acct, ep, "resolved", eng.now)


def _flip_fields(eng: Engine, acct: AccountState) -> dict[str, object]:
    og, snap = acct.og, acct.re_snapshot
    assert og is not None and snap is not None
    symbols, deltas = im_deltas(eng, acct)
    return {
        "computed_avail": og.avail, "published_avail": snap.avail, "gap": og.avail - snap.avail,
        "og_open_orders_margin": og.open_orders_margin, "re_open_orders_margin": snap.open_orders_margin,
        "og_im": og.im_positions, "re_im": snap.im_total, "equity": og.equity,
        "snapshot_age_ms": eng.now - snap.published_ts_ms,
        # every open episode is a current disagreement: resolved ones were dropped earlier in this settle
        "position_mismatch": bool(acct.mismatches),
        "im_delta_symbols": symbols, "im_deltas": deltas,
    }


def im_deltas(eng: Engine, acct: AccountState) -> tuple[tuple[str, ...], tuple[Decimal | None, ...]]:
    """Per symbol: IM of the EP3 position valued here minus RE's IM; only non-zero or unknown ones."""
    re = acct.re or {}
    symbols: list[str] = []
    deltas: list[Decimal | None] = []
    for s in sorted(set(acct.ep3) | set(re)):
        ep3_im = position_im(s, acct.ep3.get(s), eng.instruments, eng.marks)
        re_im = acct.re_im.get(s) if re.get(s) else ZERO
        delta = None if ep3_im is None or re_im is None else ep3_im - re_im
        if delta is None or delta:
            symbols.append(s)
            deltas.append(delta)
    return tuple(symbols), tuple(deltas)


def _emit_flip(eng: Engine, acct: AccountState, ep: FlipEpisode, state: str, resolved: int | None) -> None:
    ep.version += 1
    eng.emit(AvailGapFlip(event_id=ep.event_id, version=ep.version, env=eng.cfg.env, positions_source=ep.source,
                          account_id=acct.account_id, threshold=ep.threshold, state=state,  # type: ignore[arg-type]
                          opened_ts_ms=ep.opened, resolved_ts_ms=resolved, **ep.fields))  # type: ignore[arg-type]


def _num(d: Decimal) -> str:
    return format(d.normalize(), "f")
