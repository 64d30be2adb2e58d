"""The traffic simulator: deterministic, ordered, contract-valid, and its faults are the only
unexplained events a replay of the simulated day produces (the "realistic day" golden scenario)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.core.events import UNEXPLAINED_CLASSES, Event
from streams.core.params import EngineConfig
from streams.core.records import Feed, Fill, parse_value, record_to_value
from streams.sim import FAULT_KINDS, SimConfig, ground_truth, simulate
from streams.sim.writers import Pacer, json_serializer, produce, write_tape
from streams.tapes.model import TapeRecord
from streams.tapes.replay import ReplayResult, open_tape, run

# The realistic day: ten compressed minutes, every fault, heavy race noise. Fixed seed.
DAY = SimConfig(seed=20260509, accounts=80, duration_ms=600_000)
SMALL = SimConfig(seed=3, accounts=24, duration_ms=180_000)
Key = tuple[str, str | None, str | None, str, bool]


def replay_day(cfg: SimConfig, tmp: Path | None = None) -> ReplayResult:
    """Replay the day; with `tmp`, through a JSON Lines tape exactly as `divmon replay` would."""
    engine_cfg = EngineConfig(grace_ms=cfg.grace_ms)
    if tmp is None:
        return run((TapeRecord(ts, feed, rec, "") for feed, ts, rec in simulate(cfg)), engine_cfg)
    tape = tmp / f"day-{cfg.seed}.jsonl"
    write_tape(simulate(cfg), tape)
    return run(open_tape(tape), engine_cfg)


def observed(events: list[Event]) -> dict[Key, int]:
    """Unexplained and attributable events keyed like `Expect`, with the time they were first seen."""
    out: dict[Key, int] = {}
    for ev in events:
        d = ev.to_dict()
        resolved = d.get("resolved_ts_ms") is not None
        if ev.TYPE == "position_mismatch" and d["class"] in UNEXPLAINED_CLASSES:
            out[(ev.TYPE, d["account_id"], d["symbol"], d["class"], resolved)] = d["first_seen_ts_ms"]
        elif ev.TYPE == "witness_check" and d["kind"] == "anomaly":
            out[(ev.TYPE, d["account_id"], d["symbol"], d["status"], resolved)] = d["first_seen_ts_ms"]
        elif ev.TYPE == "avail_gap_flip":
            out[(ev.TYPE, d["account_id"], None, str(d["position_mismatch"]).lower(), resolved)] = d["opened_ts_ms"]
        elif ev.TYPE == "unvaluable":
            out[(ev.TYPE, d["account_id"], d["symbol"], d["source"], resolved)] = d["first_seen_ts_ms"]
    return out


def expected(cfg: SimConfig) -> dict[Key, int]:
    return {(x.event_type, x.account_id, x.symbol, x.label, bool(x.resolved)): x.at_ms or f.start_ms
            for f in ground_truth(cfg) for x in f.expected
            if x.event_type not in ("source_transition",) and x.label != "propagation_race"}


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    return replay_day(DAY, tmp_path_factory.mktemp("sim"))


def test_same_seed_same_records_other_seed_other_records() -> None:
    """The seed fully determines the day."""
    first = list(simulate(SMALL))
    assert first == list(simulate(SMALL))
    other = SimConfig(seed=4, accounts=SMALL.accounts, duration_ms=SMALL.duration_ms)
    assert first != list(simulate(other))


def test_records_are_in_ts_order_and_pass_the_contract() -> None:
    """Every record survives serialisation and `parse_value` unchanged, in non-decreasing ts_ms."""
    last = SMALL.start_ms
    feeds: Counter[Feed] = Counter()
    for feed, ts, record in simulate(SMALL):
        assert ts >= last
        last = ts
        assert parse_value(feed, json.loads(json.dumps(record_to_value(record)))) == record
        feeds[feed] += 1
    assert set(feeds) == set(Feed)
    assert SMALL.start_ms <= last < SMALL.end_ms


def test_stream_is_lazy() -> None:
    """The day is generated on demand: taking a prefix of a very long day is cheap."""
    long_day = SimConfig(accounts=50, duration_ms=30 * 86_400_000)
    assert len(list(itertools.islice(simulate(long_day), 5_000))) == 5_000


def test_realistic_day_unexplained_events_are_exactly_the_injected_faults(day: ReplayResult) -> None:
    """Unexplained mismatches, witness anomalies, flips and unvaluable positions match ground truth."""
    got, want = observed(day.final_events()), expected(DAY)
    assert set(got) == set(want)
    for key, start in want.items():
        assert start <= got[key] <= start + DAY.og_interval_ms + DAY.grace_ms, key


def test_realistic_day_is_noisy_with_races(day: ReplayResult) -> None:
    """Race noise is heavy, and comes from both sides."""
    races = [e for e in day.final_events() if e.TYPE == "position_mismatch" and e.to_dict()["class"] ==
             "propagation_race"]
    assert len(races) > 2_000
    fresher = Counter(e.to_dict()["fresher"] for e in races)
    assert fresher["EP3"] > fresher["RE"] > 100


def test_realistic_day_witness_only_drop_shows_as_race_plus_anomaly(day: ReplayResult) -> None:
    """The drop RE shares is a race on the comparison but an open anomaly for the witness."""
    fault = next(f for f in ground_truth(DAY) if f.kind == "witness_only_drop")
    races = {(e.to_dict()["account_id"], e.to_dict()["symbol"]) for e in day.final_events()
             if e.TYPE == "position_mismatch" and e.to_dict()["class"] == "propagation_race"}
    assert (fault.account_id, fault.symbol) in races


def test_realistic_day_source_flips_and_stale_seqs(day: ReplayResult) -> None:
    """The gateway's source goes RE -> EP3 -> RE at the injected times; duplicates are counted only."""
    flip = next(f for f in ground_truth(DAY) if f.kind == "source_flip")
    assert flip.end_ms is not None
    window = DAY.og_interval_ms * 11 // 10 + 1
    moves: dict[str | None, list[str]] = {}
    for t in (e.to_dict() for e in day.final_events() if e.TYPE == "source_transition"):
        if t["from_source"] == "UNKNOWN":
            assert t["to_source"] == "RISK_ENGINE"
            continue
        moves.setdefault(t["account_id"], []).append(t["to_source"])
        at = flip.start_ms if t["to_source"] == "EP3" else flip.end_ms
        assert at <= t["ts_ms"] < at + window
    assert moves and all(m == ["EP3", "RISK_ENGINE"] for m in moves.values())
    assert day.stats["ep3_stale"] == sum(f.stale_ep3 for f in ground_truth(DAY))
    bookmarks = DAY.accounts + sum(f.kind == "bookmark" for f in ground_truth(DAY))  # one after each snapshot
    assert day.stats["ep3_bookmark"] == bookmarks


@pytest.mark.parametrize("faults", [(), ("phantom", "missing_mark"), ("dropped_dormant",)])
def test_fault_subsets_produce_only_their_events(faults: tuple[str, ...]) -> None:
    """Without a fault its events vanish: nothing unexplained comes from traffic alone."""
    cfg = SimConfig(seed=11, accounts=30, duration_ms=240_000, faults=faults)
    result = replay_day(cfg)
    assert set(observed(result.final_events())) == set(expected(cfg))


def test_ground_truth_lists_every_kind_in_time_order() -> None:
    faults = ground_truth(DAY)
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    assert [f.start_ms for f in faults] == sorted(f.start_ms for f in faults)
    assert all(DAY.start_ms <= f.start_ms < DAY.end_ms for f in faults)


def test_config_refuses_noise_that_would_outlive_grace() -> None:
    with pytest.raises(ValueError, match="grace"):
        SimConfig(re_burst_lag_ms=(600, 2_500))
    with pytest.raises(ValueError, match="unknown fault"):
        SimConfig(faults=("nope",))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.full_once = True

    def produce(self, topic: str, **kw: Any) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError
        self.sent.append({"topic": topic, **kw})

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self) -> int:
        return 0


def test_produce_keys_by_account_or_symbol_and_retries_a_full_queue() -> None:
    producer = FakeProducer()
    records = list(itertools.islice(simulate(SMALL), 400))
    n = produce(records, producer, json_serializer, {f: "t." + f.value for f in Feed})
    assert n == len(producer.sent) == 400
    fill = next(m for m in producer.sent if m["topic"] == "t.fills")
    assert json.loads(fill["value"])["account_id"] == fill["key"].decode()
    mark = next(m for m in producer.sent if m["topic"] == "t.marks")
    assert json.loads(mark["value"])["symbol"] == mark["key"].decode()


def test_pacer_sleeps_event_time_divided_by_speed() -> None:
    now, slept = [100.0], []
    pacer = Pacer(10.0, clock=lambda: now[0], sleep=slept.append)
    pacer.wait_until(1_000)
    pacer.wait_until(21_000)
    assert slept == [pytest.approx(2.0)]
    Pacer(0.0, clock=lambda: now[0], sleep=slept.append).wait_until(99_000)
    assert len(slept) == 1


def test_cli_writes_a_tape_and_rejects_bad_usage(tmp_path: Path) -> None:
    tape, truth = tmp_path / "d.jsonl", tmp_path / "gt.json"
    runner = CliRunner()
    ok = runner.invoke(main, ["simulate", "--tape", str(tape), "--accounts", "20", "--duration", "120",
                              "--ground-truth", str(truth), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    lines = tape.read_text().splitlines()
    assert len(lines) > 1_000 and json.loads(lines[0])["topic"] == "instruments"
    assert {f["kind"] for f in json.loads(truth.read_text())} == set(FAULT_KINDS)
    assert runner.invoke(main, ["simulate"]).exit_code == 2
    assert runner.invoke(main, ["simulate", "--tape", str(tape), "--to", "x:1"]).exit_code == 2
    assert runner.invoke(main, ["simulate", "--tape", str(tape), "--faults", "bogus"]).exit_code == 2


def test_avro_encoding_round_trips_every_feed() -> None:
    """With --encoding avro every simulated record encodes (no decimal exceeds the schema) and decodes."""
    from streams.codec import input_codecs
    from streams.sim.writers import avro_serializer

    serialize, codecs = avro_serializer(), input_codecs()
    for feed, _, record in itertools.islice(simulate(SMALL), 3_000):
        assert codecs[feed].decode(serialize(feed, record)) == record


def test_fill_ids_are_unique() -> None:
    ids = [r.fill_id for _, _, r in simulate(SMALL) if isinstance(r, Fill)]
    assert len(ids) == len(set(ids)) > 10
