"""The server around the pipeline: TLS and HTTP/2, slow clients, reloads, the admin API, CLI errors."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CONFIG = """
server: {{workers: 1}}
apis:
  - name: api
    type: REST
    stages:
      v1: {{variables: {{backend: "{backend}"}}}}
    routes:
      - route: GET /hello/{{name}}
        integration: {{type: HTTP_PROXY, uri: "http://${{stageVariables.backend}}/{prefix}/{{name}}"}}
"""


def _config(upstream, prefix: str = "greet") -> str:
    return CONFIG.format(backend=upstream.address, prefix=prefix)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_and_http2_clients(start_gateway, upstream, tmp_path):
    cert, key = _self_signed(tmp_path)
    gateway = start_gateway(_config(upstream), args=("--tls-cert", str(cert), "--tls-key", str(key)))
    url = f"https://localhost:{gateway.port}/v1/hello/world"
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(verify=trust, http2=True) as client:
        response = client.get(url)
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
    with httpx.Client(verify=trust, http2=False) as client:
        response = client.get(url)
        assert response.http_version == "HTTP/1.1"
    assert upstream.requests[-1].target == "/greet/world"
    assert upstream.requests[-1].header("x-forwarded-proto") == "https"


def test_slow_header_client_is_cut_off(start_gateway, upstream):
    limits = "server: {workers: 1, limits: {headerReadTimeoutMs: 500}}"
    config = _config(upstream).replace("server: {workers: 1}", limits)
    gateway = start_gateway(config)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/hello/x HTTP/1.1\r\nHost: a\r\n")  # never finishes the head
        started = time.monotonic()
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except TimeoutError:
            pytest.fail("the gateway kept a slow client's connection open")
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert data == b"" or data.startswith(b"HTTP/1.1 408")
    assert not upstream.requests


@pytest.mark.reliability("F-22")
def test_reload_applies_a_valid_config_and_keeps_serving_on_an_invalid_one(start_gateway, upstream):
    gateway = start_gateway(_config(upstream, "first"))
    assert httpx.get(f"{gateway.url}/v1/hello/a").status_code == 200
    assert upstream.requests[-1].target == "/first/a"

    # An invalid file: rejected by the admin API with the problems, old config still serving.
    gateway.config_path.write_text(_config(upstream, "second").replace("HTTP_PROXY", "NOPE"))
    response = httpx.post(f"{gateway.admin}/reload")
    assert response.status_code == 400
    assert any("integration.type" in p for p in response.json()["problems"])
    gateway.signal(signal.SIGHUP)  # the same through the signal
    time.sleep(1)
    assert gateway.proc.poll() is None
    assert httpx.get(f"{gateway.url}/v1/hello/b").status_code == 200
    assert upstream.requests[-1].target == "/first/b"

    # A valid one: workers are replaced, without failing requests in between.
    gateway.config_path.write_text(_config(upstream, "second"))
    assert httpx.post(f"{gateway.admin}/reload").status_code == 202
    deadline = time.monotonic() + 20
    failures = 0
    while time.monotonic() < deadline:
        response = httpx.get(f"{gateway.url}/v1/hello/c")
        failures += response.status_code != 200
        if upstream.requests[-1].target == "/second/c":
            break
        time.sleep(0.1)
    assert upstream.requests[-1].target == "/second/c"
    assert failures == 0


def test_admin_endpoints(start_gateway, upstream):
    gateway = start_gateway(_config(upstream))
    assert httpx.get(f"{gateway.admin}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.admin}/readyz").status_code == 200
    text = httpx.get(f"{gateway.admin}/metrics").text
    assert "fastgw_build_info" in text
    assert httpx.get(f"{gateway.admin}/nope").status_code == 404


def test_admin_token_protects_metrics_and_reload(start_gateway, upstream):
    gateway = start_gateway(_config(upstream), args=("--admin-token", "s3cret-token"))
    assert httpx.get(f"{gateway.admin}/readyz").status_code == 200  # probes stay open
    assert httpx.get(f"{gateway.admin}/metrics").status_code == 401
    assert httpx.post(f"{gateway.admin}/reload").status_code == 401
    ok = httpx.get(f"{gateway.admin}/metrics", headers={"authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200


def test_access_log_lines_are_json_with_context_names(start_gateway, upstream):
    import json

    gateway = start_gateway(_config(upstream))
    httpx.get(f"{gateway.url}/v1/hello/log")
    time.sleep(0.3)
    lines = [json.loads(line) for line in gateway.stdout().splitlines() if line.startswith("{")]
    record = next(r for r in lines if r.get("path") == "/v1/hello/log")
    for name in ("requestId", "ip", "requestTime", "httpMethod", "resourcePath", "status", "protocol",
                 "responseLength", "integrationLatency"):
        assert name in record
    assert record["resourcePath"] == "/hello/{name}" and record["status"] == 200


def test_no_access_log_flag(start_gateway, upstream):
    gateway = start_gateway(_config(upstream), args=("--no-access-log",))
    httpx.get(f"{gateway.url}/v1/hello/quiet")
    time.sleep(0.3)
    assert "requestId" not in gateway.stdout()


def test_serve_refuses_an_invalid_config_with_locations(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apis:\n  - name: x\n    stages: {p: {}}\n"
        "    routes: [{route: 'GET /a', integration: {type: HTTP_PROXY, uri: 'ftp://x'}}]\n"
    )
    run = subprocess.run([sys.executable, "-m", "fastgw", "serve", str(path), "--port", "0"], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 2
    assert "apis[0].routes[0].integration.uri (line 4): must be an absolute http:// or https:// URI" in run.stderr


def test_env_references_resolve_or_are_reported(tmp_path, upstream):
    path = tmp_path / "env.yaml"
    path.write_text(_config(upstream).replace(upstream.address, "${env:FASTGW_TEST_BACKEND}"))
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert run.returncode == 2
    expected = "apis[0].stages.v1.variables.backend (line 7): environment variable FASTGW_TEST_BACKEND is not set"
    assert expected in run.stderr
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
                              "FASTGW_TEST_BACKEND": upstream.address})
    assert run.returncode == 0, run.stderr
