"""The bare engine on a tape: records read into a list first, then only `Engine.process` and
`take_events` timed (CPU time), best of `--rounds`.

    .venv/bin/python bench/engine_bench.py TAPE [--limit N] [--rounds 3] [--profile]

The end of input is driven as replay does (`flush`, `close_minute`, `pending`), untimed. The digest
over every event's `to_dict()` lets a change of the engine show that its output did not change.
`--compare DIR` runs the same measurement on another checkout (e.g. the commit before a change) in a
subprocess, interleaved round by round with this one, so both see the same machine.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import itertools
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.core.engine import Engine  # noqa: E402
from streams.core.params import EngineConfig  # noqa: E402
from streams.tapes.replay import open_tape  # noqa: E402


def load(path: Path, limit: int | None) -> list[Any]:
    return list(itertools.islice(open_tape(path), limit))


def run(records: list[Any], profile: cProfile.Profile | None = None) -> tuple[float, str, int]:
    eng = Engine(EngineConfig())
    process, take = eng.process, eng.take_events
    events = []
    if profile is not None:
        profile.enable()
    t0 = time.process_time()
    for i, (ts_ms, feed, record, _where) in enumerate(records):
        process(feed, ts_ms, record)
        if i % 1000 == 0:
            events.extend(take())
    events.extend(take())
    cpu = time.process_time() - t0
    if profile is not None:
        profile.disable()
    eng.flush()
    eng.close_minute()
    events.extend(eng.take_events())
    events.extend(eng.pending())
    h = hashlib.sha256()
    for e in events:
        h.update(json.dumps(e.to_dict(), sort_keys=True).encode())
        h.update(b"\n")
    return cpu, h.hexdigest()[:16], len(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tape", type=Path)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout to measure interleaved")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # one round per stdin line
    args = ap.parse_args()
    records = load(args.tape, args.limit)
    n = len(records)
    if args.serve:
        print("ready", flush=True)
        for _ in sys.stdin:
            cpu, dig, ne = run(records)
            print(json.dumps([cpu, dig, ne]), flush=True)
        return
    other = None
    if args.compare is not None:
        cmd = [sys.executable, str(args.compare / "bench" / "engine_bench.py"), str(args.tape), "--serve"]
        if args.limit is not None:
            cmd += ["--limit", str(args.limit)]
        other = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={"PYTHONPATH": str(args.compare)})
        assert other.stdin is not None and other.stdout is not None
        assert other.stdout.readline().strip() == "ready"
    best: dict[str, float] = {}
    for i in range(args.rounds):
        rows = []
        cpu, dig, ne = run(records)
        rows.append(("this", cpu, dig, ne))
        if other is not None:
            assert other.stdin is not None and other.stdout is not None
            other.stdin.write("go\n")
            other.stdin.flush()
            ocpu, odig, one = json.loads(other.stdout.readline())
            rows.append(("other", ocpu, odig, one))
        for name, c, d, k in rows:
            best[name] = min(best.get(name, c), c)
            print(f"round {i + 1} {name}: {c / n * 1e6:.2f} µs/record, {k:,} events, digest {d}", flush=True)
    if other is not None:
        assert other.stdin is not None
        other.stdin.close()
        other.wait()
    print(f"{n:,} records, best of {args.rounds}: " + ", ".join(
        f"{k} {v / n * 1e6:.2f} µs/record" for k, v in best.items())
        + (f" ({best['this'] / best['other']:.2f}× other)" if "other" in best else ""))
    if args.profile:
        prof = cProfile.Profile()
        run(records, prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
