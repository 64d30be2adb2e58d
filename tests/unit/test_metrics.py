"""The metrics module: one declaration, `divmon_` names, constant `env`, no account ids in labels."""

from __future__ import annotations

import re
import time
import urllib.request
from dataclasses import replace
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics
from streams.agents.router import WorkerMetrics
from streams.core.events import AvailGapFlip, PositionMismatch, SourceTransition, WitnessCheck
from streams.core.tally import Tally
from streams.metrics import Metrics

FORBIDDEN_LABEL = re.compile(r"account|symbol|user|password|secret|event_id", re.IGNORECASE)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def _touch_all(m: Metrics) -> None:
    """Give every labelled metric one child so that it appears in the exposition."""
    m.dead_letters.labels(feed="fills", reason="malformed").inc()
    m.events_emitted.labels(type="position_mismatch", **{"class": "persistent"}).inc()
    m.unvaluable.labels(source="EP3", reason="missing_mark").inc()


def _families(registry: CollectorRegistry) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = generate_latest(registry).decode()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def _value(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    value = registry.get_sample_value(sample, {"env": "test", **labels})
    assert value is not None, f"no sample {sample}{labels}"
    return value


def test_every_field_is_a_registered_divmon_metric(registry: CollectorRegistry) -> None:
    """Each NamedTuple field is a prometheus-client metric whose family appears in the exposition."""
    m = metrics.create(registry, env="test")
    _touch_all(m)
    families = _families(registry)
    for name in Metrics._fields:
        metric = getattr(m, name)
        assert isinstance(metric, Counter | Gauge | Histogram | Info), name
        family = metric._name
        assert family.startswith("divmon_"), family
        exposed = family + "_info" if isinstance(metric, Info) else family
        assert exposed in families, f"{name}: {exposed} not exposed"


def test_all_metrics_carry_the_env_constant_label(registry: CollectorRegistry) -> None:
    """Every exposed sample is labelled env=<DIVMON_ENV>, without callers passing it."""
    m = metrics.create(registry, env="prod")
    _touch_all(m)
    samples = [s for fam in _families(registry).values() for s in fam]
    assert samples
    assert all(labels.get("env") == "prod" for _, labels, _ in samples)


def test_no_label_can_carry_an_account_id(registry: CollectorRegistry) -> None:
    """Label names come from closed sets; none is named like an account, symbol or secret."""
    m = metrics.create(registry, env="test")
    for name in Metrics._fields:
        labelnames = getattr(m, name)._labelnames
        bad = [label for label in labelnames if FORBIDDEN_LABEL.search(label)]
        assert not bad, f"{name} has labels {bad}"
        assert "env" not in labelnames, f"{name}: env is a constant label, not a call-site label"


def test_exposition_contains_expected_names(registry: CollectorRegistry) -> None:
    """The names that rules and dashboards use are in the text exposition."""
    _touch_all(metrics.create(registry, env="test"))
    text = generate_latest(registry).decode()
    for name in ("divmon_records_consumed_total", "divmon_dead_letters_total", "divmon_events_emitted_total",
                 "divmon_mismatches_total", "divmon_open_mismatches", "divmon_open_witness_anomalies",
                 "divmon_snapshot_age_seconds_bucket", "divmon_avail_gap_abs_bucket",
                 "divmon_avail_gap_flips_total", "divmon_witness_sweeps_total",
                 "divmon_witness_accounts_checked_total", "divmon_witness_anomalies_total",
                 "divmon_witness_oldest_dormant_age_seconds", "divmon_warming", "divmon_engine_lag_seconds",
                 "divmon_sink_buffered_rows", "divmon_sink_write_failures_total",
                 "divmon_sink_batch_seconds_bucket", "divmon_consumer_lag_records",
                 "divmon_positions_source", "divmon_build_info", "divmon_stage_cpu_seconds_total",
                 "divmon_loop_cpu_seconds_total"):
        assert re.search(rf"^{name}\{{", text, re.MULTILINE), name


def test_alert_series_exist_at_zero_from_the_start(registry: CollectorRegistry) -> None:
    """Per-feed and per-class series exist at 0 so rate() sees the first increment."""
    metrics.create(registry, env="test")
    for feed in metrics.FEEDS:
        assert _value(registry, "divmon_records_consumed_total", feed=feed) == 0
        for name in ("divmon_input_lost_records_total", "divmon_input_replaced_total", "divmon_input_truncated_total"):
            assert _value(registry, name, feed=feed) == 0, (name, feed)
    for cls in metrics.MISMATCH_CLASSES:
        assert _value(registry, "divmon_mismatches_total", **{"class": cls}) == 0
    assert _value(registry, "divmon_avail_gap_flips_total", position_mismatch="false") == 0


def test_snapshot_age_buckets_span_50ms_to_10min(registry: CollectorRegistry) -> None:
    """The snapshot-age histogram resolves the grace window and a stuck risk engine."""
    assert metrics.SNAPSHOT_AGE_BUCKETS[0] == 0.05
    assert metrics.SNAPSHOT_AGE_BUCKETS[-1] == 600
    assert 2.0 in metrics.SNAPSHOT_AGE_BUCKETS
    m = metrics.create(registry, env="test")
    m.snapshot_age.observe(1.5)
    assert _value(registry, "divmon_snapshot_age_seconds_bucket", le="2.0") == 1
    assert _value(registry, "divmon_snapshot_age_seconds_bucket", le="1.0") == 0


def test_two_registries_are_independent() -> None:
    """create() can be called once per registry; a second call on the same registry is refused."""
    a, b = CollectorRegistry(), CollectorRegistry()
    metrics.create(a, env="test").warming.set(1)
    metrics.create(b, env="test")
    assert _value(a, "divmon_warming") == 1
    assert _value(b, "divmon_warming") == 0
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.create(a, env="test")


def test_positions_source_marks_one_current(registry: CollectorRegistry) -> None:
    """Exactly the source in force is 1."""
    m = metrics.create(registry, env="test")
    metrics.set_positions_source(m, "EP3")
    assert _value(registry, "divmon_positions_source", source="EP3") == 1
    assert _value(registry, "divmon_positions_source", source="RISK_ENGINE") == 0


def test_set_open_zeroes_classes_that_closed(registry: CollectorRegistry) -> None:
    """Open gauges are set from engine state; a class no longer present goes back to 0."""
    m = metrics.create(registry, env="test")
    metrics.set_open(m.open_mismatches, "class", {"persistent": 2}, metrics.OPEN_MISMATCH_CLASSES)
    assert _value(registry, "divmon_open_mismatches", **{"class": "persistent"}) == 2
    metrics.set_open(m.open_mismatches, "class", {}, metrics.OPEN_MISMATCH_CLASSES)
    assert _value(registry, "divmon_open_mismatches", **{"class": "persistent"}) == 0


def _mismatch(state: str, cls: str | None, confirmed: int | None) -> PositionMismatch:
    return PositionMismatch(
        event_id="e1", version=1, env="test", positions_source="EP3", account_id="A1", symbol="XAU-PERP",
        state=state, cls=cls, ep3_qty=None, re_qty=Decimal(13), delta=Decimal(-13),  # type: ignore[arg-type]
        first_seen_ts_ms=0, confirmed_ts_ms=confirmed, resolved_ts_ms=None, fresher="UNKNOWN", mark=None,
        im_delta=None, equity=None, snapshot_age_ms=None, re_im_total=None, re_avail=None,
        re_open_orders_margin=None)


def test_observe_event_counts_each_mismatch_episode_once(registry: CollectorRegistry) -> None:
    """Opened, confirmed and resolved versions of one mismatch count one episode of its class."""
    m = metrics.create(registry, env="test")
    for ev in (_mismatch("opened", None, None), _mismatch("confirmed", "never_in_cache", 2000),
               _mismatch("resolved", "never_in_cache", 2000)):
        metrics.observe_event(m, ev)
    metrics.observe_event(m, _mismatch("resolved", "propagation_race", None))
    assert _value(registry, "divmon_mismatches_total", **{"class": "never_in_cache"}) == 1
    assert _value(registry, "divmon_mismatches_total", **{"class": "propagation_race"}) == 1
    assert _value(registry, "divmon_events_emitted_total", type="position_mismatch",
                  **{"class": "never_in_cache"}) == 2
    assert _value(registry, "divmon_events_emitted_total", type="position_mismatch", **{"class": ""}) == 1


def test_a_batch_counts_what_single_events_count() -> None:
    """`observe_events` sums per label set before incrementing: same totals as one event at a time."""
    batch = [_mismatch("opened", None, None), _mismatch("confirmed", "never_in_cache", 2000),
             _mismatch("resolved", "never_in_cache", 2000), _mismatch("resolved", "propagation_race", None),
             _mismatch("resolved", "propagation_race", None)]
    one, many = CollectorRegistry(), CollectorRegistry()
    m_one, m_many = metrics.create(one, env="test"), metrics.create(many, env="test")
    for ev in batch:
        metrics.observe_event(m_one, ev)
    metrics.observe_events(m_many, batch)
    counted = {f: s for f, s in _families(one).items() if f in ("divmon_events_emitted", "divmon_mismatches")}
    assert set(counted) == {"divmon_events_emitted", "divmon_mismatches"}
    assert counted == {f: s for f, s in _families(many).items() if f in counted}
    assert _value(many, "divmon_mismatches_total", **{"class": "propagation_race"}) == 2


def test_observe_event_flips_and_sweeps(registry: CollectorRegistry) -> None:
    """A flip counts on opening with its |gap|; a sweep advances the witness counters."""
    m = metrics.create(registry, env="test")
    flip = AvailGapFlip(
        event_id="f1", version=1, env="test", positions_source="EP3", account_id="A1", threshold=Decimal(0),
        state="opened", opened_ts_ms=0, resolved_ts_ms=None, computed_avail=Decimal(-50),
        published_avail=Decimal(70), gap=Decimal(-120), og_open_orders_margin=Decimal(0),
        re_open_orders_margin=Decimal(0), og_im=None, re_im=None, equity=Decimal(1000), snapshot_age_ms=10,
        position_mismatch=False, im_delta_symbols=(), im_deltas=())
    sweep = WitnessCheck(
        event_id="s1", version=1, env="test", positions_source="EP3", kind="sweep", ts_ms=0, account_id=None,
        symbol=None, ledger_qty=None, ep3_qty=None, status=None, state=None, baseline="first",
        first_seen_ts_ms=None, confirmed_ts_ms=None, resolved_ts_ms=None, scope="p0", accounts_checked=40,
        accounts_differing=0, anomalies=0, dormant_positions=3, oldest_dormant_age_ms=900_000)
    metrics.observe_event(m, flip)
    metrics.observe_event(m, sweep)
    assert _value(registry, "divmon_avail_gap_flips_total", position_mismatch="false") == 1
    assert _value(registry, "divmon_avail_gap_abs_bucket", le="1000.0") == 1
    assert _value(registry, "divmon_avail_gap_abs_bucket", le="100.0") == 0
    assert _value(registry, "divmon_witness_sweeps_total") == 1
    assert _value(registry, "divmon_witness_accounts_checked_total") == 40
    assert _value(registry, "divmon_witness_oldest_dormant_age_seconds") == 900


def test_serve_exposes_the_registry_over_http(registry: CollectorRegistry) -> None:
    """serve() answers /metrics with the registry's exposition and can be shut down."""
    metrics.create(registry, env="test").warming.set(1)
    server, thread = metrics.serve(registry, 0, addr="127.0.0.1")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'divmon_warming{env="test"} 1.0' in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU (not wall time: sleeping costs none)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stage_clock_charges_cpu_to_the_stage_that_used_it(registry: CollectorRegistry) -> None:
    """CPU burnt in a stage is charged to it, sleeping is charged to none, and the loop-thread total
    covers every stage (what it holds beyond them is the rest of the loop)."""
    m = metrics.create(registry, env="test")
    clock = metrics.StageClock(m)
    loop_before = _value(registry, "divmon_loop_cpu_seconds_total")
    t = clock.start()
    _burn(0.05)
    t = clock.lap("decode", t)
    time.sleep(0.05)
    t = clock.lap("engine", t)
    _burn(0.02)
    clock.lap("encode", t)
    decode = _value(registry, "divmon_stage_cpu_seconds_total", stage="decode")
    engine = _value(registry, "divmon_stage_cpu_seconds_total", stage="engine")
    encode = _value(registry, "divmon_stage_cpu_seconds_total", stage="encode")
    assert 0.05 <= decode < 0.05 + 0.02
    assert engine < 0.01
    assert 0.02 <= encode < 0.02 + 0.02
    assert _value(registry, "divmon_loop_cpu_seconds_total") - loop_before >= decode + engine + encode
    for stage in metrics.STAGES:  # every stage is exposed from the start, untouched ones at 0
        assert _value(registry, "divmon_stage_cpu_seconds_total", stage=stage) >= 0


def test_build_info_says_which_engine_runs(registry: CollectorRegistry) -> None:
    """Operators can tell a compiled worker from a pure-Python one (streams/_native.py)."""
    from streams import __version__
    from streams._native import engine_build

    metrics.create(registry, env="test")
    info = next(s for fam in text_string_to_metric_families(generate_latest(registry).decode())
                for s in fam.samples if s.name == "divmon_build_info")
    assert info.labels["version"] == __version__
    assert info.labels["engine"] == engine_build()
    assert info.labels["engine"] in ("compiled", "pure", "pure (stale build)", "pure (DIVMON_PURE)")


_ages = st.lists(st.one_of(st.sampled_from(metrics.SNAPSHOT_AGE_BUCKETS),  # on a bound: that bucket
                           st.integers(-5, 900_000).map(lambda ms: ms / 1000),
                           st.floats(allow_nan=True), st.just(float("inf"))), max_size=40)


@given(values=_ages)
def test_observe_many_counts_as_observe_does(values: list[float]) -> None:
    """The worker observes a batch's snapshot ages at once: same buckets, count and sum as one by one."""
    one, many = CollectorRegistry(), CollectorRegistry()
    m_one, m_many = metrics.create(one, env="test"), metrics.create(many, env="test")
    for v in values:
        m_one.snapshot_age.observe(v)
    metrics.observe_many(m_many.snapshot_age, values)
    want, got = (f["divmon_snapshot_age_seconds"] for f in (_families(one), _families(many)))
    assert [s for s in got if not s[0].endswith(("_sum", "_created"))] == \
        [s for s in want if not s[0].endswith(("_sum", "_created"))]
    (sum_want,), (sum_got,) = ([s[2] for s in f if s[0].endswith("_sum")] for f in (want, got))
    assert sum_got == pytest.approx(sum_want, nan_ok=True)


def test_worker_metrics_observe_ages_and_end_on_the_last_source() -> None:
    """`WorkerMetrics.events`: every mismatch's snapshot age is observed, and the positions source
    is the batch's last transition (also when a later batch goes back)."""
    registry = CollectorRegistry()
    wm = WorkerMetrics(metrics.create(registry, env="test"))

    def transition(to: str) -> SourceTransition:
        return SourceTransition(event_id=to, version=1, env="test", positions_source=to, ts_ms=0,
                                from_source="", to_source=to, account_id="A1", scope="p0")

    def aged(ms: int | None) -> PositionMismatch:
        return replace(_mismatch("opened", None, None), snapshot_age_ms=ms)

    wm.events([aged(1500), transition("RISK_ENGINE"), aged(None), aged(40), transition("EP3")])
    assert _value(registry, "divmon_snapshot_age_seconds_count") == 2
    assert _value(registry, "divmon_snapshot_age_seconds_bucket", le="0.05") == 1
    assert _value(registry, "divmon_snapshot_age_seconds_bucket", le="2.0") == 2
    assert _value(registry, "divmon_positions_source", source="EP3") == 1
    assert _value(registry, "divmon_positions_source", source="RISK_ENGINE") == 0
    wm.events([transition("RISK_ENGINE")])
    wm.events([aged(700_000)])
    assert _value(registry, "divmon_positions_source", source="EP3") == 0
    assert _value(registry, "divmon_positions_source", source="RISK_ENGINE") == 1
    assert _value(registry, "divmon_snapshot_age_seconds_count") == 3
    assert _value(registry, "divmon_snapshot_age_seconds_bucket", le="600.0") == 2
    assert _value(registry, "divmon_snapshot_age_seconds_sum") == pytest.approx(701.54)


def test_engine_counters_count_each_record_once_across_rebalances() -> None:
    """`divmon_late_records_total` and `divmon_ep3_stale_total` follow the engines' counters: an
    engine restored with counts from before (its checkpoint) adds only what it counts from then on,
    and a dropped engine's counts stay counted."""
    registry = CollectorRegistry()
    wm = WorkerMetrics(metrics.create(registry, env="test"))

    def engine(**stats: int) -> SimpleNamespace:
        eng = SimpleNamespace(stats=Tally(stats), started=False, now=0, accounts={})
        return SimpleNamespace(engine=eng, stats_at_start=dict(stats), open_counts=lambda: ({}, {}))

    pipeline = SimpleNamespace(engines={0: engine(), 1: engine(late_records=5, ep3_stale=2)})
    wm.state(pipeline, 0.0, {})  # type: ignore[arg-type]
    assert _value(registry, "divmon_late_records_total") == 0
    pipeline.engines[0].engine.stats["late_records"] += 2
    pipeline.engines[1].engine.stats["late_records"] += 1
    pipeline.engines[1].engine.stats["ep3_stale"] += 3
    wm.state(pipeline, 0.0, {})  # type: ignore[arg-type]
    assert _value(registry, "divmon_late_records_total") == 3
    assert _value(registry, "divmon_ep3_stale_total") == 3
    pipeline.engines = {1: engine(late_records=6, ep3_stale=5)}  # rebalance: p0 gone, p1 restored
    wm.state(pipeline, 0.0, {})  # type: ignore[arg-type]
    assert _value(registry, "divmon_late_records_total") == 3
    pipeline.engines[1].engine.stats["late_records"] += 4
    wm.state(pipeline, 0.0, {})  # type: ignore[arg-type]
    assert _value(registry, "divmon_late_records_total") == 7
    assert _value(registry, "divmon_ep3_stale_total") == 3
    pipeline.engines[0] = engine(late_records=2)  # p0 back, restored from its checkpoint
    wm.state(pipeline, 0.0, {})  # type: ignore[arg-type]
    pipeline.engines[0].engine.stats["late_records"] += 1
    wm.state(pipeline, 0.0, {})  # type: ignore[arg-type]
    assert _value(registry, "divmon_late_records_total") == 8
    assert set(wm._counted["late_records"]) == {0, 1}
