"""The request pipeline for REST and HTTP APIs, top to bottom.

    receive   limits and syntax of the request head; request id
    match     API mapping / stage prefix → stage, path normalisation, compiled route tree
    integrate HTTP_PROXY: upstream pool, timeouts, streaming
    respond   response headers, metrics, access log

A stage either passes the request on, answers it, or raises GatewayError, which becomes the API's
gateway response. Nothing else escapes: an unexpected exception is logged and answered with the
DEFAULT_5XX response, never with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from random import random
from types import ModuleType
from typing import Any, Protocol

from . import lane as py_lane
from . import metrics, tracing
from ._accel import RequestFacts, RequestIds, RequestRejected, compiled, scan_request, upstream_request_head
from .accesslog import AccessLog
from .config.model import default_workers
from .errors import (
    CLIENT_CLOSED_REQUEST,
    DEFAULT_RESPONSES,
    ClientDisconnected,
    ClientStalled,
    GatewayAnswered,
    GatewayError,
    GatewayResponses,
)
from .httpsyntax import encode_decoded_path, host_name, normalize_path
from .integrations import RUNS, target_of
from .integrations.target import IDEMPOTENT, HttpProxyPlan, length_framing
from .lane import PlainRoute
from .overload import OverloadGuard
from .plan import Plan, RoutePlan, StagePlan
from .policies.authorizers.base import Authorization, NeedsBody
from .policies.cache.stage import CacheStage
from .policies.usage import stage as py_usage_stage
from .policies.validation import ReplayedBody
from .upstream import UpstreamConnection, UpstreamError, exchange

# The plain lane (fastgw/lane.py): compiled by Cython as fastgw._lane, or the same file as Python.
lane: ModuleType = compiled("fastgw._lane") or py_lane
# The usage check (fastgw/policies/usage/stage.py): compiled as fastgw.policies.usage._stage, or the same file.
UsageStage = (compiled("fastgw.policies.usage._stage") or py_usage_stage).UsageStage

log = logging.getLogger("fastgw")

# Request bodies up to this size are read whole (and can be retried); larger ones are streamed.
BUFFER_BODY_BYTES = 64 * 1024
# Request paths whose stage selection and route match a worker remembers (pure functions of the plan,
# the path and, with API mappings, the host; of the stage, the method and the path): normalising,
# splitting and walking the route tree cost ~2 us a request, a lookup ~0.1. Only paths up to
# SEEN_PATH_MAX characters are kept, so the memory stays small whatever clients send.
STAGES_SEEN_MAX = 4096
ROUTES_SEEN_MAX = 4096
SEEN_PATH_MAX = 256
# The plain lane's memory: path as the server gave it -> method -> its PlainRoute, or False (not plain).
PLAIN_SEEN_MAX = 4096
PLAIN_METHODS_MAX = 16  # methods remembered per path (clients may send any token as a method)


def remember(memo: dict[Any, Any], key: Any, value: Any, max_entries: int) -> None:
    """Keep `value` under `key` in a per-worker memory of at most `max_entries` (emptied when full:
    the paths that matter come back at once)."""
    if len(memo) >= max_entries:
        memo.clear()
    memo[key] = value


class Downstream(Protocol):
    """The client side of one request, as the server adapter (ASGI or RSGI) provides it."""

    method: str
    path: str  # percent-encoded, as received (RSGI: re-encoded)
    query: str
    headers: list[tuple[str, str]]
    client: str  # the client's host
    peer_address: str  # the client's address as the server gives it (host, host:port or [v6]:port)
    scheme: str
    protocol: str
    absolute_form: bool
    trace: Any  # a traced stage's trace context (fastgw/tracing.py Trace), else None
    conflicting_authority: bool  # HTTP/2: a Host field that differs from :authority

    async def read_body(self) -> bytes: ...
    def body_chunks(self) -> Any: ...
    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Awaitable[None] | None:
        """Send a whole response. ASGI returns an awaitable; RSGI sends at once and returns None
        (one coroutine less per request on the fast path)."""
    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None: ...
    async def send(self, chunk: bytes) -> None: ...
    async def finish(self) -> None: ...
    def abort(self) -> None: ...


class Gateway:
    """One worker's gateway: the compiled plan plus the per-worker runtime state."""

    def __init__(self, plan: Plan, access_log: AccessLog | None):
        self.plan = plan
        self.stages_seen: dict[Any, tuple[StagePlan, str]] = {}
        self.routes_seen: dict[tuple[StagePlan, str, str], tuple[RoutePlan, dict[str, str]]] = {}
        self.plain_seen: dict[str, dict[str, PlainRoute | bool]] = {}
        # FASTGW_PLAIN_LANE=off: every request through `handle` (to compare, or to rule the lane out)
        self.plain_lane = os.environ.get("FASTGW_PLAIN_LANE", "on") != "off"
        self.overload = OverloadGuard(plan.server.overload)  # load shedding (fastgw/overload.py)
        self.apply_limits(plan)
        p = os.urandom(10).hex()  # a random prefix per worker process
        self.ids = RequestIds(f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-")
        self.access_log = access_log
        self.metrics = metrics.WorkerMetrics()
        # API keys, throttling, quotas (issue 4); None when the config has none of them.
        self.usage = UsageStage(plan.usage) if plan.usage is not None else None
        # The stage caches (issue 5); None when no stage has one. Each worker holds budget / workers.
        self.cache = CacheStage(plan.cache, plan.server.workers or default_workers()) \
            if plan.cache is not None else None
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.follower: Any = None  # live reloads (fastgw/runtime.py WorkerFollower), set by the server
        self.websockets: Any = None  # WebSocket APIs' connections (fastgw/websocket/api.py Hub), set by the server

    def apply_limits(self, plan: Plan) -> None:
        limits = plan.server.limits
        # what the request scan kernel enforces (scan_request's `limits`)
        self.limits = (limits.maxUriBytes, limits.maxHeaderCount, limits.maxHeaderBytes, limits.maxHeaderFieldBytes,
                       limits.maxBodyBytes)
        self.max_body = limits.maxBodyBytes
        self.body_idle_seconds = limits.bodyIdleTimeoutMs / 1000
        self.send_idle_seconds = limits.sendIdleTimeoutMs / 1000
        self.trusted_hops = plan.server.trustedHops
        self.traced = any(stage.tracing is not None for stage in plan.stages)
        # PERF: a plan with no plain route spares every request the lane's lookup (`plain_route`, ~1.8k
        # instructions)
        self.has_plain = self.plain_lane and any(is_plain(stage, route) for stage in plan.stages
                                                 for route in stage.routes)
        self.overload.configure(plan.server.overload)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.follower is not None:
            self.follower.start(loop)
        for pool in self.plan.pools.values():
            pool.bind(loop)
        self.metrics.start(loop)
        self.overload.start(loop)
        if self.websockets is not None:
            self.websockets.start(loop)
        if self.usage is not None:
            self.usage.start(loop)
        if self.cache is not None:
            self.cache.start(loop)
        metrics.worker_started()

    def swap(self, plan: Plan) -> None:
        """Install a newly compiled plan between two requests (a live reload). Requests already under
        way finish with the objects of the old plan; upstream pools of unchanged upstreams are kept
        (with their idle connections), the others close once their last exchanges are done."""
        loop = self.loop
        assert loop is not None
        old = self.plan
        for key, pool in list(plan.pools.items()):
            kept = old.pools.get(key)
            if kept is not None:
                kept.adopt(pool)  # the new plan's settings (connect timeout, maxRequests, names)
                plan.pools[key] = kept
            else:
                pool.bind(loop)
        _repoint_pools(plan)
        usage = UsageStage(plan.usage) if plan.usage is not None else None
        if usage is not None:
            usage.start(loop)
        # The stage caches start empty with a new plan (its routes may point elsewhere).
        cache = CacheStage(plan.cache, plan.server.workers or default_workers()) if plan.cache is not None else None
        if cache is not None:
            cache.start(loop)
        self.apply_limits(plan)
        if usage is not None and self.usage is not None:
            usage.adopt(self.usage)
        old_usage, self.usage = self.usage, usage
        old_cache, self.cache = self.cache, cache
        self.stages_seen = {}
        self.routes_seen = {}
        self.plain_seen = {}
        self.plan = plan
        if old_usage is not None:
            old_usage.stop()
        if old_cache is not None:
            old_cache.stop()
        gone = [pool for key, pool in old.pools.items() if plan.pools.get(key) is not pool]
        if gone:
            loop.call_later(plan.server.drainSeconds + 5, lambda: [pool.close() for pool in gone])

    def drain(self, done: Any) -> None:
        """The gateway is stopping: close the WebSocket connections now (granian would drop them); `done()`
        once none is left."""
        if self.websockets is not None:
            self.websockets.drain(done)
        else:
            done()

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        for pool in self.plan.pools.values():
            pool.close()
        if self.access_log is not None:
            self.access_log.flush(final=True)
        tracing.shutdown()  # spans still queued go to the collector
        self.metrics.stop()
        self.overload.stop()
        if self.websockets is not None:
            self.websockets.stop()
        if self.usage is not None:
            self.usage.stop()
        if self.cache is not None:
            self.cache.stop()
        metrics.worker_stopped()

    # -- the pipeline -------------------------------------------------------------------------
    async def handle(self, down: Downstream) -> None:
        started = time.perf_counter()
        request_id = self.ids.next()
        route: RoutePlan | None = None
        stage: StagePlan | None = None
        status = 500
        sent = 0
        integration_latency = -1.0
        head = None
        trace = None
        self.metrics.inflight += 1
        try:
            # receive
            head = self.receive(down)
            # match
            stage, route_path = self.select_stage(head.host, down.path)
            if self.metrics.inflight > self.overload.limit:  # shed before reading the body (server.overload)
                raise self.overload.refuse()
            if stage.canary is not None and random() * 100.0 < stage.canary_percent:
                stage = stage.canary  # the canary deployment serves this request
            if stage.tracing is not None:  # X-Ray / W3C / OTLP (fastgw/tracing.py); None: not sampled
                trace = down.trace = stage.tracing.start(down.headers, started)
            if stage.api.cors is not None:  # CORS (fastgw/policies/cors.py): may answer a preflight
                down = stage.api.cors.check(down)
            if stage.api.compression is not None:  # minimumCompressionSize (fastgw/policies/compression.py)
                down = stage.api.compression.check(down)
            route, params = self.match(stage, down.method, route_path)
            # authorizer (fastgw/policies/authorizers): refuses, or says who the caller is
            if route.authorizer is not None:
                auth_began = time.perf_counter()
                auth = route.authorizer.check(down, head, stage, route, route_path, params, request_id)
                signed_body = None
                if auth.__class__ is not Authorization:
                    if auth.__class__ is NeedsBody:  # SigV4 signs the body: read it, and replay it downstream
                        signed_body = await self.read_whole_body(down, head)
                        auth = auth.finish(signed_body)
                    else:
                        auth = await auth
                down.auth = auth
                if trace is not None:
                    trace.authorizer = (auth_began, time.perf_counter())
                if signed_body is not None:
                    down = ReplayedBody(down, signed_body)
            # usage: API key -> throttle -> quota; only Redis-backed checks need awaiting
            if route.usage is not None:
                key = down.auth.usage_key if route.authorizer is not None else None
                if (waiter := self.usage.check(route.usage, head.api_key, key)) is not None:
                    await waiter
            if route.validator is not None:  # request validation (fastgw/policies/validation.py)
                down = await route.validator.check(self, down, head)
            if route.cache is None:
                # integrate
                integration = route.integration
                began = time.perf_counter()
                if integration.__class__ is HttpProxyPlan:  # PERF: the common case, one coroutine frame less
                    status, sent = await self.http_proxy(down, head, integration, params, request_id)
                else:
                    status, sent = await self.integrate(down, head, stage, route, route_path, integration, params,
                                                        request_id)
                integration_latency = time.perf_counter() - began
            else:
                # cache (fastgw/policies/cache/stage.py): a hit answers from this worker's memory without the
                # integration; anything else integrates, and relay_response may store the response
                hit = self.cache.check(route.cache, down, head, params)
                if hit.__class__ is tuple:
                    status, headers, body = hit
                    pending = down.respond(status, [*headers, ("x-amzn-requestid", request_id)], body)
                    if pending is not None:
                        await pending
                    sent = len(body)
                else:
                    status, sent, integration_latency = await self.cache.fill(self, hit, down, head, stage, route,
                                                                              route_path, params, request_id)
        except Exception as exc:  # noqa: BLE001 - every error has its answer (fail), never a traceback
            status, sent = await self.fail(down, exc, stage, route, head, request_id)
        finally:
            self.metrics.inflight -= 1
        # respond: metrics and access log
        elapsed = time.perf_counter() - started
        tally = self.metrics.tallies.get((route or stage, down.method))
        if tally is None:
            tally = self.metrics.tally(route or stage, down.method, stage.api.name if stage else "",
                                       stage.name if stage else "", route.key if route else "",
                                       "true" if stage is not None and stage.is_canary else "false")
        tally.record(status, elapsed, integration_latency)
        if self.access_log is not None:
            self.access_log.write(request_id, down, stage, route, status, sent, elapsed, integration_latency)
        if trace is not None:
            trace.finish(stage, route, down.method, down.path, status, elapsed, integration_latency, request_id)

    def learn_plain(self, method: str, server_path: str) -> PlainRoute | bool:
        """The plain lane's first request for a (method, path as the server gave it): its PlainRoute, or
        False when `handle` must serve it (the route is not plain, the path matches none or is refused,
        or an API mapping's base path covers it, so that its stage depends on the host). Remembered for
        paths up to SEEN_PATH_MAX."""
        found: PlainRoute | bool = False
        if self.plain_lane:
            path = encode_decoded_path(server_path)
            try:
                if not _mapped(self.plan, path):
                    stage, route_path = self.select_stage("", path)
                    route, params = self.match(stage, method, route_path)
                    if is_plain(stage, route):
                        found = lane.PlainRoute(stage, route, path, params, method, self)
            except GatewayError:
                pass
        if len(server_path) <= SEEN_PATH_MAX:
            methods = self.plain_seen.get(server_path)
            if methods is None:
                remember(self.plain_seen, server_path, {method: found}, PLAIN_SEEN_MAX)
            else:
                remember(methods, method, found, PLAIN_METHODS_MAX)
        return found

    async def fail(self, down: Downstream, exc: Exception, stage: StagePlan | None, route: RoutePlan | None,
                   head: RequestFacts | None, request_id: str) -> tuple[int, int]:
        """The answer to a request whose pipeline raised `exc`; returns (status, bytes sent). A GatewayError
        becomes the API's gateway response, an upstream's failure its 502/503/504, anything unexpected is
        logged and answered with DEFAULT_5XX (never a traceback)."""
        if isinstance(exc, GatewayError):
            exc.__traceback__ = None  # as for UpstreamError below: the failed frames hold the body stream
            return await self.answer_error(down, exc, stage, request_id, _has_body(head))
        if isinstance(exc, GatewayAnswered):  # a CORS preflight
            headers = [*exc.headers, ("x-amzn-requestid", request_id)]
            if _has_body(head):
                headers.append(("connection", "close"))
            pending = down.respond(exc.status, headers, b"")
            if pending is not None:
                await pending
            return exc.status, 0
        if isinstance(exc, ClientDisconnected):
            return CLIENT_CLOSED_REQUEST, 0
        if isinstance(exc, UpstreamError):
            if stage is not None and route is not None:
                metrics.UPSTREAM_ERRORS.labels(stage.api.name, stage.name, route.key, exc.kind).inc()
            # An upstream group's open circuit carries Retry-After (fastgw/upstream_groups.py).
            error = GatewayError(exc.kind, _upstream_message(exc), getattr(exc, "headers", ()), close=_has_body(head))
            # The traceback holds the failed frames and, through them, the client's body stream (the
            # exchange's future holds the error too: a cycle): dropped now, or the client connection
            # stays open until the worker's next garbage collection.
            exc.__traceback__ = None
            return await self.answer_error(down, error, stage, request_id)
        log.error("unexpected error handling %s %s", down.method, down.path, exc_info=exc)
        return await self.answer_error(down, GatewayError("DEFAULT_5XX", close=_has_body(head)), stage, request_id)

    def receive(self, down: Downstream) -> RequestFacts:
        """Limits and syntax of the request line and head (one kernel call: the method, the URI's
        length and form, then every header field; src_ext/_request.pxi). Errors here close the client
        connection (the rest of what the client sent cannot be trusted to be framed as we understood it)."""
        try:
            head = scan_request(down.method, down.path, down.query, down.absolute_form, down.headers, self.limits)
        except RequestRejected as exc:
            raise GatewayError(exc.kind, exc.message, close=True) from None
        if not head.host and down.protocol == "HTTP/1.1":
            raise GatewayError("BAD_REQUEST_PARAMETERS", "Missing Host header", close=True)
        if down.conflicting_authority:  # RFC 9113 §8.3.1: malformed
            raise GatewayError("BAD_REQUEST_PARAMETERS", "Host header differs from :authority", close=True)
        return head

    def select_stage(self, host: str, raw_path: str) -> tuple[StagePlan, str]:
        """API mapping (host and/or base path) or the default `/{stage}/...` prefix → stage and
        the normalised path within it (remembered per path: see STAGES_SEEN_MAX)."""
        key = (host, raw_path) if self.plan.mappings else raw_path
        found = self.stages_seen.get(key)
        if found is None:
            found = self._select_stage(host, raw_path)  # raises for bad paths: those are not kept
            if len(raw_path) <= SEEN_PATH_MAX:
                remember(self.stages_seen, key, found, STAGES_SEEN_MAX)
        return found

    def _select_stage(self, host: str, raw_path: str) -> tuple[StagePlan, str]:
        plan = self.plan
        # Normalise the whole path before choosing anything, keeping `%2F` inside its segment, so
        # that `/prod/../admin` cannot pick one stage and then address another.
        path = normalize_path(raw_path, "PASS")
        if plan.mappings:
            hostname = host_name(host).lower()
            for entries in (plan.mappings.get(hostname), plan.mappings.get(None)):
                if not entries:
                    continue
                for base, stage in entries:
                    rest = _strip_base(path, base)
                    if rest is not None:
                        return stage, _encoded_slash_rule(rest, stage.api.encoded_slashes)
        first, rest = _split_first(path)
        stage = plan.stages_by_prefix.get(first)
        if stage is not None:
            return stage, _encoded_slash_rule(rest, stage.api.encoded_slashes)
        default = plan.default_stage
        if default is not None:
            return default, _encoded_slash_rule(path, default.api.encoded_slashes)
        raise GatewayError("RESOURCE_NOT_FOUND")

    def match(self, stage: StagePlan, method: str, path: str) -> tuple[RoutePlan, dict[str, str]]:
        """The stage's route for the request, and its path parameters (a dict of the request's own)."""
        key = (stage, method, path)
        found = self.routes_seen.get(key)
        if found is not None:
            return found[0], found[1].copy()
        kind, value, params = stage.router.match(method, path)
        if kind == 0:
            if len(path) <= SEEN_PATH_MAX:  # misses (404, 405) raise and are not kept
                remember(self.routes_seen, key, (value, params), ROUTES_SEEN_MAX)
            return value, params.copy()
        if stage.api.aws_compat and stage.api.type == "REST":
            raise GatewayError("MISSING_AUTHENTICATION_TOKEN")
        if kind == 1:
            raise GatewayError("METHOD_NOT_ALLOWED", headers=(("allow", ", ".join(value)),))
        raise GatewayError("RESOURCE_NOT_FOUND")

    async def http_proxy(self, down: Downstream, head: RequestFacts, integration: HttpProxyPlan,
                         params: dict[str, str], request_id: str, fill: Any = None) -> tuple[int, int]:
        """HTTP_PROXY: forward the request, stream the response back. Returns (status, bytes sent).
        `fill`: a cache miss (fastgw/policies/cache/stage.py Fill) that may store the response."""
        target = integration.target(params, down.query)
        method = down.method
        content_length = head.content_length
        pool = integration.pool
        first: list[bytes] = []
        rest = None
        if head.chunked or content_length > BUFFER_BODY_BYTES:
            # Read up to BUFFER_BODY_BYTES first: a small chunked body is then sent whole (with a
            # Content-Length, retryable), and a malformed one is refused before anything went out.
            first, rest = await self.read_body_start(down, content_length)
        if rest is None:
            if first:
                body = first[0] if len(first) == 1 else b"".join(first)
            elif content_length > 0:
                body = await self.read_body(down)
            else:
                body = b""
            if content_length >= 0 and len(body) != content_length:
                raise GatewayError("BAD_REQUEST_BODY", "Incomplete request body", close=True)
            framing = length_framing(method, len(body))
            request_head = self.request_head(down, head, method, target, integration.host_header, framing)
            conn = await exchange(pool, request_head, body, method == "HEAD", method in IDEMPOTENT, integration.timeout)
        else:
            if head.chunked:
                framing = "transfer-encoding: chunked\r\n\r\n"
            else:
                framing = f"content-length: {content_length}\r\n\r\n"
            request_head = self.request_head(down, head, method, target, integration.host_header, framing)
            conn = await self.forward_streamed_body(head, pool, request_head, integration.timeout, first, rest)
            if not conn.request_done:
                # The upstream answered before the body ended: the rest of the client's body was not
                # read, so the client connection closes after this response (never read as a request).
                conn.parser.headers.append(("connection", "close"))
        if conn.parser.complete:  # PERF: relayed without relay_response's coroutine frame
            status, sent, pending = self.relay_whole(down.respond, conn, request_id, 0, fill)
            if pending is not None:
                await pending
            return status, sent
        return await self.relay_response(down, conn, request_id, fill)

    async def integrate(self, down: Downstream, head: RequestFacts, stage: StagePlan, route: RoutePlan,
                        route_path: str, integration: Any, params: dict[str, str],
                        request_id: str, fill: Any = None) -> tuple[int, int]:
        """Any integration, by its plan's run step (fastgw/integrations/: HTTP_PROXY, which `handle` also
        calls directly, FUNCTION, the non-proxy ones, ...). `fill`: a cache miss (fastgw/policies/cache)
        that may store the response."""
        run = RUNS.get(integration.__class__)
        if run is None:
            raise GatewayError("DEFAULT_5XX")
        return await run(self, down, head, stage, route, route_path, integration, params, request_id, fill)

    async def answer(self, down: Downstream, status: int, headers: list[tuple[str, str]], body: bytes,
                     request_id: str, fill: Any = None) -> tuple[int, int]:
        """A response made whole by the gateway (functions, templates): to the client, and to a
        cache miss that may store it (as relay_response does for proxied responses)."""
        keep = fill.begin(status, headers) if fill is not None else None
        if keep is not None:
            keep(body)
            fill.finish()
        headers.append(("x-amzn-requestid", request_id))
        pending = down.respond(status, headers, body)
        if pending is not None:
            await pending
        return status, len(body)

    async def read_whole_body(self, down: Downstream, head: RequestFacts, limit: int = 0) -> bytes:
        """The request body in memory (integrations, templates and validation that need all of it),
        within the body limit or a lower `limit` (413; before reading when Content-Length says so)."""
        limit = min(limit, self.max_body) if limit else self.max_body
        content_length = head.content_length
        if not head.chunked:
            if content_length <= 0:
                return b""
            if content_length > limit:
                raise GatewayError("REQUEST_TOO_LARGE", close=True)
        chunks, rest = await self.read_body_start(down, content_length, limit)
        if rest is not None:
            size = sum(len(c) for c in chunks)
            while (chunk := await _next_body_chunk(rest, self.body_idle_seconds)) is not None:
                size += len(chunk)
                if size > limit:
                    raise GatewayError("REQUEST_TOO_LARGE", close=True)
                chunks.append(chunk)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not head.chunked and len(body) != content_length:
            raise GatewayError("BAD_REQUEST_BODY", "Incomplete request body", close=True)
        return body

    async def read_body(self, down: Downstream) -> bytes:
        """A body of known, small length in one read (the server layer's whole-body call). It must
        arrive within the body idle timeout as a whole: this read has no "between two reads"."""
        try:
            async with asyncio.timeout(self.body_idle_seconds):
                return await down.read_body()
        except TimeoutError:
            raise GatewayError("REQUEST_TIMEOUT", close=True) from None
        except Exception:  # noqa: BLE001 - granian reports bad chunked framing or a lost client this way
            raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", close=True) from None

    async def read_body_start(self, down: Downstream, content_length: int,
                              limit: int = 0) -> tuple[list[bytes], Any]:
        """The first BUFFER_BODY_BYTES of a body, and the iterator of the rest (None: that was all)."""
        limit = limit or self.max_body
        chunks: list[bytes] = []
        size = 0
        iterator = down.body_chunks().__aiter__()
        while size <= BUFFER_BODY_BYTES:
            chunk = await _next_body_chunk(iterator, self.body_idle_seconds)
            if chunk is None:
                return chunks, None
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise GatewayError("REQUEST_TOO_LARGE", close=True)
                if size == content_length:
                    return chunks, None
        return chunks, iterator

    def request_head(self, down: Downstream, head: RequestFacts, method: str, target: str, host: str,
                     framing: str, forward: bytes | None = None) -> bytes:
        """The upstream request head: request line, Host, the forwardable client fields (already
        serialised by the header scan), the forwarding fields set from the real peer, framing
        (one kernel call: src_ext/_request.pxi upstream_request_head)."""
        if forward is None:
            forward = head.forward
        if self.traced and (trace := down.trace) is not None:
            forward = trace.forward(forward)  # traceparent, X-Amzn-Trace-Id: the gateway's span as parent
        return upstream_request_head(method, target, host, forward, down.peer_address,
                                     head.forwarded_for if self.trusted_hops else "",
                                     down.scheme, head.host, framing)

    async def forward_streamed_body(self, head: RequestFacts, pool: Any, request_head: bytes, timeout: float,
                                    first: list[bytes], rest: Any) -> UpstreamConnection:
        """Send a large or chunked request body as it arrives; refuse it (413) past the limit.

        Once part of a body went upstream, a failure aborts that connection, so the upstream never
        sees a truncated or over-limit request as a finished one. A response that begins before the
        body ended (`conn.early`) stops the sending: it is relayed, and the connection is not reused
        (`conn.request_done` stays False; the caller closes the client connection).
        """
        chunked = head.chunked
        conn = await pool.acquire()
        waiter = conn.send(request_head, False, timeout, 2)
        if waiter.done():
            await waiter  # the connection closed before anything was sent: raises
        transport = conn.transport
        received = 0
        read: Any = None

        def send(chunk: bytes) -> None:
            if chunked:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                transport.write(chunk)

        try:
            for chunk in first:
                received += len(chunk)
                send(chunk)
            while not conn.early:
                # The next piece of the client's body, or the upstream's answer if it comes first (then
                # the sending stops at once, however slow the client is). The read is a bare task with
                # no timer of its own: its error cannot hold a reference back to it (a cycle that kept
                # the client's body stream, and so its connection, alive until the next GC).
                try:
                    step = rest.__anext__()
                except StopAsyncIteration:  # granian's RSGI stream may say so at once, not when awaited
                    break
                except Exception:  # noqa: BLE001 - its other errors, as _body_piece maps them
                    raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", close=True) from None
                read = asyncio.ensure_future(step)
                await asyncio.wait((read, waiter), timeout=self.body_idle_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    read = None
                    if conn.early:
                        break
                    if waiter.done():
                        await waiter  # the exchange failed: raises its UpstreamError
                    raise GatewayError("REQUEST_TIMEOUT", close=True)
                chunk = _body_piece(read)
                read = None
                if chunk is None:
                    break
                if not chunk:
                    continue
                received += len(chunk)
                if received > self.max_body:
                    raise GatewayError("REQUEST_TOO_LARGE", close=True)
                if conn.early:
                    break  # the upstream answered already: stop sending
                send(chunk)
                if conn.write_paused:
                    await conn.drain()  # also ends when the response begins
                if conn.error is not None:
                    raise conn.error
            if not conn.early:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                elif received != head.content_length:
                    raise GatewayError("BAD_REQUEST_BODY", "Incomplete request body", close=True)
                conn.end_request()
            await waiter
        except BaseException:
            if read is not None and not read.done():
                read.cancel()
            conn.waiter = None
            pool.discard(conn)
            raise
        return conn

    def relay_whole(self, respond: Any, conn: UpstreamConnection, request_id: str, status: int,
                    fill: Any) -> tuple[int, int, Awaitable[None] | None]:
        """Relay a response read whole in one call to `respond` (the downstream's); returns (status, bytes
        sent, the send to await if the server layer needs that). `status` and `fill` as in relay_response."""
        parser = conn.parser
        status = status or parser.status
        # The parser already dropped hop-by-hop fields and those the gateway computes.
        headers = parser.headers
        # A cache miss: `keep` takes the body when the response may be stored (X-Cache added here).
        keep = fill.begin(status, headers) if fill is not None else None
        headers.append(("x-amzn-requestid", request_id))
        body = parser.take_body()
        conn.pool.release(conn)
        if keep is not None:
            keep(body)
            fill.finish()
        return status, len(body), respond(status, headers, body)

    async def relay_response(self, down: Downstream, conn: UpstreamConnection, request_id: str,
                             fill: Any = None, status: int = 0) -> tuple[int, int]:
        """`status`: the one to send when a mapping changed the upstream's (fastgw/integrations/parammap.py).
        `fill`: a cache miss (fastgw/policies/cache/stage.py Fill) that may store the response."""
        if conn.parser.complete:
            status, sent, pending = self.relay_whole(down.respond, conn, request_id, status, fill)
            if pending is not None:
                await pending
            return status, sent
        pool = conn.pool
        parser = conn.parser
        status = status or parser.status
        headers = parser.headers
        keep = fill.begin(status, headers) if fill is not None else None
        headers.append(("x-amzn-requestid", request_id))
        if parser.content_length >= 0:
            # The client gets the upstream's length (as from nginx), and the server layer then frames
            # the body by it, so a stream cut short can never pass for a finished one.
            headers.append(("content-length", str(parser.content_length)))
        # Streamed: headers go now; a failure after this point aborts the client connection
        # (never a clean-looking truncated response).
        sent = 0
        try:
            await down.start_stream(status, headers)
            while True:
                chunk = await conn.next_chunk()
                if chunk is None:
                    break
                sent += len(chunk)
                if keep is not None:
                    keep(chunk)
                try:
                    async with asyncio.timeout(self.send_idle_seconds):
                        await down.send(chunk)  # waits while the client reads nothing (back-pressure)
                except TimeoutError:
                    raise ClientStalled() from None
            await down.finish()
        except BaseException as exc:
            pool.discard(conn)
            if exc.__class__ is not ClientDisconnected:
                down.abort()  # the client must see the response fail, never finish
            raise
        pool.release(conn)
        if keep is not None:
            fill.finish()
        return status, sent

    async def answer_error(self, down: Downstream, error: GatewayError, stage: StagePlan | None,
                     request_id: str, close: bool = False) -> tuple[int, int]:
        responses: GatewayResponses = stage.api.responses if stage is not None else DEFAULT_RESPONSES
        status, headers, body = responses.render(error.kind, error.message)
        headers.append(("x-amzn-requestid", request_id))
        headers.extend(error.headers)
        if error.close or close:
            headers.append(("connection", "close"))
        try:
            pending = down.respond(status, headers, body)
            if pending is not None:
                await pending
        except Exception:  # noqa: BLE001 - the response had already started: the adapter aborts
            log.debug("could not send the %s response for %s", status, request_id)
        return status, len(body)


def is_plain(stage: StagePlan, route: RoutePlan) -> bool:
    """Whether requests to `route` of `stage` need nothing of the pipeline but tracing, their usage plan and
    their HTTP_PROXY integration (the plain lane, fastgw/lane.py `serve`): no canary, CORS, compression or
    own access log format on the stage; no authorizer, validation or cache on the route. A new field of
    RoutePlan, StagePlan or ApiPlan must be decided on here (tests/test_plain_lane.py refuses one that is
    not): the lane never skips what it does not know."""
    api = stage.api
    return (route.integration.__class__ is HttpProxyPlan and route.served and route.authorizer is None
            and route.validator is None and route.cache is None and stage.canary is None
            and stage.access_format is None and api.cors is None and api.compression is None)


def _mapped(plan: Plan, path: str) -> bool:
    """Whether an API mapping's base path covers `path`: then its stage depends on the request's host."""
    if not plan.mappings:
        return False
    normalized = normalize_path(path, "PASS")
    return any(_strip_base(normalized, base) is not None for entries in plan.mappings.values() for base, _ in entries)


def _has_body(head: RequestFacts | None) -> bool:
    """Whether a request carries a body. The gateway's own answers to such requests (errors, CORS
    preflights) close the client connection: the body may be unread or partly read, and what is left
    of it must never be read as the next request (issue 22; granian's hyper would drain or close on
    its own, this does not depend on it)."""
    return head is not None and (head.chunked or head.content_length > 0)


def _body_piece(read: asyncio.Future) -> bytes | None:
    """What a finished read of a request body's iterator gave: a piece, None at the end; granian's
    errors (bad chunked framing, a lost client) become a 400 that closes the connection, as in
    _next_body_chunk."""
    error = read.exception()
    if error is None:
        return read.result()  # type: ignore[no-any-return]
    if isinstance(error, StopAsyncIteration):
        return None
    raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", close=True)


async def _next_body_chunk(rest: Any, idle_seconds: float) -> bytes | None:
    """The next piece of a request body being read; None at its end. A client that sends nothing
    for `idle_seconds` gets a 408 (limits.bodyIdleTimeoutMs: a slow-body client must not hold a
    worker's request, or a half-sent upstream request, for ever). granian reports bad chunked
    framing (or a lost client) as an exception here: a 400. Both close the connection."""
    try:
        async with asyncio.timeout(idle_seconds):
            return await rest.__anext__()
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise GatewayError("REQUEST_TIMEOUT", close=True) from None
    except Exception:  # noqa: BLE001 - bad chunked framing or a lost client
        raise GatewayError("BAD_REQUEST_BODY", "Invalid request body", close=True) from None


def _upstream_message(exc: UpstreamError) -> str:
    if exc.kind == "INTEGRATION_TIMEOUT":
        return "Endpoint request timed out"
    if exc.kind == "SERVICE_UNAVAILABLE":
        return "Service Unavailable"
    return "Bad Gateway"


def _split_first(path: str) -> tuple[str, str]:
    """'/prod/items/42' -> ('prod', '/items/42'); '/prod' -> ('prod', '/')."""
    cut = path.find("/", 1)
    if cut < 0:
        return path[1:], "/"
    return path[1:cut], path[cut:]


def _strip_base(path: str, base: tuple[str, ...]) -> str | None:
    rest = path
    for segment in base:
        first, rest = _split_first(rest)
        if first != segment:
            return None
    return rest


def _encoded_slash_rule(path: str, rule: str) -> str:
    """Apply an API's `encodedSlashes` rule to a path normalised with `%2F` kept as an escape."""
    if "%2F" not in path or rule == "PASS":
        return path
    if rule == "REJECT":
        raise GatewayError("BAD_REQUEST_PARAMETERS", "Encoded slash in the request path")
    return normalize_path(path.replace("%2F", "/"), "DECODE")


def _repoint_pools(plan: Plan) -> None:
    """After a swap kept some pools: every compiled integration uses its plan's pool for its upstream."""
    for stage in plan.stages:
        for route in stage.routes:
            target = target_of(route.integration)
            if target is not None:
                target.pool = plan.pools.get(target.pool.key, target.pool)
