"""BatchingSink: size/age flushes, bounded memory, backoff after outages, acks only after writes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streams.sinks import Backoff, Backpressure, BatchingSink, MemorySink, SinkUnavailable
from streams.sinks.factory import AutoFlushSink


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    sleeps: list[float]


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.sleeps = []
    return c


@pytest.fixture
def events(make_events: Any) -> list[Any]:
    base = make_events()[0]
    return [replace(base, event_id=f"e{i}") for i in range(100)]


def _sink(mem: MemorySink, clock: Clock, **kw: Any) -> BatchingSink:
    kw = {"max_rows": 10, "max_ms": 1000, **kw}
    return BatchingSink(mem, clock=clock, backoff=Backoff(0.5, 2.0, 4.0), **kw)


def test_flushes_when_size_reached(events: list[Any], clock: Clock) -> None:
    """Nothing is written below max_rows; reaching it makes poll write one batch and ack its tokens."""
    mem = MemorySink()
    b = _sink(mem, clock)
    for i in range(9):
        b.offer([events[i]], token=i)
    assert b.poll() == [] and mem.batches == []
    b.offer([events[9]], token=9)
    assert b.poll() == list(range(10))
    assert [len(x) for x in mem.batches] == [10] and b.buffered_rows == 0


def test_flushes_when_age_reached(events: list[Any], clock: Clock) -> None:
    """A small batch is written once its oldest event is max_ms old (fake clock, no sleeping)."""
    mem = MemorySink()
    b = _sink(mem, clock)
    b.offer(events[:3], token="a")
    clock.t += 0.999
    assert b.poll() == []
    clock.t += 0.001
    assert b.poll() == ["a"] and len(mem.events) == 3


def test_token_without_events_is_acked_in_order(events: list[Any], clock: Clock) -> None:
    """A group with no events is acked after the groups before it, never before."""
    mem = MemorySink()
    b = _sink(mem, clock)
    b.offer(events[:2], token=1)
    b.offer([], token=2)
    assert b.flush() == [1, 2]


def test_backpressure_bounds_memory(events: list[Any], clock: Clock) -> None:
    """Beyond max_buffered_rows offer raises Backpressure and buffers nothing more."""
    mem = MemorySink()
    mem.fail_next(100)
    b = _sink(mem, clock, max_buffered_rows=25)
    for i in range(25):
        b.offer([events[i]], token=i)
    with pytest.raises(Backpressure) as bp:
        b.offer([events[25]], token=25)
    assert bp.value.retry_after > 0 and b.buffered_rows == 25
    with pytest.raises(SinkUnavailable):
        b.flush()
    with pytest.raises(Backpressure):
        b.offer([events[25]], token=25)
    assert b.buffered_rows == 25


def test_oversize_group_into_empty_buffer_is_accepted(events: list[Any], clock: Clock) -> None:
    """A single group larger than the bound is accepted when the buffer is empty (no deadlock)."""
    b = _sink(MemorySink(), clock, max_buffered_rows=5)
    b.offer(events[:20], token="big")
    assert b.flush() == ["big"]


def test_retry_with_backoff_loses_nothing_and_acks_after_success(events: list[Any], clock: Clock) -> None:
    """Failed writes keep the batch, back off exponentially (capped), then write it once and ack."""
    mem = MemorySink()
    acked: list[object] = []
    b = _sink(mem, clock, on_ack=acked.extend)
    for i in range(10):
        b.offer([events[i]], token=i)
    mem.fail_next(4)
    delays = []
    for _ in range(4):
        with pytest.raises(SinkUnavailable) as exc:
            b.flush()
        delays.append(exc.value.retry_after)
        assert acked == [] and b.buffered_rows == 10
        with pytest.raises(SinkUnavailable):  # too early: no write attempt during backoff
            b.flush()
        clock.t += exc.value.retry_after
    assert delays == [0.5, 1.0, 2.0, 4.0] and mem.attempts == 4
    assert b.flush() == list(range(10)) and acked == list(range(10))
    assert [e.event_id for e in mem.events] == [f"e{i}" for i in range(10)] and b.failures == 0


def test_store_retry_after_is_honoured(events: list[Any], clock: Clock) -> None:
    """A store asking for a longer pause than the backoff gets it."""
    mem = MemorySink()
    mem.fail_next(1, retry_after=7.0)
    b = _sink(mem, clock)
    b.offer(events[:1], token=1)
    with pytest.raises(SinkUnavailable) as exc:
        b.flush()
    assert exc.value.retry_after == 7.0


def test_poll_swallows_outage_and_drain_rides_it_out(events: list[Any], clock: Clock) -> None:
    """poll() schedules the retry instead of raising; drain() sleeps out backoffs and writes everything."""
    mem = MemorySink()
    b = _sink(mem, clock)
    for i in range(30):
        b.offer([events[i]], token=i)
    mem.fail_next(3)
    assert b.poll() == []
    assert b.drain(clock.sleep) == list(range(30))
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert [len(x) for x in mem.batches] == [10, 10, 10]


def test_drain_gives_up_at_deadline(events: list[Any], clock: Clock) -> None:
    """drain() raises SinkUnavailable when the outage outlasts its deadline; nothing is acked."""
    mem = MemorySink()
    mem.fail_next(1000)
    b = _sink(mem, clock)
    b.offer(events[:3], token=1)
    with pytest.raises(SinkUnavailable):
        b.drain(clock.sleep, deadline=clock.t + 10)
    assert b.buffered_rows == 3


def test_non_transient_error_keeps_the_batch(events: list[Any], clock: Clock) -> None:
    """An unexpected error propagates and the batch stays buffered, unacknowledged."""

    class Broken(MemorySink):
        def write(self, batch: Any) -> None:
            raise RuntimeError("boom")

    b = _sink(Broken(), clock)
    b.offer(events[:2], token=1)
    with pytest.raises(RuntimeError):
        b.flush()
    assert b.buffered_rows == 2 and b.pending_tokens == 1


def test_auto_flush_sink_writes_everything_on_close(events: list[Any], clock: Clock) -> None:
    """The synchronous adapter used by replay --store writes by size and the rest at close."""
    mem = MemorySink()
    s = AutoFlushSink(mem, max_rows=10, max_ms=60_000, clock=clock, sleep=clock.sleep)
    s.setup()
    for e in events[:25]:
        s.write([e])
    assert len(mem.events) == 20
    mem.fail_next(2)
    s.close()
    assert len(mem.events) == 25 and mem.closed and clock.sleeps == [0.25, 0.5]
