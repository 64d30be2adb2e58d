"""Input deleted by the broker before the worker read it is noticed and sized (`streams.agents.loss`)."""

from __future__ import annotations

import logging
import types

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.structs import TopicPartition

from streams.agents.loss import AIOKAFKA_FETCHER_LOGGER, AIOKAFKA_OUT_OF_RANGE, InputLoss, Lost, OffsetResetWatch


def test_a_reset_is_sized_by_the_first_record_read_after_it() -> None:
    loss = InputLoss()
    assert loss.arrived("ep3", 0, 500) is None  # nothing reset: nothing lost
    loss.reset("ep3", 0, 120)
    assert loss.arrived("ep3", 1, 900) is None  # another partition
    assert loss.arrived("ep3", 0, 100) is None  # fetched before the reset: not where reading resumed
    lost = loss.arrived("ep3", 0, 400)
    assert lost == Lost("ep3", 0, 120, 400) and lost.records == 280
    assert loss.arrived("ep3", 0, 401) is None  # counted once


def test_a_reset_to_the_same_offset_lost_nothing_and_a_revoked_partition_is_forgotten() -> None:
    loss = InputLoss()
    loss.reset("marks", 0, 50)
    assert loss.arrived("marks", 0, 50) is None and loss.pending() == {}
    loss.reset("ep3", 2, 10)
    loss.forget("ep3", 2)
    assert loss.arrived("ep3", 2, 99) is None


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_watch_takes_aiokafkas_out_of_range_line_and_shows_what_the_logger_showed_before() -> None:
    logger = logging.getLogger("tests.input_loss.fetcher")
    logger.setLevel(logging.WARNING)
    kept = _Kept()
    logger.addHandler(kept)
    loss = InputLoss()
    watch = OffsetResetWatch(loss, logger).install()
    try:
        # the line is made although the logger was set to WARNING, and it is not shown
        logger.info(AIOKAFKA_OUT_OF_RANGE, 120, TopicPartition("t.ep3", 3))
        assert loss.pending() == {("t.ep3", 3): 120}
        logger.info("Updating fetch positions")  # INFO stays hidden, as before
        logger.warning("Unexpected error while fetching data: %s", "X")
        assert [r.getMessage() for r in kept.records] == ["Unexpected error while fetching data: X"]
    finally:
        watch.uninstall()
        logger.removeHandler(kept)
    assert logger.level == logging.WARNING and watch not in logger.filters


def _constants(code: types.CodeType) -> list[object]:
    out: list[object] = []
    for c in code.co_consts:
        out.extend(_constants(c) if isinstance(c, types.CodeType) else [c])
    return out


def test_aiokafka_still_logs_the_out_of_range_line_the_watch_reads() -> None:
    """The pinned aiokafka's fetcher logs exactly this format on the logger the worker watches: a
    new aiokafka that words it differently fails here, not silently in production."""
    consts = [c for obj in vars(aiokafka_fetcher.Fetcher).values() if isinstance(obj, types.FunctionType)
              for c in _constants(obj.__code__)]
    assert AIOKAFKA_OUT_OF_RANGE in consts
    assert aiokafka_fetcher.log.name == AIOKAFKA_FETCHER_LOGGER


def test_the_same_gap_run_into_twice_is_counted_once() -> None:
    """Faust seeks to the committed offset again after aiokafka's first reset: the second reset
    meets the same deleted records, which were counted already."""
    loss = InputLoss()
    loss.reset("ep3", 0, 63)
    assert loss.arrived("ep3", 0, 70) == Lost("ep3", 0, 63, 70)
    loss.reset("ep3", 0, 63)
    assert loss.arrived("ep3", 0, 70) is None
    loss.reset("ep3", 0, 65)  # overlapping a counted gap: only what is new
    assert loss.arrived("ep3", 0, 90) == Lost("ep3", 0, 70, 90)


def test_the_watch_follows_logging_set_up_made_after_it() -> None:
    """Faust configures logging after the worker installs the watch: INFO lines of the fetcher
    show once the root logger is at INFO, as they would without the watch."""
    parent = logging.getLogger("tests.input_loss2")
    logger = logging.getLogger("tests.input_loss2.fetcher")
    parent.setLevel(logging.WARNING)
    kept = _Kept()
    logger.addHandler(kept)
    watch = OffsetResetWatch(InputLoss(), logger).install()
    try:
        logger.info("hidden")
        parent.setLevel(logging.INFO)
        logger.info("shown")
        logger.info(AIOKAFKA_OUT_OF_RANGE, 5, TopicPartition("t", 0))
        assert [r.getMessage() for r in kept.records] == ["shown"]
    finally:
        watch.uninstall()
        logger.removeHandler(kept)
        parent.setLevel(logging.NOTSET)
    assert logger.level == logging.NOTSET


def test_a_gap_known_without_a_failed_read_is_counted_once_and_with_what_was_already_counted() -> None:
    """`skipped` (a restored cursor below the broker's earliest offset) shares the count of `arrived`."""
    loss = InputLoss()
    assert loss.skipped("m", 0, 10, 60) == Lost("m", 0, 10, 60)
    assert loss.skipped("m", 0, 10, 60) is None  # the same gap found again
    assert loss.skipped("m", 0, 40, 80) == Lost("m", 0, 60, 80)  # only the part not counted
    assert loss.skipped("m", 1, 5, 5) is None  # nothing between
    loss.reset("m", 0, 70)
    assert loss.arrived("m", 0, 90) == Lost("m", 0, 80, 90)
