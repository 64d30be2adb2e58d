"""What a simulated day looks like: one frozen `SimConfig`, every knob with a sane default.

The same config always yields the same records (the seed drives one `random.Random`), so a config
is a complete, reproducible description of a scenario: tests, the demo, soak and benchmarks share it.

Noise knobs are bounded so that ordinary traffic stays *explained*: per (account, symbol) at most one
fill is in flight, and the risk engine's lag minus EP3's latency never exceeds the grace window, so
every disagreement they cause resolves within grace (`propagation_race`). Only injected faults may
produce unexplained events.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fault kinds, in the order they happen during the day (see `streams.sim.faults`).
FAULT_KINDS: tuple[str, ...] = (
    "bookmark",
    "missing_mark",
    "dropped_dormant",
    "oom_gap_flip",
    "phantom",
    "persistent",
    "duplicate_seq",
    "source_flip",
    "witness_only_drop",
)

DEFAULT_START_MS = 1_780_000_000_000  # 2026-05-28T20:26:40Z: a fixed, reproducible epoch


@dataclass(frozen=True, slots=True)
class SimConfig:
    """A simulated trading day.

    - `accounts`: total accounts, including the fault accounts (`FAULT_ACCOUNTS` of them);
      `mm_share` of the others are market makers with fast fills.
    - `duration_ms` of event time from `start_ms`; fault times scale with it.
    - fill cadence: mean ms between fills per account (`mm_fill_ms`, `fill_ms`), divided by
      `burst_factor` inside bursts (`burst_len_ms` every `burst_every_ms`).
    - latencies after a fill: EP3 in `ep3_latency_ms`, RE in `re_lag_ms` (or `re_burst_lag_ms` in a
      burst). Bounded: max RE lag - min EP3 latency must stay within `grace_ms`.
    - `og_interval_ms`: og.margin sweep period for `og_share` of the ordinary accounts (fault
      accounts always report); `re_refresh_ms`: RE republishes an unchanged account this often.
    - `faults`: the fault kinds to inject (a subset of `FAULT_KINDS`).
    """

    seed: int = 7
    accounts: int = 300
    duration_ms: int = 3_600_000
    start_ms: int = DEFAULT_START_MS
    mm_share: float = 0.1
    mm_fill_ms: int = 900
    fill_ms: int = 120_000
    burst_every_ms: int = 300_000
    burst_len_ms: int = 30_000
    burst_factor: int = 4
    ep3_latency_ms: tuple[int, int] = (5, 300)
    re_lag_ms: tuple[int, int] = (20, 700)
    re_burst_lag_ms: tuple[int, int] = (600, 1_900)
    mark_interval_ms: int = 1_000
    og_interval_ms: int = 2_000
    og_share: float = 0.25
    re_refresh_ms: int = 30_000
    grace_ms: int = 2_000
    faults: tuple[str, ...] = FAULT_KINDS

    def __post_init__(self) -> None:
        if self.accounts < FAULT_ACCOUNTS + 2:
            raise ValueError(f"accounts must be at least {FAULT_ACCOUNTS + 2}, got {self.accounts}")
        if self.duration_ms < MIN_DURATION_MS:
            raise ValueError(f"duration_ms must be at least {MIN_DURATION_MS}, got {self.duration_ms}")
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        worst = max(self.re_lag_ms[1], self.re_burst_lag_ms[1]) - self.ep3_latency_ms[0]
        if worst > self.grace_ms or self.ep3_latency_ms[1] - self.re_lag_ms[0] > self.grace_ms:
            raise ValueError("RE lag and EP3 latency must differ by at most grace_ms, or noise turns persistent")
        for name in ("mm_fill_ms", "fill_ms", "mark_interval_ms", "og_interval_ms", "re_refresh_ms",
                     "burst_every_ms", "burst_factor"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms

    def at(self, fraction: float) -> int:
        """The event time at `fraction` of the day, on a whole second (fault schedules use it)."""
        offset = int(self.duration_ms * fraction)
        return self.start_ms + offset - offset % 1_000


# Accounts reserved for faults (no random fills on them), and the shortest day that fits them all.
FAULT_ACCOUNTS = 8
MIN_DURATION_MS = 120_000


def parse_faults(spec: str) -> tuple[str, ...]:
    """`all`, `none`, or a comma-separated list of fault kinds (validated by SimConfig)."""
    spec = spec.strip()
    if spec == "all":
        return FAULT_KINDS
    if spec in ("none", ""):
        return ()
    return tuple(k.strip() for k in spec.split(",") if k.strip())
