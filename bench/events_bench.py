"""The two per-event costs of the engine, each in its Python twin and in C (streams/core/_cevents.c),
interleaved round by round in one process (CPU time, best of `--rounds`): an episode id
(`episode_id`) and a 22-field `PositionMismatch` (`new_position_mismatch`; also `PositionMismatch(...)`
itself for scale).

    .venv/bin/python bench/events_bench.py [--calls 200000] [--rounds 7]

The C side is the native build's module, or one compiled for this run when the build isn't in use
(needs a C compiler).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams import _native  # noqa: E402
from streams.core.events import PositionMismatch, fast_constructor, py_episode_id  # noqa: E402


def c_module(tmp: Path) -> ModuleType:
    built = _native.c_module("streams.core._cevents")
    if built is not None:
        return built
    from tests.support import cnative

    return cnative.load(cnative.build("_cevents", tmp))


def per_call(fn: Callable[..., Any], args: tuple[Any, ...], calls: int) -> float:
    """CPU seconds per call of fn(*args), over `calls` calls (unrolled by 10)."""
    rng = range(calls // 10)
    t0 = time.process_time()
    for _ in rng:
        fn(*args); fn(*args); fn(*args); fn(*args); fn(*args)  # noqa: E702
        fn(*args); fn(*args); fn(*args); fn(*args); fn(*args)  # noqa: E702
    return (time.process_time() - t0) / (len(rng) * 10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="divmon-events-bench-") as tmp:
        c = c_module(Path(tmp))
        names = tuple(f.name for f in dataclasses.fields(PositionMismatch))
        ids = ("demo", "position_mismatch", "ACC-000123", "BTC-PERP", 1_780_000_123_456)
        d = Decimal("13.5")
        values = ("0" * 32, 2, "demo", "EP3", "ACC-000123", "BTC-PERP", "confirmed", "persistent", d, None, d,
                  1_780_000_000_000, 1_780_000_002_000, None, "EP3", d, d, d, 250, d, d, d)
        cases: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
            "episode_id python": (py_episode_id, ids),
            "episode_id C": (c.IdDigest(py_episode_id, 5), ids),
            "PositionMismatch(...)": (PositionMismatch, values),
            "new_position_mismatch python": (fast_constructor(PositionMismatch), values),
            "new_position_mismatch C": (c.SlotBuilder(PositionMismatch, names), values),
        }
        assert cases["episode_id C"][0](*ids) == py_episode_id(*ids)
        assert cases["new_position_mismatch C"][0](*values) == PositionMismatch(*values)
        best: dict[str, float] = {}
        for r in range(args.rounds):
            for name, (fn, a) in cases.items():  # interleaved: every case in every round
                best[name] = min(best.get(name, 1e9), per_call(fn, a, args.calls))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v * 1e6:.3f}" for k, v in best.items()), flush=True)
    print(f"\nbest of {args.rounds} rounds, {args.calls:,} calls each (engine: {_native.engine_build()}):")
    for name, v in best.items():
        print(f"  {name:32s} {v * 1e6:7.3f} µs")
    for what in ("episode_id", "new_position_mismatch"):
        print(f"  {what}: C is {best[f'{what} python'] / best[f'{what} C']:.1f}x the Python twin")


if __name__ == "__main__":
    main()
