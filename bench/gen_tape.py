"""Generate a large mixed JSON Lines tape for benchmarks: a simulated day with every fault injected.

    .venv/bin/python bench/gen_tape.py --records 1000000 --out /tmp/day.jsonl [--accounts 300] [--seed 7]

The day's length is sized from a short calibration run so that the tape holds about --records records
with the faults spread over it (the tape is cut at exactly --records). Prints records, seconds and
records/s of generation + writing, and the file size. Deterministic for a given seed and size.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

from streams.sim import SimConfig, ground_truth, simulate
from streams.sim.writers import write_tape

CALIBRATION_MS = 120_000


def day_for(records: int, accounts: int, seed: int) -> SimConfig:
    """A config whose day yields a little more than `records` records."""
    probe = SimConfig(seed=seed, accounts=accounts, duration_ms=CALIBRATION_MS)
    per_ms = sum(1 for _ in simulate(probe)) / CALIBRATION_MS
    duration = max(CALIBRATION_MS, math.ceil(records / per_ms * 1.05 / 1_000) * 1_000)
    return SimConfig(seed=seed, accounts=accounts, duration_ms=duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/day.jsonl"))
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    cfg = day_for(args.records, args.accounts, args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    n = write_tape(itertools.islice(simulate(cfg), args.records), args.out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = args.out.stat().st_size
    print(f"{n:,} records, {cfg.accounts} accounts, {cfg.duration_ms / 3_600_000:.2f} h of event time, "
          f"{len(ground_truth(cfg))} faults injected")
    print(f"generate+write: {wall:.1f} s wall, {cpu:.1f} s cpu, {n / wall:,.0f} records/s wall "
          f"({n / cpu:,.0f} per cpu-s); {size / 1e6:.0f} MB -> {args.out}")


if __name__ == "__main__":
    main()
