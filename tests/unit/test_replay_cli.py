"""`divmon replay`: bad input stops with exit 1 and a message naming file and line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from streams.cli import main
from tests.support.tapes import BASE, T

EP3 = {"account_id": "A1", "kind": "SNAPSHOT", "seq": 1, "ts_ms": BASE,
       "positions": [{"symbol": "BTC-PERP", "qty": "2"}]}


@pytest.fixture(autouse=True)
def _no_divmon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("DIVMON_")]:
        monkeypatch.delenv(var)


def line(topic: str = "ep3.positions", ts: int = BASE, **value: object) -> str:
    return json.dumps({"topic": topic, "ts_ms": ts, "value": {**EP3, **value}})


def tape(tmp_path: Path, *lines: str, name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(x + "\n" for x in lines))
    return path


def replay(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["replay", "--no-progress", *map(str, args)])


def assert_fails_at(result: Result, path: Path, where: str, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert f"{path}:{where}:" in result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    """A line that isn't JSON stops the replay with exit 1 naming the file and that line."""
    path = tape(tmp_path, line(), '{"topic": "ep3.positions", "ts_ms": ')
    assert_fails_at(replay(path), path, "line 2", "invalid JSON")


def test_unknown_topic_names_file_and_line(tmp_path: Path) -> None:
    """A record on a topic the tape format doesn't know is an error, not silently dropped."""
    path = tape(tmp_path, line(), line(topic="ep3.position"))
    assert_fails_at(replay(path), path, "line 2", "unknown topic", "ep3.position")


def test_float_quantity_is_a_contract_violation(tmp_path: Path) -> None:
    """A quantity written as a JSON float (1.5) is refused: decimals are strings, never binary floats."""
    path = tape(tmp_path, line(positions=[{"symbol": "BTC-PERP", "qty": 1.5}]))
    assert_fails_at(replay(path), path, "line 1", "contract violation", "positions[0].qty")


def test_integer_quantity_is_accepted_exactly(tmp_path: Path) -> None:
    """A quantity written as a JSON integer is exact, so it is accepted and printed back as a string."""
    path = tape(tmp_path, line(positions=[{"symbol": "BTC-PERP", "qty": 2}]),
                json.dumps({"topic": "risk.snapshots", "ts_ms": BASE, "value": {
                    "account_id": "A1", "published_ts_ms": BASE, "positions": [], "im_total": "0",
                    "open_orders_margin": "0", "equity": "0", "avail": "0"}}),
                json.dumps({"topic": "marks", "ts_ms": BASE + 10_000,
                            "value": {"symbol": "X", "price": "1", "ts_ms": BASE + 10_000}}))
    result = replay("--json", path)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    [phantom] = [r for r in rows if r["type"] == "position_mismatch"]
    assert (phantom["class"], phantom["ep3_qty"], phantom["re_qty"]) == ("phantom", "2", None)


def test_missing_field_is_named(tmp_path: Path) -> None:
    """A record without a required field names the field as well as the file and line."""
    bad = json.loads(line())
    del bad["value"]["account_id"]
    path = tape(tmp_path, json.dumps(bad))
    assert_fails_at(replay(path), path, "line 1", "account_id")


def test_unsorted_tape_is_an_error_unless_sorted_on_request(tmp_path: Path) -> None:
    """A ts_ms that goes backwards names its line and suggests --sort, with which the replay succeeds."""
    path = tape(tmp_path, line(ts=BASE + 5), line(ts=BASE, seq=2))
    assert_fails_at(replay(path), path, "line 2", "--sort")
    assert replay("--sort", path).exit_code == 0


def test_error_names_the_right_tape_when_merging(tmp_path: Path) -> None:
    """With several tapes, the message names the tape that holds the bad line."""
    good = T().ep3_snapshot("A1", seq=1, at=0, BTC_PERP="1").write_jsonl(tmp_path / "good.jsonl")
    bad = tape(tmp_path, line(account_id="A2"), "not json", name="bad.jsonl")
    assert_fails_at(replay(good, bad), bad, "line 2", "invalid JSON")


def test_skip_bad_continues_and_reports_the_count(tmp_path: Path) -> None:
    """--skip-bad replays the good records, exits 0 and says how many bad ones it skipped."""
    path = tape(tmp_path, line(), "{oops", line(topic="nope"),
                json.dumps({"topic": "marks", "ts_ms": BASE + 10_000,
                            "value": {"symbol": "X", "price": "1", "ts_ms": BASE + 10_000}}))
    result = replay("--skip-bad", path)
    assert result.exit_code == 0, result.output
    assert "skipped 2 malformed record(s)" in result.stderr
    assert "records replayed: 2" in result.stdout


def test_help_documents_every_engine_option_with_its_variable() -> None:
    """--help lists grace, thresholds, sweep interval and env label, each with its DIVMON_ variable."""
    result = CliRunner().invoke(main, ["replay", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for flag, var in [("--grace-ms", "DIVMON_GRACE_MS"), ("--thresholds", "DIVMON_THRESHOLDS"),
                      ("--sweep-interval-ms", "DIVMON_SWEEP_INTERVAL_MS"), ("--env", "DIVMON_ENV"),
                      ("--dormant-after-ms", "DIVMON_DORMANT_AFTER_MS")]:
        assert flag in text and var in text, flag
    for word in ("--skip-bad", "--json", "--sort"):
        assert word in text


def test_installed_command_exits_1_without_traceback(tmp_path: Path) -> None:
    """The real `divmon` entry point reports a malformed tape on stderr with exit status 1 and no traceback."""
    path = tape(tmp_path, line(), "[1, 2]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVMON_")}
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "replay", "--no-progress", str(path)],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1
    assert f"{path}:line 2:" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_summary_counts_each_episode_once_whatever_its_versions() -> None:
    """A confirmed-then-resolved mismatch counts once in the verdict, and keeps its final state."""
    from decimal import Decimal

    from streams.core.events import PositionMismatch
    from streams.tapes.summary import summarize

    def mm(version: int, state: str, resolved: int | None) -> PositionMismatch:
        return PositionMismatch("id1", version, "demo", "EP3", "A1", "BTC", state, "persistent",  # type: ignore[arg-type]
                                Decimal(2), Decimal(1), Decimal(1), 0, 2000, resolved, "EP3", None, None, None,
                                None, None, None, None)

    verdict = summarize([mm(1, "confirmed", None), mm(2, "resolved", 5000)], {}, 10)
    assert verdict["mismatches_by_class"] == {"persistent": 1}
    assert verdict["events_by_type"] == {"position_mismatch": 1}
    assert [u["resolved_ts_ms"] for u in verdict["unexplained_mismatches"]] == [5000]
    assert verdict["open_unexplained"] == []
