"""`Recorder` against a scripted consumer: what a commit error does to a running recorder."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.codec import Codec
from streams.core.records import Ep3PositionEvent, Feed, PositionQty
from streams.tapes.avro import AvroTape
from streams.tapes.record import Recorder, RecorderConfig, commit_later

TS = 1_780_000_000_000


class Msg:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "ep3"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 1, TS + self._offset


class ScriptedConsumer:
    """Hands out `batches` one per consume(); each commit raises the next of `failures` (None: ok)."""

    def __init__(self, batches: list[list[Msg]], failures: list[KafkaError | None]) -> None:
        self.batches, self.failures = batches, failures
        self.committed: list[int] = []

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise KafkaException(failure)
        self.committed.append(offsets[0].offset)

    def close(self) -> None:
        pass


def messages(start: int, n: int) -> list[Msg]:
    enc = Codec(Feed.EP3).encode
    return [Msg(o, enc(Ep3PositionEvent("A1", "UPDATE", o + 1, TS + o, (PositionQty("BTC-PERP", Decimal(o)),))))
            for o in range(start, start + n)]


def record(tmp_path: Path, consumer: ScriptedConsumer, rounds: int) -> Recorder:
    cfg = RecorderConfig(tmp_path, {"ep3": Feed.EP3}, {}, flush_s=0.0)
    rec = Recorder(cfg, consumer_factory=lambda conf: consumer)
    left = iter(range(rounds))
    rec.run(stop=lambda: next(left, None) is None)
    return rec


@pytest.mark.parametrize("code", [KafkaError.REBALANCE_IN_PROGRESS, KafkaError.NOT_COORDINATOR,
                                  KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
def test_a_commit_the_group_cannot_take_now_is_made_at_the_next_checkpoint(tmp_path: Path, code: int) -> None:
    """A group rebalancing or its coordinator loading (a fresh group on a busy broker) refuses a
    commit for a moment: the recorder keeps going, keeps the offsets, and commits them next time."""
    consumer = ScriptedConsumer([messages(0, 5), messages(5, 3)], [KafkaError(code)])
    rec = record(tmp_path, consumer, rounds=3)
    assert rec.stats["commits_deferred"] == 1 and consumer.committed[-1] == 8
    tape = next(tmp_path.glob("*/*.avro"))
    assert len(list(AvroTape(tape))) == 8


def test_a_commit_refused_for_good_ends_the_recorder(tmp_path: Path) -> None:
    """Not being allowed to commit is not a moment's trouble: the recorder stops with the error."""
    consumer = ScriptedConsumer([messages(0, 5)], [KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)] * 3)
    with pytest.raises(KafkaException, match="GROUP_AUTHORIZATION_FAILED"):
        record(tmp_path, consumer, rounds=3)
    assert not commit_later(KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, fatal=True)))
    assert not commit_later(RuntimeError("not from Kafka"))


def test_offsets_of_revoked_partitions_are_not_committed_later(tmp_path: Path) -> None:
    """A commit deferred while partitions are revoked is not made later for them: by then another
    member owns them, and a late commit could overwrite its progress."""
    consumer = ScriptedConsumer([], [KafkaError(KafkaError.REBALANCE_IN_PROGRESS)])
    rec = Recorder(RecorderConfig(tmp_path, {"ep3": Feed.EP3}, {}), consumer_factory=lambda conf: consumer)
    for msg in messages(0, 3):
        rec.handle(msg)
    rec.revoked(consumer, [TopicPartition("ep3", 0)])
    assert rec.stats["commits_deferred"] == 1 and rec.to_commit == {}
    for w in rec.writers.values():
        w.close()
