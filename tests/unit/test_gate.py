"""`divmon gate` against the embedded ClickHouse (chdb) with real SQL: every failing reason, and CLEARED."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.commands.gate import command as gate_command
from streams.commands.gate import feed_names
from streams.config import Settings
from streams.core.events import Event, FeedHealth, PositionMismatch, SourceTransition, Unvaluable, WitnessCheck
from streams.report.evidence import GateQuery, gather
from streams.report.flips import Transition, dedup, flip_state
from streams.report.gaps import find_gaps
from streams.report.gate import GateResult, judge
from streams.sinks.clickhouse import ClickHouseSink
from streams.sinks.connect import connect

H = 3_600_000
M = 60_000
NOW = 1_780_000_020_000 // M * M
FEEDS = ("ep3.positions", "og.margin", "marks")
ENV = "prod"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- event builders -------------------------------------------------------------------------------

def transition(ts: int, frm: str, to: str, account: str = "A1", scope: str = "p0") -> SourceTransition:
    return SourceTransition(f"t-{ts}-{account}-{scope}", 1, ENV, to, ts, frm, to, account, scope)


def feed(minute: int, name: str, records: int = 30) -> FeedHealth:
    return FeedHealth(f"f-{name}-{minute}", 1, ENV, "EP3", minute, name, records, "p0")


def sweep(ts: int) -> WitnessCheck:
    return WitnessCheck(f"s-{ts}", 1, ENV, "EP3", "sweep", ts, None, None, None, None, None, None,
                        "ep3", None, None, None, "p0", 40, 0, 0, 3, 700_000)


def mismatch(cls: str | None, first_seen: int, *, confirmed: int | None = None, resolved: int | None = None,
             version: int = 1, eid: str = "m1", account: str = "A1", symbol: str = "XAU-PERP",
             delta: str = "13", fresher: str = "RE") -> PositionMismatch:
    state = "resolved" if resolved is not None else ("confirmed" if confirmed is not None else "opened")
    return PositionMismatch(eid, version, ENV, "EP3", account, symbol, state, cls,  # type: ignore[arg-type]
                            None, Decimal(delta), Decimal(delta), first_seen, confirmed, resolved,
                            fresher, Decimal("2300"), Decimal("7600"), Decimal("1e6"), 900,  # type: ignore[arg-type]
                            Decimal("5000"), Decimal("1000"), Decimal("0"))


def anomaly(ts: int, status: str = "never_in_cache", resolved: int | None = None) -> WitnessCheck:
    state = "confirmed" if resolved is None else "resolved"
    return WitnessCheck(f"a-{ts}", 1, ENV, "EP3", "anomaly", ts, "A7", "XAU-PERP", Decimal(13), None,
                        status, state, "ep3", ts - 2500, ts, resolved, "p0",  # type: ignore[arg-type]
                        None, None, None, None, None)


def unvaluable(ts: int, source: str = "EP3") -> Unvaluable:
    return Unvaluable(f"u-{ts}", 1, ENV, "EP3", "A3", "NEW-PERP", source, "confirmed",  # type: ignore[arg-type]
                      Decimal(2), "missing_mark", ts, None)


def clean_soak(hours: float = 13, feeds: tuple[str, ...] = FEEDS, sweeps: bool = True) -> list[Event]:
    """RE -> EP3 `hours` before NOW (reported twice), every required feed and the witness every minute."""
    start = NOW - int(hours * H)
    events: list[Event] = [transition(start - 1500, "RISK_ENGINE", "EP3", "A1", "p0"),
                           transition(start, "RISK_ENGINE", "EP3", "A2", "p1")]
    for minute in range(start // M * M - 10 * M, NOW, M):
        events += [feed(minute, f) for f in feeds]
        if sweeps:
            events.append(sweep(minute + 30_000))
    return events


# ---- database plumbing ----------------------------------------------------------------------------

def settings_for(path: str, database: str, env: str = ENV) -> Settings:
    """TTL off: the fixed test instants lie further in the past than the default 90-day TTL."""
    return Settings.load({"env": env, "clickhouse_path": path, "clickhouse_database": database,
                          "clickhouse_ttl_days": 0}, environ={})


@pytest.fixture(scope="module")
def migrated(chdb_dir: Path) -> Iterator[ClickHouseSink]:
    """One database per module in the process's chdb directory (tests/conftest.py), migrated by the
    real sink, which stays open for the module's writes (DDL in chdb takes seconds; env and event ids
    are rewritten per test, so rows never collide)."""
    sink = ClickHouseSink(settings_for(str(chdb_dir), f"gate_{uuid.uuid4().hex[:12]}"))
    sink.setup()
    yield sink
    sink.client.command(f"DROP DATABASE IF EXISTS {sink.database}")
    sink.close()


@dataclass(frozen=True)
class Db:
    """The module's database and an env of this test's own: every query filters by env, so each test
    starts from no rows without paying for DDL or TRUNCATE."""

    path: str
    name: str
    env: str
    sink: ClickHouseSink | None = None


@pytest.fixture
def db(migrated: ClickHouseSink) -> Db:
    return Db(migrated.settings.clickhouse_path, migrated.database, f"test_{uuid.uuid4().hex[:10]}", migrated)


def store(db: Db, events: list[Event]) -> None:
    """Write through the real sink (column types, dedup tokens), in the test's env."""
    assert db.sink is not None
    db.sink.write([dataclasses.replace(e, env=db.env, event_id=f"{db.env}-{e.event_id}") for e in events])


def run_gate(db: Db, *, now: int = NOW, target_h: float = 12, gap_s: int = 300,
             feeds: str = "ep3.positions,og.margin,marks,witness.sweep") -> GateResult:
    settings = settings_for(db.path, db.name, db.env)
    q = GateQuery(db.name, db.env, now, int(target_h * H), gap_s * 1000, feed_names(settings, feeds))
    client = connect(settings)
    try:
        return judge(gather(client, q))
    finally:
        client.close()


def codes(result: GateResult) -> set[str]:
    return {r.code for r in result.reasons}


Scenario = Callable[[list[Event]], list[Event]]


# ---- verdicts -------------------------------------------------------------------------------------

def test_clean_soak_is_cleared(db: Db) -> None:
    """130 h on EP3 against the default 120 h, every feed alive, nothing unexplained: CLEARED, with a
    rule-of-three bound."""
    store(db, clean_soak(hours=130))
    result = run_gate(db, target_h=120)
    assert result.verdict == "CLEARED", result.reasons
    assert result.reasons == ()
    assert result.evidence.flip is not None and len(result.evidence.flip.flips) == 1
    assert result.exposure.events == 0
    assert result.exposure.upper95_per_hour == pytest.approx(3 / 130, rel=1e-3)
    assert result.exposure.checks == 30 * len(range((NOW - 130 * H) // M * M, NOW, M))
    assert result.exposure.upper95_per_million_checks == pytest.approx(3e6 / result.exposure.checks)


@pytest.mark.parametrize(("extra", "expected"), [
    pytest.param([transition(NOW - 3 * H, "EP3", "RISK_ENGINE")], {"PRIMARY_NOT_EP3", "FLIP_BACK"},
                 id="flip-back-to-risk-engine"),
    pytest.param([transition(NOW - 5 * H, "EP3", "RISK_ENGINE"), transition(NOW - 4 * H, "RISK_ENGINE", "EP3")],
                 {"FLIP_BACK", "SOAK_SHORT"}, id="flip-back-and-forth"),
    pytest.param([mismatch("persistent", NOW - 5 * H, confirmed=NOW - 5 * H + 2000)], {"UNEXPLAINED_MISMATCH"},
                 id="one-unexplained-mismatch"),
    pytest.param([mismatch("never_in_cache", NOW - 20 * H, confirmed=NOW - 20 * H + 2000)],
                 {"UNEXPLAINED_MISMATCH"}, id="open-since-before-soak"),
    pytest.param([anomaly(NOW - 3 * H)], {"WITNESS_ANOMALY"}, id="one-witness-anomaly"),
    pytest.param([unvaluable(NOW - 7 * H)], {"UNVALUABLE"}, id="one-unvaluable-position"),
])
def test_each_reason_blocks(db: Db, extra: list[Event], expected: set[str]) -> None:
    """Each kind of trouble inside the soak gives NOT_CLEARED naming exactly that reason."""
    store(db, clean_soak() + extra)
    result = run_gate(db)
    assert result.verdict == "NOT_CLEARED"
    assert codes(result) == expected


def test_confirmed_then_resolved_mismatch_still_blocks(db: Db) -> None:
    """A persistent mismatch that resolved later was still unexplained inside the soak (counted once)."""
    t = NOW - 2 * H
    store(db, [*clean_soak(), mismatch("persistent", t, confirmed=t + 2000, version=1),
               mismatch("persistent", t, confirmed=t + 2000, resolved=t + 60_000, version=2)])
    result = run_gate(db)
    assert codes(result) == {"UNEXPLAINED_MISMATCH"}
    assert result.evidence.unexplained is not None and len(result.evidence.unexplained) == 1
    assert result.evidence.unexplained[0].resolved_ts_ms == t + 60_000


def test_propagation_race_and_events_before_the_soak_do_not_block(db: Db) -> None:
    """Explained noise inside the soak, and unexplained trouble resolved before it, leave it CLEARED."""
    before = NOW - 20 * H
    store(db, [*clean_soak(),
               mismatch("propagation_race", NOW - 4 * H, resolved=NOW - 4 * H + 800, eid="race", fresher="EP3"),
               mismatch("persistent", before, confirmed=before + 2000, resolved=before + 9000, eid="old"),
               anomaly(before, resolved=before + H), transition(before - H, "EP3", "RISK_ENGINE")])
    result = run_gate(db)
    assert result.verdict == "CLEARED", result.reasons
    store(db, [anomaly(before - 1)])  # the same trouble still open when the soak started does block
    assert codes(run_gate(db)) == {"WITNESS_ANOMALY"}


def test_soak_shorter_than_target(db: Db) -> None:
    """5 h on EP3 against a 12 h target."""
    store(db, clean_soak(hours=5))
    result = run_gate(db)
    assert codes(result) == {"SOAK_SHORT"}
    assert "5.0 h < target 12.0 h" in result.reasons[0].message


@pytest.mark.parametrize(("drop", "feed_name"), [
    pytest.param(lambda e: isinstance(e, FeedHealth) and e.feed == "og.margin"
                 and NOW - 6 * H <= e.minute_ts_ms < NOW - 6 * H + 10 * M, "og.margin", id="middle"),
    pytest.param(lambda e: isinstance(e, FeedHealth) and e.feed == "marks" and e.minute_ts_ms >= NOW - 20 * M,
                 "marks", id="at-the-end"),
    pytest.param(lambda e: isinstance(e, FeedHealth) and e.feed == "ep3.positions"
                 and e.minute_ts_ms < NOW - 13 * H + 8 * M, "ep3.positions", id="at-the-start"),
    pytest.param(lambda e: isinstance(e, WitnessCheck) and NOW - 9 * H <= e.ts_ms < NOW - 8 * H,
                 "witness.sweep", id="witness-silent"),
])
def test_silent_feed_blocks(db: Db, drop: Callable[[Event], bool], feed_name: str) -> None:
    """A required feed silent longer than the threshold makes the soak unclean, wherever the silence is."""
    store(db, [e for e in clean_soak() if not drop(e)])
    result = run_gate(db)
    assert codes(result) == {"FEED_GAP"}
    assert result.evidence.gaps and {g.feed for g in result.evidence.gaps} == {feed_name}
    assert feed_name in result.reasons[0].message


def test_risk_snapshots_is_not_required_but_can_be(db: Db) -> None:
    """risk.snapshots disappears with RE retirement: absent by default is fine, required it is a gap."""
    store(db, clean_soak())
    assert run_gate(db).verdict == "CLEARED"
    result = run_gate(db, feeds="ep3.positions,og.margin,marks,risk.snapshots")
    assert codes(result) == {"FEED_GAP"}
    assert "risk.snapshots" in result.reasons[0].message


def test_empty_database(db: Db) -> None:
    """Migrated tables without a row: no data is not clean data."""
    result = run_gate(db)
    assert result.verdict == "NOT_CLEARED"
    assert {"EMPTY_DATABASE", "FLIP_STATE_UNKNOWN", "FEED_GAP"} <= codes(result)


def test_no_transition_means_flip_state_unknown(db: Db) -> None:
    """Data without any positions-source transition: the flip state is unknown, never assumed EP3."""
    store(db, [e for e in clean_soak() if not isinstance(e, SourceTransition)])
    assert codes(run_gate(db)) == {"FLIP_STATE_UNKNOWN"}


def test_missing_tables_are_a_reason_not_a_crash(db: Db) -> None:
    """A database that does not exist: every query fails, the gate says NOT_CLEARED with QUERY_ERROR."""
    result = run_gate(dataclasses.replace(db, name=f"nowhere_{uuid.uuid4().hex[:8]}"))
    assert result.verdict == "NOT_CLEARED"
    assert "QUERY_ERROR" in codes(result)
    assert all(r.code == "QUERY_ERROR" for r in result.reasons)


def test_mixed_fleet_is_not_on_ep3(db: Db) -> None:
    """One account still reports RISK_ENGINE as its latest source: not everyone is on EP3."""
    store(db, [*clean_soak(), transition(NOW - 14 * H, "EP3", "RISK_ENGINE", "A9", "p3")])
    assert codes(run_gate(db)) == {"PRIMARY_MIXED"}


# ---- pure pieces ----------------------------------------------------------------------------------

def test_duplicate_reports_are_one_flip_and_the_soak_starts_at_the_last() -> None:
    """Reports of the same flip within the window collapse; the soak starts at the latest report."""
    ts = [Transition(1000, "RISK_ENGINE", "EP3", "A1", "p0"), Transition(4000, "RISK_ENGINE", "ep3", "A2", "p1"),
          Transition(500_000, "EP3", "RISK_ENGINE", "A1", "p0")]
    assert [f.to_source for f in dedup(ts)] == ["EP3", "RISK_ENGINE"]
    state = flip_state(ts[:2])
    assert (state.primary, state.primary_since_ms, state.soak_start_ms) == ("EP3", 1000, 4000)
    assert flip_state([]).primary is None


def test_gap_bound_is_fail_closed() -> None:
    """Minute buckets: 3 empty minutes may hide 5 min of silence (OK at 300 s), 4 may hide 6 min (gap)."""
    data = [0, M, 5 * M, 6 * M, 11 * M]
    gaps = find_gaps("f", data, 0, 12 * M, 300_000)
    assert [(g.from_ms, g.to_ms) for g in gaps] == [(6 * M, 12 * M)]
    assert find_gaps("f", [], 0, 4 * M, 300_000) == []
    assert find_gaps("f", [], 0, 6 * M, 300_000)[0].silent_ms == 6 * M


# ---- command line ---------------------------------------------------------------------------------

def invoke(db: Db, *args: str) -> Any:
    env = {"DIVMON_CLICKHOUSE_PATH": db.path, "DIVMON_CLICKHOUSE_DATABASE": db.name, "DIVMON_ENV": db.env}
    return CliRunner().invoke(gate_command, list(args), env=env, catch_exceptions=False)


def test_cli_exit_codes_and_json(db: Db, tmp_path: Any) -> None:
    """Exit 0 and a JSON verdict when cleared, 1 when not, 2 for a bad option; --plot writes a PNG."""
    store(db, clean_soak())
    png = tmp_path / "soak.png"
    res = invoke(db, "--now", str(NOW), "--soak-target-h", "12", "--json", "--plot", str(png))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert (doc["verdict"], doc["exit_code"], doc["reasons"]) == ("CLEARED", 0, [])
    assert doc["flip"]["primary"] == "EP3" and doc["exposure"]["events"] == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
    res = invoke(db, "--now", "2026-05-28T20:27:00Z")  # NOW, ISO; default target 120 h
    assert res.exit_code == 1 and res.output.startswith("NOT_CLEARED") and "SOAK_SHORT" in res.output
    assert invoke(db, "--now", "yesterday").exit_code == 2
    assert invoke(db, "--now", str(NOW), "--feed-gap-s", "30").exit_code == 2


def test_cli_unreachable_store_is_not_cleared(db: Db) -> None:
    """A database that is not there gives NOT_CLEARED (exit 1) with QUERY_ERROR, in JSON too."""
    res = invoke(dataclasses.replace(db, name=f"missing_{uuid.uuid4().hex[:8]}"), "--now", str(NOW), "--json")
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert doc["verdict"] == "NOT_CLEARED" and {r["code"] for r in doc["reasons"]} == {"QUERY_ERROR"}


def test_every_option_names_its_variable() -> None:
    """`--help` shows [env: DIVMON_...] for every option (except --help)."""
    for param in gate_command.params:
        if param.name != "help":
            assert "[env: DIVMON_" in (getattr(param, "help", "") or ""), param.name


def test_first_sighting_on_the_primary_does_not_restart_the_soak() -> None:
    """A new account (UNKNOWN -> EP3) hours into an EP3 soak is continuity; UNKNOWN -> RISK_ENGINE is a flip."""
    h = 3_600_000
    base = [Transition(0, "RISK_ENGINE", "EP3", "A1", "all"), Transition(500, "UNKNOWN", "EP3", "A2", "all")]
    late = Transition(12 * h, "UNKNOWN", "EP3", "A3", "all")
    state = flip_state([*base, late])
    assert (state.primary, state.soak_start_ms, len(state.flips)) == ("EP3", 500, 1)
    back = Transition(13 * h, "UNKNOWN", "RISK_ENGINE", "A4", "all")
    state = flip_state([*base, late, back])
    assert state.primary == "RISK_ENGINE" and state.soak_start_ms is None
