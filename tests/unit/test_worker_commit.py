"""The commit gate: offsets become committable only after outputs are flushed and the sink acked."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from streams.sinks import BatchingSink, MemorySink
from streams.worker.commit import CommitGate
from streams.worker.pipeline import Checkpoint


def test_offsets_are_marked_safe_in_order_only_after_flush_and_sink_ack() -> None:
    """A sink outage delays the offsets (retried with backoff); nothing is marked before the write."""
    from streams.core.events import FeedHealth

    events = [FeedHealth(f"id{i}", 1, "demo", "EP3", i, "fills", 1, "p0") for i in range(3)]
    memory = MemorySink()
    memory.fail_next(2, retry_after=0.0)
    sink = BatchingSink(memory, max_rows=100, max_ms=0)
    sink.backoff = type(sink.backoff)(initial=0.001, maximum=0.001)
    log: list[str] = []

    def flush() -> None:
        log.append("flush")

    def safe(offsets: Mapping[tuple[str, int], int]) -> None:
        log.append(f"safe {dict(offsets)} after {len(memory.events)} stored")

    async def run() -> None:
        gate = CommitGate(sink, flush, safe)
        task = asyncio.ensure_future(gate.run())
        gate.submit(Checkpoint(1, events[:2], {("fills", 0): 10}))
        gate.submit(Checkpoint(2, events[2:], {("fills", 0): 12}))
        await gate.stop(task, timeout=5)

    asyncio.run(run())
    assert log == ["flush", "safe {('fills', 0): 10} after 2 stored", "flush", "safe {('fills', 0): 12} after 3 stored"]
    assert memory.attempts == 4
