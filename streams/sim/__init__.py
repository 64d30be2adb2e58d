"""A deterministic simulator of a trading day, for golden scenarios, the demo, soak and benchmarks.

    simulate(SimConfig(seed=..., accounts=..., duration_ms=...)) -> Iterator[(feed, ts_ms, record)]
    ground_truth(config) -> list[Fault]     what was injected and the events it must produce

Guarantees: records are `streams.core.records` values that pass `parse_value` once serialised; they
come in non-decreasing `ts_ms`; the same config yields the same records; memory is constant in the
length of the day. Ordinary traffic produces only explained events (heavy `propagation_race` noise);
every unexplained event belongs to a fault listed by `ground_truth`.
"""

from __future__ import annotations

from collections.abc import Iterator

from streams.sim.config import FAULT_KINDS, SimConfig, parse_faults
from streams.sim.faults import Expect, Fault, ground_truth
from streams.sim.world import Emitted, World

__all__ = ["FAULT_KINDS", "Emitted", "Expect", "Fault", "SimConfig", "ground_truth", "parse_faults", "simulate"]


def simulate(cfg: SimConfig) -> Iterator[Emitted]:
    """The day's records, streamed in event-time order."""
    from streams.sim import inject, traffic
    from streams.sim.accounts import ordinary_accounts, seed_views
    from streams.sim.faults import fault_books

    world = World(cfg)
    for acct in [*ordinary_accounts(cfg, world.rng, world.market), *fault_books(cfg)]:
        seed_views(acct)
        world.accounts[acct.account_id] = acct
    inject.schedule(world)
    world.at(cfg.start_ms, traffic.open_day)
    return world.run()
