# The upstream connection of fastgw/upstream.py's pool. Mirrors fastgw/_py/upstream.py (the twin and
# reference); keep the two in step.
#
# PERF: uvloop calls data_received once per read; as a Python method with the parser behind an
# attribute it cost ~2.5k instructions a read besides the parse. Here the read callback, the parse
# (ResponseParser of _http1.pxi, called as C) and the waking of the waiting request are C.


class UpstreamError(Exception):
    """A failed upstream exchange. `kind` is the gateway response type it becomes."""

    def __init__(self, kind, reason, retryable=False):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        # True when the upstream cannot have acted on the request (nothing came back and the
        # connection broke), so an idempotent request may be sent again on a new connection.
        self.retryable = retryable


@cython.final
cdef class UpstreamConnection:
    """One keep-alive connection; one exchange at a time (see fastgw/_py/upstream.py)."""

    cdef public object pool
    cdef public object transport
    cdef public ResponseParser parser
    cdef public bint closed
    cdef public object waiter          # resolved when the response (or its head) is in
    cdef public object body_waiter     # resolved when more body (or the end) is in
    cdef public object drain_waiter
    cdef public object error
    cdef public double deadline
    cdef public double idle_since
    cdef public bint paused_reading
    cdef public bint write_paused
    cdef public bint got_bytes
    cdef public Py_ssize_t buffer_response_bytes
    cdef public Py_ssize_t body_high_water
    cdef public double body_idle_seconds

    def __init__(self, pool):
        self.pool = pool
        settings = pool.connection_settings
        self.parser = ResponseParser(settings[0], settings[1])
        self.buffer_response_bytes = settings[2]
        self.body_high_water = settings[3]
        self.body_idle_seconds = settings[4]
        self.transport = None
        self.closed = False
        self.waiter = None
        self.body_waiter = None
        self.drain_waiter = None
        self.error = None

    cpdef object send(self, bytes data, bint head_request, double timeout):
        """Start an exchange on this connection: send `data` (the request, or its head when the
        caller streams the body after it). The future resolves when the response (or its head) is
        in, or fails with UpstreamError; the caller discards the connection when it fails or is
        cancelled."""
        self.parser.reset(head_request)
        self.error = None
        self.got_bytes = False
        loop = self.pool.loop
        self.deadline = loop.time() + timeout
        waiter = loop.create_future()
        self.waiter = waiter
        self.transport.write(data)
        return waiter

    # -- the asyncio protocol (uvloop calls these) ---------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, bytes data):
        cdef ResponseParser parser = self.parser
        cdef int state
        self.got_bytes = True
        try:
            state = parser.feed(data)
        except ResponseError as exc:
            self._fail(UpstreamError("INTEGRATION_FAILURE", f"invalid upstream response: {exc}"))
            self.close()
            return
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

    def eof_received(self):
        return None  # let the transport close (then connection_lost), as asyncio.Protocol does

    def connection_lost(self, exc):
        cdef ResponseParser parser = self.parser
        self.closed = True
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
                self._fail(UpstreamError("INTEGRATION_FAILURE", "upstream closed the connection",
                                         not self.got_bytes))
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.pool.forget(self)

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- exchange --------------------------------------------------------------------------------
    cdef _fail(self, exc):
        if self.error is None:
            self.error = exc
        for waiter in (self.waiter, self.body_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        self.waiter = None
        self.body_waiter = None

    def close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self):
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self):
        if self.waiter is not None or self.body_waiter is not None:
            self._fail(UpstreamError("INTEGRATION_TIMEOUT", "upstream timed out"))
        self.abort()

    async def drain(self):
        if self.write_paused and not self.closed:
            self.drain_waiter = self.pool.loop.create_future()
            await self.drain_waiter
        if self.error is not None:
            raise self.error

    async def next_chunk(self):
        """The next piece of a streamed response body; None at its end."""
        cdef ResponseParser parser = self.parser
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
