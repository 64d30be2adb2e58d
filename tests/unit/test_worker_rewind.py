"""An account input's log replaced under the worker (its topic deleted and made again): the engine
reads the new log from its start, with that log's offsets, and its checkpoints restore exactly,
even one cut short by a crash. Without the rewind the new log's first records (offsets the old log
had already passed) were taken for records read before and dropped without a trace."""

from __future__ import annotations

import json

from streams.core.records import Feed
from streams.tapes.model import TapeRecord
from streams.worker.partition import meta_key
from streams.worker.pipeline import Pipeline, Raw
from streams.worker.reorder import AccountLane
from tests.support.stores import DictStore
from tests.unit import test_worker_pipeline as pipeline_tests
from tests.unit.test_worker_pipeline import PARTITIONS, drive, latest, new_pipeline, to_topics, verdicts

FILLS = Feed.FILLS.value
CUT = 0.8  # where the fills topic is made again: at this share of the fills' time span
# a pipeline whose event time never follows the wall clock here: between the two parts every input is
# idle (its records all applied), and the second part's records must not come after event time moved
# on (in the worker an input whose topic is gone is never idle: no fetch response says that the
# broker has nothing more for it, so event time waits for it)
CLOCK_IDLE_MS = 600_000
# (after the quiet spell between the parts, event time waits `idle_ms` (20 rounds) for every input
# to deliver again: the engines apply the second part from the 21st round on)

Topics = dict[tuple[str, int], list[Raw]]
tape = pipeline_tests.tape  # fixtures: the pipeline tests' tape, and the replay's verdicts of it
expected = pipeline_tests.expected


def pipeline(store: DictStore) -> Pipeline:
    return new_pipeline(store, clock_idle_ms=CLOCK_IDLE_MS)


def split(tape: list[TapeRecord]) -> tuple[Topics, Topics, dict[tuple[str, int], int]]:
    """Every input up to the cut (the fills topic's old log), and the whole of each input, with each
    fills partition's records from the cut on numbered from 0 again (the new log, as a topic made
    again numbers them); and where each input's second part starts."""
    topics = to_topics(tape)
    fills = [r.ts_ms for r in tape if r.feed is Feed.FILLS]
    cut = fills[0] + int((fills[-1] - fills[0]) * CUT)
    first, whole, start = {}, dict(topics), {}
    for tp, raws in topics.items():
        n = sum(1 for r in raws if r[1] < cut)
        first[tp] = raws[:n]
        start[tp] = n
        if tp[0] == FILLS:
            whole[tp] = [(i, ts, key, value) for i, (_, ts, key, value) in enumerate(raws[n:])]
            start[tp] = 0
    return first, whole, start


def through_the_old_logs(tape: list[TapeRecord], store: DictStore) -> tuple[Pipeline, list, Topics, dict]:
    """A pipeline fed every input up to the cut, its state stored; the rest to feed from `start`."""
    first, whole, start = split(tape)
    pipe = pipeline(store)
    events, _, _ = drive(pipe, first, dict.fromkeys(first, 0), 10)
    assert all(pe.lanes[Feed.FILLS].next_offset > 100 for pe in pipe.engines.values())
    return pipe, events, whole, start


def rewind_fills(pipe: Pipeline) -> None:
    for p in pipe.engines:
        pipe.rewind(FILLS, p, "new-id")


def test_a_replaced_fills_log_is_read_from_its_start(tape: list[TapeRecord],
                                                     expected: dict[str, dict[str, object]]) -> None:
    """Rewound, each engine applies the new log's records from offset 0 on: the replay's verdicts."""
    pipe, first, whole, start = through_the_old_logs(tape, DictStore())
    rewind_fills(pipe)
    second, _, _ = drive(pipe, whole, start, 10, now=30_000)
    assert verdicts(latest(first + second)) == expected
    for p, pe in pipe.engines.items():
        lane = pe.lanes[Feed.FILLS]
        assert (lane.epoch, lane.topic_id, lane.next_offset) == (1, "new-id", len(whole[(FILLS, p)]))
        assert pe.engine.stats["late_records"] == 0


def test_without_the_rewind_the_new_logs_first_records_are_lost(tape: list[TapeRecord],
                                                                expected: dict[str, dict[str, object]]) -> None:
    """What the rewind is for: records of the new log below the old log's end are taken for records
    read before, and dropped (the fills ledger then misses them: different witness verdicts)."""
    pipe, first, whole, start = through_the_old_logs(tape, DictStore())
    second, _, _ = drive(pipe, whole, start, 10, now=30_000)
    assert verdicts(latest(first + second)) != expected


def test_checkpoints_after_a_rewind_restore_in_the_new_log(tape: list[TapeRecord],
                                                           expected: dict[str, dict[str, object]]) -> None:
    """A checkpoint after the rewind holds the new log's offsets and the lane's epoch; a pipeline
    restored from it goes on from there in the new log, and applies nothing twice."""
    store = DictStore()
    pipe, first, whole, start = through_the_old_logs(tape, store)
    rewind_fills(pipe)
    more, cp, _ = drive(pipe, whole, start, 10, stop_after=30, now=30_000)
    assert cp is not None
    for p in range(PARTITIONS):
        meta = json.loads(store.data[p][meta_key(p)])
        assert meta["epochs"] == {FILLS: 1} and meta["topic_ids"] == {FILLS: "new-id"}
        assert 0 < meta["offsets"][FILLS] <= len(whole[(FILLS, p)])  # an offset of the new log
    restored = pipeline(store)
    resume = {tp: (0 if tp[0] in ("marks", "instruments") else cp.offsets.get(tp, 0)) for tp in whole}
    second, _, _ = drive(restored, whole, resume, 10, now=40_000)
    assert verdicts(latest(first + more + second)) == expected
    assert {p: (pe.lanes[Feed.FILLS].epoch, pe.lanes[Feed.FILLS].topic_id)
            for p, pe in restored.engines.items()} == dict.fromkeys(range(PARTITIONS), (1, "new-id"))


def test_a_rewind_whose_checkpoint_was_cut_short_is_found_on_restore(
        tape: list[TapeRecord], expected: dict[str, dict[str, object]]) -> None:
    """The crash lands between the account rows of the first checkpoint after a rewind and its
    `meta` row: `meta` still has the old log's offsets. The rows of the new log are ahead of it (a
    later epoch), so the restored lane reads the new log from its start and those accounts skip
    what they hold: no fill counted twice."""
    store = DictStore()
    pipe, first, whole, start = through_the_old_logs(tape, store)
    before = {p: dict(rows) for p, rows in store.data.items()}
    old_offsets = {p: json.loads(before[p][meta_key(p)])["offsets"] for p in before}
    rewind_fills(pipe)
    more, _, _ = drive(pipe, whole, start, 10, stop_after=30, every=30, now=30_000)
    newer = [k for p, rows in store.data.items() for k, r in rows.items()
             if not k.startswith("\x00") and before[p].get(k) != r and json.loads(r)["offsets"][FILLS] > 0]
    assert len(newer) > 5
    for p, rows in store.data.items():  # the meta rows never landed
        rows[meta_key(p)] = before[p][meta_key(p)]
    restored = pipeline(store)
    for p in range(PARTITIONS):
        lane = restored.engine(p, 0.0).lanes[Feed.FILLS]
        assert (lane.epoch, lane.next_offset, lane.topic_id) == (1, 0, None)
    resume = {tp: (0 if tp[0] in ("marks", "instruments") else old_offsets[tp[1]][tp[0]]) for tp in whole}
    resume.update({tp: 0 for tp in whole if tp[0] == FILLS})
    second, _, _ = drive(restored, whole, resume, 10, now=40_000)
    assert verdicts(latest(first + more + second)) == expected


def test_a_lane_commits_nothing_of_the_new_log_while_old_entries_are_held() -> None:
    lane = AccountLane(next_offset=0)
    lane.push([(10, "f", "a", 40), (20, "f", "b", 41)], 42, 0.0)
    lane.consume(1)
    assert lane.commit_offset() == 41
    lane.rewind("t2")
    lane.push([(30, "f", "c", 0), (40, "f", "d", 1)], 2, 0.0)
    assert (lane.commit_offset(), lane.next_offset, lane.epoch) == (0, 2, 1)  # "b" (old log) still held
    lane.consume(1)
    assert lane.commit_offset() == 0  # "c", offset 0 of the new log, is next
    lane.consume(1)
    assert lane.commit_offset() == 1
    lane.consume(1)
    assert lane.commit_offset() == 2


def test_the_shared_topics_ids_an_engine_read_are_kept_by_its_checkpoints(tape: list[TapeRecord]) -> None:
    """A worker restoring the engine compares them with the topics' ids now (see the runtime)."""
    store = DictStore()
    pipe, _, _, _ = through_the_old_logs(tape, store)
    for pe in pipe.engines.values():
        pe.global_ids.update(marks="m-1", instruments="i-1")
        pe.touched.add(next(iter(pe.engine.accounts)))
    stored_cp = pipe.checkpoint()
    assert pipe.write_state(stored_cp) == []
    restored = pipeline(store)
    for p in range(PARTITIONS):
        assert restored.engine(p, 0.0).global_ids == {"marks": "m-1", "instruments": "i-1"}
