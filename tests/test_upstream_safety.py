"""Upstream connection safety (issue 22): no request desync, whatever an upstream does.

A real `fastgw serve` (over ASGI and RSGI) proxies to a raw-socket scripted upstream
(tests/support/scripted.py) that records every byte and every request head *as it read it*. Each
test makes the upstream misbehave once (answer before reading the body, frame badly, say more than
it was asked), then sends follow-up requests from another client to the same upstream. The
invariants: no recorded request ever starts with bytes other than a request line the gateway meant
to send; every follow-up gets its own response; the faulty connection is closed by the gateway and
never carries another request; the fault is counted in fastgw_upstream_framing_errors_total.
The last section checks the client side: a request whose body the gateway did not read completely
closes the client connection, so the rest of that body is never read as a next request.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from support.gateway import GatewayProcess
from support.rawclient import parse_responses
from support.scripted import Connection, Head, ScriptedUpstream, respond, wait_for, well_behaved

MAX_BODY = 1024 * 1024

CONFIG = """\
server: {{workers: 1, accessLog: false, interface: {interface}, limits: {{maxBodyBytes: {max_body}}}}}
apis:
  - name: safety
    type: REST
    encodedSlashes: DECODE  # what both interfaces serve
    stages:
      prod: {{}}
    routes:
      - route: ANY /s/{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{p}}", timeoutInMillis: 3000}}
"""


@dataclass
class Safety:
    gateway: GatewayProcess
    upstream: ScriptedUpstream
    interface: str

    def url(self, target: str) -> str:
        return f"{self.gateway.url}/prod/s{target}"

    def script(self, fault_target: str, behaviour: Callable[[Connection, Head], bool]) -> None:
        """`behaviour` for the fault's target, a well-behaved upstream for everything else."""
        def dispatch(conn: Connection, head: Head) -> bool:
            if head.target == fault_target:
                return behaviour(conn, head)
            return well_behaved(conn, head)

        self.upstream.behaviour = dispatch

    def faults(self, kind: str) -> float:
        text = httpx.get(f"{self.gateway.admin}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("fastgw_upstream_framing_errors_total{") and f'kind="{kind}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def follow_ups(self, n: int = 4) -> list[str]:
        """Requests from another client to the same upstream: each must get its own answer."""
        targets = []
        with httpx.Client(timeout=10) as client:
            for i in range(n):
                target = f"/next-{i}-{uuid.uuid4().hex[:8]}"
                method = "POST" if i % 2 else "GET"
                response = client.request(method, self.url(target), content=b"{}" if method == "POST" else None)
                assert response.status_code == 200, (target, response.status_code, response.text[:200])
                assert response.text == f"ok:{target}", f"{target} got another request's response: {response.text!r}"
                targets.append(target)
        return targets

    def check(self, fault_target: str) -> None:
        # Every test's fault and follow-up targets are requests the gateway meant (the upstream lives
        # as long as the module): never /smuggled, never a piece of a body.
        self.upstream.assert_no_desync(lambda target: target.startswith(("/next-", "/fault-")))


@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def safety(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Safety]:
    upstream = ScriptedUpstream().start()
    config = CONFIG.format(interface=request.param, upstream=upstream.address, max_body=MAX_BODY)
    gateway = GatewayProcess(config, tmp_path_factory.mktemp(f"safety-{request.param}"))
    try:
        gateway.start()
        yield Safety(gateway, upstream, request.param)
    finally:
        gateway.stop()  # by PID (and its process group), in GatewayProcess.stop
        upstream.stop()


@pytest.fixture(autouse=True)
def _reset_behaviour(safety: Safety, request: pytest.FixtureRequest) -> Iterator[None]:
    safety.upstream.behaviour = well_behaved
    request.node.fastgw_gateways = [safety.gateway]
    yield
    safety.upstream.behaviour = well_behaved


def fault_target(name: str) -> str:
    return f"/fault-{name}-{uuid.uuid4().hex[:8]}"


# -- reuse still works for well-behaved upstreams ----------------------------------------------------
def test_a_well_behaved_upstream_connection_is_reused(safety: Safety) -> None:
    mark = safety.upstream.mark()
    targets = safety.follow_ups(6)
    used = [c for c in safety.upstream.connections[mark:] if any(h.target in targets for h in c.heads)]  # new ones
    # One connection carried them all (or a reused pooled one from an earlier test).
    carriers = {id(c) for c in safety.upstream.connections if any(h.target in targets for h in c.heads)}
    assert len(carriers) == 1, f"{len(carriers)} connections for 6 sequential requests (new: {len(used)})"


# -- answering before the request ended ------------------------------------------------------------
def answer_early(status: int, continue_reading: bool = True) -> Callable[[Connection, Head], bool]:
    """Answer as soon as the head is in, without reading the body, and keep the connection: the
    upstream then reads its next request from wherever it stopped (the bug report's upstream)."""
    def behaviour(conn: Connection, head: Head) -> bool:
        respond(conn, status, b"early")
        return continue_reading

    return behaviour


@pytest.mark.reliability("F-11")
@pytest.mark.parametrize("size", [200 * 1024, 1024])
def test_an_early_413_is_relayed_and_its_connection_never_reused(safety: Safety, size: int) -> None:
    # The reproduced bug: 413 after the head of a POST, body unread, connection kept open; fastgw
    # relayed the 413, then sent the next client's GET on that connection after the body.
    target = fault_target("early-413")
    safety.script(target, answer_early(413))
    response = httpx.post(safety.url(target), content=b"x" * size, timeout=10)
    assert response.status_code == 413 and response.text == "early"
    safety.follow_ups()
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5), "the connection that answered early was left open"
    assert conn.heads[-1].target == target, "the early-answered connection carried another request"
    safety.check(target)


@pytest.mark.reliability("F-11")
def test_a_response_while_the_body_is_still_coming_stops_the_upload(safety: Safety) -> None:
    # A 200 (not an error) before the body ended: the gateway stops sending, relays it, closes both
    # the upstream connection and the client's (the rest of the client's body is never read).
    target = fault_target("early-200")
    safety.script(target, answer_early(200))
    size = 400 * 1024
    smuggled = b"GET /prod/s/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    head = (f"POST /prod/s{target} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", safety.gateway.port), timeout=10)
    try:
        sock.sendall(head + b"y" * (100 * 1024))
        wait_for(lambda: any(h.target == target for h in safety.upstream.heads()) and
                 safety.upstream.connection_with(target).answered, what="the early answer")
        data = _read_response(sock)
        responses, _ = parse_responses(data)
        assert responses and responses[0].status == 200 and responses[0].body == b"early", data[:300]
        rest = smuggled + b"y" * (size - 100 * 1024 - len(smuggled))
        _send_quietly(sock, rest)
        data += _read_until_closed(sock)
    finally:
        sock.close()
    responses, _ = parse_responses(data)
    assert [r.status for r in responses] == [200], data[:500]
    assert responses[0].header("connection") == "close"
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5), "the upstream connection that answered early was left open"
    assert len(conn.data) < size, "the whole body was sent after the upstream had answered"
    safety.follow_ups()
    assert not any(h.target.endswith("smuggled") for h in safety.upstream.heads())
    safety.check(target)


def test_connection_close_from_the_upstream_is_honoured(safety: Safety) -> None:
    target = fault_target("conn-close")

    def says_close_but_stays(conn: Connection, head: Head) -> bool:
        conn.read_body(head)
        respond(conn, 200, b"ok:" + head.target.encode(), ("Connection: close",))
        return True  # ...and keeps reading, as if it had not said so

    safety.script(target, says_close_but_stays)
    assert httpx.get(safety.url(target), timeout=10).text == f"ok:{target}"
    safety.follow_ups()
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5) and conn.heads[-1].target == target
    safety.check(target)


# -- bytes beyond the response --------------------------------------------------------------------------
SECOND = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!"


def test_bytes_after_a_response_close_the_connection(safety: Safety) -> None:
    target = fault_target("after")

    def two_responses(conn: Connection, head: Head) -> bool:
        conn.read_body(head)
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + SECOND)
        return True

    safety.script(target, two_responses)
    before = safety.faults("after_response")
    response = httpx.get(safety.url(target), timeout=10)
    assert response.status_code == 200 and response.text == "ok"
    safety.follow_ups()
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5) and conn.heads[-1].target == target
    wait_for(lambda: safety.faults("after_response") > before, what="the after_response count")
    safety.check(target)


def test_bytes_on_an_idle_pooled_connection_close_it(safety: Safety) -> None:
    # A response to a request that was never sent: it arrives while the connection is idle in the
    # pool, and must never be handed to the next exchange.
    target = fault_target("idle")
    go = threading.Event()

    def stray_response_later(conn: Connection, head: Head) -> bool:
        conn.read_body(head)
        respond(conn, 200, b"ok:" + head.target.encode())
        go.wait(5)
        conn.send(SECOND)
        return True

    safety.script(target, stray_response_later)
    before = safety.faults("unsolicited")
    assert httpx.get(safety.url(target), timeout=10).text == f"ok:{target}"
    go.set()  # the response was relayed: the connection is idle in the pool now
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5), "a connection that spoke unasked stayed in the pool"
    wait_for(lambda: safety.faults("unsolicited") > before, what="the unsolicited count")
    safety.follow_ups()
    assert conn.heads[-1].target == target
    safety.check(target)


# -- framing faults: 502, connection closed, counted ----------------------------------------------------
FRAMING = {
    "conflicting-cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "content_length"),
    "duplicate-cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "content_length"),
    "cl-list": (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", "content_length"),
    "cl-and-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                  "transfer_encoding"),
    "te-gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello", "transfer_encoding"),
    "te-gzip-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                        "transfer_encoding"),
    "te-chunked-gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                        "transfer_encoding"),
    "obs-fold": (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello", "obs_fold"),
    "bare-lf": (b"HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 5\r\n\r\nhello", "bare_cr_lf"),
    "bare-cr": (b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 5\r\n\r\nhello", "bare_cr_lf"),
    "http2-status-line": (b"HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", "status_line"),
    "http09-like": (b"hello, no status line\r\n\r\n", "status_line"),
    "switching-protocols": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                            "switching_protocols"),
}


@pytest.mark.reliability("F-07")
@pytest.mark.parametrize("name", list(FRAMING))
def test_a_framing_fault_is_a_502_and_closes_the_connection(safety: Safety, name: str) -> None:
    payload, kind = FRAMING[name]
    target = fault_target(name)

    def frames_badly(conn: Connection, head: Head) -> bool:
        conn.read_body(head)
        conn.send(payload + b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!")
        return True  # keeps the connection: closing it is up to the gateway

    safety.script(target, frames_badly)
    before = safety.faults(kind)
    response = httpx.get(safety.url(target), timeout=10)
    assert response.status_code == 502 and response.json() == {"message": "Bad Gateway"}
    safety.follow_ups()
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5) and conn.heads[-1].target == target
    wait_for(lambda: safety.faults(kind) > before, what=f"the {kind} count")
    safety.check(target)


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n",
                                     b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"])
def test_interim_responses_are_absorbed_and_the_connection_stays_usable(safety: Safety, interim: bytes) -> None:
    target = fault_target("interim")

    def with_interim(conn: Connection, head: Head) -> bool:
        conn.read_body(head)
        conn.send(interim)
        respond(conn, 200, b"ok:" + head.target.encode())
        return True

    safety.script(target, with_interim)
    response = httpx.post(safety.url(target), content=b"{}", timeout=10)
    assert response.status_code == 200 and response.text == f"ok:{target}"
    safety.follow_ups()
    conn = safety.upstream.connection_with(target)
    assert conn.heads[-1].target != target, "a connection after a 1xx + 200 exchange was not reused"
    safety.check(target)


NO_BODY = {
    # name: (method, what the upstream writes, status to the client, fault kind)
    "204-with-body": ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\nsmuggled!", 204, "body_not_allowed"),
    "chunked-204": ("GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nsmuggled!\r\n0\r\n\r\n",
                    204, "body_not_allowed"),
    "304-with-body": ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\nsmuggled!", 304, "after_response"),
    "head-with-body": ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!", 200, "after_response"),
}


@pytest.mark.reliability("F-07")
@pytest.mark.parametrize("name", list(NO_BODY))
def test_a_body_where_none_is_allowed_is_dropped_and_closes(safety: Safety, name: str) -> None:
    method, payload, status, kind = NO_BODY[name]
    target = fault_target(name)

    def body_anyway(conn: Connection, head: Head) -> bool:
        conn.read_body(head)
        conn.send(payload)
        return True

    safety.script(target, body_anyway)
    before = safety.faults(kind)
    response = httpx.request(method, safety.url(target), timeout=10)
    assert response.status_code == status and response.content == b""
    safety.follow_ups()
    conn = safety.upstream.connection_with(target)
    assert conn.closed.wait(5) and conn.heads[-1].target == target
    wait_for(lambda: safety.faults(kind) > before, what=f"the {kind} count")
    safety.check(target)


# -- client side: a body the gateway did not read completely closes the client connection -------------
SMUGGLED = b"GET /prod/s/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def _read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        responses, _ = parse_responses(data)
        if responses and responses[0].complete:
            return data
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the client connection was left open; got {data[:300]!r}") from None
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the client connection was left open; got {data[:300]!r}")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the gateway closed first: fine


def _early_answer(safety: Safety, head: bytes, first: bytes, rest: bytes, status: int) -> None:
    """Send a head and part of a body; the gateway answers `status` before reading the rest; then the
    rest, which begins with a complete request, is sent: it must never be read as one."""
    sock = socket.create_connection(("127.0.0.1", safety.gateway.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    try:
        sock.sendall(head + first)
        data = _read_response(sock)
        responses, _ = parse_responses(data)
        assert responses and responses[0].status == status, data[:300]
        _send_quietly(sock, rest)
        data += _read_until_closed(sock)
    finally:
        sock.close()
    responses, leftover = parse_responses(data)
    assert [r.status for r in responses] == [status], f"more than one response: {data[:500]!r}"
    assert responses[0].header("connection") == "close", responses[0].headers
    assert not any(h.target.endswith("smuggled") for h in safety.upstream.heads()), "a body's rest became a request"


def _post_head(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


@pytest.mark.reliability("FR-23")
def test_no_route_for_a_post_closes_the_client_connection(safety: Safety) -> None:
    rest = SMUGGLED + b"z" * 1000
    _early_answer(safety, _post_head("/prod/nowhere", 1000 + len(rest)), b"z" * 1000, rest, 404)


@pytest.mark.reliability("FR-23")
def test_unknown_stage_for_a_post_closes_the_client_connection(safety: Safety) -> None:
    rest = SMUGGLED + b"z" * 1000
    _early_answer(safety, _post_head("/nostage/x", 1000 + len(rest)), b"z" * 1000, rest, 404)


@pytest.mark.reliability("SZ-04")
def test_a_content_length_over_the_limit_closes_the_client_connection(safety: Safety) -> None:
    _early_answer(safety, _post_head("/prod/s/big", MAX_BODY + 1), b"z" * 1000, SMUGGLED, 413)


@pytest.mark.reliability("SZ-05")
def test_a_chunked_body_over_the_limit_closes_the_client_connection(safety: Safety) -> None:
    head = b"POST /prod/s/big-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"%x\r\n%s\r\n" % (64 * 1024, b"z" * (64 * 1024))
    first = piece * (MAX_BODY // (64 * 1024) + 2)
    # the rest: a chunk that holds a request, then the end of the body
    rest = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    _early_answer(safety, head, first, rest, 413)


def test_an_upstream_that_fails_mid_body_closes_the_client_connection(safety: Safety) -> None:
    target = fault_target("reset-mid-body")

    def reset(conn: Connection, head: Head) -> bool:
        conn.read_exact(1000)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.sock.close()
        return False

    safety.script(target, reset)
    size = 300 * 1024
    rest = SMUGGLED + b"z" * (size - 100 * 1024 - len(SMUGGLED))
    # 502: the upstream went away before answering (the body is not sent again: POST).
    _early_answer(safety, _post_head(f"/prod/s{target}", size), b"z" * (100 * 1024), rest, 502)


def test_the_metric_is_exposed(safety: Safety) -> None:
    text = httpx.get(f"{safety.gateway.admin}/metrics", timeout=5).text
    assert re.search(r"^# TYPE fastgw_upstream_framing_errors_total counter$|"
                     r"^# TYPE fastgw_upstream_framing_errors counter$", text, re.M), text[:500]
