"""`divmon tapes prune`: delete whole trading days of tapes older than N days.

Guarantees:
- only directories named `YYYY-MM-DD` directly under the tapes root are candidates, whole; nothing
  else there is ever touched (a stray file or folder is left alone);
- day D is deleted iff D < today - keep_days, where today is the current trading day
  (`calendar.trading_day(now_ms)`): with keep_days=N the current day and the N days before it stay.
  The current day (and any later one, e.g. after a clock step back) is never deleted, whatever N is;
- `dry_run` returns the same plan and deletes nothing;
- `now_ms` is an argument: the caller reads the clock, this module doesn't.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from streams.tapes.calendar import day_dirs, trading_day


@dataclass(frozen=True)
class PruneItem:
    day: date
    path: Path
    files: int
    bytes: int


def plan(root: Path, keep_days: int, now_ms: int) -> list[PruneItem]:
    """The day directories that `prune` would delete, oldest first."""
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    today = trading_day(now_ms)
    cutoff = today - timedelta(days=keep_days)
    out = []
    for day, path in day_dirs(root):
        if day < cutoff and day < today:
            files = [p for p in path.rglob("*") if p.is_file()]
            out.append(PruneItem(day, path, len(files), sum(p.stat().st_size for p in files)))
    return out


def prune(root: Path, keep_days: int, now_ms: int, dry_run: bool = False) -> list[PruneItem]:
    """Delete (unless `dry_run`) and return the planned day directories."""
    items = plan(root, keep_days, now_ms)
    if not dry_run:
        for item in items:
            shutil.rmtree(item.path)
    return items
