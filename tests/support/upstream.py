"""A recording, scriptable HTTP/1.1 upstream for tests, on its own thread and event loop.

Every byte received is recorded per connection; every parsed request is recorded with its method,
target, headers and body. A `behaviour(request) -> Action` hook decides the answer: echo as JSON
(default), delay, never answer, close/reset, or raw bytes (garbage, bad framing...).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class Recorded:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class Action:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None  # None: echo the request as JSON
    delay: float = 0.0
    raw: bytes | None = None  # sent verbatim instead of a response
    close: bool = False  # close after answering (or instead, when raw is b"")
    reset: bool = False  # RST instead of answering
    hang: bool = False  # never answer


class _Conn(asyncio.Protocol):
    def __init__(self, server: RecordingUpstream):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._url = b""
        self.queue: list[Recorded] = []
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.transports.add(transport)
        self.server.raw_connections.append(self.raw)
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.raw.extend(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport:
                self.transport.close()

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = bytearray()
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.extend(body)

    def on_message_complete(self) -> None:
        request = Recorded(self.parser.get_method().decode(), self._url.decode("latin-1"), self._headers,
                           bytes(self._body))
        self.server.requests.append(request)
        self.queue.append(request)
        if not self.busy:
            asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        self.busy = True
        try:
            while self.queue:
                await self._answer(self.queue.pop(0))
        finally:
            self.busy = False

    async def _answer(self, request: Recorded) -> None:
        action = self.server.behaviour(request)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if action.hang:
            return
        if action.delay:
            await asyncio.sleep(action.delay)
        if transport.is_closing():
            return
        if action.reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            transport.abort()
            return
        if action.raw is not None:
            transport.write(action.raw)
            if action.close:
                transport.close()
            return
        body = action.body
        if body is None:
            body = json.dumps({
                "method": request.method, "target": request.target,
                "headers": request.headers, "body": request.body.decode("latin-1"),
            }).encode()
        head = [f"HTTP/1.1 {action.status} X"]
        names = {k.lower() for k, _ in action.headers}
        if "content-type" not in names:
            head.append("content-type: application/json")
        head += [f"{k}: {v}" for k, v in action.headers]
        if "content-length" not in names and "transfer-encoding" not in names:
            head.append(f"content-length: {len(body)}")
        if action.close:
            head.append("connection: close")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if request.method != "HEAD":
            payload += body
        transport.write(payload)
        if action.close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open_connections -= 1
        self.server.transports.discard(self.transport)


class RecordingUpstream:
    def __init__(self, behaviour: Callable[[Recorded], Action] | None = None, port: int = 0,
                 host: str = "127.0.0.1"):
        self.behaviour = behaviour or (lambda request: Action())
        self.host = host  # any loopback address (127.0.0.0/8 on Linux): two upstreams may share a port
        self.requests: list[Recorded] = []
        self.raw_connections: list[bytearray] = []
        self.transports: set = set()
        self.connections = 0
        self.open_connections = 0
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> RecordingUpstream:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(5)
        return self

    async def _start(self) -> None:
        def factory() -> _Conn:
            self.open_connections += 1
            return _Conn(self)

        self._server = await self._loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening and close every connection; a second call does nothing (a test may stop a
        target before its fixture does)."""
        if not self._thread.is_alive():
            return

        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for transport in list(self.transports):
                transport.close()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
        except Exception:  # noqa: BLE001
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def all_bytes(self) -> bytes:
        return b"".join(bytes(raw) for raw in self.raw_connections)


class StreamingUpstream:
    """An upstream that answers every request with `size` bytes (Content-Length), written 64 KiB at
    a time with back-pressure, and records how many bytes it got to write and whether the reader
    went away before the end (the gateway dropping the exchange)."""

    def __init__(self, size: int):
        self.size = size
        self.written = 0
        self.cut_short = 0  # responses whose connection broke before their last byte
        self.finished = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> StreamingUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"s" * 65536
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % self.size)
            sent = 0
            while sent < self.size:
                piece = chunk[: self.size - sent]
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
                self.written += len(piece)
            self.finished += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.cut_short += 1
        finally:
            writer.close()

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
