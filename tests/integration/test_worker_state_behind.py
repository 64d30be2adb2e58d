"""A worker whose restored state is behind the group's committed offsets reads from where its state
ends, not from the committed offsets.

The commit gate never commits ahead of the stored state, but a state can still come back older:
a table read before its recovery had ended, a worker that kept an engine while another one moved
the partition on, a changelog lost. Read from the committed offsets, the records in between were
applied by nobody, and the verdicts of every account they touched differed from the replay's. The
test loses the whole changelog between two runs: the second worker restores nothing, while the
first one's offsets are committed to the end of its input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.agents.app import TABLE
from streams.worker.synth import traffic
from tests.integration.worker_support import (
    Names,
    create_inputs,
    expected,
    produce,
    run_to_the_end,
    start_worker,
    stop,
    wait_for,
    wait_for_the_replay,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_worker_whose_state_is_behind_the_committed_offsets_reads_from_where_it_ends(
        kafka_bootstrap: str, kafka_topics: object, tmp_path: Path) -> None:
    names = Names()
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    records = traffic(n_accounts=40, n_fills=1_200, seed=37)
    want = expected(records)
    half = len(records) // 2
    produce(kafka_bootstrap, names, records[:half])
    ends = run_to_the_end(kafka_bootstrap, names, tmp_path / "first.log", "the first worker")

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    changelog = f"{names.group}-{TABLE}-changelog"
    admin.delete_topics([changelog])[changelog].result(30)
    wait_for(lambda: changelog not in admin.list_topics(timeout=10).topics, 30, "the changelog to be gone")

    produce(kafka_bootstrap, names, records[half:])
    log = tmp_path / "second.log"
    proc = start_worker(kafka_bootstrap, names, log)
    try:
        wait_for_the_replay(kafka_bootstrap, names, proc, want, [log], "the second worker's verdicts")
    finally:
        stop(proc)
    # every account partition with committed offsets was read again from its start, and said so
    moved = {(topic, int(p), int(offset)) for p, topic, offset in re.findall(
        r"p(\d+): its state holds (\S+) only below offset 0, the committed offset is (\d+): read from 0",
        log.read_text())}
    assert moved == {(topic, p, offset) for (topic, p), offset in ends.items()}
