"""Two worker processes share the partitions; one is SIGKILLed mid-stream; the survivor restores the
dead one's partitions from the changelog and the union of emitted events equals the replay's."""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import pytest

from streams.worker.synth import traffic
from tests.integration.worker_support import (
    Names,
    commits_ahead_of_state,
    committed,
    create_inputs,
    expected,
    high_watermarks,
    produce,
    start_worker,
    stop,
    wait_for,
    wait_for_the_replay,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_sigkilled_worker_is_replaced_without_losing_or_changing_verdicts(
        kafka_bootstrap: str, kafka_topics: object, tmp_path: Path) -> None:
    """Kill -9 one of two workers mid-stream: final verdicts equal the replay's; duplicates are exact."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=40, n_fills=1_600, seed=23)
    want = expected(records)
    chunks = [records[i:i + len(records) // 10] for i in range(0, len(records), len(records) // 10)]
    produce(kafka_bootstrap, names, chunks[0])
    a = start_worker(kafka_bootstrap, names, tmp_path / "a.log")
    b = None
    try:
        # A alone first: it owns every partition and works through the first chunk (committed to the
        # end), then hands half of the partitions to B: a hand-over point that does not depend on
        # machine speed. (A hand-over during A's start-up hold once made B apply records twice: see
        # test_a_partition_delivered_twice_in_one_batch_is_applied_once in the pipeline tests.)
        wait_for(lambda: "warm: partitions [0, 1, 2, 3]" in (tmp_path / "a.log").read_text(), 120,
                 "A to own every partition")
        first = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: committed(kafka_bootstrap, names) == first, 60, "A to commit the first chunk")
        b = start_worker(kafka_bootstrap, names, tmp_path / "b.log")
        wait_for(lambda: "warm: partitions [" in (tmp_path / "b.log").read_text(), 120, "B to own partitions")
        uncovered = []
        for i, chunk in enumerate(chunks[1:], 1):
            produce(kafka_bootstrap, names, chunk)
            if i == 5:  # A has checkpointed and committed part of its work (checkpoints every 200 ms)
                a.send_signal(signal.SIGKILL)
            uncovered += commits_ahead_of_state(kafka_bootstrap, names)  # takes ~0.3 s: paces production
        assert not uncovered, uncovered
        rows = wait_for_the_replay(kafka_bootstrap, names, b, want, [tmp_path / "a.log", tmp_path / "b.log"],
                                   "the union of emitted events to equal the replay's", 90)
    finally:
        stop(a, signal.SIGKILL)
        if b is not None:
            stop(b)
    assert "Restore complete" in (tmp_path / "b.log").read_text()
    by_version: dict[tuple[str, int], list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        by_version[(str(r["event_id"]), int(r["version"]))].append({k: v for k, v in r.items() if k != "scope"})
    assert all(all(d == same[0] for d in same) for same in by_version.values())
