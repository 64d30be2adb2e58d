"""Golden scenarios: each tape in `tests/scenarios/` against its hand-derived expected events.

Like httpx's `test_whatwg.py`, the data files drive `parametrize`. An expected line lists only the
fields that define the event (plus `resolved`: whether `resolved_ts_ms` is set); actual events are
matched one-to-one against them: no expected event may be missing and no actual one may be extra.
`feed_health` rows are never compared; witness `sweep` rows only where the expected file lists one.
A `{"type": "engine_stats", ...}` line checks replay counters (stale seqs, bookmarks). Decimal
strings compare by value ("700" matches "700.00"), but a string never matches null: "0" is not absent.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.core.params import EngineConfig
from streams.tapes import replay
from tests.scenarios.build import SCENARIOS

HERE = Path(__file__).parent / "scenarios"
NAMES = sorted(p.name.removesuffix(".expected.jsonl") for p in HERE.glob("*.expected.jsonl"))
DECIMAL_FIELDS = {
    "ep3_qty", "re_qty", "ledger_qty", "qty", "delta", "mark", "im_delta", "equity", "re_im_total", "re_avail",
    "re_open_orders_margin", "threshold", "computed_avail", "published_avail", "gap", "og_open_orders_margin",
    "og_im", "re_im",
}


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(_same, expected, actual))
    if isinstance(expected, str) and isinstance(actual, str):
        try:
            return Decimal(expected) == Decimal(actual)
        except InvalidOperation:
            return expected == actual
    return type(expected) is type(actual) and expected == actual


def _matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    view = {**actual, "resolved": actual.get("resolved_ts_ms") is not None}
    return all(k in view and _same(v, view[k]) for k, v in expected.items())


def _match_all(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> dict[int, int]:
    """Maximum one-to-one matching expected -> actual (augmenting paths; inputs are tiny)."""
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for j, a in enumerate(actual):
            if j not in seen and _matches(expected[i], a):
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(expected)):
        place(i, set())
    return {i: j for j, i in owner.items()}


def check(name: str, events: list[dict[str, Any]], stats: dict[str, int] | None) -> None:
    """Assert `events` (to_dict form, final states) and `stats` (unless None) are what `name` expects."""
    expected = _load(HERE / f"{name}.expected.jsonl")
    for want in [e for e in expected if e["type"] == "engine_stats" and stats is not None]:
        got = {k: stats.get(k, 0) for k in want if k != "type"}
        assert got == {k: v for k, v in want.items() if k != "type"}, f"{name}: engine stats"
    expected = [e for e in expected if e["type"] != "engine_stats"]
    with_sweeps = any(e.get("kind") == "sweep" for e in expected)
    actual = [e for e in events if e["type"] != "feed_health" and (with_sweeps or e.get("kind") != "sweep")]
    pairs = _match_all(expected, actual)
    missing = [e for i, e in enumerate(expected) if i not in pairs]
    extra = [a for j, a in enumerate(actual) if j not in pairs.values()]
    assert not missing and not extra, (
        f"{name}:\nmissing (expected, not produced):\n" + "\n".join(map(str, missing))
        + "\nextra (produced, not expected):\n" + "\n".join(map(str, extra)))


@pytest.mark.parametrize("name", NAMES)
def test_scenario(name: str) -> None:
    """Replaying the scenario tape yields exactly its expected final events and counters."""
    result = replay.run(replay.merge([replay.open_tape(HERE / f"{name}.jsonl")]), EngineConfig())
    check(name, [e.to_dict() for e in result.final_events()], result.stats)


@pytest.mark.parametrize("name", NAMES)
def test_scenario_cli_json(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`divmon replay --json` prints one object per line, decimals as strings, null for absent, same events."""
    for var in [v for v in os.environ if v.startswith("DIVMON_")]:
        monkeypatch.delenv(var)
    result = CliRunner().invoke(main, ["replay", "--json", "--no-progress", str(HERE / f"{name}.jsonl")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and "type" in r for r in rows)
    for row in rows:
        for key, value in row.items():
            assert not isinstance(value, float), (key, row)
            if key in DECIMAL_FIELDS:
                assert value is None or isinstance(value, str), (key, row)
        for d in row.get("im_deltas", []):
            assert d is None or isinstance(d, str), row
    check(name, rows, None)  # the CLI's --json output carries no engine counters


def test_every_scenario_has_a_tape_and_expectations() -> None:
    """Each scenario defined in build.py has its tape and hand-written expected file, and nothing else."""
    tapes = {p.stem for p in HERE.glob("*.jsonl") if not p.name.endswith(".expected.jsonl")}
    assert tapes == set(SCENARIOS) == set(NAMES)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_tape_is_up_to_date(name: str, tmp_path: Path) -> None:
    """The checked-in tape is exactly what its readable definition in build.py produces."""
    fresh = SCENARIOS[name]().write_jsonl(tmp_path / "t.jsonl")
    assert fresh.read_text() == (HERE / f"{name}.jsonl").read_text()
