"""Every benchmark in one command (`make bench`), each printing its figures next to its baseline.

    .venv/bin/python bench/run_all.py [--quick] [--only replay,codec,worker,pipeline,tapes]

Full sizes are the ones the README's figures were measured with (about 15 minutes on a 2-core
machine, most of it the 5M-record tapes benchmark); `--quick` runs each on a tenth of the data to
check that they work (ratios on small inputs are noisier). The worker benchmark starts its own
Kafka broker (`make kafka` fetches the jars). Exit status: 0 when every benchmark ran, else the
number of benchmarks that failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, full-size arguments, quick arguments)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "replay": ("replay_bench.py", [], ["--records", "100000", "--tape", "/tmp/divmon-bench/quick.jsonl"]),
    "codec": ("codec_bench.py", [], ["--records", "20000", "--repeat", "2"]),
    "worker": ("worker_bench.py", [], ["--fills", "15000", "--accounts", "200", "--naive-records", "10000"]),
    "pipeline": ("pipeline_bench.py", [], ["--fills", "2000", "--accounts", "200", "--rounds", "1"]),
    "tapes": ("tapes_bench.py", [], ["--records", "500000", "--dir", "/tmp/divmon-bench/tapes-quick"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the data: check they run")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset (default: all)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    failed = []
    for i, name in enumerate(names, 1):
        script, full, quick = BENCHES[name]
        print(f"\n=== [{i}/{len(names)}] {name}: bench/{script} {' '.join(quick if args.quick else full)}",
              flush=True)
        began = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / script), *(quick if args.quick else full)])
        print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.monotonic() - began:.0f} s",
              flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
