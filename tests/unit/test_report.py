"""`divmon report` against the embedded ClickHouse (chdb) with real SQL: its numbers are what was inserted."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.commands.report import command as report_command
from streams.config import Settings
from streams.core.events import AvailGapFlip, Event, PositionMismatch, Unvaluable, WitnessCheck
from streams.report.attribution import Report, build_report
from streams.report.report_sql import fetch
from streams.sinks.clickhouse import ClickHouseSink

H = 3_600_000
T0 = 1_780_000_000_000 // H * H
SINCE, UNTIL = T0, T0 + 24 * H
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def mismatch(eid: str, cls: str | None, t: int, *, account: str = "A1", symbol: str = "BTC-PERP",
             delta: str = "1", fresher: str = "EP3", resolved: int | None = None, version: int = 1,
             age: int = 500) -> PositionMismatch:
    confirmed = None if cls in (None, "propagation_race") else t + 2000
    state = "resolved" if resolved is not None else ("confirmed" if confirmed else "opened")
    return PositionMismatch(eid, version, "x", "EP3", account, symbol, state, cls,  # type: ignore[arg-type]
                            Decimal(delta), Decimal(0), Decimal(delta), t, confirmed, resolved,
                            fresher, Decimal(100), None, None, age, None, None, None)  # type: ignore[arg-type]


def flip(eid: str, t: int, mismatch_: bool, account: str = "A1", oom_gap: str = "0") -> AvailGapFlip:
    return AvailGapFlip(eid, 2, "x", "EP3", account, Decimal(0), "resolved", t, t + 1500, Decimal(-5),
                        Decimal(10), Decimal(-15), Decimal(100) + Decimal(oom_gap), Decimal(100), None, None,
                        Decimal(1000), 800, mismatch_, ("BTC-PERP",), (Decimal(3),))


def unvaluable(eid: str, t: int, source: str, reason: str, resolved: int | None = None) -> Unvaluable:
    return Unvaluable(eid, 1, "x", "EP3", "A3", "NEW-PERP", source, "confirmed",  # type: ignore[arg-type]
                      Decimal(2), reason, t, resolved)  # type: ignore[arg-type]


def anomaly(eid: str, t: int, status: str) -> WitnessCheck:
    return WitnessCheck(eid, 1, "x", "EP3", "anomaly", t, "A7", "XAU-PERP", Decimal(13), None,
                        status, "confirmed", "ep3", t, t + 2000, None, "p0",  # type: ignore[arg-type]
                        None, None, None, None, None)


def sweep(t: int) -> WitnessCheck:
    return WitnessCheck(f"s{t}", 1, "x", "EP3", "sweep", t, None, None, None, None, None, None, "ep3",
                        None, None, None, "p0", 40, 0, 0, 2, 900_000)


def scenario() -> list[Event]:
    """6 flips (4 agreed, 2 with a propagation race, EP3 fresher, ±1 and 7 lots); 3 unexplained
    mismatches (one confirmed then resolved: two versions); unvaluable 2 EP3 + 1 RE; 2 anomalies;
    3 sweeps; and one of each outside the range, which must not count."""
    t = T0 + 2 * H
    return [
        *(flip(f"f{i}", t + i * H, False) for i in range(4)),
        flip("f4", t + 5 * H, True, oom_gap="40"), flip("f5", t + 6 * H, True, account="A2"),
        mismatch("r1", "propagation_race", t + 5 * H - 300, delta="-1", resolved=t + 5 * H + 500),
        mismatch("r2", "propagation_race", t + 6 * H - 100, account="A2", delta="7", resolved=t + 6 * H + 900),
        mismatch("p1", "persistent", t + 7 * H, account="A9", symbol="ETH-PERP", delta="3", fresher="RE"),
        mismatch("p1", "persistent", t + 7 * H, account="A9", symbol="ETH-PERP", delta="3", fresher="RE",
                 resolved=t + 8 * H, version=2),
        mismatch("n1", "never_in_cache", t + 9 * H, account="A7", symbol="XAU-PERP", delta="-13", fresher="RE"),
        mismatch("ph", "phantom", t + 9 * H, account="A7", symbol="SOL-PERP", delta="2", fresher="UNKNOWN"),
        unvaluable("u1", t, "EP3", "missing_mark"), unvaluable("u2", t + H, "EP3", "missing_mark", t + 2 * H),
        unvaluable("u3", t + H, "RE", "missing_im"),
        anomaly("a1", t + 9 * H, "never_in_cache"), anomaly("a2", t + 10 * H, "phantom"),
        sweep(t), sweep(t + H), sweep(t + 2 * H),
        flip("out1", UNTIL + H, True), mismatch("out2", "persistent", SINCE - 30 * H, resolved=SINCE - 29 * H),
        unvaluable("out3", UNTIL, "EP3", "missing_mark"), anomaly("out4", SINCE - 1, "phantom"),
    ]


@pytest.fixture(scope="module")
def loaded(chdb_dir: Path) -> Iterator[tuple[Settings, ClickHouseSink]]:
    """A migrated database in the process's chdb directory holding `scenario()`, written through the
    real sink (TTL off: the fixed instants are older than the default 90 days)."""
    settings = Settings.load({"env": "x", "clickhouse_path": str(chdb_dir), "clickhouse_ttl_days": 0,
                              "clickhouse_database": f"report_{uuid.uuid4().hex[:12]}"}, environ={})
    sink = ClickHouseSink(settings)
    sink.setup()
    sink.write(scenario())
    sink.write([dataclasses.replace(e, env="other", event_id="o" + e.event_id) for e in scenario()])
    yield settings, sink
    sink.client.command(f"DROP DATABASE IF EXISTS {sink.database}")
    sink.close()


@pytest.fixture(scope="module")
def report(loaded: tuple[Settings, ClickHouseSink]) -> Report:
    settings, sink = loaded
    f = fetch(sink.client, settings.clickhouse_database, "x", SINCE, UNTIL)
    return build_report("x", SINCE, UNTIL, f.flips, f.mismatches, f.unvaluable, f.anomalies, f.sweeps)


def test_flip_decomposition(report: Report) -> None:
    """'of N flips, M agreed on positions; K had a position_mismatch, by class and fresher'."""
    assert report.flips.sentence() == ("of 6 flips, 4 agreed on positions; 2 had a position_mismatch: "
                                       "2 propagation_race; EP3 fresher 2; |delta| 1–7")
    assert report.flips.unmatched == 0


def test_mismatches_by_class_counted_once_per_event(report: Report) -> None:
    """Final versions only: the persistent mismatch emitted twice counts once and shows resolved."""
    rows = {c.cls: c for c in report.classes}
    assert {c: r.n for c, r in rows.items()} == {"propagation_race": 2, "persistent": 1, "never_in_cache": 1,
                                                  "phantom": 1}
    assert rows["persistent"].still_open == 0 and rows["never_in_cache"].still_open == 1
    assert rows["propagation_race"].by_fresher == {"EP3": 2}
    assert (rows["propagation_race"].abs_delta.min, rows["propagation_race"].abs_delta.max) == (1, 7)


def test_top_accounts_symbols_and_other_sections(report: Report) -> None:
    """Top lists lead with unexplained trouble; unvaluable, witness and gap stats match the inserts."""
    assert (report.top_accounts[0].key, report.top_accounts[0].unexplained) == ("A7", 2)
    assert {t.key for t in report.top_symbols} == {"BTC-PERP", "ETH-PERP", "XAU-PERP", "SOL-PERP"}
    assert report.unvaluable == {"EP3/missing_mark": 2, "RE/missing_im": 1} and report.unvaluable_open == 2
    assert report.anomalies == {"never_in_cache": 1, "phantom": 1}
    assert (report.sweeps.sweeps, report.sweeps.oldest_dormant_age_ms_max) == (3, 900_000)
    assert report.open_orders_margin_gap.max == 40 and report.open_orders_margin_gap.n == 6
    assert report.snapshot_age_ms.n == 6 + 5


def invoke(settings: Settings, *args: str) -> Any:
    env = {"DIVMON_CLICKHOUSE_PATH": settings.clickhouse_path,
           "DIVMON_CLICKHOUSE_DATABASE": settings.clickhouse_database, "DIVMON_ENV": "x"}
    return CliRunner().invoke(report_command, list(args), env=env, catch_exceptions=False)


def test_cli_json_text_and_plot(loaded: tuple[Settings, ClickHouseSink], tmp_path: Path) -> None:
    """--json carries the same numbers, text shows the sentence, --plot writes a PNG; bad input exits 2."""
    settings, _ = loaded
    png = tmp_path / "hourly.png"
    res = invoke(settings, "--since", str(SINCE), "--until", "2026-05-29T20:00:00Z", "--json", "--plot", str(png))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["flips"]["flips"] == 6 and doc["flips"]["with_mismatch"] == 2
    assert sum(r["n"] for r in doc["classes"]) == 5
    assert sum(h["count"] for h in doc["hourly"]) == 5
    assert png.read_bytes().startswith(PNG_MAGIC)
    res = invoke(settings, "--now", str(UNTIL))
    assert res.exit_code == 0 and "of 6 flips, 4 agreed on positions" in res.output
    assert invoke(settings, "--since", str(UNTIL), "--until", str(SINCE)).exit_code == 2
    assert invoke(settings, "--since", "soon").exit_code == 2


def test_cli_missing_tables_exit_1(loaded: tuple[Settings, ClickHouseSink]) -> None:
    """A database without the tables is an error naming the query (exit 1), not an empty report."""
    settings, _ = loaded
    res = invoke(dataclasses.replace(settings, clickhouse_database="absent_db"), "--now", str(UNTIL))
    assert res.exit_code == 1 and "mismatches" in res.output


def test_every_option_names_its_variable() -> None:
    """`--help` shows [env: DIVMON_...] for every option."""
    for param in report_command.params:
        assert "[env: DIVMON_" in (getattr(param, "help", "") or ""), param.name
