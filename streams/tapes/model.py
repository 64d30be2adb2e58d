"""What a tape yields: one input record with its event time and where it came from."""

from __future__ import annotations

from typing import NamedTuple

from streams.core.records import Feed, Record


class TapeRecord(NamedTuple):
    ts_ms: int
    feed: Feed
    record: Record
    where: str | int  # printable position: "line 12" (a lazily formatted int) or "block 3 record 40"


def topic_map(topics: dict[str, str] | None = None) -> dict[str, Feed]:
    """Topic name -> feed: the default names always work, configured names are added."""
    out = {f.value: f for f in Feed}
    for feed_value, topic in (topics or {}).items():
        out[topic] = Feed(feed_value)
    return out
