"""The cache stage in process: keys, the store rules, invalidation, the byte accounting (measured
with tracemalloc against what the budget counts), compiling. Both kernel builds where it matters."""

from __future__ import annotations

import gc
import importlib
import tracemalloc
from types import SimpleNamespace
from typing import Any

import pytest

from fastgw._accel import scan_request_headers
from fastgw.compile import compile_config
from fastgw.config.model import read_config
from fastgw.errors import GatewayError
from fastgw.policies.cache import stage as cachemod
from fastgw.policies.cache.stage import MAX_ENTRY_BODY, CacheStage, Fill, storable_ttl


def plan_for(stage_cache: dict[str, Any], route_cache: dict[str, Any] | None = None,
             route: str = "GET /items/{id}") -> Any:
    route_spec: dict[str, Any] = {"route": route, "integration": {"type": "HTTP_PROXY",
                                                                  "uri": "http://127.0.0.1:9/items"}}
    if route_cache is not None:
        route_spec["cache"] = route_cache
    data = {"apis": [{"name": "shop", "type": "REST", "stages": {"prod": {"cache": stage_cache}},
                      "routes": [route_spec]}]}
    config, problems = read_config(data)
    assert not problems
    plan, problems = compile_config(config)
    assert not problems, problems
    return plan


def problems_for(stage_cache: Any, route_cache: Any = None, state: Any = None) -> list[str]:
    route_spec: dict[str, Any] = {"route": "GET /items/{id}", "integration": {"type": "HTTP_PROXY",
                                                                            "uri": "http://127.0.0.1:9/items"}}
    if route_cache is not None:
        route_spec["cache"] = route_cache
    data: dict[str, Any] = {"apis": [{"name": "shop", "type": "REST", "stages": {"prod": {"cache": stage_cache}},
                                      "routes": [route_spec]}]}
    if state is not None:
        data["state"] = state
    config, problems = read_config(data)
    if not problems:
        _, problems = compile_config(config)
    return [str(p) for p in problems]


def down(path_query: str = "", headers: list[tuple[str, str]] | None = None, method: str = "GET") -> Any:
    return SimpleNamespace(method=method, query=path_query, headers=headers or [])


def head(headers: list[tuple[str, str]] | None = None) -> Any:
    """The request head as the pipeline's scan kernel reads it."""
    return scan_request_headers([("host", "gw"), *(headers or [])], 100, 1 << 20, 1 << 16, 1 << 30)


def stage_of(plan: Any) -> tuple[CacheStage, Any]:
    cache = CacheStage(plan.cache, 1)
    return cache, plan.stages[0].routes[0].cache


def miss_then_store(cache: CacheStage, rc: Any, d: Any, params: dict[str, str], body: bytes = b"x",
                    headers: list[tuple[str, str]] | None = None) -> Any:
    found = cache.check(rc, d, head(d.headers), params)
    assert isinstance(found, Fill)
    keep = found.begin(200, list(headers or [("content-type", "text/plain")]))
    if keep is not None:
        keep(body)
        found.finish()
    return found


# -- keys -------------------------------------------------------------------------------------------
def test_keys_hold_method_resource_and_only_the_listed_parameters():
    plan = plan_for({}, {"keyParameters": ["method.request.path.id", "method.request.querystring.lang",
                                           "method.request.header.Accept-Language"]})
    cache, rc = stage_of(plan)
    key = cache.key(rc, "GET", down("lang=en&x=1", [("accept-language", "fr"), ("x-other", "1")]), {"id": "7"})
    assert key == "GET /items/{id}\n7\nen\nfr"
    assert key == cache.key(rc, "GET", down("x=2&lang=en", [("accept-language", "fr")]), {"id": "7"})
    # absent is not empty; repeated values are all there, in order
    assert cache.key(rc, "GET", down(""), {"id": "7"}) == "GET /items/{id}\n7\r\r"
    assert cache.key(rc, "GET", down("lang="), {"id": "7"}) == "GET /items/{id}\n7\n\r"
    assert cache.key(rc, "GET", down("lang=en&lang=fr"), {"id": "7"}) == "GET /items/{id}\n7\nen&fr\r"
    assert cache.key(rc, "GET", down("", [("accept-language", "a"), ("accept-language", "b")]),
                     {"id": "7"}).endswith("\na, b")


def test_the_single_path_parameter_fast_path_builds_the_same_key():
    plan = plan_for({}, {"keyParameters": ["method.request.path.id"]})
    cache, rc = stage_of(plan)
    assert rc.single_path == "id"
    miss_then_store(cache, rc, down(), {"id": "1"})
    assert rc.stage.lru.get(cache.key(rc, "GET", down(), {"id": "1"}), cachemod._monotonic()) is not None


def test_openapi_cache_key_parameters_are_used_when_the_route_lists_none():
    data = {"apis": [{"name": "shop", "stages": {"prod": {"cache": {}}}, "routes": [
        {"route": "GET /items/{id}", "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/items"}}]}]}
    config, problems = read_config(data)
    assert not problems
    config.apis[0].routes[0].integration.cacheKeyParameters = ["method.request.path.id"]  # as the import sets it
    plan, problems = compile_config(config)
    assert not problems
    assert plan.stages[0].routes[0].cache.params == ((cachemod.PATH, "id"),)


# -- hits, misses, invalidation ------------------------------------------------------------------------
def test_lookup_hit_miss_and_the_counts():
    cache, rc = stage_of(plan_for({"debugHeader": True}, {"keyParameters": ["method.request.path.id"]}))
    fill = miss_then_store(cache, rc, down(), {"id": "1"})
    assert fill.headers == [("content-type", "text/plain"), ("x-cache", "Hit")]
    hit = cache.check(rc, down(), head(), {"id": "1"})
    assert hit == (200, [("content-type", "text/plain"), ("x-cache", "Hit")], b"x")
    assert isinstance(cache.check(rc, down(), head(), {"id": "2"}), Fill)
    assert (rc.hits, rc.misses) == (1, 2)
    assert cache.check(rc, down(method="POST"), head(), {"id": "1"}) is None  # not a cached method


def test_authorization_bypasses_unless_keyed():
    cache, rc = stage_of(plan_for({}, {"keyParameters": ["method.request.path.id"]}))
    miss_then_store(cache, rc, down(), {"id": "1"})
    authed = down(headers=[("authorization", "Bearer a")])
    found = cache.check(rc, authed, head(authed.headers), {"id": "1"})
    assert isinstance(found, Fill) and found.key is None  # neither read nor stored
    assert found.begin(200, []) is None


def test_invalidation_strategies():
    token = "t" * 24
    for strategy, expected in (("FAIL_WITH_403", GatewayError), ("SUCCEED_WITH_RESPONSE_HEADER", "warning"),
                               ("SUCCEED_WITHOUT_RESPONSE_HEADER", None)):
        cache, rc = stage_of(plan_for({"unauthorizedCacheControlHeaderStrategy": strategy,
                                       "invalidationTokens": [token]}, {"keyParameters": ["method.request.path.id"]}))
        miss_then_store(cache, rc, down(), {"id": "1"})
        asking = down(headers=[("cache-control", "max-age=0")])
        if expected is GatewayError:
            with pytest.raises(GatewayError) as info:
                cache.check(rc, asking, head(asking.headers), {"id": "1"})
            assert info.value.kind == "ACCESS_DENIED"
        else:
            status, headers, _ = cache.check(rc, asking, head(asking.headers), {"id": "1"})
            assert status == 200 and any(k == "warning" for k, _ in headers) == (expected == "warning")
        # With the token: a miss that replaces; the token is taken out of what goes upstream.
        allowed = down(headers=[("cache-control", "max-age=0"), ("x-fastgw-cache-token", token), ("a", "b")])
        fill = cache.check(rc, allowed, head(allowed.headers), {"id": "1"})
        assert isinstance(fill, Fill) and fill.key is not None
        assert fill.head.forward == b"cache-control: max-age=0\r\na: b\r\n"


def test_an_invalidation_reaches_entries_another_worker_stored_earlier():
    plan = plan_for({"requireAuthorizationForCacheControl": False}, {"keyParameters": ["method.request.path.id"]})
    worker_a = CacheStage(plan.cache, 2)
    rc = plan.stages[0].routes[0].cache
    miss_then_store(worker_a, rc, down(), {"id": "1"}, b"old")
    # Another worker (same shared area) invalidates the key: worker A's copy is no longer a hit.
    key = worker_a.key(rc, "GET", down(), {"id": "1"})
    worker_a.invalidated[hash(key) & cachemod.INVAL_MASK] = cachemod._monotonic()
    assert isinstance(worker_a.check(rc, down(), head(), {"id": "1"}), Fill)


def test_a_flush_generation_empties_the_stage_at_the_next_sync():
    plan = plan_for({}, {"keyParameters": ["method.request.path.id"]})
    cache, rc = stage_of(plan)
    miss_then_store(cache, rc, down(), {"id": "1"})
    assert isinstance(cache.check(rc, down(), head(), {"id": "1"}), tuple)
    cachemod.shared_area().bump(rc.stage.slot)
    cache.next_sync = 0.0
    assert isinstance(cache.check(rc, down(), head(), {"id": "1"}), Fill)
    assert len(rc.stage.lru) == 0


def test_a_response_in_flight_during_a_flush_is_not_stored():
    cache, rc = stage_of(plan_for({}, {"keyParameters": ["method.request.path.id"]}))
    fill = cache.check(rc, down(), head(), {"id": "1"})
    keep = fill.begin(200, [])
    cachemod.shared_area().bump(rc.stage.slot)
    cache.sync(cachemod._monotonic())
    keep(b"stale")
    fill.finish()
    assert len(rc.stage.lru) == 0


# -- the store rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "ttl"), [
    ([("content-type", "text/plain")], 300.0),
    ([("Set-Cookie", "a=1")], 0.0),
    ([("Cache-Control", "private")], 0.0),
    ([("cache-control", 'private="set-cookie", max-age=60')], 0.0),
    ([("cache-control", "no-store")], 0.0),
    ([("cache-control", "no-cache")], 0.0),
    ([("cache-control", "public, max-age=60")], 60.0),
    ([("cache-control", "max-age=60, s-maxage=30")], 30.0),
    ([("cache-control", "max-age=600")], 300.0),
    ([("cache-control", "max-age=abc")], 0.0),
    ([("cache-control", "max-age=0")], 0.0),
    ([("vary", "*")], 0.0),
    ([("Vary", "Accept-Encoding")], 0.0),
    ([("vary", "Accept-Language")], 300.0),
    ([("vary", "accept-language, Accept-Encoding")], 0.0),
])
def test_storable_ttl(headers, ttl):
    assert storable_ttl(headers, 300.0, frozenset(("accept-language",))) == ttl


def test_only_200_and_at_most_1mib():
    cache, rc = stage_of(plan_for({}, {"keyParameters": ["method.request.path.id"]}))
    fill = cache.check(rc, down(), head(), {"id": "1"})
    assert fill.begin(404, []) is None
    fill = cache.check(rc, down(), head(), {"id": "2"})
    keep = fill.begin(200, [])
    keep(b"x" * MAX_ENTRY_BODY)
    keep(b"x")
    fill.finish()
    assert len(rc.stage.lru) == 0
    fill = cache.check(rc, down(), head(), {"id": "3"})
    fill.begin(200, [])(b"x" * MAX_ENTRY_BODY)
    fill.finish()
    assert len(rc.stage.lru) == 1


# -- the budget: what is counted covers what is allocated ----------------------------------------------
@pytest.mark.parametrize("impl", ["c", "py"])
def test_the_counted_bytes_cover_the_memory_really_used(impl, monkeypatch):
    if impl == "c":
        module = importlib.import_module("fastgw._core")
    else:
        module = importlib.import_module("fastgw._py")
    monkeypatch.setattr(cachemod, "LruTtlCache", module.LruTtlCache)
    budget = 8 << 20
    plan = plan_for({"capacity": budget}, {"keyParameters": ["method.request.path.id",
                                                              "method.request.querystring.q"]})
    cache, rc = stage_of(plan)
    lru = rc.stage.lru
    assert type(lru) is module.LruTtlCache and lru.max_bytes == budget

    def fill_with(count: int, size: int, prefix: str) -> None:
        for i in range(count):
            # Fresh strings, as the upstream response parser makes them for every response.
            raw = [(b"content-type", b"application/json"), (b"etag", f'"{prefix}{i}"'.encode()),
                   (b"x-request-trace", b"abcdefghij" * 3)]
            headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
            miss_then_store(cache, rc, down(f"q={prefix}{i}"), {"id": str(i)}, bytes(size), headers)

    for size in (10 * 1024, 100, 0):
        lru.clear()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        fill_with(2000, size, f"s{size}-")
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        counted = lru.bytes_used
        assert counted <= budget
        assert used <= counted, f"{impl}: {len(lru)} entries of {size} B use {used} B, counted {counted} B"


@pytest.mark.parametrize("impl", ["c", "py"])
def test_lru_eviction_order_with_the_budget(impl, monkeypatch):
    module = importlib.import_module("fastgw._core" if impl == "c" else "fastgw._py")
    monkeypatch.setattr(cachemod, "LruTtlCache", module.LruTtlCache)
    cache, rc = stage_of(plan_for({"capacity": "1MiB"}, {"keyParameters": ["method.request.path.id"]}))
    lru = rc.stage.lru
    for i in range(200):
        miss_then_store(cache, rc, down(), {"id": str(i)}, bytes(10 * 1024))
        assert isinstance(cache.check(rc, down(), head(), {"id": "0"}), tuple)  # kept recent
        assert lru.bytes_used <= 1 << 20
    assert isinstance(cache.check(rc, down(), head(), {"id": "199"}), tuple)
    assert isinstance(cache.check(rc, down(), head(), {"id": "1"}), Fill)  # the least recently used went


# -- config ----------------------------------------------------------------------------------------------
def test_capacity_forms_and_aws_sizes():
    assert plan_for({"capacity": "64MiB"}).cache.stages[0].capacity == 64 << 20
    assert plan_for({"capacity": "1.5GB"}).cache.stages[0].capacity == 1_500_000_000
    assert plan_for({"capacity": 1 << 20}).cache.stages[0].capacity == 1 << 20
    assert plan_for({"size": "0.5"}).cache.stages[0].capacity == 1 << 29
    assert plan_for({"size": 237}).cache.stages[0].capacity == 237 << 30
    assert plan_for({}).cache.stages[0].capacity == 1 << 29  # AWS's default 0.5 GB
    assert plan_for({"enabled": False}).cache is None
    assert plan_for({"ttlInSeconds": 0}).stages[0].routes[0].cache is None  # AWS: TTL 0 turns it off


def test_methods_and_ttl_per_route():
    assert plan_for({}, None, "POST /x").stages[0].routes[0].cache is None
    assert plan_for({}, {"enabled": True}, "POST /x").stages[0].routes[0].cache.methods == {"POST"}
    assert plan_for({}, None, "ANY /x").stages[0].routes[0].cache.methods == {"GET", "HEAD"}
    assert plan_for({}, {"enabled": False}).stages[0].routes[0].cache is None
    assert plan_for({"ttlInSeconds": 10}, {"ttlInSeconds": 20}).stages[0].routes[0].cache.ttl == 20
    assert plan_for({"ttlInSeconds": 10}).stages[0].routes[0].cache.ttl == 10


@pytest.mark.parametrize(("stage_cache", "route_cache", "state", "expected"), [
    ({"capacity": "lots"}, None, None, "prod.cache.capacity"),
    ({"capacity": "1KiB"}, None, None, "between 64KiB and 1TiB"),
    ({"size": "2"}, None, None, "prod.cache.size"),
    ({"size": "0.5", "capacity": "1MiB"}, None, None, "not both"),
    ({"ttlInSeconds": 3601}, None, None, "prod.cache.ttlInSeconds"),
    ({"unauthorizedCacheControlHeaderStrategy": "IGNORE"}, None, None, "unauthorizedCacheControlHeaderStrategy"),
    ({"invalidationTokens": ["short"]}, None, None, "invalidationTokens[0]"),
    ({"backend": "redis"}, None, None, "prod.cache.url"),
    ({"backend": "memcached"}, None, None, "prod.cache.backend"),
    ({"colour": "red"}, None, None, "unknown field"),
    ({}, {"keyParameters": ["method.request.path.nope"]}, None, "no path parameter 'nope'"),
    ({}, {"keyParameters": ["method.request.body.x"]}, None, "keyParameters[0]"),
    ({}, {"ttl": 5}, None, "cache.ttl: unknown field"),
])
def test_config_problems(stage_cache, route_cache, state, expected):
    found = problems_for(stage_cache, route_cache, state)
    assert any(expected in p for p in found), found


def test_the_redis_url_defaults_to_the_state_one():
    found = problems_for({"backend": "redis"}, None, {"backend": "redis", "url": "redis://127.0.0.1:1/0"})
    assert found == []


def test_canaries_use_the_stage_cache_only_with_use_stage_cache_and_their_own_entries_per_deployment():
    route = {"route": "GET /items/{id}", "cache": {"keyParameters": ["method.request.path.id"]},
             "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/items/{id}"}}
    data = {"apis": [{"name": "shop", "type": "REST", "routes": [route],
                      "deployments": {"v2": {"routes": [route]}},
                      "stages": {
                          "prod": {"cache": {}, "canary": {"deployment": "v2", "percentTraffic": 10,
                                                           "useStageCache": True}},
                          "beta": {"cache": {}, "canary": {"deployment": "current", "percentTraffic": 10,
                                                           "useStageCache": True}},
                          "gamma": {"cache": {}, "canary": {"deployment": "v2", "percentTraffic": 10}}}}]}
    config, problems = read_config(data)
    assert not problems, problems
    plan, problems = compile_config(config)
    assert not problems, problems
    by_stage = {(s.name, s.is_canary): s.routes[0].cache for s in plan.stages}
    prod, prod_canary = by_stage[("prod", False)], by_stage[("prod", True)]
    assert prod.stage is prod_canary.stage  # one cache, one budget
    assert (prod.prefix, prod_canary.prefix) == ("GET /items/{id}", "GET@v2 /items/{id}")
    beta, beta_canary = by_stage[("beta", False)], by_stage[("beta", True)]
    assert beta.stage is beta_canary.stage and beta.prefix == beta_canary.prefix  # same deployment: shared
    assert by_stage[("gamma", False)] is not None and by_stage[("gamma", True)] is None
    assert len(plan.cache.stages) == 3


def test_a_refetch_after_max_age_0_replaces_the_redis_entry_too():
    plan = plan_for({"requireAuthorizationForCacheControl": False, "backend": "redis",
                     "url": "redis://127.0.0.1:1/0"}, {"keyParameters": ["method.request.path.id"]})
    cache, rc = stage_of(plan)
    calls: list[tuple[str, Any]] = []
    rc.stage.remote = SimpleNamespace(put=lambda sc, key, hit, ttl: calls.append(("put", hit[2])),
                                      delete=lambda sc, key: calls.append(("delete", key)))
    cache.remote = rc.stage.remote
    asking = down(headers=[("cache-control", "max-age=0")])
    fill = cache.check(rc, asking, head(asking.headers), {"id": "1"})
    assert isinstance(fill, Fill) and not fill.remote  # not read from Redis: refetched
    fill.begin(200, [])(b"new")
    fill.finish()
    assert calls == [("delete", "GET /items/{id}\n1"), ("put", b"new")]


def test_the_in_process_driver_runs_every_scenario():
    # benchmarks/inproc.py measures instruction counts of the request path (docs/PERF.md); this only
    # keeps it working: a cache hit, a plain proxy and the full path, each against its own upstream.
    import asyncio

    from benchmarks.inproc import drive

    for scenario in ("hit", "plain", "full"):
        asyncio.run(drive(scenario, 20, None))  # raises SystemExit on any answer but 200
