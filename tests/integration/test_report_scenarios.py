"""A composite day with faults known in code, stored with `divmon replay --store`, then `divmon report`
and `divmon gate` over it: the report's numbers are the injected ones, the gate names the injected
trouble, and a clean version of the same day is CLEARED (exit 0).

The day (24 h of event time from T0) is written with `tests.support.tapes.T`, one account per piece,
so every count below follows from the piece lists in this file, not from running the engine:

- heartbeat: account ACC-HB has an EP3 update and an OG margin sweep, and BTC-PERP a mark, every
  minute (the gate's required feeds), which also drives a witness sweep every minute;
- every account with an OG sweep reports `positions_source=EP3` from T0: EP3 is primary all day;
- races (explained noise): EP3 fresher — ACC-RACE-A ×3, ACC-RACE-B ×1, plus the 4 flip races;
  RE fresher — ACC-RACE-C ×3 on ETH-PERP; each resolves within the 2 s grace;
- flips: ACC-FLIP-1..4 flip (OG avail < 0, RE ≥ 0) together with an EP3-fresher race of 1, 3, 5, 7
  lots; ACC-VAL-1..2 flip on valuation alone (positions agree);
- faults (only in the faulty day): one never_in_cache (RE shows 13 XAU-PERP that EP3 never sends),
  one phantom (EP3 and a fill show 5 SOL-PERP that RE never publishes), one persistent (RE 18 s late),
  one witness anomaly (ACC-WIT, no RE at all: an EP3 snapshot drops its 13 XAU-PERP), and three
  unvaluable positions (EP3 missing_mark, EP3 missing_instrument, RE missing_im).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from tests.support.store_cli import invoke, replay_store, store_env
from tests.support.tapes import BASE, T

H = 3_600_000
M = 60_000
T0 = BASE  # a whole minute
DAY_MS = 24 * H
NOW = T0 + DAY_MS
BTC, ETH, XAU, SOL, DOGE, NEWC = "BTC-PERP", "ETH-PERP", "XAU-PERP", "SOL-PERP", "DOGE-PERP", "NEWC-PERP"

# ---- the injected pieces (the ground truth) -------------------------------------------------------

EP3_RACES = {"ACC-RACE-A": (1, 2, -1), "ACC-RACE-B": (4,)}  # BTC-PERP lots per race
RE_RACES = {"ACC-RACE-C": (1, 1, -2)}  # ETH-PERP
FLIP_RACES = {"ACC-FLIP-1": 1, "ACC-FLIP-2": 3, "ACC-FLIP-3": 5, "ACC-FLIP-4": 7}  # BTC-PERP
VALUATION_FLIPS = ("ACC-VAL-1", "ACC-VAL-2")
NIC, PHANTOM, PERSIST, WIT = "ACC-NIC", "ACC-PHANTOM", "ACC-PERSIST", "ACC-WIT"
UNVAL_MARK, UNVAL_INST, UNVAL_IM = "ACC-UV-MARK", "ACC-UV-INST", "ACC-UV-IM"
HB = "ACC-HB"
START = {BTC: "2", ETH: "1"}  # every compared account's positions at T0


@dataclass
class Day:
    """Builds the day: per-account seq and positions, so every RE snapshot is the full state."""

    t: T = field(default_factory=lambda: T(T0))
    seq: dict[str, int] = field(default_factory=dict)
    re: dict[str, dict[str, Any]] = field(default_factory=dict)
    slot: int = 0

    def next_slot(self) -> int:
        """A fresh instant for the next piece: pieces are 50 min apart, 10 s into a minute."""
        self.slot += 1
        return self.slot * 50 * M + 10_000

    def ep3(self, account: str, at: int, positions: dict[str, str], snapshot: bool = False) -> None:
        self.seq[account] = self.seq.get(account, 0) + 1
        build = self.t.ep3_snapshot if snapshot else self.t.ep3_update
        build(account, seq=self.seq[account], at=at, positions=positions)

    def risk(self, account: str, at: int, avail: str = "1000", **pos: Any) -> None:
        self.re.setdefault(account, dict(START)).update({k.replace("_", "-"): v for k, v in pos.items()})
        self.t.risk(account, at=at, positions=dict(self.re[account]), avail=avail)

    def qty(self, account: str, symbol: str) -> Decimal:
        return Decimal(str(self.re.get(account, START).get(symbol, "0")))

    def open_account(self, account: str, og: bool = False) -> None:
        """EP3 snapshot and RE snapshot agreeing at T0 (witness baseline: RE), and OG on EP3."""
        self.ep3(account, 0, START, snapshot=True)
        self.risk(account, 0)
        if og:
            self.t.og(account, at=0, avail="1000", source="EP3")

    def race_ep3_fresher(self, account: str, symbol: str, lots: int, og_avail: str | None = None) -> None:
        at, new = self.next_slot(), self.qty(account, symbol) + lots
        self.t.fill(account, symbol, str(lots), at=at)
        self.ep3(account, at, {symbol: str(new)})
        if og_avail is not None:
            self.t.og(account, at=at, avail=og_avail, source="EP3")
        self.risk(account, at + 1_000, avail=og_avail or "1000", **{symbol: str(new)})

    def race_re_fresher(self, account: str, symbol: str, lots: int) -> None:
        at, new = self.next_slot(), self.qty(account, symbol) + lots
        self.t.fill(account, symbol, str(lots), at=at)
        self.risk(account, at, **{symbol: str(new)})
        self.ep3(account, at + 1_000, {symbol: str(new)})


def build_day(faults: bool) -> T:
    d = Day()
    d.t.instrument(BTC).mark(BTC, "60000").instrument(ETH).mark(ETH, "3000").instrument(XAU).mark(XAU, "11700")
    d.t.instrument(SOL).mark(SOL, "150").instrument(DOGE)  # DOGE-PERP never gets a mark
    for m in range(DAY_MS // M):  # heartbeat: the required feeds every minute, EP3 primary from T0
        at = m * M + 30_000
        if m == 0:
            d.ep3(HB, 0, {BTC: "1"}, snapshot=True)
            d.t.og(HB, at=0, avail="1000", source="EP3")
        d.ep3(HB, at, {BTC: "1"})
        d.t.og(HB, at=at, avail="1000", source="EP3")
        d.t.mark(BTC, "60000", at=at)
    for account in [*EP3_RACES, *RE_RACES, NIC, PHANTOM, PERSIST]:
        d.open_account(account)
    for account in [*FLIP_RACES, *VALUATION_FLIPS]:
        d.open_account(account, og=True)
    d.ep3(WIT, 0, {XAU: "13", BTC: "2"}, snapshot=True)  # no RE: witness baseline EP3

    for account, races in EP3_RACES.items():
        for lots in races:
            d.race_ep3_fresher(account, BTC, lots)
    for account, races in RE_RACES.items():
        for lots in races:
            d.race_re_fresher(account, ETH, lots)
    for account, lots in FLIP_RACES.items():
        d.race_ep3_fresher(account, BTC, lots, og_avail="-500")
    for account in VALUATION_FLIPS:
        at = d.next_slot()
        d.t.og(account, at=at, avail="-200", source="EP3")
        d.t.og(account, at=at + 30_000, avail="1000", source="EP3")
    if not faults:
        return d.t

    at = d.next_slot()  # never_in_cache: RE gains 13 XAU-PERP that EP3 never sends (no fill: no ledger change)
    d.risk(NIC, at, XAU_PERP="13")
    at = d.next_slot()  # phantom: a fill and EP3 show 5 SOL-PERP; RE never publishes it
    d.t.fill(PHANTOM, SOL, "5", at=at)
    d.ep3(PHANTOM, at, {SOL: "5"})
    at = d.next_slot()  # persistent: RE publishes the fill 18 s late (beyond grace), then agrees
    d.t.fill(PERSIST, BTC, "1", at=at)
    d.ep3(PERSIST, at, {BTC: "3"})
    d.risk(PERSIST, at + 18_000, BTC_PERP="3")
    at = d.next_slot()  # witness anomaly: an EP3 full snapshot drops the 13 XAU-PERP the ledger holds
    d.ep3(WIT, at, {BTC: "2"}, snapshot=True)
    for account, symbol, im in ((UNVAL_MARK, DOGE, "50"), (UNVAL_INST, NEWC, "70"), (UNVAL_IM, BTC, None)):
        at = d.next_slot()  # all three views agree on the qty; only the valuation is missing
        d.ep3(account, at, {symbol: "100"}, snapshot=True)
        d.t.risk(account, at=at, positions={symbol: ("100", im)})
    return d.t


# ---- what the report must say, derived by hand from the pieces above ------------------------------

N_EP3_FRESHER = sum(map(len, EP3_RACES.values())) + len(FLIP_RACES)  # 8
N_RE_FRESHER = sum(map(len, RE_RACES.values()))  # 3
N_FLIPS = len(FLIP_RACES) + len(VALUATION_FLIPS)  # 6

EXPECTED_CLASSES = [  # class, n, still open, fresher, |delta| min, max
    ("propagation_race", N_EP3_FRESHER + N_RE_FRESHER, 0, {"EP3": N_EP3_FRESHER, "RE": N_RE_FRESHER}, "1", "7"),
    ("never_in_cache", 1, 1, {"UNKNOWN": 1}, "13", "13"),  # EP3 never touched XAU-PERP: no fresher side
    ("persistent", 1, 0, {"EP3": 1}, "1", "1"),
    ("phantom", 1, 1, {"EP3": 1}, "5", "5"),
]
EXPECTED_TOP_ACCOUNTS = [  # unexplained first, then by count, then by name (TOP_N = 10)
    (NIC, 1, 1), (PERSIST, 1, 1), (PHANTOM, 1, 1), ("ACC-RACE-A", 3, 0), ("ACC-RACE-C", 3, 0),
    ("ACC-FLIP-1", 1, 0), ("ACC-FLIP-2", 1, 0), ("ACC-FLIP-3", 1, 0), ("ACC-FLIP-4", 1, 0), ("ACC-RACE-B", 1, 0),
]
EXPECTED_TOP_SYMBOLS = [(BTC, 4 + 4 + 1, 1), (SOL, 1, 1), (XAU, 1, 1), (ETH, 3, 0)]
EXPECTED_SENTENCE = ("of 6 flips, 2 agreed on positions; 4 had a position_mismatch: 4 propagation_race; "
                     "EP3 fresher 4; |delta| 1–7")


# ---- fixtures: the days stored once per module ----------------------------------------------------

@pytest.fixture(scope="module")
def tapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("days")
    return {"faulty": build_day(True).write_jsonl(root / "faulty.jsonl"),
            "clean": build_day(False).write_jsonl(root / "clean.jsonl")}


@pytest.fixture(scope="module")
def stored(chdb_dir: Path, tapes: dict[str, Path], http_server: Any) -> dict[str, Settings]:
    """Both days in one chdb database (env `prod` faulty, `prod_clean` clean) and the faulty day again
    over HTTP in a database of its own, each written by `divmon replay --store`."""
    saved = {v: os.environ.pop(v) for v in [v for v in os.environ if v.startswith("DIVMON_")]}
    try:
        tag = uuid.uuid4().hex[:10]
        base = Settings.load({"clickhouse_path": str(chdb_dir), "clickhouse_ttl_days": 0,
                              "clickhouse_database": f"day_{tag}"}, environ={})
        out = {"chdb": replace(base, env="prod"), "chdb_clean": replace(base, env="prod_clean"),
               "http": replace(base, env="prod", clickhouse_database=f"day_http_{tag}",
                               clickhouse_url=http_server.url)}
        for key, tape in (("chdb", "faulty"), ("chdb_clean", "clean"), ("http", "faulty")):
            events = replay_store([tapes[tape]], store_env(out[key]))
            assert events
        return out
    finally:
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_divmon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("DIVMON_")]:
        monkeypatch.delenv(var)


def report(settings: Settings, *args: str) -> Any:
    return invoke(["report", "--since", str(T0), "--until", str(NOW), *args], store_env(settings))


def gate(settings: Settings, *args: str) -> Any:
    return invoke(["gate", "--now", str(NOW), "--soak-target-h", "24", *args], store_env(settings))


def report_doc(settings: Settings) -> dict[str, Any]:
    res = report(settings, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def gate_doc(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    res = gate(settings, "--json", *args)
    return res.exit_code, json.loads(res.stdout)


# ---- the report -----------------------------------------------------------------------------------

def test_report_numbers_equal_the_injected_faults(stored: dict[str, Settings]) -> None:
    """Flip decomposition, mismatches by class and fresher side, top accounts and symbols, unvaluable
    counts, witness anomalies and gap statistics: each equals what the day injects."""
    doc = report_doc(stored["chdb"])
    flips = doc["flips"]
    assert (flips["flips"], flips["agreed"], flips["with_mismatch"], flips["unmatched"]) == (N_FLIPS, 2, 4, 0)
    assert flips["by_class"] == {"propagation_race": 4} and flips["by_fresher"] == {"EP3": 4}
    assert (flips["abs_delta"]["n"], flips["abs_delta"]["min"], flips["abs_delta"]["max"]) == (4, "1", "7")
    assert flips["sentence"] == EXPECTED_SENTENCE

    got = [(c["cls"], c["n"], c["still_open"], c["by_fresher"], c["abs_delta"]["min"], c["abs_delta"]["max"])
           for c in doc["classes"]]
    assert got == EXPECTED_CLASSES
    assert [(t["key"], t["mismatches"], t["unexplained"]) for t in doc["top_accounts"]] == EXPECTED_TOP_ACCOUNTS
    assert [(t["key"], t["mismatches"], t["unexplained"]) for t in doc["top_symbols"]] == EXPECTED_TOP_SYMBOLS
    assert sum(h["count"] for h in doc["hourly"]) == N_EP3_FRESHER + N_RE_FRESHER + 3

    assert doc["unvaluable"] == {"EP3/missing_mark": 1, "EP3/missing_instrument": 1, "RE/missing_im": 1}
    assert doc["unvaluable_open"] == 3
    assert doc["anomalies"] == {"never_in_cache": 1} and doc["anomalies_open"] == 1
    assert doc["sweeps"]["sweeps"] == DAY_MS // M - 1  # one per minute boundary after T0 up to the last record

    # flips: OG avail -500 (races) or -200 (valuation) against RE's 1000
    assert doc["avail_gap"] == {"n": 6, "min": "1200", "p50": "1500", "p90": "1500", "p99": "1500", "max": "1500"}
    assert doc["open_orders_margin_gap"]["n"] == 6 and doc["open_orders_margin_gap"]["max"] == "0"
    assert doc["snapshot_age_ms"]["n"] == 14 + 6  # every mismatch had an RE snapshot, plus every flip


def test_report_text_says_the_same(stored: dict[str, Settings]) -> None:
    res = report(stored["chdb"])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert EXPECTED_SENTENCE in text
    assert "unvaluable positions: 3 (3 still open)" in text
    assert "witness anomalies: 1 (1 still open)" in text
    assert "EP3:8 RE:3" in text  # fresher side of the races
    lines = text.splitlines()
    top = lines.index("top accounts")
    assert [line.split()[0] for line in lines[top + 3: top + 6]] == [NIC, PERSIST, PHANTOM]


# ---- the gate -------------------------------------------------------------------------------------

def test_gate_names_the_injected_trouble(stored: dict[str, Settings]) -> None:
    """The soak covers the day, EP3 primary, feeds continuous: NOT_CLEARED for exactly the faults."""
    code, doc = gate_doc(stored["chdb"])
    assert (code, doc["verdict"], doc["exit_code"]) == (1, "NOT_CLEARED", 1)
    assert {r["code"] for r in doc["reasons"]} == {"UNEXPLAINED_MISMATCH", "WITNESS_ANOMALY", "UNVALUABLE"}
    assert doc["unexplained_mismatches"]["count"] == 3
    assert {(f["account_id"], f["symbol"]) for f in doc["unexplained_mismatches"]["sample"]} == {
        (NIC, XAU), (PHANTOM, SOL), (PERSIST, BTC)}
    assert doc["witness_anomalies"]["count"] == 1
    assert doc["witness_anomalies"]["sample"][0]["account_id"] == WIT
    assert doc["unvaluable"]["count"] == 3
    assert doc["flip"]["primary"] == "EP3" and doc["flip"]["soak_start_ms"] == T0
    assert doc["feed_gaps"] == [] and doc["soak_h"] == 24.0
    assert doc["exposure"]["events"] == 4

    res = gate(stored["chdb"])  # text: the verdict first, then every reason
    assert res.exit_code == 1 and res.stdout.startswith("NOT_CLEARED")
    assert all(f"✗ {c}:" in res.stdout for c in ("UNEXPLAINED_MISMATCH", "WITNESS_ANOMALY", "UNVALUABLE"))


def test_clean_day_is_cleared(stored: dict[str, Settings]) -> None:
    """The same day without the faults (races and flips only): CLEARED, exit 0, with a rule-of-three
    bound; one minute more of target than the soak gives SOAK_SHORT."""
    code, doc = gate_doc(stored["chdb_clean"])
    assert doc["reasons"] == [] and (code, doc["verdict"]) == (0, "CLEARED")
    assert doc["flip"]["primary"] == "EP3" and doc["flip"]["lagging_accounts_count"] == 0
    x = doc["exposure"]
    assert x["events"] == 0 and x["upper95_per_hour"] == pytest.approx(3 / 24)
    assert x["checks"] == DAY_MS // M + len(FLIP_RACES) * 2 + len(VALUATION_FLIPS) * 3 + 1

    res = gate(stored["chdb_clean"])
    assert res.exit_code == 0 and res.stdout.startswith("CLEARED")
    res = gate(stored["chdb_clean"], "--soak-target-h", "24.02")
    assert res.exit_code == 1 and "SOAK_SHORT" in res.stdout


def test_report_and_gate_over_http_match_chdb(stored: dict[str, Settings]) -> None:
    """The same day stored and read over the HTTP fixture gives the same report and gate documents."""
    assert report_doc(stored["http"]) == report_doc(stored["chdb"])
    http_code, http_doc = gate_doc(stored["http"])
    chdb_code, chdb_doc = gate_doc(stored["chdb"])
    assert (http_code, http_doc) == (chdb_code, chdb_doc)
