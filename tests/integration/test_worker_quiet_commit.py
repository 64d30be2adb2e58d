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
    create_inputs,
    emitted,
    expected,
    final,
    produce,
    run_to_the_end,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_quiet_inputs_are_checkpointed_and_committed_at_once(kafka_bootstrap: str, kafka_topics: object,
                                                             tmp_path: Path) -> None:
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=12, n_fills=300, seed=3)
    produce(kafka_bootstrap, names, records)
    # within 30 s of being warm: well under the first interval (60 s), so it was not the intervals
    # that brought it
    run_to_the_end(kafka_bootstrap, names, tmp_path / "worker.log", "the worker", commit_within=30, env_extra={
        "DIVMON_CHECKPOINT_MS": "60000", "DIVMON_CHECKPOINT_MAX_MS": "60000",
        "DIVMON_COMMIT_INTERVAL_MS": "600000", "DIVMON_IDLE_MS": "2000"})
    # committed only once stored: the changelog covers every committed offset, and the verdicts
    # derived from those records are out
    assert commits_ahead_of_state(kafka_bootstrap, names) == []
    assert final(emitted(kafka_bootstrap, names)) == expected(records)
