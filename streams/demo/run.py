"""`run_demo`: broker → topics → worker → simulated day → drain → stop → report, gate, plots, truth.

Guarantees:
- progress goes to stderr (one line per phase and a count every few seconds), results to stdout;
- every process the demo started (broker, worker) has exited when `run_demo` returns — on success,
  on failure, on Ctrl-C and on SIGTERM (turned into the same clean-up path);
- exit status: 0 when the demo ran and divmon found every injected fault (the gate's NOT_CLEARED is
  the expected verdict for a day with faults); 1 when a step failed, a fault went unreported or the
  gate cleared a faulty day; 130 when interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from streams.demo.broker import create_topics, start_broker
from streams.demo.procs import Children, DemoError
from streams.demo.results import Results, conclude
from streams.demo.traffic import day_config, produce_day, topic_partitions
from streams.demo.worker import check_alive, scrape, start_worker, wait_drained, wait_ready

PRODUCE_S = 45.0  # default pacing: the day is produced over about this many wall seconds


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path | None = None
    accounts: int = 300
    duration_s: int = 1800
    seed: int = 7
    speed: float = 0.0  # event-time seconds per wall second; 0 = the day over PRODUCE_S
    partitions: int = 4


class Progress:
    def __init__(self, write: Callable[[str], None]) -> None:
        self.t0, self.write = time.monotonic(), write

    def __call__(self, phase: str, message: str) -> None:
        self.write(f"[{time.monotonic() - self.t0:6.1f}s] {phase:<7} {message}")


@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt, even if the demo inherited SIGINT ignored (as a
    background job of a non-interactive shell does): both lead to the same clean-up."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _data_dir(opts: DemoOptions) -> Path:
    if opts.data_dir is None:
        return Path(tempfile.mkdtemp(prefix="divmon-demo-"))
    d = opts.data_dir.resolve()
    if (d / "chdb").exists():
        raise DemoError(f"{d} already holds a demo's data (chdb/): give a new or empty --data-dir")
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_demo(opts: DemoOptions, out: Callable[[str], None], err: Callable[[str], None]) -> int:
    """Run the whole demo (see module docstring); returns the exit status."""
    say = Progress(err)
    children = Children()
    try:
        with _signals_as_interrupt():
            data = _data_dir(opts)
            (data / "logs").mkdir(exist_ok=True)
            results, end_ms = _run(opts, data, children, say)
            code = _print(results, data, end_ms, opts.duration_s / 3600, out)
            say("done", "demo complete" if code == 0 else "demo finished with problems (see above)")
            return code
    except DemoError as exc:
        say("error", str(exc))
        return 1
    except KeyboardInterrupt:
        say("stop", "interrupted: stopping everything the demo started")
        return 130
    finally:
        for problem in children.stop_all():
            say("stop", problem)


def _run(opts: DemoOptions, data: Path, children: Children, say: Progress) -> tuple[Results, int]:
    say("data", f"{data}")
    broker, bootstrap = start_broker(children, data / "logs")
    say("broker", f"Tansu (pid {broker.pid}) on {bootstrap}, memory storage")
    create_topics(bootstrap, topic_partitions(opts.partitions))
    say("topics", f"{len(topic_partitions(opts.partitions))} input topics, "
        f"{opts.partitions} partitions per account feed")
    worker, port = start_worker(children, bootstrap, data, opts.partitions)
    say("worker", f"divmon worker (pid {worker.pid}) starting; metrics on :{port}; log {worker.log}")
    wait_ready(worker, port)
    say("worker", "ready: all partitions assigned, ClickHouse sink set up")
    cfg = day_config(opts.accounts, opts.duration_s, opts.seed)
    _write_truth(cfg, data / "ground_truth.json")
    speed = opts.speed or opts.duration_s / PRODUCE_S
    say("sim", f"{cfg.accounts} accounts, {opts.duration_s} s of event time at {speed:g}× "
        f"with {len(cfg.faults)} fault kinds: {', '.join(cfg.faults)}")

    def tick(n: int, ts: int) -> None:
        check_alive(worker)
        m = scrape(port)
        consumed = f"; worker consumed {int(sum(m.consumed.values())):,}" if m is not None else ""
        say("sim", f"{n:,} records produced, {100 * (ts - cfg.start_ms) / cfg.duration_ms:5.1f}% of the day"
            + consumed)

    produced = produce_day(cfg, bootstrap, speed, tick)
    say("sim", f"{sum(produced.values()):,} records produced: "
        + ", ".join(f"{f} {n:,}" for f, n in sorted(produced.items())))
    last = [0.0]

    def drained(got: int, want: int) -> None:
        if time.monotonic() - last[0] >= 3:
            last[0] = time.monotonic()
            say("worker", f"{got:,} / {want:,} records consumed")

    final = wait_drained(worker, port, produced, timeout=180 + opts.duration_s / 20, progress=drained)
    say("worker", f"caught up: {int(final.get('divmon_events_emitted_total')):,} event versions emitted, "
        "all stored; stopping the worker and the broker")
    for problem in children.stop_all():
        say("stop", problem)
    say("results", "report, gate and plots from ClickHouse")
    return conclude(data, cfg, int(final.get("divmon_ep3_stale_total"))), cfg.end_ms


def _write_truth(cfg: object, path: Path) -> None:
    from streams.sim import SimConfig, ground_truth

    assert isinstance(cfg, SimConfig)
    path.write_text(json.dumps([asdict(f) for f in ground_truth(cfg)], indent=1, default=str) + "\n",
                    encoding="utf-8")


def _print(r: Results, data: Path, end_ms: int, soak_h: float, out: Callable[[str], None]) -> int:
    from streams.report.timeutil import iso

    missing = [ln for ln in r.lines if not ln.ok]
    out("=" * 30 + " attribution report " + "=" * 30 + "\n" + r.report + "\n")
    out("=" * 30 + " gate " + "=" * 30 + "\n" + r.gate)
    if r.verdict == "NOT_CLEARED":
        out("(NOT_CLEARED is the expected verdict here: the simulated day has faults injected on purpose, and "
            "a day with unexplained mismatches, witness anomalies or too short a soak must never clear.)\n")
    else:
        out(f"UNEXPECTED: the gate said {r.verdict} for a day with injected faults.\n")
    out("=" * 30 + " injected vs found " + "=" * 30 + "\n" + r.truth + "\n")
    out(f"data:   {data}  (ClickHouse: {data / 'chdb'}, logs: {data / 'logs'}, "
        f"ground truth: {data / 'ground_truth.json'})")
    for path in r.plots:
        out(f"plot:   {path}")
    for w in r.warnings:
        out(f"warning: {w}")
    where = f"--clickhouse-path {data / 'chdb'} --env demo"
    out(f"again:  divmon report {where}\n        divmon gate {where} --now {iso(end_ms)} --soak-target-h "
        f"{soak_h:g}\n        (add --json, or --plot FILE.png)")
    if missing:
        out(f"PROBLEM: {len(missing)} line(s) marked ✗ above: an injected fault divmon did not report, or an "
            "unexplained finding no fault explains.")
    return 1 if missing or r.verdict != "NOT_CLEARED" else 0


def main_stdio(opts: DemoOptions) -> int:
    return run_demo(opts, lambda s: print(s, flush=True), lambda s: print(s, file=sys.stderr, flush=True))
