"""WebSocket APIs (issue 16): one client connection, top to bottom, and the worker's connection hub.

    handshake   `GET /{stage}` with Upgrade: websocket (or an API mapping's base path): the HTTP pipeline's
                request checks, the stage, then the WebSocket checks (no body, the Origin allowlist),
                `$connect`'s authorizer and API key, and its integration: a non-2xx answer refuses the
                handshake with that status; no `$connect` route accepts every handshake (AWS)
    messages    each message picks a route with the API's routeSelectionExpression (reference/aws.md
                c.13): a JSON text message's value, else `$default` (also for non-JSON and binary
                messages); the route's integration runs (FUNCTION, HTTP_PROXY, HTTP, MOCK); a two-way
                route (routeResponseSelectionExpression) sends the integration's answer back. Messages
                of one connection are handled one at a time: a connection that sends faster than its
                integrations answer is simply not read (the listener's queue of 4 frames and TCP push back)
    $disconnect runs once per connection, whoever closed it (client, DELETE @connections, idle timeout,
                lifetime, a limit), with disconnectStatusCode / disconnectReason
    sending     everything sent to a client (two-way answers, @connections POSTs) goes through the
                connection's bounded queue (sendQueueBytes) and one writer task: a client that does not
                read makes posters wait up to sendTimeoutSeconds, then it is closed with 1008; a send
                stuck longer than sendTimeoutSeconds closes it with 1011 (and its socket is shut down)
    limits      maxMessageBytes (AWS 128 KB) closes with 1009; idleTimeoutSeconds (10 min) and
                maxLifetimeSeconds (2 h) close with 1001. What the listener enforces on the wire (frame
                sizes before they are read, masking, UTF-8, control frames, pings: 1002 / 1007 / 1008 /
                1009 / 1011) is fastgw/websocket/listener.py

The hub (`Hub`, one per worker) holds this worker's connections. A connection id (AWS's form: 16
base64 characters ending in '=') carries the node and the pid of the worker that owns it, so a
management call (`POST|GET|DELETE /{stage}/@connections/{id}`, fastgw/integrations/connections.py) that
reaches another worker is forwarded straight to the owner: over its Unix socket in the live channel's
directory (`ws-PID.sock`) on the same node (no broker, no extra server), through Redis pub/sub to
another node (fastgw/websocket/relay.py, with `state: {backend: redis}`). An id whose worker is gone is
410 GoneException.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import socket
import struct
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .. import metrics
from ..errors import DEFAULT_RESPONSES, GatewayError
from ..events import WsCall, build_ws_event
from ..handlers import invoke
from ..httpsyntax import header
from ..integrations.target import length_framing
from ..plan import StagePlan, WsRoutePlan, WsStagePlan
from ..policies.authorizers.base import Authorization, NeedsBody
from ..upstream import UpstreamError, exchange, read_whole_response
from ..vtl import UTIL, Input, RenderError
from .relay import RedisRelay

if TYPE_CHECKING:
    from ..pipeline import Gateway

log = logging.getLogger("fastgw.websocket")

CLOSE_GRACE_SECONDS = 2.0  # after a close frame, how long the client has to answer before its socket is shut
PEER_TIMEOUT_SECONDS = 5.0  # a forwarded management call: the owner's own wait (sendTimeoutSeconds) plus this
GOING_AWAY, POLICY, TOO_BIG, INTERNAL, NORMAL, NO_STATUS, ABNORMAL = 1001, 1008, 1009, 1011, 1000, 1005, 1006
OPS = {"POST": 1, "GET": 2, "DELETE": 3}
OP_NAMES = {v: k for k, v in OPS.items()}


class Closed:
    """What a WebSocket adapter's receive() returns when the connection ended (the client's close code,
    or 1005 / 1006)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int = NO_STATUS, reason: str = ""):
        self.code = code
        self.reason = reason


class WsDownstream(Protocol):
    """A WebSocket handshake and, once accepted, its connection (fastgw/websocket/listener.py)."""

    method: str
    path: str
    query: str
    headers: Any
    absolute_form: bool
    auth: Any
    client: str
    peer_address: str
    scheme: str
    protocol: str

    async def refuse(self, status: int) -> None: ...
    async def next_message(self) -> str | bytes | Closed: ...
    async def send(self, data: str | bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...
    def abort(self) -> None: ...


# -- connection ids: AWS's form, with the owning worker inside -----------------------------------------
def new_connection_id(node: int, pid: int) -> str:
    """16 characters, the last '=' (11 bytes, base64): the owner's node (3 bytes) and pid (3 bytes: Linux
    pids are below 2**22), then 5 random bytes. URL-safe alphabet, so the id is one path segment of
    `@connections/{id}` however a client encodes it."""
    return base64.urlsafe_b64encode(node.to_bytes(3, "big") + pid.to_bytes(3, "big") + os.urandom(5)).decode()


def owner_of(connection_id: str) -> tuple[int, int] | None:
    """(node, pid) of the worker that owns a connection id, or None for a malformed id."""
    if len(connection_id) != 16 or not connection_id.endswith("="):
        return None
    try:
        raw = base64.urlsafe_b64decode(connection_id)
    except (binascii.Error, ValueError):
        return None
    return (int.from_bytes(raw[:3], "big"), int.from_bytes(raw[3:6], "big")) if len(raw) == 11 else None


def node_id(directory: str | None) -> int:
    """This node's id (3 bytes), the same in every worker: from the host name and the main process's
    private live-channel directory (a fresh random name per start)."""
    if directory is None:
        return int.from_bytes(os.urandom(3), "big")
    seed = f"{socket.gethostname()}\0{directory}".encode()
    return int.from_bytes(hashlib.blake2b(seed, digest_size=3).digest(), "big")


def _aws_id() -> str:
    """A messageId: AWS's form (16 base64 characters, the last '=')."""
    return base64.b64encode(os.urandom(11)).decode("ascii")


def _aws_request_id(request_id: str) -> str:
    """The event's requestId / extendedRequestId in AWS's form, derived from the gateway's request id."""
    return base64.b64encode(hashlib.blake2b(request_id.encode(), digest_size=11).digest()).decode("ascii")


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Connection:
    """One accepted client connection, owned by this worker."""

    def __init__(self, connection_id: str, down: WsDownstream, stage: StagePlan, host: str):
        self.id = connection_id
        self.down = down
        self.stage = stage
        self.ws: WsStagePlan = stage.websocket  # type: ignore[assignment]
        self.plan: Any = None  # the gateway's plan when `stage` was looked up (a reload changes it)
        self.host = host
        self.connected_at = int(time.time() * 1000)
        self.started = time.monotonic()
        self.last_active = self.started
        self.last_active_ms = self.connected_at
        self.source_ip = down.client
        self.user_agent = header(down.headers, "user-agent")
        self.headers = list(down.headers)
        self.auth: Authorization | None = None
        self.queue: deque[str | bytes] = deque()
        self.queued = 0  # bytes waiting in `queue`
        self.space = asyncio.Event()  # the queue has room again
        self.closing: tuple[int, str] | None = None  # set when the gateway closes it
        self.reader: asyncio.Task[Any] | None = None
        self.receiving: asyncio.Task[Any] | None = None  # the pending receive (cancelled to close: see shut)
        self.closer: asyncio.Task[Any] | None = None  # sends the gateway's close frame
        self.subprotocol: str | None = None  # what $connect chose of the client's Sec-WebSocket-Protocol
        self.writer: asyncio.Task[Any] | None = None  # runs while the queue holds something
        self.timer: asyncio.TimerHandle | None = None
        self.gone = False
        self.opened = 0.0  # perf_counter at the handshake (the CONNECT log line's latency)
        self.request_id = ""  # the handshake's

    def touch(self) -> None:
        self.last_active = time.monotonic()
        self.last_active_ms = int(time.time() * 1000)

    def describe(self) -> dict[str, Any]:
        """GetConnection's answer (its wire names: apigatewaymanagementapi's locationName)."""
        return {"connectedAt": _iso(self.connected_at),
                "identity": {"sourceIp": self.source_ip, "userAgent": self.user_agent},
                "lastActiveAt": _iso(self.last_active_ms)}

    async def post(self, data: str | bytes) -> bool:
        """Queue a message for the client; False when the connection is gone. A client that does not
        read makes this wait up to sendTimeoutSeconds, then closes it (1008)."""
        size = len(data)
        if self.gone or self.closing is not None:
            return False
        if self.queued + size > self.ws.send_queue_bytes:
            deadline = time.monotonic() + self.ws.send_timeout_seconds
            while self.queued + size > self.ws.send_queue_bytes and not self.gone and self.closing is None:
                self.space.clear()
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await self.space.wait()
                except TimeoutError:
                    log.info("connection %s does not read: closing it (1008)", self.id)
                    metrics.WS_ERRORS.labels(self.stage.api.name, self.stage.name, "client").inc()
                    self.shut(POLICY, "Slow consumer")
                    return False
            if self.gone or self.closing is not None:
                return False
        self.queue.append(data)
        self.queued += size
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())
        return True

    async def _write(self) -> None:
        """The connection's one writer, while something is queued: sends it in order. An idle connection
        has none (memory)."""
        queue, ws = self.queue, self.ws
        try:
            while queue and not self.gone and self.closing is None:
                data = queue[0]
                try:
                    async with asyncio.timeout(ws.send_timeout_seconds):
                        await self.down.send(data)
                except TimeoutError:
                    log.info("connection %s took nothing for %ss: closing it (1011)", self.id, ws.send_timeout_seconds)
                    metrics.WS_ERRORS.labels(self.stage.api.name, self.stage.name, "client").inc()
                    self.shut(INTERNAL, "Send timeout")
                    self._force()
                    return
                except Exception:  # noqa: BLE001 - the client is gone; the reader sees it too
                    return
                queue.popleft()
                self.queued -= len(data)
                self.touch()
                self.space.set()
        finally:
            self.writer = None

    def shut(self, code: int, reason: str) -> None:
        """Close the connection from the gateway's side: a close frame now, the socket after the grace."""
        if self.closing is not None or self.gone:
            return
        self.closing = (code, reason)
        self.space.set()
        # The reader stops waiting for the client's next message (websockets: cancelling recv() loses nothing).
        if self.receiving is not None and not self.receiving.done():
            self.receiving.cancel()
        loop = asyncio.get_running_loop()
        self.closer = loop.create_task(self._close(code, reason))
        loop.call_later(CLOSE_GRACE_SECONDS, self._force)

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_GRACE_SECONDS):
                await self.down.close(code, reason)
        except Exception:  # noqa: BLE001 - the grace timer shuts the socket anyway
            log.debug("close frame for %s not sent", self.id)

    def _force(self) -> None:
        """The client did not answer the close frame (or does not read at all): shut its socket and stop
        waiting for it."""
        if self.gone:
            return
        self.down.abort()
        if self.reader is not None and not self.reader.done():
            self.reader.cancel()


class Hub:
    """One worker's WebSocket connections, and the way to the other workers' ones."""

    def __init__(self, gateway: Gateway, directory: str | None):
        self.gateway = gateway
        self.directory = directory
        self.pid = os.getpid()
        self.node = node_id(directory)
        self.relay: RedisRelay | None = None  # node to node (state backend redis)
        self.connections: dict[str, Connection] = {}
        self.server: asyncio.AbstractServer | None = None
        self.listener: Any = None  # the clients' port (fastgw/websocket/listener.py), set by the server
        self.drained: Any = None  # shutdown: called once the last connection is gone (drain)
        self.live: dict[tuple[str, str], int] = {}  # (api, stage) -> connections, for the gauge
        # MessageCount per stage plan, flushed with the worker's other metrics (a dict update per message)
        self.message_counts: dict[tuple[str, str], metrics.PendingCounts] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------
    def socket_path(self, pid: int) -> str | None:
        return os.path.join(self.directory, f"ws-{pid}.sock") if self.directory else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Listen for the other workers (bound now, so a call never finds the socket missing), and for
        the other nodes through Redis when the state backend is Redis; the clients' listener."""
        self.pid = os.getpid()
        if self.listener is not None:
            self.listener.start(loop)
        state = getattr(self.gateway.plan, "state", None)
        if state is not None and state.backend == "redis" and state.url and \
                any(stage.websocket is not None for stage in self.gateway.plan.stages):
            self.relay = RedisRelay(state, self.node, self.pid, self.local)
            self.relay.start(loop)
        path = self.socket_path(self.pid)
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        sock.setblocking(False)
        loop.create_task(self._listen(sock))

    async def _listen(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_unix_server(self._peer, sock=sock)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        if self.relay is not None:
            self.relay.stop()
        if self.server is not None:
            self.server.close()
            self.server = None
            path = self.socket_path(self.pid)
            if path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop left: the worker is gone, and its sockets with it
        for connection in list(self.connections.values()):
            connection.shut(GOING_AWAY, "Server shutting down")

    def drain(self, done: Any) -> None:
        """Shutdown: accept no more clients, close every connection (1001; each runs its $disconnect), then
        `done()`."""
        if self.listener is not None:
            self.listener.stop_accepting()
        self.drained = done
        if not self.connections:
            done()
        for connection in list(self.connections.values()):
            connection.shut(GOING_AWAY, "Server shutting down")

    # -- the @connections API ------------------------------------------------------------------------------
    async def manage(self, method: str, connection_id: str, body: bytes) -> Any:
        """POST (send `body`), GET (describe), DELETE (close): the answer, or None when the connection is
        gone (410). Forwarded to the owning worker when it is not this one."""
        owner = owner_of(connection_id)
        if owner is None:
            return None
        node, pid = owner
        if node != self.node:
            if self.relay is None:
                return None
            return await self.relay.call(node, pid, method, connection_id, body, self.peer_timeout())
        if pid == self.pid:
            return await self.local(method, connection_id, body)
        return await self.remote(pid, method, connection_id, body)

    def peer_timeout(self) -> float:
        """How long a forwarded call may take: a POST may wait sendTimeoutSeconds for a full queue."""
        waits = [s.websocket.send_timeout_seconds for s in self.gateway.plan.stages if s.websocket is not None]
        return max(waits, default=0.0) + PEER_TIMEOUT_SECONDS

    async def local(self, method: str, connection_id: str, body: bytes) -> Any:
        connection = self.connections.get(connection_id)
        if connection is None or connection.gone or connection.closing is not None:
            return None
        if method == "GET":
            return connection.describe()
        if method == "DELETE":
            connection.shut(NORMAL, "")
            return True
        try:
            data: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            data = body
        return True if await connection.post(data) else None

    async def remote(self, pid: int, method: str, connection_id: str, body: bytes) -> Any:
        path = self.socket_path(pid)
        if path is None or not os.path.exists(path):
            return None
        ident = connection_id.encode("ascii")
        try:
            async with asyncio.timeout(self.peer_timeout()):
                reader, writer = await asyncio.open_unix_connection(path)
                try:
                    writer.write(struct.pack(">IBH", 3 + len(ident) + len(body), OPS[method], len(ident)) + ident
                                 + body)
                    size, status = struct.unpack(">IB", await reader.readexactly(5))
                    payload = await reader.readexactly(size)
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.warning("worker %s did not answer a @connections call: %s", pid, exc)
            return None
        if status == 0:
            return None
        return orjson.loads(payload) if method == "GET" else True

    async def _peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Another worker forwards a management call for one of this worker's connections."""
        try:
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            frame = await reader.readexactly(size)
            op, id_length = struct.unpack(">BH", frame[:3])
            connection_id = frame[3:3 + id_length].decode("ascii")
            method = OP_NAMES[op]
            found = await self.local(method, connection_id, frame[3 + id_length:])
            payload = orjson.dumps(found) if method == "GET" and found is not None else b""
            writer.write(struct.pack(">IB", len(payload), 0 if found is None else 1) + payload)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, KeyError, struct.error, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    # -- one connection --------------------------------------------------------------------------------------
    async def open(self, down: WsDownstream) -> Connection | None:
        """A handshake: the request's checks, the stage, $connect (authorizer, API key, integration). The
        connection to accept (with `connection.subprotocol`), or None once `down.refuse` has answered."""
        gateway = self.gateway
        started = time.perf_counter()
        request_id = gateway.ids.next()
        stage: StagePlan | None = None
        try:
            head = gateway.receive(down)
            stage, route_path = gateway.select_stage(head.host, down.path)
            ws = stage.websocket
            if ws is None or route_path not in ("", "/"):
                raise GatewayError("RESOURCE_NOT_FOUND")
            if down.method != "GET":  # RFC 6455 4.1: a handshake is a GET without a body
                raise GatewayError("METHOD_NOT_ALLOWED", headers=(("allow", "GET"),))
            if head.chunked or head.content_length > 0:
                raise GatewayError("BAD_REQUEST_BODY", "A WebSocket handshake has no body")
            if ws.allowed_origins:  # cross-site WebSocket hijacking (RFC 6455 10.2)
                origin = header(down.headers, "origin")
                if origin is None or origin.lower().rstrip("/") not in ws.allowed_origins:
                    raise GatewayError("ACCESS_DENIED", "Forbidden")
            connection = Connection(new_connection_id(self.node, self.pid), down, stage, head.host)
            connection.plan = gateway.plan
            connection.opened, connection.request_id = started, request_id
            connect = ws.connect
            if connect is not None:
                route = connect.route
                if route.authorizer is not None:
                    auth = route.authorizer.check(down, head, stage, route, "/$connect", {}, request_id)
                    if auth.__class__ is not Authorization:
                        auth = auth.finish(b"") if auth.__class__ is NeedsBody else await auth
                    down.auth = connection.auth = auth
                if route.usage is not None and gateway.usage is not None:
                    key = down.auth.usage_key if route.authorizer is not None else None
                    if (waiter := gateway.usage.check(route.usage, head.api_key, key)) is not None:
                        await waiter
                status, _ = await self.integrate(connection, connect, "CONNECT", request_id)
                if not 200 <= status < 300:
                    metrics.WS_ERRORS.labels(stage.api.name, stage.name, "client").inc()
                    self.log_event(connection, "CONNECT", "$connect", status, started, request_id)
                    await down.refuse(status)
                    return None
        except GatewayError as exc:
            status = (stage.api.responses if stage is not None else DEFAULT_RESPONSES).render(exc.kind, exc.message)[0]
            log.debug("WebSocket handshake refused: %s %s", status, exc.kind)
            await self.refuse(down, stage, status, started, request_id)
            return None
        except Exception:  # noqa: BLE001 - never a traceback to the client, never a half-open handshake
            log.exception("WebSocket handshake failed: %s", down.path)
            await self.refuse(down, stage, 500, started, request_id)
            return None
        return connection

    async def refuse(self, down: WsDownstream, stage: StagePlan | None, status: int, started: float,
                     request_id: str) -> None:
        if stage is not None:
            metrics.WS_ERRORS.labels(stage.api.name, stage.name, "client" if status < 500 else "execution").inc()
        access_log = self.gateway.access_log
        if access_log is not None:
            access_log.write_ws(request_id, "-", down.client, stage, "CONNECT", "$connect", status,
                                time.perf_counter() - started)
        try:
            await down.refuse(status)
        except Exception:  # noqa: BLE001 - the client went away first
            log.debug("could not refuse the handshake of %s", down.path)

    async def run(self, connection: Connection) -> None:
        """An accepted connection, to its end: its messages one at a time, then $disconnect."""
        ws, stage = connection.ws, connection.stage
        labels = (stage.api.name, stage.name)
        self.connections[connection.id] = connection
        self.live[labels] = self.live.get(labels, 0) + 1
        metrics.WS_CONNECTIONS.labels(*labels).set(self.live[labels])
        metrics.WS_CONNECTS.labels(*labels).inc()
        self.log_event(connection, "CONNECT", "$connect", 200, connection.opened, connection.request_id)
        loop = asyncio.get_running_loop()
        connection.reader = asyncio.current_task()
        connection.timer = loop.call_later(min(ws.idle_seconds, ws.lifetime_seconds), self.watch, connection)
        code, reason = NO_STATUS, ""
        try:
            while True:
                receiving = connection.receiving = loop.create_task(connection.down.next_message())
                try:
                    message = await receiving
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if connection.closing is None or (task is not None and task.cancelling()):
                        raise
                    break  # the gateway closes the connection (shut)
                if message.__class__ is Closed:
                    code, reason = message.code, message.reason  # type: ignore[union-attr]
                    break
                connection.touch()
                limit = connection.ws.max_message_bytes  # the current plan's (a reload may change it)
                size = len(message)  # type: ignore[arg-type]
                if message.__class__ is str and size * 4 > limit:  # UTF-8: 1 to 4 bytes a character
                    size = len(message.encode("utf-8"))  # type: ignore[union-attr]
                if size > limit:
                    metrics.WS_ERRORS.labels(*labels, "client").inc()
                    connection.shut(TOO_BIG, "Message too big")
                    break
                await self.message(connection, message)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            code = ABNORMAL  # the grace after a close frame ran out (fastgw's own cancel)
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:  # noqa: BLE001 - one connection's failure never reaches the listener
            log.exception("WebSocket connection %s failed", connection.id)
            metrics.WS_ERRORS.labels(*labels, "execution").inc()
            code = INTERNAL
        finally:
            connection.gone = True
            connection.space.set()
            if connection.timer is not None:
                connection.timer.cancel()
            self.connections.pop(connection.id, None)
            self.live[labels] = self.live.get(labels, 1) - 1
            metrics.WS_CONNECTIONS.labels(*labels).set(self.live[labels])
        if connection.plan is not self.gateway.plan:
            self.follow_reload(connection)
        if connection.closing is not None:
            code, reason = connection.closing
            if connection.closer is not None:
                # before returning to the listener, which would otherwise close with its own code (1000)
                await asyncio.wait((connection.closer,), timeout=CLOSE_GRACE_SECONDS)
        await self.disconnect(connection, code, reason)
        if connection.writer is not None:
            connection.writer.cancel()
        if self.drained is not None and not self.connections:
            self.drained()

    def watch(self, connection: Connection) -> None:
        """The idle and lifetime limits (AWS: 10 min, 2 h), checked by one timer per connection."""
        ws = connection.ws
        now = time.monotonic()
        if now - connection.started >= ws.lifetime_seconds or now - connection.last_active >= ws.idle_seconds:
            connection.timer = None
            connection.shut(GOING_AWAY, "Going away")
            return
        next_check = min(connection.last_active + ws.idle_seconds, connection.started + ws.lifetime_seconds) - now
        connection.timer = asyncio.get_running_loop().call_later(max(0.01, next_check), self.watch, connection)

    # -- messages -------------------------------------------------------------------------------------------
    def select(self, ws: WsStagePlan, message: str | bytes) -> WsRoutePlan | None:
        """The route of a message: routeSelectionExpression over a JSON text message, else $default."""
        if ws.routes and message.__class__ is str:
            try:
                document = orjson.loads(message)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                route = ws.routes.get(evaluate(ws.selection, document, None, None))
                if route is not None:
                    return route
        return ws.default

    def follow_reload(self, connection: Connection) -> None:
        """A live reload swapped the plan: the connection's next messages use its stage's new routes (a
        stage that is gone keeps the old ones until the client leaves)."""
        plan = self.gateway.plan
        connection.plan = plan
        old = connection.stage
        for stage in plan.stages:
            if stage.websocket is not None and stage.name == old.name and stage.api.name == old.api.name:
                connection.stage, connection.ws = stage, stage.websocket
                return

    async def message(self, connection: Connection, message: str | bytes) -> None:
        started = time.perf_counter()
        if connection.plan is not self.gateway.plan:
            self.follow_reload(connection)
        stage = connection.stage
        request_id = self.gateway.ids.next()
        route = self.select(connection.ws, message)
        if route is None:  # AWS: no matching route and no $default
            metrics.WS_ERRORS.labels(stage.api.name, stage.name, "client").inc()
            await connection.post(self.error_message(connection, "Forbidden", request_id))
            self.log_event(connection, "MESSAGE", "-", 403, started, request_id)
            return
        labels = (stage.api.name, stage.name)
        counts = self.message_counts.get(labels)
        if counts is None:
            counts = self.message_counts[labels] = metrics.PendingCounts(metrics.WS_MESSAGES, labels)
        counts.counts[route.key] = counts.counts.get(route.key, 0) + 1
        usage = route.route.usage  # stage and route throttles (AWS throttles message routes too)
        if usage is not None and self.gateway.usage is not None:
            try:
                if (waiter := self.gateway.usage.check(usage, "", None)) is not None:
                    await waiter
            except GatewayError as exc:
                status, _, _ = stage.api.responses.render(exc.kind, exc.message)
                metrics.WS_ERRORS.labels(stage.api.name, stage.name, "client").inc()
                await connection.post(self.error_message(connection, str(exc), request_id))
                self.log_event(connection, "MESSAGE", route.key, status, started, request_id)
                return
        try:
            status, reply = await self.integrate(connection, route, "MESSAGE", request_id, message)
        except GatewayError as exc:
            status = stage.api.responses.render(exc.kind, exc.message)[0]
            metrics.WS_ERRORS.labels(stage.api.name, stage.name, "integration").inc()
            await connection.post(self.error_message(connection, "Internal server error", request_id))
            self.log_event(connection, "MESSAGE", route.key, status, started, request_id)
            return
        if route.two_way and reply:
            await connection.post(reply)
        self.log_event(connection, "MESSAGE", route.key, status, started, request_id)

    def error_message(self, connection: Connection, text: str, request_id: str) -> str:
        """What AWS sends a client whose message failed."""
        return orjson.dumps({"message": text, "connectionId": connection.id,
                             "requestId": _aws_request_id(request_id)}).decode()

    async def disconnect(self, connection: Connection, code: int, reason: str) -> None:
        started = time.perf_counter()
        request_id = self.gateway.ids.next()
        route = connection.ws.disconnect
        status = 200
        if route is not None:
            try:
                status, _ = await self.integrate(connection, route, "DISCONNECT", request_id, None, code, reason)
            except GatewayError as exc:
                status = connection.stage.api.responses.render(exc.kind, exc.message)[0]
                metrics.WS_ERRORS.labels(connection.stage.api.name, connection.stage.name, "integration").inc()
            except Exception:  # noqa: BLE001 - $disconnect failing must not reach the listener
                log.exception("$disconnect of %s failed", connection.id)
                status = 500
        self.log_event(connection, "DISCONNECT", "$disconnect", status, started, request_id, code)

    # -- integrations ------------------------------------------------------------------------------------------
    def call(self, connection: Connection, route: WsRoutePlan, event_type: str, request_id: str,
             message: str | bytes | None = None, code: int | None = None, reason: str = "") -> WsCall:
        stage = connection.stage
        return WsCall(
            route.key, event_type, connection.id, connection.connected_at, _aws_request_id(request_id), stage.name,
            connection.ws.api_id, _domain(connection.host), connection.source_ip, connection.user_agent,
            connection.headers if event_type != "MESSAGE" else None,
            connection.down.query if event_type == "CONNECT" else "",
            _aws_id() if event_type == "MESSAGE" else None, message, code, reason, connection.auth,
            stage.variables or None)

    async def integrate(self, connection: Connection, route: WsRoutePlan, event_type: str, request_id: str,
                        message: str | bytes | None = None, code: int | None = None,
                        reason: str = "") -> tuple[int, str | bytes | None]:
        """Run a route's integration: (status, what a two-way route sends back)."""
        call = self.call(connection, route, event_type, request_id, message, code, reason)
        kind = route.kind
        if kind == "FUNCTION":
            result = await invoke(route.function, build_ws_event(call))
            if event_type == "CONNECT" and isinstance(result, dict) and isinstance(result.get("headers"), dict):
                # AWS: $connect's function picks one of the client's subprotocols with this header
                for name, value in result["headers"].items():
                    if str(name).lower() == "sec-websocket-protocol" and isinstance(value, str):
                        connection.subprotocol = value
            return function_answer(result)
        body: bytes = b"" if message is None else message if message.__class__ is bytes else \
            message.encode("utf-8")  # type: ignore[union-attr]
        if kind in ("HTTP", "MOCK"):
            variables = template_variables(call, message, connection)
            template = pick_template(route, message, connection, variables)
            if template is not None:
                body = render(template, variables).encode("utf-8")
            elif route.passthrough == "NEVER":
                raise GatewayError("UNSUPPORTED_MEDIA_TYPE")
            if kind == "MOCK":
                status = mock_status(body)
                return status, respond_template(route, "", variables)
        status, answer = await self.http(route, body, call)
        if kind == "HTTP" and route.response_templates:
            variables = template_variables(call, answer, connection)
            return status, respond_template(route, answer.decode("utf-8", "replace"), variables)
        try:
            return status, answer.decode("utf-8")
        except UnicodeDecodeError:
            return status, answer

    async def http(self, route: WsRoutePlan, body: bytes, call: WsCall) -> tuple[int, bytes]:
        proxy = route.proxy
        head = (f"{route.method} {proxy.static_path}{'?' + proxy.uri_query if proxy.uri_query else ''} HTTP/1.1\r\n"
                f"host: {proxy.host_header}\r\ncontent-type: application/json\r\n"
                f"connectionid: {call.connection_id}\r\n{length_framing(route.method, len(body))}").encode("latin-1")
        try:
            conn = await exchange(proxy.pool, head, body, False, False, proxy.timeout)
            status = conn.parser.status
            answer = await read_whole_response(conn)
        except UpstreamError as exc:
            raise GatewayError(exc.kind, "Internal server error") from None
        return status, answer

    # -- logs ----------------------------------------------------------------------------------------------------
    def log_event(self, connection: Connection, event_type: str, route_key: str, status: int, started: float,
                  request_id: str, code: int | None = None) -> None:
        access_log = self.gateway.access_log
        if access_log is not None:
            access_log.write_ws(request_id, connection.id, connection.source_ip, connection.stage, event_type,
                                route_key, status, time.perf_counter() - started, code)


# -- helpers: selection expressions, results, templates ----------------------------------------------------
def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _field(document: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


def evaluate(selection: list[Any], document: Any, headers: Any, context: dict[str, Any] | None) -> str:
    """A selection expression's value (reference/aws.md c.13): a missing field is ""."""
    out = []
    for part in selection:
        if part.__class__ is str:
            out.append(part)
        elif part[0] == "body":
            out.append(_text(_field(document, part[1])))
        elif part[0] == "header":
            out.append(header(headers, part[1]) or "" if headers is not None else "")
        else:
            out.append(_text(_field(context, part[1])))
    return "".join(out)


def _domain(host: str) -> str:
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def function_answer(result: Any) -> tuple[int, str | bytes | None]:
    """A Lambda proxy result of a WebSocket route: {statusCode, body, isBase64Encoded}, or a bare string."""
    if isinstance(result, dict):
        status = result.get("statusCode", 200)
        try:
            status = int(status)
        except (TypeError, ValueError):
            status = 0
        if not 200 <= status <= 599:  # $connect refuses with it: an HTTP status, and not 1xx
            log.error("WebSocket function result: statusCode %r is not an HTTP status", result.get("statusCode"))
            raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from None
        body = result.get("body")
        if body is not None and not isinstance(body, str):
            body = orjson.dumps(body).decode()
        if body is not None and result.get("isBase64Encoded"):
            try:
                return status, base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from None
        return status, body
    if isinstance(result, str):
        return 200, result
    return 200, None if result is None else orjson.dumps(result).decode()


def template_variables(call: WsCall, body: str | bytes | None, connection: Connection) -> dict[str, Any]:
    text = "" if body is None else body if isinstance(body, str) else body.decode("utf-8", "replace")
    context: dict[str, Any] = {
        "connectionId": call.connection_id, "routeKey": call.route_key, "eventType": call.event_type,
        "messageId": call.message_id, "requestId": call.request_id, "extendedRequestId": call.request_id,
        "stage": call.stage, "apiId": call.api_id, "domainName": call.domain_name,
        "connectedAt": call.connected_at, "requestTimeEpoch": int(time.time() * 1000),
        "messageDirection": "IN", "identity": {"sourceIp": call.source_ip, "userAgent": call.user_agent},
    }
    if connection.auth is not None:
        context["authorizer"] = connection.auth.context_authorizer(True)
    return {"input": Input(text, {}, {}, dict(connection.headers)), "context": context,
            "stageVariables": connection.stage.variables, "util": UTIL}


def pick_template(route: WsRoutePlan, message: str | bytes | None, connection: Connection,
                  variables: dict[str, Any]) -> Any:
    templates = route.request_templates
    if not templates:
        return None
    key = "$default"
    if route.template_selection is not None:
        document = None
        if isinstance(message, str):
            try:
                document = orjson.loads(message)
            except orjson.JSONDecodeError:
                document = None
        key = evaluate(route.template_selection, document, connection.headers, variables["context"])
    return templates.get(key) or templates.get("$default")


def render(template: Any, variables: dict[str, Any]) -> str:
    try:
        return template.render(variables)  # type: ignore[no-any-return]
    except RenderError as exc:
        log.error("WebSocket mapping template failed: %s", exc)
        raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None


def mock_status(rendered: bytes) -> int:
    """MOCK: the request template's `statusCode` (200 when there is none or it is not an HTTP status)."""
    try:
        document = orjson.loads(rendered) if rendered.strip() else {}
    except orjson.JSONDecodeError:
        return 200
    status = document.get("statusCode", 200) if isinstance(document, dict) else 200
    return status if isinstance(status, int) and not isinstance(status, bool) and 200 <= status <= 599 else 200


def respond_template(route: WsRoutePlan, body: str, variables: dict[str, Any]) -> str | None:
    """The integration response's `$default` template (when the route has one), else the body itself."""
    template = route.response_templates.get("$default")
    if template is None:
        return body or None
    variables["input"] = Input(body, {}, {}, {})
    return render(template, variables)
