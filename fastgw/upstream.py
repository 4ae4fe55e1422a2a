"""HTTP/1.1 upstream client: a keep-alive connection pool per upstream, one per worker process.

Each connection is an asyncio.Protocol with an httptools (llhttp) response parser and carries one
exchange at a time. The pipeline writes the serialised request head (and the body, streamed when
it is large), then waits for the response: whole when its Content-Length is at most
BUFFER_RESPONSE_BYTES (handed back as one bytes object), else for its head; larger, chunked and
close-delimited bodies are then streamed chunk by chunk with back-pressure (reading from the
upstream pauses while the client is slow).

Failure mapping (RELIABILITY.md §c): connect refused / reset before the response head / invalid
response → UpstreamError("INTEGRATION_FAILURE") → 502; connect timeout and integration timeout →
UpstreamError("INTEGRATION_TIMEOUT") → 504. A connection that failed, timed out, or answered with
bad framing is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

from ._accel import ResponseError, ResponseParser

# Response header limits (RELIABILITY.md F-08): beyond these the response is refused with 502.
MAX_RESPONSE_HEADER_BYTES = 60 * 1024
MAX_RESPONSE_HEADER_COUNT = 100
# A response whose Content-Length is at most this is read whole before it is relayed (one response
# call to the server layer instead of a stream of chunks, as nginx's proxy buffering does); larger
# ones, chunked and close-delimited ones are streamed as they arrive. PERF: with the worker's malloc
# settings (fastgw/allocator.py) a 64 KiB response read whole costs less than streamed (59 against
# 69 µs of CPU per request in an A/B run); at most 64 connections' worth of this is held per worker
# under the harness's load (16 MiB).
BUFFER_RESPONSE_BYTES = 256 * 1024
# Integrations that transform a response read it whole, up to AWS's integration payload limit.
INTEGRATION_RESPONSE_LIMIT = 10 * 1024 * 1024
# Upstream reads pause while this many body bytes wait for the client.
BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024
POOL_IDLE_SECONDS = 30.0
BODY_IDLE_SECONDS = 30.0
MAX_IN_FLIGHT = 1024
REAPER_TICK = 0.05


class UpstreamError(Exception):
    """A failed upstream exchange. `kind` is the gateway response type it becomes."""

    def __init__(self, kind: str, reason: str, retryable: bool = False):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        # True when the upstream cannot have acted on the request (nothing came back and the
        # connection broke), so an idempotent request may be sent again on a new connection.
        self.retryable = retryable


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time.

    Parsing is the ResponseParser kernel's (one call per read); this class only moves the
    exchange along: it wakes the request waiting for the head, then the one reading the body.
    """

    __slots__ = (
        "pool", "transport", "parser", "closed", "waiter", "body_waiter", "drain_waiter", "error",
        "deadline", "idle_since", "paused_reading", "write_paused", "got_bytes",
    )

    def __init__(self, pool: UpstreamPool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADER_COUNT)
        self.closed = False
        self.waiter: asyncio.Future | None = None  # resolved when the response (or its head) is in
        self.body_waiter: asyncio.Future | None = None  # resolved when more body (or the end) is in
        self.drain_waiter: asyncio.Future | None = None
        self.error: UpstreamError | None = None
        self.deadline = 0.0
        self.idle_since = 0.0
        self.paused_reading = False
        self.write_paused = False
        self.got_bytes = False

    def send(self, data: bytes, head_request: bool, timeout: float) -> asyncio.Future:
        """Start an exchange on this connection: send `data` (the request, or its head when the
        caller streams the body after it). The future resolves when the response (or its head) is in,
        or fails with UpstreamError; the caller discards the connection when it fails or is cancelled."""
        self.parser.reset(head_request)
        self.error = None
        self.got_bytes = False
        loop = self.pool.loop
        self.deadline = loop.time() + timeout
        waiter = self.waiter = loop.create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        parser = self.parser
        try:
            state = parser.feed(data)
        except ResponseError as exc:
            self._fail(UpstreamError("INTEGRATION_FAILURE", f"invalid upstream response: {exc}"))
            self.close()
            return
        waiter = self.waiter
        if waiter is not None:
            # The head is complete and so is the message, or its body is one to stream.
            if state and (parser.complete or not 0 <= parser.content_length <= BUFFER_RESPONSE_BYTES):
                self.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        elif parser.buffered or parser.complete:
            waiter = self.body_waiter
            if waiter is not None:
                self.body_waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        if parser.buffered > BODY_HIGH_WATER and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self.parser
        if not parser.complete:
            if parser.status:
                try:
                    parser.eof()  # completes a body delimited by the connection's end
                except ResponseError:
                    pass
            if parser.complete:
                waiter = self.body_waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            else:
                retryable = not self.got_bytes
                self._fail(UpstreamError("INTEGRATION_FAILURE", "upstream closed the connection", retryable))
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- exchange ----------------------------------------------------------------------------
    def _fail(self, exc: UpstreamError) -> None:
        if self.error is None:
            self.error = exc
        for waiter in (self.waiter, self.body_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        self.waiter = self.body_waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self) -> None:
        if self.waiter is not None or self.body_waiter is not None:
            self._fail(UpstreamError("INTEGRATION_TIMEOUT", "upstream timed out"))
        self.abort()

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.drain_waiter = self.pool.loop.create_future()
            await self.drain_waiter
        if self.error is not None:
            raise self.error

    async def next_chunk(self) -> bytes | None:
        """The next piece of a streamed response body; None at its end."""
        parser = self.parser
        while True:
            if parser.buffered:
                body = parser.take_body()
                if self.paused_reading and self.transport is not None:
                    self.paused_reading = False
                    self.transport.resume_reading()
                return body
            if parser.complete:
                return None
            if self.error is not None:
                raise self.error
            self.deadline = self.pool.loop.time() + BODY_IDLE_SECONDS
            self.body_waiter = self.pool.loop.create_future()
            await self.body_waiter


class UpstreamPool:
    """Keep-alive connections to one upstream (scheme, host, port) in one worker."""

    def __init__(self, scheme: str, host: str, port: int, connect_timeout: float = 5.0):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if scheme == "https" else None
        self.idle: deque[UpstreamConnection] = deque()
        self.busy: set[UpstreamConnection] = set()
        self.loop: Any = None
        self._reaper: asyncio.TimerHandle | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def _connect(self) -> UpstreamConnection:
        loop = self.loop
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamError("INTEGRATION_TIMEOUT", "upstream connect timed out") from None
        except OSError as exc:
            raise UpstreamError("INTEGRATION_FAILURE", f"upstream connect failed: {exc.strerror or exc}") from None
        return conn

    def take_idle(self) -> UpstreamConnection | None:
        """A pooled keep-alive connection for one exchange, or None (then `connect`)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self._track(conn)
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection for one exchange."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        conn = await self._connect()
        self._track(conn)
        return conn

    async def acquire(self, fresh: bool = False) -> UpstreamConnection:
        return (None if fresh else self.take_idle()) or await self.connect()

    def _track(self, conn: UpstreamConnection) -> None:
        busy = self.busy
        if len(busy) >= MAX_IN_FLIGHT:
            conn.close()
            raise UpstreamError("SERVICE_UNAVAILABLE", "upstream connection limit reached")
        busy.add(conn)
        if self._reaper is None:
            self._reaper = self.loop.call_later(REAPER_TICK, self._reap)

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange: back to the idle list if it is reusable."""
        self.busy.discard(conn)
        parser = conn.parser
        if conn.closed or not parser.keep_alive or not parser.complete or conn.error is not None:
            conn.close()
            return
        if conn.paused_reading and conn.transport is not None:
            conn.paused_reading = False
            conn.transport.resume_reading()
        conn.deadline = 0.0
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        self.busy.discard(conn)
        conn.abort()

    def forget(self, conn: UpstreamConnection) -> None:
        self.busy.discard(conn)

    def _reap(self) -> None:
        """Fire exchange deadlines and close connections idle for too long (one timer per pool)."""
        now = self.loop.time()
        for conn in [c for c in self.busy if c.deadline and c.deadline <= now]:
            conn.timed_out()
            self.busy.discard(conn)
        idle = self.idle
        while idle and (idle[0].closed or now - idle[0].idle_since > POOL_IDLE_SECONDS):
            idle.popleft().close()
        if self.busy or idle:
            self._reaper = self.loop.call_later(REAPER_TICK, self._reap)
        else:
            self._reaper = None

    def close(self) -> None:
        for conn in list(self.idle) + list(self.busy):
            conn.close()
        self.idle.clear()
        self.busy.clear()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None


async def exchange(
    pool: UpstreamPool,
    head: bytes,
    body: bytes,
    head_request: bool,
    idempotent: bool,
    timeout: float,
    fresh: bool = False,
) -> UpstreamConnection:
    """Send a request whose body is in memory; return the connection holding the response head.

    The caller reads the body from `conn.parser` / `next_chunk` and hands the connection back with
    `pool.release`. One transparent retry on a fresh connection for idempotent requests when the
    upstream dropped the connection without answering. `fresh`: skip the pool's idle connections.
    """
    attempt = 0
    data = head + body if body else head
    while True:
        conn = (None if attempt or fresh else pool.take_idle()) or await pool.connect()
        try:
            await conn.send(data, head_request, timeout)
            return conn
        except UpstreamError as exc:
            pool.discard(conn)
            if exc.retryable and idempotent and attempt == 0:
                # The upstream dropped the connection without answering (typically a keep-alive
                # connection it had just closed): send once more on a new connection. Never for
                # non-idempotent methods, which the upstream may have acted on.
                attempt += 1
                continue
            raise
        except asyncio.CancelledError:
            pool.discard(conn)
            raise


async def read_whole_response(conn: UpstreamConnection, limit: int = INTEGRATION_RESPONSE_LIMIT) -> bytes:
    """The response body of an exchange, in memory (integrations that transform it), then the
    connection goes back to its pool. Past `limit` bytes the connection is dropped and the answer is
    a 502 (AWS caps integration responses at 10 MB)."""
    pool = conn.pool
    chunks: list[bytes] = []
    size = 0
    try:
        while (chunk := await conn.next_chunk()) is not None:
            size += len(chunk)
            if size > limit:
                raise UpstreamError("INTEGRATION_FAILURE", f"integration response larger than {limit} bytes")
            chunks.append(chunk)
    except BaseException:
        pool.discard(conn)
        raise
    pool.release(conn)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

