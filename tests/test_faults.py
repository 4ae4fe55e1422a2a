"""Upstream faults: RELIABILITY.md §c F-01…F-08 against a real `fastgw serve`.

One gateway serves four routes: a healthy upstream, a closed port, a "blackhole" (a listener whose
accept queue is full, so SYNs go unanswered) and a scripted RecordingUpstream whose behaviour each
test sets (hang, reset, truncated or invalid responses). Every test checks the status and message
fastgw answers with, that no client connection hangs (every read is bounded), the no-loss invariant
(how many copies of the request the upstream saw), that a broken upstream connection is never
reused, and that the gateway still serves normal requests afterwards.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from support.gateway import GatewayProcess
from support.rawclient import send_raw
from support.upstream import Action, Recorded, RecordingUpstream

CONNECT_TIMEOUT_MS = 300
TIMEOUT_MS = 500


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Blackhole:
    """A listener with backlog 0 whose accept queue is filled and never drained: the kernel drops
    further SYNs, so a connect() to it hangs until the connector gives up (F-02 on loopback, no root
    needed). Kernels differ in how many connections a backlog of 0 queues, so connections are added
    until a new one hangs; a kernel on which none ever does fails the set-up (never a silent skip)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(64):
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", self.port))
            except (TimeoutError, OSError):
                probe.close()
                return  # the queue is full: SYNs are dropped from now on
            self.fillers.append(probe)  # accepted into the queue: it keeps a place there
        self.close()
        raise RuntimeError("64 connections to a backlog-0 listener were all accepted: this kernel never drops "
                           "SYNs on loopback, so the connect timeout (F-02) cannot be tested here")

    def works(self) -> bool:
        """True when a new connect() really hangs."""
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", self.port))
        except (TimeoutError, OSError):
            return True
        finally:
            probe.close()
        return False

    def close(self) -> None:
        for sock in self.fillers:
            sock.close()
        self.listener.close()


CONFIG = """\
server: {{workers: 1, accessLog: false, interface: {interface}}}
apis:
  - name: faults
    type: REST
    encodedSlashes: DECODE  # what both interfaces serve
    stages:
      prod: {{}}
    routes:
      - route: ANY /ok/{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{ok}/{{p}}"}}
      - route: ANY /refused/{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://127.0.0.1:{refused}/{{p}}"}}
      - route: ANY /blackhole/{{p+}}
        integration:
          type: HTTP_PROXY
          uri: "http://127.0.0.1:{blackhole}/{{p}}"
          connectTimeoutInMillis: {connect_timeout}
      - route: ANY /script/{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{script}/{{p}}", timeoutInMillis: {timeout}}}
    gatewayResponses:
      DEFAULT_5XX: {{headers: {{x-served-by: fastgw}}}}
"""


@dataclass
class Faults:
    gateway: GatewayProcess
    ok: RecordingUpstream
    script: RecordingUpstream
    blackhole: Blackhole
    client: httpx.Client

    def get(self, path: str, method: str = "GET", content: bytes | None = None) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.client.request(method, f"{self.gateway.url}{path}", content=content)
        return response, time.perf_counter() - started

    def still_serving(self) -> None:
        """A normal request through the healthy route and, scripted back to normal, the faulty one."""
        self.script.behaviour = lambda request: Action()
        for path in ("/prod/ok/after", "/prod/script/after"):
            response, _ = self.get(path)
            assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:200]}"
            assert response.json()["target"] == "/after"
        assert self.gateway.proc is not None and self.gateway.proc.poll() is None

    def copies(self, since: int, target: str) -> list[Recorded]:
        return [r for r in self.script.requests[since:] if r.target == target]

    def connection_of(self, sizes: list[int]) -> bytearray:
        """The one scripted-upstream connection that received bytes since `sizes` was taken."""
        raws = list(self.script.raw_connections)
        used = [raw for i, raw in enumerate(raws) if len(raw) > (sizes[i] if i < len(sizes) else 0)]
        assert len(used) == 1, f"{len(used)} upstream connections were used"
        return used[0]

    def closed_soon(self, raw: bytearray, limit: float = 1.5) -> bool:
        """Whether the scripted upstream's connection that recorded `raw` gets closed in time."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not any(getattr(t.get_protocol(), "raw", None) is raw for t in list(self.script.transports)):
                return True
            time.sleep(0.01)
        return False


@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def faults(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Faults]:
    ok = RecordingUpstream().start()
    script = RecordingUpstream().start()
    blackhole = Blackhole()
    config = CONFIG.format(ok=ok.address, refused=closed_port(), blackhole=blackhole.port, script=script.address,
                           connect_timeout=CONNECT_TIMEOUT_MS, timeout=TIMEOUT_MS, interface=request.param)
    gateway = GatewayProcess(config, tmp_path_factory.mktemp("faults"))
    client = httpx.Client(timeout=10)
    try:
        gateway.start()
        yield Faults(gateway, ok, script, blackhole, client)
    finally:
        client.close()
        gateway.stop()
        ok.stop()
        script.stop()
        blackhole.close()


@pytest.fixture(autouse=True)
def _normal_script(faults: Faults) -> Iterator[None]:
    faults.script.behaviour = lambda request: Action()
    yield
    faults.script.behaviour = lambda request: Action()


def assert_gateway_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.json() == {"message": message}
    assert response.headers["x-served-by"] == "fastgw"
    assert response.headers.get("x-amzn-requestid")
    assert "Traceback" not in response.text


# -- F-01: connection refused ------------------------------------------------------------------
@pytest.mark.reliability("F-01")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_f01_refused_is_fast_502(faults: Faults, method: str) -> None:
    faults.get("/prod/refused/warm", method)  # the first request of a worker may pay for imports
    response, elapsed = faults.get("/prod/refused/x", method, b"{}" if method == "POST" else None)
    assert_gateway_error(response, 502, "Bad Gateway")
    assert elapsed < 2.0, f"502 took {elapsed:.3f}s"  # a bound (no connect-timeout wait), not a speed check
    faults.still_serving()


# -- F-02: SYNs blackholed --------------------------------------------------------------------
@pytest.mark.reliability("F-02")
def test_f02_connect_timeout_is_504_after_the_connect_timeout(faults: Faults) -> None:
    assert faults.blackhole.works(), "the blackhole's accept queue no longer drops SYNs"
    response, elapsed = faults.get("/prod/blackhole/x")
    assert_gateway_error(response, 504, "Endpoint request timed out")
    timeout = CONNECT_TIMEOUT_MS / 1000
    assert timeout * 0.9 <= elapsed < timeout + 3.0, f"504 after {elapsed:.3f}s, connect timeout {timeout}s"
    faults.still_serving()


# -- F-03: accepted, never answered -----------------------------------------------------------------
@pytest.mark.reliability("F-03")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_f03_no_answer_is_504_and_the_connection_is_closed(faults: Faults, method: str) -> None:
    faults.script.behaviour = lambda request: Action(hang=True)
    since = len(faults.script.requests)
    sizes = [len(raw) for raw in faults.script.raw_connections]
    target = f"/hang-{method.lower()}"
    response, elapsed = faults.get(f"/prod/script{target}", method, b"{}" if method == "POST" else None)
    assert_gateway_error(response, 504, "Endpoint request timed out")
    timeout = TIMEOUT_MS / 1000
    assert timeout * 0.9 <= elapsed < timeout + 3.0, f"504 after {elapsed:.3f}s, timeout {timeout}s"
    # No-loss: a timed-out request is never sent again (the upstream may have acted on it).
    assert len(faults.copies(since, target)) == 1
    # The hung upstream connection is closed, not returned to the pool.
    hung = faults.connection_of(sizes)
    hung_size = len(hung)
    assert faults.closed_soon(hung), "the timed-out upstream connection was left open"
    faults.still_serving()
    assert len(hung) == hung_size, "the timed-out connection was reused"


# -- F-04: response cut short after the headers ------------------------------------------------------
TRUNCATED = {
    "content-length-short": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000,
    "content-length-short-large": b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n" + b"x" * 1_000_000,
    "chunked-no-last-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
}


@pytest.mark.reliability("F-04")
@pytest.mark.parametrize("variant", list(TRUNCATED))
def test_f04_truncated_response_is_never_a_clean_response(faults: Faults, variant: str) -> None:
    faults.script.behaviour = lambda request: Action(raw=TRUNCATED[variant], close=True)
    result = send_raw(faults.gateway.port, b"GET /prod/script/cut HTTP/1.1\r\nHost: a\r\n\r\n", wait_close=1.0,
                      timeout=3.0)
    if not result.responses:
        # The upstream's cut arrived before the response head was flushed (RSGI: the adapter shuts the
        # socket down, and granian may not have written the head yet): the client sees a connection
        # closed with no response at all, which is not a clean response either.
        assert result.closed and not result.data, result.describe()
        assert not result.has_traceback()
        faults.still_serving()
        return
    first = result.responses[0]
    if first.status in (502, 504):
        assert first.complete  # the gateway noticed before answering: a clean gateway error is fine
    else:
        # Headers already went out: the only honest signal left is an aborted connection.
        assert not first.complete, f"a truncated upstream response reached the client as complete: {result.describe()}"
        assert result.closed, "the client connection was left open after an aborted response"
    assert not result.has_traceback()
    faults.still_serving()


@pytest.mark.reliability("F-04")
def test_f04_a_small_response_cut_short_is_a_clean_502(faults: Faults) -> None:
    # A response with a Content-Length up to 256 KiB is read whole before anything is relayed
    # (fastgw/upstream.py BUFFER_RESPONSE_BYTES), so a cut is noticed in time for a gateway error.
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 10
    faults.script.behaviour = lambda request: Action(raw=cut, close=True)
    response, _ = faults.get("/prod/script/cut-small")
    assert_gateway_error(response, 502, "Bad Gateway")
    faults.still_serving()


# -- F-06: reset before the response headers ----------------------------------------------------------
@pytest.mark.reliability("F-06")
def test_f06_reset_get_is_502_after_exactly_one_retry(faults: Faults) -> None:
    faults.script.behaviour = lambda request: Action(reset=True)
    since = len(faults.script.requests)
    response, elapsed = faults.get("/prod/script/reset-get")
    assert_gateway_error(response, 502, "Bad Gateway")
    assert elapsed < 3.0  # a bound: no timeout was waited for
    copies = faults.copies(since, "/reset-get")
    assert len(copies) == 2, f"idempotent request: 1 retry expected, upstream saw {len(copies)} copies"
    faults.still_serving()


@pytest.mark.reliability("F-06")
def test_f06_reset_post_is_502_and_never_retried(faults: Faults) -> None:
    faults.script.behaviour = lambda request: Action(reset=True)
    since = len(faults.script.requests)
    response, _ = faults.get("/prod/script/reset-post", "POST", b'{"order": 1}')
    assert_gateway_error(response, 502, "Bad Gateway")
    assert len(faults.copies(since, "/reset-post")) == 1, "a POST was sent twice"
    faults.still_serving()


@pytest.mark.reliability("F-06")
def test_f06_retry_that_succeeds_is_transparent(faults: Faults) -> None:
    lock = threading.Lock()
    seen: list[str] = []

    def reset_first(request: Recorded) -> Action:
        with lock:
            seen.append(request.target)
            first = seen.count(request.target) == 1
        return Action(reset=True) if first else Action()

    faults.script.behaviour = reset_first
    since = len(faults.script.requests)
    response, _ = faults.get("/prod/script/flaky")
    assert response.status_code == 200 and response.json()["target"] == "/flaky"
    # No-loss: answered once to the client, at most 1 + 1 retry copies upstream.
    assert len(faults.copies(since, "/flaky")) == 2
    faults.still_serving()


# -- F-07 / F-08: invalid upstream responses ------------------------------------------------------------
INVALID = {
    "F-07-not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "F-07-cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "F-07-cl-abc": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
    "F-07-te-chunked-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "F-07-bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
    "F-07-two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "F-08-101-fields": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101))
    + b"Content-Length: 0\r\n\r\n",
    "F-08-headers-over-60k": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(62))
    + b"Content-Length: 0\r\n\r\n",
}


@pytest.mark.reliability("F-07", "F-08")
@pytest.mark.parametrize("variant", list(INVALID))
def test_f07_f08_invalid_response_is_502_and_the_connection_is_dropped(faults: Faults, variant: str) -> None:
    # The scripted upstream keeps its side open: closing is up to the gateway.
    faults.script.behaviour = lambda request: Action(raw=INVALID[variant])
    since = len(faults.script.requests)
    sizes = [len(raw) for raw in faults.script.raw_connections]
    target = f"/bad-{variant.lower()}"
    response, elapsed = faults.get(f"/prod/script{target}")
    assert_gateway_error(response, 502, "Bad Gateway")
    assert elapsed < TIMEOUT_MS / 1000, "the gateway waited for a timeout instead of refusing the response"
    # No-loss: the upstream answered (badly), so the request is not sent again.
    assert len(faults.copies(since, target)) == 1
    bad = faults.connection_of(sizes)
    bad_size = len(bad)
    assert faults.closed_soon(bad), "the upstream connection that sent the invalid response was left open"
    faults.still_serving()
    assert len(bad) == bad_size, "the connection with the invalid response was reused"
