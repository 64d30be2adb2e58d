"""Prometheus rules are valid, and every alert fires on its input and stays quiet on race noise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
UNEXPLAINED = ("persistent", "never_in_cache", "phantom")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: `.ci/run` installs it with `apt-get install -y prometheus` "
                    "(Debian's package brings promtool); install it the same way locally.")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def _alerts() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules(promtool: str) -> None:
    """`promtool check rules` accepts rules.yml."""
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config(promtool: str) -> None:
    """The compose stack's prometheus.yml is valid and finds rules.yml."""
    result = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    """Every alert's firing case and every must-not-fire case pass `promtool test rules`."""
    assert RULE_TESTS, "no rule tests in deploy/prometheus/tests"
    result = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    """Each alert is expected to fire somewhere, and is asserted silent in the race-noise case."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {str(a["alert"]) for a in _alerts()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"


def test_alerts_have_severity_summary_description_runbook() -> None:
    """On-call gets a severity, a summary, a description and a runbook link on every alert."""
    headings = {line[3:].strip().lower() for line in (PROM / "RUNBOOK.md").read_text().splitlines()
                if line.startswith("## ")}
    for alert in _alerts():
        labels = alert.get("labels", {})
        annotations = alert.get("annotations", {})
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        assert labels.get("severity") in {"critical", "warning", "info"}, alert["alert"]
        assert {"summary", "description", "runbook"} <= annotations.keys(), alert["alert"]
        target, _, anchor = str(annotations["runbook"]).partition("#")
        assert target == "deploy/prometheus/RUNBOOK.md", alert["alert"]
        assert anchor == str(alert["alert"]).lower() and anchor in headings, alert["alert"]


def test_no_alert_selects_propagation_race() -> None:
    """Race noise is explained: no alert expression mentions or regex-matches propagation_race."""
    for alert in _alerts():
        assert "propagation_race" not in str(alert["expr"]), alert["alert"]
    text = RULES.read_text()
    assert 'class=~"persistent|never_in_cache|phantom"' in text
    assert all(c in text for c in UNEXPLAINED)
