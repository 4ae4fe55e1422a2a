"""A raw-socket HTTP/1.1 client for bad-input tests: bytes go out verbatim, every read is bounded.

`send_raw(port, payload)` writes the payload as it is, then reads until the gateway closes the
connection or a deadline passes. Responses are split with a small, tolerant parser so that a test
can check "exactly one status line", the status, and whether (and how fast) the socket was closed.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: [^\r\n]*)?$")
TRACEBACK_MARKERS = (b"Traceback (most recent call last)", b"File \"/", b"\n    raise ")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool  # the whole body arrived (as framed by Content-Length or chunked)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class RawResult:
    data: bytes = b""
    responses: list[Response] = field(default_factory=list)
    leftover: bytes = b""  # bytes after the last complete response that did not parse as one
    closed: bool = False  # the peer closed (EOF or reset) before the deadline
    reset: bool = False
    send_error: str | None = None  # the peer closed while we were still sending
    first_byte_after: float | None = None  # seconds from the end of the send to the first byte
    closed_after: float | None = None  # seconds from the end of the send to EOF/reset

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def status_lines(self) -> int:
        """How many HTTP status lines the raw bytes hold (anywhere: a second one may follow a body)."""
        return len(re.findall(rb"HTTP/\d\.\d \d{3}", self.data))

    def has_traceback(self) -> bool:
        return any(marker in self.data for marker in TRACEBACK_MARKERS)

    def describe(self) -> str:
        closed = f"closed after {self.closed_after:.3f}s" if self.closed else "left open"
        return f"statuses={self.statuses} {closed} reset={self.reset} send_error={self.send_error} " \
               f"data={self.data[:300]!r}"


def parse_one(data: bytes) -> tuple[Response | None, int]:
    """The first response in `data` and how many bytes it used (0 when no status line parses)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None, 0
    lines = data[:end].split(b"\r\n")
    match = STATUS_LINE.match(lines[0])
    if not match:
        return None, 0
    status = int(match.group(3))
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
    names = {k.lower(): v for k, v in headers}
    body_start = end + 4
    if status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b"", True), body_start
    if "chunked" in names.get("transfer-encoding", "").lower():
        body, consumed, complete = _dechunk(data[body_start:])
        return Response(status, headers, body, complete), body_start + consumed
    length_text = names.get("content-length", "")
    if length_text.isdigit():
        length = int(length_text)
        body = data[body_start:body_start + length]
        return Response(status, headers, body, len(body) == length), body_start + len(body)
    # No framing: the body runs to the end of the connection.
    return Response(status, headers, data[body_start:], False), len(data)


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """Split a byte stream into responses; returns them and the unparsed rest."""
    responses: list[Response] = []
    rest = data
    while rest:
        response, consumed = parse_one(rest)
        if response is None:
            break
        responses.append(response)
        rest = rest[consumed:]
        if not response.complete:
            break
    return responses, rest


def _dechunk(data: bytes) -> tuple[bytes, int, bool]:
    body = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(body), pos, False
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(body), pos, False
        pos = eol + 2
        if size == 0:
            # trailers until an empty line
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return bytes(body), pos, False
                line = data[pos:eol]
                pos = eol + 2
                if not line:
                    return bytes(body), pos, True
        if len(data) < pos + size + 2:
            body += data[pos:pos + size]
            return bytes(body), pos, False
        body += data[pos:pos + size]
        pos += size + 2


def send_raw(
    port: int,
    payload: bytes | list[bytes],
    *,
    responses: int = 1,
    wait_close: float = 1.0,
    timeout: float = 5.0,
    pause: float = 0.0,
    host: str = "127.0.0.1",
) -> RawResult:
    """Send `payload` verbatim (a list is sent as separate writes, `pause` seconds apart) and read.

    Reading stops at EOF/reset, `timeout` seconds after the send, or `wait_close` seconds after
    `responses` complete responses arrived (the time a well-behaved server has to close).
    """
    result = RawResult()
    parts = payload if isinstance(payload, list) else [payload]
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Never linger on close: a test must not block on a peer that stopped reading.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    buffer = bytearray()
    try:
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError) as exc:
                result.send_error = type(exc).__name__
                break
            except TimeoutError:
                result.send_error = "TimeoutError"
                break
        sent_at = time.monotonic()
        deadline = sent_at + timeout
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            sock.settimeout(max(0.001, deadline - now))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                result.closed = True
                result.reset = True
                result.closed_after = time.monotonic() - sent_at
                break
            if not chunk:
                result.closed = True
                result.closed_after = time.monotonic() - sent_at
                break
            if result.first_byte_after is None:
                result.first_byte_after = time.monotonic() - sent_at
            buffer += chunk
            parsed, _ = parse_responses(bytes(buffer))
            if len([r for r in parsed if r.complete]) >= responses:
                deadline = min(deadline, time.monotonic() + wait_close)
    finally:
        sock.close()
    result.data = bytes(buffer)
    result.responses, result.leftover = parse_responses(result.data)
    return result


class KeepAliveClient:
    """One persistent raw connection for sending well-formed requests one at a time."""

    def __init__(self, port: int, timeout: float = 5.0, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buffer = b""

    def request(self, request: bytes) -> Response:
        self.sock.sendall(request)
        deadline = time.monotonic() + self.timeout
        while True:
            response, consumed = parse_one(self.buffer)
            if response is not None and response.complete:
                self.buffer = self.buffer[consumed:]
                return response
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete response within {self.timeout}s: {self.buffer[:200]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed: {self.buffer[:200]!r}")
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- what an upstream may receive: strictly formed HTTP/1.1 requests only --------------------------
REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ (?:/[\x21-\x7e]*|\*) HTTP/1\.1")
FIELD_VALUE = rb"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(" + FIELD_VALUE + rb")[ \t]*")
CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,15}")


def check_request_stream(data: bytes) -> tuple[int, str | None]:
    """Walk `data` (what one upstream connection received) as a sequence of strictly formed
    HTTP/1.1 requests (RFC 9112: token method, origin-form target, CRLF only, token field names,
    one Host, one unambiguous framing). Returns the number of complete requests and the first
    problem found; an unfinished last request (a connection aborted mid-body) is not a problem."""
    pos = 0
    count = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return count, None
        lines = data[pos:end].split(b"\r\n")
        if not REQUEST_LINE.fullmatch(lines[0]):
            return count, f"request line {lines[0][:100]!r}"
        fields: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            match = FIELD_LINE.fullmatch(line)
            if match is None:
                return count, f"field line {line[:100]!r}"
            fields.append((match.group(1).lower(), match.group(2)))
        names = [name for name, _ in fields]
        lengths = [value for name, value in fields if name == b"content-length"]
        codings = [value for name, value in fields if name == b"transfer-encoding"]
        if names.count(b"host") != 1:
            return count, f"{names.count(b'host')} Host fields"
        if lengths and codings or len(lengths) > 1 or len(codings) > 1:
            return count, f"ambiguous framing: content-length {lengths}, transfer-encoding {codings}"
        if lengths and not lengths[0].isdigit():
            return count, f"content-length {lengths[0]!r}"
        if codings and codings[0] != b"chunked":
            return count, f"transfer-encoding {codings[0]!r}"
        pos = end + 4
        if codings:
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return count, None
                size_text = data[pos:eol]
                if not CHUNK_SIZE.fullmatch(size_text):
                    return count, f"chunk size {size_text[:40]!r}"
                size = int(size_text, 16)
                pos = eol + 2
                if size == 0:
                    # trailer fields, then the empty line
                    while True:
                        eol = data.find(b"\r\n", pos)
                        if eol < 0:
                            return count, None
                        line = data[pos:eol]
                        pos = eol + 2
                        if not line:
                            break
                        if FIELD_LINE.fullmatch(line) is None:
                            return count, f"trailer line {line[:100]!r}"
                    break
                if len(data) < pos + size + 2:
                    return count, None
                if data[pos + size:pos + size + 2] != b"\r\n":
                    return count, "chunk data longer than its size"
                pos += size + 2
        elif lengths:
            size = int(lengths[0])
            if len(data) < pos + size:
                return count, None
            pos += size
        count += 1
    return count, None
