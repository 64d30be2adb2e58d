"""A ClickHouse outage under a running worker: offsets stop being committed while the sink is down,
nothing is lost or changed, and once it is back ClickHouse holds exactly the replay's verdicts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.core.events import EVENT_TYPES
from streams.sinks import ClickHouseSink
from streams.worker.synth import traffic
from tests.integration.worker_support import (
    Names,
    committed,
    create_inputs,
    diff_summary,
    expected,
    final,
    high_watermarks,
    produce,
    start_worker,
    stop,
    wait_for,
    wire,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def settled(read: Callable[[], dict[tuple[str, int], int]], quiet_s: float = 3.0, limit_s: float = 30.0
            ) -> dict[tuple[str, int], int]:
    """Committed offsets once they stop moving. Checkpoints stored just before the outage may still
    commit after it began (a fixed 2 s wait failed once on a loaded machine); with the sink down and
    no new input, nothing else can move them, so they must settle."""
    last, since, deadline = read(), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return last
    raise AssertionError(f"committed offsets still moving {limit_s:.0f} s into the sink outage")


def test_worker_rides_out_a_clickhouse_outage(kafka_bootstrap: str, kafka_topics: object, ch_http: Any,
                                              ch_http_settings: Any, read_events: Any, tmp_path: Path) -> None:
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=24, n_fills=800, seed=31)
    want = expected(records)
    half = len(records) // 2
    reader = ClickHouseSink(ch_http_settings)
    reader.setup()
    db = ch_http_settings.clickhouse_database

    def stored() -> dict[str, dict[str, Any]]:
        return final(wire(e for t in EVENT_TYPES for e in read_events(reader.client, db, t)))

    produce(kafka_bootstrap, names, records[:half])
    # the tape's timestamps are months old: keep its rows (the default TTL would drop them on insert)
    proc = start_worker(kafka_bootstrap, names, tmp_path / "worker.log", extra=["--sink", "clickhouse"],
                        env_extra={"DIVMON_CLICKHOUSE_URL": ch_http.url, "DIVMON_CLICKHOUSE_DATABASE": db,
                                   "DIVMON_CLICKHOUSE_TTL_DAYS": "0"})
    try:
        wait_for(lambda: len(stored()) > 20, 120, "the first verdicts in ClickHouse")
        ch_http.stop()
        frozen = settled(lambda: committed(kafka_bootstrap, names))
        produce(kafka_bootstrap, names, records[half:])
        time.sleep(8)
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        assert committed(kafka_bootstrap, names) == frozen, "offsets committed past events not in ClickHouse"
        assert frozen != high_watermarks(kafka_bootstrap, names)
        assert "sink unavailable, retrying" in (tmp_path / "worker.log").read_text()
        ch_http.start()
        try:
            wait_for(lambda: stored() == want, 120, "ClickHouse to hold exactly the replay's verdicts", step=2)
        except AssertionError as exc:
            raise AssertionError(diff_summary(stored(), want, [tmp_path / "worker.log"])) from exc
        ends = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: committed(kafka_bootstrap, names) == ends, 60, "offsets to be committed to the end")
    finally:
        stop(proc)
        reader.close()
