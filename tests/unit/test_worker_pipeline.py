"""The batch pipeline without Kafka: parity with the replay, restore after a crash, dead letters."""

from __future__ import annotations

import itertools
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import input_codecs
from streams.core.events import Event
from streams.core.params import EngineConfig
from streams.core.records import Feed
from streams.tapes import replay
from streams.tapes.model import TapeRecord
from streams.worker.partition import ACCOUNT_FEEDS, GLOBAL_FEEDS, PartitionEngine
from streams.worker.pipeline import Checkpoint, Pipeline, Raw
from streams.worker.synth import traffic
from tests.support.stores import DictStore

PARTITIONS = 3
VERDICT_TYPES = {"position_mismatch", "avail_gap_flip", "unvaluable"}
TOPICS = {f: f.value for f in Feed}


def partition_of(rec: TapeRecord) -> int:
    if rec.feed in GLOBAL_FEEDS:
        return 0
    return zlib.crc32(rec.record.account_id.encode()) % PARTITIONS  # type: ignore[union-attr]


def to_topics(records: list[TapeRecord]) -> dict[tuple[str, int], list[Raw]]:
    codecs = input_codecs()
    out: dict[tuple[str, int], list[Raw]] = defaultdict(list)
    for rec in records:
        tp = (TOPICS[rec.feed], partition_of(rec))
        out[tp].append((len(out[tp]), rec.ts_ms, None, codecs[rec.feed].encode(rec.record)))
    return out


def new_pipeline(store: DictStore, idle_ms: int = 2_000, clock_idle_ms: int | None = None) -> Pipeline:
    return Pipeline(TOPICS, input_codecs(), lambda p: EngineConfig(scope=f"p{p}"), store, idle_ms, clock_idle_ms)


def drive(pipe: Pipeline, topics: dict[tuple[str, int], list[Raw]], start: dict[tuple[str, int], int],
          chunk: int, stop_after: int | None = None, now: float = 0.0, tick_ms: float = 100,
          every: int = 3, limit: int | None = None
          ) -> tuple[list[Event], Checkpoint | None, dict[tuple[str, int], int]]:
    """Deliver round-robin chunks per topic-partition, stepping and checkpointing like the worker
    (with a `limit`, steps are bounded to it and repeated, as the worker's ticks are, while a
    backlog is left).

    Wall time (`now`, ms) moves 100 ms a round, so an exhausted partition goes idle after 20 rounds."""
    pos = dict(start)
    events: list[Event] = []
    last: Checkpoint | None = None
    rounds = 0
    while any(pos[tp] < len(raws) for tp, raws in topics.items()):
        for tp, raws in topics.items():
            batch = raws[pos[tp]:pos[tp] + chunk]
            pos[tp] += len(batch)
            assert pipe.ingest(tp[0], tp[1], batch, now) == []
        now += tick_ms
        events.extend(pipe.step(now, limit))
        rounds += 1
        if rounds % every == 0:
            last = stored(pipe, pipe.checkpoint())
        if stop_after is not None and rounds >= stop_after:
            return events, last, pos
    now += 20_000
    events.extend(pipe.step(now, limit))
    while pipe.backlog:
        events.extend(pipe.step(now, limit))
    return events, stored(pipe, pipe.checkpoint()), pos


def stored(pipe: Pipeline, cp: Checkpoint) -> Checkpoint:
    """What the commit gate does once a checkpoint's events are stored: write its state."""
    assert pipe.write_state(cp) == []
    return cp


def latest(events: Iterable[Event]) -> dict[str, Event]:
    out: dict[str, Event] = {}
    for e in events:
        if e.event_id not in out or e.version >= out[e.event_id].version:
            out[e.event_id] = e
    return out


def verdicts(events: dict[str, Event]) -> dict[str, dict[str, object]]:
    """Per-account verdicts in their final state. Witness anomaly rows carry the engine's `scope`
    (the worker's partition, the replay's "all"): that one field is scope-dependent, not compared."""
    out: dict[str, dict[str, object]] = {}
    for k, e in events.items():
        if e.TYPE in VERDICT_TYPES or (e.TYPE == "witness_check" and getattr(e, "kind", "") == "anomaly"):
            row = e.to_dict()
            row.pop("scope", None)
            out[k] = row
    return out


@pytest.fixture(scope="module")
def tape() -> list[TapeRecord]:
    return traffic(n_accounts=30, n_fills=1_500, seed=3)


@pytest.fixture(scope="module")
def expected(tape: list[TapeRecord]) -> dict[str, dict[str, object]]:
    return verdicts(replay.run(iter(tape), EngineConfig()).events)


@pytest.mark.parametrize("chunk", [1, 7, 500])
def test_partitioned_pipeline_gives_the_replays_verdicts(tape: list[TapeRecord], expected: dict[str, dict[str, object]],
                                                         chunk: int) -> None:
    """One engine per partition, fed in arbitrary chunks, yields exactly the replay's verdicts."""
    topics = to_topics(tape)
    events, _, _ = drive(new_pipeline(DictStore()), topics, dict.fromkeys(topics, 0), chunk)
    got = verdicts(latest(events))
    assert len(expected) > 50
    assert got == expected


@pytest.mark.parametrize("limit", [1, 40])
def test_bounded_steps_give_the_replays_verdicts(tape: list[TapeRecord], expected: dict[str, dict[str, object]],
                                                 limit: int) -> None:
    """Engines that apply at most `limit` records a step (the worker's ticks), and so lag behind
    their watermark for most of the run, still yield exactly the replay's verdicts."""
    topics = to_topics(tape)
    pipe = new_pipeline(DictStore())
    events, _, _ = drive(pipe, topics, dict.fromkeys(topics, 0), 50, limit=limit)
    assert verdicts(latest(events)) == expected
    assert not pipe.backlog and pipe.pending() == 0


def test_restore_after_a_crash_resumes_from_committed_offsets(tape: list[TapeRecord],
                                                              expected: dict[str, dict[str, object]]) -> None:
    """A new pipeline restored from the store and fed from the checkpoint's offsets loses nothing,
    and applies nothing twice: its engines exist before the shared logs are declared (the first
    records fetched are an account partition's), and they resume those logs at their checkpoint's
    cursors, not at 0 (which re-applied every earlier mark and instrument, late)."""
    topics = to_topics(tape)
    store = DictStore()
    first, cp, _ = drive(new_pipeline(store), topics, dict.fromkeys(topics, 0), 20, stop_after=30)
    assert cp is not None and sum(cp.offsets.values()) > 0  # mid-stream, past the start-up hold
    start = {tp: cp.offsets.get(tp, 0) for tp in topics}
    start = {tp: (0 if tp[0] in ("marks", "instruments") else o) for tp, o in start.items()}
    restored = new_pipeline(store)
    accounts_first = dict(sorted(topics.items(), key=lambda kv: kv[0][0] in ("marks", "instruments")))
    second, _, _ = drive(restored, accounts_first, start, 20)
    assert verdicts(latest(first + second)) == expected
    assert {p: pe.engine.stats["late_records"] for p, pe in restored.engines.items()} == \
        dict.fromkeys(restored.engines, 0)


def test_restored_engines_need_the_shared_logs_only_from_their_lowest_cursor(
        tape: list[TapeRecord], expected: dict[str, dict[str, object]]) -> None:
    """The worker starts reading a shared log at `global_start` (the lowest cursor its engines
    restored), not at the beginning: so a restart re-reads none of the history, and a cursor the
    broker no longer holds is a read out of range, which the worker counts as lost input. Fed from
    there, the restored engines still give the replay's verdicts."""
    topics = to_topics(tape)
    store = DictStore()
    first, cp, _ = drive(new_pipeline(store), topics, dict.fromkeys(topics, 0), 20, stop_after=30)
    assert cp is not None
    restored = new_pipeline(store)
    for p in range(PARTITIONS):
        restored.engine(p, 0.0)
    assert restored.global_start("instruments", 0) == min(pe.cursors["instruments/0"]
                                                          for pe in restored.engines.values())
    starts = {tp: restored.global_start(*tp) for tp in topics if tp[0] in ("marks", "instruments")}
    assert 0 < starts[("marks", 0)] < len(topics[("marks", 0)])  # mid-log: the history before is not needed
    for (topic, partition), offset in starts.items():
        restored.declare(topic, partition, 0.0, offset)
    start = {tp: starts.get(tp, cp.offsets.get(tp, 0)) for tp in topics}
    second, _, _ = drive(restored, topics, start, 20)
    assert verdicts(latest(first + second)) == expected
    assert {p: pe.engine.stats["late_records"] for p, pe in restored.engines.items()} == \
        dict.fromkeys(restored.engines, 0)
    assert new_pipeline(DictStore()).global_start("marks", 0) == 0  # no engine: from the beginning


def test_partial_checkpoint_does_not_apply_fills_twice(tape: list[TapeRecord],
                                                       expected: dict[str, dict[str, object]]) -> None:
    """Accounts written by a checkpoint whose meta row never landed skip what they already hold."""
    topics = to_topics(tape)
    store = DictStore()
    pipe = new_pipeline(store)
    first, cp, pos = drive(pipe, topics, dict.fromkeys(topics, 0), 10, stop_after=30)
    assert cp is not None
    before = {p: dict(rows) for p, rows in store.data.items()}
    more, _, _ = drive(pipe, topics, pos, 10, stop_after=15, now=3_000)
    ahead = [r for p, rows in store.data.items() for k, r in rows.items() if before[p].get(k) != r]
    assert len(ahead) > 10
    for p, rows in store.data.items():  # keep the newer account rows, roll every meta row back
        for key in rows:
            if key.startswith("\x00"):
                rows[key] = before[p][key]
    start = {tp: (0 if tp[0] in ("marks", "instruments") else cp.offsets.get(tp, 0)) for tp in topics}
    second, _, _ = drive(new_pipeline(store), topics, start, 10, now=4_500)
    assert verdicts(latest(first + more + second)) == expected


def test_a_checkpoint_lost_in_a_crash_is_derived_again(tape: list[TapeRecord],
                                                      expected: dict[str, dict[str, object]]) -> None:
    """The worker dies after a checkpoint was cut and its events produced, before they were stored:
    its state was never written (the gate writes state only after the events), so the next owner
    restores the previous checkpoint and derives the lost events again, with the same ids."""
    topics = to_topics(tape)
    store = DictStore()
    pipe = new_pipeline(store)
    delivered: list[Event] = []
    offsets: dict[tuple[str, int], int] = {}
    pos = dict.fromkeys(topics, 0)
    now = 0.0
    for rounds in range(1, 40):
        for tp, raws in topics.items():
            pipe.ingest(tp[0], tp[1], raws[pos[tp]:pos[tp] + 10], now)
            pos[tp] = min(len(raws), pos[tp] + 10)
        now += 100
        pipe.step(now)
        if rounds % 3 == 0:
            cp = pipe.checkpoint()
            if rounds == 39:  # the crash: produced, not stored, state not written
                assert cp.state and any(e.TYPE in VERDICT_TYPES for e in cp.events)
                break
            delivered += stored(pipe, cp).events
            offsets = cp.offsets
    start = {tp: (0 if tp[0] in ("marks", "instruments") else offsets.get(tp, 0)) for tp in topics}
    second, _, _ = drive(new_pipeline(store), topics, start, 10, now=now + 1_500)
    assert verdicts(latest(delivered + second)) == expected


def bursts(pipe: Pipeline, topics: dict[tuple[str, int], list[Raw]], bounds: list[int], now: float,
           crash_after: int | None = None) -> tuple[list[Event], Checkpoint | None, float]:
    """Feed the records with ts in [bounds[i], bounds[i+1]) of every input as one burst, then let
    every input go idle (so all held records are released) and cut a checkpoint."""
    events: list[Event] = []
    cp = None
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        for tp, raws in topics.items():
            batch = [r for r in raws if lo <= r[1] < hi]
            if batch:
                assert pipe.ingest(tp[0], tp[1], batch, now) == []
        for _ in range(3):
            now += 600
            events.extend(pipe.step(now))
        now += 3_000  # > idle_ms: every lane is idle, the last instant is applied, not settled
        events.extend(pipe.step(now))
        cp = stored(pipe, pipe.checkpoint())
        if crash_after is not None and i == crash_after:
            break
    return events, cp, now


def test_checkpoints_taken_while_every_input_is_idle_restore_exactly(
        tape: list[TapeRecord], expected: dict[str, dict[str, object]]) -> None:
    """Input comes in bursts with pauses longer than idle_ms: after each burst every lane is idle,
    every held record is released and the last instant stays applied but unsettled when the
    checkpoint is cut. The next owner must settle it exactly as the first would have."""
    topics = to_topics(tape)
    stamps = sorted({r.ts_ms for r in tape})
    bounds = [*stamps[::len(stamps) // 12], stamps[-1] + 1]
    store = DictStore()
    pipe = new_pipeline(store, clock_idle_ms=10**9)  # event time never follows the wall clock here
    first, cp, now = bursts(pipe, topics, bounds, 0.0, crash_after=6)
    assert cp is not None and any(pe.engine.unsettled() for pe in pipe.engines.values())
    restored = new_pipeline(store, clock_idle_ms=10**9)
    for tp, raws in topics.items():  # re-delivered from the committed offsets (globals: from 0)
        start = 0 if tp[0] in ("marks", "instruments") else cp.offsets.get(tp, 0)
        restored.ingest(tp[0], tp[1], [r for r in raws[start:] if r[1] < bounds[7]], now)
    second, _, now = bursts(restored, topics, bounds[7:], now)
    second.extend(restored.step(now + 200_000))
    assert verdicts(latest(first + second)) == expected


@pytest.mark.parametrize(("globals_too", "held_at"), [(False, "accounts"), (True, "instrument")])
def test_backpressure_pause_leaves_the_shared_logs_idle(globals_too: bool, held_at: str) -> None:
    """After a backpressure pause only the paused account inputs count as live again: an instrument
    log idle for hours must not pin every engine's watermark to its timestamp (after a rebalance
    it does, for idle_ms, since the shared logs were not read meanwhile). The accounts stay live
    throughout, so this is not the wake-up after a quiet spell (where every lane holds for idle_ms)."""
    pipe = new_pipeline(DictStore())
    codecs = input_codecs()
    sample = {r.feed: r for r in traffic(4, 20) if r.feed in ACCOUNT_FEEDS or r.feed is Feed.INSTRUMENTS}
    t0 = sample[Feed.INSTRUMENTS].ts_ms
    pipe.ingest("instruments", 0, [(0, t0, None, codecs[Feed.INSTRUMENTS].encode(sample[Feed.INSTRUMENTS].record))],
                0.0)
    for feed in ACCOUNT_FEEDS:
        pipe.ingest(TOPICS[feed], 0, [(0, t0 + 5_000, None, codecs[feed].encode(sample[feed].record))], 19_000.0)
    pipe.step(20_000.0)  # the instrument log idle, the accounts live: its record released
    aligner = pipe.engines[0].aligner
    assert aligner.watermark(20_000.0) == t0 + 5_000
    pipe.resume(20_000.0, globals_too=globals_too)
    assert aligner.watermark(21_200.0) == (t0 + 5_000 if held_at == "accounts" else t0)


def test_a_partition_delivered_twice_in_one_batch_is_applied_once(
        tape: list[TapeRecord], expected: dict[str, dict[str, object]]) -> None:
    """After a hand-over a partition's records can reach the pipeline twice in one batch (fetched
    from the resume position, then again after the seek to the committed offset): every record is
    still applied exactly once, in order, and the verdicts are the replay's."""
    topics = to_topics(tape)
    doubled = {tp: raws[:40] + raws for tp, raws in topics.items()}
    pipe = new_pipeline(DictStore())
    for tp, raws in doubled.items():
        assert pipe.ingest(tp[0], tp[1], raws, 0.0) == []
    events = pipe.step(100_000.0)
    assert pipe.engines[0].lanes[Feed.EP3].pending() == 0
    assert verdicts(latest(events + pipe.step(200_000.0))) == expected


def test_poison_records_become_dead_letters_and_the_rest_flows() -> None:
    """Undecodable bytes and contract violations are dead letters with the codec's reason."""
    pipe = new_pipeline(DictStore())
    codecs = input_codecs()
    bad_contract = codecs[Feed.FILLS].encode_value({"fill_id": "", "account_id": "A", "symbol": "X",
                                                    "qty": "1", "price": "1", "ts_ms": 1})
    good = next(r for r in traffic(2, 3) if r.feed is Feed.FILLS)
    raws: list[Raw] = [(0, 1, b"k", b"garbage"), (1, 2, None, bad_contract),
                       (2, good.ts_ms, None, codecs[Feed.FILLS].encode(good.record))]
    dead = pipe.ingest("fills", 0, raws, 0.0)
    assert [(d.offset, d.reason) for d in dead] == [(0, "bad_magic"), (1, "contract")]
    assert pipe.engines[0].lanes[Feed.FILLS].pending() == 1
    assert pipe.engines[0].lanes[Feed.FILLS].next_offset == 3


def test_worker_app_creates_its_data_directory_with_parents(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A fresh checkout has no ./var: the app makes the whole data directory path itself."""
    from streams.agents.app import create_app
    from streams.config import Settings

    target = tmp_path / "a" / "b" / "divmon"
    create_app(Settings.load({"data_dir": str(target), "web_port": 0}, environ={}))
    assert target.is_dir()


def test_state_rows_are_the_compact_json_of_each_account_and_read_back_as_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoint rows are compact JSON equal to json.dumps' with decimals as their text (non-ASCII as
    UTF-8, not \\u escapes), so
    a store written by an earlier version, or by this one, restores the same engine state."""
    import json

    from streams.worker import pipeline

    written: list[tuple[object, bytes]] = []
    encode = pipeline.encode_row

    def recording(value: object) -> bytes:
        row = encode(value)
        written.append((value, row))
        return row

    monkeypatch.setattr(pipeline, "encode_row", recording)
    topics = to_topics(list(traffic(n_accounts=12, n_fills=150, seed=3)))
    store = DictStore()
    drive(new_pipeline(store), topics, dict.fromkeys(topics, 0), 25)
    assert sum(len(store.rows(p)) for p in range(PARTITIONS)) > 12  # every account, and meta rows
    assert sum(b'"account_id":"A' in row for _, row in written) >= 12  # each account's state, at least once
    for value, row in written:
        assert row == json.dumps(value, separators=(",", ":"), default=str).encode()  # all ASCII here
    accent = {"account_id": "Zoë", "ep3": {"BTC-PERP": "1.5"}}
    assert json.loads(encode(accent)) == json.loads(json.dumps(accent)) == accent


def _pool(feed: Feed) -> list[bytes | None]:
    """Values of `feed`'s topic: valid records, and every kind of poison the general path sorts out."""
    codecs = input_codecs()
    codec = codecs[feed]
    valid = [codec.encode(r.record) for r in traffic(n_accounts=6, n_fills=40, seed=9) if r.feed is feed][:12]
    other = Feed.MARKS if feed is not Feed.MARKS else Feed.FILLS
    foreign = codecs[other].encode(next(r.record for r in traffic(2, 3) if r.feed is other))
    empty_id = {"account_id": ""} if feed is not Feed.FILLS else {"fill_id": ""}
    violating = codec.encode_value({**codec.decode_value(valid[0]), **empty_id})
    return [*valid, b"garbage", b"", None, valid[0] + b"\x00", valid[1][:-1], foreign, violating,
            b"\x00\x00\x00\x00\x01" + valid[2][10:]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed=st.sampled_from(ACCOUNT_FEEDS), start=st.integers(0, 4),
       picks=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from((1, 1, 1, 1, 2, 0, -3))), max_size=40))
def test_the_batch_loop_gives_what_the_general_path_gives(feed: Feed, start: int,
                                                          picks: list[tuple[int, int]]) -> None:
    """The C batch loop (`Codec.entries`) keeps, decodes and dead-letters exactly as the general
    path does, record for record: same entries in the same order, same dead letters with the same
    reasons, same end offset and count, for any mix of valid records and poison and for offsets that
    repeat (a partition delivered twice in one batch) or skip."""
    pool = _pool(feed)
    raws: list[Raw] = []
    offset = 0
    for i, (pick, step) in enumerate(picks):
        offset = max(0, offset + step)
        raws.append((offset, 1_000 + i, b"A1", pool[pick % len(pool)]))
    pipe = new_pipeline(DictStore())
    assert input_codecs()[feed].entries([(0, 1, None, pool[0])], 0, feed) is not None  # the C loop runs here
    got: list[tuple[list[object], int]] = []
    want: list[tuple[list[object], int]] = []
    got_dead = pipe._decode(feed, feed.value, 0, raws, start, lambda e, end: got.append((list(e), end)))
    counted = pipe.consumed[feed]
    want_dead = pipe._decode_each(feed, feed.value, 0, raws, start, lambda e, end: want.append((list(e), end)))
    assert got == want
    assert got_dead == want_dead
    assert counted == pipe.consumed[feed] - counted


def _full_count(pe: PartitionEngine) -> tuple[dict[str, int], dict[str, int]]:
    """Open episodes by class and anomalies by status, counted over every account."""
    mm: Counter[str] = Counter()
    an: Counter[str] = Counter()
    for acct in pe.engine.accounts.values():
        mm.update(ep.cls or "" for ep in acct.mismatches.values())
        an.update(a.status for a in acct.anomalies.values() if a.status)
    return dict(mm), dict(an)


@pytest.mark.parametrize(("checkpoint_every", "count_every"), [(3, 2), (2, 5), (1, 1), (7, 3)])
def test_the_open_counts_kept_by_checkpoints_equal_a_count_of_every_account(
        tape: list[TapeRecord], checkpoint_every: int, count_every: int) -> None:
    """The worker's open-mismatch and open-anomaly gauges come from counts each partition engine
    keeps with its checkpoints, from the accounts they write: whenever they are read, they equal a
    count over every account at the last checkpoint. The tape comes in two halves with a quiet
    spell after each: every input idle, event time stays at the last instant, whose accounts settle
    (untouched) only when the next half moves it on."""
    topics = to_topics(tape)
    pipe = new_pipeline(DictStore(), clock_idle_ms=10**9)  # event time never follows the wall clock
    now, rounds = 0.0, 0
    at_checkpoint: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
    seen: tuple[Counter[str], Counter[str]] = (Counter(), Counter())

    def checkpoint() -> None:
        stored(pipe, pipe.checkpoint())
        for p, pe in pipe.engines.items():
            at_checkpoint[p] = _full_count(pe)
            if rounds == checkpoint_every:
                pe.open_counts()  # the first read (every account), from then on kept

    def check() -> None:
        for p, pe in pipe.engines.items():
            mm, an = pe.open_counts()
            got = ({k: v for k, v in mm.items() if v}, {k: v for k, v in an.items() if v})
            assert got == at_checkpoint[p]
            seen[0].update(got[0])
            seen[1].update(got[1])

    for half in (0, 1):
        pos = {tp: len(raws) // 2 * half for tp, raws in topics.items()}
        end = {tp: len(raws) if half else len(raws) // 2 for tp, raws in topics.items()}
        while any(pos[tp] < end[tp] for tp in topics):
            for tp, raws in topics.items():
                batch = raws[pos[tp]:min(pos[tp] + 7, end[tp])]
                pos[tp] += len(batch)
                pipe.ingest(tp[0], tp[1], batch, now)
            now += 100
            pipe.step(now)
            rounds += 1
            if rounds % checkpoint_every == 0:
                checkpoint()
            if rounds % count_every == 0 and at_checkpoint:
                check()
        now += 20_000
        pipe.step(now)  # every input idle: all released, the last instant left unsettled
        checkpoint()
        check()
    # along the way: episodes unclassified and classified, witness anomalies of every status
    assert seen[0][""] and seen[0]["persistent"] and set(seen[1]) == {"mismatch", "never_in_cache", "phantom"}


def test_quiet_once_every_input_is_idle_and_all_it_delivered_is_applied(tape: list[TapeRecord]) -> None:
    """`quiet` (the worker then checkpoints and commits at once) only when nothing is on its way:
    not while an input is live, nor while a bounded step left records below the watermark."""
    topics = to_topics(tape)
    pipe = new_pipeline(DictStore(), idle_ms=2_000)
    assert not pipe.quiet  # no engine yet
    for tp, raws in topics.items():
        assert pipe.ingest(tp[0], tp[1], raws, 0.0) == []
    pipe.step(500.0)
    assert not pipe.quiet and pipe.pending() > 0  # the inputs are live: the last instants are held
    pipe.step(2_500.0, limit=50)  # every input idle, but a bounded step leaves most of the input
    assert pipe.backlog and not pipe.quiet
    while pipe.backlog:
        pipe.step(2_500.0, limit=50)
    assert pipe.quiet and pipe.pending() == 0
    first = next(iter(topics))
    pipe.ingest(first[0], first[1], [(len(topics[first]), tape[-1].ts_ms + 1, None, topics[first][-1][3])], 2_600.0)
    pipe.step(2_700.0)  # a record arrives: that input is live again
    assert not pipe.quiet
