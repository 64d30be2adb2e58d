"""The server code path end to end: ClickHouseSink over HTTP against the chdb-backed test fixture."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from streams.sinks import Backoff, Backpressure, BatchingSink, ClickHouseSink, SinkUnavailable
from streams.sinks.schema import TABLES


def _stop_merges(sink: Any) -> None:
    """Raw (non-FINAL) counts prove exactly-once only if background merges don't collapse rows."""
    for table in TABLES:
        sink.client.command(f"SYSTEM STOP MERGES {sink.database}.{table}")


@pytest.fixture
def http_sink(ch_http_settings: Any) -> Any:
    s = ClickHouseSink(ch_http_settings, retry_after=0.2)
    s.setup()
    _stop_merges(s)
    yield s
    s.close()


def test_every_event_type_round_trips_over_http(http_sink: Any, make_events: Any, read_events: Any) -> None:
    """Events written over HTTP read back equal field by field (NULL stays None, 0 stays 0)."""
    batch = make_events()
    http_sink.write(batch)
    for e in batch:
        got = [x for x in read_events(http_sink.client, http_sink.database, e.TYPE) if x.event_id == e.event_id]
        assert got == [e]


def test_retried_batch_and_versions_over_http(http_sink: Any, make_events: Any, read_events: Any) -> None:
    """Over HTTP a retried batch adds no rows and versions collapse to the highest with FINAL."""
    v1 = make_events(version=1)
    v2 = make_events(version=2)
    http_sink.write(v1)
    http_sink.write(v1)
    http_sink.write(v2)
    for table in TABLES:
        assert len(read_events(http_sink.client, http_sink.database, table, final=False)) == \
            2 * sum(1 for e in v1 if table == e.TYPE)
        assert {e.version for e in read_events(http_sink.client, http_sink.database, table)} == {2}


def test_multi_frame_insert_loses_no_rows(http_sink: Any, make_events: Any) -> None:
    """An insert above 65,536 rows (several compressed frames) arrives whole."""
    base = make_events()[-1]
    n = 150_000
    t0 = time.perf_counter()
    http_sink.write([replace(base, event_id=f"fh{i}", minute_ts_ms=base.minute_ts_ms + 60_000 * (i % 60))
                     for i in range(n)])
    print(f"HTTP fixture insert of {n} rows: {time.perf_counter() - t0:.2f}s")
    assert http_sink.client.command(f"SELECT count() FROM {http_sink.database}.feed_health") == n


def test_unreachable_server_raises_sink_unavailable(http_sink: Any, ch_http: Any, make_events: Any) -> None:
    """With the endpoint down, write raises SinkUnavailable (typed, with retry_after), not a library error."""
    ch_http.stop()
    with pytest.raises(SinkUnavailable) as exc:
        http_sink.write(make_events())
    assert exc.value.retry_after == 0.2
    ch_http.start()
    http_sink.write(make_events())


@pytest.mark.parametrize("outage_s", [3.0, pytest.param(60.0, marks=pytest.mark.slow)])
def test_outage_mid_stream_loses_and_duplicates_nothing(
        http_sink: Any, ch_http: Any, make_events: Any, outage_s: float) -> None:
    """Stream batches, stop the endpoint for `outage_s` mid-stream, restart: every event is in
    ClickHouse exactly once, and every token was acked, in order, only after its write."""
    acked: list[int] = []
    b = BatchingSink(http_sink, max_rows=50, max_ms=50, max_buffered_rows=400,
                     backoff=Backoff(0.1, 2.0, 2.0), on_ack=acked.extend)
    base = make_events()[0]
    n_batches, per_batch, pressure, ids = 60, 25, 0, set()
    restart: threading.Timer | None = None
    offered = 0
    for i in range(n_batches):
        group = [replace(base, event_id=f"o{i}-{j}") for j in range(per_batch)]
        if i % 5 == 4:  # a lifecycle update of an earlier event rides along
            group.append(replace(base, event_id=f"o{i - 4}-0", version=2, state="resolved"))
        ids.update(e.event_id for e in group)
        if i == n_batches // 3:
            ch_http.stop()
            restart = threading.Timer(outage_s, ch_http.start)
            restart.start()
        while True:
            try:
                b.offer(group, token=i)
                break
            except Backpressure as bp:
                pressure += 1
                time.sleep(min(bp.retry_after, 0.5))
                b.poll()
        offered += len(group)
        b.poll()
        assert acked == sorted(acked) and (not acked or acked[-1] <= i)
    b.drain(deadline=time.monotonic() + outage_s + 30)
    assert restart is not None
    restart.join()
    db = http_sink.database
    assert pressure > 0, "the outage never backed the stream up"
    assert acked == list(range(n_batches))
    assert http_sink.client.command(f"SELECT count() FROM {db}.position_mismatch") == offered
    assert http_sink.client.command(f"SELECT count() FROM {db}.position_mismatch FINAL") == len(ids)
    assert http_sink.client.command(
        f"SELECT countIf(version = 2) FROM {db}.position_mismatch FINAL") == n_batches // 5
