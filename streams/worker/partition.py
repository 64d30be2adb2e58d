"""One engine per input partition: its lanes, its alignment, its checkpoints, its restore.

A `PartitionEngine` owns the `Engine` of partition p, the four account lanes of p (ep3, risk, og,
fills: co-partitioned by account_id) and a cursor into every shared marks/instruments log. `step`
releases what the watermark allows, in event-time order, through the engine (the engine is the only
place verdicts are made) and advances event time to the watermark, or with the wall clock when every
input is idle.

Checkpoints make state and offsets agree without transactions:
- the engine checkpoint (`meta`) holds the commit offset of every account lane and the cursor of
  every global lane; state reflects exactly the entries below those offsets;
- each account record carries the lane offsets of the checkpoint that wrote it. A crash between
  writing accounts and writing `meta` leaves some accounts *ahead* of `meta`; on restore their
  records below their own offsets are not applied again (`skip`), so a fill is never counted twice;
- an account is rewritten whenever a record, a timer, a revaluation or a sweep may have changed it
  (`touched`): records' accounts, events' accounts, accounts holding a repriced unvaluable symbol,
  after a sweep every account whose ledger and EP3 checksums differ, and in the next checkpoint every
  account that a checkpoint caught with unsettled work, once that work has settled (when every input
  is idle, event time stays at the last instant, whose records are applied but not settled until
  time moves);
- a checkpoint of an engine that changed nothing since the last one has no rows at all;
- a lane whose log was replaced (its topic deleted and made again: `rewind`) reads the new log from
  its start, and its offsets are of that log from then on: `meta` and the account rows say which log
  (the lane's *epoch*, written once it is not 0), and a row is ahead of `meta` only in the same log
  or a later one. `meta` also keeps the id the broker gave each input topic (and each shared one,
  which its cursors are offsets of), so that a worker restoring the engine finds a topic replaced
  while nobody read it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Any

from streams.core import witness
from streams.core.engine import Engine
from streams.core.events import Event, WitnessCheck
from streams.core.params import EngineConfig
from streams.core.records import Feed
from streams.core.serde import account_from_dict, account_to_dict, engine_to_dict, restore_engine
from streams.worker.globals import GlobalLane, GlobalLog
from streams.worker.reorder import INF, AccountLane, Aligner, Entry, merge

ACCOUNT_FEEDS: tuple[Feed, ...] = (Feed.EP3, Feed.RISK, Feed.OG_MARGIN, Feed.FILLS)
GLOBAL_FEEDS: tuple[Feed, ...] = (Feed.MARKS, Feed.INSTRUMENTS)
META_PREFIX = "\x00engine/"
_record = itemgetter(2)
_ts = itemgetter(0)
_account_id = attrgetter("account_id")


def _as_is(row: dict[str, Any]) -> dict[str, Any]:
    return row


def meta_key(partition: int) -> str:
    return f"{META_PREFIX}{partition}"


class PartitionEngine:
    """See the module docstring. Not thread-safe; one per assigned partition."""

    def __init__(self, partition: int, engine: Engine, offsets: Mapping[str, int],
                 logs: Mapping[str, GlobalLog], cursors: Mapping[str, int], idle_ms: int, now: float,
                 skip: dict[str, dict[str, int]] | None = None, clock_idle_ms: int | None = None,
                 skew_ms: int = 0, epochs: Mapping[str, int] | None = None,
                 topic_ids: Mapping[str, str] | None = None, global_ids: Mapping[str, str] | None = None) -> None:
        self.partition = partition
        self.engine = engine
        epochs, topic_ids = epochs or {}, topic_ids or {}
        self.lanes = {f: AccountLane(offsets.get(f.value, 0), now, epochs.get(f.value, 0), topic_ids.get(f.value))
                      for f in ACCOUNT_FEEDS}
        self.cursors = dict(cursors)  # as restored: also for shared logs declared after this engine
        # the ids of the shared topics (by feed) that the cursors are offsets of (see `reread_global`)
        self.global_ids = dict(global_ids or {})
        self.globals = {key: GlobalLane(log, cursors.get(key, 0)) for key, log in logs.items()}
        self.aligner = Aligner([*self.lanes.values(), *self.globals.values()], idle_ms,
                               clock_idle_ms=clock_idle_ms, skew_ms=skew_ms)
        self.skip = skip or {}
        self.touched: set[str] = set()
        self._unsettled: set[str] = set()  # accounts written with unsettled work (see `checkpoint`)
        self._last_meta: Any = None  # the last `meta` row cut (encoded)
        self.applied = 0
        self.quiet = False  # the last step found every input idle (watermark INF) and released all it held
        # records applied late (after event time had passed them) by this process, per input: which
        # input came late tells an operator which producer or fetch to look at (the engine counts
        # them all together, in `stats`)
        self.late: dict[Feed, int] = {}
        # open mismatch episodes by class and witness anomalies by status, recounted by checkpoints
        # for the accounts they write (see `open_counts`)
        self._open: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # accounts with any
        self._open_mm: dict[str, int] = {}
        self._open_an: dict[str, int] = {}
        self._open_counted = False  # every account counted once (the first `open_counts`)
        # the engine's counters as restored: what it counted before this process took it over
        self.stats_at_start: dict[str, int] = dict(engine.stats)

    def add_global(self, key: str, log: GlobalLog) -> None:
        """A global partition declared after this engine was made: read it from the restored
        cursor, or from 0 if the checkpoint had none (a topic created or grown since). A worker
        makes its engines before its shared-log reader has listed the partitions; from 0, a
        restored engine applied every earlier mark and instrument again, late."""
        if key not in self.globals:
            self.globals[key] = lane = GlobalLane(log, self.cursors.get(key, 0))
            self.aligner.lanes.append(lane)

    def close(self) -> None:
        for lane in self.globals.values():
            lane.close()

    def step(self, now: float, limit: int | None = None) -> list[Event]:
        """Apply what the watermark releases (about `limit` records at most: `backlog` then says
        whether more was left), move event time, return the engine's events."""
        aligner = self.aligner
        runs, w = aligner.release_runs(now, limit)
        self.quiet = w is not None and w >= INF and not aligner.cut
        if runs:
            if self.engine.started and not self.skip:  # (a restored engine's skipped records aren't applied)
                self._count_late(runs)
            entries = merge([run for _, run in runs])
            if self.skip:
                self._apply(entries)
            else:
                self._apply_fresh(entries, [run for lane, run in runs if isinstance(lane, AccountLane)])
        eng = self.engine
        if w is not None and eng.started:
            target = w if w < INF else aligner.idle_clock(now)
            if target is not None and target > eng.now:
                eng.advance(target)
        events = eng.take_events()
        if events:
            self._touch_events(events)
        return events

    def _count_late(self, runs: list[tuple[Any, Sequence[Entry]]]) -> None:
        """Count, per input, the released entries below event time (each run is in ts order, and the
        merged release applies them in ts order, so exactly those are applied late)."""
        now = self.engine.now
        for _, run in runs:
            if run[0][0] < now:
                feed = run[0][1]
                self.late[feed] = self.late.get(feed, 0) + bisect_left(run, now, key=_ts)

    @property
    def backlog(self) -> bool:
        """The last step was bounded and left records below its watermark."""
        return self.aligner.cut

    def _apply(self, entries: list[Entry]) -> None:
        eng = self.engine
        process, touch, unv = eng.process, self.touched.add, eng.unvaluable_index
        skip = self.skip
        for ts, feed, rec, off in entries:
            if feed is Feed.MARKS or feed is Feed.INSTRUMENTS:
                held = unv.get(rec.symbol)
                if held:
                    self.touched.update(held)
            else:
                account = rec.account_id
                if skip and self._skipped(account, feed, off, ts):
                    continue
                touch(account)
            process(feed, ts, rec)
        self.applied += len(entries)

    def _apply_fresh(self, entries: list[Entry], account_runs: list[Sequence[Entry]]) -> None:
        """`_apply` when no account is restored ahead of `meta` (nothing to skip, the usual case):
        the accounts of the account lanes' runs are touched in bulk, and the engine's own loop
        passes the records on (and touches the holders of an unvaluable symbol a mark or instrument
        may value)."""
        touched = self.touched
        for run in account_runs:
            touched.update(map(_account_id, map(_record, run)))
        self.engine.process_entries(entries, touched)
        self.applied += len(entries)

    def _skipped(self, account: str, feed: Feed, offset: int, ts: int) -> bool:
        """A record an account restored ahead of `meta` already holds: move time, don't re-apply."""
        ahead = self.skip.get(account)
        if ahead is None or offset >= ahead.get(feed.value, -1):
            return False
        self.engine.advance(ts)
        return True

    def _touch_events(self, events: list[Event]) -> None:
        touched = self.touched
        for ev in events:
            account = getattr(ev, "account_id", None)
            if account is not None:
                touched.add(account)
            if isinstance(ev, WitnessCheck) and ev.kind == "sweep":
                touched.update(a for a, s in self.engine.accounts.items()
                               if s.ledger is not None and witness.sums_differ(s))

    def open_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Open mismatch episodes by class ("" while unclassified) and open witness anomalies by
        status over this engine's accounts, as of the last checkpoint (the caller must not change
        the dicts).

        Counted once over every account, then kept by each checkpoint for the accounts it writes:
        those are exactly the accounts that may have changed since the one before (see `checkpoint`).
        A count of every account at every metrics update (each second) cost ~1 µs an account on the
        worker's loop thread: 2% of it with 20,000 accounts, and growing with them."""
        if not self._open_counted:
            self._open_counted = True
            self._recount(self.engine.accounts)
        return self._open_mm, self._open_an

    def _recount(self, accounts: Iterable[str]) -> None:
        """Update the open counts for `accounts` (ids of this engine's accounts)."""
        state = self.engine.accounts
        mm, an, cache = self._open_mm, self._open_an, self._open
        for account in accounts:
            acct = state[account]
            episodes, anomalies = acct.mismatches, acct.anomalies
            old = cache.get(account)
            if old is None and not episodes and not anomalies:
                continue  # nothing open before or now: most accounts
            if old is not None:
                del cache[account]
                for cls in old[0]:
                    mm[cls] -= 1
                for status in old[1]:
                    an[status] -= 1
            classes = tuple([ep.cls or "" for ep in episodes.values()])
            statuses = tuple([a.status for a in anomalies.values() if a.status])
            if classes or statuses:
                cache[account] = (classes, statuses)
                for cls in classes:
                    mm[cls] = mm.get(cls, 0) + 1
                for status in statuses:
                    an[status] = an.get(status, 0) + 1

    def rewind(self, feed: Feed, topic_id: str | None) -> None:
        """The log of this partition of `feed` was replaced (its topic deleted and made again): read
        the new one from its start (see `AccountLane.rewind`). Checkpoints then write the lane's
        epoch with its offsets, in `meta` and in each account row: offsets of the old log mean
        nothing in the new one, and on restore a row is ahead of `meta` only in the same log or a
        later one (rows written before the rewind keep the old log's offsets, and are not)."""
        self.lanes[feed].rewind(topic_id)
        for ahead in self.skip.values():
            ahead.pop(feed.value, None)

    def reread_global(self, feed: Feed, topic_id: str) -> int:
        """The shared `feed` topic was replaced (deleted and made again, now `topic_id`): this
        engine's cursors into its partitions were offsets of the old one; read the new one from its
        start (the owner then reads those partitions from 0: `GlobalLog.needs_rewind`). Returns how
        many partitions' cursors it had."""
        prefix = f"{feed.value}/"
        keys = {k for k in [*self.cursors, *self.globals] if k.startswith(prefix)}
        for key in keys:
            self.cursors[key] = 0
            if key in self.globals:
                self.globals[key].offset = 0
        self.global_ids[feed.value] = topic_id
        return len(keys)

    def commit_offsets(self) -> dict[Feed, int]:
        """Per account lane: every record below this offset is reflected in engine state."""
        return {f: lane.commit_offset() for f, lane in self.lanes.items()}

    def checkpoint(self, encode: Callable[[dict[str, Any]], Any] = _as_is) -> dict[str, Any]:
        """Table rows for this checkpoint (touched accounts, then `meta`), clearing `touched`; each
        row as `encode` makes it.

        A row is encoded as soon as it is built, so its objects are freed before the next is made.
        Built all first (20,000 accounts: ~200k dicts and lists alive at once), they lived through
        the young collections of the cyclic GC, were promoted, and brought on full collections of
        the worker's whole heap: a cut took 0.8-1.7 s instead of 0.44-0.47 (worker bench)."""
        offsets = {f.value: o for f, o in self.commit_offsets().items()}
        # lanes whose log was replaced (see `rewind`): each row says which log its offsets are of
        epochs = {f.value: lane.epoch for f, lane in self.lanes.items() if lane.epoch}
        rows: dict[str, Any] = {}
        accounts = self.engine.accounts
        # accounts written before with unsettled work change again when it settles: write them then
        # (not at every checkpoint while they wait: with every input idle, event time stays at the
        # last instant and they stay unsettled, unchanged, for as long as the inputs are quiet)
        unsettled = set(self.engine.unsettled())
        for account in self.touched | (self._unsettled - unsettled):
            acct = accounts.get(account)
            if acct is not None:
                row = {"p": self.partition, "offsets": offsets, "state": account_to_dict(acct)}
                if epochs:
                    row["epochs"] = epochs
                rows[account] = encode(row)
        if self._open_counted:
            self._recount(rows)  # every account written: the only ones that may have changed
        self.touched = set()
        self._unsettled = unsettled  # each was touched when its records were applied: written by now
        if self.skip and all(o <= offsets.get(f, 0) for ahead in self.skip.values() for f, o in ahead.items()):
            self.skip = {}
        meta_row = {
            "p": self.partition, "offsets": offsets, "engine": engine_to_dict(self.engine),
            "globals": {k: lane.offset for k, lane in self.globals.items()},
        }
        if epochs:
            meta_row["epochs"] = epochs
        topic_ids = {f.value: lane.topic_id for f, lane in self.lanes.items() if lane.topic_id is not None}
        if topic_ids:
            meta_row["topic_ids"] = topic_ids
        if self.global_ids:
            meta_row["global_ids"] = dict(self.global_ids)
        meta = encode(meta_row)
        # an idle engine's checkpoint changes nothing: it writes no row (a worker stopped while idle
        # then leaves no row in flight, and its local store holds everything its changelog does)
        if rows or meta != self._last_meta:
            rows[meta_key(self.partition)] = self._last_meta = meta
        return rows

    @classmethod
    def restore(cls, partition: int, cfg: EngineConfig, rows: Iterable[Mapping[str, Any]],
                logs: Mapping[str, GlobalLog], idle_ms: int, now: float,
                clock_idle_ms: int | None = None, skew_ms: int = 0) -> PartitionEngine:
        """Rebuild from the table rows of `partition` (a fresh engine if there are none)."""
        meta: Mapping[str, Any] | None = None
        accounts = []
        for row in rows:
            if "engine" in row:
                meta = row
            else:
                accounts.append(row)
        offsets: Mapping[str, int] = meta["offsets"] if meta else {}
        epochs: dict[str, int] = dict(meta.get("epochs", {})) if meta else {}
        ahead_rows: list[tuple[str, Mapping[str, int], Mapping[str, int]]] = []  # account, offsets, epochs
        ahead_epochs: dict[str, int] = {}
        for row in accounts:
            row_epochs = row.get("epochs", {})
            # ahead of meta: a later log of the lane (a rewind meta does not hold yet), or the same
            # one further on
            ahead = {f: o for f, o in row["offsets"].items()
                     if (row_epochs.get(f, 0), o) > (epochs.get(f, 0), offsets.get(f, 0))}
            if ahead:
                ahead_rows.append((row["state"]["account_id"], row["offsets"], row_epochs))
                for f in ahead:
                    if row_epochs.get(f, 0) > epochs.get(f, 0):
                        ahead_epochs[f] = max(ahead_epochs.get(f, 0), row_epochs[f])
        engine = restore_engine(cfg, meta["engine"] if meta else None,
                                (account_from_dict(r["state"]) for r in accounts))
        start = dict(offsets)
        topic_ids: dict[str, str] = dict(meta.get("topic_ids", {})) if meta else {}
        for f, epoch in ahead_epochs.items():
            # the checkpoint that rewound this lane was cut short before its meta: the lane reads the
            # new log from its start (whose id meta does not know), skipping what those rows hold
            epochs[f], start[f] = epoch, 0
            topic_ids.pop(f, None)
        # each ahead account skips what it holds, by its offsets in the lane's log (another log's skip nothing)
        skip = {account: {f: o for f, o in row_offsets.items() if row_epochs.get(f, 0) == epochs.get(f, 0)}
                for account, row_offsets, row_epochs in ahead_rows}
        pe = cls(partition, engine, start, logs, meta["globals"] if meta else {}, idle_ms, now, skip,
                 clock_idle_ms, skew_ms, epochs, topic_ids, meta.get("global_ids") if meta else None)
        pe.touched.update(skip)
        return pe
