"""Replay throughput against bare JSON parsing of the same tape, measured in the same run.

    .venv/bin/python bench/replay_bench.py [--records 1000000] [--tape /tmp/divmon-bench/day.jsonl]

Generates a simulated mixed day (bench/gen_tape.py; reused if present with the same size), then
measures, each in a fresh subprocess so that neither inherits the other's heap:
  1. bare parse: `json.loads` of every line (the floor for a json-based JSON Lines reader);
  2. bare msgspec: `msgspec.json.decode` of every line, untyped (the floor for the reader as it is:
     it decodes lines with msgspec into typed structs, and only odd lines with json);
  3. read: the tape reader (parse + contract validation + typed records), no engine;
  4. replay: the whole `divmon replay` path (reader + engine + the verdict folded as events come), on
     the engine this checkout runs (compiled by `make install` where a C compiler is: it says which);
  5. replay_pure: the same on the engine's pure-Python modules (DIVMON_PURE=1), as run without one.
CPU seconds are reported (process time), which is steadier than wall time on a shared machine, but
not steady enough on a host with noisy neighbours (the same phase measured 0.9 to 1.5 s within a
minute here): the phases run in interleaved rounds (`--rounds`, default 3) and each phase's best
round counts, with the spread between its best and worst round printed next to it.
With `--instructions N`, the phases are also run under `valgrind --tool=callgrind` on the tape's
first N records and on an empty tape, and the difference (instructions per record, start-up and
imports excluded) is printed with its ratio to the bare parse. Instruction counts don't move with
the host's load, so they compare runs and machines that CPU seconds can't; they don't see cache
misses or branch mispredictions, which is where interpreted code loses most against a C loop.
Goal from the issue: replay ≤ 3× bare parse.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASES = {
    "parse": """
import json, sys
n = 0
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        json.loads(line); n += 1
print(n)
""",
    "msgspec": """
import sys
import msgspec
decode = msgspec.json.decode
n = 0
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        decode(line); n += 1
print(n)
""",
    "read": """
import sys
from pathlib import Path
from streams.tapes.replay import open_tape
n = sum(1 for _ in open_tape(Path(sys.argv[1])))
print(n)
""",
    "replay": """
import sys
from pathlib import Path
from streams.core.params import EngineConfig
from streams.tapes import replay
from streams.tapes.summary import Summary
s = Summary()
r = replay.run(replay.merge([replay.open_tape(Path(sys.argv[1]))]), EngineConfig(), on_events=s.add, keep=False)
v = s.result(r.stats, r.records)
from streams._native import engine_build
print(r.records, r.emitted, len(v["unexplained_mismatches"]), engine_build().replace(" ", "_"))
""",
}

PHASES["replay_pure"] = PHASES["replay"]  # the same, on the engine's pure-Python modules (DIVMON_PURE=1)
ENV = {"replay_pure": {"DIVMON_PURE": "1"}}

MEASURE = """
import resource, sys, time
t0 = time.process_time()
exec(compile(sys.argv.pop(1), "phase", "exec"))
cpu = time.process_time() - t0
print("CPU", cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_phase(name: str, tape: Path) -> tuple[float, int, str]:
    out = subprocess.run([sys.executable, "-c", MEASURE, PHASES[name], str(tape)], cwd=ROOT,
                         env={**os.environ, **ENV.get(name, {})}, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    result = out[0]
    cpu_line = next(line for line in out if line.startswith("CPU"))
    _, cpu, rss = cpu_line.split()
    return float(cpu), int(rss), result


def count_instructions(name: str, tape: Path) -> int:
    """Instructions executed by one phase on `tape` (callgrind's total, start-up included)."""
    err = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          "-c", MEASURE, PHASES[name], str(tape)], cwd=ROOT, env={**os.environ, **ENV.get(name, {})},
                         capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output for {name}:\n{err[-2000:]}")
    return int(found.group(1))


def instructions(tape: Path, n: int) -> dict[str, float]:
    """Instructions per record of each phase on the first `n` records of `tape`, net of start-up."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind on PATH (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        head, empty = Path(tmp) / "head.jsonl", Path(tmp) / "empty.jsonl"
        with tape.open(encoding="utf-8") as src, head.open("w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i == n:
                    break
                dst.write(line)
        empty.write_text("")
        jobs = [(name, t) for name in PHASES for t in (head, empty)]
        with ThreadPoolExecutor(max_workers=2) as pool:  # callgrind is ~50x slower: use both cores
            counts = dict(zip(jobs, pool.map(lambda job: count_instructions(*job), jobs), strict=True))
    return {name: (counts[(name, head)] - counts[(name, empty)]) / n for name in PHASES}


def ensure_tape(tape: Path, records: int) -> None:
    meta = tape.with_suffix(".meta.json")
    if tape.exists() and meta.exists() and json.loads(meta.read_text()).get("records") == records:
        return
    tape.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating a {records:,}-record tape at {tape} ...", file=sys.stderr)
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_tape.py"), "--records", str(records),
                    "--out", str(tape)], cwd=ROOT, check=True, stdout=sys.stderr)
    meta.write_text(json.dumps({"records": records}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--tape", type=Path, default=Path("/tmp/divmon-bench/day.jsonl"))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each phase's best counts")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--instructions", type=int, metavar="N", default=0,
                    help="also count instructions (valgrind) on the first N records; 50000 takes ~5 min")
    args = ap.parse_args()
    ensure_tape(args.tape, args.records)
    started = time.perf_counter()
    rounds: dict[str, list[tuple[float, int, str]]] = {name: [] for name in PHASES}
    for i in range(args.rounds):
        for name in PHASES:  # interleaved, so that a slow spell of the host hits every phase alike
            rounds[name].append(run_phase(name, args.tape))
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{n} {r[-1][0]:.2f} s" for n, r in rounds.items()),
              file=sys.stderr, flush=True)
    figures = {}
    for name, runs in rounds.items():
        cpu, rss_kb, result = min(runs)
        figures[name] = {"cpu_s": round(cpu, 2), "records_per_cpu_s": round(args.records / cpu),
                         "peak_rss_mb": round(rss_kb / 1024), "result": result,
                         "spread": round(max(r[0] for r in runs) / cpu, 2)}
    parse, bare_msgspec = figures["parse"]["cpu_s"], figures["msgspec"]["cpu_s"]
    for f in figures.values():
        f["ratio_to_parse"] = round(f["cpu_s"] / parse, 2)
        f["ratio_to_msgspec"] = round(f["cpu_s"] / bare_msgspec, 2)
    if args.instructions:
        per_record = instructions(args.tape, args.instructions)
        for name, f in figures.items():
            f["instructions_per_record"] = round(per_record[name])
            f["instructions_ratio_to_parse"] = round(per_record[name] / per_record["parse"], 2)
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"tape: {args.tape} ({args.records:,} records, {args.tape.stat().st_size / 2**20:.0f} MiB)")
        print(f"{'phase':<11} {'CPU s':>8} {'records/s':>12} {'× parse':>8} {'× msgspec':>10} {'peak RSS':>9} "
              f"{'worst/best':>11}")
        for name, f in figures.items():
            print(f"{name:<11} {f['cpu_s']:>8.2f} {f['records_per_cpu_s']:>12,} {f['ratio_to_parse']:>8.2f} "
                  f"{f['ratio_to_msgspec']:>10.2f} {f['peak_rss_mb']:>7} MB {f['spread']:>10.2f}×")
        print(f"replay: {figures['replay']['result']}; replay_pure: {figures['replay_pure']['result']} "
              "(records, events emitted, unexplained, engine)")
        if args.instructions:
            print(f"instructions per record on the first {args.instructions:,} records (callgrind, start-up "
                  "excluded): " + ", ".join(f"{n} {f['instructions_per_record']:,} "
                                            f"({f['instructions_ratio_to_parse']:.2f}× parse)"
                                            for n, f in figures.items()))
        print(f"goal: replay ≤ 3.00× bare parse — measured {figures['replay']['ratio_to_parse']:.2f}× "
              f"(best of {args.rounds} rounds, {time.perf_counter() - started:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
