"""`divmon tapes record` against the real broker: SIGKILL mid-stream and restart loses and duplicates
nothing; SIGTERM closes every file cleanly; records land in the file of their trading day."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from streams.codec import Codec
from streams.core.records import Ep3PositionEvent, Feed, PositionQty, RiskSnapshot
from streams.tapes.avro import AvroTape
from streams.tapes.calendar import day_bounds
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).parents[2]
BOUNDARY = day_bounds(date(2026, 3, 8))[1]  # 17:00 EDT on the day DST started
N_EP3, N_RISK = 3000, 600


def produce(bootstrap: str, ep3: str, risk: str, delivered: list[tuple[str, int, int]], pace_s: float) -> None:
    """EP3 updates over 2 partitions and RE snapshots, 1 ms apart around the 17:00 NY boundary."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    enc_e, enc_r = Codec(Feed.EP3).encode, Codec(Feed.RISK).encode

    def ack(err: object, msg: object) -> None:
        assert err is None, err
        delivered.append((msg.topic(), msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    for i in range(N_EP3):
        ts = BOUNDARY - N_EP3 // 2 + i
        acct = f"A{i % 20}"
        rec = Ep3PositionEvent(acct, "UPDATE", i + 1, ts, (PositionQty("BTC-PERP", Decimal(i) / 4),))
        p.produce(ep3, enc_e(rec), key=acct.encode(), partition=i % 2, timestamp=ts, on_delivery=ack)
        if i % 5 == 0:
            snap = RiskSnapshot(acct, ts, (), Decimal(0), Decimal(0), Decimal(100), Decimal(100))
            p.produce(risk, enc_r(snap), key=acct.encode(), timestamp=ts, on_delivery=ack)
        if i % 100 == 0:
            p.poll(0)
            time.sleep(pace_s)
    p.flush(30)


def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "tapes", "record", "--flush-ms", "200"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> dict[str, int]:
    """SIGTERM; it must exit 0; its final counters."""
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, out
    line = next(x for x in out.splitlines() if "recorder stopped: " in x)
    return ast.literal_eval(line.split("recorder stopped: ", 1)[1])  # type: ignore[no-any-return]


def committed(bootstrap: str, group: str, parts: list[TopicPartition]) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    except KafkaException:  # e.g. NOT_COORDINATOR while the group coordinator loads: ask again
        return -1
    finally:
        c.close()


def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_resume_then_sigterm(kafka_bootstrap: str, kafka_topics: object, kafka_broker: KafkaBroker,
                                     tmp_path: Path) -> None:
    """Kill -9 while records flow, restart, SIGTERM; then re-read all with lost offsets: every record is
    in its day's file exactly once, and every file is a valid container."""
    tag = uuid.uuid4().hex[:8]
    ep3, risk = f"t5-{tag}-ep3", f"t5-{tag}-risk"
    kafka_topics([ep3], partitions=2)  # type: ignore[operator]
    kafka_topics([risk])  # type: ignore[operator]
    env = {**os.environ, "DIVMON_BROKERS": kafka_bootstrap, "DIVMON_TAPES_DIR": str(tmp_path),
           "DIVMON_GROUP_ID": f"g-{tag}", "DIVMON_TOPIC_EP3": ep3, "DIVMON_TOPIC_RISK": risk,
           "DIVMON_TAPES_FEEDS": "ep3.positions,risk.snapshots"}
    parts = [TopicPartition(ep3, 0), TopicPartition(ep3, 1), TopicPartition(risk, 0)]
    delivered: list[tuple[str, int, int]] = []
    producer = threading.Thread(target=produce, args=(kafka_bootstrap, ep3, risk, delivered, 0.15))
    proc = start(env)
    try:
        producer.start()
        wait_until(lambda: committed(kafka_bootstrap, f"g-{tag}-tapes", parts) > 300, 30, "a first commit")
        proc.kill()
        proc.wait(10)
        producer.join(60)
        assert len(delivered) == N_EP3 + N_RISK
        proc = start(env)
        wait_until(lambda: committed(kafka_bootstrap, f"g-{tag}-tapes", parts) == len(delivered), 40,
                   "the recorder to catch up")
        assert stop(proc)["written"] < len(delivered)  # the rest was on disk from the first run
        # Offsets lost altogether (a fresh group re-reads from the start): the files dedupe everything.
        proc = start({**env, "DIVMON_GROUP_ID": f"g-{tag}-lost"})
        try:
            wait_until(lambda: committed(kafka_bootstrap, f"g-{tag}-lost-tapes", parts) == len(delivered), 40,
                       "the re-read")
        except AssertionError as exc:  # seen under load: a fresh group assigned, then nothing fetched
            lines = kafka_broker.log_path.read_text(errors="replace").splitlines()
            said = [x for x in lines if tag in x or "WARN" in x or "ERROR" in x][-40:]
            raise AssertionError(f"{exc}; committed {committed(kafka_bootstrap, f'g-{tag}-lost-tapes', parts)} "
                                 f"of {len(delivered)}; the broker said:\n" + "\n".join(said)) from exc
        stats = stop(proc)
        assert stats.get("written", 0) == 0 and stats["duplicates"] == len(delivered)
    finally:
        if proc.poll() is None:
            proc.kill()
        print("RC", proc.returncode, proc.communicate()[0].decode()[-6000:])

    files = sorted(tmp_path.glob("*/*.avro"))
    assert [f.name for f in files] == ["2026-03-08.ep3.positions.avro", "2026-03-08.risk.snapshots.avro",
                                       "2026-03-09.ep3.positions.avro", "2026-03-09.risk.snapshots.avro"]
    seen: Counter[tuple[str, int, int]] = Counter()
    for f in files:
        assert len(list(AvroTape(f))) > 0  # a valid container: the reader raises on any damage
        with f.open("rb") as fh:
            for e in fastavro.reader(fh):
                seen[(e["topic"], e["partition"], e["offset"])] += 1  # type: ignore[call-overload,index]
                assert (e["ts_ms"] < BOUNDARY) == f.name.startswith("2026-03-08")  # type: ignore[call-overload,index]
    assert max(seen.values()) == 1, "a record was taped twice"
    assert set(seen) == set(delivered), "a record is missing"
