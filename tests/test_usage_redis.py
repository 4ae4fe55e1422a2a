"""The Redis backend: limits and quotas shared by several `fastgw serve` nodes (issue 4, RT-02,
F-14, F-16). A real redis-server runs on a free loopback port with `appendonly yes`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis
from support.redis import RedisServer
from support.waiting import wait_for, wait_value
from test_usage import ALICE, ENV, burst, cli, one, statuses, usage_today


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def config(upstream: str, redis_url: str, node: str, *, quota: str = "", plan_throttle: str = "",
           stage_throttle: str = "", fail_mode: str = "open", nodes: int = 3, timeout: int = 50) -> str:
    return f"""
state: {{backend: redis, url: "{redis_url}", path: state-{node}, failMode: {fail_mode}, nodes: {nodes},
        timeoutMillis: {timeout}}}
apis:
  - name: shop
    type: REST
    stages:
      prod:
        {stage_throttle}
    routes:
      - route: GET /orders/{{id}}
        apiKeyRequired: true
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/orders/{{id}}"}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
    {plan_throttle}
    {quota}
apiKeys:
  - {{name: alice, value: "${{env:ALICE_API_KEY}}", usagePlans: [basic]}}
"""


def start_nodes(start_gateway, upstream, redis_server, count: int, **kw):
    """`count` gateway nodes (1 worker each) on one Redis. Tests that count a 300-request burst
    exactly give Redis 1 s instead of the default 50 ms: on a 2-core machine shared by three
    nodes, Redis, the client and the upstream, a worker's event loop can lag more than 50 ms in
    the burst, and a check that times out falls back to the node's local share by design."""
    return [start_gateway(config(upstream.address, redis_server.url, f"n{i}", nodes=count, **kw), workers=1,
                          env=ENV, args=("--no-access-log",), name=f"node{i}") for i in range(count)]


def metric(gateway, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gateway.admin}/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.reliability("F-16")
def test_three_nodes_share_one_quota_exactly_and_it_survives_a_redis_restart(start_gateway, upstream, redis_server):
    nodes = start_nodes(start_gateway, upstream, redis_server, 3, quota="quota: {limit: 100, period: DAY}",
                        timeout=1000)
    ports = [n.port for n in nodes]
    results = burst(ports, 300, "/prod/orders/1", ALICE)
    assert statuses(results) == {200: 100, 429: 100 * 2}
    assert len(upstream.requests) == 100
    assert usage_today(nodes[0], "alice") == 100

    # A graceful Redis restart with appendonly yes keeps the counts: the key stays exhausted.
    redis_server.restart()
    admitted_meanwhile = 0

    def exhausted() -> bool:
        nonlocal admitted_meanwhile
        status = one(ports[1], "/prod/orders/1", ALICE)[0]
        admitted_meanwhile += status == 200  # a request served while the node reconnects (fail open)
        return status == 429

    wait_for(exhausted, timeout=5)
    # Anything counted locally meanwhile reaches Redis (the node reconciles about once a second).
    wait_value(lambda: usage_today(nodes[2], "alice"), 100 + admitted_meanwhile, what="alice's usage in Redis")


@pytest.mark.reliability("RT-02")
def test_three_nodes_share_one_throttle_exactly(start_gateway, upstream, redis_server):
    # rateLimit 0.01: no token comes back during the test, so exactly the burst passes.
    nodes = start_nodes(start_gateway, upstream, redis_server, 3,
                        stage_throttle="throttle: {rateLimit: 0.01, burstLimit: 10}",
                        plan_throttle="throttle: {rateLimit: 0.01, burstLimit: 25}", timeout=1000)
    counts = statuses(burst([n.port for n in nodes], 300, "/prod/orders/1", ALICE))
    assert counts == {200: 10, 429: 290}, counts
    # The 290 refused ones took nothing from the plan's bucket: 15 of its 25 are left, but the
    # stage's bucket (10) is spent, so still nothing passes.
    assert statuses(burst([n.port for n in nodes], 30, "/prod/orders/1", ALICE)) == {429: 30}


@pytest.mark.reliability("F-14")
def test_redis_down_fails_open_then_shared_limits_return_and_no_count_is_lost(start_gateway, upstream,
                                                                              redis_server):
    (node,) = start_nodes(start_gateway, upstream, redis_server, 1, quota="quota: {limit: 1000, period: DAY}")
    assert statuses(burst([node.port], 20, "/prod/orders/1", ALICE)) == {200: 20}

    redis_server.stop()
    started = time.perf_counter()
    during = [one(node.port, "/prod/orders/1", ALICE)[0] for _ in range(30)]
    elapsed = time.perf_counter() - started
    assert during == [200] * 30  # fail open: per-node local limits
    assert elapsed < 3.0  # no request waits more than the 50 ms Redis timeout (plus its own work)
    wait_for(lambda: metric(node, "fastgw_state_backend_errors_total") >= 1, what="a backend error counted")
    wait_value(lambda: metric(node, "fastgw_state_backend_up"), 0.0, what="fastgw_state_backend_up")

    restarted = time.monotonic()
    redis_server.start()
    # The usage counted while Redis was away is added to Redis: nothing lost.
    wait_for(lambda: usage_today(node, "alice") == 50, timeout=5)
    # Shared limits are back: a quota change made in Redis is enforced by the node.
    assert cli(node, "usage", "alice", "--plan", "basic", "--remaining", "0").returncode == 0
    wait_for(lambda: one(node.port, "/prod/orders/1", ALICE)[0] == 429, timeout=5)
    assert time.monotonic() - restarted < 5 + 5
    wait_value(lambda: metric(node, "fastgw_state_backend_up"), 1.0, what="fastgw_state_backend_up")


@pytest.mark.reliability("F-14")
def test_redis_down_fails_closed_with_503(start_gateway, upstream, redis_server):
    (node,) = start_nodes(start_gateway, upstream, redis_server, 1, fail_mode="closed",
                          quota="quota: {limit: 1000, period: DAY}")
    assert one(node.port, "/prod/orders/1", ALICE)[0] == 200
    redis_server.stop()
    status, raw = one(node.port, "/prod/orders/1", ALICE)
    assert status == 503 and raw.endswith(b'{"message":"Service Unavailable"}')
    # A bad key is still a 403: the key check never depends on Redis.
    assert one(node.port, "/prod/orders/1", "y" * 25)[0] == 403


def test_a_key_created_through_one_node_works_on_all(start_gateway, upstream, redis_server):
    nodes = start_nodes(start_gateway, upstream, redis_server, 2, quota="quota: {limit: 5, period: DAY}")
    created = cli(nodes[0], "keys", "create", "--name", "zed", "--plan", "basic")
    assert created.returncode == 0, created.stderr
    value = json.loads(created.stdout)["value"]
    known: set[int] = set()  # nodes that accepted the key (each such request uses quota)

    def everywhere() -> bool:
        for index, node in enumerate(nodes):
            if index not in known and one(node.port, "/prod/orders/1", value)[0] == 200:
                known.add(index)
        return len(known) == len(nodes)

    wait_for(everywhere, timeout=5)
    # Its quota (5) is shared too: 2 used above, 3 left across both nodes.
    assert statuses(burst([n.port for n in nodes], 10, "/prod/orders/1", value)) == {200: 3, 429: 7}
    listed = httpx.get(f"{nodes[1].admin}/keys").json()["items"]
    assert any(k["name"] == "zed" for k in listed) and value not in json.dumps(listed)
    assert cli(nodes[1], "keys", "disable", "zed").returncode == 0
    wait_for(lambda: all(one(n.port, "/prod/orders/1", value)[0] == 403 for n in nodes), timeout=5)
    # Redis holds the key's digest, never its value (nor ALICE's).
    def stored() -> bytes:
        return b"".join(p.read_bytes() for p in redis_server.directory.rglob("*") if p.is_file())

    wait_for(lambda: b"zed" in stored(), what="the key in Redis's append-only file (appendfsync everysec)")
    assert value.encode() not in stored() and ALICE.encode() not in stored()


def quota_counter(server: RedisServer) -> tuple[redis.Redis, str]:
    client = redis.Redis.from_url(server.url)
    return client, next(k.decode() for k in client.scan_iter(match="fastgw:{k:*}:q:basic:*"))


def test_fail_open_admits_this_nodes_share_of_what_was_left_and_hands_it_over_once(start_gateway, upstream,
                                                                                   redis_server):
    # The config says 3 nodes share the Redis: cut off, this one may use a third of what is left.
    # timeoutMillis 1000: the burst below is counted exactly (see start_nodes); a stopped Redis refuses
    # connections at once, so the outage costs no waiting either way.
    node = start_gateway(config(upstream.address, redis_server.url, "n0", nodes=3, timeout=1000,
                                quota="quota: {limit: 30, period: DAY}"), workers=1, env=ENV, args=("--no-access-log",))
    assert statuses([one(node.port, "/prod/orders/1", ALICE) for _ in range(12)]) == {200: 12}

    redis_server.stop()
    during = statuses([one(node.port, "/prod/orders/1", ALICE) for _ in range(20)])
    assert during == {200: (30 - 12) // 3, 429: 20 - (30 - 12) // 3}, during  # not unlimited, not zero

    redis_server.start()
    wait_value(lambda: usage_today(node, "alice"), 12 + 6, what="the 6 admitted meanwhile, handed over")
    wait_for(lambda: metric(node, "fastgw_state_backend_up") == 1, what="the worker back on Redis")
    # The shared quota is back, exact: 12 left (a hand-over counted twice would leave fewer).
    assert statuses(burst([node.port], 20, "/prod/orders/1", ALICE)) == {200: 12, 429: 8}
    assert usage_today(node, "alice") == 30  # and the Reconciler's later rounds (every second) added nothing


def test_a_handover_sent_again_after_a_lost_answer_counts_once(redis_server):
    from fastgw.policies.usage.redis import RECONCILE

    client = redis.Redis.from_url(redis_server.url)
    try:
        script = client.register_script(RECONCILE)
        keys = ["fastgw:{k:x}:q:basic:1", "fastgw:{k:x}:u:basic", "fastgw:{k:x}:h:basic:1"]
        assert script(keys=keys, args=["node-a", 5, 3600, "2026-12-07", 100]) == 5
        assert script(keys=keys, args=["node-a", 5, 3600, "2026-12-07", 100]) == 5  # the retry: nothing added
        assert script(keys=keys, args=["node-a", 8, 3600, "2026-12-07", 100]) == 8  # the total grew by 3
        assert script(keys=keys, args=["node-b", 2, 3600, "2026-12-07", 100]) == 10  # another node's own total
        assert client.hget(keys[1], "2026-12-07") == b"10"
    finally:
        client.close()


def test_a_counter_never_goes_backwards_but_an_update_usage_lowers_it(start_gateway, upstream, redis_server):
    (node,) = start_nodes(start_gateway, upstream, redis_server, 1, quota="quota: {limit: 30, period: DAY}")
    assert statuses([one(node.port, "/prod/orders/1", ALICE) for _ in range(10)]) == {200: 10}
    client, counter = quota_counter(redis_server)
    try:
        client.set(counter, 3)  # writes lost (a failover to a replica that lagged)
        assert one(node.port, "/prod/orders/1", ALICE)[0] == 200
        assert int(client.get(counter)) == 11  # resumed from what the node saw, not from 3
        # An operator's UpdateUsage lowers it on purpose: that is followed.
        assert cli(node, "usage", "alice", "--plan", "basic", "--remaining", "25").returncode == 0
        assert one(node.port, "/prod/orders/1", ALICE)[0] == 200
        assert int(client.get(counter)) == 6
    finally:
        client.close()


def counted_today(server: RedisServer) -> tuple[int, int]:
    """(alice's quota counter, her usage today) as Redis holds them."""
    client = redis.Redis.from_url(server.url)
    try:
        counter = next(k for k in client.scan_iter(match="fastgw:{k:*}:q:basic:*"))
        daily = client.hget(next(client.scan_iter(match="fastgw:{k:*}:u:basic")),
                            time.strftime("%Y-%m-%d", time.gmtime()))
        return int(client.get(counter) or 0), int(daily or 0)
    finally:
        client.close()


@pytest.mark.reliability("F-14")
def test_checks_whose_outcome_is_unknown_are_counted_exactly_once(start_gateway, upstream, redis_server):
    """The link to Redis fails mid-request in both ways a client cannot tell apart: the script ran and
    its answer was lost (the proxy resets each connection as Redis answers), and the script had not
    run yet when the request gave up (the proxy holds the command; Redis runs it late, after the
    request was admitted by the local share). Either way each admitted request is counted once:
    the quota counter and the day's usage equal what the upstream served."""
    from support.faultproxy import FaultProxy

    proxy = FaultProxy(("127.0.0.1", redis_server.port)).start()
    try:
        node = start_gateway(config(upstream.address, f"redis://{proxy.address}/0", "n0", nodes=1,
                                    quota="quota: {limit: 100000, period: DAY}"),
                             workers=1, env=ENV, args=("--no-access-log",))
        served = statuses([one(node.port, "/prod/orders/1", ALICE) for _ in range(5)])
        assert served == {200: 5}

        # Answers lost: every command reaches Redis, the connection is reset as the answer comes back.
        proxy.reset_after = 0
        proxy.cut()
        during = statuses([one(node.port, "/prod/orders/1", ALICE) for _ in range(12)])
        assert during == {200: 12}, during  # fail open
        proxy.reset_after = None
        wait_for(lambda: one(node.port, "/prod/orders/1", ALICE)[0] == 200 and
                 metric(node, "fastgw_state_backend_up") == 1, what="the worker back on Redis")

        # Commands held: each check times out (50 ms) with its command still on the way, and is
        # admitted by the local share. The worker settles with Redis over new connections; then the held
        # commands reach Redis, late: they must not count again.
        proxy.hold = True
        during = statuses([one(node.port, "/prod/orders/1", ALICE) for _ in range(12)])
        assert during == {200: 12}, during
        proxy.hold = False
        wait_for(lambda: proxy.held > 0, what="commands held by the proxy")
        wait_for(lambda: one(node.port, "/prod/orders/1", ALICE)[0] == 200 and
                 metric(node, "fastgw_state_backend_up") == 1, what="the worker back on Redis")
        def excess() -> tuple[int, int]:
            """What the counter and the day's usage hold beyond the requests served (< 0: missing)."""
            admitted = sum(1 for r in upstream.requests if r.target.startswith("/orders/"))
            counter, daily = counted_today(redis_server)
            return counter - admitted, daily - admitted

        wait_value(excess, (0, 0), what="counter and day's usage beyond the requests served")
        held = proxy.held
        proxy.release()
        wait_for(lambda: proxy.held_answered >= held, what="Redis answering the late commands")
        assert excess() == (0, 0)
        # Later hand-overs add nothing: a few more checks through Redis stay exact.
        for _ in range(3):
            assert one(node.port, "/prod/orders/1", ALICE)[0] == 200
            time.sleep(0.5)  # let a Reconciler round (every second) pass between checks
            assert excess() == (0, 0)
    finally:
        proxy.stop()


def test_a_lease_takes_what_every_level_allows_at_once(redis_server):
    from fastgw.policies.usage.redis import LEASE, REFUND

    client = redis.Redis.from_url(redis_server.url)
    try:
        lease, refund = client.register_script(LEASE), client.register_script(REFUND)
        keys = ["fastgw:{g}:t:a", "fastgw:{g}:t:b"]
        # 1 s intervals (no refill during the test): level a holds 5 tokens, level b 3.
        levels = [1_000_000, 5_000_000, 1_000_000, 3_000_000]
        assert lease(keys=keys, args=[10, *levels]) == [3, 0, 0]  # all that b allows
        granted, index, retry_us = lease(keys=keys, args=[1, *levels])
        assert (granted, index) == (0, 2) and 0 < retry_us <= 1_000_000  # b is empty: refused, retry ~1 s
        refund(keys=keys, args=[2 * 1_000_000, 2 * 1_000_000])  # 2 unspent tokens given back
        assert lease(keys=keys, args=[10, *levels]) == [2, 0, 0]
    finally:
        client.close()


def test_leased_stage_throttle_is_never_exceeded_across_nodes_and_costs_fewer_scripts(start_gateway, upstream,
                                                                                      redis_server):
    lease = "throttle: {rateLimit: 0.01, burstLimit: 20}"
    nodes = [start_gateway(config(upstream.address, redis_server.url, f"n{i}", nodes=2, timeout=1000,
                                  stage_throttle=lease).replace("timeoutMillis: 1000", "timeoutMillis: 1000, "
                                                                "leaseMillis: 500"),
                           workers=1, env=ENV, args=("--no-access-log",), name=f"node{i}") for i in range(2)]
    # Leases hand out only tokens Redis granted: a burst over both nodes admits exactly the bucket.
    assert statuses(burst([n.port for n in nodes], 60, "/prod/orders/1", ALICE)) == {200: 20, 429: 40}
    assert statuses([one(n.port, "/prod/orders/1", ALICE) for n in nodes for _ in range(5)]) == {429: 10}

    # A steady stream on one node: the stage's bucket is leased ~500 ms of traffic at a time, so the
    # requests cost about one script each (the key's) instead of two. The first nodes stopped and Redis
    # emptied: the same stage, so the same bucket name.
    for gateway in nodes:
        gateway.stop()
    redis.Redis.from_url(redis_server.url).flushall()
    node = start_gateway(config(upstream.address, redis_server.url, "n9", nodes=1, timeout=1000,
                                stage_throttle="throttle: {rateLimit: 100000, burstLimit: 100000}")
                         .replace("timeoutMillis: 1000", "timeoutMillis: 1000, leaseMillis: 500"),
                         workers=1, env=ENV, args=("--no-access-log",), name="steady")
    client = redis.Redis.from_url(redis_server.url)
    try:
        def evalsha() -> int:
            return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

        before = evalsha()
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # the load's length: a lease needs a rate to be sized
            status, answer = one(node.port, "/prod/orders/1", ALICE)
            assert status == 200, (answer, client.time(), {k: client.get(k) for k in client.scan_iter("fastgw:{g}*")})
        sent = len([r for r in upstream.requests if r.target == "/orders/1"]) - 20
        scripts = evalsha() - before
        assert sent > 20 and scripts < 1.3 * sent, (scripts, sent)  # 2 per request without leases
    finally:
        client.close()
