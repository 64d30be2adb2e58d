"""Benchmark: `divmon tapes diff` throughput and peak memory against the bare Avro read, same files, same run.

    .venv/bin/python bench/tapes_bench.py [--records 5000000] [--dir DIR] [--keep]

Generates a trading day of --records records (the simulator `streams.sim` when present, else a simple
generator), writes it as Avro tapes (one per feed per trading day, the recorder's layout and writer),
then measures, each in a fresh subprocess (so peak RSS is that run's alone):

- baseline: `fastavro.reader` over every file, records only counted: the ceiling of any Avro read;
- diff: `divmon tapes diff --json` over the same files: framing checks, canonical decimals, contract
  validation, the time-merge and the engine, i.e. the whole off-line verdict.

Prints records/s and peak RSS (ru_maxrss) of both, and their ratio. With --dir the tapes are reused
if present (generation of 5M records takes minutes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(n: int) -> Iterator[tuple[Any, int, Any]]:
    """(feed, ts_ms, record) in ts order: the simulator over a long day, or the worker's synthetic traffic."""
    try:
        from streams.sim import SimConfig, simulate

        return itertools.islice(simulate(SimConfig(duration_ms=7 * 86_400_000)), n)
    except ImportError:
        from streams.worker.synth import traffic

        return ((r.feed, r.ts_ms, r.record) for r in traffic(n_accounts=300, n_fills=n // 5))


def write_tapes(root: Path, n: int) -> int:
    from streams.codec import Codec
    from streams.codec.codec import write_body
    from streams.codec.convert import to_mapping
    from streams.tapes.calendar import tape_path, trading_day
    from streams.tapes.writer import TapeWriter

    writers: dict[Path, TapeWriter] = {}
    schemas: dict[Any, Any] = {}
    count = 0
    for count, (feed, ts, record) in enumerate(generate(n), 1):
        path = tape_path(root, trading_day(ts), feed.value)
        w = writers.get(path)
        if w is None:
            w = writers[path] = TapeWriter(path, feed)
            schemas.setdefault(feed, Codec(feed).schema)
        w.append(ts, feed.value, 0, count, write_body(schemas[feed], to_mapping(record)))
        if count % 500_000 == 0:
            print(f"  generated {count:,}", file=sys.stderr)
    for w in writers.values():
        w.close()
    return count


def measure(mode: str, files: list[str]) -> dict[str, Any]:
    """Run in the child: one mode over the files; records, seconds, peak RSS."""
    t0 = time.perf_counter()
    if mode == "baseline":
        import fastavro

        n = 0
        for f in files:
            with open(f, "rb") as fh:
                for _ in fastavro.reader(fh):
                    n += 1
    else:
        from click.testing import CliRunner

        from streams.cli import main

        res = CliRunner().invoke(main, ["tapes", "diff", "--json", "--no-progress", *files])
        if res.exit_code != 0:
            raise SystemExit(res.output)
        n = json.loads(res.stdout)["records"]
    secs = time.perf_counter() - t0
    return {"records": n, "seconds": secs, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(mode: str, files: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--measure", mode, *files], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5_000_000)
    ap.add_argument("--dir", type=Path, help="where the tapes go (reused if it holds tapes)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.files)))
        return
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="tapes-bench-")
    root = args.dir or Path(tmp.name)  # type: ignore[union-attr]
    if not list(root.glob("*/*.avro")):
        t0 = time.perf_counter()
        n = write_tapes(root, args.records)
        print(f"wrote {n:,} records in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    files = [str(p) for p in sorted(root.glob("*/*.avro"))]
    size = sum(Path(f).stat().st_size for f in files)
    base, diff = child("baseline", files), child("diff", files)
    print(f"tapes: {len(files)} files, {size / 1e6:,.1f} MB, {base['records']:,} records")
    for name, r in (("baseline fastavro.reader", base), ("divmon tapes diff", diff)):
        print(f"{name:<26} {r['records'] / r['seconds']:>12,.0f} rec/s  {r['seconds']:>8.1f} s  "
              f"peak RSS {r['maxrss_mb']:>8.1f} MB")
    ratio = (diff["records"] / diff["seconds"]) / (base["records"] / base["seconds"])
    print(f"diff / baseline throughput ratio: {ratio:.3f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
