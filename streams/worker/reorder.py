"""Event-time alignment of an engine's inputs: lanes, watermark, idleness, merged release.

An engine reads several inputs (its account topic-partitions, plus the shared marks and instruments
logs). Each input is a *lane*: entries `(ts_ms, feed, record, offset)` in arrival order, assumed
non-decreasing in `ts_ms` (one Kafka partition of a producer that writes in event-time order).

Guarantees of `Aligner.release`:
- the watermark W is the minimum, over lanes that are not idle, of the highest `ts_ms` each has seen;
  a lane that has seen nothing holds W back until it is idle. Only entries with `ts_ms < W` are
  released, so every released instant is complete: no in-order lane can still deliver a record at
  that instant, and the engine may settle it (this is what makes the worker's verdicts equal the
  replay's);
- a lane with no arrival for `idle_ms` of wall time stops holding W back at its own highest `ts_ms`
  (Flink-style idleness), but only if it is `caught_up` (the driver knows the broker has nothing
  more for it, as of wall time `fresh_at`): a lane whose records are merely slow to arrive (fetch
  backlog, a stalled process) is never idle. Even idle, it holds W at the highest `ts_ms` that had
  reached the worker, on any lane, `skew_ms` before `fresh_at`: records of the inputs written at
  about the same time reach the broker within `skew_ms` of each other, so the idle input's records
  still to come are no older than that. Left out altogether (as Flink does), an input silent for
  `idle_ms` lost its part of a burst written to every input: the other inputs' parts, fetched
  first, moved W past it, and it was applied late. The cost: while an input is idle, W trails what
  has arrived by `skew_ms` and the age of the idle input's last fetch response;
  when every lane is idle, everything held is released; once nothing at all has arrived for
  `clock_idle_ms` (longer than `idle_ms`), `idle_clock` says how far event time may move with the wall
  clock (last event time + wall time since it arrived), so grace windows and sweeps still close.
  Kept separate and longer because a producer pause longer than it makes later records late;
- waking up: when records arrive after every lane was idle (a burst after a quiet spell), idle lanes
  hold the watermark back again for `wake_hold_ms` of wall time (default `idle_ms`), as if live. A
  burst written to several topics at once reaches the consumer over several fetches, and the
  driver's `caught_up` for a lane not fetched since the burst was written is stale (it still says
  the broker has nothing more). Without the hold, the first lane fetched would set the watermark
  alone and its partners' records would arrive late. The default treats a wake like fresh arrivals
  on every lane, which then need `idle_ms` of silence to be idle again. A 1 s hold was not enough
  on a loaded host: a worker got a burst's marks (fetched by librdkafka's own thread) while its
  account lanes (fetched by a Python thread) still read idle and caught up, its event time ran
  ahead of account records that came later, and its verdicts differed from the replay's;
- released entries come out merged by `ts_ms`, stable (ties keep lane order, then arrival order);
- a release can be bounded (`limit`): then it stops at an instant, releasing every entry below some
  bound B <= W and none at or above it (so it is a release with watermark B, and B is returned as
  the watermark used): about `limit` entries, more only when a single instant holds more. A worker
  catching up on a backlog releases it over several steps instead of blocking its event loop for
  seconds in one.

Wall time is injected (`now` in ms); nothing here reads a clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Protocol

Entry = tuple[int, Any, Any, int]  # ts_ms, feed, record, offset
INF = 1 << 62
# how long the arrival history is kept: an idle lane's `fresh_at` is at most a few seconds old (the
# driver counts a lane caught up only on a recent fetch response); older means it reads the oldest kept
HISTORY_MS = 60_000
_ts = itemgetter(0)


class Lane(Protocol):
    @property
    def max_ts(self) -> int | None: ...

    @property
    def last_arrival(self) -> float: ...

    @property
    def caught_up(self) -> bool: ...

    @property
    def fresh_at(self) -> float:
        """Wall time as of which `caught_up` is known (INF: always current)."""

    def held(self, below: int) -> Sequence[Entry]:
        """The entries with ts below `below`, oldest first, as a new sequence (the caller keeps it)."""

    def consume(self, n: int) -> None:
        """The first `n` entries `held` returned are taken."""

    def pending(self) -> int: ...

    def count_below(self, below: int) -> int:
        """How many held entries have ts below `below` (what `held(below)` would return)."""

    def first_ts(self) -> int | None:
        """The ts of the oldest held entry (None if none)."""


def merge(runs: Sequence[Sequence[Entry]]) -> list[Entry]:
    """Runs (each in ts order) merged by ts, stable: ties keep run order, then order within a run."""
    if not runs:
        return []
    if len(runs) == 1:
        run = runs[0]
        return run if isinstance(run, list) else list(run)
    merged: list[Entry] = []
    for run in runs:
        merged += run
    merged.sort(key=_ts)  # stable; finds the runs and merges them (a little cheaper than sorted(chain(...)))
    return merged


class AccountLane:
    """A lane owned by one engine: one account topic-partition. `next_offset` is the consumed end."""

    __slots__ = ("_entries", "_floor", "_head", "caught_up", "epoch", "fresh_at", "last_arrival", "max_ts",
                 "next_offset", "topic_id")

    def __init__(self, next_offset: int = 0, now: float = 0.0, epoch: int = 0, topic_id: str | None = None) -> None:
        self._entries: list[Entry] = []
        self._head = 0
        # the partition's log: how many times it was found replaced (its topic deleted and made again),
        # and the id the broker gave its topic (None: not known yet); see `rewind`
        self.epoch = epoch
        self.topic_id = topic_id
        self._floor = 0  # entries below this index are of the log before the last rewind
        self.max_ts: int | None = None
        self.last_arrival = now
        self.next_offset = next_offset
        self.caught_up = True  # the driver sets False while the broker holds records not yet delivered
        self.fresh_at: float = INF  # and when it last learnt it (a fetch response); INF: always current

    def push(self, entries: Sequence[Entry], next_offset: int, now: float) -> None:
        """Append decoded entries (already filtered to offsets >= the consumed end)."""
        if entries:
            self._entries.extend(entries)
            top = entries[-1][0]
            if self.max_ts is None or top > self.max_ts:
                self.max_ts = top
        self.next_offset = max(self.next_offset, next_offset)
        self.last_arrival = now

    def held(self, below: int) -> Sequence[Entry]:
        e, h = self._entries, self._head
        if below >= INF:
            return e[h:]
        return e[h:bisect_left(e, below, h, key=_ts)]

    def count_below(self, below: int) -> int:
        e, h = self._entries, self._head
        return bisect_left(e, below, h, key=_ts) - h

    def first_ts(self) -> int | None:
        return self._entries[self._head][0] if self._head < len(self._entries) else None

    def consume(self, n: int) -> None:
        self._head += n
        if self._head > 4096 and self._head * 2 > len(self._entries):
            del self._entries[:self._head]
            self._floor = max(0, self._floor - self._head)
            self._head = 0

    def pending(self) -> int:
        return len(self._entries) - self._head

    def commit_offset(self) -> int:
        """The offset to commit: the first entry not yet applied, else the consumed end (0 while
        entries of a log replaced since are still held: nothing of the new one is applied)."""
        if self._head < len(self._entries):
            return 0 if self._head < self._floor else self._entries[self._head][3]
        return self.next_offset

    def rewind(self, topic_id: str | None) -> None:
        """The partition's log was replaced (its topic deleted and made again, with `topic_id`):
        what arrives from now on is the new log, read from its start, with offsets of its own.
        Entries still held from the old log are applied as usual, in event-time order."""
        self.epoch += 1
        self.topic_id = topic_id
        self.next_offset = 0
        self._floor = len(self._entries)


class Aligner:
    """The watermark over an engine's lanes; see the module docstring for the guarantees."""

    def __init__(self, lanes: Sequence[Lane], idle_ms: int, wake_hold_ms: int | None = None,
                 clock_idle_ms: int | None = None, skew_ms: int = 0) -> None:
        self.lanes = list(lanes)
        self.idle_ms = idle_ms
        self.skew_ms = skew_ms
        # when what had arrived reached which ts: (wall time, highest ts on any lane by then), both
        # increasing; kept for HISTORY_MS (an idle lane's `fresh_at` is recent, or it is not idle)
        self._arrived: list[tuple[float, int]] = []
        self.clock_idle_ms = idle_ms if clock_idle_ms is None else max(idle_ms, clock_idle_ms)
        self.wake_hold_ms = idle_ms if wake_hold_ms is None else wake_hold_ms
        self._quiet = False
        self._woke_at: float | None = None
        self.cut = False  # the last release stopped at its limit: entries below the watermark are left

    def watermark(self, now: float) -> int | None:
        """W (exclusive release bound), INF when every lane is idle, None while a live lane is empty."""
        limit = now - self.idle_ms
        idle = [lane.last_arrival <= limit and lane.caught_up for lane in self.lanes]
        if all(idle):
            self._quiet = True
            return INF
        if self._quiet:  # first records after a quiet spell
            self._quiet = False
            self._woke_at = now
        holding = self._woke_at is not None and now - self._woke_at < self.wake_hold_ms
        self._observe(now)
        low = INF
        for lane, lane_idle in zip(self.lanes, idle, strict=True):
            top = lane.max_ts
            if lane_idle and not holding:
                bound = self._arrived_by(lane.fresh_at - self.skew_ms)
                if bound is not None and (top is None or bound > top):
                    top = bound
                if top is not None:
                    low = min(low, top)
                    continue
            if top is None:
                if lane_idle:
                    continue  # never delivered anything: nothing of its own to wait for
                return None
            low = min(low, top)
        return low

    def _observe(self, now: float) -> None:
        """Note the lanes' new highest ts, at the time each arrived (their `last_arrival`)."""
        arrived = self._arrived
        front = arrived[-1][1] if arrived else None
        new = [(lane.last_arrival, top) for lane in self.lanes
               if (top := lane.max_ts) is not None and (front is None or top > front)]
        if new:
            new.sort()
            for at, top in new:
                if front is None or top > front:
                    # kept in time order: a later time is the cautious side
                    arrived.append((max(at, arrived[-1][0]) if arrived else at, top))
                    front = top
        old = bisect_left(arrived, (now - self.skew_ms - HISTORY_MS,)) - 1
        if old > 0:
            del arrived[:old]

    def _arrived_by(self, t: float) -> int | None:
        """The highest ts that had arrived, on any lane, by wall time `t` (None: nothing yet)."""
        arrived = self._arrived
        if arrived and t >= arrived[-1][0]:
            return arrived[-1][1]
        i = bisect_right(arrived, (t, INF))
        return arrived[i - 1][1] if i else None

    def release(self, now: float) -> tuple[list[Entry], int | None]:
        """Entries below the watermark, merged by ts (and the watermark used)."""
        runs, w = self.release_runs(now)
        return merge([run for _, run in runs]), w

    def release_runs(self, now: float, limit: int | None = None
                     ) -> tuple[list[tuple[Lane, Sequence[Entry]]], int | None]:
        """What `release` merges: each lane's entries below the watermark (lanes with none left
        out, in lane order), already consumed; and the watermark used (with a `limit`, the bound
        the release stopped at, if lower: see the module docstring)."""
        self.cut = False
        w = self.watermark(now)
        if w is None:
            return [], None
        bound = w
        if limit is not None and self._count_below(w) > limit:
            bound = self._bound(w, limit)
        runs = []
        for lane in self.lanes:
            run = lane.held(bound)
            if run:
                runs.append((lane, run))
                lane.consume(len(run))
        if bound < w:
            self.cut = self._count_below(w) > 0
        return runs, bound

    def _count_below(self, below: int) -> int:
        return sum(lane.count_below(below) for lane in self.lanes)

    def _bound(self, w: int, limit: int) -> int:
        """The highest bound B < w releasing at most `limit` entries, or if the first instant alone
        holds more, the bound just past it (a release always makes progress)."""
        lo = min(ts for lane in self.lanes if (ts := lane.first_ts()) is not None) - 1
        hi = w  # count(lo) <= limit < count(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._count_below(mid) <= limit:
                lo = mid
            else:
                hi = mid
        if self._count_below(lo) > 0:
            return lo
        return hi  # the first instant is hi - 1: count(hi) > limit, all of them at that instant

    def idle_clock(self, now: float) -> int | None:
        """When every lane is idle: the event time the wall clock has reached, else None."""
        if self.watermark(now) != INF:
            return None
        seen = [lane for lane in self.lanes if lane.max_ts is not None]
        if not seen:
            return None
        top = max(lane.max_ts for lane in seen if lane.max_ts is not None)
        since = max(lane.last_arrival for lane in seen)
        if now - since < self.clock_idle_ms:
            return None
        return top + int(now - since)

    def pending(self) -> int:
        return sum(lane.pending() for lane in self.lanes)
