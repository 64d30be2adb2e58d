"""Deploy files are consistent with the code: compose, Dockerfile, Kubernetes, Prometheus and Grafana.

No Docker engine or cluster runs here, so these are static checks: every file a manifest references
exists, every DIVMON_* variable is a real setting with a value the settings loader accepts, ports agree
between the settings, compose, the scrape config and the probes, and secrets are only ever references.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics
from streams.config import Settings, env_var

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS_VARS = {env_var(f.name) for f in fields(Settings)}
SECRET_VARS = {env_var(f.name) for f in fields(Settings) if "password" in f.name}
DEFAULTS = Settings()
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _interpolate(value: object) -> str:
    """Compose's ${VAR:-default} with an empty environment: the default."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = _yaml(ROOT / "docker-compose.yml")
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(v) for k, v in env.items()}


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d.get("kind") == kind]


def _exposed_names() -> set[str]:
    """Sample names of a fresh registry in which every labelled metric has a child."""
    registry = CollectorRegistry()
    m = metrics.create(registry, env="test")
    for name in metrics.Metrics._fields:
        metric = getattr(m, name)
        if metric._labelnames:
            metric.labels(*["x"] * len(metric._labelnames))
    text = generate_latest(registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _recorded_names() -> set[str]:
    doc = _yaml(DEPLOY / "prometheus" / "rules.yml")
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


# --------------------------------------------------------------------------------------- compose


def test_compose_has_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    """Kafka (KRaft), ClickHouse, Prometheus, Grafana, two workers and a simulator under profile sim."""
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for worker in ("worker-1", "worker-2"):
        assert services[worker]["build"] == "."
        assert services[worker]["command"] == ["worker"]
    assert services["simulator"]["profiles"] == ["sim"]
    assert services["simulator"]["command"] == ["simulate", "--to", "kafka:9092"]
    assert "PLAINTEXT://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    """Every service but the one-shot simulator has a healthcheck; workers wait for healthy deps."""
    for name, service in services.items():
        if name != "simulator":
            assert service.get("healthcheck", {}).get("test"), name
    for worker in ("worker-1", "worker-2"):
        deps = services[worker]["depends_on"]
        assert deps["kafka"]["condition"] == deps["clickhouse"]["condition"] == "service_healthy"


def test_compose_referenced_files_exist(compose: dict[str, Any]) -> None:
    """Every bind-mounted path and build context exists in the repository."""
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"


def test_compose_divmon_variables_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    """Every DIVMON_* in compose is a Settings field and its value loads."""
    for name, service in services.items():
        env = {k: v for k, v in _environment(service).items() if k.startswith("DIVMON_")}
        unknown = set(env) - SETTINGS_VARS
        assert not unknown, f"{name}: unknown settings {unknown}"
        Settings.load(environ=env)


def test_compose_secrets_are_interpolated_not_literal(services: dict[str, dict[str, Any]]) -> None:
    """Passwords come from the caller's environment (${VAR:-dev default}), never a bare literal."""
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if key in SECRET_VARS or "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: {key} is a literal"


def test_compose_ports_agree_with_settings_and_scrape_config(services: dict[str, dict[str, Any]]) -> None:
    """Prometheus scrapes each worker at its DIVMON_METRICS_PORT, which the container exposes."""
    prom = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for sc in jobs["divmon"]["static_configs"] for t in sc["targets"]]
    workers = {n for n, s in services.items() if s.get("command") == ["worker"]}
    assert {t.split(":")[0] for t in targets} == workers
    for target in targets:
        host, port = target.split(":")
        service = services[host]
        env = _environment(service)
        settings = Settings.load(environ={k: v for k, v in env.items() if k.startswith("DIVMON_")})
        assert int(port) == settings.metrics_port
        exposed = {str(p) for p in service.get("expose", [])}
        published = {str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])}
        assert port in exposed | published, host
        assert str(settings.web_port) in exposed | published, host


def test_compose_mounts_prometheus_rules_and_grafana_provisioning(services: dict[str, dict[str, Any]]) -> None:
    """Prometheus gets prometheus.yml and rules.yml side by side; Grafana finds its dashboards."""
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config_target = prom_mounts["./deploy/prometheus/prometheus.yml"]
    rules_target = prom_mounts["./deploy/prometheus/rules.yml"]
    rule_files = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["rule_files"]
    resolved = {str(Path(config_target).parent / r) for r in rule_files}
    assert rules_target in resolved
    assert f"--config.file={config_target}" in services["prometheus"]["command"]
    graf_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert graf_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "divmon.yml")["providers"]
    assert graf_mounts["./deploy/grafana/dashboards"] in {p["options"]["path"] for p in providers}


def test_dockerfile_matches_the_brief() -> None:
    """python:3.11-slim, a wheel of this project built with the compiled engine and installed with
    the rocksdb extra, entrypoint divmon, command worker, the two ports exposed."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"DIVMON_COMPILE=1 pip wheel .* -w /wheels \.$", text, re.MULTILINE)
    assert 'pip install "$(ls /wheels/divmon-*.whl)[rocksdb]"' in text
    assert 'divmon --version | grep -q "engine: compiled"' in text
    assert 'ENTRYPOINT ["divmon"]' in text
    assert 'CMD ["worker"]' in text
    expose = re.search(r"^EXPOSE (.+)$", text, re.MULTILINE)
    assert expose and {str(DEFAULTS.web_port), str(DEFAULTS.metrics_port)} <= set(expose.group(1).split())
    for line in text.splitlines():
        for var in re.findall(r"\b(DIVMON_\w+)=", line):
            assert var in SETTINGS_VARS or var == "DIVMON_COMPILE", var  # DIVMON_COMPILE: setup.py's
    for copied in re.findall(r"^COPY (?!--from=)(.+) \S+$", text, re.MULTILINE):
        for source in copied.split():
            assert (ROOT / source).exists(), source


def _compose_cli() -> list[str]:
    """`docker compose` (v2 plugin) where present, else Debian's `docker-compose` (installed by
    scripts/install-tools.sh). Both validate a file without a Docker engine."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "neither `docker compose` nor `docker-compose` found: run scripts/install-tools.sh"
    return [legacy]


def test_docker_compose_config_validates() -> None:
    """The compose tool itself accepts the file (schema, interpolation, profiles), engine or not."""
    result = subprocess.run([*_compose_cli(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------ kubernetes


def test_k8s_manifests_parse_and_kinds_present() -> None:
    """The kustomization lists existing files holding every kind the workers need."""
    kustomization = _yaml(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    kinds = {d["kind"] for d in _k8s_docs() if d.get("kind") != "Kustomization"}
    assert {"Namespace", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"} <= kinds
    listed = {d["kind"] for r in kustomization["resources"] for d in yaml.safe_load_all((K8S / r).read_text())}
    assert kinds == listed, "a manifest is not listed in kustomization.yaml"


def test_k8s_divmon_variables_are_real_settings() -> None:
    """Every DIVMON_* in the ConfigMap and the pod env is a Settings field; the ConfigMap loads."""
    (configmap,) = _k8s("ConfigMap")
    data = {k: str(v) for k, v in configmap["data"].items()}
    assert set(data) <= SETTINGS_VARS, set(data) - SETTINGS_VARS
    settings = Settings.load(environ=data)
    assert settings.store.startswith("rocksdb://")
    (sts,) = _k8s("StatefulSet")
    for container in sts["spec"]["template"]["spec"]["containers"]:
        for item in container.get("env", []):
            assert item["name"] in SETTINGS_VARS, item["name"]


def test_k8s_secrets_are_references_never_inline() -> None:
    """Passwords come only from secretKeyRef; no Secret with data and no password in the ConfigMap."""
    assert not [d for d in _k8s_docs() if d.get("kind") == "Secret" and (d.get("data") or d.get("stringData"))]
    (configmap,) = _k8s("ConfigMap")
    assert not [k for k in configmap["data"] if "PASSWORD" in k or "SECRET" in k]
    (sts,) = _k8s("StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container.get("env", [])}
    for var in ("DIVMON_SASL_PASSWORD", "DIVMON_CLICKHOUSE_PASSWORD"):
        assert "value" not in env[var], var
        assert env[var]["valueFrom"]["secretKeyRef"]["name"], var


def test_k8s_statefulset_state_probes_resources() -> None:
    """RocksDB state on a PVC at DIVMON_DATA_DIR, probes on the web/metrics ports, requests set."""
    (configmap,) = _k8s("ConfigMap")
    settings = Settings.load(environ={k: str(v) for k, v in configmap["data"].items()})
    (sts,) = _k8s("StatefulSet")
    spec = sts["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == settings.data_dir and "data" in claims
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"web": settings.web_port, "metrics": settings.metrics_port}
    for probe in ("livenessProbe", "readinessProbe"):
        action = container[probe].get("httpGet") or container[probe].get("tcpSocket")
        assert action["port"] in ports or action["port"] in ports.values(), probe
    requests = container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    (service,) = _k8s("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert spec["serviceName"] == service["metadata"]["name"]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    (pdb,) = _k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert spec["replicas"] <= settings.partitions


# --------------------------------------------------------------------------------------- grafana


def _dashboard() -> dict[str, Any]:
    doc = json.loads((DEPLOY / "grafana" / "dashboards" / "divmon.json").read_text())
    assert isinstance(doc, dict)
    return doc


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def test_grafana_dashboard_queries_use_declared_metrics() -> None:
    """Every panel query names only metrics of streams/metrics.py or recording rules of rules.yml."""
    dashboard = _dashboard()
    exposed, recorded = _exposed_names(), _recorded_names()
    panels = _panels(dashboard)
    assert len(panels) >= 8
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(re.findall(r"\b(divmon[_:][a-z0-9_:]+)", expr))
            assert names, f"{panel['title']}: no divmon metric in {expr}"
            for name in names:
                known = name in recorded if ":" in name else name in exposed
                assert known, f"{panel['title']}: {name} is not declared"
            assert 'env="$env"' in expr, f"{panel['title']}: not filtered by $env"


def test_grafana_dashboard_covers_the_operational_questions() -> None:
    """Panels exist for mismatches, flips, witness, feeds, snapshot age, lag and warming."""
    exprs = " ".join(t["expr"] for p in _panels(_dashboard()) for t in p["targets"])
    for needed in ("divmon_mismatches_total", "divmon_open_mismatches", "divmon_avail_gap_flips_total",
                   "divmon_witness_anomalies_total", "divmon_witness_sweeps_total",
                   "divmon_records_consumed_total", "divmon_snapshot_age_seconds_bucket",
                   "divmon_consumer_lag_records", "divmon_engine_lag_seconds", "divmon_warming"):
        assert needed in exprs, needed


def test_grafana_provisioning_points_at_the_dashboard_datasource() -> None:
    """The dashboard's datasource uid is provisioned and points at the compose Prometheus."""
    datasources = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    by_uid = {d["uid"]: d for d in datasources}
    dashboard = _dashboard()
    uids = {p["datasource"]["uid"] for p in _panels(dashboard)}
    assert uids <= set(by_uid)
    assert all(by_uid[u]["url"] == "http://prometheus:9090" for u in uids)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
