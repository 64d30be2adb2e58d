"""End to end: a real Prometheus scrapes a real `divmon worker` on the session broker, evaluates the
project's alert rules, and the alerts fire (or stay quiet) through its HTTP API.

The worker runs on topics of its own (`worker_support.Names`) with its metrics on a free loopback
port; Prometheus (Debian's `prometheus`, the binary `scripts/install-tools.sh` installs) runs on
another free loopback port with a temporary configuration that scrapes the worker every second.

Two phases on the same worker and the same Prometheus:

1. quiet: the golden race-only scenario (`propagation_race_ep3_fresher`: two propagation races,
   explained noise) and the healthy first part of the golden `xau_bookmark_wipe` scenario (moved one
   minute later in event time and onto its own account, `WA1`). Once Prometheus has scraped the races
   (`divmon_mismatches_total{class="propagation_race"}` is 2) and every rule group has been evaluated
   on that data, none of DivmonUnexplainedMismatches, DivmonNeverInCache, DivmonWitnessAnomaly is
   pending or firing, while the real recording rule does see the race rate.
2. fault: the rest of `xau_bookmark_wipe` is produced to the running worker: the EP3 snapshot that
   loses the dormant XAU-PERP (a never_in_cache mismatch and a witness anomaly) and a clock mark.
   DivmonNeverInCache, DivmonUnexplainedMismatches and DivmonWitnessAnomaly (status never_in_cache,
   and no other) must fire, with the worker's `env` label.

Phase 1's records are on the topics before the worker starts (the path test_worker_parity proves
equal to the replay). Producing a whole multi-minute tape as one burst to an *idle* worker is not
released in event-time order (a lane whose records the consumer has not fetched yet counts as idle and
caught up, so the watermark jumps over it); phase 2 is therefore only the fault itself, two records.

Why a test copy of the rules: deploy/prometheus/rules.yml evaluates every group each 30 s and some
alerts hold for 5-15 minutes; run as is, this test would take minutes. The copy is made here from
the real file, programmatically, changing only each group's `interval` (to 1 s) and each alert's
`for:` (to 0 s), never an expression, label or name (asserted), so the test exercises the very
expressions, rate windows and label sets that production runs. The long rate windows need no change:
the counters exist at 0 from the worker's start (`streams.metrics.create`), so two one-second samples
are enough for rate()/increase() to see an increment.

The engine's grace window is *event* time (the tapes carry their own clock marks), so the default
grace is kept: the scenarios' expected classes depend on it. The wall-clock idle timeout is the short
one of worker_support (`DIVMON_IDLE_MS`), so a quiet input stops holding event time back soon.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.core.records import Feed
from streams.demo.procs import free_port
from streams.tapes import replay
from streams.tapes.model import TapeRecord
from tests.integration.worker_support import (
    ROOT,
    Names,
    create_inputs,
    emitted,
    final,
    produce,
    start_worker,
    stop,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
SCENARIOS = ROOT / "tests" / "scenarios"
LOOPBACK = "127.0.0.1"
FAULT_ALERTS = ("DivmonUnexplainedMismatches", "DivmonNeverInCache", "DivmonWitnessAnomaly")
# The fault tape moves by a whole number of witness sweeps (60 s), so its sweeps fall where they do
# in the golden tape, and past the race tape's last record (+10 s).
FAULT_SHIFT_MS = 60_000
TIMEOUT_S = 60.0


# --- Prometheus side -----------------------------------------------------------------------------


def fast_rules(src: Path, dst: Path) -> dict[str, Any]:
    """Write a copy of `src` whose groups evaluate every second and whose alerts have `for: 0s`.

    Nothing else changes; asserts that names, expressions and labels are those of `src`.
    """
    real = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"

    def essence(d: dict[str, Any]) -> list[list[dict[str, Any]]]:
        return [[{k: v for k, v in r.items() if k != "for"} for r in g["rules"]] for g in d["groups"]]

    assert essence(doc) == essence(real)
    assert [g["name"] for g in doc["groups"]] == [g["name"] for g in real["groups"]]
    dst.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return doc


def prometheus_config(path: Path, rules: Path, target: str) -> None:
    """Scrape `target` (job `divmon`, as the rules expect) every second; no `env` target label."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "divmon", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def start_prometheus(binary: str, config: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address={LOOPBACK}:{port}", "--log.level=info"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


class PromAPI:
    """The few calls of Prometheus's HTTP API the test needs (http://127.0.0.1:port)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://{LOOPBACK}:{port}"

    def _get(self, path: str, **params: str) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    def groups(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/rules")["groups"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["activeTargets"])


def ours(alerts: Iterable[dict[str, Any]], env: str) -> dict[str, list[dict[str, Any]]]:
    """Alerts of the fault names carrying our env, by name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        if a["labels"].get("alertname") in FAULT_ALERTS and a["labels"].get("env") == env:
            out.setdefault(a["labels"]["alertname"], []).append(a)
    return out


def unix(stamp: str) -> float:
    """An RFC 3339 time as Prometheus writes it (nanoseconds, any zone) in unix seconds."""
    m = re.fullmatch(r"(.+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert m is not None, stamp
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + zone).timestamp() + float("0." + (m[2] or "0"))


def evaluated_after(api: PromAPI, moment: float) -> bool:
    """Every rule group has finished an evaluation that started after `moment` (unix seconds)."""
    return all(unix(g.get("lastEvaluation") or "0001-01-01T00:00:00Z") > moment for g in api.groups())


# --- tapes -----------------------------------------------------------------------------------------


def golden(name: str) -> list[TapeRecord]:
    return list(replay.open_tape(SCENARIOS / f"{name}.jsonl"))


def fault_tape() -> tuple[list[TapeRecord], list[TapeRecord]]:
    """xau_bookmark_wipe moved after the race tape: (records before the fault, the fault onwards).

    The fault is the last EP3 snapshot (it omits the dormant XAU-PERP); only the clock mark follows it.
    """
    tape = list(moved(golden("xau_bookmark_wipe"), FAULT_SHIFT_MS, "W"))
    at = max(r.ts_ms for r in tape if r.feed is Feed.EP3)
    setup, fault = [r for r in tape if r.ts_ms < at], [r for r in tape if r.ts_ms >= at]
    assert [r.feed for r in fault] == [Feed.EP3, Feed.MARKS], fault
    return setup, fault


def moved(records: Iterable[TapeRecord], shift_ms: int, tag: str) -> Iterator[TapeRecord]:
    """The same records `shift_ms` later in event time, accounts and fill ids prefixed with `tag`."""
    for r in records:
        rec: Any = r.record
        fields = rec._fields
        change: dict[str, Any] = {f: getattr(rec, f) + shift_ms for f in ("ts_ms", "published_ts_ms")
                                  if f in fields}
        change.update({f: tag + getattr(rec, f) for f in ("account_id", "fill_id") if f in fields})
        yield TapeRecord(r.ts_ms + shift_ms, r.feed, rec._replace(**change), r.where)


# --- the test --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus not found: scripts/install-tools.sh installs Debian's `prometheus` package")
    return path


def test_alerts_fire_through_a_real_prometheus(kafka_bootstrap: str, kafka_topics: object, tmp_path: Path,
                                               prometheus_bin: str) -> None:
    """Race noise fires nothing; a never_in_cache loss fires the three fault alerts with our env."""
    names = Names()
    env = f"e2e-{names.tag}"
    create_inputs(kafka_topics, names)  # type: ignore[arg-type]
    metrics_port, prom_port = free_port(), free_port()
    rules = tmp_path / "rules.yml"
    fast_rules(RULES, rules)
    prometheus_config(tmp_path / "prometheus.yml", rules, f"{LOOPBACK}:{metrics_port}")
    worker_log, prom_log = tmp_path / "worker.log", tmp_path / "prometheus.log"
    api = PromAPI(prom_port)
    setup, fault = fault_tape()
    # Everything before the fault is on the topics before the worker starts, as in test_worker_parity
    # (see the module docstring: a burst produced to an idle worker is not released in event-time order).
    produce(kafka_bootstrap, names, [*golden("propagation_race_ep3_fresher"), *setup])
    prom = worker = None

    def alive() -> None:
        assert worker is None or worker.poll() is None, "worker exited:\n" + worker_log.read_text()[-3000:]
        assert prom is None or prom.poll() is None, "prometheus exited:\n" + prom_log.read_text()[-3000:]

    def check(what: str, predicate: Any) -> None:
        def step() -> bool:
            alive()
            return bool(predicate())

        try:
            wait_for(step, TIMEOUT_S, what, step=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnosis()}") from None

    def diagnosis() -> str:
        verdicts = [{k: r.get(k) for k in ("type", "account_id", "symbol", "class", "status", "state")}
                    for r in final(emitted(kafka_bootstrap, names)).values()]
        return (f"alerts: {[(a['labels'], a['state']) for a in api.alerts()]}\nworker verdicts: {verdicts}\n"
                f"--- worker log\n{worker_log.read_text()[-2000:]}")

    try:
        prom = start_prometheus(prometheus_bin, tmp_path / "prometheus.yml", tmp_path / "tsdb", prom_port,
                                prom_log)
        check("prometheus to be ready", api.ready)
        loaded = {r["name"] for g in api.groups() for r in g["rules"]}
        assert set(FAULT_ALERTS) <= loaded, loaded
        worker = start_worker(kafka_bootstrap, names, worker_log, ["--env", env, "--metrics-port", str(metrics_port)])

        # phase 1: race noise only
        check("the worker's two propagation races in prometheus",
              lambda: api.value(f'divmon_mismatches_total{{env="{env}",class="propagation_race"}}') == 2)
        seen = time.time()
        check("every rule group to evaluate the race data", lambda: evaluated_after(api, seen + 1))
        assert all(r.get("health") == "ok" for g in api.groups() for r in g["rules"]), api.groups()
        assert not ours(api.alerts(), env), f"race noise fired an alert\n{diagnosis()}"
        assert (api.value(f'divmon:mismatches:rate5m{{env="{env}",class="propagation_race"}}') or 0) > 0
        assert api.value(f'sum(divmon:mismatches_unexplained:rate5m{{env="{env}"}})') == 0
        assert api.value(f'sum(divmon_witness_anomalies_total{{env="{env}"}})') == 0
        # the fault counter has been scraped at 0, so rate() and increase() will see its first increment
        assert api.value(f'divmon_mismatches_total{{env="{env}",class="never_in_cache"}}') == 0

        # phase 2: the EP3 snapshot that loses the dormant XAU-PERP, and the clock mark after it
        produce(kafka_bootstrap, names, fault)

        def all_firing() -> bool:
            firing = {name: [a for a in found if a["state"] == "firing"]
                      for name, found in ours(api.alerts(), env).items()}
            return all(firing.get(name) for name in FAULT_ALERTS)

        check("DivmonNeverInCache, DivmonUnexplainedMismatches and DivmonWitnessAnomaly to fire", all_firing)
        fired = ours(api.alerts(), env)
        assert {a["labels"]["severity"] for found in fired.values() for a in found} == {"critical"}
        assert [a["labels"]["status"] for a in fired["DivmonWitnessAnomaly"]] == ["never_in_cache"], diagnosis()
        assert len(fired["DivmonNeverInCache"]) == 1
        assert api.value(f'divmon_mismatches_total{{env="{env}",class="never_in_cache"}}') == 1
        # open episodes are gauges the worker sets from engine state once a second: they may trail the counter
        check("the open never_in_cache mismatch and witness anomaly gauges",
              lambda: api.value(f'divmon_open_mismatches{{env="{env}",class="never_in_cache"}}') == 1
              and api.value(f'sum(divmon_open_witness_anomalies{{env="{env}"}})') == 1
              and api.value(f'divmon_open_witness_anomalies{{env="{env}",status="never_in_cache"}}') == 1)
    finally:
        if prom is not None:
            stop(prom)
        if worker is not None:
            stop(worker)
