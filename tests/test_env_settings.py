"""Every `server` setting from a FASTGW_* environment variable (issue 17: the container image is
configured by its environment; the mounted config file stays as it is): names, precedence (flags >
variables > file > defaults), checks with the variable named, and a real `fastgw serve` configured by
nothing but its environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from support.gateway import free_port

from fastgw.config.model import ServerConfig, env_name, read_config
from fastgw.config.model.server import SECTIONS

BASE = {"apis": [{"name": "a", "type": "REST", "stages": {"prod": {}},
                  "routes": [{"route": "GET /x", "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:1/x"}}]}]}


def read(server=None):
    data = dict(BASE)
    if server is not None:
        data["server"] = server
    config, problems = read_config(data)
    return config.server, [str(p) for p in problems]


def test_every_setting_has_a_variable():
    names = set()
    for field in ServerConfig.__dataclass_fields__:
        if field in SECTIONS:
            names |= {env_name(f"{field}.{sub}") for sub in SECTIONS[field].__dataclass_fields__}
        else:
            names.add(env_name(field))
    for expected in ("FASTGW_PORT", "FASTGW_ADMIN_TOKEN", "FASTGW_DRAIN_SECONDS", "FASTGW_TRUSTED_HOPS",
                     "FASTGW_REUSE_PORT", "FASTGW_LIMITS_MAX_BODY_BYTES", "FASTGW_LIMITS_HEADER_READ_TIMEOUT_MS",
                     "FASTGW_IAM_REGION", "FASTGW_TRACING_OTLP_ENDPOINT", "FASTGW_TRACING_SAMPLE_RATE"):
        assert expected in names


def test_variables_beat_the_file_and_are_checked(monkeypatch):
    monkeypatch.setenv("FASTGW_DRAIN_SECONDS", "7.5")
    monkeypatch.setenv("FASTGW_TRUSTED_HOPS", "2")
    monkeypatch.setenv("FASTGW_ACCESS_LOG", "0")
    monkeypatch.setenv("FASTGW_LIMITS_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("FASTGW_TRACING_OTLP_ENDPOINT", "http://collector:4318/v1/traces")
    server, problems = read({"drainSeconds": 30, "limits": {"maxUriBytes": 4096}})
    assert problems == []
    assert server.drainSeconds == 7.5 and server.trustedHops == 2 and server.accessLog is False
    assert server.limits.maxBodyBytes == 2048 and server.limits.maxUriBytes == 4096  # the file's other limits stay
    assert server.tracing.otlpEndpoint == "http://collector:4318/v1/traces"


def test_a_bad_value_names_the_variable_and_hides_secrets(monkeypatch):
    monkeypatch.setenv("FASTGW_LIMITS_MAX_BODY_BYTES", "lots")
    monkeypatch.setenv("FASTGW_TRACING_SAMPLE_RATE", "2")
    monkeypatch.setenv("FASTGW_ADMIN_TOKEN", "s3cret")
    _, problems = read({"adminToken": 5})  # a fine token; the variable's wins
    assert any("environment FASTGW_LIMITS_MAX_BODY_BYTES='lots' (server.limits.maxBodyBytes): must be a whole"
               in p for p in problems), problems
    assert any("FASTGW_TRACING_SAMPLE_RATE='2'" in p and "between 0 and 1" in p for p in problems), problems
    assert not any("s3cret" in p for p in problems)


def test_no_variables_no_change(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FASTGW_"):
            monkeypatch.delenv(name)
    server, problems = read()
    assert problems == [] and server == ServerConfig()


def test_validate_refuses_a_bad_variable_with_exit_2(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("apis: [{name: a, type: REST, stages: {prod: {}}, routes: []}]\n")
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FASTGW_CONFIG": str(path), "FASTGW_PORT": "http"})
    assert run.returncode == 2, run.stderr
    assert "environment FASTGW_PORT='http' (server.port)" in run.stderr


def test_serve_configured_by_its_environment_only(tmp_path, upstream):
    """As the image runs it: `fastgw serve` with no argument, the config file and every setting from
    the environment."""
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
server: {{port: 1, drainSeconds: 60}}
apis:
  - name: a
    type: REST
    stages: {{prod: {{}}}}
    routes:
      - route: ANY /{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/{{p}}"}}
""")
    port, admin = free_port(), free_port()
    env = {**os.environ, "FASTGW_CONFIG": str(path), "FASTGW_HOST": "127.0.0.1", "FASTGW_PORT": str(port),
           "FASTGW_ADMIN_PORT": str(admin), "FASTGW_WORKERS": "1", "FASTGW_ADMIN_TOKEN": "tok",
           "FASTGW_LIMITS_MAX_BODY_BYTES": "16", "FASTGW_DRAIN_SECONDS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("not ready in 30 s")
        assert httpx.get(f"http://127.0.0.1:{port}/prod/ok", timeout=5).status_code == 200
        assert httpx.post(f"http://127.0.0.1:{port}/prod/ok", content=b"x" * 17, timeout=5).status_code == 413
        assert httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).status_code == 401  # the token applies
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
