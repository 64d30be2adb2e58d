"""The commit gate: offsets become committable only after their events are stored everywhere.

Checkpoints are handled strictly in order. For each one the gate (1) waits until the output
producer has delivered everything produced so far (events and dead letters of this checkpoint and
earlier ones), (2) offers the checkpoint's events to the `BatchingSink` with the checkpoint as
token and flushes it, riding out `SinkUnavailable` with the sink's backoff, and only then
(3) hands the checkpoint's offsets to `mark_safe`, from where the consumer's commit loop may
commit them. So Kafka offsets are never committed past events the sink has not acknowledged.

Blocking work (producer flush, sink writes) runs in a worker thread; the event loop keeps fetching
and processing. `backlog` tells the driver how many checkpoints wait, for backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streams.sinks.batching import BatchingSink
from streams.sinks.errors import SinkUnavailable
from streams.worker.pipeline import Checkpoint

log = logging.getLogger(__name__)


class CommitGate:
    """See the module docstring. `flush_outputs()` blocks until produced records are delivered."""

    def __init__(self, sink: BatchingSink, flush_outputs: Callable[[], None],
                 mark_safe: Callable[[Mapping[tuple[str, int], int]], None],
                 on_sink_failure: Callable[[], None] | None = None,
                 observe_write: Callable[[float], None] | None = None) -> None:
        self.sink = sink
        self.flush_outputs = flush_outputs
        self.mark_safe = mark_safe
        self.on_sink_failure = on_sink_failure
        self.observe_write = observe_write
        self._queue: asyncio.Queue[Checkpoint | None] = asyncio.Queue()
        self.backlog = 0
        self.committed_seq = 0

    def submit(self, cp: Checkpoint) -> None:
        self.backlog += 1
        self._queue.put_nowait(cp)

    async def run(self) -> None:
        """Process checkpoints until `stop()`; returns once everything submitted before is safe."""
        loop = asyncio.get_running_loop()
        while True:
            cp = await self._queue.get()
            if cp is None:
                return
            await loop.run_in_executor(None, self.flush_outputs)
            await self._store(loop, cp)
            self.mark_safe(cp.offsets)
            self.committed_seq = cp.seq
            self.backlog -= 1

    async def _store(self, loop: asyncio.AbstractEventLoop, cp: Checkpoint) -> None:
        self.sink.offer(cp.events, token=cp.seq)
        while True:
            began = time.monotonic()
            try:
                await loop.run_in_executor(None, self.sink.flush)
                self._observe(began)
                return
            except SinkUnavailable as exc:
                self._observe(began)
                if self.on_sink_failure is not None:
                    self.on_sink_failure()
                log.warning("sink unavailable, retrying in %.2fs: %s", exc.retry_after, exc)
                await asyncio.sleep(exc.retry_after)

    def _observe(self, began: float) -> None:
        if self.observe_write is not None:
            self.observe_write(time.monotonic() - began)

    async def stop(self, task: asyncio.Task[Any] | None = None, timeout: float = 30.0) -> None:
        """Let every submitted checkpoint through (bounded by `timeout`), then end `run`."""
        self._queue.put_nowait(None)
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout)
            except TimeoutError:
                log.warning("commit gate: %d checkpoint(s) not stored before shutdown", self.backlog)
