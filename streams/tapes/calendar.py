"""Trading days and tape file names (DESIGN section 5).

Definition. Trading day D is the session that runs from 17:00 America/New_York on the calendar day
before D (inclusive) to 17:00 America/New_York on D (exclusive), and is labelled with the date D on
which it *ends*. So a record at Friday 16:59:59.999 NY belongs to Friday, one at Friday 17:00:00.000
NY to Saturday. The perpetuals traded here run every day, so every calendar date is a trading day (no
weekend or holiday calendar); the rotation is a clock rule, nothing more.

Guarantees:
- the boundary is computed with `zoneinfo` (IANA tzdata), so it is 17:00 local both in EST (22:00 UTC)
  and in EDT (21:00 UTC); the day on which DST starts is 23 h long and the day it ends 25 h;
  17:00 is never inside a DST gap or fold in New York (transitions happen at 02:00);
- `trading_day(ms)` and `day_bounds(day)` agree exactly: `start <= ms < end` iff `trading_day(ms) == day`;
- tape paths `{root}/{YYYY-MM-DD}/{YYYY-MM-DD}.{feed}.avro` sort lexically by trading day, and each file
  still names its day and feed when copied out of its directory.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
ROLL = time(17, 0)
DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SUFFIX = ".avro"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def trading_day(ts_ms: int) -> date:
    """The trading day (label) of an epoch-millisecond UTC timestamp."""
    local = (EPOCH + timedelta(milliseconds=ts_ms)).astimezone(NEW_YORK)
    if local.time() >= ROLL:
        return local.date() + timedelta(days=1)
    return local.date()


def _roll_ms(day: date) -> int:
    """Epoch ms of 17:00 New York on calendar date `day` (exact: whole seconds, no float error)."""
    local = datetime.combine(day, ROLL, tzinfo=NEW_YORK)
    return int(local.astimezone(UTC).timestamp()) * 1000


def day_bounds(day: date) -> tuple[int, int]:
    """`[start_ms, end_ms)` of trading day `day`: 17:00 NY the day before, to 17:00 NY on `day`."""
    return _roll_ms(day - timedelta(days=1)), _roll_ms(day)


def day_label(day: date) -> str:
    return day.isoformat()


def parse_day(label: str) -> date | None:
    """The date of a `YYYY-MM-DD` directory name, or None for anything else."""
    if not DAY_DIR.match(label):
        return None
    try:
        return date.fromisoformat(label)
    except ValueError:
        return None


def file_name(day: date, feed: str) -> str:
    """`2026-03-08.ep3.positions.avro`: day first, so names sort by trading day."""
    return f"{day_label(day)}.{feed}{SUFFIX}"


def tape_path(root: Path, day: date, feed: str) -> Path:
    """Where the tape of `feed` for trading day `day` lives under `root`."""
    return root / day_label(day) / file_name(day, feed)


def day_dirs(root: Path) -> list[tuple[date, Path]]:
    """The trading-day directories under `root`, oldest first; anything else there is ignored."""
    if not root.is_dir():
        return []
    found = [(parse_day(p.name), p) for p in root.iterdir() if p.is_dir()]
    return sorted((d, p) for d, p in found if d is not None)
