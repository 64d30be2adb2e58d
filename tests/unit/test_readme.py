"""The README is the newcomer's contract: its commands and configuration reference must stay true."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from streams.cli import COMMANDS
from streams.config import Settings, env_var

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_reference() -> None:
    """Each DIVMON_* variable that Settings reads is documented in the README."""
    missing = [env_var(f.name) for f in fields(Settings) if env_var(f.name) not in README]
    assert missing == []


def test_every_documented_variable_exists() -> None:
    """The README documents no DIVMON_* variable that nothing reads."""
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "streams").rglob("*.py"))
    code += (ROOT / "scripts" / "fetch-kafka.sh").read_text(encoding="utf-8")
    code += (ROOT / "setup.py").read_text(encoding="utf-8")
    documented = set(re.findall(r"DIVMON_[A-Z0-9_]*[A-Z0-9]", README)) - {"DIVMON_SIM"}
    settings = {env_var(f.name) for f in fields(Settings)}
    unknown = sorted(v for v in documented if v not in settings and v not in code
                     and not v.startswith("DIVMON_SIM_"))
    assert unknown == []


def test_every_command_is_documented_and_ci_runs_the_readme_test_command() -> None:
    """The commands table names every sub-command, and .ci/run calls the README's `make test`."""
    for name in COMMANDS:
        assert f"`divmon {name}" in README, name
    assert "make test" in README
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
