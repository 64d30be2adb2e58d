"""The demo's input: the topics, and a simulated day produced to them (Avro single-object encoding).

The day is `streams.sim` with every fault of its catalogue; the demo's day *ends now* (its records
carry recent event times, so ClickHouse's TTL keeps them and the gate can judge at the day's end).
Production is paced: event time runs `speed` times faster than wall time, so the worker sees a
stream, not a backlog. Guarantee: `produce_day` returns only once the broker acknowledged every
record, with the count per feed (the worker must consume exactly these); it raises `DemoError` on
any delivery failure.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from streams.core.records import Feed
from streams.demo.procs import DemoError
from streams.sim import Emitted, SimConfig

GLOBAL_FEEDS = (Feed.MARKS, Feed.INSTRUMENTS)  # read whole by every worker: one partition is enough
TICK_S = 4.0


def topic_partitions(partitions: int) -> dict[str, int]:
    """Every input topic (default names) with its partition count."""
    return {f.value: 1 if f in GLOBAL_FEEDS else partitions for f in Feed}


def day_config(accounts: int, duration_s: int, seed: int, end_ms: int | None = None) -> SimConfig:
    """A day of `duration_s` seconds of event time ending at `end_ms` (default: now, whole second)."""
    end = end_ms if end_ms is not None else int(time.time()) * 1000
    return SimConfig(seed=seed, accounts=accounts, duration_ms=duration_s * 1000, start_ms=end - duration_s * 1000)


def _counted(records: Iterator[Emitted], counts: Counter[str], tick: Callable[[int, int], None]
             ) -> Iterator[Emitted]:
    next_tick = time.monotonic() + TICK_S
    for n, item in enumerate(records, 1):
        counts[item[0].value] += 1
        yield item
        if n % 1000 == 0 and time.monotonic() >= next_tick:
            next_tick = time.monotonic() + TICK_S
            tick(n, item[1])


def produce_day(cfg: SimConfig, bootstrap: str, speed: float, tick: Callable[[int, int], None]) -> Counter[str]:
    """Produce the day to the default input topics; returns records per feed (see module docstring)."""
    from confluent_kafka import KafkaException, Producer

    from streams.sim import simulate
    from streams.sim.writers import avro_serializer, produce

    counts: Counter[str] = Counter()
    # Uncompressed on purpose: loopback gains nothing, and aiokafka (the worker's client) decodes
    # lz4/snappy/zstd batches only when `cramjam` is installed.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "none",
                         "message.timeout.ms": 60_000, "log_level": 3})
    try:
        produce(_counted(simulate(cfg), counts, tick), producer, avro_serializer(),
                {f: f.value for f in Feed}, speed)
    except (KafkaException, RuntimeError) as exc:
        raise DemoError(f"producing the simulated day failed: {exc}") from exc
    return counts
