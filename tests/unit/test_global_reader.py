"""The shared inputs' reader (librdkafka, no broker here: its consumer is replaced by a stand-in that
answers as librdkafka did)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import TopicPartition

from streams.agents.kafka_io import GlobalReader
from streams.config import Settings


class CachedEnds:
    """librdkafka's cached watermarks: still answered for a partition after it is unassigned (the
    end of the log it read before), which is what a deleted topic's partition gave."""

    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends
        self.unassigned: list[tuple[str, int]] = []
        self.assigned: list[tuple[str, int, int]] = []

    def list_topics(self, timeout: float = 0) -> Any:
        """Metadata listing every topic of `ends` (this consumer's view, which may be behind the cluster's)."""
        topics: dict[str, Any] = {}
        for t, p in self.ends:
            topics.setdefault(t, SimpleNamespace(partitions={}))
            topics[t].partitions[p] = None
        return SimpleNamespace(topics=topics)

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.assigned += [(tp.topic, tp.partition, tp.offset) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False, timeout: float = 0) -> tuple[int, int]:
        return 0, self.ends.get((tp.topic, tp.partition), -1)

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        self.unassigned += [(tp.topic, tp.partition) for tp in tps]

    def close(self) -> None:
        pass


def new_reader(ends: dict[tuple[str, int], int]) -> tuple[GlobalReader, Any]:
    reader = GlobalReader(Settings.load({"brokers": "127.0.0.1:9", "group_id": "g"}, environ={}), ["m", "i"])
    reader._consumer.close()
    stand_in: Any = CachedEnds(ends)
    reader._consumer = stand_in
    return reader, stand_in


def test_only_topics_whose_id_was_checked_are_assigned() -> None:
    """The worker checks the shared topics' ids before it assigns their partitions: a topic its
    check found gone is not assigned, even if this consumer's metadata still lists it (the deleted
    topic, or the one made again, which the engines' cursors, offsets of the old log, would have
    placed in the middle of). With the partition assigned again, the worker asked for ids only every
    10 s, and the marks input read the new log from the old offset until then."""
    reader, stand_in = new_reader({("m", 0): 15, ("i", 0): 7})
    assert reader.refresh(lambda t, p: 15 if t == "m" else 0, only={"i"}) == [("i", 0)]
    assert reader.assigned == {("i", 0)}
    assert reader.highwater("m", 0) is None  # not read: unknown, so it holds event time
    assert reader.refresh(lambda t, p: 0, only={"m", "i"}) == [("m", 0)]  # known now: from the start
    assert stand_in.assigned[-1][:2] == ("m", 0)
    assert reader.refresh(lambda t, p: 0) == []  # (without `only`: every topic it reads)


def test_a_forgotten_partition_has_no_known_end() -> None:
    """Once its topic is gone and the reader forgets it, a shared partition's end is unknown (so its
    log is not caught up and holds event time) until it is read again, whatever librdkafka still
    has cached: with the old log's end, the marks input counted caught up while its topic was made
    again, event time ran past the records written with the new one, and those came late."""
    reader, stand_in = new_reader({("m", 0): 15, ("m", 1): 7})
    reader.assigned = {("m", 0), ("m", 1)}
    assert (reader.highwater("m", 0), reader.highwater("m", 1)) == (15, 7)
    reader.forget("m", 0)
    assert stand_in.unassigned == [("m", 0)]
    assert (reader.highwater("m", 0), reader.highwater("m", 1)) == (None, 7)
    assert reader.highwater("m", 2) is None  # never read: unknown
