"""`divmon tapes diff` on Avro tapes gives the verdict `divmon replay` gives on the same records as
JSON Lines: the golden scenarios are converted to Avro tapes (per feed, per trading day) and both
paths are compared. Decimals compare by value: Avro tapes carry canonical decimals, as Kafka does."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.core.params import EngineConfig
from streams.tapes import replay
from streams.tapes.calendar import tape_path, trading_day
from streams.tapes.jsonl import JsonlTape, write_record
from streams.tapes.summary import summarize
from tests.support.tapes import T

SCENARIOS = Path(__file__).parents[1] / "scenarios"
NAMES = sorted(p.stem for p in SCENARIOS.glob("*.jsonl") if not p.name.endswith(".expected.jsonl"))
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def norm(v: Any) -> Any:
    """Decimal strings in canonical form (700.00 -> 700), recursively."""
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, str) and NUMBER.match(v):
        d = Decimal(v)
        return str(d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize())
    return v


def cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def split_jsonl(source: Path, root: Path) -> list[Path]:
    """The records of `source` as JSON Lines files laid out exactly like the Avro tapes."""
    out: dict[Path, Any] = {}
    try:
        for r in JsonlTape(source):
            path = tape_path(root, trading_day(r.ts_ms), r.feed.value).with_suffix(".jsonl")
            if path not in out:
                path.parent.mkdir(parents=True, exist_ok=True)
                out[path] = path.open("w", encoding="utf-8")
            write_record(out[path], r.feed, r.ts_ms, r.record)
    finally:
        for fh in out.values():
            fh.close()
    return sorted(out)


def avro_tapes(source: Path, root: Path) -> list[Path]:
    cli("tapes", "convert", "--tapes-dir", str(root), str(source))
    return sorted(root.glob("*/*.avro"))


def events(output: str) -> list[Any]:
    return [norm(json.loads(line)) for line in output.splitlines()]


@pytest.mark.parametrize("name", NAMES)
def test_replay_of_avro_equals_replay_of_jsonl(name: str, tmp_path: Path) -> None:
    """`divmon replay --json` emits the same events from the Avro tapes as from the same JSON Lines."""
    avro = avro_tapes(SCENARIOS / f"{name}.jsonl", tmp_path / "avro")
    jsonl = split_jsonl(SCENARIOS / f"{name}.jsonl", tmp_path / "jsonl")
    assert [p.stem for p in avro] == [p.stem for p in jsonl]
    from_jsonl = events(cli("replay", "--json", *map(str, jsonl)))
    assert from_jsonl
    assert events(cli("replay", "--json", *map(str, avro))) == from_jsonl


@pytest.mark.parametrize("name", NAMES)
def test_tapes_diff_verdict_equals_jsonl_verdict(name: str, tmp_path: Path) -> None:
    """`divmon tapes diff --json` on the Avro tapes is the verdict of the JSON Lines scenario, as the
    one hand-written file (ties across feeds merge differently, the verdict must not change)."""
    avro = avro_tapes(SCENARIOS / f"{name}.jsonl", tmp_path)
    got = json.loads(cli("tapes", "diff", "--json", *map(str, avro)))
    assert got.pop("tapes")["skipped_records"] == 0
    emitted: list = []
    result = replay.run(JsonlTape(SCENARIOS / f"{name}.jsonl"), EngineConfig(), on_events=emitted.extend)
    want = json.loads(json.dumps(summarize(emitted, result.stats, result.records), default=str))
    assert norm(got) == norm(want)


def test_text_verdict_and_day_directory(tmp_path: Path) -> None:
    """The text verdict names the unexplained mismatch; a day directory stands for all its tapes."""
    records = (T().instrument("XAU-PERP").mark("XAU-PERP", "11700")
               .ep3_snapshot("A1", seq=1, at=0, XAU_PERP="13").risk("A1", at=0, XAU_PERP="13")
               .ep3_snapshot("A1", seq=2, at=1000).tick(10_000))
    source = records.write_jsonl(tmp_path / "s.jsonl")
    avro_tapes(source, tmp_path / "t")
    (day,) = (tmp_path / "t").iterdir()
    out = cli("tapes", "diff", str(day))
    assert "records replayed: 6" in out and "unexplained mismatches: 0" in out
    assert cli("tapes", "diff", str(day)) == cli("replay", str(source))


def test_diff_help_shows_env_and_progress() -> None:
    """diff's engine options name their DIVMON_ variables; the progress bar can be forced."""
    out = " ".join(cli("tapes", "diff", "--help").split())
    assert "[env: DIVMON_GRACE_MS]" in out and "--progress" in out
    out = " ".join(cli("tapes", "record", "--help").split())
    assert "[env: DIVMON_BROKERS]" in out and "[env: DIVMON_TAPES_FLUSH_MS]" in out
