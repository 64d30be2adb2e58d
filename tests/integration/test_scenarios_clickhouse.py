"""Golden scenarios through the sink: `divmon replay TAPE --store`, on both store paths, read back.

For every scenario tape of `tests/scenarios/` and for both places the sink writes to (the embedded
chdb interface, and the server code path over HTTP against the chdb-backed test fixture), the events
in ClickHouse read with FINAL are exactly the replay's `--json` final events: the same
(type, event_id) keys (no loss, no duplicates) and, field by field, the same values — None stays
NULL, "0" stays 0 (never NULL), decimals equal by value, ints stay ints, bools stay bools.

Replaying the same tape again with `--store` changes nothing under FINAL (deterministic ids +
ReplacingMergeTree), and every raw (non-FINAL) row is one of the versions the engine emitted for that
id: a duplicate can only be another copy or version of the same event, never a different one.

TTL is off (`DIVMON_CLICKHOUSE_TTL_DAYS=0`): scenario instants are in 2026-05, and a TTL older than
that would delete the rows on insert.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.commands._options import engine_config
from streams.config import Settings
from streams.core.events import EVENT_TYPES, Event
from streams.sinks.connect import connect
from streams.sinks.schema import TABLES
from streams.tapes import replay
from tests.support.store_cli import replay_store, store_env

SCENARIOS = Path(__file__).parent.parent / "scenarios"
NAMES = sorted(p.name.removesuffix(".expected.jsonl") for p in SCENARIOS.glob("*.expected.jsonl"))
STORES = ("chdb", "http")


# ---- helpers ------------------------------------------------------------------------------------

def _is_decimal(f: Any) -> bool:
    return "Decimal" in str(f.type)


def from_json(row: dict[str, Any]) -> Event:
    """A `--json` line back into its event dataclass (decimal strings to Decimal, lists to tuples)."""
    cls = EVENT_TYPES[row["type"]]
    assert set(row) == {"type"} | {"class" if f.name == "cls" else f.name for f in fields(cls)}, row
    kw: dict[str, Any] = {}
    for f in fields(cls):
        v = row["class" if f.name == "cls" else f.name]
        if isinstance(v, list):
            v = tuple(None if x is None else Decimal(x) if _is_decimal(f) else x for x in v)
        elif v is not None and _is_decimal(f):
            assert isinstance(v, str), (f.name, v)  # decimals print as strings, never floats
            v = Decimal(v)
        kw[f.name] = v
    return cls(**kw)  # type: ignore[no-any-return]


def same(a: Any, b: Any) -> bool:
    """Strict equality: None only equals None, Decimals by value, everything else by type and value."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return isinstance(a, Decimal) and isinstance(b, Decimal) and a == b
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


def differences(want: Event, got: Event) -> list[str]:
    return [f"{f.name}: want {getattr(want, f.name)!r}, got {getattr(got, f.name)!r}"
            for f in fields(want) if not same(getattr(want, f.name), getattr(got, f.name))]


def read_table(client: Any, database: str, table: str, env: str, read_events: Any, final: bool = True
               ) -> list[Any]:
    """The rows of `env` in a table (`read_events` of tests/conftest.py, filtered by env)."""
    return [r for r in read_events(client, database, table, final=final) if r.env == env]


def assert_store_equals(client: Any, database: str, env: str, expected: list[Event], read_events: Any) -> None:
    """FINAL contents of every table == `expected` (keys, counts and every field)."""
    want = {(e.TYPE, e.event_id): e for e in expected}
    assert len(want) == len(expected), "the replay printed one event twice"
    got: dict[tuple[str, str], Event] = {}
    for table in TABLES:
        rows = read_table(client, database, table, env, read_events)
        keys = Counter((table, r.event_id) for r in rows)
        assert not [k for k, n in keys.items() if n > 1], f"{table}: duplicate ids under FINAL"
        got.update({(table, r.event_id): r for r in rows})
    assert sorted(got) == sorted(want), (
        f"missing: {sorted(set(want) - set(got))}\nextra: {sorted(set(got) - set(want))}")
    problems = {k: d for k in want if (d := differences(want[k], got[k]))}
    assert not problems, problems


# ---- the tests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def databases(chdb_dir: Path) -> dict[str, Settings]:
    """One database per store path for the module (creating one costs ~1 s of DDL in chdb); each test
    writes under an env of its own, and event ids include the env, so tests never share a row."""
    tag = uuid.uuid4().hex[:10]
    return {s: Settings.load({"clickhouse_path": str(chdb_dir), "clickhouse_database": f"scn_{s}_{tag}",
                              "clickhouse_ttl_days": 0}, environ={}) for s in STORES}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, databases: dict[str, Settings], monkeypatch: pytest.MonkeyPatch
          ) -> Settings:
    """Settings for one store path and an env of this test's own."""
    for var in [v for v in os.environ if v.startswith("DIVMON_")]:
        monkeypatch.delenv(var)
    settings = replace(databases[request.param], env=f"t_{uuid.uuid4().hex[:10]}")
    if request.param == "http":
        settings = replace(settings, clickhouse_url=request.getfixturevalue("http_server").url)
    return settings


@pytest.mark.parametrize("name", NAMES)
def test_scenario_round_trips_through_the_store(name: str, store: Settings, read_events: Any) -> None:
    """FINAL rows == the replay's final events, exactly; a second --store replay changes nothing under
    FINAL, and every raw row is a version of its id that the engine actually emitted."""
    tape = SCENARIOS / f"{name}.jsonl"
    env = store_env(store)
    printed = replay_store([tape], env)
    finals = [from_json(r) for r in printed]
    assert finals, f"{name}: the replay printed no events"
    assert {e.TYPE for e in finals} >= {"feed_health"}

    # every version the engine emits for this tape, with the same config the command uses
    emitted: list[Event] = []
    settings = Settings.load(environ=env)
    replay.run(replay.merge([replay.open_tape(tape)]), engine_config(settings), on_events=emitted.extend)

    client = connect(store)
    try:
        assert_store_equals(client, store.clickhouse_database, store.env, finals, read_events)
        if name in ("qty_zero_vs_absent", "phantom"):  # not vacuous: a flat "0" stays 0, absent stays NULL
            stored = read_table(client, store.clickhouse_database, "position_mismatch", store.env, read_events)
            if name == "phantom":
                assert [r.re_qty for r in stored] == [None]
            else:
                assert sorted((r.ep3_qty, r.re_qty) for r in stored) == [(0, 1), (2, 0)]
                assert all(isinstance(q, Decimal) for r in stored for q in (r.ep3_qty, r.re_qty))

        again = [from_json(r) for r in replay_store([tape], env)]
        assert again == finals  # deterministic: same ids, versions and values
        assert_store_equals(client, store.clickhouse_database, store.env, finals, read_events)

        by_version = {(e.TYPE, e.event_id, e.version): e for e in emitted}
        final_ids = {(e.TYPE, e.event_id) for e in finals}
        for table in TABLES:
            raw = read_table(client, store.clickhouse_database, table, store.env, read_events, final=False)
            copies = Counter((table, r.event_id, r.version) for r in raw)
            for r in raw:
                assert (table, r.event_id) in final_ids, f"{table}: raw row of an unknown id {r.event_id}"
                emitted_version = by_version.get((table, r.event_id, r.version))
                assert emitted_version is not None, f"{table}: {r.event_id} v{r.version} was never emitted"
                assert not differences(emitted_version, r), differences(emitted_version, r)
            assert max(copies.values(), default=0) <= 2, f"{table}: more copies than replays: {copies}"
    finally:
        client.close()
