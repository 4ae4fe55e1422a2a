"""The upstream connection: one keep-alive HTTP/1.1 connection of an UpstreamPool (fastgw/upstream.py).

The twin of src_ext/_upstream.pxi (the reference; keep the two in step). It is an asyncio protocol
(uvloop calls connection_made, data_received, eof_received, connection_lost, pause_writing and
resume_writing) with an exchange API for the pipeline: `send` starts an exchange, the pool's
`discard`/`release` end it, `next_chunk` streams a body, `drain` waits for the upstream to read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .http1 import ResponseError, ResponseParser


class UpstreamError(Exception):
    """A failed upstream exchange. `kind` is the gateway response type it becomes."""

    def __init__(self, kind: str, reason: str, retryable: bool = False):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        # True when the upstream cannot have acted on the request (nothing came back and the
        # connection broke), so an idempotent request may be sent again on a new connection.
        self.retryable = retryable


class UpstreamConnection:
    """One keep-alive connection; one exchange at a time.

    Parsing is the ResponseParser kernel's (one call per read); this class only moves the
    exchange along: it wakes the request waiting for the head, then the one reading the body.
    """

    __slots__ = (
        "pool", "transport", "parser", "closed", "waiter", "body_waiter", "drain_waiter", "error",
        "deadline", "idle_since", "paused_reading", "write_paused", "got_bytes", "buffer_response_bytes",
        "body_high_water", "body_idle_seconds", "exchanging", "request_done", "request_body", "head_seen", "early",
        "reusable",
    )

    def __init__(self, pool: Any):
        self.pool = pool
        # (max response header bytes, max header count, read-whole limit, body high water, body idle s)
        max_header_bytes, max_header_count, self.buffer_response_bytes, self.body_high_water, \
            self.body_idle_seconds = pool.connection_settings
        self.transport: Any = None
        self.parser = ResponseParser(max_header_bytes, max_header_count)
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
        # Connection safety (issue 22): reused only when both sides provably ended at a message
        # boundary. `exchanging`: between send() and the pool's release; `request_done`: the whole
        # request was handed to the transport; `request_body`: the request has a body; `early`: the
        # response head came before the request was all written; `reusable`: nothing ruled reuse out.
        self.exchanging = False
        self.request_done = True
        self.request_body = False
        self.head_seen = False
        self.early = False
        self.reusable = True

    def send(self, data: bytes, head_request: bool, timeout: float, body: int = 0) -> asyncio.Future:
        """Start an exchange on this connection: send `data` (the request, or its head when the
        caller streams the body after it). `body`: 0 no request body, 1 the body is in `data`, 2 the
        body follows (the caller writes it, then calls end_request()). The future resolves when the
        response (or its head) is in, or fails with UpstreamError; the caller discards the
        connection when it fails or is cancelled."""
        self.parser.reset(head_request)
        self.error = None
        self.got_bytes = False
        self.exchanging = True
        self.request_done = body != 2
        self.request_body = body != 0
        self.head_seen = self.early = False
        self.reusable = True
        loop = self.pool.loop
        self.deadline = loop.time() + timeout
        waiter = self.waiter = loop.create_future()
        if self.closed:
            # Closed while idle (the upstream said something unasked, or went away): nothing was
            # sent, so the request may go again on a new connection.
            self._fail(UpstreamError("INTEGRATION_FAILURE", "upstream connection closed", True))
            return waiter
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    def end_request(self) -> None:
        """The caller wrote the last byte of a streamed request body."""
        self.request_done = True

    def settle(self, now: float) -> bool:
        """The exchange is over (the pool's release): True when this connection may wait for the next one
        in the idle list (its exchange state reset, reading resumed; `now`: the loop's time), False when it
        must be closed (not reusable, closed, no keep-alive, a response not read to its end, an error)."""
        parser = self.parser
        self.exchanging = False
        if not self.reusable or self.closed or not parser.keep_alive or not parser.complete or self.error is not None:
            return False
        if self.paused_reading and self.transport is not None:
            self.paused_reading = False
            self.transport.resume_reading()
        self.deadline = 0.0
        self.idle_since = now
        return True

    # -- the asyncio protocol (uvloop calls these) ---------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if not self.exchanging or parser.complete:
            # A response to no request (idle in the pool, or after the end of the exchange's
            # response): never parsed, never handed to the next exchange.
            self._fault("unsolicited" if not self.exchanging else "after_response")
            return
        self.got_bytes = True
        try:
            state = parser.feed(data)
        except ResponseError as exc:
            self.reusable = False
            self.pool.framing_fault(exc.kind)
            self._fail(UpstreamError("INTEGRATION_FAILURE", f"invalid upstream response: {exc}"))
            self.close()
            return
        if state and not self.head_seen:
            self._head_in()
        waiter = self.waiter
        if waiter is not None:
            # The head is complete and so is the message, or its body is one to stream.
            if state and (parser.complete or not 0 <= parser.content_length <= self.buffer_response_bytes):
                self.waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        elif parser.buffered or parser.complete:
            waiter = self.body_waiter
            if waiter is not None:
                self.body_waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        if parser.buffered > self.body_high_water and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        if parser.fault is not None:
            self._fault(parser.fault)

    def _head_in(self) -> None:
        """The final response head is in: may this connection carry another exchange?"""
        self.head_seen = True
        if not self.request_done or (self.transport is not None and self.transport.get_write_buffer_size()):
            # The upstream answered before it had the whole request: what it did not read would be
            # read as the start of the next request. Stop sending, relay the response, close.
            self.early = True
            self.reusable = False
            self.pool.framing_fault("early_response")
            waiter = self.drain_waiter
            if waiter is not None:
                self.drain_waiter = None
                if not waiter.done():
                    waiter.set_result(None)
        elif self.request_body and self.parser.status >= 400:
            # An error answer to a request with a body: the upstream may have answered without
            # reading the body (its bytes being on the wire proves nothing), so the next message
            # boundary on this connection is unknown.
            self.reusable = False

    def _fault(self, kind: str) -> None:
        """A fault that rules out reuse but leaves the response (if any) whole: counted, then the
        connection is closed (a response read so far stays readable; connection_lost ends it)."""
        if self.reusable or not self.closed:
            self.pool.framing_fault(kind)
        self.reusable = False
        if not self.closed:
            self.close()

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

    def eof_received(self) -> bool | None:
        return None  # let the transport close (then connection_lost), as asyncio.Protocol does

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
            self.deadline = self.pool.loop.time() + self.body_idle_seconds
            self.body_waiter = self.pool.loop.create_future()
            await self.body_waiter
