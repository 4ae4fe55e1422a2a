"""The cache stage (issue 5): AWS API Gateway's stage cache, with the safety rules of an HTTP cache.

    key     method + resource path + the parameters the route lists (`method.request.path.x`,
            `.querystring.x`, `.header.x`); parameters it does not list do not split entries (AWS)
    lookup  after the usage checks, before the integration: a hit answers from this worker's memory
            with the stored (status, headers, body); the upstream is not called
    store   a miss integrates as usual and hands its response to a Fill on the way out
            (Gateway.relay_response), which keeps it when it may be kept: status 200, body at most
            1 MiB, no Set-Cookie, no Cache-Control private / no-store / no-cache, no Vary: * nor Vary
            on a header outside the key; never for a request carrying Authorization unless the key
            includes it (RFC 9111 §3.5: the key must name the caller). Errors are never stored.
    control `Cache-Control: max-age=0` refetches and replaces the entry, when the stage allows the
            caller to (requireAuthorizationForCacheControl, AWS's three strategies); a stage flush
            (admin API, `fastgw cache flush`) empties it in every worker.

Each worker holds its own LRU/TTL cache per stage (the kernel LruTtlCache), with an equal share of
the stage's budget (capacity / workers), so that a hit takes no lock and no system call. Workers
learn about flushes through a small shared memory area inherited from the main process: one
generation counter per stage, read at most every SYNC_SECONDS (on a request, never by a timer), and
one "invalidated at" time per key hash, read on hits of stages where invalidation is allowed.
With `backend: redis`, Redis is a second level shared by every node (fastgw/policies/cache/redis.py):
a local miss asks Redis before the upstream, and a Redis failure is a miss, never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import mmap
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ... import metrics
from ..._accel import LruTtlCache
from ...config.loader import Problem
from ...config.model import CACHE_KEY_PARAMETER, GatewayConfig
from ...errors import GatewayError
from ...state.redisconn import RedisLink, link_of

if TYPE_CHECKING:
    from ...plan import RoutePlan, StagePlan

log = logging.getLogger("fastgw.cache")

MAX_ENTRY_BODY = 1 << 20  # AWS: 1 048 576 bytes per cached response
# What an entry costs beyond its body, header text and key (see README "Response cache"): the
# kernel's ENTRY_OVERHEAD (its entry object and dict slot) plus, counted here, the objects that
# hold the value (tuples, list, bytes and str headers: VALUE_OVERHEAD) and each header field's
# tuple and two strings (HEADER_OVERHEAD). Measured with tracemalloc (tests/test_cache_units.py).
VALUE_OVERHEAD = 384
HEADER_OVERHEAD = 224
SYNC_SECONDS = 0.1  # a worker reads the shared flush generations at most this often
FLUSH_SECONDS = 1.0  # metrics
TOKEN_HEADER = "x-fastgw-cache-token"  # proves the caller may invalidate (never sent upstream)
DEFAULT_METHODS = frozenset(("GET", "HEAD"))
ALL_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
HIT_HEADER = ("x-cache", "Hit")
MISS_HEADER = ("x-cache", "Miss")
WARNING_HEADER = ("warning", '199 fastgw "Cache-Control ignored: the caller may not invalidate the cache"')
DENIED = "User is not authorized to invalidate the cache (execute-api:InvalidateCache)"
PATH, QUERY, HEADER = 0, 1, 2
_KINDS = {"path": PATH, "querystring": QUERY, "multivaluequerystring": QUERY, "header": HEADER,
          "multivalueheader": HEADER}

_monotonic = time.monotonic


# -- the compiled settings ------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class StageCache:
    """One stage's cache settings, and this worker's LRU for it (`lru`, set by CacheStage)."""

    api: str
    stage: str
    capacity: int  # bytes for the host; each worker holds capacity / workers
    ttl: float
    require_auth: bool
    strategy: str  # FAIL_WITH_403 | SUCCEED_WITH_RESPONSE_HEADER | SUCCEED_WITHOUT_RESPONSE_HEADER
    tokens: tuple[bytes, ...]
    debug: bool
    backend: str
    link: RedisLink | None  # where the Redis tier is (backend: redis)
    timeout: float
    slot: int  # its generation counter in the shared area
    invalidatable: bool  # some caller may invalidate entries: hits check the invalidation times
    lru: Any = None
    generation: int = 0
    remote: Any = None  # the Redis tier, for backend: redis
    redis_generation: int | None = None  # None: not known yet (Redis not asked, or unreachable)


@dataclass(slots=True, eq=False)
class RouteCache:
    """One route of one stage: which methods are cached, its TTL and how its keys are built."""

    stage: StageCache
    route: str  # the route key, the metrics label
    method: str  # the route's own method ("ANY", "$default" for those)
    prefix: str  # "GET /items/{id}": the key of a request with this method, before the parameters
    resource: str  # " /items/{id}"
    methods: frozenset[str]
    ttl: float
    params: tuple[tuple[int, str], ...]  # (PATH | QUERY | HEADER, name); header names lower-case
    single_path: str | None  # the one key parameter when it is a path parameter (the common case)
    prefix_nl: str  # prefix + "\n": with single_path, the key is this plus the parameter's value
    key_headers: frozenset[str]  # lower-case header names in the key (a Vary on others is not stored)
    keyed_auth: bool  # Authorization is part of the key: requests carrying it may be cached
    hits: int = 0
    misses: int = 0


@dataclass(slots=True)
class CacheSetup:
    stages: list[StageCache] = field(default_factory=list)
    routes: list[RouteCache] = field(default_factory=list)

    def stage(self, api: str, stage: str) -> StageCache | None:
        for sc in self.stages:
            if sc.api == api and sc.stage == stage:
                return sc
        return None


def _slot(api: str, stage: str) -> int:
    digest = hashlib.blake2b(f"{api}\x1f{stage}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % GEN_SLOTS


def compile_cache(config: GatewayConfig, stages: list[StagePlan]) -> tuple[CacheSetup | None, list[Problem]]:
    """Attach a RouteCache to every cached route; None when no stage has a cache."""
    problems: list[Problem] = []
    setup = CacheSetup()
    apis = {api.name: api for api in config.apis}
    for stage_plan in stages:
        api = apis.get(stage_plan.api.name)
        if api is None or getattr(stage_plan, "is_canary", False):
            continue  # a canary is compiled with its stage, below
        stage_cfg = next((s for s in api.stages if s.name == stage_plan.name), None)
        settings = getattr(stage_cfg, "cache", None)
        if settings is None or not settings.enabled:
            continue
        link = RedisLink(settings.url, settings.cluster) if settings.url else link_of(config.state)
        if settings.backend == "redis" and link is None:
            problems.append(Problem(f"{settings.path}.url", "is required with backend: redis (or set state.url)"))
            continue
        tokens = tuple(t.encode() for t in settings.invalidationTokens)
        require = settings.requireAuthorizationForCacheControl
        sc = StageCache(api.name, stage_plan.name, settings.capacity, float(settings.ttlInSeconds), require,
                        settings.unauthorizedCacheControlHeaderStrategy, tokens, settings.debugHeader,
                        settings.backend, link, settings.timeoutMillis / 1000, _slot(api.name, stage_plan.name),
                        invalidatable=not require or bool(tokens))
        setup.stages.append(sc)
        plans = [(stage_plan, "")]
        canary_plan = getattr(stage_plan, "canary", None)
        canary_cfg = getattr(stage_cfg, "canary", None)
        if canary_plan is not None and canary_cfg is not None and getattr(canary_cfg, "useStageCache", False):
            # AWS: the canary shares the stage cache; its entries are its own when its deployment differs.
            deployment = getattr(canary_plan, "deployment", "")
            same = deployment == getattr(stage_plan, "deployment", "")
            plans.append((canary_plan, "" if same else f"@{deployment}"))
        for plan, variant in plans:
            routes = {route.key: route for route in _routes_of(api, plan)}
            for route_plan in plan.routes:
                route = routes.get(route_plan.key)
                if route is None or route_plan.integration is None or not route_plan.served:
                    continue
                rc = _route_cache(sc, route, variant, problems)
                if rc is not None:
                    route_plan.cache = rc
                    setup.routes.append(rc)
    if not setup.stages:
        return None, problems
    return setup, problems


def _routes_of(api: Any, plan: Any) -> list[Any]:
    """The config routes a stage plan was compiled from (its deployment's, when deployments exist)."""
    deployments = getattr(api, "deployments", None)
    deployment = deployments.get(getattr(plan, "deployment", None)) if deployments else None
    return deployment.routes if deployment is not None else api.routes


def _route_cache(sc: StageCache, route: Any, variant: str, problems: list[Problem]) -> RouteCache | None:
    own = route.cache
    method = route.method
    if own is not None and own.enabled is False:
        return None
    if own is not None and own.enabled:
        methods = frozenset((method,)) if method in ALL_METHODS else ALL_METHODS
    elif method in DEFAULT_METHODS:
        methods = frozenset((method,))
    elif method in ALL_METHODS:
        return None  # POST, PUT...: only when the route opts in
    else:
        methods = DEFAULT_METHODS  # ANY, $default
    ttl = float(own.ttlInSeconds) if own is not None and own.ttlInSeconds is not None else sc.ttl
    if ttl <= 0:
        return None  # AWS: a TTL of 0 turns caching off
    names = own.keyParameters if own is not None and own.keyParameters is not None else None
    where = f"{own.path}.keyParameters" if names is not None and own is not None else ""
    if names is None:
        # OpenAPI's x-amazon-apigateway-integration.cacheKeyParameters, when the import kept them
        names = list(getattr(route.integration, "cacheKeyParameters", None) or ())
        where = f"{getattr(route.integration, 'path', route.path)}.cacheKeyParameters"
    template_params = {p.rstrip("+") for p in _template_params(route.template)}
    params: list[tuple[int, str]] = []
    for i, name in enumerate(names):
        match = CACHE_KEY_PARAMETER.match(name)
        if match is None:
            problems.append(Problem(f"{where}[{i}]", f"not a cache key parameter: '{name}'"))
            continue
        kind, param = _KINDS[match.group(1)], match.group(2)
        if kind == PATH and param not in template_params:
            problems.append(Problem(f"{where}[{i}]", f"the route '{route.key}' has no path parameter '{param}'"))
            continue
        if kind == HEADER:
            param = param.lower()
        if (kind, param) not in params:
            params.append((kind, param))
    resource = f"{variant} {route.template or '$default'}"
    key_headers = frozenset(name for kind, name in params if kind == HEADER)
    single = params[0][1] if len(params) == 1 and params[0][0] == PATH else None
    return RouteCache(sc, route.key, method, method + resource, resource, methods, ttl, tuple(params), single,
                      method + resource + "\n", key_headers, "authorization" in key_headers)


def _template_params(template: str) -> list[str]:
    return [segment[1:-1] for segment in template.split("/") if segment.startswith("{") and segment.endswith("}")]


# -- the host-wide shared area: flush generations and invalidation times ----------------------------
GEN_SLOTS = 1024  # stage generation counters, by a hash of (api, stage); a collision only flushes more
INVAL_SLOTS = 1 << 13  # per-key invalidation times, by the key's hash; a collision only misses more
INVAL_MASK = INVAL_SLOTS - 1


class SharedArea:
    """An anonymous shared mapping made by the main process before granian forks the workers, so
    every worker (and every worker respawned later) maps the same pages. Plain aligned 8-byte
    loads and stores: each value has one writer at a time (the admin thread under a lock for the
    generations; the last invalidating worker wins for the times, which is what is wanted)."""

    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, 8 * (GEN_SLOTS + INVAL_SLOTS))  # MAP_SHARED | MAP_ANONYMOUS
        view = memoryview(self._mm)
        self.generations = view[:8 * GEN_SLOTS].cast("q")
        self.invalidated = view[8 * GEN_SLOTS:].cast("d")
        self.lock = threading.Lock()

    def bump(self, slot: int) -> None:
        with self.lock:
            self.generations[slot] += 1


_SHARED: SharedArea | None = None


def shared_area() -> SharedArea:
    """The process's shared area: `fastgw serve` makes it in the main process before the workers
    fork; a gateway run any other way (an embedded test) gets one of its own."""
    global _SHARED
    if _SHARED is None:
        _SHARED = SharedArea()
    return _SHARED


# -- one worker's cache stage -----------------------------------------------------------------------
class CacheStage:
    def __init__(self, setup: CacheSetup, workers: int):
        self.setup = setup
        self.stages = setup.stages
        self.routes = setup.routes
        area = shared_area()
        self.generations = area.generations
        self.invalidated = area.invalidated
        self.next_sync = 0.0
        self.workers = max(1, workers)
        for sc in self.stages:
            sc.lru = LruTtlCache(sc.capacity // self.workers)
            sc.generation = self.generations[sc.slot]
        self.remote: Any = None
        self.metrics = (metrics.CACHE_HITS, metrics.CACHE_MISSES, metrics.CACHE_ENTRIES, metrics.CACHE_BYTES,
                        metrics.CACHE_CAPACITY)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        redis_stages = [sc for sc in self.stages if sc.backend == "redis"]
        if redis_stages:
            from .redis import RedisTier

            self.remote = RedisTier(redis_stages, loop)
        for sc in self.stages:
            self.metrics[4].labels(sc.api, sc.stage).set(sc.capacity)
        self._timer = loop.call_later(FLUSH_SECONDS, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self.remote is not None:
            self.remote.close()

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self.sync(_monotonic())  # also empties a flushed stage that gets no requests
            self.flush()
            if self.remote is not None:
                self.remote.tick()
        except Exception:  # noqa: BLE001 - the timer must keep running
            log.exception("cache housekeeping failed")
        self._timer = self._loop.call_later(FLUSH_SECONDS, self._tick)

    def flush(self) -> None:
        """Per-request counts go to the shared metric files once a second (metrics.py's pattern)."""
        hits, misses, entries, held, _ = self.metrics
        for rc in self.routes:
            if rc.hits:
                n, rc.hits = rc.hits, 0
                hits.labels(rc.stage.api, rc.stage.stage, rc.route).inc(n)
            if rc.misses:
                n, rc.misses = rc.misses, 0
                misses.labels(rc.stage.api, rc.stage.stage, rc.route).inc(n)
        for sc in self.stages:
            entries.labels(sc.api, sc.stage).set(len(sc.lru))
            held.labels(sc.api, sc.stage).set(sc.lru.bytes_used)

    def sync(self, now: float) -> None:
        """Empty the stages flushed since the last look (the admin API bumped their generation)."""
        self.next_sync = now + SYNC_SECONDS
        generations = self.generations
        for sc in self.stages:
            generation = generations[sc.slot]
            if generation != sc.generation:
                sc.generation = generation
                sc.lru.clear()
                if sc.remote is not None:
                    sc.remote.flushed(sc)  # Redis is not read again before its new generation is known

    # -- lookup -------------------------------------------------------------------------------------
    def check(self, rc: RouteCache, down: Any, head: Any, params: dict[str, str]) -> Any:
        """A hit: the stored (status, headers, body). Otherwise a Fill (a miss to integrate, maybe to
        store), or None (a method this route does not cache). Raises GatewayError (403) for a refused
        invalidation under FAIL_WITH_403."""
        # PERF: the hit path of the cache-hit benchmark; no helper calls on it.
        method = down.method
        if method not in rc.methods:
            return None
        now = _monotonic()
        if now >= self.next_sync:
            self.sync(now)
        if head.cache_fields:  # Authorization, Cache-Control or the token (the request scan saw them)
            return self._special(rc, down, head, params, now)
        name = rc.single_path
        if name is not None:
            key = (rc.prefix_nl if method == rc.method else f"{method}{rc.resource}\n") + params[name]
        else:
            key = self.key(rc, method, down, params)
        sc = rc.stage
        entry = sc.lru.get(key, now)
        if entry is not None and (not sc.invalidatable or self.invalidated[hash(key) & INVAL_MASK] <= entry[1]):
            rc.hits += 1
            return entry[0]
        rc.misses += 1
        return Fill(self, rc, key, now, sc.remote is not None)

    def key(self, rc: RouteCache, method: str, down: Any, params: dict[str, str]) -> str:
        """`METHOD /resource` then, per key parameter, "\\n" + its value or "\\r" when absent. Neither
        character can occur in a path, a query string or a header value, so keys are unambiguous.
        Repeated query parameters and headers contribute every value, in order: an upstream that
        reads another occurrence than the key would is then not a way to poison an entry."""
        parts = [rc.prefix if method == rc.method else method + rc.resource]
        query: dict[str, str] | None = None
        for kind, name in rc.params:
            if kind == PATH:
                value = params.get(name)
            elif kind == QUERY:
                if query is None:
                    query = _query_values(down.query)
                value = query.get(name)
            else:
                value = None
                for field_name, field_value in down.headers:
                    if field_name == name:
                        value = field_value if value is None else f"{value}, {field_value}"
            parts.append("\r" if value is None else "\n" + value)
        return "".join(parts)

    def _special(self, rc: RouteCache, down: Any, head: Any, params: dict[str, str], now: float) -> Any:
        """Requests with Authorization, Cache-Control or the invalidation token."""
        sc = rc.stage
        authorization = invalidate = False
        token: str | None = None
        for name, value in down.headers:
            if name == "authorization":
                authorization = True
            elif name == "cache-control":
                invalidate = invalidate or _max_age_zero(value)
            elif name == TOKEN_HEADER:
                token = value
        stripped = _without_token(head) if token is not None else None
        if authorization and not rc.keyed_auth:
            # RFC 9111 §3.5: a response to an authenticated request is not shared unless the key
            # names the caller. Neither looked up nor stored.
            rc.misses += 1
            return Fill(self, rc, None, now, False, head=stripped)
        key = self.key(rc, down.method, down, params)
        extra: tuple[tuple[str, str], ...] = ()
        if invalidate:
            if not sc.require_auth or (token is not None and _token_ok(sc.tokens, token)):
                self.invalidate(sc, key, now)
                rc.misses += 1
                return Fill(self, rc, key, now, False, head=stripped)
            if sc.strategy == "FAIL_WITH_403":
                raise GatewayError("ACCESS_DENIED", DENIED)
            if sc.strategy == "SUCCEED_WITH_RESPONSE_HEADER":
                extra = (WARNING_HEADER,)
            # otherwise (and with the warning): the Cache-Control field is ignored
        entry = sc.lru.get(key, now)
        if entry is not None and (not sc.invalidatable or self.invalidated[hash(key) & INVAL_MASK] <= entry[1]):
            rc.hits += 1
            if not extra:
                return entry[0]
            status, headers, body = entry[0]
            return status, [*headers, *extra], body
        rc.misses += 1
        return Fill(self, rc, key, now, sc.remote is not None, extra, stripped)

    def invalidate(self, sc: StageCache, key: str, now: float) -> None:
        """Drop the entry here and, through the shared times, in this host's other workers (their
        copies stored before `now` stop being hits); with the Redis tier, in Redis too."""
        sc.lru.delete(key)
        self.invalidated[hash(key) & INVAL_MASK] = now
        if sc.remote is not None and self.remote is not None:
            self.remote.delete(sc, key)

    # -- miss: the integration, then maybe a store ---------------------------------------------------
    async def fill(self, gateway: Any, fill: Fill | None, down: Any, head: Any, stage: Any, route: RoutePlan,
                   route_path: str, params: dict[str, str], request_id: str) -> tuple[int, int, float]:
        """Everything but a local hit: ask the Redis tier, else integrate (relay_response hands the
        response to `fill`). Returns (status, bytes sent, integration latency or -1)."""
        if fill is not None:
            if fill.remote and self.remote is not None:
                found = await self.remote.get(fill)
                if found is not None:
                    status, headers, body = found
                    headers = [*headers, *fill.extra, ("x-amzn-requestid", request_id)]
                    pending = down.respond(status, headers, body)
                    if pending is not None:
                        await pending
                    return status, len(body), -1.0
            if fill.head is not None:
                head = fill.head
        integration = route.integration
        assert integration is not None
        began = time.perf_counter()
        status, sent = await gateway.integrate(down, head, stage, route, route_path, integration, params,
                                               request_id, fill)
        return status, sent, time.perf_counter() - began

    def store(self, fill: Fill, body: bytes) -> None:
        rc = fill.rc
        sc = rc.stage
        if sc.generation != fill.generation:
            return  # the stage was flushed while this response was on its way
        headers = fill.headers
        size = len(body) + VALUE_OVERHEAD + HEADER_OVERHEAD * len(headers)
        for name, value in headers:
            size += len(name) + len(value)
        hit = (200, headers, body)
        sc.lru.put(fill.key, (hit, fill.now), size, fill.ttl, fill.now)
        if sc.remote is not None:  # also a refetch after max-age=0, which did not read Redis
            sc.remote.put(sc, fill.key, hit, fill.ttl)

    def remote_hit(self, fill: Fill, hit: tuple[int, list[tuple[str, str]], bytes], ttl: float) -> None:
        """A Redis tier hit: counted as a hit, and kept in this worker's LRU for what remains of its TTL."""
        rc = fill.rc
        rc.misses -= 1
        rc.hits += 1
        sc = rc.stage
        if sc.generation == fill.generation and ttl > 0:
            headers = hit[1]
            size = len(hit[2]) + VALUE_OVERHEAD + HEADER_OVERHEAD * len(headers)
            for name, value in headers:
                size += len(name) + len(value)
            sc.lru.put(fill.key, (hit, fill.now), size, min(ttl, rc.ttl), fill.now)


class Fill:
    """One miss on its way through the integration. Gateway.relay_response calls `begin` with the
    upstream's status and client-facing headers, then `keep` with the body (whole, or chunk by chunk
    while it streams), then `finish`: the response is stored when every rule allows it."""

    __slots__ = ("cache", "rc", "key", "now", "remote", "extra", "head", "generation", "headers", "ttl", "chunks",
                 "size")

    def __init__(self, cache: CacheStage, rc: RouteCache, key: str | None, now: float, remote: bool,
                 extra: tuple[tuple[str, str], ...] = (), head: Any = None):
        self.cache = cache
        self.rc = rc
        self.key = key  # None: not to be stored
        self.now = now
        self.remote = remote and key is not None  # ask the Redis tier before integrating
        self.extra = extra  # response header fields for the client (the warning)
        self.head = head  # the request head without the invalidation token, when it carried one
        self.generation = rc.stage.generation
        self.headers: list[tuple[str, str]] = []
        self.ttl = 0.0
        self.chunks: list[bytes] | None = None
        self.size = 0

    def begin(self, status: int, headers: list[tuple[str, str]]) -> Any:
        """Decide from the head whether the response may be stored; add X-Cache / Warning for the
        client. Returns `keep` when the body is wanted, else None."""
        rc = self.rc
        debug = rc.stage.debug
        keep = None
        if self.key is not None and status == 200:
            ttl = storable_ttl(headers, rc.ttl, rc.key_headers)
            if ttl > 0:
                self.ttl = ttl
                self.headers = [*headers, HIT_HEADER] if debug else [*headers]
                self.chunks = []
                keep = self.keep
        if debug:
            headers.append(MISS_HEADER)
        if self.extra:
            headers.extend(self.extra)
        return keep

    def keep(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= MAX_ENTRY_BODY:
            self.chunks.append(chunk)  # type: ignore[union-attr]

    def finish(self) -> None:
        chunks = self.chunks
        if chunks is None or self.size > MAX_ENTRY_BODY:
            return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = None
        self.cache.store(self, body)


# -- the rules ----------------------------------------------------------------------------------------
def storable_ttl(headers: list[tuple[str, str]], ttl: float, key_headers: frozenset[str]) -> float:
    """The TTL a 200 response may be kept for (0: not at all), from its header fields (RFC 9111):
    Set-Cookie, Cache-Control private / no-store / no-cache, Vary: * or Vary on a header the key
    does not hold refuse it; s-maxage (else max-age) shortens the route's TTL."""
    max_age: float | None = None
    s_maxage: float | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == "set-cookie":
            return 0.0
        if lower == "cache-control":
            for directive in value.split(","):
                directive_name, _, argument = directive.strip().partition("=")
                directive_name = directive_name.strip().lower()
                if directive_name in ("private", "no-store", "no-cache"):
                    return 0.0
                if directive_name in ("max-age", "s-maxage"):
                    seconds = _seconds(argument)
                    if directive_name == "max-age":
                        max_age = seconds if max_age is None else min(max_age, seconds)
                    else:
                        s_maxage = seconds if s_maxage is None else min(s_maxage, seconds)
        elif lower == "vary":
            for vary in value.split(","):
                vary = vary.strip().lower()
                if vary and (vary == "*" or vary not in key_headers):
                    return 0.0
    limit = s_maxage if s_maxage is not None else max_age
    return ttl if limit is None else min(ttl, limit)


def _seconds(argument: str) -> float:
    text = argument.strip().strip('"')
    return float(text) if text.isdigit() else 0.0  # RFC 9111 §4.2.1: an invalid value is stale


def _max_age_zero(value: str) -> bool:
    for directive in value.split(","):
        name, _, argument = directive.strip().partition("=")
        if name.strip().lower() == "max-age" and argument.strip().strip('"') in ("0", ""):
            return True
    return False


def _token_ok(tokens: tuple[bytes, ...], token: str) -> bool:
    given = token.strip().encode("latin-1", "replace")
    ok = False
    for expected in tokens:
        ok |= hmac.compare_digest(given, expected)
    return ok


def _query_values(query: str) -> dict[str, str]:
    """name -> its values as sent ("&"-joined when repeated); names percent-decoded."""
    values: dict[str, str] = {}
    if not query:
        return values
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in name or "+" in name:
            from urllib.parse import unquote_plus

            name = unquote_plus(name)
        values[name] = f"{values[name]}&{value}" if name in values else value
    return values


class _Head:
    """A request head (RequestFacts' fields) with the invalidation token left out of what is sent on."""

    __slots__ = ("host", "content_length", "chunked", "expect_continue", "forward", "forwarded_for", "cache_fields",
                 "api_key")

    def __init__(self, head: Any, forward: bytes):
        self.host = head.host
        self.content_length = head.content_length
        self.chunked = head.chunked
        self.expect_continue = head.expect_continue
        self.forward = forward
        self.forwarded_for = head.forwarded_for
        self.cache_fields = head.cache_fields
        self.api_key = head.api_key


def _without_token(head: Any) -> _Head:
    lines = head.forward.split(b"\r\n")
    kept = [line for line in lines if line and not line.lower().startswith(TOKEN_HEADER.encode() + b":")]
    return _Head(head, b"".join(line + b"\r\n" for line in kept))


# -- the main process: flushing a stage in every worker ---------------------------------------------------
def flush(setup: CacheSetup | None, api: str | None, stage: str | None) -> tuple[int, dict[str, Any]]:
    """Flush one stage (or every stage of `api`, or every stage) in every worker of this host and,
    for stages with the Redis tier, on every node. Returns (HTTP status, JSON body). Answers once
    every worker will have seen the flush before it serves another hit (SYNC_SECONDS)."""
    if setup is None:
        return 404, {"message": "no stage has a cache"}
    chosen = [sc for sc in setup.stages if (api is None or sc.api == api) and (stage is None or sc.stage == stage)]
    if not chosen:
        return 404, {"message": f"no cached stage {api or '*'}/{stage or '*'}"}
    area = shared_area()
    redis_state: dict[str, str] = {}
    for sc in chosen:
        if sc.backend == "redis":  # Redis first: a worker that sees the local flush then reads the new generation
            from .redis import flush_remote

            redis_state[f"{sc.api}/{sc.stage}"] = flush_remote(sc)
        area.bump(sc.slot)
    time.sleep(SYNC_SECONDS * 1.2)
    body: dict[str, Any] = {"flushed": [f"{sc.api}/{sc.stage}" for sc in chosen]}
    if redis_state:
        body["redis"] = redis_state
    return 200, body
