"""Issue #24, "the first hour of a new user" (part c): the example upstream and the gateway answer a
kept-alive request without waiting on Nagle and the delayed ACK (~40 ms each), and the admin API's
errors are JSON naming the missing, mistyped or unknown field and the body the endpoint takes.

The latency bound (median under 2 ms) is against a 40 ms pathology, not a benchmark: a median over
many requests on one kept-alive connection, after a warm-up.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.gateway import free_port

from fastgw.upstream import UpstreamPool

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 60
WARMUP = 5
BOUND_MS = 2.0


# --- latency: the example upstream, and the gateway in front of it ---------------------------------


@pytest.fixture
def example_upstream():
    """examples/upstream.py as a user starts it, on a free loopback port: (host:port)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "upstream.py"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"examples/upstream.py exited: {proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("examples/upstream.py did not listen within 20 s") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def read_response(sock: socket.socket, buffer: bytearray) -> bytes:
    """One Content-Length framed response from a kept-alive connection."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = len(head) + 4 + length
    while len(buffer) < total:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        buffer += chunk
    response = bytes(buffer[:total])
    del buffer[:total]
    return response


def keepalive_latencies_ms(address: str, method: str, path: str, body: bytes = b"") -> list[float]:
    """Per-request latency (ms) of SAMPLES requests on one kept-alive raw socket (after a warm-up).

    The request's body, when there is one, goes in a second write, as HTTP clients commonly do; the
    client socket has TCP_NODELAY, so only the server side can hold an answer back."""
    host, port = address.rsplit(":", 1)
    head = (f"{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"
            "content-type: application/json\r\n\r\n").encode()
    out = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the client's own writes never wait
        buffer = bytearray()
        for i in range(WARMUP + SAMPLES):
            start = time.perf_counter()
            sock.sendall(head)
            if body:
                sock.sendall(body)
            response = read_response(sock, buffer)
            elapsed = (time.perf_counter() - start) * 1000
            assert response.startswith(b"HTTP/1.1 200"), response[:200]
            assert b"connection: close" not in response.lower()
            if i >= WARMUP:
                out.append(elapsed)
    return out


def describe(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=10)
    return f"median {statistics.median(samples):.2f} ms, p10 {q[0]:.2f}, p90 {q[-1]:.2f}, max {max(samples):.2f}"


@pytest.mark.parametrize(("method", "body"), [("GET", b""), ("POST", b'{"hello": "world"}')])
def test_example_upstream_answers_kept_alive_requests_without_nagle_delay(example_upstream, method, body):
    latencies = keepalive_latencies_ms(example_upstream, method, "/items/1", body)
    print(f"\nexample upstream {method}: {describe(latencies)}")
    assert statistics.median(latencies) < BOUND_MS, describe(latencies)


def gateway_config(upstream: str) -> str:
    return f"""
apis:
  - name: shop
    type: HTTP
    stages:
      prod: {{}}
    routes:
      - route: ANY /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}"}}
"""


@pytest.mark.parametrize(("method", "body"), [("GET", b""), ("POST", b'{"hello": "world"}')])
def test_gateway_answers_kept_alive_requests_without_nagle_delay(start_gateway, example_upstream, method, body):
    """Both legs: client -> granian (the client leg) and the gateway's pooled upstream connection."""
    gateway = start_gateway(gateway_config(example_upstream), args=("--no-access-log",))
    latencies = keepalive_latencies_ms(f"127.0.0.1:{gateway.port}", method, "/prod/items/1", body)
    print(f"\ngateway -> example upstream {method}: {describe(latencies)}")
    assert statistics.median(latencies) < BOUND_MS, describe(latencies)


def test_upstream_pool_connections_set_tcp_nodelay():
    """The gateway's upstream connections (fastgw/upstream.py, on the workers' uvloop) have TCP_NODELAY:
    a request head and a streamed body in separate writes never wait for the upstream's ACK."""
    import uvloop  # a dependency of fastgw itself
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    async def check() -> int:
        pool = UpstreamPool("http", "127.0.0.1", port)
        pool.bind(asyncio.get_running_loop())
        conn = await pool.connect()
        try:
            sock = conn.transport.get_extra_info("socket")
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            conn.transport.close()

    try:
        assert uvloop.run(check()) != 0
    finally:
        listener.close()



def _peer_socket_nodelay(pids: list[int], local_port: int, remote_port: int) -> int:
    """TCP_NODELAY of the socket another process holds for this loopback connection (its copy, taken
    with pidfd_getfd: needs Linux 5.6 and ptrace rights over the process, else the test is skipped)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (local_port, remote_port):
            inode = fields[9]
    assert inode is not None, "the connection is not in /proc/net/tcp"
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target != f"socket:[{inode}]":
                continue
            pidfd = os.pidfd_open(pid)
            try:
                copy = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
                if copy < 0:
                    pytest.skip(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
                sock = socket.socket(fileno=copy)
                try:
                    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                finally:
                    sock.close()
            finally:
                os.close(pidfd)
    raise AssertionError("no gateway process holds the connection")


def test_gateway_client_connections_set_tcp_nodelay(start_gateway, example_upstream):
    """The client leg: granian's accepted connections have TCP_NODELAY (a response in several writes,
    streamed or chunked, never waits for the client's delayed ACK)."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("needs os.pidfd_open")
    gateway = start_gateway(gateway_config(example_upstream), args=("--no-access-log",))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /prod/items/1 HTTP/1.1\r\nhost: gw\r\n\r\n")
        assert read_response(sock, bytearray()).startswith(b"HTTP/1.1 200")
        assert gateway.proc is not None
        pids = [gateway.proc.pid, *gateway.worker_pids()]
        assert _peer_socket_nodelay(pids, gateway.port, sock.getsockname()[1]) != 0


# --- admin API errors --------------------------------------------------------------------------------

ALICE = "alice-key-0123456789abcdefghij"


def admin_config(upstream: str) -> str:
    return f"""
state: {{backend: local, path: state}}
apis:
  - name: shop
    type: REST
    apiKeySource: HEADER
    deployments:
      v1:
        routes:
          - route: GET /orders/{{id}}
            apiKeyRequired: true
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v1/{{id}}"}}
      v2:
        routes:
          - route: GET /orders/{{id}}
            apiKeyRequired: true
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v2/{{id}}"}}
    stages:
      prod: {{deployment: v1}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
    quota: {{limit: 100, period: DAY}}
apiKeys:
  - {{name: alice, value: "{ALICE}", usagePlans: [basic]}}
"""


def bad(response: httpx.Response, *phrases: str, field: str | None = None) -> dict:
    """A 400 with a JSON body whose message has every phrase (and `field`, when given)."""
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    message = payload["message"]
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert not message.startswith("bad request:"), message  # not the raw exception text
    if field is not None:
        assert payload.get("field") == field, payload
    return payload


@pytest.fixture
def admin_gateway(start_gateway, upstream):
    return start_gateway(admin_config(upstream.address))


def test_patch_usage_errors_name_the_field(admin_gateway):
    admin = admin_gateway.admin
    takes = "PATCH /usage takes a JSON body {keyId, usagePlanId, remaining}"
    # The case: the fields in the query string instead of the body.
    response = httpx.patch(f"{admin}/usage", params={"keyId": "alice", "usagePlanId": "basic", "remaining": 5})
    payload = bad(response, "missing field 'keyId' in the JSON body (it was given in the query string", takes,
                  field="keyId")
    assert payload["body"] == "{keyId, usagePlanId, remaining}"
    # Not JSON at all.
    bad(httpx.patch(f"{admin}/usage", content=b"nul"), "the body is not valid JSON", takes)
    bad(httpx.patch(f"{admin}/usage", content=b"{keyId: alice}"), "the body is not valid JSON", takes)
    # JSON, not an object.
    bad(httpx.patch(f"{admin}/usage", json=["alice", "basic", 5]), "the body must be a JSON object, not a list",
        takes)
    bad(httpx.patch(f"{admin}/usage", json="alice"), "the body must be a JSON object, not a string")
    # A missing field (no body at all: the first one).
    bad(httpx.patch(f"{admin}/usage"), "missing field 'keyId'", takes, field="keyId")
    bad(httpx.patch(f"{admin}/usage", json={"keyId": "alice", "remaining": 5}), "missing field 'usagePlanId'",
        field="usagePlanId")
    # Wrong types, named.
    bad(httpx.patch(f"{admin}/usage", json={"keyId": "alice", "usagePlanId": "basic", "remaining": "5"}),
        "field 'remaining' must be an integer, not a string", field="remaining")
    bad(httpx.patch(f"{admin}/usage", json={"keyId": "alice", "usagePlanId": "basic", "remaining": True}),
        "field 'remaining' must be an integer, not a boolean", field="remaining")
    bad(httpx.patch(f"{admin}/usage", json={"keyId": 7, "usagePlanId": "basic", "remaining": 5}),
        "field 'keyId' must be a string, not a number", field="keyId")
    # Unknown fields, named.
    bad(httpx.patch(f"{admin}/usage", json={"keyId": "alice", "usagePlanId": "basic", "remaining": 5,
                                             "remainder": 1}),
        "unknown field 'remainder'", "known fields: keyId, usagePlanId, remaining", field="remainder")
    # POST /usage is the same call.
    bad(httpx.post(f"{admin}/usage", json={}), "missing field 'keyId'", "POST /usage takes a JSON body")
    # The good call still works.
    ok = httpx.patch(f"{admin}/usage", json={"keyId": "alice", "usagePlanId": "basic", "remaining": 5})
    assert ok.status_code == 200, ok.text


def test_get_usage_errors_name_the_query_parameters(admin_gateway):
    admin = admin_gateway.admin
    payload = bad(httpx.get(f"{admin}/usage", params={"keyId": "alice"}),
                  "missing query parameters 'startDate', 'endDate'",
                  "GET /usage takes ?keyId=&startDate=&endDate=[&usagePlanId=]")
    assert "field" not in payload
    bad(httpx.get(f"{admin}/usage", params={"startDate": "2026-01-01", "endDate": "2026-01-02"}),
        "missing query parameter 'keyId'", field="keyId")
    ok = httpx.get(f"{admin}/usage", params={"keyId": "alice", "startDate": "2026-01-01", "endDate": "2026-01-02"})
    assert ok.status_code == 200, ok.text


def test_post_keys_errors_name_the_field(admin_gateway):
    admin = admin_gateway.admin
    takes = "POST /keys takes a JSON body {name, usagePlans?, value?, enabled?}"
    bad(httpx.post(f"{admin}/keys", params={"name": "erin"}),
        "missing field 'name' in the JSON body (it was given in the query string", takes, field="name")
    bad(httpx.post(f"{admin}/keys", content=b'{"name": "erin",}'), "the body is not valid JSON", takes)
    bad(httpx.post(f"{admin}/keys", json=None), "missing field 'name'", field="name")  # `null`: no fields
    bad(httpx.post(f"{admin}/keys", json=5), "the body must be a JSON object, not a number", takes)
    bad(httpx.post(f"{admin}/keys", json={"name": "erin", "usagePlans": "basic"}),
        "field 'usagePlans' must be a list of strings, not a string", field="usagePlans")
    bad(httpx.post(f"{admin}/keys", json={"name": "erin", "enabled": "yes"}),
        "field 'enabled' must be true or false, not a string", field="enabled")
    bad(httpx.post(f"{admin}/keys", json={"name": "erin", "plans": ["basic"]}), "unknown field 'plans'",
        field="plans")
    made = httpx.post(f"{admin}/keys", json={"name": "erin", "usagePlans": ["basic"]})
    assert made.status_code == 201, made.text
    # The endpoints that take no body answer as before.
    assert httpx.post(f"{admin}/keys/erin/disable").json()["enabled"] is False
    assert httpx.get(f"{admin}/keys/nobody").status_code == 404
    assert httpx.delete(f"{admin}/keys/erin").status_code == 200


def test_canary_errors_name_the_field(admin_gateway):
    admin = admin_gateway.admin
    url = f"{admin}/canary/shop/prod/set"
    takes = ("POST /canary/shop/prod/set takes a JSON body "
             "{percentTraffic?, deployment?, stageVariableOverrides?, useStageCache?, copyVariables?}")
    bad(httpx.post(url, content=b"percentTraffic=10"), "the body is not valid JSON", takes)
    bad(httpx.post(url, json=[10]), "the body must be a JSON object, not a list", takes)
    bad(httpx.post(url, json={"percentTraffic": "10"}), "field 'percentTraffic' must be a number, not a string",
        field="percentTraffic")
    bad(httpx.post(url, json={"percentTraffic": 150}), "'percentTraffic' must be between 0.0 and 100.0",
        field="percentTraffic")
    bad(httpx.post(url, json={"stageVariableOverrides": {"flavour": 1}}),
        "field 'stageVariableOverrides' must be an object of string values", field="stageVariableOverrides")
    bad(httpx.post(url, json={"copyVariables": "no"}), "field 'copyVariables' must be true or false",
        field="copyVariables")
    bad(httpx.post(url, json={"percent": 10}), "unknown field 'percent'", takes, field="percent")
    bad(httpx.post(f"{admin}/canary/shop/prod/promote", json={"percentTraffic": 10}),
        "unknown field 'percentTraffic'", "POST /canary/shop/prod/promote takes a JSON body {copyVariables?}")
    assert httpx.post(f"{admin}/canary/shop/prod/grow", json={}).status_code == 404
    # Good calls still work; a change that does not compile keeps its own answer.
    ok = httpx.post(url, json={"deployment": "v2", "percentTraffic": 10}, timeout=30)
    assert ok.status_code == 200, ok.text
    refused = httpx.post(url, json={"deployment": "v9"}, timeout=30)
    assert refused.status_code == 400 and refused.json()["problems"]
    assert httpx.post(f"{admin}/canary/shop/prod/rollback", timeout=30).status_code == 200


def test_admin_body_limits_are_json_errors(admin_gateway):
    admin = admin_gateway.admin
    with socket.create_connection(("127.0.0.1", admin_gateway.admin_port), timeout=10) as sock:
        sock.sendall(b"PATCH /usage HTTP/1.1\r\nhost: a\r\ncontent-length: ten\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.0 400") or data.startswith(b"HTTP/1.1 400"), data
    too_big = httpx.patch(f"{admin}/usage", content=b" " * ((1 << 20) + 1))
    assert too_big.status_code == 413 and "larger than" in too_big.json()["message"]
