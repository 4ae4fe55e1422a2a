"""The first hour of a new user (issue #24): a busy port is refused, /readyz means connections are
served, start-up failures are one line, and the gateway says what it does in its log."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support.gateway import GatewayProcess, free_port
from test_server import _config  # the same one-route REST API


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _serve(config: Path, *args: str) -> subprocess.CompletedProcess:
    """A `fastgw serve` expected to refuse to start; one that starts anyway is stopped (its workers too)."""
    command = [sys.executable, "-m", "fastgw", "serve", str(config), "--workers", "1", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"fastgw serve did not refuse to start:\n{err}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _assert_one_line_refusal(run: subprocess.CompletedProcess, *words: str) -> str:
    assert run.returncode != 0, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("fastgw: "), lines[0]
    for word in words:
        assert word in lines[0]
    return lines[0]


@pytest.fixture
def listener() -> Iterator[Callable[[str], int]]:
    """listener(host) -> a port a plain (non-fastgw) socket listens on."""
    sockets: list[socket.socket] = []

    def listen(host: str) -> int:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.bind((host, 0))
        sock.listen()
        sockets.append(sock)
        return sock.getsockname()[1]

    yield listen
    for sock in sockets:
        sock.close()


# -- 1. a data port in use ---------------------------------------------------------------------------
@pytest.mark.parametrize(("listen_host", "gateway_host"),
                         [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "0.0.0.0"), ("::1", "::1"), ("::1", "::")])
def test_a_port_a_plain_listener_holds_is_refused(tmp_path, upstream, listener, listen_host, gateway_host):
    config = tmp_path / "gw.yaml"
    config.write_text(_config(upstream))
    port = listener(listen_host)
    run = _serve(config, "--host", gateway_host, "--port", str(port), "--admin-port", str(free_port()))
    _assert_one_line_refusal(run, "data port", str(port), "already in use", "--reuse-port")


def test_a_port_another_gateway_serves_is_refused_unless_shared(start_gateway, upstream, tmp_path):
    first = start_gateway(_config(upstream, "first"))
    config = tmp_path / "second.yaml"
    config.write_text(_config(upstream, "second"))
    run = _serve(config, "--host", "127.0.0.1", "--port", str(first.port), "--admin-port", str(free_port()))
    _assert_one_line_refusal(run, "data port", f"127.0.0.1:{first.port}", "already in use")
    for n in range(20):  # every request still reaches the first gateway
        assert httpx.get(f"{first.url}/v1/hello/{n}").status_code == 200
        assert upstream.requests[-1].target == f"/first/{n}"

    # Asked for explicitly (a zero-downtime handover): the second gateway shares the port.
    second = GatewayProcess(_config(upstream, "second"), tmp_path, name="second", args=("--reuse-port",))
    second.port = first.port
    try:
        second.start()
        assert "sharing" in second.stderr()
    finally:
        assert second.stop() == 0


# -- 2. /readyz means a connection is served --------------------------------------------------------
def _request(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /v1/hello/ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.timeout(300)
def test_readyz_200_means_connections_are_accepted_and_served(upstream, tmp_path):
    starts, connects = 20, 10
    refused, failed, exits = 0, [], []
    deadline = time.monotonic() + 240
    for i in range(starts):
        gateway = GatewayProcess(_config(upstream), tmp_path, workers=2, name=f"ready{i}")
        gateway.proc = subprocess.Popen(gateway.command(), stdout=gateway.log_path.open("wb"),
                                        stderr=gateway.err_path.open("wb"), start_new_session=True)
        try:
            while True:  # a tight loop: the first 200 is the moment a client would connect
                assert time.monotonic() < deadline, f"not ready:\n{gateway.stderr()}"
                assert gateway.proc.poll() is None, gateway.stderr()
                try:
                    if httpx.get(f"{gateway.admin}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            for _ in range(connects):
                try:
                    response = _request("127.0.0.1", gateway.port)
                except ConnectionRefusedError:
                    refused += 1
                    continue
                if not response.startswith(b"HTTP/1.1 200"):
                    failed.append(response[:80])
        finally:
            exits.append(gateway.stop())
    assert refused == 0
    assert failed == []
    assert exits == [0] * starts


def test_readyz_follows_reloads_and_worker_respawns(start_gateway, upstream):
    gateway = start_gateway(_config(upstream, "first"), workers=2)
    for n in range(5):
        gateway.config_path.write_text(_config(upstream, f"gen{n}"))
        answer = httpx.post(f"{gateway.admin}/reload", timeout=20)
        assert answer.status_code == 202
        assert answer.json()["workers"] == 2
        assert httpx.get(f"{gateway.admin}/readyz").status_code == 200
        for _ in range(4):  # every worker runs the new config
            assert httpx.get(f"{gateway.url}/v1/hello/x", headers={"connection": "close"}).status_code == 200
            assert upstream.requests[-1].target == f"/gen{n}/x"

    # SIGHUP answers nothing: once the main process published the new config, /readyz is 200 only
    # when every worker runs it.
    gateway.config_path.write_text(_config(upstream, "hup"))
    gateway.signal(signal.SIGHUP)
    assert _wait(lambda: "config reload accepted (SIGHUP)" in gateway.stderr(), 20)
    assert _wait(lambda: httpx.get(f"{gateway.admin}/readyz").status_code == 200)
    for _ in range(4):
        assert httpx.get(f"{gateway.url}/v1/hello/x", headers={"connection": "close"}).status_code == 200
        assert upstream.requests[-1].target == "/hup/x"

    # A worker that cannot take the new config (stopped here): not ready until it runs it.
    workers = gateway.worker_pids()
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        gateway.config_path.write_text(_config(upstream, "late"))
        gateway.signal(signal.SIGHUP)
        assert _wait(lambda: gateway.stderr().count("config reload accepted (SIGHUP)") == 2, 20)
        for _ in range(5):
            answer = httpx.get(f"{gateway.admin}/readyz")
            assert (answer.status_code, answer.json()) == (503, {"status": "reloading"})
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    assert _wait(lambda: httpx.get(f"{gateway.admin}/readyz").status_code == 200)
    assert httpx.get(f"{gateway.url}/v1/hello/x").status_code == 200
    assert upstream.requests[-1].target == "/late/x"

    # A worker dies: granian respawns it, and the gateway is ready again.
    victim = gateway.worker_pids()[0]
    gateway_pid = gateway.proc.pid
    os.kill(victim, signal.SIGKILL)
    assert _wait(lambda: "respawned" in gateway.stderr())
    assert _wait(lambda: httpx.get(f"{gateway.admin}/readyz").status_code == 200)
    assert gateway.proc.pid == gateway_pid and gateway.proc.poll() is None
    assert f"(pid {victim}) died" in gateway.stderr()
    assert httpx.get(f"{gateway.url}/v1/hello/y").status_code == 200


# -- 3. every start-up failure is one line -----------------------------------------------------------
def test_an_admin_port_in_use_is_one_line(tmp_path, upstream, listener):
    config = tmp_path / "gw.yaml"
    config.write_text(_config(upstream))
    admin = listener("127.0.0.1")
    run = _serve(config, "--host", "127.0.0.1", "--port", str(free_port()), "--admin-port", str(admin))
    _assert_one_line_refusal(run, "admin port", f"127.0.0.1:{admin}", "already in use")


def test_tls_files_that_do_not_load_are_one_line(tmp_path, upstream):
    config = tmp_path / "gw.yaml"
    config.write_text(_config(upstream))
    ports = ("--host", "127.0.0.1", "--port", str(free_port()), "--admin-port", str(free_port()))
    run = _serve(config, *ports, "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "k.pem"))
    _assert_one_line_refusal(run, "TLS certificate", "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    run = _serve(config, *ports, "--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", str(tmp_path / "junk.pem"))
    _assert_one_line_refusal(run, "cannot load the TLS certificate")
    run = _serve(config, *ports, "--tls-cert", str(tmp_path / "junk.pem"))
    _assert_one_line_refusal(run, "both")


def test_a_privileged_port_is_one_line(tmp_path, upstream):
    if os.geteuid() == 0:
        pytest.skip("root may listen on any port")
    config = tmp_path / "gw.yaml"
    config.write_text(_config(upstream))
    run = _serve(config, "--host", "127.0.0.1", "--port", "81", "--admin-port", str(free_port()))
    _assert_one_line_refusal(run, "no permission", ":81")


# -- 4. the log says what the gateway does -----------------------------------------------------------
def test_the_log_tells_startup_reloads_and_stop(start_gateway, upstream):
    gateway = start_gateway(_config(upstream, "first"))
    err = gateway.stderr()
    startup = next(line for line in err.splitlines() if "listening on" in line)
    assert "[INFO]" in startup
    for part in (f"http://127.0.0.1:{gateway.port}", f"admin API on http://127.0.0.1:{gateway.admin_port}",
                 "interface", "1 worker(s)", str(gateway.config_path), "state"):
        assert part in startup, startup
    assert "DEBUG" not in err  # info is the default level

    gateway.config_path.write_text(_config(upstream, "second"))
    gateway.signal(signal.SIGHUP)
    assert _wait(lambda: "config reload accepted (SIGHUP)" in gateway.stderr()), gateway.stderr()
    accepted = next(line for line in gateway.stderr().splitlines() if "config reload accepted (SIGHUP)" in line)
    assert "[INFO]" in accepted and "generation 1" in accepted

    gateway.config_path.write_text(_config(upstream, "third").replace("HTTP_PROXY", "NOPE"))
    gateway.signal(signal.SIGHUP)
    assert _wait(lambda: "config reload rejected (SIGHUP)" in gateway.stderr()), gateway.stderr()
    rejected = next(line for line in gateway.stderr().splitlines() if "config reload rejected (SIGHUP)" in line)
    assert "[ERROR]" in rejected and "integration.type" in rejected and "still serving generation 1" in rejected

    assert httpx.post(f"{gateway.admin}/reload").status_code == 400
    assert _wait(lambda: "config reload rejected (POST /reload)" in gateway.stderr())
    # the accepted reload is served once every worker runs it: /readyz says so
    assert _wait(lambda: httpx.get(f"{gateway.admin}/readyz").status_code == 200)
    assert httpx.get(f"{gateway.url}/v1/hello/x").status_code == 200
    assert upstream.requests[-1].target == "/second/x"

    assert gateway.stop() == 0
    err = gateway.stderr()
    assert "stopping: /readyz fails" in err
    assert err.rstrip().endswith("stopped")


def test_log_level_debug_reaches_fastgw_loggers(start_gateway, upstream):
    gateway = start_gateway(_config(upstream), args=("--log-level", "debug"))
    assert _wait(lambda: "[DEBUG] fastgw.deployments: ready: generation 0" in gateway.stderr()), gateway.stderr()
    quiet = start_gateway(_config(upstream), args=("--log-level", "warning"), name="quiet")
    assert "listening on" not in quiet.stderr()


def test_a_state_directory_that_cannot_be_used_is_one_line(tmp_path, upstream):
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
state: {{backend: local, path: "{tmp_path / 'a-file' / 'state'}"}}
apis:
  - name: shop
    apiKeySource: HEADER
    stages: {{prod: {{}}}}
    routes:
      - route: GET /orders/{{id}}
        apiKeyRequired: true
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/orders/{{id}}"}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
    quota: {{limit: 1000, period: DAY}}
apiKeys:
  - {{name: alice, value: "alice-key-0123456789", usagePlans: [basic]}}
""")
    run = _serve(config, "--host", "127.0.0.1", "--port", str(free_port()), "--admin-port", str(free_port()))
    _assert_one_line_refusal(run, "state directory", "a-file")
