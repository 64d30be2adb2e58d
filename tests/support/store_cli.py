"""Drive `divmon` in-process (click's CliRunner) against a configured ClickHouse store, for tests.

`store_env(settings)` gives the DIVMON_ variables that point a command at `settings`' store and env,
with TTL off (`DIVMON_CLICKHOUSE_TTL_DAYS=0`): test instants lie in 2026-05, and a 90-day TTL
would delete such rows on insert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from streams.cli import main
from streams.config import Settings


def store_env(settings: Settings) -> dict[str, str]:
    """The DIVMON_ variables that point `divmon` at `settings`' store (TTL off)."""
    return {"DIVMON_CLICKHOUSE_PATH": settings.clickhouse_path,
            "DIVMON_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "DIVMON_CLICKHOUSE_URL": settings.clickhouse_url,
            "DIVMON_CLICKHOUSE_TTL_DAYS": "0",
            "DIVMON_ENV": settings.env}


def invoke(args: list[str], env: dict[str, str]) -> Result:
    """`divmon ARGS` with `env` set for the call (exceptions propagate, so a crash shows its traceback)."""
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def replay_store(tapes: list[Path], env: dict[str, str]) -> list[dict[str, Any]]:
    """`divmon replay --store --json TAPES`: exit 0 asserted; returns the printed final events."""
    result = invoke(["replay", "--store", "--json", "--no-progress", *map(str, tapes)], env)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]
