"""Input the broker deleted before the worker read it: noticed, counted, never silent.

A consumer whose position falls below a partition's log start (retention or `DeleteRecords` removed
records it had not read yet: a worker down or behind for longer than the topic keeps data) gets
OFFSET_OUT_OF_RANGE on its fetch, and the client resets it to the earliest offset the broker still
holds. The records in between are gone. Nothing in Faust or aiokafka reports that beyond one INFO
log line, so a worker would carry on as if it had seen them.

`InputLoss` turns each such reset into a count: `reset(topic, partition, offset)` is told the offset
the fetch failed at (by `OffsetResetWatch` for the account inputs, which aiokafka fetches under
Faust, and by `GlobalReader` for the marks and instruments, which librdkafka fetches); the first
record that then arrives for that partition at or past that offset says where reading resumed, and
`arrived` returns the records skipped (its offset minus the failed one). Records below the failed
offset (fetched before the reset) do not settle it. Each offset is counted once: a consumer may
run into the same gap twice (Faust seeks a partition to its committed offset again after the
first reset), and a gap already counted is not counted again.

Thread-safe for one writer thread and one reader thread: `reset` may run in aiokafka's consumer
thread; each call is one dict operation.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

# aiokafka 0.14's fetcher logs this (INFO) when a fetch is out of range and it resets the position
# under the default reset strategy; args: (fetch_offset, TopicPartition). Pinned in pyproject.toml.
AIOKAFKA_FETCHER_LOGGER = "aiokafka.consumer.fetcher"
AIOKAFKA_OUT_OF_RANGE = "Fetch offset %s is out of range for partition %s, resetting offset"


class Lost(NamedTuple):
    topic: str
    partition: int
    first: int  # the first offset lost
    resumed: int  # the offset reading resumed at (the first one not lost)

    @property
    def records(self) -> int:
        return self.resumed - self.first


class InputLoss:
    """Partitions reset after an out-of-range fetch, until the records that follow say what was lost."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], int] = {}
        self._counted: dict[tuple[str, int], int] = {}  # per partition: offsets below this were counted

    def reset(self, topic: str, partition: int, offset: int) -> None:
        """A fetch of `topic[partition]` at `offset` was out of range; the client reset its position."""
        self._pending[(topic, partition)] = offset

    def arrived(self, topic: str, partition: int, first_offset: int) -> Lost | None:
        """Records of `topic[partition]` from `first_offset` on arrived: what was skipped, if anything."""
        if not self._pending:
            return None
        key = (topic, partition)
        failed = self._pending.get(key)
        if failed is None or first_offset < failed:
            return None
        del self._pending[key]
        return self.skipped(topic, partition, failed, first_offset)

    def skipped(self, topic: str, partition: int, first: int, resumed: int) -> Lost | None:
        """Offsets `first` to `resumed - 1` of `topic[partition]` will never be read (after a failed
        fetch, or known without one: see `Worker._check_earliest`): the part not counted before, if
        any."""
        key = (topic, partition)
        first = max(first, self._counted.get(key, 0))
        if resumed <= first:
            return None
        self._counted[key] = resumed
        return Lost(topic, partition, first, resumed)

    def forget(self, topic: str, partition: int) -> None:
        """The partition left this worker (revoked): a reset seen for it no longer concerns it."""
        self._pending.pop((topic, partition), None)

    def pending(self) -> dict[tuple[str, int], int]:
        return dict(self._pending)

    def failed_at(self, topic: str, partition: int) -> int | None:
        """The offset of `topic[partition]` whose fetch failed, while not settled (one dict lookup:
        asked for every batch of records)."""
        return self._pending.get((topic, partition))


class OffsetResetWatch(logging.Filter):
    """A filter on aiokafka's fetcher logger that tells `InputLoss` of every out-of-range reset.

    The logger is set to INFO (if it was quieter) so that the line is made at all; the filter then
    lets through only what the logger would have shown before, and never the out-of-range line
    itself: the worker logs the loss, with its size, once records arrive."""

    def __init__(self, loss: InputLoss, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.logger = logger or logging.getLogger(AIOKAFKA_FETCHER_LOGGER)
        self._own_level = self.logger.level

    def _shown(self) -> int:
        """The level the logger would show without this watch (its own, else its parents', which
        logging set-up may change later)."""
        parent = self.logger.parent
        return self._own_level or (parent.getEffectiveLevel() if parent is not None else logging.WARNING)

    def install(self) -> OffsetResetWatch:
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addFilter(self)
        return self

    def uninstall(self) -> None:
        self.logger.removeFilter(self)
        self.logger.setLevel(self._own_level)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == AIOKAFKA_OUT_OF_RANGE and isinstance(record.args, tuple) and len(record.args) == 2:
            offset, tp = record.args
            topic: Any = getattr(tp, "topic", None)
            partition: Any = getattr(tp, "partition", None)
            if isinstance(offset, int) and isinstance(topic, str) and isinstance(partition, int):
                self.loss.reset(topic, partition, offset)
                return False
        return record.levelno >= self._shown()
