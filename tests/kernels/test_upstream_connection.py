"""The upstream connection (src_ext/_upstream.pxi) against its pure-Python twin (fastgw/_py/upstream.py),
driven as uvloop drives it: connection_made, data_received, connection_lost, with a stand-in transport."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fastgw._py import upstream as py

IMPLS = [pytest.param(py, id="py")]
if not os.environ.get("FASTGW_NO_EXTENSIONS"):
    from fastgw import _core

    IMPLS.insert(0, pytest.param(_core, id="c"))


def in_loop(test: Callable[[Any], Awaitable[None]]) -> Callable[[Any], None]:
    """Run an async test in a fresh event loop (the connection needs a running loop for its futures)."""
    @functools.wraps(test)
    def run(mod: Any, **params: Any) -> None:
        asyncio.run(test(mod, **params))  # type: ignore[arg-type,call-arg]

    return run


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = self.aborted = self.paused = False
        self.unsent = 0  # bytes still in the transport's write buffer

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Pool:
    def __init__(self, loop: asyncio.AbstractEventLoop, buffer_bytes: int = 1024, high_water: int = 4096) -> None:
        self.loop = loop
        self.connection_settings = (60 * 1024, 100, buffer_bytes, high_water, 30.0)
        self.forgotten: list[Any] = []
        self.faults: list[str] = []

    def forget(self, conn: Any) -> None:
        self.forgotten.append(conn)

    def framing_fault(self, kind: str) -> None:
        self.faults.append(kind)


def connect(mod: Any, **settings: int) -> tuple[Any, Transport, Pool]:
    pool = Pool(asyncio.get_running_loop(), **settings)
    conn = mod.UpstreamConnection(pool)
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport, pool


GET = b"GET / HTTP/1.1\r\n\r\n"


async def failure(mod: Any, waiter: Any) -> Any:
    """The UpstreamError the exchange's future fails with."""
    with pytest.raises(mod.UpstreamError) as failed:
        await waiter
    return failed.value


SMALL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_small_response_is_read_whole(mod: Any) -> None:
    conn, transport, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    assert transport.written == [b"GET / HTTP/1.1\r\n\r\n"] and not waiter.done()
    conn.data_received(SMALL[:30])
    assert not waiter.done()  # the head is not complete yet
    conn.data_received(SMALL[30:])
    await waiter
    assert conn.parser.complete and conn.parser.take_body() == b"hello"
    assert conn.parser.headers == [("Content-Type", "text/plain")]


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_large_body_wakes_at_the_head_then_streams_with_back_pressure(mod: Any) -> None:
    conn, transport, _ = connect(mod, buffer_bytes=16, high_water=64)
    waiter = conn.send(b"GET /big HTTP/1.1\r\n\r\n", False, 5.0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"a" * 100)
    await waiter  # past the read-whole limit: the head is enough
    assert transport.paused  # 100 buffered bytes > high water
    assert await conn.next_chunk() == b"a" * 100
    assert not transport.paused
    pending = asyncio.ensure_future(conn.next_chunk())
    await asyncio.sleep(0)
    conn.data_received(b"b" * 100)
    assert await pending == b"b" * 100
    assert await conn.next_chunk() is None


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_an_invalid_response_fails_the_exchange_and_closes(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    error = await failure(mod, waiter)
    assert error.kind == "INTEGRATION_FAILURE" and not error.retryable
    assert transport.closed and conn.closed and not conn.reusable
    assert pool.faults == ["status_line"]


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_connection_lost_before_any_byte_is_retryable(mod: Any) -> None:
    conn, _, pool = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.connection_lost(None)
    assert (await failure(mod, waiter)).retryable and pool.forgotten == [conn]


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_connection_lost_after_some_bytes_is_not_retryable(mod: Any) -> None:
    conn, _, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    conn.connection_lost(None)
    assert not (await failure(mod, waiter)).retryable


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_close_delimited_body_ends_with_the_connection(mod: Any) -> None:
    conn, _, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart")
    await waiter
    assert await conn.next_chunk() == b"part"
    pending = asyncio.ensure_future(conn.next_chunk())
    await asyncio.sleep(0)
    conn.connection_lost(None)
    assert await pending is None and conn.parser.complete


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_timeout_fails_the_exchange_and_aborts(mod: Any) -> None:
    conn, transport, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    assert conn.deadline > asyncio.get_running_loop().time()
    conn.timed_out()
    assert (await failure(mod, waiter)).kind == "INTEGRATION_TIMEOUT" and transport.aborted


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_drain_waits_for_resume_writing(mod: Any) -> None:
    conn, _, _ = connect(mod)
    conn.pause_writing()
    drained = asyncio.ensure_future(conn.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    conn.resume_writing()
    await drained


# -- connection safety (issue 22): reuse only at a proven message boundary -------------------------
POST = b"POST /p HTTP/1.1\r\ncontent-length: 4\r\n\r\nbody"


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_plain_exchange_leaves_the_connection_reusable(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(POST, False, 5.0, 1)
    conn.data_received(SMALL)
    await waiter
    assert conn.reusable and not conn.early and conn.parser.keep_alive and not transport.closed
    assert pool.faults == []


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_bytes_on_an_idle_connection_close_it_unparsed(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    conn.data_received(SMALL)  # no exchange yet: a response to a request never sent
    assert transport.closed and conn.closed and pool.faults == ["unsolicited"]
    assert conn.parser.status == 0  # never parsed
    waiter = conn.send(GET, False, 5.0)  # a closed connection fails at once, retryable, sends nothing
    assert (await failure(mod, waiter)).retryable and transport.written == []


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_bytes_after_the_response_in_a_later_read_close_it(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(SMALL)
    await waiter
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert transport.closed and not conn.reusable and pool.faults == ["after_response"]
    assert conn.parser.take_body() == b"hello"  # the response itself is still whole
    conn.exchanging = False  # the pool released it: later bytes are not counted again
    conn.data_received(b"more")
    assert pool.faults == ["after_response"]


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_bytes_after_the_response_in_the_same_read_close_it(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(SMALL + b"GET /smuggled HTTP/1.1\r\n\r\n")
    await waiter
    assert conn.parser.take_body() == b"hello"
    assert transport.closed and not conn.reusable and pool.faults == ["after_response"]


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_response_before_the_streamed_body_ended_is_early(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(b"POST /p HTTP/1.1\r\ncontent-length: 100000\r\n\r\n", False, 5.0, 2)
    conn.pause_writing()  # the upstream stopped reading the body
    drained = asyncio.ensure_future(conn.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    conn.data_received(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    await drained  # the sender wakes up and stops
    await waiter
    assert conn.early and not conn.reusable and not conn.request_done
    assert pool.faults == ["early_response"] and not transport.closed  # closed by the pool's release


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_response_while_the_request_is_still_buffered_is_early(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(POST, False, 5.0, 1)
    transport.unsent = 2  # the transport had not written it all yet
    conn.data_received(SMALL)
    await waiter
    assert conn.early and not conn.reusable and pool.faults == ["early_response"]


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_streamed_body_ended_before_the_response_is_not_early(mod: Any) -> None:
    conn, _, pool = connect(mod)
    waiter = conn.send(b"POST /p HTTP/1.1\r\ncontent-length: 4\r\n\r\n", False, 5.0, 2)
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")  # interim: not the response yet
    conn.end_request()
    conn.data_received(SMALL)
    await waiter
    assert conn.reusable and not conn.early and pool.faults == []


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize(("body", "status", "reusable"), [(1, 413, False), (1, 500, False), (0, 404, True),
                                                         (1, 201, True), (1, 302, True)])
@in_loop
async def test_an_error_answer_to_a_request_with_a_body_is_not_reused(mod: Any, body: int, status: int,
                                                                      reusable: bool) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(POST if body else GET, False, 5.0, body)
    conn.data_received(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)
    await waiter
    assert conn.reusable is reusable and not conn.early and pool.faults == [] and not transport.closed


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_a_204_announcing_a_body_closes(mod: Any) -> None:
    conn, transport, pool = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
    await waiter
    assert conn.parser.status == 204 and conn.parser.complete
    assert transport.closed and not conn.reusable and pool.faults == ["body_not_allowed"]


# -- against a model: a sequence of exchanges on one connection --------------------------------------
# The model is what RFC 9112 says of each generated response, written down when it is generated:
# its body, and whether the connection may carry the next exchange (persistent and self-delimited).

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bytes, list[int], bytes, bool, bool]:
    """(response bytes, read boundaries, the body the client must get, reusable after it, ends at EOF)."""
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    connection = draw(st.sampled_from([None, "close", "keep-alive"]))
    framing = draw(st.sampled_from(["length", "chunked", "close"] if version == "1.1" else ["length", "close"]))
    body = draw(st.binary(max_size=2500))  # past the 1024-byte read-whole limit too: streamed
    head = [f"HTTP/{version} {status} X"] + ([f"Connection: {connection}"] if connection else [])
    persistent = connection != "close" if version == "1.1" else connection == "keep-alive"
    if status in (204, 304):
        body, payload, delimited = b"", b"", True
    elif framing == "length":
        head.append(f"Content-Length: {len(body)}")
        payload, delimited = body, True
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 700), max_size=5))
        payload, rest = b"", body
        for size in sizes:
            part, rest = rest[:size], rest[size:]
            if part:
                payload += b"%x\r\n%s\r\n" % (len(part), part)
        if rest:
            payload += b"%x\r\n%s\r\n" % (len(rest), rest)
        payload += b"0\r\n\r\n"
        delimited = True
    else:  # close-delimited: the body ends when the upstream closes
        payload, delimited = body, False
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=5))))
    return data, cuts, body, persistent and delimited, not delimited


@pytest.mark.parametrize("mod", IMPLS)
@settings(max_examples=150, deadline=None)
@given(st.lists(exchanges(), min_size=1, max_size=5))
def test_exchanges_on_one_connection_match_the_model(mod: Any, sequence: list) -> None:
    async def drive() -> None:
        conn, transport, pool = connect(mod)
        for data, cuts, body, reusable, ends_at_eof in sequence:
            waiter = conn.send(GET, False, 5.0)
            start = 0
            for cut in [*cuts, len(data)]:
                conn.data_received(data[start:cut])
                start = cut
            if ends_at_eof:
                conn.connection_lost(None)
            await waiter
            got = b""
            while (chunk := await conn.next_chunk()) is not None:
                got += chunk
            assert got == body
            # The pool's rule for taking the connection back (fastgw/upstream.py release()).
            parser = conn.parser
            keep = conn.reusable and not conn.closed and parser.keep_alive and parser.complete and conn.error is None
            assert keep == reusable, (data[:120], keep)
            assert pool.faults == []
            conn.exchanging = False
            if not keep:
                return

    asyncio.run(drive())


@pytest.mark.parametrize("mod", IMPLS)
@in_loop
async def test_settle_keeps_only_a_connection_whose_exchange_ended_cleanly(mod: Any) -> None:
    """`settle` (the pool's release): a complete keep-alive response leaves the connection reusable, its
    exchange state reset and reading resumed; anything else says close it."""
    conn, transport, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(SMALL)
    await waiter
    conn.paused_reading = True
    transport.paused = True
    assert conn.settle(123.5) is True
    assert not conn.exchanging and conn.deadline == 0.0 and conn.idle_since == 123.5
    assert not conn.paused_reading and not transport.paused

    conn, _, _ = connect(mod, buffer_bytes=16)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhel")  # streamed, not read to its end
    await waiter
    assert conn.settle(1.0) is False and not conn.exchanging

    conn, _, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    await waiter
    assert conn.settle(1.0) is False  # no keep-alive

    conn, _, _ = connect(mod)
    waiter = conn.send(GET, False, 5.0)
    conn.data_received(SMALL)
    await waiter
    conn.reusable = False
    assert conn.settle(1.0) is False
