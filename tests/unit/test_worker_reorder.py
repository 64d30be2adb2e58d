"""The reorder buffer: watermark over lanes, idleness, merged release, shared global logs."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.records import Feed
from streams.worker.globals import GlobalLane, GlobalLog
from streams.worker.reorder import INF, AccountLane, Aligner, merge


def entries(feed: Feed, *pairs: tuple[int, int]) -> list[tuple[int, Feed, object, int]]:
    return [(ts, feed, f"{feed.value}@{ts}", off) for ts, off in pairs]


def test_nothing_is_released_while_a_live_lane_has_seen_nothing() -> None:
    """A lane that never delivered holds the watermark back until it has been idle for idle_ms."""
    a, b = AccountLane(now=0), AccountLane(now=0)
    al = Aligner([a, b], idle_ms=1_000)
    a.push(entries(Feed.EP3, (10, 0), (20, 1)), 2, now=100)
    assert al.release(now=500) == ([], None)
    out, w = al.release(now=1_001)  # b idle: a's max is the watermark, strictly below is released
    assert [e[0] for e in out] == [10] and w == 20


def test_release_is_below_watermark_and_merged_by_ts() -> None:
    """Only entries strictly below min(max ts) are released, merged stably by ts."""
    a, b = AccountLane(), AccountLane()
    al = Aligner([a, b], idle_ms=10_000)
    a.push(entries(Feed.EP3, (1, 0), (5, 1), (9, 2)), 3, now=1)
    b.push(entries(Feed.RISK, (1, 0), (3, 1), (5, 2)), 3, now=1)
    out, w = al.release(now=2)
    assert w == 5
    assert [(e[0], e[1]) for e in out] == [(1, Feed.EP3), (1, Feed.RISK), (3, Feed.RISK)]
    assert a.commit_offset() == 1 and b.commit_offset() == 2
    b.push(entries(Feed.RISK, (9, 3)), 4, now=3)
    out, w = al.release(now=3)
    assert [e[0] for e in out] == [5, 5] and w == 9


def test_all_idle_releases_everything_and_clock_follows_wall_time() -> None:
    """With every lane idle everything is released and event time moves with the wall clock."""
    a, b = AccountLane(), AccountLane()
    al = Aligner([a, b], idle_ms=1_000)
    a.push(entries(Feed.EP3, (100, 0), (200, 1)), 2, now=0)
    b.push(entries(Feed.RISK, (150, 0)), 1, now=50)
    assert al.idle_clock(now=500) is None
    out, w = al.release(now=2_000)
    assert w == INF and [e[0] for e in out] == [100, 150, 200]
    assert al.idle_clock(now=2_000) == 200 + 1_950
    assert a.commit_offset() == 2 and b.commit_offset() == 1


def test_global_log_is_read_once_per_lane_and_trimmed_behind_the_slowest() -> None:
    """Each engine's cursor sees every global entry once; the log keeps what a lane still needs."""
    log = GlobalLog(0)
    x, y = GlobalLane(log, 0), GlobalLane(log, 0)
    log.append(entries(Feed.MARKS, (1, 0), (2, 1), (3, 2)), 3, now=1)
    assert [e[0] for e in x.held(3)] == [1, 2]
    x.consume(2)
    assert [e[0] for e in x.held(INF)] == [3] and y.pending() == 3
    log.trim()
    assert [e[0] for e in y.held(INF)] == [1, 2, 3]
    y.consume(3)
    x.consume(1)
    log.trim()
    assert log.entries == [] and log.start == 3


def test_a_lane_behind_the_log_start_asks_for_a_rewind() -> None:
    """A restored cursor below what the log still holds is reported, and a rewind serves it."""
    log = GlobalLog(0)
    lane = GlobalLane(log, 5)
    log.append(entries(Feed.MARKS, (1, 5), (2, 6)), 7, now=0)
    lane.consume(2)
    log.trim()
    late = GlobalLane(log, 2)
    assert log.needs_rewind() == 2 and late.max_ts is None
    log.rewind(2, now=1)
    log.append(entries(Feed.MARKS, (0, 2), (1, 5), (2, 6)), 7, now=1)
    assert [e[3] for e in late.held(INF)] == [2, 5, 6]
    assert lane.held(INF) == []


def test_a_burst_after_a_quiet_spell_waits_for_its_partners() -> None:
    """Records arriving on one lane after every lane was idle don't outrun the other lanes' records
    of the same burst: idle lanes hold the watermark for wake_hold_ms, as if live."""
    a, b = AccountLane(), AccountLane()
    al = Aligner([a, b], idle_ms=1_000, wake_hold_ms=500)
    a.push(entries(Feed.EP3, (100, 0)), 1, now=0)
    b.push(entries(Feed.FILLS, (100, 0)), 1, now=0)
    assert al.release(now=2_000)[1] == INF  # quiet: everything out
    a.push(entries(Feed.EP3, (5_000, 1), (12_000, 2)), 3, now=10_000)  # the burst reaches a first
    out, w = al.release(now=10_010)
    assert out == [] and w == 100  # b still holds the watermark at its last event time
    b.push(entries(Feed.FILLS, (10_000, 1)), 2, now=10_100)  # b's part of the burst arrives
    out, w = al.release(now=10_120)
    assert [e[0] for e in out] == [5_000] and w == 10_000  # both live again: min of their maxima


def test_by_default_a_burst_partner_has_idle_ms_to_arrive() -> None:
    """The default hold is idle_ms: a partner lane whose part of the burst reaches the worker 1.5 s
    after the first lane's (a starved fetcher thread) is still in time, and once the partner stays
    silent for idle_ms after the wake it stops holding the watermark."""
    a, b = AccountLane(), AccountLane()
    al = Aligner([a, b], idle_ms=2_000)
    a.push(entries(Feed.EP3, (100, 0)), 1, now=0)
    b.push(entries(Feed.FILLS, (100, 0)), 1, now=0)
    assert al.release(now=3_000)[1] == INF
    a.push(entries(Feed.EP3, (5_000, 1), (12_000, 2)), 3, now=10_000)
    assert al.release(now=10_010)[0] == []
    assert al.release(now=11_500)[0] == []  # past a 1 s hold: b still holds the watermark
    b.push(entries(Feed.FILLS, (4_000, 1), (10_000, 2)), 3, now=11_510)
    out, w = al.release(now=11_520)
    assert [e[0] for e in out] == [4_000, 5_000] and w == 10_000  # b's 4,000 not late
    a.push(entries(Feed.EP3, (13_000, 3)), 4, now=13_500)
    assert al.release(now=13_500)[0] == []  # b arrived at 11,510: still live
    out, w = al.release(now=13_700)  # b silent for idle_ms: idle again
    assert [e[0] for e in out] == [10_000, 12_000] and w == 13_000


def test_after_the_hold_an_idle_lane_stops_holding_back_again() -> None:
    """A lane that stays silent past the hold (a retired feed) no longer holds the watermark."""
    a, b = AccountLane(), AccountLane()
    al = Aligner([a, b], idle_ms=1_000, wake_hold_ms=500)
    a.push(entries(Feed.EP3, (100, 0)), 1, now=0)
    b.push(entries(Feed.RISK, (100, 0)), 1, now=0)
    al.release(now=2_000)
    a.push(entries(Feed.EP3, (5_000, 1), (6_000, 2)), 3, now=10_000)
    assert al.release(now=10_010)[0] == []
    out, w = al.release(now=10_600)
    assert [e[0] for e in out] == [5_000] and w == 6_000


def test_event_time_follows_the_wall_clock_only_after_the_longer_clock_idle() -> None:
    """Everything is released once all lanes are idle, but event time moves with the wall clock only
    after clock_idle_ms without any arrival: a shorter producer pause doesn't make later records late."""
    a, b = AccountLane(), AccountLane()
    al = Aligner([a, b], idle_ms=1_000, clock_idle_ms=10_000)
    a.push(entries(Feed.EP3, (100, 0)), 1, now=0)
    b.push(entries(Feed.RISK, (150, 0)), 1, now=0)
    out, w = al.release(now=2_000)
    assert w == INF and [e[0] for e in out] == [100, 150]
    assert al.idle_clock(now=9_999) is None
    assert al.idle_clock(now=10_000) == 150 + 10_000


def test_merge_is_a_stable_sort_by_ts_and_release_merges_release_runs() -> None:
    """`merge` equals a stable sort of the runs' concatenation (ties: run order, then arrival order);
    `release` is `merge` of what `release_runs` hands out per lane."""
    runs = [entries(Feed.EP3, (1, 0), (4, 1), (4, 2), (9, 3)), entries(Feed.RISK, (0, 0), (4, 1), (8, 2)),
            entries(Feed.MARKS, (4, 0))]
    assert merge(runs) == sorted([e for run in runs for e in run], key=lambda e: e[0])
    assert [(e[0], e[1]) for e in merge(runs)][2:6] == [(4, Feed.EP3), (4, Feed.EP3), (4, Feed.RISK), (4, Feed.MARKS)]
    assert merge([]) == [] and merge([runs[0]]) == runs[0] and merge([tuple(runs[1])]) == runs[1]
    lanes = [AccountLane(), AccountLane()]
    twins = [AccountLane(), AccountLane()]
    for pair in (lanes, twins):
        pair[0].push(runs[0], 4, now=1)
        pair[1].push(runs[1], 3, now=1)
    merged, w = Aligner(lanes, idle_ms=10_000).release(now=2)
    got, w2 = Aligner(twins, idle_ms=10_000).release_runs(now=2)
    assert w == w2 == 8 and [lane for lane, _ in got] == twins
    assert merged == merge([run for _, run in got]) and [e[0] for e in merged] == [0, 1, 4, 4, 4]


@settings(max_examples=300, deadline=None)
@given(lanes=st.lists(st.lists(st.integers(0, 40), max_size=30).map(sorted), min_size=1, max_size=4),
       global_ts=st.lists(st.integers(0, 40), max_size=10).map(sorted),
       limits=st.lists(st.integers(1, 12), min_size=1, max_size=40), idle=st.booleans())
def test_a_bounded_release_is_the_unbounded_one_in_instalments(
        lanes: list[list[int]], global_ts: list[int], limits: list[int], idle: bool) -> None:
    """Released with a limit, step by step, the entries come out in the order one unbounded release
    gives them; each step releases whole instants below the bound it returns (at most `limit`
    entries, more only if a single instant holds more), which is never above the watermark."""

    def build() -> Aligner:
        account = [AccountLane() for _ in lanes]
        for i, (lane, tss) in enumerate(zip(account, lanes, strict=True)):
            lane.push([(ts, Feed.EP3, f"{i}/{n}", n) for n, ts in enumerate(tss)], len(tss), now=0)
        log = GlobalLog(0)
        log.append([(ts, Feed.MARKS, f"m/{n}", n) for n, ts in enumerate(global_ts)], len(global_ts), now=0)
        return Aligner([*account, GlobalLane(log, 0)], idle_ms=1_000)

    now = 5_000 if idle else 500  # idle: every lane caught up and quiet, everything is released
    whole, _ = build().release(now)
    bounded = build()
    got: list[tuple[int, Feed, object, int]] = []
    for limit in itertools.chain(limits, itertools.repeat(1)):
        w_true = bounded.watermark(now)
        runs, w = bounded.release_runs(now, limit)
        if not runs:
            break
        out = merge([run for _, run in runs])
        assert w is not None and w_true is not None and w <= w_true
        assert all(e[0] < w for e in out)
        assert all(lane.count_below(w) == 0 for lane in bounded.lanes)  # nothing below the bound is left
        assert len(out) <= limit or len({e[0] for e in out}) == 1
        assert bounded.cut == (bounded.pending() > 0 and any(lane.count_below(w_true) for lane in bounded.lanes))
        got += out
    assert [e[2] for e in got] == [e[2] for e in whole]



def _burst_setup() -> tuple[Aligner, AccountLane, list[int]]:
    """Lanes a, b, c; a and b go idle after their first record, c is still live (a slow first
    delivery), so not every lane is quiet when a burst comes (no wake hold). Returns the aligner,
    lane b and the ts released so far."""
    a, b, c = AccountLane(), AccountLane(), AccountLane()
    al = Aligner([a, b, c], idle_ms=1_000, skew_ms=500)
    got = []
    a.push(entries(Feed.EP3, (100, 0)), 1, now=0)
    b.push(entries(Feed.FILLS, (100, 0)), 1, now=0)
    c.push(entries(Feed.RISK, (90, 0), (150, 1)), 2, now=0)
    got += [e[0] for e in al.release(now=0)[0]]
    c.push(entries(Feed.RISK, (160, 2)), 3, now=1_900)
    a.fresh_at = b.fresh_at = 1_900.0  # idle, and caught up as of a fetch response at 1,900
    out, w = al.release(now=1_900)
    got += [e[0] for e in out]
    assert got == [90, 100, 100] and w == 150  # c's 150 arrived 500 ms before a's and b's last responses
    # the burst reaches a and c at 3,000; the same fetch response had nothing for b yet
    a.push(entries(Feed.EP3, (5_000, 1), (6_000, 2)), 3, now=3_000)
    c.push(entries(Feed.RISK, (5_000, 3), (7_000, 4)), 5, now=3_000)
    b.fresh_at = 3_000.0
    out, w = al.release(now=3_000)
    got += [e[0] for e in out]
    assert got == [90, 100, 100, 150] and w == 160  # b holds event time at what arrived by 2,500
    return al, b, got


def test_an_idle_lane_does_not_let_event_time_outrun_its_part_of_a_burst() -> None:
    """A burst written to every input while one input (b) was idle, and not every lane quiet: its
    records reach the worker over several fetches. The idle lane lets event time pass only what had
    arrived `skew_ms` before its last fetch response, so its own part of the burst, fetched next, is
    not late (before, an idle lane was simply left out: event time went to 6,000 and b's 4,000 was
    applied late)."""
    al, b, got = _burst_setup()
    b.push(entries(Feed.FILLS, (4_000, 1)), 2, now=3_200)  # b's part, from the next fetch
    out, w = al.release(now=3_200)
    got += [e[0] for e in out]
    assert w == 4_000
    out, w = al.release(now=4_300)  # every lane idle: the rest
    got += [e[0] for e in out]
    assert w == INF and got == sorted(got) == [90, 100, 100, 150, 160, 4_000, 5_000, 5_000, 6_000, 7_000]


def test_an_idle_lane_stops_holding_once_a_response_skew_ms_after_the_burst_is_empty() -> None:
    """An idle lane that has nothing in the burst holds event time only until a fetch response
    `skew_ms` after the burst's arrival says so; then the live lanes alone set the watermark."""
    al, b, _ = _burst_setup()
    b.fresh_at = 3_400.0
    assert al.release(now=3_400) == ([], 160)  # 3,400 - 500 is before the burst arrived
    b.fresh_at = 3_600.0
    out, w = al.release(now=3_600)
    assert [e[0] for e in out] == [160, 5_000, 5_000] and w == 6_000
