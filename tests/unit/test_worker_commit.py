"""The commit gate: events are stored before the state derived from them, and that state before
the offsets it covers become committable."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from streams.core.events import FeedHealth
from streams.sinks import BatchingSink, MemorySink
from streams.worker.commit import CommitGate
from streams.worker.pipeline import Checkpoint


def test_offsets_are_marked_safe_in_order_only_after_flush_and_sink_ack() -> None:
    """A sink outage delays the offsets (retried with backoff); nothing is marked before the write."""
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
        gate = CommitGate(sink, flush, lambda cp: [], safe)
        task = asyncio.ensure_future(gate.run())
        gate.submit(Checkpoint(1, events[:2], {("fills", 0): 10}))
        gate.submit(Checkpoint(2, events[2:], {("fills", 0): 12}))
        await gate.stop(task, timeout=5)

    asyncio.run(run())
    assert log == ["flush", "safe {('fills', 0): 10} after 2 stored", "flush", "safe {('fills', 0): 12} after 3 stored"]
    assert memory.attempts == 4
    assert [e.event_id for e in memory.events] == ["id0", "id1", "id2"]


def health(i: int) -> FeedHealth:
    return FeedHealth(f"id{i}", 1, "demo", "EP3", i, "fills", 1, "p0")


def test_events_then_state_then_offsets() -> None:
    """State is written only after its events are stored, and offsets marked only after the state
    is acknowledged: a worker dying between any two steps loses nothing (see the pipeline tests)."""
    memory = MemorySink()
    memory.fail_next(1, retry_after=0.0)
    sink = BatchingSink(memory, max_rows=100, max_ms=0)
    sink.backoff = type(sink.backoff)(initial=0.001, maximum=0.001)
    log: list[str] = []
    acks: list[asyncio.Future[None]] = []

    def write_state(cp: Checkpoint) -> list[asyncio.Future[None]]:
        log.append(f"state {cp.seq} after {len(memory.events)} stored")
        acks.append(asyncio.get_running_loop().create_future())
        return acks[-1:]

    async def run() -> None:
        gate = CommitGate(sink, lambda: log.append("flush"), write_state,
                          lambda offsets: log.append(f"safe {dict(offsets)}"))
        task = asyncio.ensure_future(gate.run())
        gate.submit(Checkpoint(1, [FeedHealth("id", 1, "demo", "EP3", 0, "fills", 1, "p0")], {("ep3", 0): 7}))
        while not acks:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert log == ["flush", "state 1 after 1 stored"] and gate.backlog == 1
        acks[0].set_result(None)
        await gate.stop(task, timeout=5)

    asyncio.run(run())
    assert log == ["flush", "state 1 after 1 stored", "safe {('ep3', 0): 7}"]


def test_abandoned_checkpoints_write_no_state_and_mark_nothing() -> None:
    """A rebalance that can't wait for a sink outage abandons the queued checkpoints."""
    written: list[int] = []
    marked: list[object] = []
    memory = MemorySink()
    memory.fail_next(10**6, retry_after=0.0)
    sink = BatchingSink(memory, max_rows=100, max_ms=0)
    sink.backoff = type(sink.backoff)(initial=0.001, maximum=0.001)

    async def run() -> None:
        gate = CommitGate(sink, lambda: None, lambda cp: written.append(cp.seq) or [], marked.append)
        task = asyncio.ensure_future(gate.run())
        gate.submit(Checkpoint(1, [health(1)], {("ep3", 0): 7}))
        gate.submit(Checkpoint(2, [health(2)], {("ep3", 0): 9}))
        await asyncio.sleep(0.1)
        assert gate.abandon() == 2 and gate.backlog == 0
        memory.fail_next(0)  # the sink comes back
        gate.submit(Checkpoint(3, [health(3)], {("ep3", 0): 11}))
        await gate.stop(task, timeout=5)

    asyncio.run(run())
    assert written == [3] and marked == [{("ep3", 0): 11}]


def test_a_failed_state_write_stops_the_gate_without_marking_anything() -> None:
    marked: list[object] = []
    sink = BatchingSink(MemorySink(), max_rows=100, max_ms=0)

    def write_state(cp: Checkpoint) -> list[asyncio.Future[None]]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("changelog send failed"))
        return [failed]

    async def run() -> BaseException | None:
        gate = CommitGate(sink, lambda: None, write_state, marked.append)
        task = asyncio.ensure_future(gate.run())
        gate.submit(Checkpoint(1, [], {("ep3", 0): 7}))
        gate.submit(Checkpoint(2, [], {("ep3", 0): 9}))
        await asyncio.wait([task], timeout=5)
        return task.exception()

    err = asyncio.run(run())
    assert isinstance(err, OSError) and marked == []
