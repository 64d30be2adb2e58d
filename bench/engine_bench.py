"""The bare engine on a tape: records read into a list first, then only `Engine.process` and
`take_events` timed (CPU time), best of `--rounds`.

    .venv/bin/python bench/engine_bench.py TAPE [--limit N] [--rounds 3] [--profile]
    .venv/bin/python bench/engine_bench.py --synth 12000 [--instructions] [--compare DIR]

`--synth FILLS` runs on the worker benchmark's traffic (`streams.worker.synth`, ~3.6 records a
fill, 500 accounts by default) instead of a tape.

`--instructions` counts instructions instead of seconds, with valgrind's callgrind: the engine's
count is that of a run (load + engine) minus that of a load-only run, divided by the records. It is
the same figure on a loaded or an idle machine (PYTHONHASHSEED is fixed), so a change of a few
percent shows, where CPU time on a shared 2-core host moves by 40% between runs. ~50x slower than
a timed run: 40k records take about a minute per checkout.

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
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# `--compare DIR` runs this script on DIR's package (DIR's own script may predate its options)
sys.path.insert(0, os.environ.get("DIVMON_BENCH_CHECKOUT") or str(ROOT))

from streams.core.engine import Engine  # noqa: E402
from streams.core.params import EngineConfig  # noqa: E402
from streams.tapes.replay import open_tape  # noqa: E402


def load(path: Path | None, limit: int | None, synth: int = 0, accounts: int = 500) -> list[Any]:
    if path is None:
        from streams.worker.synth import traffic
        return list(itertools.islice(traffic(n_accounts=accounts, n_fills=synth, seed=1, step_ms=5), limit))
    return list(itertools.islice(open_tape(path), limit))


def feed(eng: Engine, records: list[Any]) -> list[Any]:
    """What is measured, timed (`run`) or counted (`--instructions`): `process` every record and
    `take_events` every 1,000."""
    process, take = eng.process, eng.take_events
    events = []
    for i, (ts_ms, feed_, record, _where) in enumerate(records):
        process(feed_, ts_ms, record)
        if i % 1000 == 0:
            events.extend(take())
    events.extend(take())
    return events


def instructions(checkout: Path, argv: list[str]) -> int:
    """Engine instructions over the records `argv` selects, measured on `checkout`."""
    counts = []
    for stage in ("load", "run"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable,
                   __file__, *argv, "--once", stage]
            env = {**os.environ, "DIVMON_BENCH_CHECKOUT": str(checkout), "PYTHONHASHSEED": "0"}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            found = re.search(r"Collected : (\d+)", proc.stderr)
            if proc.returncode != 0 or found is None:
                sys.exit(f"engine_bench: callgrind run ({stage}) on {checkout} failed:\n{proc.stderr[-2000:]}")
            counts.append(int(found.group(1)))
    return counts[1] - counts[0]


def run(records: list[Any], profile: cProfile.Profile | None = None) -> tuple[float, str, int]:
    eng = Engine(EngineConfig())
    if profile is not None:
        profile.enable()
    t0 = time.process_time()
    events = feed(eng, records)
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
    ap.add_argument("tape", type=Path, nargs="?", default=None, help="a tape (or --synth)")
    ap.add_argument("--synth", type=int, default=0, metavar="FILLS", help="the worker bench's traffic, FILLS fills")
    ap.add_argument("--accounts", type=int, default=500, help="accounts of --synth traffic")
    ap.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout to measure interleaved")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # one round per stdin line
    ap.add_argument("--once", choices=("load", "run"), help=argparse.SUPPRESS)  # one callgrind stage
    args = ap.parse_args()
    if (args.tape is None) == (not args.synth):
        ap.error("give a TAPE or --synth FILLS (one of them)")
    selection = ([str(args.tape)] if args.tape else ["--synth", str(args.synth), "--accounts", str(args.accounts)]
                 ) + (["--limit", str(args.limit)] if args.limit is not None else [])
    if args.instructions:
        if shutil.which("valgrind") is None:
            sys.exit("engine_bench: --instructions needs valgrind (apt-get install valgrind)")
        checkouts = [("this", ROOT)] + ([("other", args.compare.resolve())] if args.compare else [])
        n = len(load(args.tape, args.limit, args.synth, args.accounts))
        counts = {}
        for name, path in checkouts:
            print(f"counting {name} ({path}) under callgrind ...", flush=True)
            counts[name] = instructions(path, selection)
            print(f"  {name}: {counts[name] / n:,.0f} instructions/record", flush=True)
        print(f"{n:,} records: " + ", ".join(f"{k} {v / n:,.0f} instructions/record" for k, v in counts.items())
              + (f" ({counts['this'] / counts['other']:.3f}× other)" if "other" in counts else ""))
        return
    records = load(args.tape, args.limit, args.synth, args.accounts)
    if args.once:
        if args.once == "run":
            feed(Engine(EngineConfig()), records)
        return
    n = len(records)
    if args.serve:
        print("ready", flush=True)
        for _ in sys.stdin:
            cpu, dig, ne = run(records)
            print(json.dumps([cpu, dig, ne]), flush=True)
        return
    other = None
    if args.compare is not None:
        cmd = [sys.executable, __file__, *selection, "--serve"]
        other = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "DIVMON_BENCH_CHECKOUT": str(args.compare.resolve())})
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
