"""The divergence engine: one pure state machine driven by records and event time.

Drivers (offline replay, stream workers) call `process(feed, ts_ms, record)` in event-time order and
`advance(ts_ms)` when time passes without records; they collect output with `take_events()`. The
engine never reads a clock: `ts_ms` is the record's timestamp, and a record older than the engine's
clock is applied at the current instant (late), never rewinding time.

Guarantees:
- comparisons run once per event-time instant, after every record of that instant was applied, so
  the order of records that share a timestamp does not change any verdict;
- grace windows are inclusive: a disagreement resolved at first_seen + grace is a race; the confirm
  timer fires only once the clock has moved past that instant;
- the same input always yields the same events with the same ids.
"""

from __future__ import annotations

import heapq
from decimal import Decimal
from typing import Any, Final

from streams.core import compare, mirror, witness
from streams.core.events import Event, PositionMismatch, event_id, new_feed_health, new_source_transition
from streams.core.params import EngineConfig
from streams.core.records import (
    Ep3PositionEvent,
    Feed,
    Fill,
    Instrument,
    Mark,
    OgMargin,
    Record,
    RiskSnapshot,
)
from streams.core.state import AccountState, awaiting_confirmation
from streams.core.tally import Tally
from streams.core.valuation import ZERO, differ

MINUTE_MS = 60_000
Timer = tuple[int, int, str, str, int]  # deadline, kind, account_id, symbol, first_seen
# how the queue holds one: compiled, a fixed-length tuple type is unboxed into a C struct at every
# read and boxed again at every compare or return (~3 µs a timer); a variable-length one stays a tuple
_Queued = tuple[Any, ...]
# stats keys per apply_ep3 outcome: built once (a key made by concatenation is a new string, hashed anew)
_EP3_STATS: Final = {kind: "ep3_" + kind for kind in ("stale", "bookmark", "snapshot", "update")}
# the feeds, for `process` to dispatch on by identity (Final: compiled, each is a C static, not a lookup)
_EP3: Final = Feed.EP3
_RISK: Final = Feed.RISK
_OG: Final = Feed.OG_MARGIN
_FILLS: Final = Feed.FILLS
_MARKS: Final = Feed.MARKS
_INSTRUMENTS: Final = Feed.INSTRUMENTS


class TimerQueue:
    """Pending timers, popped in (deadline, kind, account_id, symbol, first_seen) order, as one heap
    would pop them, but in O(1) for the common case: grace timers are scheduled at now + grace by a
    clock that never goes back, so almost all arrive in order and queue in a FIFO; the rest (sweeps,
    timers re-derived on restore, ties out of order) go to a heap. Both stay sorted, and a pop takes
    the smaller head."""

    def __init__(self) -> None:
        # the FIFO is a list read from `_head` (indexing a list is a direct call when compiled, a
        # deque's is not); the consumed prefix is cut off once it is most of the list
        self._fifo: list[_Queued] = []
        self._head = 0
        self._heap: list[_Queued] = []

    def push(self, t: _Queued, in_order_likely: bool = True) -> None:
        fifo = self._fifo
        if in_order_likely:
            if len(fifo) == self._head:
                fifo.append(t)
                return
            last = fifo[-1]
            # deadlines first, as ints (typed, they compare in C; as items of a tuple of Any each
            # comparison is a call of Python's protocol): they decide almost every push
            deadline: int = t[0]
            last_deadline: int = last[0]
            if deadline > last_deadline or (deadline == last_deadline and t >= last):
                fifo.append(t)
                return
        heapq.heappush(self._heap, t)

    def pop_before(self, ts_ms: int) -> _Queued | None:
        """The first timer if its deadline is before `ts_ms` (removed), else None."""
        fifo, heap, head = self._fifo, self._heap, self._head
        if head < len(fifo):
            t = fifo[head]
            deadline: int = t[0]
            if heap:
                h = heap[0]
                first: int = h[0]
                # deadlines first: comparing them is cheaper than comparing tuples, and decides most
                if first < deadline or (first == deadline and h < t):  # on a tie the fifo's: equal tuples are one timer
                    return heapq.heappop(heap) if first < ts_ms else None
            if deadline >= ts_ms:
                return None
            head += 1
            if head >= 4096 and head * 2 >= len(fifo):
                del fifo[:head]
                head = 0
            self._head = head
            return t
        if heap:
            first_heap: int = heap[0][0]
            if first_heap < ts_ms:
                return heapq.heappop(heap)
        return None

    def pending(self) -> list[Timer]:
        return sorted([*self._fifo[self._head:], *self._heap])

    def __len__(self) -> int:
        return len(self._fifo) - self._head + len(self._heap)


class Engine:
    def __init__(self, cfg: EngineConfig | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        # what the comparisons read per episode, as native attributes (the config is a frozen
        # dataclass: compiled, each read of one of its fields is a generic attribute lookup)
        self.env = self.cfg.env
        self.grace_ms = self.cfg.grace_ms
        self.thresholds = self.cfg.thresholds
        self._risk_silence_ms = self.cfg.risk_silence_ms
        self.accounts: dict[str, AccountState] = {}
        self.instruments: dict[str, Instrument] = {}
        self.marks: dict[str, Decimal] = {}
        self.source = "UNKNOWN"
        self.last_risk_ts: int | None = None
        self._source_key: tuple[int, str] = (0, "")
        self.now = 0
        self.started = False
        self.stats: Tally[str] = Tally()
        self.open_anomalies = 0
        self.unvaluable_index: dict[str, set[str]] = {}
        self._out: list[Event] = []
        self._dirty: dict[str, AccountState] = {}
        self._timers = TimerQueue()
        self._minute: int | None = None
        self._minute_end = 0
        # records per feed in the current minute: native ints, one per feed (a dict's store per record
        # cost ~470 instructions, compiled); see minute_counts()
        self._n_ep3 = self._n_risk = self._n_og = self._n_fills = self._n_marks = self._n_instruments = 0
        self._next_sweep: int | None = None
        self.records_by_feed: Tally[str] = Tally()

    # --- driver API ------------------------------------------------------------------------------

    def process(self, feed: Feed, ts_ms: int, record: Record) -> None:
        """Apply one record at event time `ts_ms` (clamped to the engine clock if late)."""
        if ts_ms > self.now or not self.started:
            self.advance(ts_ms)
        elif ts_ms < self.now:
            self.stats["late_records"] += 1
        if not self._dispatch(feed, record) and not self._dispatch(Feed(feed), record):
            raise ValueError(f"not a feed: {feed!r}")

    def process_entries(self, entries: list[tuple[Any, ...]], touched: set[str]) -> None:
        """`process` for each entry `(ts_ms, feed, record, ...)` in order (a driver's loop, run
        compiled: from interpreted code, the loop and its calls of `process` were 2.8% of the
        instructions per record of a worker's ingest and apply, callgrind). A mark or an instrument
        may value a symbol held unvaluable: before it is applied, the accounts holding that symbol
        are added to `touched` (their state may change); the accounts of account records are the
        caller's to note."""
        unv = self.unvaluable_index
        for entry in entries:
            feed: Feed = entry[1]
            record = entry[2]
            if unv and (feed is _MARKS or feed is _INSTRUMENTS):
                held = unv.get(record.symbol)
                if held:
                    touched.update(held)
            self.process(feed, entry[0], record)

    def _dispatch(self, feed: Feed, record: Any) -> bool:
        """Count and apply `record` if `feed` is one of the members (by identity: direct calls, no
        lookup); False for anything else (a feed's value as a plain str: `process` converts it)."""
        if feed is _EP3:
            self._n_ep3 += 1
            self._on_ep3(record)
        elif feed is _RISK:
            self._n_risk += 1
            self._on_risk(record)
        elif feed is _FILLS:
            self._n_fills += 1
            self._on_fill(record)
        elif feed is _OG:
            self._n_og += 1
            self._on_og(record)
        elif feed is _MARKS:
            self._n_marks += 1
            self._on_mark(record)
        elif feed is _INSTRUMENTS:
            self._n_instruments += 1
            self._on_instrument(record)
        else:
            return False
        return True

    def minute_counts(self) -> dict[Feed, int]:
        """Records applied per feed in the current minute (feeds with none left out)."""
        counts = {_EP3: self._n_ep3, _RISK: self._n_risk, _OG: self._n_og, _FILLS: self._n_fills,
                  _MARKS: self._n_marks, _INSTRUMENTS: self._n_instruments}
        return {feed: n for feed, n in counts.items() if n}

    def set_minute_counts(self, counts: dict[Feed, int]) -> None:
        """Restore `minute_counts()` (a checkpoint's); a feed left out had none."""
        self._n_ep3, self._n_risk, self._n_og = counts.get(_EP3, 0), counts.get(_RISK, 0), counts.get(_OG, 0)
        self._n_fills, self._n_marks = counts.get(_FILLS, 0), counts.get(_MARKS, 0)
        self._n_instruments = counts.get(_INSTRUMENTS, 0)

    def advance(self, ts_ms: int) -> None:
        """Move event time to `ts_ms`: settle the current instant, fire due timers, close minutes."""
        now = self.now
        if not self.started:
            self.started = True
            self.now = ts_ms
            self._minute = ts_ms - ts_ms % MINUTE_MS
            self._minute_end = self._minute + MINUTE_MS
            interval = self.cfg.sweep_interval_ms
            self._next_sweep = (ts_ms // interval + 1) * interval
            self.schedule(self._next_sweep, witness.SWEEP_TIMER, "", "", 0)
            return
        if ts_ms <= now:
            return
        if self._dirty:
            self._settle()
        timers = self._timers  # a direct call when compiled (a bound method would be a Python call)
        accounts = self.accounts
        while (t := timers.pop_before(ts_ms)) is not None:
            # typed, the ints compare as ints (as items of a tuple of Any, through Python's protocol)
            deadline: int = t[0]
            kind: int = t[1]
            account_id: str = t[2]
            symbol: str = t[3]
            first_seen: int = t[4]
            if kind != witness.SWEEP_TIMER:
                # most grace timers belong to episodes that resolved as races: drop those here, as
                # confirm_* would (nothing was dirty, so skipping the instant changes nothing)
                acct = accounts.get(account_id)
                if acct is None:
                    continue
                if kind == compare.MISMATCH_TIMER:
                    if awaiting_confirmation(acct.mismatches, symbol, first_seen) is None:
                        continue
                elif awaiting_confirmation(acct.anomalies, symbol, first_seen) is None:
                    continue
            self.now = deadline
            self._fire(deadline, kind, account_id, symbol, first_seen)
            if self._dirty:
                self._settle()
        self.now = ts_ms
        if ts_ms >= self._minute_end:
            self._close_minutes(ts_ms)

    def flush(self) -> None:
        """Settle the current instant without moving time (end of input): no verdict is forced."""
        self._settle()

    def pending(self) -> list[PositionMismatch]:
        """Disagreements still inside their grace window, as `opened` mismatch events (class None).

        They are not emitted while the stream runs — a verdict is held until grace has passed — but
        at the end of a bounded input (replay) they are the final state of those episodes."""
        out = []
        for acct in self.accounts.values():
            for ep in acct.mismatches.values():
                if ep.confirmed is None:
                    out.append(compare.mismatch_event(self, acct, ep, "opened", None, ep.version + 1))
        return out

    def unsettled(self) -> list[str]:
        """Accounts with records applied at the current instant but not settled yet (their state
        changes again when time moves on)."""
        return list(self._dirty)

    def take_events(self) -> list[Event]:
        out, self._out = self._out, []
        return out

    def account(self, account_id: str) -> AccountState:
        acct = self.accounts.get(account_id)
        if acct is None:
            acct = self.accounts[account_id] = AccountState(account_id)
        return acct

    # --- used by compare / witness ---------------------------------------------------------------

    def risk_live(self) -> bool:
        """Is RE still publishing (see EngineConfig.risk_silence_ms)?"""
        silence = self._risk_silence_ms
        if not silence:
            return True
        return self.last_risk_ts is not None and self.now - self.last_risk_ts <= silence

    def source_for(self, acct: AccountState) -> str:
        """The positions source in force for an account: what OG's own margin sweep for it said,
        else the last one seen for any account, else UNKNOWN. Per account, so a partition-local
        engine and a whole-feed replay agree."""
        return acct.og.positions_source if acct.og is not None else self.source

    def emit(self, event: Event) -> None:
        self._out.append(event)

    def schedule(self, deadline: int, kind: int, account_id: str, symbol: str, first_seen: int) -> None:
        self._timers.push((deadline, kind, account_id, symbol, first_seen), kind != witness.SWEEP_TIMER)

    def timers(self) -> list[Timer]:
        """Pending timers in the order they fire."""
        return self._timers.pending()

    # --- records ---------------------------------------------------------------------------------

    def _touch(self, acct: AccountState) -> AccountState:
        self._dirty[acct.account_id] = acct
        return acct

    def _on_ep3(self, ev: Ep3PositionEvent) -> None:
        acct = self.accounts.get(ev.account_id) or self.account(ev.account_id)
        self._dirty[ev.account_id] = acct
        self.stats[_EP3_STATS[mirror.apply_ep3(acct, ev)]] += 1

    def _on_risk(self, snap: RiskSnapshot) -> None:
        self.last_risk_ts = self.now
        acct = self.accounts.get(snap.account_id) or self.account(snap.account_id)
        self._dirty[snap.account_id] = acct
        if not mirror.apply_risk(acct, snap):
            self.stats["risk_stale"] += 1

    def _on_og(self, og: OgMargin) -> None:
        """OG's margin sweep; a change of an account's positions source is a transition row (the
        gate's flip clock). Per account, so partition-local workers and a replay emit the same rows."""
        acct = self.accounts.get(og.account_id) or self.account(og.account_id)
        self._dirty[og.account_id] = acct
        before = acct.og.positions_source if acct.og is not None else "UNKNOWN"
        if not mirror.apply_og(acct, og):
            self.stats["og_stale"] += 1
            return
        if og.positions_source != before:
            self.emit(new_source_transition(
                event_id(self.cfg.env, "source_transition", og.account_id, self.now, og.positions_source),
                1, self.cfg.env, og.positions_source, self.now, before, og.positions_source,
                og.account_id, self.cfg.scope,
            ))
        key = (og.ts_ms, og.account_id)
        if key >= self._source_key:  # order-independent within an instant: the largest key wins
            self._source_key = key
            self.source = og.positions_source

    def _on_fill(self, fill: Fill) -> None:
        acct = self.accounts.get(fill.account_id) or self.account(fill.account_id)
        self._dirty[fill.account_id] = acct
        if not mirror.apply_fill(acct, fill):
            self.stats["fills_before_baseline"] += 1

    def _on_mark(self, mark: Mark) -> None:
        self.marks[mark.symbol] = mark.price
        self._revalue(mark.symbol)

    def _on_instrument(self, inst: Instrument) -> None:
        self.instruments[inst.symbol] = inst
        self._revalue(inst.symbol)

    def _revalue(self, symbol: str) -> None:
        """A price or instrument arrived: accounts holding an unvaluable `symbol` are re-checked."""
        for account_id in sorted(self.unvaluable_index.get(symbol, ())):
            self._touch(self.accounts[account_id]).dirty.add(symbol)

    # --- evaluation ------------------------------------------------------------------------------

    def _settle(self) -> None:
        if not self._dirty:
            return
        # nothing below marks an account or a symbol dirty (compare, witness and flips only read the
        # mirrors): the dict and the sets are emptied in place, not replaced by new ones (an
        # allocation, and a generic iterator over a set, per account and instant)
        dirty = self._dirty
        instruments, marks, now = self.instruments, self.marks, self.now
        for acct in dirty.values():
            if acct.baseline_candidates:
                if acct.ledger is None:
                    witness.seed_baseline(self, acct)
                else:
                    acct.baseline_candidates.clear()
            symbols = acct.dirty
            if symbols:
                ordered = [symbols.pop()] if len(symbols) == 1 else sorted(symbols)
                symbols.clear()
                # local names for what the loop reads per symbol; the calls below mutate these
                # dicts in place but never replace them
                re, ledger, ep3, re_im = acct.re, acct.ledger, acct.ep3, acct.re_im
                mismatches, anomalies, unvaluable = acct.mismatches, acct.anomalies, acct.unvaluable
                for symbol in ordered:
                    # the cheap checks here skip the calls whenever nothing can change (the common case)
                    e = ep3.get(symbol) or ZERO
                    if re is not None and (differ(re.get(symbol) or ZERO, e) or symbol in mismatches):
                        compare.compare_symbol(self, acct, symbol)
                    if (unvaluable or symbol not in instruments or symbol not in marks
                            or re_im.get(symbol, ZERO) is None):
                        compare.check_unvaluable(self, acct, symbol)
                    if ledger is not None and (differ(ledger.get(symbol) or ZERO, e) or symbol in anomalies):
                        witness.compare_ledger(self, acct, symbol, now)
            if acct.margin_dirty:
                acct.margin_dirty = False
                compare.check_flips(self, acct)
        dirty.clear()

    def _fire(self, deadline: int, kind: int, account_id: str, symbol: str, first_seen: int) -> None:
        if kind == witness.SWEEP_TIMER:
            witness.sweep(self, deadline)
            self._next_sweep = deadline + self.cfg.sweep_interval_ms
            self.schedule(self._next_sweep, witness.SWEEP_TIMER, "", "", 0)
            return
        acct = self.accounts.get(account_id)
        if acct is None:
            return
        if kind == compare.MISMATCH_TIMER:
            compare.confirm_mismatch(self, acct, symbol, first_seen, deadline)
        else:
            witness.confirm_anomaly(self, acct, symbol, first_seen, deadline)

    def _close_minutes(self, ts_ms: int) -> None:
        minute = self._minute
        if minute is None or ts_ms < minute + MINUTE_MS:
            return
        for feed, n in sorted(self.minute_counts().items()):
            name = str(feed)
            self.records_by_feed[name] += n
            self.emit(new_feed_health(event_id(self.cfg.env, "feed_health", self.cfg.scope, minute, name), 1,
                                 self.cfg.env, self.source, minute, name, n, self.cfg.scope))
        self.set_minute_counts({})
        self._minute = ts_ms - ts_ms % MINUTE_MS
        self._minute_end = self._minute + MINUTE_MS

    def close_minute(self) -> None:
        """Emit the feed counts of the current, unfinished minute (end of input)."""
        if self._minute is not None and self.minute_counts():
            self._close_minutes(self._minute + MINUTE_MS)
