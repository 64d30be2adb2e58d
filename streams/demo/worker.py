"""The demo's one stream worker: `divmon worker` as a child process, watched through its metrics.

The worker gets a clean environment: every inherited `DIVMON_*` variable is dropped, so a user's
production settings (a ClickHouse URL, SASL, topic names) can never leak into the demo. It writes to
the embedded chdb under the demo's data directory and serves Prometheus metrics on a free port.

Guarantees: `wait_ready` returns once the worker holds all partitions and has set up its sink
(`divmon_warming` is 0); `wait_drained` returns once the worker has consumed every produced record
(`divmon_records_consumed_total` per feed) and its events have stopped changing with nothing left
in the sink buffer. Both raise `DemoError` with the log tail if the worker dies or time runs out.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.demo.procs import Child, Children, DemoError, free_port

# Fast group join and short idle wait: one worker, one shot, no rebalances to ride out.
TUNING = {"DIVMON_SESSION_TIMEOUT_MS": "6000", "DIVMON_HEARTBEAT_MS": "500", "DIVMON_COMMIT_INTERVAL_MS": "500",
          "DIVMON_RECOVERY_DELAY_MS": "100", "DIVMON_CHECKPOINT_MS": "300", "DIVMON_IDLE_MS": "5000"}
IDLE_S = 5.0


@dataclass(frozen=True)
class Scrape:
    """One reading of the worker's metrics: totals by metric name, records consumed by feed."""

    totals: Mapping[str, float]
    consumed: Mapping[str, float]

    def get(self, name: str) -> float:
        return self.totals.get(name, 0.0)


def worker_env(bootstrap: str, data_dir: Path, partitions: int, metrics_port: int, group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVMON_")}
    env.update(TUNING)
    env.update({"DIVMON_BROKERS": bootstrap, "DIVMON_GROUP_ID": group, "DIVMON_PARTITIONS": str(partitions),
                "DIVMON_STORE": "memory://", "DIVMON_DATA_DIR": str(data_dir / "faust"),
                "DIVMON_WEB_PORT": "0", "DIVMON_METRICS_PORT": str(metrics_port), "DIVMON_ENV": "demo",
                "DIVMON_CLICKHOUSE_PATH": str(data_dir / "chdb"), "PYTHONUNBUFFERED": "1"})
    return env


def start_worker(children: Children, bootstrap: str, data_dir: Path, partitions: int) -> tuple[Child, int]:
    """Start `divmon worker --sink clickhouse`; returns the child and its metrics port."""
    port = free_port()
    env = worker_env(bootstrap, data_dir, partitions, port, "divmon-demo")
    argv = [sys.executable, "-m", "streams.cli", "worker", "--sink", "clickhouse"]
    return children.start("worker", argv, data_dir / "logs" / "worker.log", env, cwd=data_dir), port


def scrape(port: int, timeout: float = 2.0) -> Scrape | None:
    """The worker's metrics, or None while its endpoint does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    totals: dict[str, float] = {}
    consumed: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
            if s.name == "divmon_records_consumed_total":
                consumed[s.labels["feed"]] = consumed.get(s.labels["feed"], 0.0) + s.value
    return Scrape(totals, consumed)


def check_alive(child: Child) -> None:
    """Raise `DemoError` with the log tail if the worker has exited."""
    if not child.alive():
        raise DemoError(f"the worker exited with status {child.proc.returncode}:\n{child.tail()}")


def wait_ready(child: Child, port: int, timeout: float = 90.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(child)
        m = scrape(port)
        if m is not None and "divmon_warming" in m.totals and m.get("divmon_warming") == 0:
            return m
        time.sleep(0.3)
    raise DemoError(f"the worker was not ready within {timeout:g}s:\n{child.tail()}")


def wait_drained(child: Child, port: int, produced: Mapping[str, int], timeout: float,
                 progress: Callable[[int, int], None]) -> Scrape:
    """Block until everything produced is consumed and the events are stored (see module docstring)."""
    want = sum(produced.values())
    deadline = time.monotonic() + timeout
    done_at: float | None = None
    last: tuple[float, float] | None = None
    while time.monotonic() < deadline:
        check_alive(child)
        m = scrape(port)
        if m is None:
            time.sleep(0.5)
            continue
        got = sum(min(m.consumed.get(f, 0.0), n) for f, n in produced.items())
        progress(int(got), want)
        if got >= want:
            done_at = done_at or time.monotonic()
            now = (m.get("divmon_events_emitted_total"), m.get("divmon_sink_buffered_rows"))
            if now == last and now[1] == 0 and time.monotonic() - done_at > 2 * IDLE_S + 1:
                return m
            last = now
        time.sleep(1.0)
    raise DemoError(f"the worker did not finish within {timeout:g}s:\n{child.tail()}")
