"""A raw-socket scripted upstream for connection-safety tests (issue 22), one thread per connection.

Every byte received is recorded per connection, and so is every request head *as this upstream
read it*: where it thought a request began. A behaviour decides, per request head, what to do, and
may misbehave as real services do (answer before reading the body and go on reading, send bytes
after a response, frame badly). A well-behaved gateway keeps such an upstream harmless: no
recorded request ever starts with bytes other than a request line the gateway meant to send, and no
client ever gets a response meant for another request.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[!-~]*) HTTP/1\.[01]$")
MAX_HEAD = 1024 * 1024  # large: a desync must show up as a recorded head, not as "too long"


@dataclass
class Head:
    """A request head as the upstream read it."""

    raw: bytes  # the head up to and including the blank line
    offset: int  # where it began in the connection's bytes

    @property
    def line(self) -> bytes:
        return self.raw.split(b"\r\n", 1)[0]

    @property
    def method(self) -> str:
        return self.line.split(b" ", 1)[0].decode("latin-1")

    @property
    def target(self) -> str:
        parts = self.line.split(b" ")
        return parts[1].decode("latin-1") if len(parts) > 1 else ""

    def header(self, name: str) -> str | None:
        for line in self.raw.split(b"\r\n")[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


@dataclass
class Connection:
    sock: socket.socket
    data: bytearray = field(default_factory=bytearray)
    heads: list[Head] = field(default_factory=list)
    pos: int = 0  # how far this upstream has consumed `data`
    closed: threading.Event = field(default_factory=threading.Event)  # the peer closed (EOF or reset)
    answered: int = 0

    # -- reading, each bounded by a deadline ----------------------------------------------------
    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False at EOF, reset or the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
        except (TimeoutError, OSError):
            chunk = b""
        if not chunk:
            return False
        self.data += chunk
        return True

    def read_head(self, timeout: float = 10.0) -> Head | None:
        deadline = time.monotonic() + timeout
        while True:
            end = self.data.find(b"\r\n\r\n", self.pos)
            if end >= 0:
                head = Head(bytes(self.data[self.pos:end + 4]), self.pos)
                self.pos = end + 4
                self.heads.append(head)
                return head
            if len(self.data) - self.pos > MAX_HEAD or not self._fill(deadline):
                return None

    def read_exact(self, n: int, timeout: float = 10.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while len(self.data) - self.pos < n:
            if not self._fill(deadline):
                return None
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def read_body(self, head: Head, timeout: float = 10.0) -> bytes | None:
        """The body as the head frames it (Content-Length or chunked); None if it never came whole."""
        length = head.header("content-length")
        if length is not None:
            return self.read_exact(int(length), timeout)
        if (head.header("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                deadline = time.monotonic() + timeout
                while (eol := self.data.find(b"\r\n", self.pos)) < 0:
                    if not self._fill(deadline):
                        return None
                size = int(bytes(self.data[self.pos:eol]).split(b";")[0], 16)
                self.pos = eol + 2
                if size == 0:
                    return bytes(body) if self.read_exact(2, timeout) == b"\r\n" else None
                piece = self.read_exact(size + 2, timeout)
                if piece is None:
                    return None
                body += piece[:-2]
        return b""

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Read (and record) until the gateway closes the connection; True if it did in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            try:
                self.sock.settimeout(max(0.001, remaining))
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            self.data += chunk
        return False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass


def respond(conn: Connection, status: int = 200, body: bytes = b"", headers: tuple[str, ...] = (),
            head_request: bool = False) -> None:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    conn.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_request else body))
    conn.answered += 1


def well_behaved(conn: Connection, head: Head) -> bool:
    """Read the body, answer 200 with `ok:<target>`, keep the connection."""
    if conn.read_body(head) is None:
        return False
    respond(conn, 200, b"ok:" + head.target.encode(), head_request=head.method == "HEAD")
    return True


# behaviour(conn, head) -> keep serving this connection?
Behaviour = Callable[[Connection, Head], bool]


class ScriptedUpstream:
    """`behaviour` may be swapped between tests; `connections` records everything."""

    def __init__(self, behaviour: Behaviour = well_behaved, port: int = 0):
        self.behaviour = behaviour
        self.connections: list[Connection] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ScriptedUpstream:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn = Connection(sock)
            with self._lock:
                self.connections.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: Connection) -> None:
        try:
            while not self._stop.is_set():
                head = conn.read_head(timeout=30.0)
                if head is None:
                    break
                if not self.behaviour(conn, head):
                    break
            conn.wait_closed(timeout=30.0 if not self._stop.is_set() else 0.01)
        finally:
            conn.closed.set()
            try:
                conn.sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        for conn in list(self.connections):
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)

    # -- what the assertions need -----------------------------------------------------------------
    def mark(self) -> int:
        """How many connections exist now (to look only at those opened later)."""
        return len(self.connections)

    def heads(self) -> list[Head]:
        return [head for conn in list(self.connections) for head in conn.heads]

    def connection_with(self, target: str) -> Connection:
        found = [conn for conn in list(self.connections) if any(h.target == target for h in conn.heads)]
        assert len(found) == 1, f"{target} was read on {len(found)} connections"
        return found[0]

    def assert_no_desync(self, meant: Callable[[str], bool]) -> None:
        """No recorded request starts with bytes other than a request line the gateway meant to send:
        every head this upstream read begins with a well-formed request line whose target `meant`
        accepts (never a piece of a body, never a smuggled request)."""
        for index, conn in enumerate(list(self.connections)):
            for head in conn.heads:
                match = REQUEST_LINE.match(head.line)
                assert match is not None, (
                    f"connection {index}: a request the upstream read began with {head.raw[:80]!r} "
                    f"(offset {head.offset})")
                assert meant(match.group(2).decode("latin-1")), (
                    f"connection {index}: the upstream read a request the gateway never meant: {head.line!r}")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
