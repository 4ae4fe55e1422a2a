"""The server around the pipeline: TLS and HTTP/2, slow clients, reloads, the admin API, CLI errors."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.waiting import wait_for

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


@pytest.mark.parametrize("interface", ["asgi", "rsgi"])
def test_h2c_http2_without_tls_with_prior_knowledge(start_gateway, upstream, interface):
    """h2c: a client that speaks HTTP/2 from the first byte (prior knowledge, as gRPC clients and
    `curl --http2-prior-knowledge` do) is served over HTTP/2 on the plain port. The HTTP/1.1
    `Upgrade: h2c` dance is not offered: such a request is answered over HTTP/1.1 (README)."""
    config = _config(upstream)
    if interface == "rsgi":
        config = config.replace("    type: REST\n", "    type: REST\n    encodedSlashes: DECODE\n")
    gateway = start_gateway(config, args=("--interface", interface))
    assert f"(interface {interface}," in gateway.stderr()  # the flag, not the file, chose it
    with httpx.Client(http1=False, http2=True) as client:
        response = client.get(f"{gateway.url}/v1/hello/h2c")
    assert (response.status_code, response.http_version) == (200, "HTTP/2")
    assert upstream.requests[-1].target == "/greet/h2c"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/hello/up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert upstream.requests[-1].target == "/greet/up"


def test_the_interface_flag_chooses_the_interface_and_refuses_rsgi_where_paths_must_stay_raw(start_gateway, upstream,
                                                                                              tmp_path):
    config = _config(upstream).replace("    type: REST\n", "    type: REST\n    encodedSlashes: DECODE\n")
    for interface in ("asgi", "rsgi"):
        gateway = start_gateway(config, args=("--interface", interface), name=f"gw-{interface}")
        assert f"(interface {interface}," in gateway.stderr()
        assert httpx.get(f"{gateway.url}/v1/hello/x", timeout=10).status_code == 200
        gateway.stop()
    # An API that refuses encoded slashes needs the raw path, which RSGI never hands over.
    strict = _config(upstream).replace("    type: REST\n", "    type: REST\n    encodedSlashes: REJECT\n")
    path = tmp_path / "strict.yaml"
    path.write_text(strict)
    result = subprocess.run([sys.executable, "-m", "fastgw", "serve", str(path), "--interface", "rsgi",
                             "--port", "0", "--admin-port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "rsgi cannot see encoded slashes" in result.stderr


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

    # A valid one: every worker runs it when the answer comes, without failing requests in between.
    gateway.config_path.write_text(_config(upstream, "second"))
    failures = _requests_during(gateway, lambda: httpx.post(f"{gateway.admin}/reload").status_code == 202,
                                "/v1/hello/c", upstream, "/second/c")
    assert failures == 0
    assert httpx.get(f"{gateway.url}/v1/hello/d").status_code == 200
    assert upstream.requests[-1].target == "/second/d"


def _requests_during(gateway, change, path: str, upstream, new_target: str) -> int:
    """Requests sent back to back on one kept-alive connection while `change()` runs, until the
    upstream sees `new_target`: the number of them that did not answer 200."""
    failures = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal failures
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    failures += http.get(f"{gateway.url}{path}").status_code != 200
                except httpx.HTTPError:
                    failures += 1

    before = len(upstream.requests)
    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_for(lambda: len(upstream.requests) > before, what="the load to start")
        assert change()
        wait_for(lambda: upstream.requests[-1].target == new_target, what=f"the upstream to see {new_target}")
    finally:
        stop.set()
        thread.join(20)
    return failures


def test_sighup_reloads_a_valid_config_and_keeps_serving_on_an_invalid_one(start_gateway, upstream):
    """SIGHUP, the signal alone (no admin call): an invalid file is refused and logged with SIGHUP as
    the trigger, the old route keeps serving; a valid file's new route is served, with no request
    failing while it is swapped in."""
    gateway = start_gateway(_config(upstream, "first"), workers=2)
    assert httpx.get(f"{gateway.url}/v1/hello/a").status_code == 200

    gateway.config_path.write_text(_config(upstream, "second").replace("HTTP_PROXY", "NOPE"))
    gateway.signal(signal.SIGHUP)
    # Only a SIGHUP writes this line ("POST /reload" and "--watch" name themselves).
    wait_for(lambda: "config reload rejected (SIGHUP), still serving generation" in gateway.stderr(),
             what="the SIGHUP rejection in the log")
    assert "integration.type" in gateway.stderr()
    assert gateway.proc.poll() is None
    assert httpx.get(f"{gateway.url}/v1/hello/b").status_code == 200
    assert upstream.requests[-1].target == "/first/b"

    gateway.config_path.write_text(_config(upstream, "third"))

    def sighup() -> bool:
        gateway.signal(signal.SIGHUP)
        return True

    failures = _requests_during(gateway, sighup, "/v1/hello/c", upstream, "/third/c")
    assert failures == 0
    assert "config reload accepted (SIGHUP)" in gateway.stderr()
    # Both workers run it: /readyz is 200 only when every worker acknowledged the new generation.
    wait_for(lambda: httpx.get(f"{gateway.admin}/readyz").status_code == 200, what="/readyz")
    with httpx.Client() as one, httpx.Client() as other:  # two connections: spread over the workers
        for client in (one, other) * 5:
            assert client.get(f"{gateway.url}/v1/hello/e").status_code == 200
            assert upstream.requests[-1].target == "/third/e"


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

    def logged() -> dict | None:
        lines = [json.loads(line) for line in gateway.stdout().splitlines() if line.startswith("{")]
        return next((r for r in lines if r.get("path") == "/v1/hello/log"), None)

    wait_for(logged, what="the request's access log line")
    record = logged()
    for name in ("requestId", "ip", "requestTime", "httpMethod", "resourcePath", "status", "protocol",
                 "responseLength", "integrationLatency"):
        assert name in record
    assert record["resourcePath"] == "/hello/{name}" and record["status"] == 200


def test_no_access_log_flag(start_gateway, upstream):
    gateway = start_gateway(_config(upstream), args=("--no-access-log",))
    httpx.get(f"{gateway.url}/v1/hello/quiet")
    # Absence cannot be waited for: a second gateway, with the log on, serves the same request, and
    # once its line is written the first one has had as long to write one.
    logging = start_gateway(_config(upstream), name="logging")
    httpx.get(f"{logging.url}/v1/hello/quiet")
    wait_for(lambda: "requestId" in logging.stdout(), what="the logging gateway's line")
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
