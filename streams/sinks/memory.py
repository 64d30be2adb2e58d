"""An in-memory `Sink` for tests and dry runs, with scriptable outages."""

from __future__ import annotations

from collections.abc import Sequence

from streams.core.events import Event
from streams.sinks.errors import SinkUnavailable


class MemorySink:
    """Keeps every written batch; `latest()` gives what ReplacingMergeTree FINAL would give.

    `fail_next(n, retry_after)` makes the next `n` writes raise `SinkUnavailable` without storing
    anything, which is how tests simulate an outage without sleeping.
    """

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.setup_calls = 0
        self.closed = False
        self.attempts = 0
        self._failures_left = 0
        self._retry_after = 0.0

    def setup(self) -> None:
        self.setup_calls += 1

    def fail_next(self, n: int, retry_after: float = 0.0) -> None:
        self._failures_left = n
        self._retry_after = retry_after

    def write(self, batch: Sequence[Event]) -> None:
        self.attempts += 1
        if self._failures_left > 0:
            self._failures_left -= 1
            raise SinkUnavailable("memory sink: simulated outage", self._retry_after)
        self.batches.append(list(batch))

    def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[Event]:
        """Every event written, in write order, duplicates included."""
        return [e for b in self.batches for e in b]

    def latest(self) -> dict[str, Event]:
        """Highest version per event_id."""
        out: dict[str, Event] = {}
        for e in self.events:
            if e.event_id not in out or e.version >= out[e.event_id].version:
                out[e.event_id] = e
        return out
