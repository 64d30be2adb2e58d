"""`BatchingSink`: batches by size and age, bounded memory, backoff, and acknowledgements.

How a Kafka driver uses it (offsets are committed only for what the store acknowledged)::

    batching = BatchingSink(ClickHouseSink(settings), max_rows=..., max_ms=..., on_ack=commit)
    batching.setup()
    for msg in consumer:
        events = engine_step(msg)
        while True:
            try:
                batching.offer(events, token=(msg.topic, msg.partition, msg.offset))
                break
            except Backpressure as bp:          # buffer full: stop consuming for a while
                await asyncio.sleep(bp.retry_after)
                batching.poll()                 # retries the pending write when its backoff expired
        batching.poll()                         # flushes when max_rows or max_ms is reached

Guarantees:
- Items are (events, token) groups kept in offer order. A token is acknowledged (returned by
  `flush`/`poll` and passed to `on_ack`) only after every event of its group *and of every group
  offered before it* was written; tokens come back in offer order. A group with no events still
  carries its token (a Kafka message that produced nothing can be committed in order).
- The buffer is cleared only after a successful write. `SinkUnavailable` keeps it and schedules the
  next attempt with exponential backoff (`Backoff`), honouring the store's `retry_after`; any other
  error also keeps it and propagates (the process should stop; uncommitted offsets replay).
- Memory is bounded: `offer` raises `Backpressure` instead of buffering beyond `max_buffered_rows`
  (a group is always accepted into an empty buffer, so an oversize group cannot deadlock).
- Time is injected: every method takes `now` (seconds, monotonic) or reads the `clock` given.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streams.core.events import Event
from streams.sinks.base import Sink
from streams.sinks.errors import Backpressure, SinkUnavailable


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: initial * multiplier**(failures-1), capped at maximum."""

    initial: float = 0.25
    multiplier: float = 2.0
    maximum: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))


@dataclass
class _Group:
    events: Sequence[Event]
    token: object
    offered_at: float


class BatchingSink:
    """Wraps a `Sink`; see the module docstring for the guarantees."""

    def __init__(self, sink: Sink, *, max_rows: int, max_ms: int, max_buffered_rows: int | None = None,
                 backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic,
                 on_ack: Callable[[list[object]], None] | None = None) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.sink = sink
        self.max_rows = max_rows
        self.max_age = max_ms / 1000.0
        self.max_buffered_rows = max_buffered_rows if max_buffered_rows is not None else 10 * max_rows
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.on_ack = on_ack
        self._groups: deque[_Group] = deque()
        self._rows = 0
        self.failures = 0  # consecutive SinkUnavailable since the last successful write
        self._retry_at = 0.0
        self.written_rows = 0

    @property
    def buffered_rows(self) -> int:
        return self._rows

    @property
    def pending_tokens(self) -> int:
        return len(self._groups)

    def setup(self) -> None:
        self.sink.setup()

    def offer(self, events: Sequence[Event], token: object = None, now: float | None = None) -> None:
        """Buffer one group, or raise `Backpressure` (nothing buffered) when the bound is reached."""
        now = self.clock() if now is None else now
        if self._groups and self._rows + len(events) > self.max_buffered_rows:
            raise Backpressure(f"sink buffer full ({self._rows} rows, bound {self.max_buffered_rows})",
                               max(self._retry_at - now, 0.0) or self.backoff.initial)
        self._groups.append(_Group(list(events), token, now))
        self._rows += len(events)

    def due(self, now: float | None = None) -> bool:
        """Is a flush due by size or age (and not held back by a backoff)?"""
        if not self._groups:
            return False
        now = self.clock() if now is None else now
        if now < self._retry_at:
            return False
        return self._rows >= self.max_rows or now - self._groups[0].offered_at >= self.max_age

    def poll(self, now: float | None = None) -> list[object]:
        """Flush if due; swallow `SinkUnavailable` (the backoff is scheduled). Returns acked tokens."""
        now = self.clock() if now is None else now
        if not self.due(now):
            return []
        try:
            return self.flush(now)
        except SinkUnavailable:
            return []

    def flush(self, now: float | None = None) -> list[object]:
        """Write everything buffered, in chunks of at most max_rows (on group boundaries).

        Raises `SinkUnavailable` (retry_after = the backoff delay) if a write fails or the backoff
        has not expired yet; tokens acked before the failure were already passed to `on_ack`."""
        now = self.clock() if now is None else now
        if self._groups and now < self._retry_at:
            raise SinkUnavailable("sink backing off after a failed write", self._retry_at - now)
        acked: list[object] = []
        while self._groups:
            n_groups, batch = self._next_chunk()
            try:
                if batch:
                    self.sink.write(batch)
            except SinkUnavailable as exc:
                self.failures += 1
                delay = max(self.backoff.delay(self.failures), exc.retry_after)
                self._retry_at = now + delay
                raise SinkUnavailable(f"write of {len(batch)} rows failed: {exc}", delay) from exc
            self._ack(n_groups, len(batch), acked)
        return acked

    def _next_chunk(self) -> tuple[int, list[Event]]:
        batch: list[Event] = []
        n = 0
        for g in self._groups:
            if batch and len(batch) + len(g.events) > self.max_rows:
                break
            batch.extend(g.events)
            n += 1
        return n, batch

    def _ack(self, n_groups: int, n_rows: int, acked: list[object]) -> None:
        tokens = [self._groups.popleft().token for _ in range(n_groups)]
        self._rows -= n_rows
        self.written_rows += n_rows
        self.failures = 0
        self._retry_at = 0.0
        tokens = [t for t in tokens if t is not None]
        acked.extend(tokens)
        if tokens and self.on_ack is not None:
            self.on_ack(tokens)

    def drain(self, sleep: Callable[[float], None] = time.sleep, deadline: float | None = None) -> list[object]:
        """Flush, sleeping out backoffs, until empty or `deadline` (clock time) passes."""
        acked: list[object] = []
        while self._groups:
            try:
                acked.extend(self.flush())
            except SinkUnavailable as exc:
                if deadline is not None and self.clock() + exc.retry_after > deadline:
                    raise
                sleep(exc.retry_after)
        return acked

    def close(self) -> None:
        """Close the wrapped sink. Unflushed events are *not* written: call flush/drain first."""
        self.sink.close()
