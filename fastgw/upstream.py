"""HTTP/1.1 upstream client: a keep-alive connection pool per upstream, one per worker process.

Each connection (UpstreamConnection: the compiled one of src_ext/_upstream.pxi, or its twin in
fastgw/_py/upstream.py) is an asyncio protocol with the ResponseParser kernel and carries one
exchange at a time. The pipeline writes the serialised request head (and the body, streamed when
it is large), then waits for the response: whole when its Content-Length is at most
BUFFER_RESPONSE_BYTES (handed back as one bytes object), else for its head; larger, chunked and
close-delimited bodies are then streamed chunk by chunk with back-pressure (reading from the
upstream pauses while the client is slow).

Failure mapping (RELIABILITY.md §c): connect refused / reset before the response head / invalid
response → UpstreamError("INTEGRATION_FAILURE") → 502; connect timeout and integration timeout →
UpstreamError("INTEGRATION_TIMEOUT") → 504. A connection that failed, timed out, or answered with
bad framing is closed, never reused.

Connection safety (issue 22, docs/DESIGN.md "Upstream connection safety"): a connection goes back to
the idle list only when both sides provably ended at a message boundary: the whole request was
written before the response began, the response was framed by Content-Length or chunked and read
to its end, nothing came after it, the upstream did not ask to close, and it was not an error answer
to a request with a body (the upstream may not have read that body). Anything else closes it, and
the framing faults are counted in fastgw_upstream_framing_errors_total{upstream, kind}.

Saturation (RELIABILITY.md F-13): past `server.upstream.maxRequests` exchanges in flight to one upstream
(connecting ones included; per worker, Envoy's circuit breaker `max_requests`) the next request is
refused at once with 503 + Retry-After (`Saturated`), before any connection is made, and counted in
fastgw_upstream_overflow_total{upstream}: slow upstreams cannot pile up timeouts and connections.

Names (RELIABILITY.md F-30): a host name is looked up (fastgw/resolver.py) when the pool first connects
and again every `server.upstream.dnsRefreshSeconds`, in the background: a connect uses the last good
addresses and never waits for a refresh. When the addresses change, idle connections to an address
the name lost are closed and busy ones are closed when their exchange ends (drained, not reused); a
failed lookup keeps the last good addresses and is logged once until the name resolves again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import Any

from ._accel import UpstreamConnection, UpstreamError
from .config.model import UpstreamSettings
from .resolver import Address, is_address, lookup

log = logging.getLogger("fastgw.upstream")

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
REAPER_TICK = 0.05
DEFAULT_SETTINGS = UpstreamSettings()


class Saturated(UpstreamError):
    """Too many requests in flight to one upstream (or upstream group): answered at once with 503."""

    def __init__(self, name: str, limit: int):
        super().__init__("SERVICE_UNAVAILABLE", f"upstream {name} has {limit} requests in flight (maxRequests)")
        self.headers = (("retry-after", "1"),)


def count_overflow(name: str) -> None:
    from . import metrics  # not at the top: the metric files' directory is set before serving starts

    metrics.UPSTREAM_OVERFLOW.labels(name).inc()


def count_dns_failure(host: str) -> None:
    from . import metrics

    metrics.UPSTREAM_DNS_FAILURES.labels(host).inc()


class UpstreamPool:
    """Keep-alive connections to one upstream (scheme, host, port) in one worker."""

    def __init__(self, scheme: str, host: str, port: int, connect_timeout: float = 5.0,
                 settings: UpstreamSettings = DEFAULT_SETTINGS):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_requests = settings.maxRequests
        self.connecting = 0  # connects under way (they count against max_requests)
        # Name resolution (not for an IP address): the last good addresses, when to look again.
        self.named = not is_address(host)
        self.dns_refresh = settings.dnsRefreshSeconds
        self.hosts_file = settings.hostsFile
        self.addresses: tuple[Address, ...] = ()
        self.resolve_due = 0.0
        self.resolving: asyncio.Task | None = None
        self.resolve_failed = False
        self.stale: set[UpstreamConnection] = set()  # busy connections to a lost address: closed at release
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if scheme == "https" else None
        # What each connection of this pool is made with (see fastgw/_py/upstream.py).
        self.connection_settings = (MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADER_COUNT, BUFFER_RESPONSE_BYTES,
                                    BODY_HIGH_WATER, BODY_IDLE_SECONDS)
        self.idle: deque[UpstreamConnection] = deque()
        self.busy: set[UpstreamConnection] = set()
        self.loop: Any = None
        self._reaper: asyncio.TimerHandle | None = None
        self.key = (scheme, host, port)  # the plan's pools by this; a reload keeps a pool of the same key
        self.member: Any = None  # the target of an upstream group (fastgw/upstream_groups.py) it serves

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def adopt(self, other: UpstreamPool) -> None:
        """A reload kept this pool for an upstream `other` (just compiled) also names: take its settings."""
        self.connect_timeout = other.connect_timeout
        self.max_requests = other.max_requests
        self.dns_refresh = other.dns_refresh
        if other.hosts_file != self.hosts_file:
            self.hosts_file = other.hosts_file
            self.resolve_due = 0.0  # look again at the next connect

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connect(self) -> UpstreamConnection:
        loop = self.loop
        factory = lambda: UpstreamConnection(self)  # noqa: E731
        try:
            async with asyncio.timeout(self.connect_timeout):
                if not self.named:
                    _, conn = await loop.create_connection(factory, self.host, self.port, ssl=self.ssl)
                    return conn
                addresses = await self._addresses()
                error: OSError | None = None
                for family, ip in addresses:  # in the resolver's order, as create_connection does
                    try:
                        _, conn = await loop.create_connection(
                            factory, ip, self.port, family=family, ssl=self.ssl,
                            server_hostname=self.host if self.ssl is not None else None)
                    except OSError as exc:
                        error = exc
                        continue
                    if self.addresses is not addresses:
                        self.stale.add(conn)  # the name moved while this connected: use it once
                    return conn
                assert error is not None
                raise error
        except TimeoutError:
            raise UpstreamError("INTEGRATION_TIMEOUT", "upstream connect timed out") from None
        except OSError as exc:
            raise UpstreamError("INTEGRATION_FAILURE", f"upstream connect failed: {exc.strerror or exc}") from None

    # -- names ---------------------------------------------------------------------------------------
    async def _addresses(self) -> tuple[Address, ...]:
        """The addresses to connect to: the last good ones (a due refresh starts in the background), or
        the first lookup's, waited for."""
        if self.addresses:
            if self.loop.time() >= self.resolve_due:
                self._refresh_soon()
            return self.addresses
        task = self._refresh_soon()
        await asyncio.shield(task)
        if not self.addresses:
            raise UpstreamError("INTEGRATION_FAILURE", f"upstream host {self.host} could not be resolved")
        return self.addresses

    def _refresh_soon(self) -> asyncio.Task:
        task = self.resolving
        if task is None:
            task = self.resolving = self.loop.create_task(self._refresh())
        return task

    async def _refresh(self) -> None:
        try:
            found = await lookup(self.loop, self.host, self.port, self.hosts_file)
        except (OSError, UnicodeError) as exc:  # gaierror, an unreadable hosts file, a name IDNA refuses
            count_dns_failure(self.host)
            if not self.resolve_failed:
                self.resolve_failed = True
                kept = ", ".join(ip for _, ip in self.addresses) or "no address yet"
                log.warning("upstream host %s could not be resolved (%s); keeping %s", self.host, exc, kept)
            self.resolve_due = self.loop.time() + self.dns_refresh
            return
        finally:
            self.resolving = None
        if self.resolve_failed:
            self.resolve_failed = False
            log.warning("upstream host %s resolves again", self.host)
        self.resolve_due = self.loop.time() + self.dns_refresh
        if found == self.addresses:
            return
        old, self.addresses = self.addresses, found
        if old:
            log.info("upstream host %s now resolves to %s (was %s)", self.host,
                     ", ".join(ip for _, ip in found), ", ".join(ip for _, ip in old))
            self._drain_lost({ip for _, ip in found})

    def _drain_lost(self, kept: set[str]) -> None:
        """Connections to an address the name no longer has: idle ones close now, busy ones at release."""
        def lost(conn: UpstreamConnection) -> bool:
            transport = conn.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            return peer is None or peer[0] not in kept

        for conn in [c for c in self.idle if lost(c)]:
            self.idle.remove(conn)
            conn.close()
        self.stale.update(c for c in self.busy if lost(c))

    # -- connections ---------------------------------------------------------------------------------
    def take_idle(self) -> UpstreamConnection | None:
        """A pooled keep-alive connection for one exchange, or None (then `connect`)."""
        if len(self.busy) + self.connecting >= self.max_requests:
            count_overflow(self.name)
            raise Saturated(self.name, self.max_requests)
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.busy.add(conn)  # PERF: `_track` inline (the reaper runs while the pool has connections)
                if self._reaper is None:
                    self._reaper = self.loop.call_later(REAPER_TICK, self._reap)
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection for one exchange."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if len(self.busy) + self.connecting >= self.max_requests:
            count_overflow(self.name)
            raise Saturated(self.name, self.max_requests)
        self.connecting += 1
        try:
            conn = await self._connect()
        finally:
            self.connecting -= 1
        self._track(conn)
        return conn

    async def acquire(self, fresh: bool = False) -> UpstreamConnection:
        return (None if fresh else self.take_idle()) or await self.connect()

    def _track(self, conn: UpstreamConnection) -> None:
        self.busy.add(conn)
        if self._reaper is None:
            self._reaper = self.loop.call_later(REAPER_TICK, self._reap)

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange: back to the idle list if it is reusable."""
        self.busy.discard(conn)
        if self.member is not None:
            self.member.succeeded(conn.parser.status)
        if self.stale and conn in self.stale:  # its address is no longer the name's (F-30)
            self.stale.discard(conn)
            conn.reusable = False
        if conn.settle(self.loop.time()):
            self.idle.append(conn)
        elif conn.request_done and not conn.early:
            conn.close()
        else:
            conn.abort()  # what is left of the request must not go out

    def discard(self, conn: UpstreamConnection) -> None:
        self.busy.discard(conn)
        self.stale.discard(conn)
        conn.abort()
        # The error is on its way up with a traceback whose frames hold this connection: dropping it
        # here breaks that cycle, so the request's objects (under RSGI the client's body stream, which
        # granian must see dropped before it can close the client connection) go at once, not at the
        # next collection of the cyclic GC.
        conn.error = None

    def forget(self, conn: UpstreamConnection) -> None:
        self.busy.discard(conn)
        self.stale.discard(conn)

    def framing_fault(self, kind: str) -> None:
        """A connection of this pool saw an upstream framing fault (the connection calls this)."""
        from . import metrics

        metrics.UPSTREAM_FRAMING_ERRORS.labels(f"{self.host}:{self.port}", kind).inc()

    def _reap(self) -> None:
        """Fire exchange deadlines and close connections idle for too long (one timer per pool)."""
        now = self.loop.time()
        for conn in [c for c in self.busy if c.deadline and c.deadline <= now]:
            conn.timed_out()
            self.busy.discard(conn)
            self.stale.discard(conn)
        if self.named and now >= self.resolve_due and self.resolving is None and self.addresses:
            self._refresh_soon()  # pooled connections keep a pool busy without connects: look again here
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
        self.stale.clear()
        if self.resolving is not None:
            self.resolving.cancel()
            self.resolving = None
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
) -> UpstreamConnection:
    """Send a request whose body is in memory; return the connection holding the response head.

    The caller reads the body from `conn.parser` / `next_chunk` and hands the connection back with
    `pool.release`. One transparent retry on a fresh connection for idempotent requests when the
    upstream dropped the connection without answering (`exchange_failed`).
    """
    data = head + body if body else head
    conn = pool.take_idle() or await pool.connect()
    try:
        await conn.send(data, head_request, timeout, 1 if body else 0)
    except UpstreamError as exc:
        return await exchange_failed(pool, conn, exc, data, head_request, idempotent, timeout, 1 if body else 0)
    except asyncio.CancelledError:
        pool.discard(conn)
        raise
    return conn


async def exchange_failed(pool: UpstreamPool, conn: UpstreamConnection, exc: UpstreamError, data: bytes,
                          head_request: bool, idempotent: bool, timeout: float, body_kind: int) -> UpstreamConnection:
    """The first attempt of an exchange through `pool` (`data`: head and body; `body_kind` as
    `UpstreamConnection.send`'s) failed on `conn` with `exc`: drop that connection, and send once more on
    a new one when the upstream dropped the connection without
    answering (typically a keep-alive connection it had just closed; for an upstream group, on the next
    target). Never for non-idempotent methods, which the upstream may have acted on. Raises when there
    is no second attempt or it fails too."""
    _drop_failed(pool, conn)
    if not (exc.retryable and idempotent):
        raise exc
    conn = await pool.connect()
    try:
        await conn.send(data, head_request, timeout, body_kind)
    except UpstreamError:
        _drop_failed(pool, conn)
        raise
    except asyncio.CancelledError:
        pool.discard(conn)
        raise
    return conn


def _drop_failed(pool: UpstreamPool, conn: UpstreamConnection) -> None:
    """A send failed on `conn`: the connection goes, and its upstream group target (if any) counts a failure
    (passive outlier detection, fastgw/upstream_groups.py)."""
    pool.discard(conn)
    if conn.pool.member is not None:
        conn.pool.member.failed()


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

