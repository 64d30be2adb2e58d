"""Worker throughput on a local broker, next to the decode ceiling and a naive per-event Faust agent.

    .venv/bin/python bench/worker_bench.py [--fills 145000] [--accounts 2000] [--naive-records 100000]
                                           [--timeline worker-timeline.png]

All three are measured in the same run on the same records (mixed: ep3, risk, og.margin, fills,
marks; ~4.5 records per fill, so the default is ~520k records):
1. decode ceiling: confluent-kafka consume + `Codec.decode_many` of every input record, no engine;
2. `divmon worker` (one process, `--sink none`): from the moment it is warm until its committed
   offsets reach the end of every input partition (so checkpoints, changelog writes, output
   production and commits are included);
3. a naive Faust agent: `async for value in stream` over the account topics, `Codec.decode` and
   `Engine.process` per event (the structure the issue measured at ~13k records/s).

`--timeline` draws the worker's run (records consumed and applied, loop-thread busy share, over
time) as a PNG: where end to end and steady part (the hold at the start, the idle wait at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from streams.codec import input_codecs  # noqa: E402
from streams.core.records import Feed  # noqa: E402
from streams.demo.procs import free_port  # noqa: E402
from streams.metrics import STAGES  # noqa: E402
from streams.worker.synth import traffic  # noqa: E402
from tests.support.kafka_broker import KafkaBroker  # noqa: E402

PARTITIONS = 4
ACCOUNT_FEEDS = (Feed.EP3, Feed.RISK, Feed.OG_MARGIN, Feed.FILLS)


def produce(bs: str, tag: str, n_fills: int, n_accounts: int) -> tuple[int, dict[Feed, str]]:
    topics = {f: f"{tag}.{f.value}" for f in Feed}
    admin = AdminClient({"bootstrap.servers": bs})
    # retention.ms=-1: the records carry 2026 event timestamps; time-based retention would delete them
    new = [NewTopic(t, 1 if f in (Feed.MARKS, Feed.INSTRUMENTS) else PARTITIONS, 1, config={"retention.ms": "-1"})
           for f, t in topics.items()]
    for fut in admin.create_topics(new).values():
        fut.result(30)
    began = time.perf_counter()
    records = traffic(n_accounts=n_accounts, n_fills=n_fills, seed=1, step_ms=5)
    print(f"generated {len(records):,} records in {time.perf_counter() - began:.1f}s", flush=True)
    codecs = input_codecs()
    p = Producer({"bootstrap.servers": bs, "linger.ms": 50, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 2_000_000})
    for i, r in enumerate(records):
        key = getattr(r.record, "account_id", None) or getattr(r.record, "symbol", "")
        p.produce(topics[r.feed], codecs[r.feed].encode(r.record), key.encode(), timestamp=r.ts_ms)
        if i % 50_000 == 0:
            p.poll(0)
    p.flush(120)
    return len(records), topics


def decode_ceiling(bs: str, topics: dict[Feed, str], total: int) -> float:
    codecs = input_codecs()
    feed_of = {t: f for f, t in topics.items()}
    c = Consumer({"bootstrap.servers": bs, "group.id": f"ceiling-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.max.bytes": 52428800})
    c.subscribe(list(topics.values()))
    n = 0
    began = None
    while n < total:
        msgs = c.consume(10_000, 1.0)
        began = began or time.perf_counter()
        by: dict[str, list[bytes]] = defaultdict(list)
        for m in msgs:
            if m.error() is None:
                by[str(m.topic())].append(m.value() or b"")
        for t, values in by.items():
            codecs[feed_of[t]].decode_many(values)
            n += len(values)
    c.close()
    return n / (time.perf_counter() - (began or time.perf_counter()))


class Committed:
    """Whether the worker's group has committed every account input partition to its end. One
    consumer for the whole run, asked every `POLL_S`: the end of the run is known to about that
    (a consumer made per question took ~0.1 s, and questions every 0.5 s made the run's end
    known ~0.3 s late on average)."""

    def __init__(self, bs: str, group: str, topics: dict[Feed, str]) -> None:
        self.c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topics[f], p) for f in ACCOUNT_FEEDS for p in range(PARTITIONS)]
        self.ends: list[int] | None = None  # the input is all produced before the worker starts

    def __call__(self) -> bool:
        if self.ends is None:
            self.ends = [self.c.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps]
        done = self.c.committed(self.tps, timeout=10)
        return all(tp.offset >= end for tp, end in zip(done, self.ends, strict=True))

    def close(self) -> None:
        self.c.close()


IDLE_MS = 2_000  # the worker's DIVMON_IDLE_MS (production default: 5,000)
POLL_S = 0.05  # how often the bench asks for the committed offsets (the broker answers; not the worker)
SCRAPE_S = 0.5  # how often it reads the worker's metrics (each scrape costs the worker GIL time)
HOLD_SCRAPE_S = 0.1  # how often until the engines apply their first records (the start's hold, timed)


def cpu_figures(port: int) -> dict[str, float]:
    """The worker's loop-thread CPU counters: per pipeline stage, and `loop` (the thread's total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "divmon_stage_cpu_seconds_total":
                out[sample.labels["stage"]] = sample.value
            elif sample.name == "divmon_loop_cpu_seconds_total":
                out["loop"] = sample.value
            elif sample.name == "divmon_records_consumed_total":
                out["consumed"] = out.get("consumed", 0.0) + sample.value
            elif sample.name == "divmon_records_applied_total":
                out["applied"] = sample.value
            elif sample.name == "divmon_late_records_total":
                out["late"] = sample.value
    return out


def steady(samples: list[tuple[float, dict[str, float]]], total: int) -> tuple[float, float]:
    """Records/s and loop-thread busy share between 10% and 90% of the input applied by the engines:
    the rate without the start and the tail (at the end, event time waits `DIVMON_IDLE_MS` for the
    inputs to go idle, then a checkpoint and a commit interval pass before the offsets show
    everything). Applied, not consumed: a consumed record may wait in its lane for the watermark,
    and with a fast decode the worker consumed most of the input long before applying it, so a
    consumed rate said 234k records/s for a worker that applied ~45k. The engines apply marks and
    instruments once each, so the applied total is a little over the input; the rate is scaled back
    to input records."""
    final = max((f.get("applied", 0.0) for _, f in samples), default=0.0)
    inside = [(t, f) for t, f in samples if 0.1 * final <= f.get("applied", 0) <= 0.9 * final]
    if len(inside) < 2 or not final:
        return 0.0, 0.0
    (t0, a), (t1, b) = inside[0], inside[-1]
    return (b["applied"] - a["applied"]) * total / final / (t1 - t0), (b.get("loop", 0) - a.get("loop", 0)) / (t1 - t0)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (librdkafka's too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by kind: `main` (the event loop's thread: the process id),
    `librdkafka` (its C threads, named rdk:*, which run without the GIL) and `other threads` (the
    rest: Faust's aiokafka consumer thread, executor threads, the metrics server), which compete
    with the loop thread for the GIL."""
    out = {"main": 0.0, "librdkafka": 0.0, "other threads": 0.0}
    hz = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        kind = "main" if task.name == str(pid) else "librdkafka" if name.startswith("rdk:") else "other threads"
        out[kind] += (int(fields[11]) + int(fields[12])) / hz
    return out


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_delay(pid: int) -> float:
    """Seconds the process's main thread was runnable but waiting for a CPU (/proc schedstat): time
    the loop thread lost to other threads and processes on this host, not to its own work."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


Sample = tuple[float, dict[str, float]]  # seconds since the worker was warm, its counters then


def run_worker(bs: str, topics: dict[Feed, str], tag: str, total: int, broker_pid: int
               ) -> tuple[float, float, dict[str, float], list[Sample]]:
    group = f"bench-{tag}"
    port = free_port()
    env = {**os.environ, "DIVMON_BROKERS": bs, "DIVMON_GROUP_ID": group, "DIVMON_PARTITIONS": str(PARTITIONS),
           "DIVMON_TOPIC_PREFIX_OUT": f"{tag}.out.", "DIVMON_TOPIC_DEAD_LETTER": f"{tag}.dead",
           "DIVMON_WEB_PORT": "0", "DIVMON_METRICS_PORT": str(port), "DIVMON_IDLE_MS": str(IDLE_MS),
           "DIVMON_RECOVERY_DELAY_MS": "100", "DIVMON_COMMIT_INTERVAL_MS": "500", "DIVMON_CHECKPOINT_MS": "500"}
    env.update({f"DIVMON_TOPIC_{k}": topics[f] for k, f in (("EP3", Feed.EP3), ("RISK", Feed.RISK),
               ("OG_MARGIN", Feed.OG_MARGIN), ("FILLS", Feed.FILLS), ("MARKS", Feed.MARKS),
               ("INSTRUMENTS", Feed.INSTRUMENTS))})
    log = Path(f"/tmp/worker-bench-{tag}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--sink", "none"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while "warm: partitions" not in log.read_text():
            time.sleep(0.05)
            assert proc.poll() is None, log.read_text()[-2000:]
        cpu: dict[str, float] = {}
        began, cpu_before, proc_before = time.perf_counter(), cpu_figures(port), process_cpu(proc.pid)
        broker_before, machine_before, threads_before = process_cpu(broker_pid), machine_busy(), threads_cpu(proc.pid)
        delay_before = run_delay(proc.pid)
        samples: list[Sample] = [(began, cpu_before)]
        done = Committed(bs, group, topics)
        try:
            held = None  # when the engines first applied records (to HOLD_SCRAPE_S)
            while not done():
                time.sleep(POLL_S)
                # (its metrics server is a Python thread; while held, the loop thread is mostly idle)
                if time.perf_counter() - samples[-1][0] >= (SCRAPE_S if held is not None else HOLD_SCRAPE_S):
                    samples.append((time.perf_counter(), cpu_figures(port)))
                    if held is None and samples[-1][1].get("applied", 0.0) > cpu_before.get("applied", 0.0):
                        held = samples[-1][0] - began
            took = time.perf_counter() - began
            cpu["held"] = took if held is None else held
        finally:
            done.close()
        samples.append((began + took, cpu_figures(port)))
        cpu["steady_rps"], cpu["steady_busy"] = steady(samples, total)
        cpu.update({k: v - cpu_before.get(k, 0.0) for k, v in cpu_figures(port).items()})
        cpu["process"] = process_cpu(proc.pid) - proc_before
        cpu["broker"] = process_cpu(broker_pid) - broker_before
        cpu["run_delay"] = run_delay(proc.pid) - delay_before
        cpu.update({k: v - threads_before[k] for k, v in threads_cpu(proc.pid).items()})
        machine_after = machine_busy()
        cpu["machine_busy"] = machine_after[0] - machine_before[0]
        cpu["machine_total"] = machine_after[1] - machine_before[1]
        cpu["wall"] = took
        cpu["peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    events = sum(hi for t in AdminClient({"bootstrap.servers": bs}).list_topics(timeout=10).topics
                 if t.startswith(f"{tag}.out.")
                 for hi in [_end(bs, t)])
    timeline = [(t - began, {k: v - cpu_before.get(k, 0.0) for k, v in f.items()}) for t, f in samples]
    return total / took, events / took, cpu, timeline


def plot_timeline(samples: list[Sample], total: int, path: str) -> None:
    """Records consumed and applied (scaled to input records, as `steady`) and the loop thread's
    busy share between samples, over the seconds since the worker was warm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s for s, _ in samples]
    final = max(f.get("applied", 0.0) for _, f in samples) or 1.0
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6), height_ratios=(3, 1))
    top.plot(t, [f.get("consumed", 0.0) / 1000 for _, f in samples], label="consumed (decoded)")
    top.plot(t, [f.get("applied", 0.0) * total / final / 1000 for _, f in samples], label="applied by the engines")
    top.axhline(total / 1000, color="grey", linewidth=0.5)
    top.set_ylabel("thousand records")
    top.set_title(f"divmon worker, {total:,} records: committed at {t[-1]:.1f} s")
    top.legend(loc="lower right")
    pairs = [(tb, (b.get("loop", 0.0) - a.get("loop", 0.0)) / (tb - ta))
             for (ta, a), (tb, b) in itertools.pairwise(samples) if tb > ta]
    bottom.step([tb for tb, _ in pairs], [busy for _, busy in pairs], where="pre")
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("loop thread busy")
    bottom.set_xlabel("seconds since the worker was warm")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def print_breakdown(cpu: dict[str, float], records: int) -> None:
    """Where the worker's CPU went while it worked through the input: what limits it."""
    loop = cpu.get("loop")
    if not loop:
        print("  (no loop-thread CPU figures: this platform has no per-thread CPU clocks)")
        return
    stages = [(name, cpu[name]) for name in STAGES if name in cpu]
    rest = loop - sum(v for _, v in stages)
    print(f"  loop thread: {loop:.1f} CPU s over {cpu['wall']:.1f} s wall (busy {loop / cpu['wall']:.0%}); "
          f"whole process {cpu['process']:.1f} CPU s, peak RSS {cpu['peak_rss_mb']:.0f} MB")
    print(f"  threads: main {cpu['main']:.1f} CPU s (and {cpu['run_delay']:.1f} s runnable, waiting for a CPU), "
          f"other Python threads (GIL) {cpu['other threads']:.1f}, librdkafka (no GIL) {cpu['librdkafka']:.1f}")
    print(f"  meanwhile: the broker used {cpu['broker']:.1f} CPU s; the machine's {os.cpu_count()} CPUs were "
          f"busy {cpu['machine_busy'] / cpu['machine_total']:.0%} (everything on this host, neighbours too)")
    for name, v in [*stages, ("other (Faust, aiokafka fetch, asyncio)", rest)]:
        print(f"    {name:<40} {v:7.2f} s {v / loop:6.1%} {v / records * 1e6:7.1f} µs/record")


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process `pid` (and so the threads it starts later) to `cpus`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def _end(bs: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bs, "group.id": "end"})
    meta = c.list_topics(topic, timeout=10).topics[topic]
    n = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions)
    c.close()
    return n


NAIVE = '''
import os, sys, time, faust
from streams.codec import input_codecs
from streams.core.engine import Engine
from streams.core.records import Feed
bs, tag, limit = os.environ["BENCH_BS"], os.environ["BENCH_TAG"], int(os.environ["BENCH_LIMIT"])
app = faust.App(f"naive-{tag}", broker=f"kafka://{bs}", store="memory://", web_enabled=False,
                datadir=f"/tmp/naive-{tag}-data",
                consumer_auto_offset_reset="earliest", topic_partitions=4)
names = {f"{tag}.{f.value}": f for f in (Feed.EP3, Feed.RISK, Feed.OG_MARGIN, Feed.FILLS)}
codecs = input_codecs()
engine = Engine()
topic = app.topic(*names, key_type=bytes, value_type=bytes, value_serializer="raw")
state = {"n": 0, "t0": None}
@app.agent(topic)
async def naive(stream):
    async for event in stream.events():
        feed = names[event.message.topic]
        state["t0"] = state["t0"] or time.perf_counter()
        rec = codecs[feed].decode(event.value)
        engine.process(feed, event.message.timestamp_ms if hasattr(event.message, "timestamp_ms")
                       else int(event.message.timestamp * 1000), rec)
        state["n"] += 1
        if state["n"] >= limit:
            with open(os.environ["BENCH_OUT"], "w") as out:
                out.write(str(state["n"] / (time.perf_counter() - state["t0"])))
            os._exit(0)
app.main()
'''


def run_naive(bs: str, tag: str, limit: int) -> float:
    result = Path(f"/tmp/naive-bench-{tag}.txt")
    env = {**os.environ, "BENCH_BS": bs, "BENCH_TAG": tag, "BENCH_LIMIT": str(limit), "BENCH_OUT": str(result)}
    log = Path(f"/tmp/naive-bench-{tag}.log")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", NAIVE, "worker", "-l", "warn"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        proc.wait(300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not result.exists():
        raise RuntimeError(f"naive agent gave no result, see {log}")
    return float(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fills", type=int, default=145_000)
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--naive-records", type=int, default=100_000)
    ap.add_argument("--timeline", metavar="PNG", help="draw the worker's run over time into this PNG file")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="leave the broker free to run on every CPU, the worker's too (default: pinned to one)")
    args = ap.parse_args()
    with KafkaBroker(heap="1g") as broker:
        bs = broker.bootstrap
        cpus = sorted(os.sched_getaffinity(0))
        if args.pin and len(cpus) >= 2:
            # in production the broker runs on other machines: here it shares the host, and the
            # worker's loop thread waited for a CPU behind it for ~10% of its run (1.0-1.3 s of 10)
            pin(broker.pid, {cpus[-1]})
            print(f"broker pinned to CPU {cpus[-1]} of {len(cpus)} (--no-pin: not)", flush=True)
        tag = uuid.uuid4().hex[:6]
        total, topics = produce(bs, tag, args.fills, args.accounts)
        account_total = sum(_end(bs, topics[f]) for f in ACCOUNT_FEEDS)
        print(f"produced {total:,} records ({account_total:,} account-keyed) on {bs}", flush=True)
        ceiling = decode_ceiling(bs, topics, total)
        print(f"decode ceiling (confluent-kafka consume + decode_many): {ceiling:,.0f} records/s", flush=True)
        rps, eps, cpu, timeline = run_worker(bs, topics, tag, total, broker.pid)
        print(f"divmon worker (1 process, 4 partition engines): {rps:,.0f} records/s, {eps:,.0f} events/s "
              f"end to end; {cpu['steady_rps']:,.0f} records/s steady (10-90% of the input applied, loop thread busy "
              f"{cpu['steady_busy']:.0%}); {cpu.get('late', 0):,.0f} records applied late", flush=True)
        held = cpu["held"]
        print(f"  the engines applied their first records after {held:.1f} s (event time waits for every input "
              f"to deliver or go idle, DIVMON_IDLE_MS={IDLE_MS}: the instruments input delivers once, at the start); "
              f"from then to the end: {total / max(1e-9, cpu['wall'] - held):,.0f} records/s", flush=True)
        print_breakdown(cpu, total)
        if args.timeline:
            plot_timeline(timeline, total, args.timeline)
            print(f"  timeline: {args.timeline}", flush=True)
        naive = run_naive(bs, tag, min(args.naive_records, account_total))
        print(f"naive per-event Faust agent (decode + engine per event): {naive:,.0f} records/s", flush=True)


if __name__ == "__main__":
    main()
