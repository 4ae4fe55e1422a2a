"""Bad inputs on raw sockets: RELIABILITY.md §b rows B1 (framing), B2 (header syntax), B3 (request
line), B4 (sizes) and B6 (hop-by-hop, identity).

Every payload goes out verbatim on a fresh TCP connection to a real `fastgw serve`, whose catch-all
route proxies to a RecordingUpstream that logs every byte it receives. A rejected row must get
exactly one 4xx/5xx status line, the upstream must receive nothing of it (✕U), the canary
`GET /prod/smuggled` appended to the payload must never reach the upstream (nor during 20 requests
sent afterwards on another connection), framing errors must close the connection within 1 s, and
no response may carry a traceback.

Statuses: where fastgw enforces a limit itself (414, 431, 413, 400 for underscores and duplicated
singleton fields, 405 for TRACE, 417) the status is exact. For the other rows the table's
alternatives are accepted, and when the server layer (granian/hyper) answered instead of fastgw
(no `x-amzn-RequestId` on the answer) any 4xx counts as the rejection the row asks for.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from support.gateway import GatewayProcess
from support.rawclient import KeepAliveClient, RawResult, check_request_stream, send_raw
from support.upstream import RecordingUpstream

CONFIG = """\
server: {{workers: 1, accessLog: false}}
apis:
  - name: rel
    type: REST
    encodedSlashes: REJECT  # a path the gateway answers itself (400), and the raw path: ASGI
    stages:
      prod: {{}}
    routes:
      - route: ANY /{{proxy+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{proxy}}"}}
      - route: ANY /
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/"}}
"""

# The canary: a complete request that must never be executed. Through the catch-all route it would
# reach the upstream as `GET /smuggled`, so any desync shows up in the recording.
CANARY = b"GET /prod/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /prod/x HTTP/1.1\r\nHost: a\r\n"
GET = b"GET /prod/x HTTP/1.1\r\nHost: a\r\n"
FOLLOW_UPS = 20
CLOSE_WITHIN = 1.0


# -- the gateway and upstream, shared by the module (one start, ~1 s) ----------------------------
@dataclass
class Mark:
    lengths: list[int]
    requests: int


class Env:
    def __init__(self, gateway: GatewayProcess, upstream: RecordingUpstream):
        self.gateway = gateway
        self.upstream = upstream
        self._quiet_total = -1

    @property
    def port(self) -> int:
        return self.gateway.port

    def settle(self, quiet: float = 0.01, limit: float = 1.0) -> None:
        """Wait until the upstream has received nothing new for `quiet` seconds. Called once after
        each exchange; the accessors below read the recording as it stands."""
        deadline = time.monotonic() + limit
        last = self._total()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self._total()
            if now == last:
                break
            last = now
        self._quiet_total = last

    def _total(self) -> int:
        return sum(len(raw) for raw in list(self.upstream.raw_connections))

    def mark(self) -> Mark:
        if self._total() != self._quiet_total:  # something arrived since the last row settled
            self.settle()
        return Mark([len(raw) for raw in list(self.upstream.raw_connections)], len(self.upstream.requests))

    def forwarded(self, mark: Mark) -> bytes:
        """Every byte the upstream received since `mark`, connection after connection."""
        out = bytearray()
        for i, raw in enumerate(list(self.upstream.raw_connections)):
            start = mark.lengths[i] if i < len(mark.lengths) else 0
            out += raw[start:]
        return bytes(out)

    def segments(self, mark: Mark) -> list[bytes]:
        """The bytes received since `mark`, per upstream connection."""
        out = []
        for i, raw in enumerate(list(self.upstream.raw_connections)):
            start = mark.lengths[i] if i < len(mark.lengths) else 0
            if len(raw) > start:
                out.append(bytes(raw[start:]))
        return out

    def requests(self, mark: Mark) -> list:
        return list(self.upstream.requests[mark.requests:])

    def follow_up(self, problems: list[str], count: int = FOLLOW_UPS) -> None:
        """`count` ordinary requests on another connection: answered 200 by the upstream, in order."""
        try:
            with KeepAliveClient(self.port) as client:
                for i in range(count):
                    response = client.request(b"GET /prod/follow/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
                    if response.status != 200 or json.loads(response.body).get("target") != f"/follow/{i}":
                        problems.append(f"follow-up {i}: {response.status} {response.body[:200]!r}")
                        return
                    if b"Traceback" in response.body:
                        problems.append(f"follow-up {i}: traceback in the response")
                        return
        except (OSError, ValueError) as exc:
            problems.append(f"follow-up requests failed: {exc!r}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    upstream = RecordingUpstream().start()
    gateway = GatewayProcess(CONFIG.format(upstream=upstream.address), tmp_path_factory.mktemp("reliability"))
    try:
        gateway.start()
        yield Env(gateway, upstream)
    finally:
        gateway.stop()
        upstream.stop()


# -- checks shared by the rows ----------------------------------------------------------------
def from_fastgw(result: RawResult) -> bool:
    return bool(result.responses) and result.responses[0].header("x-amzn-requestid") is not None


def check_status(result: RawResult, allowed: tuple[int, ...], exact: bool, problems: list[str]) -> None:
    if not result.responses:
        problems.append(f"no response at all ({result.describe()})")
        return
    status = result.responses[0].status
    if status in allowed:
        return
    if not exact and not from_fastgw(result) and 400 <= status < 500:
        return  # the server layer rejected it before fastgw saw it: the row's requirement holds
    who = "fastgw" if from_fastgw(result) else "granian"
    problems.append(f"status {status} from {who}, expected {' or '.join(map(str, allowed))}")


def check_rejected(env: Env, mark: Mark, result: RawResult, *, allowed: tuple[int, ...], exact: bool = False,
                   close: bool = True, problems: list[str]) -> None:
    """One 4xx/5xx status line, nothing forwarded, closed in time (framing errors), no traceback."""
    check_status(result, allowed, exact, problems)
    lines = result.status_lines()
    if lines != 1:
        problems.append(f"{lines} status lines in the answer, expected exactly 1: {result.statuses}")
    if close and not result.closed:
        problems.append(f"connection left open {CLOSE_WITHIN}s after the answer")
    forwarded = env.forwarded(mark)
    if forwarded:
        problems.append(f"upstream received {len(forwarded)} bytes: {forwarded[:240]!r}")
    if result.has_traceback():
        problems.append("traceback text in the response")


def check_canary(env: Env, mark: Mark, problems: list[str]) -> None:
    smuggled = [r for r in env.requests(mark) if "smuggled" in r.target]
    if smuggled or b"/smuggled" in env.forwarded(mark):
        problems.append(f"canary reached the upstream: {[(r.method, r.target) for r in smuggled]}")


def check_well_formed(env: Env, mark: Mark, problems: list[str]) -> None:
    """Whatever reached the upstream is a stream of strictly formed requests (see rawclient)."""
    for segment in env.segments(mark):
        _, problem = check_request_stream(segment)
        if problem:
            problems.append(f"upstream received a malformed request ({problem}): {segment[:300]!r}")


def finish(env: Env, mark: Mark, problems: list[str], canary: bool = True, result: RawResult | None = None) -> None:
    """The poisoning check: 20 requests from another connection, then the canary check again;
    and everything the upstream received during the row is well-formed, no traceback anywhere."""
    if result is not None and result.has_traceback() and "traceback text in the response" not in problems:
        problems.append("traceback text in the response")
    env.follow_up(problems)
    env.settle()
    if canary:
        check_canary(env, mark, problems)
    check_well_formed(env, mark, problems)
    assert not problems, "\n".join(problems)


def handled_as_te_only(env: Env, mark: Mark, result: RawResult, problems: list[str]) -> bool:
    """RFC 9112 §6.3 lets a server treat Content-Length + Transfer-Encoding as TE-only, provided it
    closes the connection afterwards. granian (hyper) does that before fastgw sees the request (it
    drops Content-Length), so fastgw cannot answer 400 (README, design notes). What must hold then:
    exactly one request reached the upstream, framed by the chunked body, and the client connection
    was closed, so nothing after the body is read as a request. The canary check still applies."""
    if not result.responses or result.responses[0].status >= 400:
        return False
    seen = env.requests(mark)
    if len(seen) != 1:
        problems.append(f"{len(seen)} upstream requests for one CL+TE request: {[r.target for r in seen]}")
    if not result.closed:
        problems.append("connection left open after a Content-Length + Transfer-Encoding request")
    return True


def run_reject(env: Env, request: bytes, *, allowed: tuple[int, ...] = (400,), exact: bool = False,
               close: bool = True, canary: bool = True, te_only_ok: bool = False) -> None:
    mark = env.mark()
    result = send_raw(env.port, request + (CANARY if canary else b""), wait_close=CLOSE_WITHIN)
    env.settle()
    problems: list[str] = []
    if not (te_only_ok and handled_as_te_only(env, mark, result, problems)):
        check_rejected(env, mark, result, allowed=allowed, exact=exact, close=close, problems=problems)
    finish(env, mark, problems, canary, result=result)


# -- the rejected rows, data-driven ---------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    id: str
    request: bytes
    allowed: tuple[int, ...] = (400,)
    exact: bool = False  # a limit fastgw enforces: the status must be exactly this
    close: bool = True  # framing error: the connection must be closed
    te_only_ok: bool = False  # CL+TE: the server layer's RFC-allowed TE-only handling is accepted


def params(rows: list[Row]) -> list:
    """Each row as a pytest.param marked with its catalogue id (tests/support/reliability_report.py)."""
    return [pytest.param(row, id=row.id, marks=pytest.mark.reliability(row.id[:5])) for row in rows]


def chunked(te: bytes, body: bytes = b"1\r\nZ\r\n0\r\n\r\n") -> bytes:
    return POST + b"Transfer-Encoding: " + te + b"\r\n\r\n" + body


FRAMING_ROWS = [
    Row("FR-01-cl-te", POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", te_only_ok=True),
    Row("FR-02-te-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        te_only_ok=True),
    Row("FR-03-two-te-fields",
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\n0\r\n\r\n"),
    Row("FR-04-chunked-chunked", chunked(b"chunked, chunked")),
    Row("FR-05-chunked-gzip", chunked(b"chunked, gzip")),
    Row("FR-05-gzip", chunked(b"gzip")),
    Row("FR-06-gzip-chunked", chunked(b"gzip, chunked"), allowed=(501, 422)),
    Row("FR-09-cl-1-then-0", POST + b"Content-Length: 1\r\nContent-Length: 0\r\n\r\nZ"),
    Row("FR-09-cl-0-then-1", POST + b"Content-Length: 0\r\nContent-Length: 1\r\n\r\nZ"),
    *[
        Row(f"FR-12-cl-{name}", POST + b"Content-Length: " + value + b"\r\n\r\nhello")
        for name, value in [
            ("plus5", b"+5"), ("minus1", b"-1"), ("hex", b"0x10"), ("underscore", b"1_0"), ("5-space-5", b"5 5"),
            ("1Z", b"1Z"), ("minus48", b"-48"), ("empty", b""), ("overflow", b"99999999999999999999999"),
        ]
    ],
    Row("FR-14-space-before-colon", POST + b"Content-Length : 34\r\n\r\n"),
    *[
        Row(f"FR-15-chunk-size-{name}", chunked(b"chunked", size + b"\r\n\r\n"))
        for name, size in [
            ("0x0", b"0x0"), ("minus0", b"-0"), ("plus1", b"+1\r\nZ"), ("1_0", b"1_0"), ("leading-sp", b" 0"),
            ("Z", b"Z\r\nZZ"), ("empty", b""),
        ]
    ],
    Row("FR-16-chunk-size-overflow", chunked(b"chunked", b"fffffffffffffffff1\r\nAB\r\n0\r\n\r\n")),
    Row("FR-18-bare-lf-ends-chunk", chunked(b"chunked", b"a\r\n0123456789\n0\r\n\r\n")),
    Row("FR-19-chunk-longer-than-size", chunked(b"chunked", b"5\r\nABCDEFG\r\n0\r\n\r\n")),
    Row("FR-19-invalid-chunk-line", chunked(b"chunked", b"INVALID!!!\r\n")),
    # 413 before any body byte, with no `100 Continue` (exactly one status line), then close.
    Row("FR-24-expect-100-over-limit", POST + b"Expect: 100-continue\r\nContent-Length: 10485761\r\n\r\n",
        allowed=(413,), exact=True),
    Row("FR-24-expect-foo", POST + b"Expect: foo\r\nContent-Length: 5\r\n\r\nhello", allowed=(417,), exact=True,
        close=False),
]

HEADER_ROWS = [
    Row("HS-01-obs-fold", GET + b"X-A: a\r\n b\r\n\r\n", close=False),
    Row("HS-03-nul-in-host", b"GET /prod/x HTTP/1.1\r\nHost: google.com\x00.kallus.org\r\n\r\n", close=False),
    Row("HS-03-nul-in-value", GET + b"Test: a\x00THESE BYTES GET DROPPED\r\n\r\n", close=False),
    Row("HS-05-no-colon-split", GET + b"Te\nst: test\r\n\r\n", close=False),
    Row("HS-05-content-length-no-colon", POST + b"Content-Length 10\r\n\r\n0123456789", close=False),
    Row("HS-06-empty-name", GET + b": ignored\r\n\r\n", close=False),
    Row("HS-06-colon-only", GET + b":\r\n\r\n", close=False),
    Row("HS-07-whitespace-led-first-field", b"GET /prod/x HTTP/1.1\r\n\tContent-Length: 1\r\nHost: a\r\n\r\nX",
        close=False),
    *[
        Row(f"HS-08-{name}", GET + line + b"\r\n\r\n", close=False)
        for name, line in [
            ("x85-in-name", b"Header\x85: v"), ("content-length-x85", b"Content-Length\x85: 10"),
            ("xff-name", b"\xffoo: bar"), ("at-sign", b"a@b: c"), ("quoted-name", b'"x": y'),
        ]
    ],
    *[
        Row(f"HS-10-{name}", GET + line + b"\r\n\r\n", exact=True, close=False)
        for name, line in [
            ("content_length", b"Content_Length: 5"), ("x_api_key", b"X_Api_Key: k"),
            ("x_forwarded_for", b"X_Forwarded_For: 1.2.3.4"),
        ]
    ],
    Row("HS-11-101-fields", GET + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n", allowed=(431,),
        exact=True, close=False),
    Row("HS-12-two-authorization", GET + b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n", exact=True,
        close=False),
    Row("HS-12-two-host", GET + b"Host: b\r\n\r\n", exact=True, close=False),
    Row("HS-12-two-x-api-key", GET + b"X-Api-Key: a\r\nX-Api-Key: b\r\n\r\n", exact=True, close=False),
]

REQUEST_LINE_ROWS = [
    Row("RL-01-no-host", b"GET /prod/x HTTP/1.1\r\n\r\n", close=False),
    Row("RL-02-host-a-host-b", b"GET /prod/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", exact=True, close=False),
    *[
        Row(f"RL-04-{name}", line + b"\r\nHost: a\r\n\r\n", close=False)
        for name, line in [
            ("get-star", b"GET * HTTP/1.1"), ("options-star-test", b"OPTIONS */test HTTP/1.1"),
            ("get-admin", b"GET admin HTTP/1.1"), ("get-admin-a-b", b"GET admin/a/b HTTP/1.1"),
            ("authority-form", b"GET haproxy.org:80 HTTP/1.1"), ("connect-slash", b"CONNECT / HTTP/1.1"),
            ("connect-absolute", b"CONNECT http://h:80 HTTP/1.1"),
        ]
    ],
    Row("RL-04-options-star", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", allowed=(200, 405, 400), close=False),
    Row("RL-05-punctuation-method", b'G=":<>(e),[T];?" /prod/get HTTP/1.1\r\nHost: a\r\n\r\n', close=False),
    Row("RL-05-nul-method", b"\x00 /prod/x HTTP/1.1\r\nHost: a\r\n\r\n", close=False),
    Row("RL-05-unknown-method", b"FOO /prod/x HTTP/1.1\r\nHost: a\r\n\r\n", allowed=(501, 405), close=False),
    *[
        Row(f"RL-06-{name}", request, allowed=(400, 505))
        for name, request in [
            ("http-1.32", b"GET /prod/x HTTP/1.32\r\nHost: a\r\n\r\n"),
            ("http-huge", b"GET /prod/x HTTP/4294967295.255\r\nHost: a\r\n\r\n"),
            ("cr-cr-in-version", b"GET /prod/x HTTP/\r\r1.1\r\nHost: a\r\n\r\n"),
            ("http-0.9", b"GET /prod/x\r\n\r\n"),
            ("lf-before-version", b"GET /prod/x\nHTTP/1.1\r\nHost: a\r\n\r\n"),
        ]
    ],
    # 8 KiB + 1: the whole request line `GET <target> HTTP/1.1`, and the target alone.
    Row("RL-08-request-line-8k-plus-1",
        b"GET /prod/" + b"a" * (8192 + 1 - len(b"GET /prod/ HTTP/1.1")) + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        allowed=(414,), exact=True),
    Row("RL-08-uri-8k-plus-1", b"GET /prod/" + b"a" * (8192 + 1 - len(b"/prod/")) + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        allowed=(414,), exact=True),
]


def field_lines(total: int, prefix: bytes = b"Host: a\r\n") -> bytes:
    """Field lines (`name: value\\r\\n`, Host first) adding up to exactly `total` bytes."""
    out = bytearray(prefix)
    i = 0
    while len(out) < total:
        name = b"X-F%03d: " % i
        remaining = total - len(out)
        overhead = len(name) + 2
        # 1000-byte values, but never leave a remainder too small to form one more line.
        take = remaining - overhead if remaining <= 1000 + 2 * overhead + 1 else 1000
        assert take >= 1
        out += name + b"v" * take + b"\r\n"
        i += 1
    assert len(out) == total
    return bytes(out)


SIZE_ROWS = [
    Row("SZ-01-header-block-60k-plus-1", b"GET /prod/x HTTP/1.1\r\n" + field_lines(60 * 1024 + 1) + b"\r\n",
        allowed=(431,), exact=True),
    Row("SZ-02-one-field-16k-plus-1", GET + b"Authorization: " + b"a" * (16 * 1024 + 1) + b"\r\n\r\n",
        allowed=(431,), exact=True, close=False),
    Row("SZ-04-content-length-10mib-plus-1", POST + b"Content-Length: 10485761\r\n\r\n", allowed=(413,), exact=True,
        close=False),
    Row("SZ-08-10000-one-byte-fields", GET + b"".join(b"X%d:v\r\n" % i for i in range(10_000)) + b"\r\n",
        allowed=(431,), exact=True, close=False),
]

UPGRADE_ROWS = [
    Row("UP-07-trace", b"TRACE /prod/x HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n", allowed=(405,), exact=True,
        close=False),
]


@pytest.mark.parametrize("row", params(FRAMING_ROWS))
def test_b1_framing_rejected(env: Env, row: Row) -> None:
    run_reject(env, row.request, allowed=row.allowed, exact=row.exact, close=row.close, te_only_ok=row.te_only_ok)


@pytest.mark.parametrize("row", params(HEADER_ROWS))
def test_b2_header_syntax_rejected(env: Env, row: Row) -> None:
    run_reject(env, row.request, allowed=row.allowed, exact=row.exact, close=row.close)


@pytest.mark.parametrize("row", params(REQUEST_LINE_ROWS))
def test_b3_request_line_rejected(env: Env, row: Row) -> None:
    run_reject(env, row.request, allowed=row.allowed, exact=row.exact, close=row.close)


@pytest.mark.parametrize("row", params(SIZE_ROWS))
def test_b4_size_limits_rejected(env: Env, row: Row) -> None:
    run_reject(env, row.request, allowed=row.allowed, exact=row.exact, close=row.close)


@pytest.mark.parametrize("row", params(UPGRADE_ROWS))
def test_b6_rejected(env: Env, row: Row) -> None:
    run_reject(env, row.request, allowed=row.allowed, exact=row.exact, close=row.close)


# -- FR-07: smuggler's TE mutations, each in CL.TE and TE.CL form ---------------------------------
def smuggler_gadgets() -> dict[str, bytes]:
    """The 134 gadgets of defparam/smuggler `configs/default.py`, plus FR-07's own obfuscations."""
    gadgets = {
        "nameprefix1": " Transfer-Encoding: chunked",
        "tabprefix1": "Transfer-Encoding:\tchunked",
        "tabprefix2": "Transfer-Encoding\t:\tchunked",
        "space1": "Transfer-Encoding : chunked",
    }
    for i in (0x1, 0x4, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0x1F, 0x20, 0x7F, 0xA0, 0xFF):
        c = chr(i)
        gadgets[f"midspace-{i:02x}"] = f"Transfer-Encoding:{c}chunked"
        gadgets[f"postspace-{i:02x}"] = f"Transfer-Encoding{c}: chunked"
        gadgets[f"prespace-{i:02x}"] = f"{c}Transfer-Encoding: chunked"
        gadgets[f"endspace-{i:02x}"] = f"Transfer-Encoding: chunked{c}"
        gadgets[f"xprespace-{i:02x}"] = f"X: X{c}Transfer-Encoding: chunked"
        gadgets[f"endspacex-{i:02x}"] = f"Transfer-Encoding: chunked{c}X: X"
        gadgets[f"rxprespace-{i:02x}"] = f"X: X\r{c}Transfer-Encoding: chunked"
        gadgets[f"xnprespace-{i:02x}"] = f"X: X{c}\nTransfer-Encoding: chunked"
        gadgets[f"endspacerx-{i:02x}"] = f"Transfer-Encoding: chunked\r{c}X: X"
        gadgets[f"endspacexn-{i:02x}"] = f"Transfer-Encoding: chunked{c}\nX: X"
    gadgets.update({
        "fr07-nul-after": "Transfer-Encoding: chunked\x00",
        "fr07-nbsp-around": "Transfer-Encoding: \xa0chunked\xa0",
        "fr07-xchunked": "Transfer-Encoding: xchunked",
        "fr07-comma-chunked": "Transfer-Encoding: ,chunked",
    })
    return {name: gadget.encode("latin-1") for name, gadget in gadgets.items()}


GADGETS = smuggler_gadgets()
TOKEN = set(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def strict_field_lines(gadget: bytes) -> list[tuple[bytes, bytes]] | None:
    """RFC 9112 §5 field lines (CRLF-separated `token ":" OWS value OWS`), or None if invalid."""
    fields = []
    for line in gadget.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name or any(b not in TOKEN for b in name):
            return None
        value = value.strip(b" \t")
        if any(b < 0x20 and b != 0x09 or b == 0x7F for b in value):
            return None
        fields.append((name.lower(), value))
    return fields


def is_benign(gadget: bytes) -> bool:
    """A gadget that is one or more valid fields none of which is Transfer-Encoding: the request
    is then framed by its Content-Length alone and may be forwarded as such."""
    fields = strict_field_lines(gadget)
    return fields is not None and all(name != b"transfer-encoding" for name, _ in fields)


SMUGGLER_FORMS = {
    # smuggler's own bodies: CL.TE sends a chunk the CL cuts short, TE.CL a last-chunk plus a byte.
    "CL.TE": (4, b"1\r\nZ\r\n0\r\n\r\n"),
    "TE.CL": (6, b"0\r\n\r\nX"),
}


@pytest.mark.reliability("FR-07")
@pytest.mark.parametrize("form", list(SMUGGLER_FORMS))
@pytest.mark.parametrize("name", list(GADGETS))
def test_fr07_smuggler_te_mutations(env: Env, name: str, form: str) -> None:
    gadget = GADGETS[name]
    length, body = SMUGGLER_FORMS[form]
    head = (b"POST /prod/x?cb=1 HTTP/1.1\r\n" + gadget + b"\r\nHost: a\r\nUser-Agent: smuggler\r\n"
            b"Content-type: application/x-www-form-urlencoded; charset=UTF-8\r\nContent-Length: %d\r\n\r\n" % length)
    mark = env.mark()
    problems: list[str] = []
    if not is_benign(gadget):
        # Invalid field syntax, or a real Transfer-Encoding next to Content-Length: 400, ✕U, close.
        # (A coding the gateway does not recognise may get FR-06's 501 instead.)
        result = send_raw(env.port, head + body + CANARY, wait_close=CLOSE_WITHIN)
        env.settle()
        # A gadget the server layer reads as a valid Transfer-Encoding (legal OWS, or a bare CR/LF
        # it takes as a line end) makes this FR-01: the TE-only handling is accepted as there.
        if not handled_as_te_only(env, mark, result, problems):
            check_rejected(env, mark, result, allowed=(400, 501), problems=problems)
        finish(env, mark, problems, result=result)
        return
    # The TE text hides inside another field's value: a plain Content-Length request. It must be
    # forwarded framed by that Content-Length only; what follows is a new request (or rejected).
    result = send_raw(env.port, head + body + CANARY, wait_close=0.1, responses=2)
    env.settle()
    seen = env.requests(mark)
    if not seen or seen[0].header("content-length") != str(length) or seen[0].body != body[:length]:
        problems.append(f"not forwarded as a Content-Length request: {[(r.target, r.headers, r.body) for r in seen]}")
    if any(r.header("transfer-encoding") for r in seen):
        problems.append("forwarded with Transfer-Encoding")
    # For TE.CL the canary is a genuine pipelined request after a complete CL body: it may be served.
    finish(env, mark, problems, canary=form == "CL.TE", result=result)


def test_fr07_gadget_classification_is_sane() -> None:
    assert len(GADGETS) == 134 + 4
    benign = sorted(name for name, gadget in GADGETS.items() if is_benign(gadget))
    assert benign == ["xprespace-09", "xprespace-20", "xprespace-a0", "xprespace-ff"]


# -- rows that may be accepted: what reaches the upstream must be exactly what was understood ------
@pytest.mark.reliability("FR-08")
def test_fr08_te_on_http10_never_keep_alive(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, b"POST /prod/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + CANARY,
                      wait_close=CLOSE_WITHIN)
    env.settle()
    problems: list[str] = []
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), problems=problems)
    else:
        if not result.closed:
            problems.append(f"answered {result.statuses} and kept the HTTP/1.0 connection alive")
    finish(env, mark, problems, result=result)


@pytest.mark.reliability("FR-10")
@pytest.mark.parametrize("variant", ["list-5-5", "two-lines-5"])
def test_fr10_content_length_list(env: Env, variant: str) -> None:
    fields = b"Content-Length: 5, 5\r\n" if variant == "list-5-5" else b"Content-Length: 5\r\nContent-Length: 5\r\n"
    mark = env.mark()
    result = send_raw(env.port, POST + fields + b"\r\nhello", wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), problems=problems)
    else:
        # Collapsed to one `5` (RFC 9110 §8.6): forwarded once, with one canonical Content-Length.
        forwarded = env.forwarded(mark)
        seen = env.requests(mark)
        if len(seen) != 1 or seen[0].body != b"hello" or forwarded.lower().count(b"content-length") != 1 \
                or b"content-length: 5\r\n" not in forwarded.lower():
            problems.append(f"answered {result.statuses}, forwarded {forwarded[:300]!r}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("FR-13")
def test_fr13_leading_zeros_forwarded_canonical(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, POST + b"Content-Length: 010\r\n\r\n0123456789", wait_close=0.1)
    env.settle()
    problems: list[str] = []
    forwarded = env.forwarded(mark)
    seen = env.requests(mark)
    if result.statuses != [200]:
        problems.append(f"statuses {result.statuses}, expected [200] (accepted as 10)")
    if len(seen) != 1 or seen[0].body != b"0123456789" or seen[0].header("content-length") != "10":
        problems.append(f"forwarded {forwarded[:300]!r}")
    if b"010" in forwarded.split(b"\r\n\r\n", 1)[0]:
        problems.append("Content-Length forwarded as received (010), not canonical")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("FR-20")
def test_fr20_trailer_smuggling(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, chunked(b"chunked", b"0\r\nX:POST / HTTP/1.1\r\n\r\n"), wait_close=0.1)
    env.settle()
    problems: list[str] = []
    seen = env.requests(mark)
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), close=False, problems=problems)
    elif [(r.method, r.target) for r in seen] != [("POST", "/x")]:
        problems.append(f"upstream saw {[(r.method, r.target) for r in seen]}, expected exactly one POST /x")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("FR-21")
def test_fr21_get_with_body(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, b"GET /prod/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n1234567890",
                      wait_close=0.1)
    env.settle()
    problems: list[str] = []
    seen = env.requests(mark)
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), close=False, problems=problems)
    elif len(seen) != 1 or seen[0].body != b"1234567890" or seen[0].header("content-length") != "10":
        problems.append(f"GET body not forwarded with its Content-Length: {env.forwarded(mark)[:300]!r}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("FR-22")
def test_fr22_two_pipelined_requests(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, b"GET /prod/one HTTP/1.1\r\nHost: a\r\n\r\nGET /prod/two HTTP/1.1\r\nHost: a\r\n\r\n",
                      responses=2, wait_close=0.1)
    env.settle()
    problems: list[str] = []
    seen = env.requests(mark)
    if [r.target for r in seen] != ["/one", "/two"]:
        problems.append(f"upstream saw {[r.target for r in seen]}")
    targets = [r.body.split(b'"target": "', 1)[-1].split(b'"', 1)[0] for r in result.responses]
    if result.statuses != [200, 200] or targets != [b"/one", b"/two"]:
        problems.append(f"responses {result.statuses} {targets}")
    finish(env, mark, problems, canary=False, result=result)


def padded_canary(size: int) -> bytes:
    filler = size - len(CANARY) - len(b"X: \r\n")
    assert filler > 0
    return CANARY[:-2] + b"X: " + b"p" * filler + b"\r\n\r\n"


@pytest.mark.reliability("FR-23")
@pytest.mark.parametrize("target", ["/nostage/x", "/prod/a%2Fb"], ids=["404-no-stage", "400-encoded-slash"])
def test_fr23_early_response_desync(env: Env, target: str) -> None:
    """POST with Content-Length: 60 to a path fastgw answers itself; the body is a whole request.
    fastgw discards exactly those 60 bytes (the next request is served) or closes."""
    body = padded_canary(60)
    assert len(body) == 60
    after = b"GET /prod/after HTTP/1.1\r\nHost: a\r\n\r\n"
    mark = env.mark()
    request = b"POST " + target.encode() + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\n\r\n" + body + after
    result = send_raw(env.port, request, responses=2, wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if not result.responses or result.responses[0].status not in (400, 404):
        problems.append(f"first answer {result.statuses}")
    seen = [r.target for r in env.requests(mark)]
    if not result.closed and (result.statuses[1:2] != [200] or seen != ["/after"]):
        problems.append(f"kept the connection but did not serve the next request: {result.statuses}, upstream {seen}")
    if result.closed and seen not in ([], ["/after"]):
        problems.append(f"upstream saw {seen}")
    finish(env, mark, problems, result=result)


@pytest.mark.reliability("HS-04")
def test_hs04_bare_lf_rejected_or_reserialised(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, b"GET /prod/x HTTP/1.1\nHost: a\nConnection: close\n\n", wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), close=False, problems=problems)
    else:
        forwarded = env.forwarded(mark)
        if forwarded.replace(b"\r\n", b"").count(b"\n"):
            problems.append(f"bare LF forwarded: {forwarded[:300]!r}")
        if [r.target for r in env.requests(mark)] != ["/x"]:
            problems.append(f"upstream saw {[r.target for r in env.requests(mark)]}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("HS-11")
def test_hs11_100_fields_accepted(env: Env) -> None:
    mark = env.mark()
    request = GET + b"".join(b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n"  # Host + 99 = 100 fields
    result = send_raw(env.port, request, wait_close=0.1)
    env.settle()
    problems: list[str] = []
    seen = env.requests(mark)
    if result.statuses != [200] or len(seen) != 1:
        problems.append(f"100 fields: {result.statuses}, upstream saw {len(seen)} requests")
    elif sum(1 for k, _ in seen[0].headers if k.startswith("x-") and k[2:].isdigit()) != 99:
        problems.append("not every field was forwarded")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "granian's ASGI scope drops the authority of an absolute-form target (GET http://h/p arrives as /p "
    "with the Host field), so fastgw cannot refuse it there; the RSGI interface refuses it with 400"))
@pytest.mark.reliability("RL-03")
def test_rl03_absolute_form(env: Env) -> None:
    mark = env.mark()
    request = b"GET http://evil.example/prod/admin HTTP/1.1\r\nHost: good.example\r\n\r\n"
    result = send_raw(env.port, request + CANARY, wait_close=CLOSE_WITHIN)
    env.settle()
    problems: list[str] = []
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), close=False, problems=problems)
        finish(env, mark, problems, result=result)
        return
    # Supported: routing and the upstream must use the target's authority, not the Host field.
    seen = env.requests(mark)
    if not seen or seen[0].header("x-forwarded-host") != "evil.example":
        problems.append(f"absolute form answered {result.statuses} and forwarded with the Host field's "
                        f"authority: {[(r.target, r.header('x-forwarded-host')) for r in seen]}")
    finish(env, mark, problems, result=result)


@pytest.mark.parametrize(("path", "expected"), [
    ("/prod/public/..%2fadmin", None),
    ("/prod/public/%2e%2e/admin", "/admin"),
    ("/prod/public/../admin", "/admin"),
    ("/prod//admin", "/admin"),
    ("/prod/admin/./x", "/admin/x"),
    ("/prod/admin;x=1", "/admin;x=1"),
    ("/prod/admin%00", None),
    ("/prod/ADMIN", "/ADMIN"),
], ids=["encoded-slash", "encoded-dots", "dot-dot", "double-slash", "dot-segment", "semicolon", "encoded-nul",
        "case-kept"])
@pytest.mark.reliability("RL-07")
def test_rl07_path_confusion(env: Env, path: str, expected: str | None) -> None:
    mark = env.mark()
    result = send_raw(env.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n", wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if expected is None:
        check_rejected(env, mark, result, allowed=(400,), exact=True, close=False, problems=problems)
    else:
        seen = [r.target for r in env.requests(mark)]
        if result.statuses != [200] or seen != [expected]:
            problems.append(f"{path}: {result.statuses}, upstream saw {seen}, expected {expected}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("RL-08")
def test_rl08_request_line_under_limit_accepted(env: Env) -> None:
    # RFC 9112 §3: support request lines of at least 8000 octets.
    mark = env.mark()
    line_target = b"/prod/" + b"a" * (8000 - len(b"GET /prod/ HTTP/1.1"))
    result = send_raw(env.port, b"GET " + line_target + b" HTTP/1.1\r\nHost: a\r\n\r\n", wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if result.statuses != [200] or len(env.requests(mark)) != 1:
        problems.append(f"8000-octet request line: {result.statuses}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("SZ-01")
def test_sz01_header_block_under_limit_accepted(env: Env) -> None:
    mark = env.mark()
    request = b"GET /prod/x HTTP/1.1\r\n" + field_lines(59 * 1024) + b"\r\n"
    result = send_raw(env.port, request, wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if result.statuses != [200] or len(env.requests(mark)) != 1:
        problems.append(f"59 KiB of fields: {result.statuses}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("SZ-02")
def test_sz02_field_under_limit_accepted(env: Env) -> None:
    mark = env.mark()
    result = send_raw(env.port, GET + b"Authorization: " + b"a" * (15 * 1024) + b"\r\n\r\n", wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if result.statuses != [200] or len(env.requests(mark)) != 1:
        problems.append(f"15 KiB Authorization: {result.statuses}")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("SZ-05")
def test_sz05_chunked_body_over_limit(env: Env) -> None:
    """A chunked body that passes 10 MiB mid-stream: 413 or reset + close; the upstream never gets
    a complete over-limit request (its connection is closed before the last chunk)."""
    chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    parts = [POST + b"Transfer-Encoding: chunked\r\n\r\n"] + [chunk] * 168 + [b"0\r\n\r\n" + CANARY]  # 10.5 MiB
    mark = env.mark()
    open_before = env.upstream.open_connections
    result = send_raw(env.port, parts, wait_close=CLOSE_WITHIN, timeout=10)
    env.settle()
    problems: list[str] = []
    if result.responses and result.responses[0].status != 413:
        problems.append(f"status {result.statuses}, expected 413 (or a reset)")
    if not result.closed and result.send_error is None:
        problems.append("connection left open")
    if result.has_traceback():
        problems.append("traceback text in the response")
    complete = [r for r in env.requests(mark) if r.method == "POST"]
    if complete:
        problems.append(f"upstream received a complete request of {len(complete[0].body)} body bytes")
    forwarded = env.forwarded(mark)
    if forwarded.endswith(b"0\r\n\r\n"):
        problems.append("upstream received the last chunk")
    deadline = time.monotonic() + 2
    while env.upstream.open_connections > open_before and time.monotonic() < deadline:
        time.sleep(0.02)
    if env.upstream.open_connections > open_before:
        problems.append("the upstream connection carrying the partial body was left open")
    finish(env, mark, problems, result=result)


@pytest.mark.reliability("UP-01")
def test_up01_h2c_upgrade_not_forwarded(env: Env) -> None:
    request = GET + (b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                     b"Connection: Upgrade, HTTP2-Settings\r\n\r\n")
    mark = env.mark()
    # A second request on the same connection: still plain HTTP/1.1, no tunnel.
    result = send_raw(env.port, request + b"GET /prod/second HTTP/1.1\r\nHost: a\r\n\r\n", responses=2,
                      wait_close=0.1)
    env.settle()
    problems: list[str] = []
    if 101 in result.statuses:
        problems.append("answered 101 Switching Protocols")
    if result.statuses[:1] == [400]:
        check_rejected(env, mark, result, allowed=(400,), close=False, problems=problems)
    else:
        seen = env.requests(mark)
        if result.statuses != [200, 200] or [r.target for r in seen] != ["/x", "/second"]:
            problems.append(f"not served as plain HTTP/1.1: {result.statuses}, upstream {[r.target for r in seen]}")
        for r in seen[:1]:
            for name in ("upgrade", "http2-settings", "connection"):
                if r.header(name) is not None:
                    problems.append(f"{name} forwarded to the upstream")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("UP-04")
def test_up04_client_nominated_hop_by_hop_fields_stripped(env: Env) -> None:
    request = GET + (b"Connection: keep-alive, X-Forwarded-For, Authorization, X-Consumer-Id\r\n"
                     b"Authorization: Bearer secret\r\nX-Consumer-Id: 7\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
    mark = env.mark()
    result = send_raw(env.port, request, wait_close=0.1)
    env.settle()
    problems: list[str] = []
    seen = env.requests(mark)
    if result.statuses != [200] or len(seen) != 1:
        problems.append(f"{result.statuses}, upstream saw {len(seen)}")
    else:
        r = seen[0]
        for name in ("authorization", "x-consumer-id", "connection"):
            if r.header(name) is not None:
                problems.append(f"client-nominated hop-by-hop field {name} forwarded")
        # The gateway's own identity header is added after the stripping: it always arrives.
        if r.header("x-forwarded-for") != "127.0.0.1":
            problems.append(f"x-forwarded-for is {r.header('x-forwarded-for')!r}, expected the real peer")
    finish(env, mark, problems, canary=False, result=result)


@pytest.mark.reliability("UP-05")
def test_up05_spoofed_identity_replaced_by_peer(env: Env) -> None:
    request = GET + b"X-Forwarded-For: 127.0.0.9\r\nX-Real-IP: 10.0.0.1\r\nForwarded: for=127.0.0.8\r\n\r\n"
    mark = env.mark()
    result = send_raw(env.port, request, wait_close=0.1)
    env.settle()
    problems: list[str] = []
    seen = env.requests(mark)
    if result.statuses != [200] or len(seen) != 1:
        problems.append(f"{result.statuses}, upstream saw {len(seen)}")
    else:
        r = seen[0]
        if r.header("x-forwarded-for") != "127.0.0.1":
            problems.append(f"x-forwarded-for {r.header('x-forwarded-for')!r}")
        if r.header("x-real-ip") not in (None, "127.0.0.1"):
            problems.append(f"x-real-ip {r.header('x-real-ip')!r} passed through")
        if r.header("forwarded") not in (None, "for=127.0.0.1"):
            problems.append(f"forwarded {r.header('forwarded')!r} passed through")
    finish(env, mark, problems, canary=False, result=result)


# -- garbage: seeded random inputs never crash the gateway, never forward junk -----------------------
TEMPLATES = [
    GET + b"\r\n",
    POST + b"Content-Length: 5\r\n\r\nhello",
    POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /prod/a/b?q=1 HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\nContent-Length: 3\r\n\r\nabc",
]
SPECIAL = [b"\r", b"\n", b"\x00", b" ", b":", b"\t", b"\x0b", b"\xff", b",", b"-", b"0", b"\r\n", b"%", b"/"]


def garbage(rng: random.Random) -> bytes:
    if rng.random() < 0.25:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    data = bytearray(rng.choice(TEMPLATES))
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice(SPECIAL)
        elif op == 2 and data:
            del data[pos]
        elif op == 3 and data:
            end = min(len(data), pos + rng.randrange(1, 20))
            data[pos:pos] = data[pos:end]
        else:
            del data[pos:]
    return bytes(data)


def test_garbage_never_crashes_nor_forwards_junk(env: Env) -> None:
    rng = random.Random(20240501)
    mark = env.mark()
    problems: list[str] = []
    for i in range(200):
        payload = garbage(rng)
        result = send_raw(env.port, payload, timeout=0.3, wait_close=0.02)
        if result.has_traceback():
            problems.append(f"#{i} {payload[:80]!r}: traceback in the response")
        # 501 is the deliberate answer to an unknown method (RL-05); other 5xx would be a fault.
        if any(r.status >= 500 and r.status not in (501, 502, 504) for r in result.responses):
            problems.append(f"#{i} {payload[:80]!r}: answered {result.statuses}")
        if i % 20 == 19:
            try:
                alive = httpx.get(f"{env.gateway.url}/prod/alive/{i}", timeout=5).status_code
            except httpx.HTTPError as exc:
                alive = repr(exc)
            if alive != 200:
                problems.append(f"after #{i}: a normal request got {alive}")
    assert env.gateway.proc is not None and env.gateway.proc.poll() is None, "the gateway exited"
    finish(env, mark, problems, canary=False, result=result)


def test_keepalive_client_after_everything(env: Env) -> None:
    """After all the rows: one connection, 50 requests, all served in order (nothing poisoned)."""
    with KeepAliveClient(env.port) as client:
        for i in range(50):
            response = client.request(b"GET /prod/last/%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            assert response.status == 200
            assert f'"target": "/last/{i}"'.encode() in response.body
