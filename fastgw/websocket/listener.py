"""The listener of WebSocket APIs (issue 20): the clients' side of every WebSocket API, on a port of its own.

As in AWS, where a WebSocket API has an endpoint distinct from REST and HTTP APIs, WebSocket APIs listen on
their own address (`server.webSocket`, default: the HTTP port + 1). Each worker runs a `websockets` server
on its own event loop, bound with SO_REUSEPORT so every worker accepts on the same port; the HTTP port
(granian) keeps the @connections API and the pass-through of REST/HTTP APIs (passthrough.py).

What the wire gets, by whom:

    handshake   `Sec-WebSocket-Version` other than 13: 426 with `Sec-WebSocket-Version: 13` (RFC 6455 4.4,
                here); the library's own checks (method 405, Upgrade/Connection/key 400) before `$connect`
                runs; a head the library cannot parse (a body: Content-Length or Transfer-Encoding) 400
                (the library would only close); the head within limits.headerReadTimeoutMs; then
                fastgw/websocket/api.py `Hub.open` (stage, Origin allowlist, authorizer, `$connect`)
    frames      the library: a frame or message over the API's maxMessageBytes 1009 as soon as its header
                announces it (never read whole); an unmasked frame 1002; invalid UTF-8 1007; a bad control
                frame 1002
    pings       answered by the library; more than maxPingsPerSecond (a burst of as many) 1008, here; a
                keepalive ping every pingIntervalSeconds, no pong within pingTimeoutSeconds 1011
    memory      per connection: the library's receive queue (MAX_QUEUE frames, then the socket is not read),
                its write buffer (WRITE_LIMIT, then a send waits), the hub's send queue (sendQueueBytes)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from .api import ABNORMAL, CLOSE_GRACE_SECONDS, POLICY, Closed, Connection

if TYPE_CHECKING:
    from ..plan import Plan
    from .api import Hub

log = logging.getLogger("fastgw.websocket")
# The library's own log lines (a line per connection at INFO): warnings and errors only.
WIRE_LOG = logging.getLogger("fastgw.websocket.wire")
WIRE_LOG.setLevel(logging.WARNING)

MAX_QUEUE = 4  # frames received and not yet taken by the hub before the socket is no longer read
WRITE_LIMIT = 32 * 1024  # bytes in the socket's write buffer above which a send waits for the client
DEFAULT_MAX_SIZE = 128 * 1024  # until $connect has chosen a stage (whose maxMessageBytes replaces it)
BACKLOG = 2048


class ListenerDownstream:
    """A handshake and, once accepted, its connection: the hub's `WsDownstream` over a websockets
    ServerConnection."""

    __slots__ = ("ws", "method", "path", "query", "headers", "client", "peer_address", "scheme", "protocol",
                 "absolute_form", "conflicting_authority", "auth", "trace", "response")

    def __init__(self, ws: ServerConnection, request: Request, scheme: str):
        self.ws = ws
        self.method = request.method
        path, _, self.query = request.path.partition("?")
        self.path = path
        self.headers = [(name.lower(), value) for name, value in request.headers.raw_items()]
        address = ws.remote_address
        self.client = self.peer_address = str(address[0]) if address else ""
        self.scheme = scheme
        self.protocol = request.protocol
        self.absolute_form = False
        self.conflicting_authority = False
        self.auth: Any = None  # what $connect's authorizer asserted
        self.trace: Any = None
        self.response: Response | None = None  # a refusal, handed back to the library

    async def refuse(self, status: int) -> None:
        self.response = self.ws.respond(status, "")

    async def next_message(self) -> str | bytes | Closed:
        try:
            return await self.ws.recv()
        except ConnectionClosed as exc:
            # whoever closed first: the client's code, or the one the gateway (or the library) sent
            if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
                return Closed(exc.rcvd.code, exc.rcvd.reason)
            if exc.sent is not None:
                return Closed(exc.sent.code, exc.sent.reason)
            return Closed(ABNORMAL)

    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)  # waits while the write buffer is above WRITE_LIMIT

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    def abort(self) -> None:
        self.ws.transport.abort()


class WsConnection(ServerConnection):
    """The library's connection, with what it does not do itself: a bounded wait for the handshake's head,
    an answer to an unparsable head, a ping rate limit, and `$disconnect` for a handshake `$connect`
    accepted that never completed."""

    def __init__(self, *args: Any, listener: Listener, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.listener = listener
        self.fastgw: Connection | None = None  # set once $connect accepted the handshake
        self.ping_credit = listener.pings_per_second
        self.ping_seen = 0.0
        self.answered = False

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            # a client that does not finish its head (slowloris) is dropped; $connect has no such bound
            async with asyncio.timeout(self.listener.head_seconds):
                await asyncio.wait([self.request_rcvd, self.connection_lost_waiter],
                                   return_when=asyncio.FIRST_COMPLETED)
            await super().handshake(*args, **kwargs)
        finally:
            connection = self.fastgw
            if connection is not None and self.protocol.state is not State.OPEN:
                # $connect accepted it, the 101 never went out (the client left, shutdown): $disconnect pairs
                self.fastgw = None
                self.loop.create_task(self.listener.hub.disconnect(connection, ABNORMAL, ""))

    def send_data(self) -> None:
        exc = self.protocol.handshake_exc
        if self.request is None and not self.answered and isinstance(exc, InvalidMessage) \
                and not isinstance(exc.__cause__, EOFError):
            # The library closes without an answer on a head it cannot parse (a body among them: RFC 6455
            # 4.1 wants none); HTTP wants 400.
            self.answered = True
            self.transport.write(self.protocol.reject(400, "Bad Request\n").serialize())
        super().send_data()

    def process_event(self, event: Any) -> None:
        if event.__class__ is Frame and event.opcode is Opcode.PING:
            # a token bucket: pings_per_second, a burst of as many. The library has answered the pings of
            # this read already; the flood ends here (1008), before it costs more than one read of pongs.
            rate = self.listener.pings_per_second
            now = self.loop.time()
            self.ping_credit = min(rate, self.ping_credit + (now - self.ping_seen) * rate)
            self.ping_seen = now
            if self.ping_credit < 1:
                if self.protocol.state is State.OPEN:
                    log.info("WebSocket client %s pings too often: closing it (1008)", self.remote_address)
                    self.protocol.fail(POLICY, "Too many pings")
                    self.send_data()
                return
            self.ping_credit -= 1
        super().process_event(event)


class Listener:
    """The WebSocket APIs' port in one worker."""

    def __init__(self, hub: Hub, plan: Plan, address: tuple[str, int]):
        server = plan.server
        settings = server.webSocket
        self.hub = hub
        self.host, self.port = address
        self.pings_per_second = settings.maxPingsPerSecond
        self.ping_interval = settings.pingIntervalSeconds or None
        self.ping_timeout = settings.pingTimeoutSeconds
        self.head_seconds = server.limits.headerReadTimeoutMs / 1000
        self.tls: ssl.SSLContext | None = None
        if server.tlsCert and server.tlsKey:  # the same certificate as the HTTP port: wss://
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(server.tlsCert, server.tlsKey)
        self.scheme = "https" if self.tls is not None else "http"
        self.server: Server | None = None
        self.starting: asyncio.Task[Any] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.starting = loop.create_task(self._start())

    async def _start(self) -> None:
        try:
            self.server = await serve(
                self._run, self.host, self.port, reuse_port=True, backlog=BACKLOG, ssl=self.tls,
                create_connection=functools.partial(WsConnection, listener=self),
                process_request=self._handshake, select_subprotocol=_subprotocol,
                compression=None,  # a deflate context is ~300 KiB a connection; AWS does not offer it
                max_size=DEFAULT_MAX_SIZE, max_queue=MAX_QUEUE, write_limit=WRITE_LIMIT,
                ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                open_timeout=None,  # the head has its own bound (WsConnection.handshake); $connect its timeouts
                close_timeout=CLOSE_GRACE_SECONDS, server_header=None, logger=WIRE_LOG)
        except OSError as exc:
            log.error("WebSocket APIs cannot listen on %s:%s: %s", self.host, self.port, exc.strerror or exc)

    def stop_accepting(self) -> None:
        """Shutdown: close the listening socket (handshakes under way are answered 503); connections stay."""
        if self.server is not None:
            self.server.server.close()

    def stop(self) -> None:
        if self.starting is not None and not self.starting.done():
            self.starting.cancel()
        self.stop_accepting()

    async def _handshake(self, ws: WsConnection, request: Request) -> Response | None:
        versions = request.headers.get_all("Sec-WebSocket-Version")
        if len(versions) == 1 and versions[0] != "13":
            response = ws.respond(426, "Upgrade Required: WebSocket version 13\n")
            response.headers["Sec-WebSocket-Version"] = "13"
            return response
        try:
            ws.protocol.process_request(request)  # the library's checks, before $connect runs
        except InvalidHandshake:
            return None  # the library's accept() answers it (400, 405, 426...)
        down = ListenerDownstream(ws, request, self.scheme)
        connection = await self.hub.open(down)
        if connection is None:
            return down.response
        ws.fastgw = connection
        ws.protocol.max_message_size = connection.ws.max_message_bytes  # checked on each frame's header
        return None

    async def _run(self, ws: WsConnection) -> None:
        connection, ws.fastgw = ws.fastgw, None
        if connection is not None:
            await self.hub.run(connection)


def _subprotocol(ws: WsConnection, offered: Any) -> Any:
    """What $connect chose (AWS: its function's Sec-WebSocket-Protocol header), else none."""
    return ws.fastgw.subprotocol if ws.fastgw is not None else None
