"""`divmon worker` on the session broker gives the replay's verdicts, and dead-letters poison input.

Compared: position_mismatch, avail_gap_flip, unvaluable and witness anomalies, each in its final
version, every field (same ids, same values) except witness rows' `scope`. Not compared:
feed_health, witness sweeps and source_transition rows, which describe a scope (the worker's
partition engine vs the replay's whole tape) and so legitimately differ in ids and counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.codec import DECODE_REASONS, input_codecs
from streams.core.records import Feed
from streams.demo.procs import free_port
from streams.tapes import replay
from streams.tapes.jsonl import write_record
from streams.tapes.model import TapeRecord
from streams.worker.partition import ACCOUNT_FEEDS
from streams.worker.synth import traffic
from tests.integration.worker_support import (
    Names,
    commits_ahead_of_state,
    committed,
    create_inputs,
    emitted,
    expected,
    final,
    high_watermarks,
    produce,
    read_topics,
    scrape,
    start_worker,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def scenario_tape(path: Path) -> list[TapeRecord]:
    """A JSON Lines tape with every verdict kind, ending with clock marks well past grace."""
    with path.open("w", encoding="utf-8") as out:
        for r in traffic(n_accounts=24, n_fills=600, seed=11):
            write_record(out, r.feed, r.ts_ms, r.record)
    return list(replay.open_tape(path))


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_worker_emits_the_replays_verdicts(kafka_bootstrap: str, kafka_topics: object, tmp_path: Path,
                                          store: str) -> None:
    """A tape produced to the input topics yields exactly `divmon replay`'s verdict events, with the
    test store and with the production one (RocksDB via rocksdict, state on disk)."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = scenario_tape(tmp_path / "scenario.jsonl")
    want = expected(records)
    assert {r["type"] for r in want.values()} >= {"position_mismatch", "avail_gap_flip", "unvaluable",
                                                   "witness_check"}
    produce(kafka_bootstrap, names, records)
    port = free_port()
    proc = start_worker(kafka_bootstrap, names, tmp_path / "worker.log", ["--metrics-port", str(port)],
                        env_extra={"DIVMON_STORE": store, "DIVMON_DATA_DIR": str(tmp_path / "data")})
    try:
        def same() -> bool:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            return final(emitted(kafka_bootstrap, names)) == want

        wait_for(same, 90, "the worker's verdicts to equal the replay's", step=2)
        # every input record is committed, and never ahead of the checkpointed state
        ends = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: committed(kafka_bootstrap, names) == ends, 30, "offsets to be committed to the end")
        assert commits_ahead_of_state(kafka_bootstrap, names) == []
        # where the loop thread's CPU went, per pipeline step: each step that ran was charged, and
        # together they fit in the thread's total
        metrics = scrape(port)
        stages = {labels[0][1]: v for (name, labels), v in metrics.items()
                  if name == "divmon_stage_cpu_seconds_total"}
        assert all(stages[s] > 0 for s in ("decode", "engine", "encode", "metrics", "checkpoint", "state")), stages
        assert metrics[("divmon_loop_cpu_seconds_total", ())] >= sum(stages.values())
        # every account record was applied once; each partition engine applies the marks and instruments
        account_records = sum(1 for r in records if r.feed in ACCOUNT_FEEDS)
        shared = len(records) - account_records
        assert account_records <= metrics[("divmon_records_applied_total", ())] <= account_records + 4 * shared
    finally:
        stop(proc)


def poison_for(feed: Feed, i: int) -> bytes:
    """Garbage bytes, or valid Avro that violates the contract (empty account id / symbol)."""
    if i % 2 == 0:
        return b"\x00\x01 not avro at all"
    value = {
        Feed.EP3: {"account_id": "", "kind": "UPDATE", "seq": 1, "ts_ms": 1, "positions": []},
        Feed.RISK: {"account_id": "", "published_ts_ms": 1, "positions": [], "im_total": None,
                    "open_orders_margin": "0", "equity": "0", "avail": "0"},
        Feed.OG_MARGIN: {"account_id": "", "ts_ms": 1, "positions_source": "EP3", "im_positions": None,
                         "open_orders_margin": "0", "equity": "0", "avail": "0"},
        Feed.FILLS: {"fill_id": "", "account_id": "A", "symbol": "X", "qty": "1", "price": "1", "ts_ms": 1},
        Feed.MARKS: {"symbol": "", "price": "1", "ts_ms": 1},
        Feed.INSTRUMENTS: {"symbol": "", "contract_size": "1", "im_rate": "0.1"},
    }[feed]
    return input_codecs()[feed].encode_value(value)


def test_poison_records_go_to_the_dead_letter_topic(kafka_bootstrap: str, kafka_topics: object,
                                                    tmp_path: Path) -> None:
    """Poison in every input topic ends in the dead-letter topic with a reason; the rest is processed."""
    from confluent_kafka import Producer

    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=12, n_fills=200, seed=5)
    want = expected(records)
    half = len(records) // 2
    produce(kafka_bootstrap, names, records[:half])
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    poisoned = 0
    for feed, topic in names.inputs.items():
        for i in range(2):
            p.produce(topic, poison_for(feed, i), f"A0000{i}".encode(), timestamp=records[half].ts_ms)
            poisoned += 1
    assert p.flush(30) == 0
    produce(kafka_bootstrap, names, records[half:])
    proc = start_worker(kafka_bootstrap, names, tmp_path / "worker.log")
    try:
        wait_for(lambda: final(emitted(kafka_bootstrap, names)) == want, 90,
                 "the verdicts of the clean records", step=2)
        wait_for(lambda: len(read_topics(kafka_bootstrap, [names.dead])) >= poisoned, 30,
                 "every poison record in the dead-letter topic")
        dead = read_topics(kafka_bootstrap, [names.dead])
    finally:
        stop(proc)
    assert len(dead) == poisoned
    assert {h["source_topic"].decode() for _, _, _, h in dead} == set(names.inputs.values())
    reasons = {h["reason"].decode() for _, _, _, h in dead}
    assert "contract" in reasons and reasons <= set(DECODE_REASONS)
    assert all(h["source_offset"] and h["detail"] for _, _, _, h in dead)
