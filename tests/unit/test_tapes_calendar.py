"""Trading-day rotation at 17:00 America/New_York, exact to the millisecond, across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from streams.tapes.calendar import day_bounds, day_dirs, file_name, tape_path, trading_day


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()) * 1000


# (trading day, its first ms in UTC, its end in UTC, length in hours)
CASES = [
    (date(2026, 5, 28), "2026-05-27T21:00:00", "2026-05-28T21:00:00", 24),  # an ordinary EDT day
    (date(2026, 1, 15), "2026-01-14T22:00:00", "2026-01-15T22:00:00", 24),  # an ordinary EST day
    (date(2026, 3, 8), "2026-03-07T22:00:00", "2026-03-08T21:00:00", 23),   # DST starts 02:00 on 03-08
    (date(2026, 3, 9), "2026-03-08T21:00:00", "2026-03-09T21:00:00", 24),
    (date(2026, 11, 1), "2026-10-31T21:00:00", "2026-11-01T22:00:00", 25),  # DST ends 02:00 on 11-01
    (date(2026, 11, 2), "2026-11-01T22:00:00", "2026-11-02T22:00:00", 24),
]


@pytest.mark.parametrize(("day", "start", "end", "hours"), CASES, ids=[str(c[0]) for c in CASES])
def test_bounds_are_17h_new_york_in_utc(day: date, start: str, end: str, hours: int) -> None:
    """A trading day runs from 17:00 NY the day before to 17:00 NY on its label date, DST-correct."""
    lo, hi = day_bounds(day)
    assert (lo, hi) == (ms(start), ms(end))
    assert hi - lo == hours * 3_600_000


@pytest.mark.parametrize(("day", "start", "end", "hours"), CASES, ids=[str(c[0]) for c in CASES])
def test_boundary_milliseconds(day: date, start: str, end: str, hours: int) -> None:
    """The first ms of a day belongs to it, the ms before to the previous day, the end ms to the next."""
    lo, hi = day_bounds(day)
    assert trading_day(lo) == day
    assert trading_day(lo - 1) == date.fromordinal(day.toordinal() - 1)
    assert trading_day(hi - 1) == day
    assert trading_day(hi) == date.fromordinal(day.toordinal() + 1)


def test_inside_the_dst_gap_and_fold() -> None:
    """02:30 local on the change days (in the gap, or twice in the fold) is still the same trading day."""
    assert trading_day(ms("2026-03-08T07:30:00")) == date(2026, 3, 8)  # 03:30 EDT, just after the gap
    assert trading_day(ms("2026-11-01T05:30:00")) == date(2026, 11, 1)  # 01:30 EDT (first pass)
    assert trading_day(ms("2026-11-01T06:30:00")) == date(2026, 11, 1)  # 01:30 EST (second pass)


def test_every_ms_maps_back_to_its_bounds() -> None:
    """trading_day and day_bounds agree on a sweep of instants across both DST changes."""
    for start in (ms("2026-03-06T00:00:00"), ms("2026-10-30T00:00:00")):
        for t in range(start, start + 4 * 86_400_000, 999_983):
            lo, hi = day_bounds(trading_day(t))
            assert lo <= t < hi


def test_file_names_sort_by_day(tmp_path: Path) -> None:
    """Paths are <root>/<day>/<day>.<feed>.avro and sort by trading day; stray entries are ignored."""
    days = [date(2026, 11, 1), date(2026, 3, 8), date(2025, 12, 31)]
    paths = [tape_path(tmp_path, d, "ep3.positions") for d in days]
    assert sorted(str(p) for p in paths) == [str(tape_path(tmp_path, d, "ep3.positions")) for d in sorted(days)]
    assert file_name(date(2026, 3, 8), "risk.snapshots") == "2026-03-08.risk.snapshots.avro"
    for p in paths:
        p.parent.mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "2026-13-45").mkdir()
    assert [d for d, _ in day_dirs(tmp_path)] == sorted(days)
