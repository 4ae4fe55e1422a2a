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
    uvloop = pytest.importorskip("uvloop")
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

