"""An account input truncated under a running worker: the broker (its own, not the session's) is
killed, the tail of every fills partition is cut off its disk, and it comes back with each fills
log ending below the offset the worker had read it to, under the same topic id (what an unclean
leader election or a broker that lost acknowledged data leaves behind).

Measured before the worker looked for it (every fills partition cut back to empty): 154 of the 204
fills written after such a truncation were never applied, and nothing counted or logged them (the
new records have offsets the worker had read before, from the old log, and were dropped as read).
The worker cannot tell the new records at those offsets from the old ones by offset alone, but it
says so: each truncated partition is counted and logged with the range whose records are taken as
read. The new records are written here once it has: written at once, they can carry a log past its
old end before the worker's first fetch after the truncation, which then goes unseen (only the
leader epochs of the record batches would show it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from streams.core.records import Feed
from streams.demo.procs import free_port
from streams.worker.synth import traffic
from tests.integration.worker_support import (
    PARTITIONS,
    Names,
    committed,
    create_inputs_on,
    high_watermarks,
    produce,
    scrape,
    start_worker,
    stop,
    wait_for,
)
from tests.support.kafka_broker import KafkaBroker, cut_log

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _truncated(port: int) -> dict[str, float]:
    """The worker's truncation counts by feed. A scrape refused with a connection reset (seen now and
    then right after the broker came back, the worker alive) is asked again, up to 3 times."""
    for attempt in range(3):
        try:
            metrics = scrape(port)
            break
        except OSError:
            if attempt == 2:
                raise
            time.sleep(0.5)
    return {labels[0][1]: v for (name, labels), v in metrics.items() if name == "divmon_input_truncated_total"}


def test_a_truncated_input_partition_is_counted_and_logged_not_dropped_silently(tmp_path: Path) -> None:
    with KafkaBroker() as broker:
        bootstrap = broker.bootstrap
        names = Names()
        create_inputs_on(bootstrap, names)
        records = traffic(n_accounts=24, n_fills=400, seed=31)
        half = len(records) // 2
        produce(bootstrap, names, records[:half // 2])  # two flushes: the fills partitions hold two batches or more
        produce(bootstrap, names, records[half // 2:half])
        log, port = tmp_path / "worker.log", free_port()
        proc = start_worker(bootstrap, names, log, ["--metrics-port", str(port)],
                            env_extra={"DIVMON_IDLE_MS": "1000"})
        fills = names.inputs[Feed.FILLS]
        try:
            def alive() -> None:
                assert proc.poll() is None, log.read_text()[-3000:]

            wait_for(lambda: (alive(), "warm: partitions [0, 1, 2, 3]" in log.read_text())[1], 120, "the worker warm")
            ends = high_watermarks(bootstrap, names)
            wait_for(lambda: (alive(), committed(bootstrap, names) == ends)[1], 90, "the first half committed")
            assert set(_truncated(port).values()) == {0.0}

            cut: dict[int, int] = {}

            def truncate(log_dir: Path) -> None:
                for p in range(PARTITIONS):
                    cut[p] = cut_log(log_dir, fills, p)

            broker.restart(crash=True, while_down=truncate)
            assert all(0 < cut[p] < ends[(fills, p)] for p in range(PARTITIONS)), (cut, ends)
            def served() -> dict[int, int] | None:
                try:
                    hws = high_watermarks(bootstrap, names)
                except KafkaException:  # (leaders still being elected after the restart)
                    return None
                return {p: hws.get((fills, p), 0) for p in range(PARTITIONS)}

            wait_for(lambda: served() == cut, 60, "the broker to serve the fills logs as cut")

            wait_for(lambda: (alive(), _truncated(port).get(Feed.FILLS.value) == PARTITIONS)[1], 90,
                     "the worker to count every fills partition truncated")
            text = log.read_text()
            for p in range(PARTITIONS):
                assert f"input truncated: {fills}[{p}] ends at offset {cut[p]}, below" in text, text[-3000:]
                assert f"below offset {ends[(fills, p)]} that this worker had read it to" in text
            assert {k: v for k, v in _truncated(port).items() if k != Feed.FILLS.value} == dict.fromkeys(
                (f.value for f in Feed if f is not Feed.FILLS), 0.0)

            # new records carry the logs past where the worker had read them: applied again from there
            produce(bootstrap, names, records[half:])
            new_ends = high_watermarks(bootstrap, names)
            past = [p for p in range(PARTITIONS) if new_ends[(fills, p)] > ends[(fills, p)]]
            assert past, (new_ends, ends)
            wait_for(lambda: (alive(), all(f"input past its truncation: {fills}[{p}] reached offset {ends[(fills, p)]}"
                                           in log.read_text() for p in past))[1],
                     60, "the worker to apply the fills past the old ends again")
            assert _truncated(port)[Feed.FILLS.value] == PARTITIONS  # each truncation counted once
        finally:
            stop(proc)
