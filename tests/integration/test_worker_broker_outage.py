"""A worker rides out its broker going down mid-stream: the broker (its own, not the session's) is
killed with SIGKILL while the worker works through a backlog and comes back 70 s later on the same
port and data. The worker neither crashes nor runs event time ahead while it can't fetch (an
account input counts as caught up only on a recent fetch response): it ends with the replay's
verdicts, nothing applied late, every input offset committed.

Two ways it used to stop, each found here: the listing of the shared topics' partitions raised
during the outage (any outage over 10 s), and the commit gate gave up on the output and changelog
producers after one 60 s flush (any outage over a minute, while librdkafka would still have
delivered everything: it gives up after message.timeout.ms, 5 minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.worker.synth import traffic
from tests.integration.worker_support import (
    Names,
    commits_ahead_of_state,
    committed,
    create_inputs_on,
    expected,
    high_watermarks,
    late_records,
    produce,
    start_worker,
    stop,
    wait_for,
    wait_for_the_replay,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_worker_rides_out_a_broker_crash(tmp_path: Path) -> None:
    with KafkaBroker() as broker:
        bootstrap = broker.bootstrap
        names = Names()
        create_inputs_on(bootstrap, names)
        records = traffic(n_accounts=24, n_fills=900, seed=29)
        want = expected(records)
        third = len(records) // 3
        produce(bootstrap, names, records[:third])
        log = tmp_path / "worker.log"
        proc = start_worker(bootstrap, names, log)
        try:
            wait_for(lambda: "warm: partitions [0, 1, 2, 3]" in log.read_text(), 120, "the worker to be warm")
            ends = high_watermarks(bootstrap, names)
            wait_for(lambda: committed(bootstrap, names) == ends, 90, "the first third to be committed")
            produce(bootstrap, names, records[third:2 * third])
            # down while the worker has the second third to work through, back after 70 s; the last
            # third is produced once it is back (a producer outside the outage); restart raises if
            # the broker does not come back
            broker.restart(down_s=70, crash=True)
            assert proc.poll() is None, log.read_text()[-3000:]
            produce(bootstrap, names, records[2 * third:])

            wait_for_the_replay(bootstrap, names, proc, want, [log],
                                "the verdicts after the outage to equal the replay's", 180)
            ends = high_watermarks(bootstrap, names)
            wait_for(lambda: committed(bootstrap, names) == ends, 60, "every offset to be committed")
            assert commits_ahead_of_state(bootstrap, names) == []
            wait_for(lambda: bool(late_records(log)), 30, "a status line")
            assert set(late_records(log).values()) == {0}, late_records(log)
        finally:
            stop(proc)
