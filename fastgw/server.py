"""granian glue: the RSGI and ASGI adapters, the worker lifecycle, the main process (signals; the admin
API is fastgw/admin/, the runtime and reloads fastgw/runtime.py).

The main process compiles the config once; granian forks the workers from it, so each worker
starts with the compiled plan already in memory. SIGHUP (or POST /reload on the admin port, or
--watch) compiles the file again and, only if it is valid, publishes it; every worker compiles the
same snapshot and swaps it in between two requests (fastgw/runtime.py), so no worker restarts
and no connection drops. An invalid file is reported and the workers keep serving the old config.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import ssl
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from granian._granian import RSGIProtocolClosed
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings, HTTP2Settings
from granian.server import Server as GranianServer

from . import allocator, runtime, scheduling
from ._accel import bytes_headers, latin1_headers, peer_host
from .accesslog import AccessLog
from .admin import ENDPOINTS, start_admin
from .backpressure import ClientGone, StreamPacer, free_bytes
from .config.model import default_workers, websocket_address
from .errors import DEFAULT_RESPONSES, ClientDisconnected, GatewayError
from .httpsyntax import encode_decoded_path
from .lane import PROTOCOLS
from .pipeline import SEEN_PATH_MAX, Gateway, lane, remember
from .plan import Plan
from .policies.cache.stage import shared_area
from .policies.usage.persist import start_main_state, stop_main_state
from .websocket import passthrough
from .websocket.api import Hub
from .websocket.channel import AsgiChannel, RsgiChannel
from .websocket.listener import Listener

log = logging.getLogger("fastgw")
# Paths as received (percent-decoded by RSGI) -> encoded back; a worker remembers the short ones.
ENCODED_PATHS: dict[str, str] = {}
ENCODED_PATHS_MAX = 4096
DRAIN_WEBSOCKETS_SECONDS = 5.0  # at shutdown, how long the workers get to close their WebSocket connections
H2_MAX_STREAMS = 32
GC_THRESHOLD = 20_000  # container allocations between young-generation collections (CPython's default: 700)


# -- adapters: one object per request, the `Downstream` of the pipeline -----------------------
class RsgiDownstream:
    __slots__ = ("proto", "scope", "method", "path", "query", "headers", "stream", "absolute_form", "auth",
                 "pacer", "trace",
                 "conflicting_authority")

    def __init__(self, scope: Any, proto: Any):
        self.proto = proto
        self.scope = scope
        self.method = scope.method
        # RSGI gives the path percent-decoded; encode it back (only used with encodedSlashes: DECODE).
        path = scope.path
        encoded = ENCODED_PATHS.get(path)
        if encoded is None:
            encoded = encode_decoded_path(path)
            if len(path) <= SEEN_PATH_MAX:
                remember(ENCODED_PATHS, path, encoded, ENCODED_PATHS_MAX)
        self.path = encoded
        self.query = scope.query_string
        self.headers = scope.headers.items()
        # An HTTP/1 request whose target carried its own authority (GET http://host/path).
        self.absolute_form = scope.authority is not None and scope.http_version != "2"
        # HTTP/2 with a Host field naming another authority than :authority (RFC 9113 §8.3.1, H2-04).
        self.conflicting_authority = (scope.http_version == "2" and scope.authority is not None
                                      and scope.headers.get("host", scope.authority) != scope.authority)
        self.stream: Any = None
        self.auth: Any = None  # what the route's authorizer asserted (fastgw/policies/authorizers)
        self.trace: Any = None  # a traced stage's trace context (fastgw/tracing.py)

    # PERF: read by few requests (forwarding headers, $context, access logs), so not on every one
    @property
    def client(self) -> str:
        return peer_host(self.scope.client or "")

    @property
    def peer_address(self) -> str:
        return self.scope.client or ""  # type: ignore[no-any-return]

    @property
    def scheme(self) -> str:
        return self.scope.scheme  # type: ignore[no-any-return]

    @property
    def protocol(self) -> str:
        version = self.scope.http_version  # granian's RSGI says "1" for HTTP/1.0 (ASGI: "1.0")
        return PROTOCOLS.get(version) or "HTTP/" + version

    async def read_body(self) -> bytes:
        return await self.proto()

    def body_chunks(self) -> Any:
        return self.proto

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.proto.response_bytes(status, headers, body)

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.stream = self.proto.response_stream(status, headers)
        # granian's RSGI stream never waits for the client: the pacer makes it (fastgw/backpressure.py)
        scope = self.scope
        self.pacer = StreamPacer(scope.client or "", scope.server or "", free_bytes(self.protocol))

    async def send(self, chunk: bytes) -> None:
        try:
            await self.stream.send_bytes(chunk)
            await self.pacer.handed(len(chunk))
        except (RSGIProtocolClosed, ClientGone):
            self.pacer.close()
            raise ClientDisconnected() from None

    async def finish(self) -> None:
        self.pacer.close()

    def abort(self) -> None:
        """A started response failed: the client must see it fail, never finish. granian's RSGI has no
        abort, and a dropped chunked stream is ended cleanly (a truncated body that looks whole), so
        the connection's socket is shut down instead."""
        if self.stream is not None:
            self.pacer.shut_down()


class AsgiDownstream:
    __slots__ = ("scope", "receive", "send_message", "method", "path", "query", "headers", "client", "scheme",
                 "protocol", "started", "absolute_form", "gone", "auth", "pacer", "trace",
                 "conflicting_authority")

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any):
        self.scope = scope
        self.receive = receive
        self.send_message = send
        self.method = scope["method"]
        raw_path = scope.get("raw_path")
        self.path = raw_path.decode("latin-1") if raw_path else quote(scope["path"], safe="/")
        self.query = scope["query_string"].decode("latin-1")
        self.headers = latin1_headers(scope["headers"])
        client = scope.get("client")
        self.client = client[0] if client else ""
        self.scheme = scope.get("scheme", "http")
        self.protocol = "HTTP/" + scope.get("http_version", "1.1")
        self.started = False
        # granian's ASGI scope does not say whether the target was in absolute form.
        self.absolute_form = False
        self.conflicting_authority = False  # granian's ASGI scope has no separate :authority
        self.auth: Any = None  # what the route's authorizer asserted (fastgw/policies/authorizers)
        self.trace: Any = None  # a traced stage's trace context (fastgw/tracing.py)

    @property
    def peer_address(self) -> str:
        return self.client  # a bare host: what peer_host keeps whole

    async def read_body(self) -> bytes:
        chunks = [chunk async for chunk in self.body_chunks()]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def body_chunks(self) -> Any:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
        return self._respond(status, headers, body)

    async def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        fields = bytes_headers(headers)
        fields.append((b"content-length", b"%d" % len(body)))
        await self.send_message({"type": "http.response.start", "status": status, "headers": fields})
        await self.send_message({"type": "http.response.body", "body": body})

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        await self.send_message({"type": "http.response.start", "status": status, "headers": bytes_headers(headers)})
        # granian's ASGI send() is a silent no-op once the client has gone (RSGI's raises), so a
        # stream would read its upstream to the end for nobody: receive() says when it goes.
        self.gone = asyncio.ensure_future(self._client_gone())
        # granian's ASGI send() waits for an HTTP/1 client, not for an HTTP/2 stream's (measured:
        # +175 MiB for 50 stalled streams): those are paced as over RSGI (fastgw/backpressure.py).
        self.pacer = None
        if self.protocol == "HTTP/2":
            client, server = self.scope.get("client"), self.scope.get("server")
            if client and server:
                self.pacer = StreamPacer(f"{client[0]}:{client[1]}", f"{server[0]}:{server[1]}", 0)

    async def _client_gone(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def send(self, chunk: bytes) -> None:
        if self.gone.done():
            raise ClientDisconnected()
        await self.send_message({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.pacer is not None:
            try:
                await self.pacer.handed(len(chunk))
            except ClientGone:
                self.pacer.close()
                raise ClientDisconnected() from None

    async def finish(self) -> None:
        self.gone.cancel()
        if self.pacer is not None:
            self.pacer.close()
        await self.send_message({"type": "http.response.body", "body": b""})

    def abort(self) -> None:
        """A started response failed: granian aborts the connection of an ASGI response the app left
        unfinished, so only the disconnect watcher is left to stop."""
        self.gone.cancel()
        if self.pacer is not None:
            self.pacer.close()


# -- the apps granian calls in each worker --------------------------------------------------------
class RsgiApp:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        # granian's callback (it reads `__rsgi__` once): HTTP requests to the plain lane or the pipeline,
        # WebSocket upgrades to `upgrade` (fastgw/lane.py RsgiEntry)
        self.__rsgi__ = lane.RsgiEntry(gateway, self.upgrade, RsgiDownstream)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.gateway.start(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.gateway.stop()

    def upgrade(self, scope: Any, proto: Any) -> Awaitable[None]:
        """An RSGI call that is not an HTTP request: a WebSocket upgrade (anything else is ignored)."""
        if scope.proto == "ws":
            return serve_websocket(self.gateway, RsgiDownstream(scope, proto), RsgiChannel(proto))
        return _nothing()


async def _nothing() -> None:
    pass


async def serve_websocket(gateway: Gateway, down: Any, channel: Any) -> None:
    """A WebSocket upgrade on a REST or HTTP API (either interface): the matched route's HTTP_PROXY
    integration relays it to a WebSocket upstream (fastgw/websocket/passthrough.py, which refuses any
    other route); errors before a stage is found are the default gateway responses."""
    try:
        if not gateway.plan.server.webSocketPassThrough.enabled:
            raise GatewayError("BAD_REQUEST_PARAMETERS", "WebSocket connections are not accepted here")
        head = gateway.receive(down)
        stage, route_path = gateway.select_stage(head.host, down.path)
        if stage.websocket is not None:  # WebSocket APIs have their own port (fastgw/websocket/listener.py)
            raise GatewayError("BAD_REQUEST_PARAMETERS", "WebSocket APIs listen on port "
                               f"{websocket_address(gateway.plan.server)[1]}")
    except GatewayError as exc:
        await passthrough.refuse_error(channel, DEFAULT_RESPONSES, exc, gateway.ids.next())
        return
    await passthrough.serve(gateway, down, channel, head, stage, route_path)


class AsgiApp:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.gateway.handle(AsgiDownstream(scope, receive, send))
        elif kind == "websocket":
            # An upgrade is a GET; ASGI names its scheme ws/wss, the forwarded fields say http/https.
            request = {**scope, "method": "GET", "scheme": "https" if scope.get("scheme") == "wss" else "http"}
            channel = AsgiChannel(scope, receive, send)
            await serve_websocket(self.gateway, AsgiDownstream(request, receive, send), channel)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.gateway.start(asyncio.get_running_loop())
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.gateway.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


# -- the main process ---------------------------------------------------------------------------


def load_app() -> Any:
    """granian's target loader, called in each freshly forked worker."""
    current = runtime.RUNTIME
    assert current is not None
    plan = current.plan
    access_log = AccessLog() if plan.server.accessLog else None
    gateway = Gateway(plan, access_log)
    runtime.attach(gateway)  # live reloads: follow the main process's plan generations
    if has_websockets(plan):  # WebSocket APIs: their port and connections in this worker
        hub = gateway.websockets = Hub(gateway, runtime.LIVE.directory if runtime.LIVE is not None else None)
        hub.listener = Listener(hub, plan, websocket_address(plan.server))
    app = RsgiApp(gateway) if plan.interface == "rsgi" else AsgiApp(gateway)
    # PERF: the request path leaves no reference cycles behind (checked with gc.DEBUG_SAVEALL under
    # load: none), yet the cyclic collector took ~3 % of the worker's CPU walking live objects.
    # What is loaded now lives as long as the worker: freeze it out of the collector's
    # generations, and let the young generation grow larger between (rare, cheap) collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    allocator.tune_for_proxy()
    scheduling.apply(plan.server.cpuScheduling)
    return app


def has_websockets(plan: Plan) -> bool:
    return any(stage.websocket is not None for stage in plan.stages)


class FastgwGranian(GranianServer):
    """granian's multi-process server with fastgw's readiness, validated reloads and logs."""

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        if runtime.RUNTIME is not None:
            if not runtime.RUNTIME.draining:
                log.info("stopping: /readyz fails, in-flight requests get up to %ss", self.workers_kill_timeout)
            runtime.RUNTIME.draining = True
            live = runtime.LIVE
            if live is not None and has_websockets(runtime.RUNTIME.plan) and not live.draining():
                # granian drops WebSocket connections when it stops a worker: each hub closes its own first
                live.drain()
                done = live.wait_drained(DRAIN_WEBSOCKETS_SECONDS)
                log.info("WebSocket connections closed in %d worker(s)", done)
        super().signal_handler_interrupt(*args, **kwargs)

    def _reload(self, spawn_target: Any, target_loader: Any) -> Any:
        # Live reload: every worker swaps in the new plan itself (fastgw/runtime.py); no worker
        # is restarted, so no connection is dropped.
        self.reload_signal = False
        self.main_loop_interrupt.clear()
        log.info("SIGHUP: reloading the config")
        runtime.reload_config("SIGHUP")
        return None

    def _respawn_workers(self, workers: Any, spawn_target: Any, target_loader: Any, delay: float = 0) -> None:
        for idx in workers:
            inner = getattr(self.wrks[idx], "inner", None)
            log.warning("worker-%d (pid %s) died (exit code %s): respawning it", idx + 1,
                        getattr(inner, "pid", "?"), getattr(inner, "exitcode", "?"))
        super()._respawn_workers(workers, spawn_target, target_loader, delay)
        for idx in workers:
            inner = getattr(self.wrks[idx], "inner", None)
            log.info("worker-%d respawned (pid %s)", idx + 1, getattr(inner, "pid", "?"))

    def startup(self, spawn_target: Any, target_loader: Any) -> None:
        super().startup(spawn_target, target_loader)
        current = runtime.RUNTIME
        if current is not None:
            current.ready = True  # /readyz still waits for every worker (runtime.readiness)
            log_startup(current, self.workers)


def url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def log_startup(current: runtime.Runtime, workers: int) -> None:
    plan = current.plan
    server = plan.server
    usage = plan.usage
    state = getattr(usage, "state_dir", None) if usage is not None else None
    log.info("listening on %s (interface %s, %d worker(s)); admin API on %s; config %s; state %s",
             url("https" if server.tlsCert else "http", server.host, server.port), plan.interface, workers,
             url("http", server.adminHost, server.adminPort), os.path.abspath(current.config_path),
             state or "none (in memory)")
    if has_websockets(plan):
        log.info("WebSocket APIs listening on %s", url("wss" if server.tlsCert else "ws", *websocket_address(server)))


# -- start-up checks: each failure is one line and a non-zero exit -------------------------------------
def fail(message: str) -> SystemExit:
    return SystemExit(f"fastgw: {message}")


def check_port(host: str, port: int, what: str) -> None:
    """Refuse a port another process listens on. granian's workers listen with SO_REUSEPORT, so
    without this check a second gateway would silently share the port. A plain bind (SO_REUSEADDR
    only, so connections in TIME_WAIT do not count) fails when any socket listens there."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise fail(f"cannot use the {what} address {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                where = url("tcp", host, port).removeprefix("tcp://")
                if exc.errno == errno.EADDRINUSE:
                    hint = " (choose another port, or stop the other process)"
                    if what == "data":
                        hint = " (choose another --port, stop the other process, or pass --reuse-port to share it)"
                    raise fail(f"the {what} port {where} is already in use by another process{hint}") from None
                if exc.errno == errno.EACCES:
                    raise fail(f"no permission to listen on the {what} port {where} "
                               "(ports below 1024 need root or CAP_NET_BIND_SERVICE)") from None
                raise fail(f"cannot listen on the {what} port {where}: {exc.strerror}") from None


def check_tls(cert: str | None, key: str | None) -> None:
    if not cert and not key:
        return
    if not cert or not key:
        raise fail("TLS needs both a certificate (--tls-cert, server.tlsCert) and a key (--tls-key, server.tlsKey)")
    for name, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise fail(f"cannot read the TLS {name} {path}: {exc.strerror}") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise fail(f"cannot load the TLS certificate {cert} with the key {key}: {exc}") from None


LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str) -> None:
    """fastgw's own loggers: one line each on stderr (the access log has stdout)."""
    logger = logging.getLogger("fastgw")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(LOG_LEVELS.get(level, logging.INFO))
    logger.propagate = False


def serve(config_path: str, plan: Plan, overrides: dict[str, Any], log_level: str | None = None) -> None:
    configure_logging(log_level or "info")
    current = runtime.RUNTIME = runtime.Runtime(config_path, plan, overrides)
    server = plan.server
    limits = server.limits
    workers = server.workers or default_workers()
    if server.reusePort:
        log.warning("reusePort: sharing %s with any process already listening there",
                    url("http", server.host, server.port))
    else:
        check_port(server.host, server.port, "data")
    if has_websockets(plan):
        ws_host, ws_port = websocket_address(server)
        if ws_port == 0 or (ws_port == server.port and ws_host == server.host):
            raise fail("WebSocket APIs need a port of their own: set server.webSocket.port (--ws-port, "
                       "env FASTGW_WEB_SOCKET_PORT)")
        if not server.reusePort:
            check_port(ws_host, ws_port, "WebSocket")
    check_tls(server.tlsCert, server.tlsKey)
    granian = FastgwGranian(
        target="fastgw",
        address=server.host,
        port=server.port,
        interface=Interfaces.RSGI if plan.interface == "rsgi" else Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.auto,
        # granian answers WebSocket handshakes only for the pass-through (off: granian's plain HTTP path has
        # no upgrade check); WebSocket APIs have their own listener (fastgw/websocket/listener.py)
        websockets=server.webSocketPassThrough.enabled,
        backlog=2048,
        http1_settings=HTTP1Settings(
            header_read_timeout=limits.headerReadTimeoutMs,
            keep_alive=True,
            # Large enough for fastgw's own limits to be the ones that answer (414/431).
            max_buffer_size=limits.maxHeaderBytes + limits.maxUriBytes + 8192,
        ),
        http2_settings=HTTP2Settings(
            # What one stalled HTTP/2 client can make a worker hold grows with its streams (each holds
            # up to ~0.6 MiB of upstream read-ahead and one handed chunk: fastgw/backpressure.py); 32
            # keeps it within 32 MiB a connection (more requests wait for a stream at the client).
            max_concurrent_streams=H2_MAX_STREAMS,
            initial_stream_window_size=64 * 1024,
            initial_connection_window_size=1024 * 1024,
            max_headers_size=limits.maxHeaderBytes,
        ),
        log_enabled=True,
        log_level=log_level or "warning",
        log_access=False,
        ssl_cert=Path(server.tlsCert) if server.tlsCert else None,
        ssl_key=Path(server.tlsKey) if server.tlsKey else None,
        workers_kill_timeout=max(1, int(server.drainSeconds)),
        respawn_failed_workers=True,
    )
    # The usage state (shared table, persistence) exists before granian forks the workers.
    try:
        usage_state = start_main_state(lambda: current.plan.usage)
    except OSError as exc:
        raise fail(f"cannot use the state directory: {exc}") from None
    admin = None
    try:
        shared_area()  # likewise the caches' flush generations, inherited by every worker
        runtime.start_live()  # likewise the live-reload channel
        try:
            admin = start_admin(server.adminHost, server.adminPort, server.adminToken, ENDPOINTS)
        except OSError as exc:
            where = url("tcp", server.adminHost, server.adminPort).removeprefix("tcp://")
            if exc.errno == errno.EADDRINUSE:
                raise fail(f"the admin port {where} is already in use by another process "
                           "(choose another --admin-port, or stop the other process)") from None
            raise fail(f"cannot listen on the admin port {where}: {exc.strerror or exc}") from None
        if runtime.WATCH:
            runtime.start_watch()
        runtime.start_follow()  # Redis state: canary changes other nodes announce
        granian.serve(target_loader=load_app, wrap_loader=False)
    finally:
        if admin is not None:
            admin.shutdown()
            admin.server_close()
        runtime.stop_follow()
        runtime.stop_live()
        stop_main_state(usage_state)  # after the workers: the last counts are saved
    log.info("stopped")
