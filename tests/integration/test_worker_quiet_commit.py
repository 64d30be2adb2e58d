"""When its inputs go quiet, a worker stores and commits what it processed at once, not on its intervals.

Set up so that the intervals alone would take minutes (a checkpoint every 60 s, Faust's commit loop
every 10 minutes), the worker must still have committed every input record, never ahead of its stored
state, within seconds of the inputs going idle: the end of a burst reaches the sink and the committed
offsets without waiting for a timer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
    start_worker,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

IDLE_MS = 2_000


def test_quiet_inputs_are_checkpointed_and_committed_at_once(kafka_bootstrap: str, kafka_topics: object,
                                                             tmp_path: Path) -> None:
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=12, n_fills=300, seed=3)
    want = expected(records)
    produce(kafka_bootstrap, names, records)
    ends = high_watermarks(kafka_bootstrap, names)
    log = tmp_path / "worker.log"
    proc = start_worker(kafka_bootstrap, names, log, env_extra={
        "DIVMON_CHECKPOINT_MS": "60000", "DIVMON_CHECKPOINT_MAX_MS": "60000",
        "DIVMON_COMMIT_INTERVAL_MS": "600000", "DIVMON_IDLE_MS": str(IDLE_MS)})
    try:
        wait_for(lambda: "warm: partitions [0, 1, 2, 3]" in log.read_text(), 120, "the worker to be warm")
        # within 30 s: well under the first interval (60 s), so it was not the intervals that brought it
        wait_for(lambda: committed(kafka_bootstrap, names) == ends, 30, "every input record to be committed",
                 step=0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        # committed only once stored: the changelog covers every committed offset, and the verdicts
        # derived from those records are out
        assert commits_ahead_of_state(kafka_bootstrap, names) == []
        assert final(emitted(kafka_bootstrap, names)) == want
    finally:
        stop(proc)
