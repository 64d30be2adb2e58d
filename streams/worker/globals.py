"""Shared history of the engine-global feeds (marks, instruments), read by every partition engine.

Every partition engine must apply every mark and instrument at its event time, but decoding and
storing them once per worker is enough: a `GlobalLog` per marks/instruments topic-partition holds the
decoded entries in offset order, and each engine reads it through its own `GlobalLane` cursor (the
next offset it needs). Guarantees:

- an engine sees each entry of the log exactly once, in offset order, whatever other engines do;
- entries are dropped only once every registered lane has passed them (`trim`), so memory is bounded
  by the spread between the slowest and the fastest engine;
- a lane restored at an offset the log no longer holds reports it through `GlobalLog.needs_rewind`;
  the owner then re-reads the partition from that offset (`rewind`) and other lanes simply wait.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import itemgetter

from streams.worker.reorder import INF, Entry

_offset = itemgetter(3)
_ts = itemgetter(0)


class GlobalLog:
    """Decoded entries of one global topic-partition, from `start` (an offset) to `next_offset`."""

    def __init__(self, start: int = 0, now: float = 0.0) -> None:
        self.entries: list[Entry] = []
        self.start = start
        self.next_offset = start
        self.max_ts: int | None = None
        self.last_arrival = now
        self.lanes: set[GlobalLane] = set()
        self.caught_up = True
        self.fresh_at: float = INF  # wall time as of which `caught_up` is known (INF: always current)

    def append(self, entries: Sequence[Entry], next_offset: int, now: float) -> None:
        if entries:
            self.entries.extend(entries)
            top = entries[-1][0]
            if self.max_ts is None or top > self.max_ts:
                self.max_ts = top
        self.next_offset = max(self.next_offset, next_offset)
        self.last_arrival = now

    def needs_rewind(self) -> int | None:
        """The lowest offset a lane wants that this log no longer (or not yet) holds from its start."""
        low = min((lane.offset for lane in self.lanes), default=None)
        return low if low is not None and low < self.start else None

    def rewind(self, offset: int, now: float) -> None:
        """Forget everything and hold entries from `offset` on (the consumer seeks there)."""
        self.entries.clear()
        self.start = self.next_offset = offset
        self.max_ts = None
        self.last_arrival = now

    def trim(self) -> None:
        """Drop entries every lane has consumed."""
        if not self.lanes or not self.entries:
            return
        low = min(lane.offset for lane in self.lanes)
        cut = bisect_left(self.entries, low, key=_offset)
        if cut > 1024 or cut == len(self.entries):
            del self.entries[:cut]
            self.start = max(self.start, min(low, self.next_offset))


class GlobalLane:
    """One engine's cursor into a `GlobalLog` (a `Lane` for the `Aligner`)."""

    __slots__ = ("_idx", "log", "offset")

    def __init__(self, log: GlobalLog, offset: int) -> None:
        self.log = log
        self.offset = offset
        self._idx = 0
        log.lanes.add(self)

    def close(self) -> None:
        self.log.lanes.discard(self)

    @property
    def max_ts(self) -> int | None:
        log = self.log
        return log.max_ts if log.start <= self.offset else None

    @property
    def last_arrival(self) -> float:
        return self.log.last_arrival

    @property
    def caught_up(self) -> bool:
        return self.log.caught_up

    @property
    def fresh_at(self) -> float:
        return self.log.fresh_at

    def _head(self) -> int | None:
        """Index in the log of this lane's next entry; None while the log no longer holds it (the
        lane waits for a rewind)."""
        log = self.log
        if log.start > self.offset:
            return None
        return bisect_left(log.entries, self.offset, key=_offset)

    def held(self, below: int) -> Sequence[Entry]:
        i = self._head()
        if i is None:
            return ()
        self._idx = i
        e = self.log.entries
        if below >= INF:
            return e[i:]
        return e[i:bisect_left(e, below, i, key=_ts)]

    def count_below(self, below: int) -> int:
        i = self._head()
        return 0 if i is None else bisect_left(self.log.entries, below, i, key=_ts) - i

    def first_ts(self) -> int | None:
        i = self._head()
        e = self.log.entries
        return None if i is None or i >= len(e) else e[i][0]

    def consume(self, n: int) -> None:
        if n:
            self.offset = self.log.entries[self._idx + n - 1][3] + 1

    def pending(self) -> int:
        e = self.log.entries
        return len(e) - bisect_left(e, self.offset, key=_offset)
