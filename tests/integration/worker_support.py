"""Helpers (no tests) for the worker tests on the session broker: topics, producing a tape, worker processes,
reading the output topics back, and the replay's expected events in the same (wire) form."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.agents.app import TABLE
from streams.codec import EventCodec, input_codecs
from streams.core.params import EngineConfig
from streams.core.records import Feed
from streams.tapes import replay
from streams.tapes.model import TapeRecord
from streams.worker.partition import ACCOUNT_FEEDS, META_PREFIX

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
VERDICTS = ("position_mismatch", "avail_gap_flip", "unvaluable")
# Fast failure detection and rebalances for tests (production defaults are in streams/config.py).
# idle_ms must exceed any pause in the tests' own production: an input silent for idle_ms stops
# holding event time back, and records produced after such a pause would be late (not replay-equal).
FAST = {"DIVMON_SESSION_TIMEOUT_MS": "6000", "DIVMON_HEARTBEAT_MS": "500", "DIVMON_COMMIT_INTERVAL_MS": "300",
        "DIVMON_RECOVERY_DELAY_MS": "100", "DIVMON_CHECKPOINT_MS": "200", "DIVMON_IDLE_MS": "4000",
        "DIVMON_CLOCK_IDLE_MS": "120000"}


class Names:
    """Unique topic names for one test (the broker lives for the whole session)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.inputs = {f: f"{tag}.{f.value}" for f in Feed}
        self.prefix = f"{tag}.out."
        self.dead = f"{tag}.dead"
        self.group = f"divmon-{tag}"

    def env(self, bootstrap: str) -> dict[str, str]:
        env = {"DIVMON_BROKERS": bootstrap, "DIVMON_GROUP_ID": self.group, "DIVMON_PARTITIONS": str(PARTITIONS),
               "DIVMON_TOPIC_PREFIX_OUT": self.prefix, "DIVMON_TOPIC_DEAD_LETTER": self.dead,
               "DIVMON_STORE": "memory://", "DIVMON_WEB_PORT": "0", "DIVMON_METRICS_PORT": "0",
               "DIVMON_DATA_DIR": str(Path(tempfile.gettempdir()) / f"divmon-test-{self.tag}"), **FAST}
        attr = {Feed.EP3: "EP3", Feed.RISK: "RISK", Feed.OG_MARGIN: "OG_MARGIN", Feed.FILLS: "FILLS",
                Feed.MARKS: "MARKS", Feed.INSTRUMENTS: "INSTRUMENTS"}
        env.update({f"DIVMON_TOPIC_{attr[f]}": t for f, t in self.inputs.items()})
        return env

    def outputs(self) -> list[str]:
        from streams.core.events import EVENT_TYPES

        return [self.prefix + t for t in EVENT_TYPES]


def create_inputs(create: Callable[..., list[str]], names: Names) -> None:
    """Input topics; retention.ms=-1 because tape timestamps may be older than the broker's retention."""
    for feed, topic in names.inputs.items():
        create(topic, partitions=1 if feed in (Feed.MARKS, Feed.INSTRUMENTS) else PARTITIONS,
               config={"retention.ms": "-1"})


def create_inputs_on(bootstrap: str, names: Names) -> None:
    """`create_inputs` on a broker of the test's own (not the session's: see `kafka_topics`)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def create(topic: str, partitions: int = 1, config: dict[str, str] | None = None) -> list[str]:
        admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])[topic].result(30)
        return [topic]

    create_inputs(create, names)


def produce(bootstrap: str, names: Names, records: Iterable[TapeRecord],
            poison: Callable[[Feed], bytes | None] | None = None) -> int:
    """Produce records (Avro single-object) keyed by account or symbol, timestamp = ts_ms."""
    codecs = input_codecs()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "enable.idempotence": True})
    n = 0
    for rec in records:
        key = getattr(rec.record, "account_id", None) or getattr(rec.record, "symbol", "")
        p.produce(names.inputs[rec.feed], codecs[rec.feed].encode(rec.record), key.encode(), timestamp=rec.ts_ms)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return n


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A worker's metrics endpoint as {(sample name, sorted labels without env): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "env"))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def start_worker(bootstrap: str, names: Names, log: Path, extra: Sequence[str] = (),
                 env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`divmon worker --sink none` (a later `--sink` in `extra` wins) on the test's topics."""
    env = {**os.environ, **names.env(bootstrap), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    out = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--sink", "none", *extra],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_to_the_end(bootstrap: str, names: Names, log: Path, what: str,
                   env_extra: dict[str, str] | None = None, commit_within: float = 90) -> dict[tuple[str, int], int]:
    """Start a worker, wait (`commit_within` seconds at most once it is warm) until it has committed
    every account input to its end, stop it cleanly (exit status 0); returns those ends."""
    proc = start_worker(bootstrap, names, log, env_extra=env_extra)
    try:
        wait_for(lambda: "warm: partitions [0, 1, 2, 3]" in log.read_text(), 120, f"{what} to be warm")
        ends = high_watermarks(bootstrap, names)
        wait_for(lambda: committed(bootstrap, names) == ends, commit_within, f"{what} to commit to the end")
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return ends


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_topics(bootstrap: str, topics: Sequence[str], limit_s: float = 30.0
                ) -> list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]]:
    """Everything in `topics`, from the beginning up to the high watermarks at the time of the call."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    meta = c.list_topics(timeout=10).topics
    ends = {}
    for t in topics:
        for p in meta[t].partitions if t in meta else ():
            try:
                low, high = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
            except KafkaException:  # an output topic the worker is creating right now: nothing yet
                continue
            if high > low:
                ends[(t, p)] = high
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
    out = []
    end = time.monotonic() + limit_s
    while ends and time.monotonic() < end:
        for msg in c.consume(1000, 0.2):
            if msg.error() is None:
                out.append((str(msg.topic()), msg.key(), msg.value(), dict(msg.headers() or [])))
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if tp in ends and (msg.offset() or 0) + 1 >= ends[tp]:
                    del ends[tp]
    c.close()
    return out


def committed(bootstrap: str, names: Names) -> dict[tuple[str, int], int]:
    """The worker group's committed offsets on the account-keyed input topics (absent: none yet)."""
    parts = [TopicPartition(names.inputs[f], p) for f in ACCOUNT_FEEDS for p in range(PARTITIONS)]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": names.group, "enable.auto.commit": False})
    try:
        return {(str(tp.topic), int(tp.partition)): int(tp.offset)
                for tp in c.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        c.close()


def high_watermarks(bootstrap: str, names: Names) -> dict[tuple[str, int], int]:
    """End offsets of the non-empty account-keyed input partitions."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}"})
    try:
        ends = {(names.inputs[f], p): c.get_watermark_offsets(TopicPartition(names.inputs[f], p), timeout=10)[1]
                for f in ACCOUNT_FEEDS for p in range(PARTITIONS)}
    finally:
        c.close()
    return {tp: end for tp, end in ends.items() if end > 0}


def commits_ahead_of_state(bootstrap: str, names: Names) -> list[str]:
    """Committed offsets that the state changelog does not cover yet. Each would be records that a
    worker taking the partition over neither restores (not in the state) nor re-reads (committed).
    Committed offsets are read first, the changelog after, so a correct worker always gives []."""
    done = committed(bootstrap, names)
    state: dict[int, dict[str, int]] = {}
    for _, key, value, _ in read_topics(bootstrap, [f"{names.group}-{TABLE}-changelog"]):
        if key and key.startswith(META_PREFIX.encode()) and value:
            row = json.loads(value)
            state[int(row["p"])] = row["offsets"]
    feed_of = {names.inputs[f]: f.value for f in ACCOUNT_FEEDS}
    return [f"{t}[{p}] committed {o}, state only up to {state.get(p, {}).get(feed_of[t], 0)}"
            for (t, p), o in sorted(done.items()) if o > state.get(p, {}).get(feed_of[t], 0)]


def wire(events: Iterable[Any]) -> list[dict[str, Any]]:
    """Events as a consumer of the output topics sees them (Avro round trip)."""
    codec = EventCodec()
    return [codec.decode_event(codec.encode_event(e)) for e in events]


def final(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Highest version per event_id; verdict rows only; `scope` (the engine's partition) dropped."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["type"] in VERDICTS or (r["type"] == "witness_check" and r.get("kind") == "anomaly"):
            row = {k: v for k, v in r.items() if k != "scope"}
            if row["event_id"] not in out or row["version"] >= out[row["event_id"]]["version"]:
                out[row["event_id"]] = row
    return out


def expected(records: Sequence[TapeRecord]) -> dict[str, dict[str, Any]]:
    return final(wire(replay.run(iter(records), EngineConfig()).final_events()))


def emitted(bootstrap: str, names: Names) -> list[dict[str, Any]]:
    codec = EventCodec()
    return [codec.decode_event(v) for _, _, v, _ in read_topics(bootstrap, names.outputs()) if v]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 1.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_the_replay(bootstrap: str, names: Names, proc: subprocess.Popen[bytes], want: dict[str, dict[str, Any]],
                        logs: Sequence[Path], what: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Wait until the verdicts emitted equal `want` (the replay's) while `proc` runs (its log last in
    `logs`); on time-out, fail with what differs and the workers' late records (`diff_summary`).
    Returns the rows emitted."""
    rows: list[dict[str, Any]] = []

    def converged() -> bool:
        assert proc.poll() is None, logs[-1].read_text()[-3000:]
        nonlocal rows
        rows = emitted(bootstrap, names)
        return final(rows) == want

    try:
        wait_for(converged, timeout, what, step=2)
    except AssertionError as exc:
        raise AssertionError(diff_summary(final(rows), want, logs)) from exc
    return rows


def late_records(log: Path) -> dict[int, int]:
    """Records each partition engine applied late, from the last status line of a worker's log
    ("(late 3: fills 2, marks 1 here)": the total; by input, what this process applied late)."""
    late: dict[int, int] = {}
    for m in re.finditer(r"\] p(\d+): event time .*?\(late (\d+)[:)]", log.read_text(errors="replace")):
        late[int(m.group(1))] = int(m.group(2))
    return late


def late_inputs(log: Path) -> dict[int, str]:
    """The inputs each partition engine applied late records of, from the last status line."""
    return {int(m.group(1)): m.group(2) for m in
            re.finditer(r"\] p(\d+): event time .*?\(late \d+: ([^)]*) here\)", log.read_text(errors="replace"))}


def diff_summary(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]], logs: Sequence[Path] = ()) -> str:
    """Why two final-event maps differ: counts of missing / extra ids and differing fields by type,
    and the records the workers (`logs`) applied late: the one way their verdicts may rightly differ."""
    from collections import Counter

    fields: Counter[tuple[str, str]] = Counter()
    sample = ""
    for k in set(got) & set(want):
        for f in want[k]:
            if want[k][f] != got[k].get(f):
                fields[(want[k]["type"], f)] += 1
                sample = sample or f"{want[k]} != {got[k]}"
    missing = Counter(want[k]["type"] for k in set(want) - set(got))
    extra = Counter(got[k]["type"] for k in set(got) - set(want))
    late = "; ".join(f"{log.name}: late records by partition {late_records(log)} (inputs {late_inputs(log)})"
                     for log in logs)
    return f"missing {dict(missing)}, extra {dict(extra)}, differing {dict(fields)}; {late}; e.g. {sample[:1500]}"
