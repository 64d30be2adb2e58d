"""The worker driver without a broker: what it tells Faust's fetch loop, around rebalances."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.agents.runtime import Worker
from streams.config import Settings
from streams.sinks import MemorySink


def new_worker(tmp_path: Path) -> Worker:
    """A worker that is never started (no broker): its Faust app and consumer exist, unconnected."""
    return Worker(Settings.load({"data_dir": str(tmp_path), "web_port": 0, "metrics_port": 0}, environ={}),
                  MemorySink())


def test_a_rebalance_is_not_held_by_the_commit_gates_backpressure(tmp_path: Path) -> None:
    """The gate's backpressure holds the whole fetch loop, and table recovery reads the changelogs
    through that loop. A worker whose gate was behind at its last warm tick (a loaded machine) kept
    the loop held through the rebalance: recovery never ended, so it stayed warming for good and
    never fed the partitions it took over. While warming the loop must be free to fetch."""

    async def run() -> None:
        worker = new_worker(tmp_path)
        worker.router.set_gate_full(True)  # the last warm tick: more than 4 checkpoints waiting
        worker.app.rebalancing = True  # Faust: on_rebalance_start, then the revoke callbacks
        await worker._on_revoked(worker.app, set())
        assert worker._tick(1_000.0) is False  # warming: recovery under way, nothing fed
        await asyncio.wait_for(worker.router.wait_capacity(), 1.0)

    asyncio.run(run())

