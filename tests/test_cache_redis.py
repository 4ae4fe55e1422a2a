"""The cache's Redis tier: two `fastgw serve` nodes share entries through a real redis-server; a flush
on one node reaches the other; Redis failures are misses, never errors."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis
from support.redis import RedisServer
from support.upstream import RecordingUpstream
from support.waiting import wait_for
from test_cache import DEBUG, ITEM_KEYS, Numbered, config, metric, wait_metric


@pytest.fixture
def numbered() -> RecordingUpstream:
    server = RecordingUpstream(Numbered()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    yield server
    server.stop()


def node_config(upstream: str, url: str, *, stage_url: bool) -> str:
    # One node names the URL in the cache section, the other reuses the `state` one.
    stage = "{backend: redis, debugHeader: true" + (f', url: "{url}"' if stage_url else "") + "}"
    state = "" if stage_url else f'state: {{backend: local, path: state, url: "{url}"}}\n'
    return state + config(upstream, stage, ITEM_KEYS)


def entries_in(server: RedisServer) -> list[bytes]:
    client = redis.Redis.from_url(server.url)
    try:
        return [k for k in client.keys("fastgw:cache:shop:prod:*") if not k.endswith(b":g")]
    finally:
        client.close()


def test_an_entry_cached_through_node_a_is_a_hit_on_node_b(start_gateway, numbered, redis_server):
    a = start_gateway(node_config(numbered.address, redis_server.url, stage_url=True), name="a",
                      args=("--no-access-log",))
    b = start_gateway(node_config(numbered.address, redis_server.url, stage_url=False), name="b",
                      args=("--no-access-log",))
    first = httpx.get(a.url + "/prod/items/1?lang=en")
    assert (first.text, first.headers["x-cache"]) == ("1", "Miss")
    wait_for(lambda: len(entries_in(redis_server)) == 1)  # written in the background
    on_b = httpx.get(b.url + "/prod/items/1?lang=en&other=x")
    assert (on_b.status_code, on_b.text, on_b.headers["x-cache"]) == (200, "1", "Hit")
    assert on_b.headers["content-type"] == "text/plain" and on_b.headers["x-amzn-requestid"] != \
        first.headers["x-amzn-requestid"]
    # Then B answers from its own memory (the first level), and the upstream saw one request.
    assert httpx.get(b.url + "/prod/items/1?lang=en").text == "1"
    assert len(numbered.requests) == 1
    labels = {"api": "shop", "stage": "prod", "route": "GET /items/{id}"}
    assert wait_metric(b, "fastgw_cache_hits_total", 2, **labels) == 2
    assert metric(b, "fastgw_cache_misses_total", **labels) == 0
    assert wait_metric(a, "fastgw_cache_misses_total", 1, **labels) == 1

    # A flush on A reaches B (its first level follows the generation in Redis within a second).
    assert httpx.post(f"{a.admin}/cache/flush?api=shop&stage=prod").json()["redis"] == {"shop/prod": "flushed"}
    assert httpx.get(a.url + "/prod/items/1?lang=en").text == "2"
    # B answers its old 1 until it sees the new generation, then 2 from Redis (A stored it): never a
    # third upstream request.
    wait_for(lambda: httpx.get(b.url + "/prod/items/1?lang=en").text == "2", what="B to follow A's flush")
    assert len(numbered.requests) == 2


def test_redis_failures_are_misses_not_errors(start_gateway, numbered, redis_server):
    a = start_gateway(node_config(numbered.address, redis_server.url, stage_url=True), name="a",
                      args=("--no-access-log",))
    assert httpx.get(a.url + "/prod/items/1").headers["x-cache"] == "Miss"
    redis_server.stop()
    started = time.monotonic()
    answers = [httpx.get(a.url + f"/prod/items/{i}") for i in range(2, 12)]
    assert [r.status_code for r in answers] == [200] * 10
    assert [r.headers["x-cache"] for r in answers] == ["Miss"] * 10
    assert time.monotonic() - started < 5
    # The local level keeps working without Redis.
    assert httpx.get(a.url + "/prod/items/2").headers["x-cache"] == "Hit"
    assert httpx.get(a.url + "/prod/items/1").headers["x-cache"] == "Hit"
    # A flush still empties this node, and says Redis did not answer.
    body = httpx.post(f"{a.admin}/cache/flush?api=shop&stage=prod", timeout=30).json()
    assert body["flushed"] == ["shop/prod"] and body["redis"]["shop/prod"].startswith("unreachable")
    assert httpx.get(a.url + "/prod/items/1").headers["x-cache"] == "Miss"
    # Redis back: the tier is used again.
    redis_server.start()
    fresh = iter(range(100, 10_000))  # a new key each time: a local hit would write nothing to Redis

    def stored_in_redis() -> bool:
        assert httpx.get(a.url + f"/prod/items/{next(fresh)}").status_code == 200
        return len(entries_in(redis_server)) >= 1

    wait_for(stored_in_redis, interval=0.2, what="the node to write to Redis again")


def test_debug_header_off_by_default(start_gateway, numbered, redis_server):
    gw = start_gateway(config(numbered.address, f'{{backend: redis, url: "{redis_server.url}"}}', ITEM_KEYS),
                       args=("--no-access-log",))
    assert "x-cache" not in httpx.get(gw.url + "/prod/items/1").headers
    assert DEBUG  # the other tests' stage settings turn it on
