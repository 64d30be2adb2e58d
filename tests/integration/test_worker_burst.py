"""Records of one instant written to two inputs a moment apart, while one input was idle and another
live: the idle input's record, fetched after the live one's, is not applied late.

This is what made the ClickHouse outage test fail once (402 records late): an input silent for
`idle_ms` used to be left out of the watermark altogether, so the first part of a burst to reach the
worker moved event time past the parts fetched next. Now an idle input holds event time at what had
arrived `skew_ms` before the broker last said it had nothing more for it."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from streams.core.inputs import Ep3PositionEvent, Fill, PositionQty
from streams.core.records import Feed
from streams.tapes.model import TapeRecord
from tests.integration.worker_support import (
    Names,
    create_inputs,
    late_inputs,
    late_records,
    produce,
    start_worker,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BASE = 1_780_000_000_000
IDLE_MS = 1_500  # the fills input goes idle between bursts (tests elsewhere use 4 s)
BURSTS = 4


def test_an_idle_inputs_part_of_a_burst_written_a_moment_later_is_not_late(
        kafka_bootstrap: str, kafka_topics: object, tmp_path: Path) -> None:
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    log = tmp_path / "worker.log"
    proc = start_worker(kafka_bootstrap, names, log, env_extra={"DIVMON_IDLE_MS": str(IDLE_MS)})
    stop_trickle = threading.Event()
    clock = {"ts": BASE}

    def trickle() -> None:
        """Account A's EP3 updates one after another (each produced and flushed: a few a second),
        event time 100 ms further each time: a live input."""
        seq = 0
        while not stop_trickle.is_set():
            seq += 1
            clock["ts"] = ts = BASE + seq * 100
            ep3 = Ep3PositionEvent("A", "UPDATE" if seq > 1 else "SNAPSHOT", seq, ts,
                                   (PositionQty("XAU-PERP", Decimal(seq)),))
            produce(kafka_bootstrap, names, [TapeRecord(ts, Feed.EP3, ep3, seq)])
            time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    try:
        wait_for(lambda: "warm: partitions" in log.read_text(), 120, "the worker to be warm")
        thread.start()
        for n in range(BURSTS):
            time.sleep(IDLE_MS / 1000 + 1.0)  # the fills input silent for longer than idle_ms: idle
            # a fill 50 ms of event time before the EP3 update just written, written 200 ms after it
            ts = clock["ts"] - 50
            time.sleep(0.2)
            produce(kafka_bootstrap, names, [TapeRecord(ts, Feed.FILLS, Fill(f"f{n}", "A", "XAU-PERP", Decimal(1),
                                                                             Decimal(100), ts), n)])
        time.sleep(IDLE_MS / 1000 + 1.0)
        stop_trickle.set()
        thread.join(10)
        time.sleep(11)  # a status line every 10 s: one after the last fill was applied
        assert proc.poll() is None, log.read_text()[-3000:]
        late = late_records(log)
        assert late and set(late.values()) == {0}, f"late records {late} (inputs {late_inputs(log)})"
    finally:
        stop_trickle.set()
        stop(proc)
