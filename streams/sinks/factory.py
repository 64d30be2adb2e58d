"""`open_sink(settings)`: the configured store as a `Sink`, batched for synchronous drivers.

Used by `divmon replay --store` and the demo: `write()` only buffers (flushing whenever
`sink_batch_rows` or `sink_batch_ms` is reached), `close()` writes what is left and closes. Outages
are ridden out by sleeping through the backoff for up to `outage_budget_s`, after which
`SinkUnavailable` propagates (nothing acknowledged is lost; the rest was never acknowledged).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from streams.config import Settings
from streams.core.events import Event
from streams.sinks.base import Sink
from streams.sinks.batching import BatchingSink
from streams.sinks.clickhouse import ClickHouseSink
from streams.sinks.errors import Backpressure


class AutoFlushSink:
    """A `Sink` whose `write` buffers into a `BatchingSink` and flushes by size and age."""

    def __init__(self, inner: Sink, *, max_rows: int, max_ms: int, outage_budget_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.batching = BatchingSink(inner, max_rows=max_rows, max_ms=max_ms, clock=clock)
        self._budget = outage_budget_s
        self._sleep = sleep

    def setup(self) -> None:
        self.batching.setup()

    def write(self, batch: Sequence[Event]) -> None:
        b = self.batching
        while True:
            try:
                b.offer(batch)
                break
            except Backpressure:
                b.drain(self._sleep, deadline=b.clock() + self._budget)
        if b.due():
            b.drain(self._sleep, deadline=b.clock() + self._budget)

    def close(self) -> None:
        try:
            self.batching.drain(self._sleep, deadline=self.batching.clock() + self._budget)
        finally:
            self.batching.close()


def open_sink(settings: Settings) -> AutoFlushSink:
    """The configured ClickHouse (server if DIVMON_CLICKHOUSE_URL is set, else chdb), batched."""
    return AutoFlushSink(ClickHouseSink(settings), max_rows=settings.sink_batch_rows,
                         max_ms=settings.sink_batch_ms)
