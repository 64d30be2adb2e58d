"""`make bench` runs every benchmark script; a benchmark that breaks makes it fail (no timings here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_all(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_quick_codec_benchmark_runs_and_prints_its_baseline() -> None:
    r = run_all("--quick", "--only", "codec")
    assert r.returncode == 0, r.stderr
    assert "(baseline)" in r.stdout and "=== codec: ok" in r.stdout


def test_unknown_benchmark_is_named() -> None:
    r = run_all("--only", "codec,nope")
    assert r.returncode == 2
    assert "unknown benchmark(s) nope" in r.stderr
