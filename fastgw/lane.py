"""The plain lane (issue 18): `Gateway.handle` for the requests that need nothing of the pipeline but their
usage plan, tracing and HTTP_PROXY integration, in one frame.

    RsgiEntry(gateway, ...)       granian's RSGI callback: plain requests here, the others to the server's
    plain_route(gateway, scope)   the request's PlainRoute, or None: `Gateway.handle` serves it
    serve(gateway, plain, ...)    the request, served as `handle` would serve it

What `handle` finds for a (method, path) of a plain route is remembered on its first request
(`Gateway.learn_plain`, which decides with `is_plain` in fastgw/pipeline.py); granian's RSGI scope is
read directly, and no Downstream object is made unless the response streams or fails. Anything the lane
does not serve goes to `handle` from its start, and the error answers and the relay of a streamed response
are `handle`'s own; the usage check (fastgw/policies/usage/stage.py), the tally and fastgw's access line
(`LineBuffer.line_of`) are the same kernels' calls. tests/test_plain_lane.py runs both on the same requests
and requires the same answers, upstream requests, access log lines and counters.

PERF: this file is plain Python, and setup.py also compiles it with Cython as ``fastgw._lane``
(``_lane.pxd`` makes PlainRoute an extension type, whose fields are read without a lookup, and cimports
the kernels' classes from fastgw/_core.pxd, so that their fields and methods are reached in C); the
pipeline runs the compiled build, or this file with FASTGW_NO_EXTENSIONS (fastgw/_accel.py). Compiled,
the lane is ~5.6k instructions a plain request cheaper (40.0k -> 34.4k; docs/PERF.md "The plain lane,
compiled"). It also calls the compiled usage check (fastgw.policies.usage._stage, ~2.3k less a request
with a usage plan) and writes the access line into the log's buffer itself (~4k less with the log on).
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from . import metrics
from ._accel import RequestRejected, peer_host, scan_request, upstream_request_head
from .integrations.target import IDEMPOTENT, HttpProxyPlan, length_framing
from .plan import RoutePlan, StagePlan
from .upstream import UpstreamError, exchange_failed

# RSGI's http_version -> the protocol as the access log and the request context name it
PROTOCOLS = {"1.1": "HTTP/1.1", "1": "HTTP/1.0", "1.0": "HTTP/1.0", "2": "HTTP/2"}


class PlainRoute:
    """What `handle` would find for one (method, path) of a plain route, as the plain lane keeps it, with the
    worker's objects the lane uses (PERF: read from here, not looked up on the Gateway: a PlainRoute is made
    after the plan it belongs to is in place, and forgotten with it, `Gateway.swap`)."""

    __slots__ = ("stage", "route", "integration", "tracing", "usage", "method", "path", "upstream_path", "target",
                 "host_header", "pool", "timeout", "framing", "head_request", "idempotent", "tally", "worker_metrics",
                 "overload", "ids", "limits", "trusted_hops", "usage_stage", "access_log", "log_buffer", "line_fixed")

    def __init__(self, stage: StagePlan, route: RoutePlan, path: str, params: dict[str, str], method: str,
                 gateway: Any):
        self.stage = stage
        self.route = route
        integration: HttpProxyPlan = route.integration
        self.integration = integration
        self.tracing = stage.tracing
        self.usage = route.usage
        self.method = method
        self.path = path  # percent-encoded, as the access log shows it
        self.upstream_path = integration.path(params)
        self.target = integration.target_at(self.upstream_path, "")  # the upstream target of a request without query
        self.host_header = integration.host_header
        self.pool = integration.pool
        self.timeout = integration.timeout
        self.framing = length_framing(method, 0)
        self.head_request = method == "HEAD"
        self.idempotent = method in IDEMPOTENT
        worker_metrics: metrics.WorkerMetrics = gateway.metrics
        self.tally = worker_metrics.tally(route, method, stage.api.name, stage.name, route.key, "false")
        self.worker_metrics = worker_metrics
        self.overload = gateway.overload
        self.ids = gateway.ids
        self.limits = gateway.limits
        self.trusted_hops = bool(gateway.trusted_hops)
        self.usage_stage = gateway.usage
        access_log = gateway.access_log
        self.access_log = access_log
        # fastgw's JSON line of this route (its fields that depend on the route only, serialised), which the
        # lane writes into the log's buffer itself. Always fastgw's line without a principal: `is_plain` sends
        # a stage with its own format and a route with an authorizer to `handle`.
        self.log_buffer = access_log.buffer if access_log is not None else None
        self.line_fixed = access_log.formatter(stage, route).fixed if access_log is not None else None


class RsgiEntry:
    """granian's RSGI callback (fastgw/server.py RsgiApp): a request to a plain route goes to `serve`, any other
    HTTP request to `gateway.handle`, WebSocket upgrades to `other(scope, proto)`, the server's. PERF: granian
    calls this object itself, so that no HTTP request runs a Python frame before the pipeline's."""

    __slots__ = ("gateway", "other", "adapter")

    def __init__(self, gateway: Any, other: Any, adapter: Any):
        self.gateway = gateway
        self.other = other
        self.adapter = adapter  # the server's Downstream for (scope, proto)

    def __call__(self, scope: Any, proto: Any) -> Any:
        gateway = self.gateway
        if scope.proto != "http":
            return self.other(scope, proto)
        if gateway.has_plain:
            plain = plain_route(gateway, scope)
            if plain is not None:
                return serve(gateway, plain, scope, proto, self.adapter)
        # PERF: hands granian the pipeline's coroutine itself (one coroutine frame less per request)
        return gateway.handle(self.adapter(scope, proto))


def plain_route(gateway: Any, scope: Any) -> PlainRoute | None:
    """The plain lane for this request, or None: `gateway.handle` serves it (another route, an
    absolute-form target or HTTP/2's :authority, load shedding). `gateway`: fastgw/pipeline.py Gateway."""
    path = scope.path
    method = scope.method
    # PERF: no tuple key (~0.3k instructions); the annotations make the compiled lookups C calls
    seen: dict = gateway.plain_seen
    methods: dict = seen.get(path)
    found = methods.get(method) if methods is not None else None
    if found is None:
        found = gateway.learn_plain(method, path)
    if found is False or scope.authority is not None:
        return None
    plain: PlainRoute = found
    if plain.worker_metrics.inflight >= plain.overload.limit:
        return None
    return plain


async def serve(gateway: Any, plain: PlainRoute, scope: Any, proto: Any, adapter: Any) -> None:
    """`gateway.handle` for a request to `plain` (a request without a body goes on here; one with a body or
    a refused head goes to `handle` from its start: nothing was done yet). `adapter`: the server's
    Downstream for `scope` and `proto` (fastgw/server.py RsgiDownstream)."""
    started = perf_counter()
    method = plain.method  # the method it is remembered under (one read of granian's scope less)
    query = scope.query_string
    headers = scope.headers.items()
    try:
        # (the annotations naming kernel classes are C types of the compiled lane: fastgw/_lane.pxd cimports them)
        head: RequestFacts = scan_request(method, plain.path, query, False, headers, plain.limits)  # noqa: F821
    except RequestRejected:
        return await gateway.handle(adapter(scope, proto))
    if head.chunked or head.content_length > 0 or not head.host and scope.http_version == "1.1":
        return await gateway.handle(adapter(scope, proto))
    worker_metrics = plain.worker_metrics
    request_id = plain.ids.next()
    peer_address = scope.client or ""
    forward = head.forward
    trace = None
    if plain.tracing is not None:  # as in handle and request_head
        trace = plain.tracing.start(headers, started)
        if trace is not None:
            forward = trace.forward(forward)
    request_head = upstream_request_head(
        method, plain.integration.target_at(plain.upstream_path, query) if query else plain.target,
        plain.host_header, forward, peer_address, head.forwarded_for if plain.trusted_hops else "", scope.scheme,
        head.host, plain.framing)
    down = None
    integration_latency = -1.0
    worker_metrics.inflight += 1
    try:
        usage = plain.usage  # API key -> throttle -> quota, as in handle
        if usage is not None and (waiter := plain.usage_stage.check(usage, head.api_key, None)) is not None:
            await waiter
        began = perf_counter()
        # PERF: `exchange` without its coroutine frame (its retry rule is `exchange_failed`)
        pool = plain.pool
        conn: UpstreamConnection = pool.take_idle() or await pool.connect()  # noqa: F821
        try:
            await conn.send(request_head, plain.head_request, plain.timeout, 0)
        except UpstreamError as exc:
            conn = await exchange_failed(pool, conn, exc, request_head, plain.head_request, plain.idempotent,
                                         plain.timeout, 0)
        except asyncio.CancelledError:
            pool.discard(conn)
            raise
        parser: ResponseParser = conn.parser  # noqa: F821
        if parser.complete:  # PERF: relay_whole inline (the lane has no cache fill and keeps the status)
            status = parser.status
            headers = parser.headers
            headers.append(("x-amzn-requestid", request_id))
            body = parser.take_body()
            conn.pool.release(conn)  # its own pool (`pool` may be an upstream group: fastgw/upstream_groups.py)
            sent = len(body)
            proto.response_bytes(status, headers, body)
        else:
            down = adapter(scope, proto)
            status, sent = await gateway.relay_response(down, conn, request_id)
        ended = perf_counter()
        integration_latency = ended - began
    except Exception as exc:  # noqa: BLE001 - as in handle
        if down is None:
            down = adapter(scope, proto)
        status, sent = await gateway.fail(down, exc, plain.stage, plain.route, head, request_id)
        ended = perf_counter()
    finally:
        worker_metrics.inflight -= 1
    elapsed = ended - started
    plain.tally.record(status, elapsed, integration_latency)
    access_log = plain.access_log
    if access_log is not None:  # PERF: AccessLog.write's work for fastgw's line, in C (~3k instructions)
        log_buffer: LineBuffer = plain.log_buffer  # noqa: F821
        if log_buffer.line_of(request_id, peer_host(peer_address), method, plain.path,
                              PROTOCOLS.get(scope.http_version) or "HTTP/" + scope.http_version, plain.line_fixed,
                              status, sent, elapsed, integration_latency):
            access_log.write_out()
        if not access_log.scheduled:
            access_log.schedule()
    if trace is not None:
        trace.finish(plain.stage, plain.route, method, plain.path, status, elapsed, integration_latency, request_id)
