"""The commit gate: state and offsets advance only after the events derived from them are stored.

Checkpoints are handled strictly in order. For each one the gate
(1) waits until the output producer has delivered everything produced so far (events and dead
    letters of this checkpoint and earlier ones),
(2) offers the checkpoint's events to the `BatchingSink` with the checkpoint as token and flushes
    it, riding out `SinkUnavailable` with the sink's backoff,
(3) writes the checkpoint's state rows (`write_state`) and waits for their receipts (the changelog
    producer's acks), and only then
(4) hands the checkpoint's offsets to `mark_safe`, from where the consumer's commit loop may
    commit them.
So the durable order is always events, then state, then offsets. A crash between any two steps
loses nothing: whoever takes the partition over restores state no newer than the stored events
(it derives and emits the rest again, with the same ids) and no older than the committed
offsets (what it doesn't re-read, the state holds). A receipt that fails (the changelog producer
gave up) ends `run` with that error: nothing after it is marked safe.

`abandon()` (a rebalance that could not wait for the gate) drops every checkpoint not yet
written: their state never reaches the store, their offsets are never marked.

Blocking work (producer flush, sink writes) runs in a worker thread; the event loop keeps fetching
and processing. `backlog` tells the driver how many checkpoints wait, for backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streams.sinks.batching import BatchingSink
from streams.sinks.errors import SinkUnavailable
from streams.worker.pipeline import Checkpoint

log = logging.getLogger(__name__)


class CommitGate:
    """See the module docstring. `flush_outputs()` blocks until produced records are delivered."""

    def __init__(self, sink: BatchingSink, flush_outputs: Callable[[], None],
                 write_state: Callable[[Checkpoint], Sequence[Any]],
                 mark_safe: Callable[[Mapping[tuple[str, int], int]], None],
                 on_sink_failure: Callable[[], None] | None = None,
                 observe_write: Callable[[float], None] | None = None) -> None:
        self.sink = sink
        self.flush_outputs = flush_outputs
        self.write_state = write_state
        self.mark_safe = mark_safe
        self.on_sink_failure = on_sink_failure
        self.observe_write = observe_write
        self._queue: asyncio.Queue[tuple[int, Checkpoint] | None] = asyncio.Queue()
        self._epoch = 0
        self.backlog = 0
        self.committed_seq = 0

    def submit(self, cp: Checkpoint) -> None:
        self.backlog += 1
        self._queue.put_nowait((self._epoch, cp))

    def abandon(self) -> int:
        """Drop every checkpoint whose state is not written yet; returns how many."""
        self._epoch += 1
        dropped, self.backlog = self.backlog, 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:  # keep a pending stop
                self._queue.put_nowait(None)
                break
        return dropped

    async def run(self) -> None:
        """Process checkpoints until `stop()`; returns once everything submitted before is safe."""
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            epoch, cp = item
            if epoch != self._epoch:
                continue
            await loop.run_in_executor(None, self.flush_outputs)
            await self._store(loop, cp, epoch)
            if epoch != self._epoch:  # abandoned while storing: its state must not be written
                continue
            receipts = self.write_state(cp)
            if receipts:
                await asyncio.gather(*receipts)
            self.mark_safe(cp.offsets)
            self.committed_seq = cp.seq
            self.backlog -= 1

    async def _store(self, loop: asyncio.AbstractEventLoop, cp: Checkpoint, epoch: int) -> None:
        self.sink.offer(cp.events, token=cp.seq)
        while epoch == self._epoch:
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
