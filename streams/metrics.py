"""Every Prometheus metric divmon exports, declared in one place (faust `sensors/prometheus.py` style).

`create(registry, env=...)` builds a `Metrics` tuple whose fields are the prometheus-client objects the
workers update; tests pass a fresh `CollectorRegistry`. `serve(registry, port)` exposes it over HTTP.

Guarantees:

- Every metric is named `divmon_*` and carries an `env` label with the value of `DIVMON_ENV`, the same
  value that is written on every event in ClickHouse, so a dashboard filters metrics and events with one
  variable. `env` is a *constant* label: it is added at collection time, so callers never pass it and can
  never get it wrong (prometheus-client has no const labels; see `_EnvCollector`). Scrape configs must
  therefore not set an `env` target label (it would turn ours into `exported_env`).
- No label ever carries an account id (or a symbol): label values come from small closed sets (feeds,
  dead-letter reasons, event types and classes, witness statuses, positions sources). Per-account detail
  lives in ClickHouse. `tests/unit/test_metrics.py` enforces the label names.
- `feed` label values are the logical feed names (`streams.core.records.Feed` values, which are the
  default topic names), never the configured topic names, so alert rules survive topic renames.
- Series that alerts compare against zero are created at start-up with value 0 (`create` touches every
  feed, dead-letter reason, mismatch class, witness status, unvaluable source/reason and positions
  source), because `rate()` cannot see the first increment of a series
  that did not exist before it.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from math import isnan
from typing import NamedTuple
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from streams import __version__
from streams._native import engine_build
from streams.codec.errors import DECODE_REASONS
from streams.core.events import AvailGapFlip, PositionMismatch, SourceTransition, Unvaluable, WitnessCheck
from streams.core.records import Feed

NAMESPACE = "divmon"

FEEDS: tuple[str, ...] = tuple(f.value for f in Feed)
MISMATCH_CLASSES: tuple[str, ...] = ("propagation_race", "persistent", "never_in_cache", "phantom")
OPEN_MISMATCH_CLASSES: tuple[str, ...] = ("", "persistent", "never_in_cache", "phantom")
WITNESS_STATUSES: tuple[str, ...] = ("never_in_cache", "phantom", "mismatch")
POSITIONS_SOURCES: tuple[str, ...] = ("RISK_ENGINE", "EP3")
# Dead-letter reasons are the codec's stable tokens (the dead-letter header), created at 0 per feed so
# that the first dead letter is visible to increase().
DEAD_LETTER_REASONS: tuple[str, ...] = DECODE_REASONS
UNVALUABLE_SOURCES: tuple[str, ...] = ("EP3", "RE")
UNVALUABLE_REASONS: tuple[str, ...] = ("missing_instrument", "missing_mark", "missing_im")

# Snapshot age: from "fresh" (50 ms) through the 2 s grace window to a retired/stuck RE (10 min).
SNAPSHOT_AGE_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
# |avail gap| in account currency: decades from 1 to 10M.
AVAIL_GAP_BUCKETS: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7)
# One ClickHouse insert: a few ms on a healthy server, tens of seconds when it is struggling.
SINK_BATCH_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Where the worker's event-loop thread spends its CPU, per pipeline step (see `StageClock`): decode =
# taking fetched records, Avro decode and contract checks; engine = event-time merge and verdicts;
# encode = event encoding and handing events to the output producer; checkpoint = cutting engine
# state; state = writing it to the changelog tables; metrics = updating these metrics.
STAGES: tuple[str, ...] = ("decode", "engine", "encode", "metrics", "checkpoint", "state")


class Metrics(NamedTuple):
    """The worker's metrics; label names are in each field's comment (besides the constant `env`)."""

    build_info: Info  # divmon_build_info{version, engine}: engine is 'compiled' or 'pure ...' (streams._native)
    records_consumed: Counter  # divmon_records_consumed_total{feed}
    records_applied: Counter  # divmon_records_applied_total: released to the engines (after the watermark)
    dead_letters: Counter  # divmon_dead_letters_total{feed, reason}
    late_records: Counter  # divmon_late_records_total: applied after event time had passed them
    input_lost: Counter  # divmon_input_lost_records_total{feed}: deleted by the broker before they were read
    input_replaced: Counter  # divmon_input_replaced_total{feed}: partitions found with a new log (topic made again)
    input_missing: Gauge  # divmon_input_missing_partitions{feed}: partitions this worker's engines lack
    input_truncated: Counter  # divmon_input_truncated_total{feed}: partitions found ending below the offset read to
    ep3_stale: Counter  # divmon_ep3_stale_total: EP3 events with a non-increasing seq (ignored)
    events_emitted: Counter  # divmon_events_emitted_total{type, class}: every emission (each version)
    mismatches: Counter  # divmon_mismatches_total{class}: mismatch episodes, once, when classified
    open_mismatches: Gauge  # divmon_open_mismatches{class}: '' = still inside the grace window
    avail_gap_flips: Counter  # divmon_avail_gap_flips_total{position_mismatch}: flip episodes opened
    avail_gap: Histogram  # divmon_avail_gap_abs: |computed - published avail| when a flip opens
    unvaluable: Counter  # divmon_unvaluable_total{source, reason}: unvaluable episodes opened
    snapshot_age: Histogram  # divmon_snapshot_age_seconds: RE snapshot age at each comparison
    witness_sweeps: Counter  # divmon_witness_sweeps_total
    witness_accounts_checked: Counter  # divmon_witness_accounts_checked_total
    witness_anomalies: Counter  # divmon_witness_anomalies_total{status}: anomalies confirmed
    open_witness_anomalies: Gauge  # divmon_open_witness_anomalies{status}
    witness_oldest_dormant_age: Gauge  # divmon_witness_oldest_dormant_age_seconds
    warming: Gauge  # divmon_warming: 1 while tables restore and verdicts are held
    engine_lag: Gauge  # divmon_engine_lag_seconds: wall clock minus engine event time
    consumer_lag: Gauge  # divmon_consumer_lag_records{feed}: records behind the high watermark
    positions_source: Gauge  # divmon_positions_source{source}: 1 for the source in force, else 0
    sink_buffered_rows: Gauge  # divmon_sink_buffered_rows: accepted, not yet acknowledged
    sink_write_failures: Counter  # divmon_sink_write_failures_total
    sink_batch_latency: Histogram  # divmon_sink_batch_seconds: one batch write, success or failure
    stage_cpu: Counter  # divmon_stage_cpu_seconds_total{stage}: event-loop thread CPU per pipeline step
    checkpoint_interval: Gauge  # divmon_checkpoint_interval_seconds: the worker's current one


class _EnvCollector(Collector):
    """Re-exposes a private registry with `env=<value>` added to every sample (a constant label)."""

    def __init__(self, inner: CollectorRegistry, env: str) -> None:
        self._inner = inner
        self._env = env

    def collect(self) -> Iterator[Metric]:
        for metric in self._inner.collect():
            out = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            out.samples = [
                Sample(s.name, {"env": self._env, **s.labels}, s.value, s.timestamp, s.exemplar)
                for s in metric.samples
            ]
            yield out

    def describe(self) -> Iterator[Metric]:
        """Names only (so the outer registry still rejects duplicate registrations)."""
        yield from self._inner.collect()


class _ThreadCpu(Collector):
    """A counter read at scrape time: the CPU seconds one thread has used (its POSIX CPU clock).

    Compared with `stage_cpu_seconds` it shows what the rest of the loop costs, and its rate tells
    whether a worker is CPU-bound: a rate near 1 means the loop thread never waits."""

    def __init__(self, name: str, documentation: str, thread: threading.Thread) -> None:
        self._name = f"{NAMESPACE}_{name}"
        self._doc = documentation
        assert thread.ident is not None, "the thread must be running"
        self._clock = time.pthread_getcpuclockid(thread.ident)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._doc, value=time.clock_gettime(self._clock))


class StageClock:
    """Charges the calling thread's CPU time (`time.thread_time`) to pipeline stages.

    `t = clock.start()`, then `t = clock.lap("decode", t)` after each stage: two clock reads per
    stage and batch, nothing per record."""

    def __init__(self, m: Metrics) -> None:
        self._stages = {stage: m.stage_cpu.labels(stage=stage) for stage in STAGES}

    @staticmethod
    def start() -> float:
        return time.thread_time()

    def lap(self, stage: str, since: float) -> float:
        now = time.thread_time()
        self._stages[stage].inc(now - since)
        return now


def create(registry: CollectorRegistry, *, env: str = "demo", feeds: Iterable[str] = FEEDS) -> Metrics:
    """Declare every metric, with `env` as a constant label, and register them in `registry`.

    The alert-relevant series (per feed, per class, per source) exist from the start with value 0.
    Raises ValueError (from prometheus-client) if `registry` already holds divmon metrics.
    """
    inner = CollectorRegistry(auto_describe=True)
    n = NAMESPACE
    m = Metrics(
        build_info=Info("build", "divmon version", namespace=n, registry=inner),
        records_applied=Counter("records_applied", "Input records applied by the partition engines (a consumed "
                                "record waits for the watermark first)", namespace=n, registry=inner),
        records_consumed=Counter("records_consumed", "Input records consumed, per logical feed",
                                 ["feed"], namespace=n, registry=inner),
        dead_letters=Counter("dead_letters", "Records sent to the dead-letter topic, per feed and reason",
                             ["feed", "reason"], namespace=n, registry=inner),
        late_records=Counter("late_records", "Input records applied after event time had passed them (they "
                             "arrived after their input was counted idle): verdicts around them may differ "
                             "from a replay of the same input", namespace=n, registry=inner),
        input_lost=Counter("input_lost_records", "Input records the broker deleted (retention) before this worker "
                           "read them: skipped when its fetch position was reset to the earliest offset held; "
                           "verdicts for the accounts they concerned may be wrong", ["feed"], namespace=n,
                           registry=inner),
        input_replaced=Counter("input_replaced", "Input partitions found with a new log (their topic deleted and "
                               "made again), by each partition engine that reads them: each is read from the "
                               "start of its new log", ["feed"], namespace=n, registry=inner),
        input_missing=Gauge("input_missing_partitions", "Partitions of an input that this worker's partition engines "
                            "lack (its topic deleted?): event time waits for them, verdicts are held", ["feed"],
                            namespace=n, registry=inner),
        input_truncated=Counter("input_truncated", "Input partitions found ending below the offset this worker had "
                                "read them to (their log truncated: unclean leader election, or a broker lost "
                                "acknowledged data): records written there since are taken as read and not "
                                "applied until the log passes that offset", ["feed"], namespace=n, registry=inner),
        ep3_stale=Counter("ep3_stale", "EP3 events ignored because their seq was not above the last applied",
                          namespace=n, registry=inner),
        events_emitted=Counter("events_emitted", "Events emitted (every version), per type and class",
                               ["type", "class"], namespace=n, registry=inner),
        mismatches=Counter("mismatches", "Position-mismatch episodes, counted once when their class is final",
                           ["class"], namespace=n, registry=inner),
        open_mismatches=Gauge("open_mismatches", "Open position mismatches by class ('' = inside grace)",
                              ["class"], namespace=n, registry=inner),
        avail_gap_flips=Counter("avail_gap_flips", "Avail-gap decision-flip episodes opened",
                                ["position_mismatch"], namespace=n, registry=inner),
        avail_gap=Histogram("avail_gap_abs", "|OG computed avail - RE published avail| when a flip opens",
                            namespace=n, registry=inner, buckets=AVAIL_GAP_BUCKETS),
        unvaluable=Counter("unvaluable", "Present positions that cannot be valued, episodes opened",
                           ["source", "reason"], namespace=n, registry=inner),
        snapshot_age=Histogram("snapshot_age_seconds", "Age of the RE snapshot at each comparison",
                               namespace=n, registry=inner, buckets=SNAPSHOT_AGE_BUCKETS),
        witness_sweeps=Counter("witness_sweeps", "Replacement-witness sweeps completed",
                               namespace=n, registry=inner),
        witness_accounts_checked=Counter("witness_accounts_checked", "Accounts checked by witness sweeps",
                                         namespace=n, registry=inner),
        witness_anomalies=Counter("witness_anomalies", "Witness anomalies confirmed after grace, by status",
                                  ["status"], namespace=n, registry=inner),
        open_witness_anomalies=Gauge("open_witness_anomalies", "Open witness anomalies, by status",
                                     ["status"], namespace=n, registry=inner),
        witness_oldest_dormant_age=Gauge("witness_oldest_dormant_age_seconds",
                                         "Age of the oldest dormant position at the last sweep",
                                         namespace=n, registry=inner),
        warming=Gauge("warming", "1 while this worker restores its tables and holds verdicts",
                      namespace=n, registry=inner),
        engine_lag=Gauge("engine_lag_seconds", "Wall clock minus the engine's event time",
                         namespace=n, registry=inner),
        consumer_lag=Gauge("consumer_lag_records", "Records behind the high watermark, per feed",
                           ["feed"], namespace=n, registry=inner),
        positions_source=Gauge("positions_source", "1 for the gateway's positions source in force",
                               ["source"], namespace=n, registry=inner),
        sink_buffered_rows=Gauge("sink_buffered_rows", "Rows accepted by the sink, not yet acknowledged",
                                 namespace=n, registry=inner),
        sink_write_failures=Counter("sink_write_failures", "Failed sink batch writes (each retry counts)",
                                    namespace=n, registry=inner),
        sink_batch_latency=Histogram("sink_batch_seconds", "Duration of one sink batch write",
                                     namespace=n, registry=inner, buckets=SINK_BATCH_BUCKETS),
        stage_cpu=Counter("stage_cpu_seconds", "CPU time of the event-loop thread, per pipeline step",
                          ["stage"], namespace=n, registry=inner),
        checkpoint_interval=Gauge("checkpoint_interval_seconds", "Current checkpoint interval (stretched from "
                                  "DIVMON_CHECKPOINT_MS while cutting checkpoints is costly)",
                                  namespace=n, registry=inner),
    )
    m.build_info.info({"version": __version__, "engine": engine_build()})
    for feed in feeds:
        m.records_consumed.labels(feed=feed)
        m.input_lost.labels(feed=feed)
        m.input_replaced.labels(feed=feed)
        m.input_missing.labels(feed=feed)
        m.input_truncated.labels(feed=feed)
        m.consumer_lag.labels(feed=feed)
        for reason in DEAD_LETTER_REASONS:
            m.dead_letters.labels(feed=feed, reason=reason)
    for cls in MISMATCH_CLASSES:
        m.mismatches.labels(**{"class": cls})
    for cls in OPEN_MISMATCH_CLASSES:
        m.open_mismatches.labels(**{"class": cls})
    for status in WITNESS_STATUSES:
        m.witness_anomalies.labels(status=status)
        m.open_witness_anomalies.labels(status=status)
    for flag in ("true", "false"):
        m.avail_gap_flips.labels(position_mismatch=flag)
    for source in POSITIONS_SOURCES:
        m.positions_source.labels(source=source)
    for source in UNVALUABLE_SOURCES:
        for reason in UNVALUABLE_REASONS:
            m.unvaluable.labels(source=source, reason=reason)
    for stage in STAGES:
        m.stage_cpu.labels(stage=stage)
    # the same thread's CPU in total: the rest is Faust, aiokafka's fetching and asyncio itself
    if hasattr(time, "pthread_getcpuclockid"):  # POSIX thread CPU clocks (not on macOS)
        inner.register(_ThreadCpu("loop_cpu_seconds", "CPU time of the event-loop thread (all of it)",
                                  threading.main_thread()))
    registry.register(_EnvCollector(inner, env))
    return m


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0"
          ) -> tuple[WSGIServer, threading.Thread]:
    """Expose `registry` on http://addr:port/metrics from a daemon thread (it ends with the process).

    Returns the server and its thread so callers (and tests) can `server.shutdown()` it earlier.
    """
    return start_http_server(port, addr=addr, registry=registry)


def event_class(event: object) -> str:
    """The `class` label of an event: mismatch class, witness status, unvaluable reason, else ''."""
    if isinstance(event, PositionMismatch):
        return event.cls or ""
    if isinstance(event, WitnessCheck):
        return event.status or ""
    if isinstance(event, Unvaluable):
        return event.reason
    return ""


def observe_event(m: Metrics, event: PositionMismatch | AvailGapFlip | Unvaluable | WitnessCheck | object
                  ) -> None:
    """Count one emitted event (see `observe_events`)."""
    observe_events(m, (event,))


def observe_events(m: Metrics, events: Iterable[object], ages: list[float] | None = None) -> str | None:
    """Count emitted events; episode counters move once per episode, not once per version.
    Returns the positions source the batch's last `source_transition` moved to (None if it has
    none), and appends each mismatch's snapshot age (seconds) to `ages` if given: what the worker
    reads of a batch besides the counts, gathered in the same pass (a second pass over every event
    was 2.5% of the output's instructions, callgrind).

    Assumes the engine emits each lifecycle state once per episode: a mismatch is counted in
    `mismatches` when it is confirmed (unexplained classes) or resolved without ever being confirmed
    (`propagation_race`); a flip, an unvaluable and a witness anomaly when opened/confirmed. Open gauges
    are not touched here: set them from engine state (`set_open`), which stays right across restores.
    The two per-event counters are summed per label set first: one `labels()` lookup per batch and
    label set, not per event (the lookup takes a lock and costs more than the increment). Mismatches,
    most of the events, take a short path of their own.
    """
    emitted: dict[tuple[str, str], int] = {}  # (type, class)
    classified: dict[str, int] = {}
    get = emitted.get
    source = None
    for event in events:
        if isinstance(event, PositionMismatch):
            cls = event.cls
            kind: tuple[str, str] = (event.TYPE, cls or "")  # = (TYPE, event_class(event))
            emitted[kind] = get(kind, 0) + 1
            state = event.state
            if cls and (state == "confirmed" or (state == "resolved" and event.confirmed_ts_ms is None)):
                classified[cls] = classified.get(cls, 0) + 1
            if ages is not None and event.snapshot_age_ms is not None:
                ages.append(event.snapshot_age_ms / 1000)
            continue
        key = (getattr(event, "TYPE", type(event).__name__), event_class(event))
        emitted[key] = get(key, 0) + 1
        if isinstance(event, SourceTransition):
            source = event.to_source
        elif isinstance(event, AvailGapFlip):
            if event.state == "opened":
                m.avail_gap_flips.labels(position_mismatch=str(event.position_mismatch).lower()).inc()
                m.avail_gap.observe(float(abs(event.gap)))
        elif isinstance(event, Unvaluable):
            if event.state == "opened":
                m.unvaluable.labels(source=event.source, reason=event.reason).inc()
        elif isinstance(event, WitnessCheck):
            _observe_witness(m, event)
    for (type_, cls_), n in emitted.items():
        m.events_emitted.labels(type=type_, **{"class": cls_}).inc(n)
    for cls_, n in classified.items():
        m.mismatches.labels(**{"class": cls_}).inc(n)
    return source


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for every v, with one increment per bucket hit and one of the sum.

    `observe` takes a lock and walks the buckets for each value (~1.5 µs); the worker observes a
    snapshot age per mismatch event. Relies on prometheus-client's `Histogram` keeping its bounds in
    `_upper_bounds` and its values in `_buckets` and `_sum` (the same since 0.4; the range is pinned in
    pyproject.toml, and a test holds this equal to `observe`). The sum is added once, so it may differ
    from one-at-a-time additions in the last bits of the float."""
    if not values:
        return
    histogram._raise_if_not_observable()  # type: ignore[no-untyped-call]
    bounds = histogram._upper_bounds
    hits: dict[int, int] = {}
    for v in values:
        if not isnan(v):  # `observe` counts a NaN in no bucket (it only adds it to the sum)
            i = bisect_left(bounds, v)  # the first bucket whose bound is >= v, as `observe` finds it
            hits[i] = hits.get(i, 0) + 1
    histogram._sum.inc(sum(values))
    buckets = histogram._buckets
    for i, n in hits.items():
        buckets[i].inc(n)


def _observe_witness(m: Metrics, event: WitnessCheck) -> None:
    if event.kind == "sweep":
        m.witness_sweeps.inc()
        m.witness_accounts_checked.inc(event.accounts_checked or 0)
        if event.oldest_dormant_age_ms is not None:
            m.witness_oldest_dormant_age.set(event.oldest_dormant_age_ms / 1000)
    elif event.state == "confirmed" and event.status:
        m.witness_anomalies.labels(status=event.status).inc()


def set_open(gauge: Gauge, label: str, counts: Mapping[str, int], values: Iterable[str]) -> None:
    """Set a labelled gauge from engine state: every value in `values` is set, missing ones to 0."""
    known = tuple(values)
    for value in (*known, *(v for v in counts if v not in known)):
        gauge.labels(**{label: value}).set(counts.get(value, 0))


def set_positions_source(m: Metrics, source: str) -> None:
    """Mark `source` as the positions source in force (1) and every other known source as 0."""
    for s in (*POSITIONS_SOURCES, *(() if source in POSITIONS_SOURCES else (source,))):
        m.positions_source.labels(source=s).set(1 if s == source else 0)
