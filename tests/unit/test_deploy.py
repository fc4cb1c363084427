"""deploy/ parses and names only what the project has: services, settings, ports, images,
recording rules. No container engine runs here, so this is what can be checked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.plugins import app_names, service_names
from pipeline.settings import Settings
from services.claims.settings import ClaimsSettings
from services.coding.app import CodingSettings
from services.console.app import ConsoleSettings
from services.intake.settings import GatewaySettings, IntakeSettings
from services.remittance.app import RemittanceSettings
from services.validation.app import ValidationSettings
from sim.payer_app import PayerSimSettings

SERVICE_NAMES = set(service_names()) | set(app_names())
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "claimflow"
METRICS_PORT = "9100"
SETTINGS = (
    Settings,
    ClaimsSettings,
    CodingSettings,
    ConsoleSettings,
    GatewaySettings,
    IntakeSettings,
    RemittanceSettings,
    PayerSimSettings,
    ValidationSettings,
)


def env_names(model: type[BaseModel], prefix: str = "CLAIMFLOW_") -> set[str]:
    """Every environment variable a settings class reads, nested ones with ``__``."""
    names = set()
    for name, info in model.model_fields.items():
        var = f"{prefix}{name.upper()}"
        names.add(var)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= env_names(ann, f"{var}__")
    return names


REAL_VARS = set().union(*(env_names(s) for s in SETTINGS))


def check_env(env: dict[str, Any], where: str) -> None:
    for var in env:
        if var.startswith("CLAIMFLOW_"):
            assert var in REAL_VARS, f"{where}: {var} is not a settings field"


def image_of(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].split(":")[0]


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:3\.11-slim", text, re.M)) == 2
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and "/metrics" in text
    assert f"EXPOSE {METRICS_PORT}" in text
    check_env(dict(re.findall(r"(CLAIMFLOW_[A-Z_]+)=(\S+)", text)), "Dockerfile")


def test_compose_runs_kraft_kafka_and_only_real_services_and_settings() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    kafka = [s for n, s in services.items() if n.startswith("kafka-")]
    assert len(kafka) == 3
    for broker in kafka:
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:")
        assert "controller" in env["KAFKA_PROCESS_ROLES"]
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
    ours = {n: s for n, s in services.items() if s.get("image", "").startswith(IMAGE)}
    assert {s["command"][1] for s in ours.values()} == set(SERVICE_NAMES)
    for name, svc in ours.items():
        assert svc["command"][0] == "service" and svc["command"][1] in SERVICE_NAMES
        assert image_of(svc["image"]) == IMAGE
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        check_env(svc["environment"], f"compose {name}")
        assert svc["environment"]["CLAIMFLOW_METRICS_PORT"] == METRICS_PORT
        brokers = svc["environment"]["CLAIMFLOW_BOOTSTRAP_SERVERS"].split(",")
        assert {b.split(":")[0] for b in brokers} == {n for n in services if n.startswith("kafka-")}
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for c in scrape["scrape_configs"] for s in c["static_configs"] for t in s["targets"]
    }
    assert targets == {f"{n}:{METRICS_PORT}" for n in ours}
    mounts = services["grafana"]["volumes"]
    assert all((DEPLOY / m.split(":")[0]).exists() for m in mounts)
    assert all((DEPLOY / m.split(":")[0]).exists() for m in services["prometheus"]["volumes"][:1])


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s" / "base").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_reference_real_services_settings_ports_and_image() -> None:
    docs = k8s_docs()
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    check_env(config["data"], "ConfigMap")
    assert config["data"]["CLAIMFLOW_METRICS_PORT"] == METRICS_PORT
    workloads = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet") and "template" in d.get("spec", {})
    ]
    names = set()
    for w in workloads:
        (c,) = w["spec"]["template"]["spec"]["containers"]
        assert c["args"][0] == "service" and c["args"][1] in SERVICE_NAMES
        names.add(c["args"][1])
        assert image_of(c["image"]) == IMAGE
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert str(ports["metrics"]) == METRICS_PORT
        assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        if c["args"][1] == "intake-gateway":  # ready only while the broker stores messages
            assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        else:
            assert c["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        assert c["resources"]["requests"] and c["resources"]["limits"]
        check_env({e["name"]: e["value"] for e in c.get("env", [])}, w["metadata"]["name"])
        if w["kind"] == "StatefulSet":
            assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/claimflow"}
    assert names == set(SERVICE_NAMES)
    for name in ("remittance", "claims", "coding", "validation", "intake"):
        assert any(w["kind"] == "StatefulSet" and w["metadata"]["name"] == name for w in workloads)
    overlay = yaml.safe_load(
        (DEPLOY / "k8s" / "overlays" / "production" / "kustomization.yaml").read_text()
    )
    assert [image_of(i["name"]) for i in overlay["images"]] == [IMAGE]
    patches = [
        d
        for d in yaml.safe_load_all(
            (DEPLOY / "k8s" / "overlays" / "production" / "replicas.yaml").read_text()
        )
        if d
    ]
    assert {p["metadata"]["name"] for p in patches} <= {w["metadata"]["name"] for w in workloads}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")
def test_the_production_overlay_builds_with_kustomize() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / "production")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "registry.example.com/claimflow:0.1.0" in out.stdout


def test_grafana_dashboard_uses_only_recording_rules_that_exist() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "claimflow.json").read_text())
    used = {
        m
        for p in dash["panels"]
        for t in p["targets"]
        for m in re.findall(r"claimflow:[\w:]+", t["expr"])
    }
    assert used and used <= recorded
    for kpi in ("clean_claim_rate", "denial_rate", "first_pass_yield"):
        assert any(kpi in u for u in used)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool on PATH")
def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


GATEWAY_SECRETS = {
    "CLAIMFLOW_GATEWAY__TOKEN_FILE",
    "CLAIMFLOW_GATEWAY__MLLP_TLS_CERT",
    "CLAIMFLOW_GATEWAY__MLLP_TLS_KEY",
    "CLAIMFLOW_GATEWAY__MLLP_TLS_CLIENT_CA",
}


def test_the_gateway_is_deployed_with_a_token_secret_and_mllp_over_mutual_tls() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway = doc["services"]["intake-gateway"]
    env = gateway["environment"]
    assert set(env) >= GATEWAY_SECRETS and "CLAIMFLOW_GATEWAY__TOKEN" not in env
    mounted = {f"/run/secrets/{name}" for name in gateway["secrets"]}
    assert {env[v] for v in GATEWAY_SECRETS} == mounted
    assert set(gateway["secrets"]) <= set(doc["secrets"])
    assert all(p.startswith("127.0.0.1:") for p in gateway["ports"])  # not all interfaces
    workload = next(
        d for d in k8s_docs() if d["kind"] == "StatefulSet" and d["metadata"]["name"] ==
        "intake-gateway"
    )  # fmt: skip
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    k8s_env = {e["name"]: e["value"] for e in container["env"]}
    assert set(k8s_env) >= GATEWAY_SECRETS
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert all(any(k8s_env[v].startswith(m + "/") for m in mounts) for v in GATEWAY_SECRETS)
    assert {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} == {
        "claimflow-gateway-token",
        "claimflow-mllp-tls",
    }
