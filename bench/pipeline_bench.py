"""The worker's "engine" stage without Kafka: `Pipeline.step` next to bare `Engine`s on the same records.

    .venv/bin/python bench/pipeline_bench.py [--fills 20000] [--accounts 2000] [--rounds 3] [--profile]

Records come from `streams.worker.synth.traffic` (what bench/worker_bench.py produces), Avro-encoded and
split like the worker bench (4 account partitions, one marks and one instruments partition), then
decoded once with the input codecs. Measured in the same run, interleaved, best of `--rounds`, CPU time:
1. engine: one bare `Engine` fed every record in ts order (`process`, `advance`, `take_events`): replay;
2. engines: one bare `Engine` per partition, each fed its account records and every mark/instrument
   (the work the partitioned worker cannot avoid);
3. pipeline: `Pipeline.ingest` of round-robin fetch-sized chunks per topic-partition and `Pipeline.step`
   after each round, as the worker's tick does, wall time moving as if at `--rate` records/s; only
   `step` is timed (the worker's "engine" stage), and `ingest` (its "decode" stage) apart;
   twice: with the worker process's GC thresholds (`streams.agents.runtime.GC_THRESHOLDS`) and with
   CPython's default ones, whose collections cost the decode stage ~half its time.
µs are per input record (marks and instruments counted once), as the worker's stage metric is.
Then the cost of the worker's open-episode gauges after such a run: a count of every account (what
the worker did each second) against a read of the counts its checkpoints keep.
`--profile` prints a cProfile of the pipeline's `step` calls. The event digest lets a change of the
worker's driver show that its output did not change.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import sys
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.agents.runtime import GC_THRESHOLDS  # noqa: E402
from streams.codec import input_codecs  # noqa: E402
from streams.core.engine import Engine  # noqa: E402
from streams.core.events import Event  # noqa: E402
from streams.core.params import EngineConfig  # noqa: E402
from streams.core.records import Feed  # noqa: E402
from streams.worker.partition import GLOBAL_FEEDS  # noqa: E402
from streams.worker.pipeline import Pipeline, Raw  # noqa: E402
from streams.worker.synth import traffic  # noqa: E402
from tests.support.stores import DictStore  # noqa: E402

PARTITIONS = 4
TOPICS = {f: f.value for f in Feed}
TP = tuple[str, int]


def build(n_fills: int, n_accounts: int) -> tuple[dict[TP, list[Raw]], list[tuple[int, Feed, Any, int]]]:
    """Raw records per topic-partition, and the decoded records in ts order (with their partition)."""
    codecs = input_codecs()
    topics: dict[TP, list[Raw]] = defaultdict(list)
    where = []
    for r in traffic(n_accounts=n_accounts, n_fills=n_fills, seed=1, step_ms=5):
        p = 0 if r.feed in GLOBAL_FEEDS else zlib.crc32(r.record.account_id.encode()) % PARTITIONS  # type: ignore[union-attr]
        tp = (TOPICS[r.feed], p)
        raws = topics[tp]
        raws.append((len(raws), r.ts_ms, None, codecs[r.feed].encode(r.record)))
        where.append((r.ts_ms, r.feed, p, tp, len(raws) - 1))
    decoded = {tp: codecs[Feed(tp[0])].decode_many([r[3] or b"" for r in raws]) for tp, raws in topics.items()}
    ordered = [(ts, feed, decoded[tp][i], p) for ts, feed, p, tp, i in where]
    return dict(topics), ordered


def digest(events: list[Event]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(repr(sorted(e.to_dict().items())).encode())
    return h.hexdigest()[:12]


def run_engine(ordered: list[tuple[int, Feed, Any, int]]) -> tuple[float, int]:
    eng = Engine(EngineConfig(scope="all"))
    n = 0
    t0 = time.process_time()
    for ts, feed, rec, _ in ordered:
        eng.process(feed, ts, rec)
        n += len(eng.take_events())
    eng.advance(ordered[-1][0] + 20_000)
    n += len(eng.take_events())
    return time.process_time() - t0, n


def run_engines(ordered: list[tuple[int, Feed, Any, int]]) -> tuple[float, int]:
    engines = [Engine(EngineConfig(scope=f"p{p}")) for p in range(PARTITIONS)]
    n = 0
    t0 = time.process_time()
    for ts, feed, rec, p in ordered:
        for eng in engines if feed in GLOBAL_FEEDS else (engines[p],):
            eng.process(feed, ts, rec)
            n += len(eng.take_events())
    for eng in engines:
        eng.advance(ordered[-1][0] + 20_000)
        n += len(eng.take_events())
    return time.process_time() - t0, n


def run_pipeline(topics: dict[TP, list[Raw]], chunk: int, rate: float, profile: cProfile.Profile | None = None
                 ) -> tuple[float, float, list[Event]]:
    """(ingest CPU s, step CPU s, events). Wall time moves as if the worker ran at `rate` records/s
    (so inputs go idle as in the worker bench); a lane counts as caught up only once its whole
    partition was delivered (the worker asks the broker)."""
    pipe = Pipeline(TOPICS, input_codecs(), lambda p: EngineConfig(scope=f"p{p}"), DictStore(), 2_000)
    pos = dict.fromkeys(topics, 0)
    events: list[Event] = []
    now = 0.0
    ingest_s = step_s = 0.0
    clock = time.process_time

    def step(now: float) -> None:
        nonlocal step_s
        for p, pe in pipe.engines.items():
            for feed, lane in pe.lanes.items():
                lane.caught_up = pos.get((feed.value, p), 0) >= len(topics.get((feed.value, p), ()))
        for key, log in pipe.logs.items():
            feed_value, part = key.rsplit("/", 1)
            log.caught_up = pos[(feed_value, int(part))] >= len(topics[(feed_value, int(part))])
        t = clock()
        if profile is not None:
            profile.enable()
        events.extend(pipe.step(now))
        if profile is not None:
            profile.disable()
        step_s += clock() - t

    while any(pos[tp] < len(raws) for tp, raws in topics.items()):
        t = clock()
        delivered = 0
        for tp, raws in topics.items():
            batch = raws[pos[tp]:pos[tp] + chunk]
            pos[tp] += len(batch)
            delivered += len(batch)
            pipe.ingest(tp[0], tp[1], batch, now)
        ingest_s += clock() - t
        now += delivered * 1000 / rate
        step(now)
    for _ in range(3):  # every input idle: everything is released, event time follows the wall clock
        now += 20_000
        step(now)
    return ingest_s, step_s, events


def open_counts_cost(topics: dict[TP, list[Raw]], reads: int = 20) -> tuple[int, float, float, float]:
    """The worker's open-episode gauges (`WorkerMetrics.state`, each second) over the pipeline's
    engines after the run: (accounts, CPU s of a count of every account, as the worker did before
    the counts were kept by checkpoints; CPU s of a read of the kept counts; CPU s of the recount
    that a checkpoint writing every account adds to it)."""
    pipe = Pipeline(TOPICS, input_codecs(), lambda p: EngineConfig(scope=f"p{p}"), DictStore(), 2_000)
    for tp, raws in topics.items():
        pipe.ingest(tp[0], tp[1], raws, 0.0)
    pipe.step(10**9)
    engines = list(pipe.engines.values())
    clock = time.process_time
    t = clock()
    for _ in range(reads):
        mm: Counter[str] = Counter()
        an: Counter[str] = Counter()
        for pe in engines:
            for acct in pe.engine.accounts.values():
                for ep in acct.mismatches.values():
                    mm[ep.cls or ""] += 1
                for a in acct.anomalies.values():
                    if a.status:
                        an[a.status] += 1
    full = (clock() - t) / reads
    for pe in engines:
        pe.open_counts()
    t = clock()
    for _ in range(reads):
        for pe in engines:
            pe.open_counts()
    kept = (clock() - t) / reads
    t = clock()
    for pe in engines:
        pe._recount(list(pe.engine.accounts))
    recount = clock() - t
    assert sum(sum(pe.open_counts()[0].values()) for pe in engines) == sum(mm.values())
    return sum(len(pe.engine.accounts) for pe in engines), full, kept, recount


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fills", type=int, default=20_000)
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--chunk", type=int, default=500, help="records per topic-partition per round")
    ap.add_argument("--rate", type=float, default=30_000, help="records/s the simulated wall clock assumes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    topics, ordered = build(args.fills, args.accounts)
    n = len(ordered)
    print(f"{n:,} records, {len(topics)} topic-partitions, chunks of {args.chunk}", flush=True)
    best: dict[str, float] = {}
    default_gc = gc.get_threshold()
    for i in range(args.rounds):
        e1, n1 = run_engine(ordered)
        e4, n4 = run_engines(ordered)
        gc.set_threshold(*GC_THRESHOLDS)
        ing, st, events = run_pipeline(topics, args.chunk, args.rate)
        gc.set_threshold(*default_gc)
        ing0, st0, events0 = run_pipeline(topics, args.chunk, args.rate)
        assert digest(events0) == digest(events)
        for k, v in (("engine", e1), ("engines", e4), ("ingest", ing), ("pipeline", st), ("ingest0", ing0),
                     ("pipeline0", st0)):
            best[k] = min(best.get(k, v), v)
        print(f"round {i + 1}: engine {e1 / n * 1e6:.2f}, engines {e4 / n * 1e6:.2f}, "
              f"pipeline step {st / n * 1e6:.2f} µs/record (ingest {ing / n * 1e6:.2f}; default GC: "
              f"step {st0 / n * 1e6:.2f}, ingest {ing0 / n * 1e6:.2f}); "
              f"events {n1:,} / {n4:,} / {len(events):,}, pipeline digest {digest(events)}", flush=True)
    print(f"best of {args.rounds}, CPU µs per input record:")
    same = "  the same, CPython's default GC"
    for k, label in (("engine", "one bare Engine (replay)"), ("engines", f"{PARTITIONS} bare Engines (partitioned)"),
                     ("pipeline", "Pipeline.step (worker 'engine' stage)"), ("pipeline0", same),
                     ("ingest", "Pipeline.ingest (worker 'decode' stage)"), ("ingest0", same)):
        print(f"  {label:<40} {best[k] / n * 1e6:7.2f}  ({best[k] / best['engine']:.2f}× engine)")
    accounts, full, kept, recount = open_counts_cost(topics)
    print(f"open-episode gauges over {accounts:,} accounts (the worker reads them each second): a count of every "
          f"account {full * 1e3:.2f} ms; the counts kept by checkpoints {kept * 1e3:.3f} ms a read "
          f"({full / max(kept, 1e-9):,.0f}× less), plus {recount / accounts * 1e6:.2f} µs an account a "
          f"checkpoint writes")
    if args.profile:
        prof = cProfile.Profile()
        gc.set_threshold(*GC_THRESHOLDS)
        run_pipeline(topics, args.chunk, args.rate, prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
