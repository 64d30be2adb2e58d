"""Feed gaps from per-minute record counts: no data is not clean data.

`feed_health` counts records per feed per event-time minute, so a silence is only known to minute
resolution. Between two minutes with data, the silence may have lasted up to
`next_minute + 60 s - previous_minute`; at the window's start up to `first_minute + 60 s - start`,
at its end up to `end - last_minute`. That *upper bound* is what is compared with the threshold, so
the resolution error always falls on the side of NOT_CLEARED. Guarantee: a feed that was truly
silent for longer than `max_silence_ms` anywhere in `[start, end]` is always reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.report.timeutil import MINUTE_MS


@dataclass(frozen=True, slots=True)
class FeedGap:
    feed: str
    from_ms: int
    to_ms: int

    @property
    def silent_ms(self) -> int:
        """Upper bound of the silence, in milliseconds."""
        return self.to_ms - self.from_ms


def find_gaps(feed: str, minutes: Iterable[int], start_ms: int, end_ms: int, max_silence_ms: int
              ) -> list[FeedGap]:
    """Every stretch of `[start_ms, end_ms]` in which `feed` may have been silent > `max_silence_ms`.

    `minutes` are the starts of the minutes in which the feed had at least one record.
    """
    gaps: list[FeedGap] = []
    prev = start_ms
    for minute in sorted(set(minutes)):
        if minute + MINUTE_MS <= start_ms or minute > end_ms:
            continue
        latest_possible = min(minute + MINUTE_MS, end_ms)
        if latest_possible - prev > max_silence_ms:
            gaps.append(FeedGap(feed, prev, latest_possible))
        prev = max(prev, minute)
    if end_ms - prev > max_silence_ms:
        gaps.append(FeedGap(feed, prev, end_ms))
    return gaps


def all_gaps(minutes_by_feed: dict[str, list[int]], required: Iterable[str], start_ms: int, end_ms: int,
             max_silence_ms: int) -> list[FeedGap]:
    """Gaps of every required feed (a required feed with no rows at all is one gap over the window)."""
    out: list[FeedGap] = []
    for feed in required:
        out.extend(find_gaps(feed, minutes_by_feed.get(feed, []), start_ms, end_ms, max_silence_ms))
    return out
