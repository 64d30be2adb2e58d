"""Where simulated records go: a JSON Lines tape, or Kafka topics (paced or as fast as possible).

Encoding is injected (`Serialize = (feed, record) -> bytes`): `json_serializer` by default, or
`avro_serializer()` (Avro single-object encoding from `streams.codec`). Kafka messages are keyed as
DESIGN section 2 says: by account_id, or by symbol for marks and instruments; the message timestamp
is the record's `ts_ms`. The producer library is imported only when Kafka is used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from streams.core.records import Feed, Record, record_to_value
from streams.sim.world import Emitted
from streams.tapes.jsonl import write_record

Serialize = Callable[[Feed, Record], bytes]
Progress = Callable[[int, int], None]  # (records written, ts_ms of the last one)
PROGRESS_EVERY = 50_000


def json_serializer(feed: Feed, record: Record) -> bytes:
    """The record as a JSON object (decimals as strings), the `value` of a JSON Lines tape line."""
    return json.dumps(record_to_value(record), separators=(",", ":")).encode()


def avro_serializer() -> Serialize:
    """Avro single-object encoding with the project's schemas (one cached codec per feed)."""
    from streams.codec import input_codecs

    codecs = input_codecs()
    return lambda feed, record: codecs[feed].encode(record)


def message_key(record: Record) -> bytes:
    account = getattr(record, "account_id", None)
    return (account if account is not None else getattr(record, "symbol", "")).encode()


def write_tape(records: Iterable[Emitted], path: Path, progress: Progress | None = None) -> int:
    """Write every record to a JSON Lines tape at `path`; returns how many were written."""
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for n, (feed, ts, record) in enumerate(records, 1):
            write_record(out, feed, ts, record)
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress(n, ts)
    return n


class Pacer:
    """Wall-clock pacing: event time runs `speed` times faster than real time (0: no pacing)."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed, self._clock, self._sleep = speed, clock, sleep
        self._origin: tuple[float, int] | None = None

    def wait_until(self, ts_ms: int) -> None:
        if self.speed <= 0:
            return
        if self._origin is None:
            self._origin = (self._clock(), ts_ms)
            return
        wall0, ts0 = self._origin
        delay = wall0 + (ts_ms - ts0) / 1000 / self.speed - self._clock()
        if delay > 0.001:
            self._sleep(delay)


def produce(records: Iterable[Emitted], producer: Any, serialize: Serialize, topics: Mapping[Feed, str],
            speed: float = 0.0, progress: Progress | None = None) -> int:
    """Send every record to its topic through a confluent-kafka `Producer`; flush at the end.

    A full local queue is waited out (poll) rather than dropped: the simulator never loses records.
    Delivery errors raise `RuntimeError` after the flush.
    """
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None and len(errors) < 10:
            errors.append(str(err))

    pacer = Pacer(speed)
    n = 0
    for n, (feed, ts, record) in enumerate(records, 1):
        pacer.wait_until(ts)
        _send(producer, topics[feed], message_key(record), serialize(feed, record), ts, on_delivery)
        if n % 1_000 == 0:
            producer.poll(0)
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(n, ts)
    producer.flush()
    if errors:
        raise RuntimeError(f"{len(errors)}+ deliveries failed, first: {errors[0]}")
    return n


def _send(producer: Any, topic: str, key: bytes, value: bytes, ts: int, on_delivery: Any) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, timestamp=ts, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)
