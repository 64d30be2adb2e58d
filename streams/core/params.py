"""The engine's parameters: everything that changes a verdict, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

Baseline = Literal["first", "risk", "ep3"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Defaults are DESIGN's: grace 2 s, sweep every 60 s, dormant after 10 min, threshold 0.

    `witness_baseline` chooses what seeds the fills ledger of an account: `first` takes the first
    full snapshot seen (RE preferred when both arrive at the same instant), `risk` only an RE
    snapshot, `ep3` only a non-empty EP3 snapshot (the choice after RE retirement).
    `scope` labels rows that describe a slice of the accounts (a worker's partitions).
    `risk_silence_ms` (0 = off) makes the EP3-vs-RE comparison stand down once no risk snapshot at
    all has arrived for that long — RE retired — instead of measuring EP3 against a frozen view:
    no new mismatch or flip is opened, and one whose grace ends while RE is silent is withdrawn
    (counted). The witness is unaffected. Off by default: a quiet RE is legitimately silent.
    """

    env: str = "demo"
    grace_ms: int = 2_000
    thresholds: tuple[Decimal, ...] = (Decimal(0),)
    sweep_interval_ms: int = 60_000
    dormant_after_ms: int = 600_000
    witness_baseline: Baseline = "first"
    scope: str = "all"
    risk_silence_ms: int = 0

    def __post_init__(self) -> None:
        if self.grace_ms < 0:
            raise ValueError(f"grace_ms must be >= 0, got {self.grace_ms}")
        if self.sweep_interval_ms <= 0:
            raise ValueError(f"sweep_interval_ms must be > 0, got {self.sweep_interval_ms}")
        if not self.thresholds:
            raise ValueError("at least one avail threshold is needed")
