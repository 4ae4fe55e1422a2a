"""WebSocket pass-through on HTTP_PROXY routes (issue 16), as nginx, Kong and APISIX relay upgrades.

A client that asks a REST or HTTP API's HTTP_PROXY route for `Upgrade: websocket` is connected to a
WebSocket upstream at the integration URI (ws:// for http://, wss:// for https://):

    handshake  the request's stage, route and policies as for any request (limits, authorizer, API
               key, throttle, validation); the upstream handshake carries the path, query and
               forwarded fields the HTTP request would (Gateway.request_head)
    refusal    the upstream's non-101 answer goes to the client as an HTTP response (ASGI: status,
               headers, body; RSGI: the status only); a gateway failure is the API's gateway response
    relay      messages both ways, text stays text and binary binary; a close on one side closes the
               other with the same code (where the interface carries codes: fastgw/websocket/channel.py)
    limits     `server.webSocketPassThrough`: a message over maxMessageBytes either way closes both
               sides with 1009; no message for idleTimeoutSeconds, or a session older than
               maxLifetimeSeconds, closes both with 1001 (AWS's WebSocket API quotas by default)

Back-pressure: each direction moves one message at a time and waits for the send to finish. A client
that reads nothing makes the relay stop reading the upstream (websockets then pauses the upstream
socket after MAX_QUEUE frames), and an upstream that reads nothing stops the reading of the client.
So what a session holds is bounded whatever either side does.

The upstream leg is the `websockets` library (framing, handshake, close handshake); compression is
off (a deflate context costs ~300 KiB per connection) and so are its pings (the idle timeout ends
dead sessions, as nginx's proxy_read_timeout does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from random import random
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import EXTERNAL_CLOSE_CODES

from ..errors import GatewayAnswered, GatewayError, GatewayResponses
from ..integrations.target import HttpProxyPlan
from ..policies.authorizers.base import Authorization, NeedsBody
from ..policies.validation import ReplayedBody
from ..upstream import UpstreamError
from ..upstream_groups import GroupPool
from .channel import ABNORMAL, ClientGone

if TYPE_CHECKING:
    from .._accel import RequestFacts
    from ..config.model.server import WebSocketPassThrough
    from ..pipeline import Downstream, Gateway
    from ..plan import RoutePlan, StagePlan

log = logging.getLogger("fastgw")

MAX_QUEUE = 4  # upstream frames websockets buffers before it stops reading the upstream's socket
CLOSE_TIMEOUT = 5.0  # seconds the upstream gets to answer our close frame
GOING_AWAY = 1001
TOO_BIG = 1009
INTERNAL_ERROR = 1011
# The upstream's 101 or refusal: fields that describe that hop, never relayed to the client.
HOP_FIELDS = frozenset(("connection", "upgrade", "keep-alive", "transfer-encoding", "content-length", "te",
                        "trailer", "proxy-connection", "date", "server", "sec-websocket-accept",
                        "sec-websocket-extensions", "sec-websocket-protocol"))


async def serve(gateway: Gateway, down: Downstream, channel: Any, head: RequestFacts, stage: StagePlan,
                route_path: str) -> None:
    """One upgrade request on a REST or HTTP API stage: handshake, then the relay until either side
    ends. Never raises: failures before the upgrade are HTTP answers, after it close codes."""
    started = time.perf_counter()
    request_id = gateway.ids.next()
    route: RoutePlan | None = None
    status = 500
    upstream: ClientConnection | None = None
    if stage.canary is not None and random() * 100.0 < stage.canary_percent:
        stage = stage.canary  # the canary deployment serves this connection
    try:
        route, upstream = await handshake(gateway, down, channel, head, stage, route_path, request_id)
        status = 101
    except GatewayError as exc:
        status = await refuse_error(channel, stage.api.responses, exc, request_id)
    except GatewayAnswered as answered:
        status = answered.status
        await refuse(channel, status, [*answered.headers, ("x-amzn-requestid", request_id)], b"")
    except InvalidStatus as exc:  # the upstream's own answer, relayed
        response = exc.response
        status = response.status_code
        headers = [(name, value) for name, value in response.headers.raw_items() if name.lower() not in HOP_FIELDS]
        headers.append(("x-amzn-requestid", request_id))
        await refuse(channel, status, headers, bytes(response.body or b""))
    except ClientGone:
        status = 499
    except Exception:  # noqa: BLE001 - the last line of defence: an answer, never a traceback
        log.exception("unexpected error in the WebSocket handshake of %s", down.path)
        status = await refuse_error(channel, stage.api.responses, GatewayError("DEFAULT_5XX"), request_id)
    elapsed = time.perf_counter() - started
    # Metrics and the access log record the handshake (101 or the refusal), not the session's length.
    tally = gateway.metrics.tally(route or stage, "GET", stage.api.name, stage.name, route.key if route else "",
                                  "true" if stage.is_canary else "false")
    tally.record(status, elapsed, elapsed if upstream is not None else -1.0)
    if gateway.access_log is not None:
        gateway.access_log.write(request_id, down, stage, route, status, 0, elapsed, -1.0)
    if upstream is not None:
        await Session(channel, upstream, gateway.plan.server.webSocketPassThrough).run()


async def refuse_error(channel: Any, responses: GatewayResponses, error: GatewayError, request_id: str) -> int:
    """The upgrade refused with a gateway response (the API's, or the defaults before a stage was found)."""
    status, headers, body = responses.render(error.kind, error.message)
    headers.append(("x-amzn-requestid", request_id))
    headers.extend(error.headers)
    await refuse(channel, status, headers, body)
    return status


async def refuse(channel: Any, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    try:
        await channel.refuse(status, headers, body)
    except Exception:  # noqa: BLE001 - the client has gone: nobody to answer
        pass


async def handshake(gateway: Gateway, down: Downstream, channel: Any, head: RequestFacts, stage: StagePlan,
                    route_path: str, request_id: str) -> tuple[RoutePlan, ClientConnection]:
    """The route and its policies as Gateway.handle applies them (the same order; CORS and the cache do
    not apply to an upgrade), then the upstream's handshake; the client is accepted last, so an upstream
    refusal can still be answered over HTTP."""
    route, params = gateway.match(stage, down.method, route_path)
    if head.chunked or head.content_length > 0:  # RFC 6455 4.1: a handshake is a GET without a body
        raise GatewayError("BAD_REQUEST_BODY", "A WebSocket handshake has no body")
    if route.authorizer is not None:
        auth = route.authorizer.check(down, head, stage, route, route_path, params, request_id)
        if auth.__class__ is not Authorization:
            auth = auth.finish(b"") if auth.__class__ is NeedsBody else await auth  # an upgrade has no body
        down.auth = auth
    if route.usage is not None:
        key = down.auth.usage_key if route.authorizer is not None else None
        if (waiter := gateway.usage.check(route.usage, head.api_key, key)) is not None:
            await waiter
    if route.validator is not None:  # an upgrade has no body: the validator must not read the socket's
        await route.validator.check(gateway, ReplayedBody(down, b""), head)
    integration = route.integration
    if integration.__class__ is not HttpProxyPlan:
        # Only a plain HTTP_PROXY route relays upgrades (not FUNCTION, MOCK, HTTP, or parameter mappings).
        raise GatewayError("BAD_REQUEST_PARAMETERS", "This route does not accept WebSocket connections")
    upstream = await open_upstream(gateway, down, channel, head, integration, params)
    try:
        await channel.accept(upstream.subprotocol, response_fields(upstream))
    except BaseException:
        upstream.transport.abort()
        raise
    return route, upstream


async def open_upstream(gateway: Gateway, down: Downstream, channel: Any, head: RequestFacts,
                        integration: HttpProxyPlan, params: dict[str, str]) -> ClientConnection:
    """The upstream's WebSocket handshake at the integration URI, with what an HTTP request to it carries."""
    target = integration.target(params, down.query)
    pool = integration.pool
    uri = f"{'wss' if pool.scheme == 'https' else 'ws'}://{integration.host_header}{target}"
    # The head an HTTP request would send (forwardable client fields, X-Forwarded-*), less what
    # websockets writes itself: Host and the handshake's own fields.
    request_head = gateway.request_head(down, head, "GET", target, integration.host_header, "\r\n")
    fields = []
    for line in request_head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        lower = name.lower()
        if name and lower != "host" and not lower.startswith("sec-websocket-"):
            fields.append((name, value.strip()))
    limits = gateway.plan.server.webSocketPassThrough
    group = pool if pool.__class__ is GroupPool else None
    tried: set[Any] = set()
    while True:
        member = None
        host, port = pool.host, pool.port
        if group is not None:  # an upstream group: one of its targets, balanced as HTTP requests are
            try:
                member = group.pick(exclude=tried)
            except UpstreamError as exc:  # CircuitOpen: no target available, 503 with Retry-After
                raise GatewayError(exc.kind, "Service Unavailable", getattr(exc, "headers", ())) from None
            tried.add(member)
            host, port = member.pool.host, member.pool.port
        try:
            upstream = await UpstreamConnect(
                uri, host=host, port=port, additional_headers=fields, user_agent_header=None,
                subprotocols=channel.subprotocols or None, compression=None, proxy=None,
                open_timeout=integration.timeout, ping_interval=None, close_timeout=CLOSE_TIMEOUT,
                max_size=limits.maxMessageBytes, max_queue=MAX_QUEUE)
        except InvalidStatus as exc:
            if member is not None:
                member.succeeded(exc.response.status_code)  # its 502/503/504 count towards ejection
            raise
        except TimeoutError:
            if member is not None:
                member.failed()
            raise GatewayError("INTEGRATION_TIMEOUT", "Endpoint request timed out") from None
        except ConnectionRefusedError:
            if member is not None:
                member.failed()
                if len(tried) < len(group.members):
                    continue  # nothing was sent: the next target, as for HTTP requests
            raise GatewayError("INTEGRATION_FAILURE", "Bad Gateway") from None
        except (OSError, InvalidHandshake, EOFError):
            if member is not None:
                member.failed()
            raise GatewayError("INTEGRATION_FAILURE", "Bad Gateway") from None
        if member is not None:
            member.succeeded(101)
        return upstream


class UpstreamConnect(connect):
    """websockets' connect, less its redirect following: an upstream's 3xx goes to the client as it came
    (a gateway that followed it would connect wherever an upstream's Location header says)."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def response_fields(upstream: ClientConnection) -> list[tuple[str, str]]:
    """The upstream 101's fields the client may see (Set-Cookie and the like)."""
    response = upstream.response
    if response is None:
        return []
    return [(name, value) for name, value in response.headers.raw_items() if name.lower() not in HOP_FIELDS]


def sendable(code: int, instead: int) -> int:
    """`code` if a close frame may carry it (RFC 6455 7.4), else `instead` (1005/1006 are never sent)."""
    return code if code in EXTERNAL_CLOSE_CODES or 3000 <= code <= 4999 else instead


def message_size(data: bytes | str) -> int:
    if data.__class__ is str:
        return len(data) if data.isascii() else len(data.encode())  # type: ignore[union-attr]
    return len(data)


class Session:
    """One relayed connection: two pumps (client -> upstream, upstream -> client), one message at a
    time each, and the idle and lifetime limits; the first pump to end decides how both sides close."""

    __slots__ = ("channel", "upstream", "limits", "last")

    def __init__(self, channel: Any, upstream: ClientConnection, limits: WebSocketPassThrough):
        self.channel = channel
        self.upstream = upstream
        self.limits = limits
        self.last = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        self.last = start = loop.time()
        ends_at = start + limits.maxLifetimeSeconds
        pumps = (asyncio.ensure_future(self.client_to_upstream()), asyncio.ensure_future(self.upstream_to_client()))
        try:
            while True:
                now = loop.time()
                wait = min(self.last + limits.idleTimeoutSeconds, ends_at) - now
                if wait <= 0:
                    end = ("limit", GOING_AWAY, "Idle timeout" if now < ends_at else "Connection lifetime exceeded")
                    break
                done, _ = await asyncio.wait(pumps, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if done:
                    pump = done.pop()
                    if pump.exception() is None:
                        end = pump.result()
                    else:
                        log.error("WebSocket relay failed", exc_info=pump.exception())
                        end = ("limit", INTERNAL_ERROR, "Internal error")
                    break
        except BaseException:  # cancelled with the worker: nothing is left to tell either side
            self.upstream.transport.abort()
            raise
        finally:
            for pump in pumps:
                pump.cancel()
        await self.finish(*end)

    async def client_to_upstream(self) -> tuple[str, int, str]:
        channel, upstream, loop = self.channel, self.upstream, asyncio.get_running_loop()
        limit = self.limits.maxMessageBytes
        while True:
            data = await channel.receive()
            if data is None:
                return "client", channel.close_code, channel.close_reason
            if message_size(data) > limit:
                return "limit", TOO_BIG, "Message too big"
            self.last = loop.time()
            try:
                await upstream.send(data)  # waits while the upstream reads nothing
            except ConnectionClosed as exc:
                return upstream_end(exc)

    async def upstream_to_client(self) -> tuple[str, int, str]:
        channel, upstream, loop = self.channel, self.upstream, asyncio.get_running_loop()
        while True:
            try:
                data = await upstream.recv()
            except ConnectionClosed as exc:
                return upstream_end(exc)
            self.last = loop.time()
            try:
                await channel.send(data)  # waits while the client reads nothing
            except ClientGone:
                return "client", ABNORMAL, ""

    async def finish(self, side: str, code: int, reason: str) -> None:
        """Close what is still open: the side that ended already closed; the other gets its code."""
        upstream = self.upstream
        try:
            if side != "client":
                await self.channel.close(sendable(code, INTERNAL_ERROR if code == ABNORMAL else 1000), reason)
            if side != "upstream":
                await upstream.close(sendable(code, GOING_AWAY if code == ABNORMAL else 1000), reason)
        except Exception:  # noqa: BLE001 - a side that went away meanwhile: nothing left to tell it
            pass
        finally:
            if upstream.transport is not None and not upstream.transport.is_closing():
                upstream.transport.abort()


def upstream_end(exc: ConnectionClosed) -> tuple[str, int, str]:
    """How the upstream's side ended: its close frame, or 1009 when it sent a message too big
    (websockets closed it), or 1006 when it vanished without a close frame."""
    sent = exc.sent
    if sent is not None and sent.code == TOO_BIG and exc.rcvd_then_sent is not True:
        return "limit", TOO_BIG, "Message too big"
    if exc.rcvd is not None:
        return "upstream", exc.rcvd.code, exc.rcvd.reason
    return "upstream", ABNORMAL, ""
