# cython: language_level=3
"""The floor of a granian-based proxy: the least an upstream leg on granian + uvloop can cost.

A granian RSGI app that forwards GET requests to one upstream with everything the gateway does
taken out (no routing, no limits, no metrics, no ids) and the upstream connection written as a
Cython extension type: the read callback, the response parse (fastgw's ResponseParser kernel) and the
pool are C; what is left is what asyncio itself needs per exchange (a future, a transport write, the
read callback, the wake-up of the request's coroutine). fastgw cannot be cheaper than this on the same
server and loop; the harness runs it as the `floor` contender so that every run shows how far fastgw
is from it, and how far the floor itself is from nginx (docs/PERF.md).

Built by the harness into its work folder (benchmarks/tools.py build_floor_app); the upstream is
FLOOR_UPSTREAM_PORT on 127.0.0.1. Not a product: no timeouts, no retries, no request bodies.
"""

import asyncio
import os
from collections import deque

from fastgw import allocator, scheduling
from fastgw._core import ResponseParser

allocator.tune_for_proxy()  # the same malloc settings as a fastgw worker (fastgw/allocator.py)
scheduling.apply(os.environ.get("FLOOR_CPU_SCHEDULING", "normal"))  # and the same CPU policy

UPSTREAM_HOST = "127.0.0.1"
UPSTREAM_PORT = int(os.environ.get("FLOOR_UPSTREAM_PORT", "8080"))
HOST_LINE = f"host: {UPSTREAM_HOST}:{UPSTREAM_PORT}\r\n\r\n".encode()


cdef class Connection:
    cdef object transport
    cdef object parser
    cdef object waiter
    cdef bint closed

    def __init__(self):
        self.parser = ResponseParser(61440, 100)
        self.waiter = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, bytes data):
        try:
            self.parser.feed(data)
        except Exception as exc:
            self._fail(exc)
            self.transport.close()
            return
        if self.parser.complete and self.waiter is not None:
            waiter = self.waiter
            self.waiter = None
            waiter.set_result(None)

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        self.closed = True
        self._fail(ConnectionError("upstream closed the connection"))

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    cdef _fail(self, exc):
        if self.waiter is not None:
            waiter = self.waiter
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(exc)

    cdef object send(self, bytes head, object loop):
        self.parser.reset(False)
        self.waiter = loop.create_future()
        self.transport.write(head)
        return self.waiter


cdef object idle = deque()


async def app(scope, proto):
    cdef Connection conn = None
    loop = asyncio.get_running_loop()
    while idle:
        conn = idle.pop()
        if not conn.closed:
            break
        conn = None
    try:
        if conn is None:
            _, conn = await loop.create_connection(Connection, UPSTREAM_HOST, UPSTREAM_PORT)
        await conn.send(f"GET {scope.path} HTTP/1.1\r\n".encode() + HOST_LINE, loop)
    except Exception:
        proto.response_bytes(502, [("content-type", "text/plain")], b"bad gateway")
        return
    parser = conn.parser
    proto.response_bytes(parser.status, parser.headers, parser.take_body())
    if parser.keep_alive and not conn.closed:
        idle.append(conn)
