"""A worker on the production store (RocksDB) restarts on its own data directory: after a clean stop
it resumes from its local state without re-reading the changelog, and after SIGKILL mid-stream it
resumes from what it finds on disk and in the changelog; either way its verdicts equal the replay's.

The state rows reach the changelog through librdkafka (`ChangelogWriter`), not Faust's producer, so
the offsets a restart starts reading from are the ones the commit gate's receipts recorded: too low
and recovery re-reads rows (slow, harmless), too high and it skips rows the local store lacks."""

from __future__ import annotations

import re
import signal
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
    run_to_the_end,
    start_worker,
    stop,
    wait_for,
    wait_for_the_replay,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_rocksdb_worker_restarts_on_its_own_data(kafka_bootstrap: str, kafka_topics: object,
                                                 tmp_path: Path) -> None:
    """Clean stop, restart (no changelog re-read), SIGKILL mid-stream, restart: the replay's verdicts."""
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=40, n_fills=1_600, seed=31)
    want = expected(records)
    chunks = [records[i:i + len(records) // 10] for i in range(0, len(records), len(records) // 10)]
    env = {"DIVMON_STORE": "rocksdb://", "DIVMON_DATA_DIR": str(tmp_path / "data")}
    logs = [tmp_path / f"run{i}.log" for i in range(3)]

    # run 0: the first half, committed to the end, then a clean stop
    produce(kafka_bootstrap, names, [r for c in chunks[:5] for r in c])
    run_to_the_end(kafka_bootstrap, names, logs[0], "run 0", env)

    # run 1: same data directory; the local store already holds everything the changelog does, so
    # recovery reads nothing; then SIGKILL while it works through the second half
    proc = start_worker(kafka_bootstrap, names, logs[1], env_extra=env)
    try:
        wait_for(lambda: "warm: partitions [0, 1, 2, 3]" in logs[1].read_text(), 120, "run 1 to be warm")
        text = logs[1].read_text()
        assert "Restoring state from changelog topics" not in text, _recovery_lines(text)
        for i, chunk in enumerate(chunks[5:], 5):
            produce(kafka_bootstrap, names, chunk)
            if i == 7:
                proc.send_signal(signal.SIGKILL)
            assert commits_ahead_of_state(kafka_bootstrap, names) == []
    finally:
        stop(proc, signal.SIGKILL)

    # run 2: same data directory after the kill: it restores what the changelog holds beyond its
    # local store, re-reads what was not committed, and ends with the replay's verdicts
    proc = start_worker(kafka_bootstrap, names, logs[2], env_extra=env)
    try:
        wait_for_the_replay(kafka_bootstrap, names, proc, want, [logs[1], logs[2]],
                                   "the verdicts after two restarts to equal the replay's")
        ends = high_watermarks(kafka_bootstrap, names)
        wait_for(lambda: committed(kafka_bootstrap, names) == ends, 60, "run 2 to commit to the end")
        assert commits_ahead_of_state(kafka_bootstrap, names) == []
    finally:
        stop(proc)


def _recovery_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if re.search(r"[Rr]ecover|[Rr]estor|[Hh]ighwater", line))
