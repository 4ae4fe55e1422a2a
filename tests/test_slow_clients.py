"""Slow request bodies: RELIABILITY.md §c F-27 against a real `fastgw serve`, over RSGI and ASGI.

A client that sends its head and then only part of the body must not hold the request for ever:
after `limits.bodyIdleTimeoutMs` without a byte it gets a 408 JSON gateway response and the
connection is closed. When part of a large body had already gone upstream, that upstream connection
is aborted, so the upstream never sees a finished request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.upstream import RecordingUpstream, StreamingUpstream

IDLE_MS = 600

CONFIG = """\
server: {{workers: 1, accessLog: false, interface: {interface}, limits: {{bodyIdleTimeoutMs: {idle}}}}}
apis:
  - name: slow
    type: REST
    encodedSlashes: DECODE  # what the RSGI interface can serve
    stages:
      prod: {{}}
    routes:
      - route: ANY /{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{p}}"}}
"""


@pytest.fixture
def upstream():
    server = RecordingUpstream().start()
    yield server
    server.stop()


def _stall(port: int, head: bytes, sent: bytes, wait: float = 5.0) -> tuple[bytes, float, bool]:
    """Send `head` and `sent` (part of the body), then nothing. Returns what came back, when the
    first bytes came (seconds after the last send), and whether the gateway closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + sent)
        last_send = time.monotonic()
        data = b""
        first = None
        closed = False
        try:
            while chunk := sock.recv(65536):
                first = first or time.monotonic()
                data += chunk
            closed = True
        except TimeoutError:
            pass
    return data, (first or time.monotonic()) - last_send, closed


def _head(length: int) -> bytes:
    return b"POST /prod/upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % length


@pytest.mark.reliability("F-27")
@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
@pytest.mark.parametrize(("length", "sent"), [
    (100, 10),            # a small body, read whole
    (200_000, 10),        # a large body, stalled in its first 64 KiB (nothing went upstream yet)
], ids=["small", "large-before-upstream"])
def test_stalled_body_is_408_and_closed(start_gateway, upstream, interface: str, length: int, sent: int) -> None:
    gateway = start_gateway(CONFIG.format(interface=interface, idle=IDLE_MS, upstream=upstream.address))
    data, after, closed = _stall(gateway.port, _head(length), b"x" * sent)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b'{"message":"Request Timeout"}' in data
    assert b"x-amzn-errortype: requesttimeoutexception" in data.lower()
    assert closed, "the connection stayed open after the 408"
    assert IDLE_MS / 1000 * 0.8 <= after < IDLE_MS / 1000 + 2.0
    assert upstream.connections == 0  # nothing of the request went upstream
    assert httpx.get(f"{gateway.url}/prod/after", timeout=5).status_code == 200  # and the worker serves on


@pytest.mark.reliability("F-27")
@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_stalled_streamed_body_aborts_the_upstream_request(start_gateway, upstream, interface: str) -> None:
    gateway = start_gateway(CONFIG.format(interface=interface, idle=IDLE_MS, upstream=upstream.address))
    sent = 150_000  # past the first 64 KiB: the request head and this much went upstream
    data, _, closed = _stall(gateway.port, _head(400_000), b"y" * sent)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert closed
    deadline = time.monotonic() + 5
    while upstream.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.open_connections == 0, "the half-sent upstream request was left open"
    assert upstream.requests == []  # the upstream never saw a finished request
    raw = upstream.all_bytes()
    assert raw.startswith(b"POST /upload HTTP/1.1\r\n")
    assert 65536 <= len(raw.split(b"\r\n\r\n", 1)[1]) <= sent


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_a_slow_but_steady_body_is_not_cut_off(start_gateway, upstream, interface: str) -> None:
    """The timeout is between two reads: a streamed body whose pieces come more often than that goes
    through, however long the whole takes."""
    gateway = start_gateway(CONFIG.format(interface=interface, idle=IDLE_MS, upstream=upstream.address))
    piece = b"z" * 40_000
    pieces = 5  # 200 kB in ~1.2 s: twice the idle timeout in all
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(_head(len(piece) * pieces))
        for _ in range(pieces):
            sock.sendall(piece)
            time.sleep(IDLE_MS / 1000 / 2.5)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) == 0:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert len(upstream.requests) == 1
    assert upstream.requests[0].body == piece * pieces


def _validate(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_body_idle_timeout_is_checked_with_its_place(tmp_path) -> None:
    result = _validate(tmp_path, CONFIG.format(interface="rsgi", idle=5, upstream="127.0.0.1:9"))
    assert result.returncode != 0
    assert "server.limits.bodyIdleTimeoutMs (line 1): must be between 100 and 600000; got 5" in result.stderr


def test_keep_alive_idle_setting_says_it_is_not_applied(tmp_path) -> None:
    """granian has no keep-alive idle timer of its own: hyper's header-read timer closes idle
    keep-alive connections. A config that sets keepAliveIdleMs loads, with a warning saying so."""
    text = CONFIG.format(interface="rsgi", idle=IDLE_MS, upstream="127.0.0.1:9")
    result = _validate(tmp_path, text.replace("limits: {", "limits: {keepAliveIdleMs: 5000, "))
    assert result.returncode == 0, result.stderr
    assert "warning: server.limits.keepAliveIdleMs is not applied" in result.stderr
    assert "warning" not in _validate(tmp_path, text).stderr


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout(start_gateway, upstream,
                                                                                interface: str) -> None:
    """What the warning above says: the wait for the next request on a kept-alive connection is cut
    by headerReadTimeoutMs."""
    text = CONFIG.format(interface=interface, idle=IDLE_MS, upstream=upstream.address)
    gateway = start_gateway(text.replace("limits: {", "limits: {headerReadTimeoutMs: 700, "))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /prod/x HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            pytest.fail("the idle keep-alive connection was kept open for 10 s")
        idle = time.monotonic() - answered
    assert 0.5 <= idle < 3.0


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_a_client_that_leaves_mid_stream_ends_the_upstream_exchange(start_gateway, interface: str) -> None:
    """nginx's default (proxy_ignore_client_abort off): when the client closes the connection during
    a streamed response, the upstream connection is dropped, not read to its end for nobody. The
    request counts as 499 in the access log, with no traceback in the worker's log."""
    size = 400 * 1024 * 1024
    streaming = StreamingUpstream(size).start()
    try:
        text = CONFIG.format(interface=interface, idle=IDLE_MS, upstream=streaming.address)
        gateway = start_gateway(text.replace("accessLog: false", "accessLog: true"))
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(b"GET /prod/big HTTP/1.1\r\nHost: a\r\n\r\n")
            got = 0
            while got < 2 * 1024 * 1024:
                got += len(sock.recv(65536))
        deadline = time.monotonic() + 10
        while not streaming.cut_short and time.monotonic() < deadline:
            time.sleep(0.05)
        assert streaming.cut_short == 1 and streaming.finished == 0
        assert streaming.written < size // 4  # what the socket buffers held, not the whole body
        deadline = time.monotonic() + 5
        while '"status":499' not in gateway.stdout() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert '"status":499' in gateway.stdout()
        assert "Traceback" not in gateway.stderr()
    finally:
        streaming.stop()


STALL_BOUND_MIB = 32  # what one stalled reader may cost a worker (issue 18)


def _rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _read_until(sock: socket.socket, amount: int) -> bytes:
    data = b""
    while len(data) < amount:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _warm(gateway) -> float:
    """The worker's RSS once it has served a streamed response (its buffers, pools and caches made)."""
    worker = gateway.worker_pids()[0]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /prod/big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        while sock.recv(1 << 20):
            pass
    return _rss_mib(worker)


@pytest.mark.reliability("F-28")
@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_a_client_that_stops_reading_a_stream_is_cut_off(start_gateway, interface: str) -> None:
    """RELIABILITY.md F-28: a client that keeps its connection but reads nothing more of a streamed
    response holds neither the upstream exchange nor its buffers for ever. Once sending has waited
    limits.sendIdleTimeoutMs, the response is aborted and the upstream connection dropped; the worker's
    memory stays flat meanwhile (back-pressure, not buffering: granian's RSGI stream has none of its
    own, fastgw/backpressure.py)."""
    size = 400 * 1024 * 1024
    streaming = StreamingUpstream(size).start()
    try:
        text = CONFIG.format(interface=interface, idle=IDLE_MS, upstream=streaming.address)
        gateway = start_gateway(text.replace("limits: {", "limits: {sendIdleTimeoutMs: 1000, "))
        worker = gateway.worker_pids()[0]
        streaming.size = 8 * 1024 * 1024
        before = _warm(gateway)
        streaming.size, streaming.finished = size, 0
        peak = before
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /prod/big HTTP/1.1\r\nHost: a\r\n\r\n")
            got = len(_read_until(sock, 1024 * 1024))
            # now read nothing: the gateway's sends wait, then time out
            deadline = time.monotonic() + 15
            while not streaming.cut_short and time.monotonic() < deadline:
                peak = max(peak, _rss_mib(worker))
                time.sleep(0.05)
            peak = max(peak, _rss_mib(worker))
            print(f"{interface}: worker RSS {before:.1f} MiB, +{peak - before:.1f} MiB for the stalled reader")
            assert peak - before <= STALL_BOUND_MIB, f"the worker buffered the stream: +{peak - before:.0f} MiB"
            assert streaming.cut_short == 1 and streaming.finished == 0
            assert streaming.written < size // 4
            # the client's connection is ended: what it reads now runs out, without a clean end
            sock.settimeout(5)
            rest = b""
            try:
                while chunk := sock.recv(1 << 20):
                    rest += chunk
            except ConnectionResetError:
                pass
            assert got + len(rest) < size
    finally:
        streaming.stop()


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_a_stalled_stream_continues_when_the_client_reads_again(start_gateway, interface: str) -> None:
    """A reader that pauses (for less than sendIdleTimeoutMs) costs the worker a bounded amount of memory
    meanwhile, and then gets the whole response."""
    size = 64 * 1024 * 1024
    streaming = StreamingUpstream(8 * 1024 * 1024).start()
    try:
        text = CONFIG.format(interface=interface, idle=IDLE_MS, upstream=streaming.address)
        gateway = start_gateway(text.replace("limits: {", "limits: {sendIdleTimeoutMs: 10000, "))
        worker = gateway.worker_pids()[0]
        before = _warm(gateway)
        streaming.size, streaming.finished = size, 0
        peak = before
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(b"GET /prod/big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = _read_until(sock, 1024 * 1024)
            paused = time.monotonic()
            while time.monotonic() - paused < 2.0:  # the pause: read nothing, watch the worker
                peak = max(peak, _rss_mib(worker))
                time.sleep(0.05)
            print(f"{interface}: worker RSS {before:.1f} MiB, +{peak - before:.1f} MiB during the pause")
            assert peak - before <= STALL_BOUND_MIB, f"the worker buffered the stream: +{peak - before:.0f} MiB"
            assert streaming.finished == 0 and streaming.written < size // 2
            received = len(data)
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        head, _, _ = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert received - len(head) - 4 == size
        assert streaming.finished == 1
    finally:
        streaming.stop()


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
@pytest.mark.parametrize("size", [400 * 1024 * 1024, 200 * 1024], ids=["streamed", "read-whole"])
def test_a_stalled_http2_client_with_many_streams_is_bounded(start_gateway, interface: str, size: int) -> None:
    """HTTP/2 (cleartext, prior knowledge) multiplexes streams on one connection, and granian waits for
    a stalled HTTP/2 stream on neither interface: streamed responses are paced on the connection's
    socket, and a connection has at most 32 streams at once, so responses read whole (up to 256 KiB,
    handed to granian at once) are bounded too. A client that opens 64 streams and reads nothing costs
    the worker at most STALL_BOUND_MIB; its streamed responses end at sendIdleTimeoutMs."""
    import h2.config
    import h2.connection

    streaming = StreamingUpstream(8 * 1024 * 1024).start()
    try:
        text = CONFIG.format(interface=interface, idle=IDLE_MS, upstream=streaming.address)
        gateway = start_gateway(text.replace("limits: {", "limits: {sendIdleTimeoutMs: 1500, "))
        worker = gateway.worker_pids()[0]
        before = _warm(gateway)
        streaming.size, streaming.finished = size, 0
        peak = before
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            for _ in range(64):
                conn.send_headers(conn.get_next_available_stream_id(), [
                    (":method", "GET"), (":path", "/prod/big"), (":scheme", "http"), (":authority", "a")],
                    end_stream=True)
            sock.sendall(conn.data_to_send())
            # read nothing: no WINDOW_UPDATE either, so each stream gets 64 KiB through at most
            deadline = time.monotonic() + (15 if size > 256 * 1024 else 2)
            while streaming.cut_short < 32 and time.monotonic() < deadline:
                peak = max(peak, _rss_mib(worker))
                time.sleep(0.05)
            peak = max(peak, _rss_mib(worker))
            print(f"{interface}: worker RSS {before:.1f} MiB, +{peak - before:.1f} MiB for the stalled HTTP/2 client")
            assert peak - before <= STALL_BOUND_MIB, f"the worker buffered the streams: +{peak - before:.0f} MiB"
            if size > 256 * 1024:
                assert streaming.cut_short >= 32 and streaming.finished == 0
            else:
                assert streaming.finished == 32  # 32 streams at once; the others wait for one
    finally:
        streaming.stop()
