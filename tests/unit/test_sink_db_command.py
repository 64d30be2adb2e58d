"""`divmon db` and the one-process-per-directory rule of the embedded store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.sinks import ClickHouseSink, StoreLocked

HOLDER = """
import sys, clickhouse_connect
c = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
c.command("SELECT 1")
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_dir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A chdb directory held open by another process, with that process's pid."""
    path = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield path, proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def _env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVMON_")}
    env.update(kw)
    return env


def test_second_process_gets_a_clear_error(held_dir: tuple[Path, int], ch_settings: Any) -> None:
    """Opening a directory another process holds raises StoreLocked naming that process."""
    path, pid = held_dir
    sink = ClickHouseSink(replace(ch_settings, clickhouse_path=str(path)))
    with pytest.raises(StoreLocked, match=rf"in use by process {pid}.*one process at a time"):
        sink.setup()


def test_db_migrate_on_locked_directory_exits_1(held_dir: tuple[Path, int]) -> None:
    """`divmon db migrate` against a held directory exits 1 with the explanation, not a traceback."""
    path, pid = held_dir
    res = _run(["db", "migrate"], _env(DIVMON_CLICKHOUSE_PATH=str(path)))
    assert res.returncode == 1, res.stderr
    assert f"in use by process {pid}" in res.stderr and "Traceback" not in res.stderr


def test_db_migrate_then_status(tmp_path: Path) -> None:
    """migrate applies version 1 once; status lists it as applied; both exit 0."""
    env = _env(DIVMON_CLICKHOUSE_PATH=str(tmp_path / "chdb"))
    first = _run(["db", "migrate"], env)
    assert first.returncode == 0 and "applied 1:" in first.stdout, first.stderr
    again = _run(["db", "migrate"], env)
    assert again.returncode == 0 and "already up to date" in again.stdout
    status = _run(["db", "status", "--json"], env)
    assert status.returncode == 0 and '"version": 1' in status.stdout and '"applied_at": null' not in status.stdout


def test_bad_config_exits_2() -> None:
    """A bad setting is a usage error (exit 2) naming the variable."""
    res = CliRunner().invoke(main, ["db", "status", "--clickhouse-database", "bad-name"])
    assert res.exit_code == 2 and "DIVMON_CLICKHOUSE_DATABASE" in res.output


def test_unreachable_server_exits_1() -> None:
    """A server URL nobody listens on exits 1."""
    res = CliRunner().invoke(main, ["db", "status", "--clickhouse-url", "http://127.0.0.1:9"])
    assert res.exit_code == 1, res.output


@pytest.mark.parametrize("sub", ["migrate", "status"])
def test_every_option_names_its_env_var(sub: str) -> None:
    """Each option's help shows [env: DIVMON_...]."""
    import click

    group = main.get_command(click.Context(main), "db")
    assert isinstance(group, click.Group)
    cmd = group.commands[sub]
    for p in cmd.params:
        if isinstance(p, click.Option) and p.name not in ("as_json",):
            assert "[env: DIVMON_" in (p.help or ""), p.name
