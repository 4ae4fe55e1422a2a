"""deploy/ (issue 17): the Kubernetes manifests validate against the Kubernetes schemas
(kubernetes-validate, strict: an unknown field is an error), and what they say agrees with the gateway
config they carry: probes on the admin port and paths the gateway serves, a grace period above the
drain, the admin token from the Secret, the config mounted where the image reads it. The configs in
them (and the compose file's) load with `fastgw validate`; the compose file has two gateway nodes
sharing Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fastgw.config.model import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
ADMIN_PATHS = ("/readyz", "/livez", "/healthz")  # fastgw/admin: public endpoints
K8S_VERSION = "1.30.0"
PRESTOP = 5  # seconds the manifests' preStop hooks sleep


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage."""
    text = (ROOT / "Dockerfile").read_text().split("\nFROM ${BASE}\n", 1)[1]
    block = re.search(r"^ENV (.+?)\n(?!\s)", text, re.M | re.S).group(1)
    return dict(re.findall(r"(\w+)=(\S+)", block))


def check_config(text: str, tmp_path: Path, env: dict[str, str]) -> ServerConfig:
    """`fastgw validate` the config as the container would read it (its FASTGW_* variables set), and
    return its server settings."""
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                         timeout=60, env={**{k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")},
                                          **env, "FASTGW_CONFIG": str(path)})
    assert run.returncode == 0, run.stderr
    from fastgw.config.loader import parse_text, resolve_env
    from fastgw.config.model import read_config

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        data = resolve_env(parse_text(text, "x").data, "", [])
        return read_config(data)[0].server
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path):
    docs = documents(path)
    assert {doc["kind"] for doc in docs} >= {"ConfigMap", "Secret", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_refused():
    doc = next(d for d in documents(DEPLOY / "kubernetes" / "sidecar.yaml") if d["kind"] == "Deployment")
    doc["spec"]["template"]["spec"]["containers"][1]["readinessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_probes_ports_drain_and_secrets_agree_with_the_gateway(path, tmp_path):
    docs = documents(path)
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["image"].startswith("fastgw"))
    # the config: a ConfigMap mounted where the image reads it
    mount = next(m for m in gateway["volumeMounts"] if m["mountPath"] == "/etc/fastgw")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = by_kind[("ConfigMap", volume["configMap"]["name"])]
    env = {**image_env(), **{e["name"]: e["value"] for e in gateway.get("env", []) if "value" in e}}
    assert env["FASTGW_CONFIG"] == "/etc/fastgw/gateway.yaml" and "gateway.yaml" in config_map["data"]
    # the admin token from the Secret
    token = next(e for e in gateway["env"] if e["name"] == "FASTGW_ADMIN_TOKEN")
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref["key"] in by_kind[("Secret", ref["name"])]["stringData"]
    server = check_config(config_map["data"]["gateway.yaml"], tmp_path,
                          {k: v for k, v in env.items() if k != "FASTGW_CONFIG"} | {"FASTGW_ADMIN_TOKEN": "t"})
    assert server.adminToken == "t"
    # probes: the admin port the gateway listens on, on an address the kubelet reaches, public paths
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["admin"] == server.adminPort and ports["http"] == server.port
    assert server.adminHost == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = gateway[probe]["httpGet"]
        assert get["port"] in ("admin", server.adminPort) and get["path"] in ADMIN_PATHS
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"  # fails while draining
    # drain: the kubelet's SIGKILL comes after the preStop sleep and the whole drain
    assert gateway["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP)]
    assert pod["terminationGracePeriodSeconds"] > PRESTOP + server.drainSeconds
    # the image's user, and the writable places a read-only root needs
    assert gateway["securityContext"]["runAsUser"] == 10001 and gateway["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in gateway["volumeMounts"]} >= {"/tmp", "/var/lib/fastgw"}
    # the Service sends clients to the gateway, never around it
    service = next(doc for doc in docs if doc["kind"] == "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert all(p["targetPort"] == "http" for p in service["spec"]["ports"])


def test_the_sidecar_pod_proxies_to_its_app_over_loopback(tmp_path):
    docs = documents(DEPLOY / "kubernetes" / "sidecar.yaml")
    pod = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    app_port = app["ports"][0]["containerPort"]
    config = yaml.safe_load(next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]["gateway.yaml"])
    uris = [r["integration"]["uri"] for api in config["apis"] for r in api["routes"]]
    assert uris and all(u.startswith(f"http://127.0.0.1:{app_port}/") for u in uris)


def test_the_compose_file_runs_two_gateways_and_redis(tmp_path):
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    gateways = [s for s in services.values() if s.get("image") == "fastgw:latest"]
    assert len(gateways) == 2 and "redis" in services
    published = set()
    for service in gateways:
        assert service["build"]["context"] == "../.." and (DEPLOY / "compose" / service["build"]["context"]
                                                           / service["build"]["dockerfile"]).exists()
        assert "redis" in service["depends_on"]
        source, target, mode = service["volumes"][0].split(":")
        assert target == image_env()["FASTGW_CONFIG"] and mode == "ro"
        published |= {p.split(":")[0] for p in service["ports"]}
    assert len(published) == 4  # each node its own data and admin port on the host
    text = (DEPLOY / "compose" / "gateway.yaml").read_text()
    server = check_config(text, tmp_path, {"FASTGW_ADMIN_TOKEN": "t"})
    assert float(gateways[0]["stop_grace_period"].rstrip("s")) > server.drainSeconds
    state = yaml.safe_load(text)["state"]
    assert state["backend"] == "redis" and state["url"].startswith("redis://redis:") and state["nodes"] == 2
