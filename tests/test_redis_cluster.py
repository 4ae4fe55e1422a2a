"""The Redis backend on a real Redis Cluster (issue 19): 6 `redis-server --cluster-enabled yes` processes
on loopback (3 masters, 3 replicas; tests/support/redis_cluster.py, started once per run) and three
`fastgw serve` nodes: one quota exact under a burst spread over the nodes, cache entries shared,
changes announced to every node within a second, and a master killed with SIGKILL under load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from support.redis_cluster import RedisCluster
from support.upstream import RecordingUpstream
from support.waiting import wait_for
from support.wsapi import chat_config
from test_cache import Numbered
from test_canary import config as canary_config
from test_usage import ALICE, ENV, burst, cli, one, statuses, usage_today
from test_usage_redis import metric


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisCluster):
    """The run's cluster, whole and empty; whole again after the test (a killed node is revived)."""
    cluster = redis_cluster_session
    cluster.revive()
    cluster.flushall()
    yield cluster
    cluster.revive()


@pytest.fixture
def numbered() -> RecordingUpstream:
    server = RecordingUpstream(Numbered()).start()
    yield server
    server.stop()


def config(upstream: str, cluster: RedisCluster, node: str, *, quota: str = "", fail_mode: str = "open",
           nodes: int = 3, timeout: int = 1000, cache: str = "") -> str:
    seeds = ", ".join(f'"{s}"' for s in cluster.seeds)
    return f"""
state: {{backend: redis, cluster: true, url: "{cluster.url}", seeds: [{seeds}], path: state-{node},
        failMode: {fail_mode}, nodes: {nodes}, timeoutMillis: {timeout}}}
apis:
  - name: shop
    type: REST
    stages:
      prod:
        {cache}
    routes:
      - route: GET /orders/{{id}}
        apiKeyRequired: true
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/orders/{{id}}"}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
    {quota}
apiKeys:
  - {{name: alice, value: "${{env:ALICE_API_KEY}}", usagePlans: [basic]}}
"""


def start_nodes(start_gateway, upstream, cluster, count: int = 3, **kw):
    # timeoutMillis 1000 where a burst is counted exactly: see tests/test_usage_redis.py start_nodes.
    return [start_gateway(config(upstream.address, cluster, f"n{i}", nodes=count, **kw), workers=1, env=ENV,
                          args=("--no-access-log",), name=f"node{i}") for i in range(count)]


def cluster_client(cluster: RedisCluster) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(cluster.url)


def test_three_nodes_share_one_quota_exactly_and_a_key_change_reaches_all_within_a_second(
        start_gateway, upstream, redis_cluster):
    nodes = start_nodes(start_gateway, upstream, redis_cluster, quota="quota: {limit: 100, period: DAY}")
    ports = [n.port for n in nodes]
    assert statuses(burst(ports, 300, "/prod/orders/1", ALICE)) == {200: 100, 429: 200}
    assert len(upstream.requests) == 100
    assert usage_today(nodes[1], "alice") == 100
    # Everything about the key is under one hash tag (one slot): the Lua check is one node's work.
    client = cluster_client(redis_cluster)
    try:
        names = [k.decode() for k in client.scan_iter(match="fastgw:{k:*", target_nodes=client.ALL_NODES)]
        assert names and len({client.keyslot(n) for n in names}) == 1, names
    finally:
        client.close()

    # A key created through one node is known to all at once: the change is announced on the
    # cluster's sharded events channel (the 1 s poll alone would not make it every time).
    created = cli(nodes[0], "keys", "create", "--name", "zed", "--plan", "basic")
    assert created.returncode == 0, created.stderr
    value = json.loads(created.stdout)["value"]
    started = time.monotonic()
    known: set[int] = set()

    def everywhere() -> bool:
        for index, node in enumerate(nodes):
            if index not in known and one(node.port, "/prod/orders/2", value)[0] == 200:
                known.add(index)
        return len(known) == len(nodes)

    wait_for(everywhere, timeout=5)
    assert time.monotonic() - started < 1.0
    assert cli(nodes[2], "keys", "disable", "zed").returncode == 0
    started = time.monotonic()
    wait_for(lambda: all(one(n.port, "/prod/orders/2", value)[0] == 403 for n in nodes), timeout=5)
    assert time.monotonic() - started < 1.0
    time.sleep(1.1)  # the workers' metrics are flushed once a second
    assert all(metric(n, 'fastgw_state_events_total{kind="keys"}') >= 2 for n in nodes)


def test_a_cache_entry_is_shared_and_a_flush_reaches_every_node_within_a_second(start_gateway, numbered,
                                                                                redis_cluster):
    nodes = start_nodes(start_gateway, numbered, redis_cluster, timeout=200,
                        cache="cache: {backend: redis, debugHeader: true, ttlInSeconds: 300, timeoutMillis: 1000}")
    first = httpx.get(nodes[0].url + "/prod/orders/7", headers={"x-api-key": ALICE})
    assert (first.status_code, first.text, first.headers["x-cache"]) == (200, "1", "Miss")

    client = cluster_client(redis_cluster)
    try:
        # Written in the background, on the shard of its own slot (entries carry no hash tag).
        wait_for(lambda: any(client.scan_iter(match="fastgw:cache:shop:prod:*", target_nodes=client.ALL_NODES)),
                 timeout=5)
    finally:
        client.close()
    for node in nodes[1:]:
        answer = httpx.get(node.url + "/prod/orders/7", headers={"x-api-key": ALICE})
        assert (answer.text, answer.headers["x-cache"]) == ("1", "Hit")
    assert len(numbered.requests) == 1

    flushed = httpx.post(f"{nodes[0].admin}/cache/flush?api=shop&stage=prod").json()
    assert flushed["redis"] == {"shop/prod": "flushed"}
    started = time.monotonic()
    # Nodes 1 and 2 hold "1" in their own memory: they drop it when the flush is announced.
    wait_for(lambda: all(httpx.get(n.url + "/prod/orders/7", headers={"x-api-key": ALICE}).text != "1"
                         for n in nodes[1:]), timeout=5)
    assert time.monotonic() - started < 1.0
    # ... because it was announced (the once-a-second poll alone would often be as quick).
    wait_for(lambda: all(metric(n, 'fastgw_state_events_total{kind="cache"}') >= 1 for n in nodes), timeout=5)


def test_a_master_killed_under_load_fails_open_then_the_promoted_replica_serves(start_gateway, upstream,
                                                                                redis_cluster):
    budget_ms = 200
    nodes = start_nodes(start_gateway, upstream, redis_cluster, timeout=budget_ms,
                        quota="quota: {limit: 1000000, period: DAY}")
    assert one(nodes[0].port, "/prod/orders/1", ALICE)[0] == 200
    client = cluster_client(redis_cluster)
    counter = next(k.decode() for k in client.scan_iter(match="fastgw:{k:*}:q:basic:*",
                                                        target_nodes=client.ALL_NODES))
    victim = redis_cluster.master_of(counter)

    results: list[tuple[int, float]] = []
    stop = threading.Event()

    def load(index: int) -> None:
        port = nodes[index % len(nodes)].port
        while not stop.is_set():
            started = time.monotonic()
            status = one(port, "/prod/orders/1", ALICE)[0]
            results.append((status, time.monotonic() - started))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(results) > 50, timeout=10)
        victim.kill()
        killed_at = len(results)
        redis_cluster.wait_ok(timeout=30)  # a replica took the dead master's slots
        promoted_at = len(results)

        def counted_in_redis() -> int:
            try:
                return int(client.get(counter) or 0)
            except redis.RedisError:
                return -1

        # The nodes use the promoted replica without a restart: the counter moves again.
        before = counted_in_redis()
        wait_for(lambda: counted_in_redis() > max(before, 0) + 30, timeout=20)
        wait_for(lambda: all(metric(n, "fastgw_state_backend_up") == 1 for n in nodes), timeout=10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        client.close()
    during = results[killed_at:promoted_at]
    assert during, "no request ran during the failover"
    assert {status for status, _ in results} == {200}  # failMode open: nothing refused, nothing failed
    worst = max(elapsed for _, elapsed in results)
    # A correctness bound, not a speed claim: the Redis budget plus a loaded 2-core machine's slack.
    assert worst < budget_ms / 1000 + 2.0, worst
    assert sum(metric(n, "fastgw_state_backend_errors_total") for n in nodes) >= 1


def test_cluster_settings_are_checked(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('state: {backend: redis, cluster: true, url: "redis://127.0.0.1:7000/3", seeds: ["nohost"]}\n'
                   "apis: []\n")
    done = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "state.url" in done.stderr and "only database 0" in done.stderr
    assert "state.seeds[0]" in done.stderr and "host:port" in done.stderr
    bad.write_text("state: {backend: local, leaseMillis: 100}\napis: []\n")
    done = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "state.leaseMillis" in done.stderr and "needs backend: redis" in done.stderr
    # WebSocket APIs run on a cluster (their relay between nodes uses sharded pub/sub).
    from test_websocket_nodes import ACCESS_KEY, SECRET_KEY

    (tmp_path / "creds.ini").write_text(f"[p]\naws_access_key_id = {ACCESS_KEY}\n"
                                        f"aws_secret_access_key = {SECRET_KEY}\n")
    bad.write_text('server: {iam: {credentialsFile: creds.ini}}\n'
                   'state: {backend: redis, cluster: true, url: "redis://127.0.0.1:7000/0"}\n'
                   "apis: [{name: chat, type: WEBSOCKET, routeSelectionExpression: $request.body.action,\n"
                   "        stages: {prod: {}}, routes: [{route: $default, integration: {type: MOCK}}]}]\n")
    done = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_canary_change_on_one_node_is_served_by_every_node_within_a_second(start_gateway, upstream,
                                                                             redis_cluster):
    seeds = ", ".join(f'"{s}"' for s in redis_cluster.seeds)
    nodes = []
    for i in range(3):
        state = (f'state: {{backend: redis, cluster: true, url: "{redis_cluster.url}", seeds: [{seeds}], '
                 f"path: state-c{i}}}\n")
        nodes.append(start_gateway(state + canary_config(upstream.address, percent=0.0), name=f"node{i}",
                                   args=("--no-access-log",)))

    def targets() -> list[str]:
        return [httpx.get(f"{n.url}/prod/items/1").json()["target"] for n in nodes]

    assert targets() == ["/v1/stable/1"] * 3
    answer = httpx.post(f"{nodes[0].admin}/canary/shop/prod/set", json={"percentTraffic": 100.0}, timeout=30)
    assert answer.status_code == 200, answer.text
    started = time.monotonic()
    wait_for(lambda: targets() == ["/v2/canary/1"] * 3, timeout=10)
    assert time.monotonic() - started < 1.0
    # Stored once, in Redis, for every node: each node describes it as stored state.
    for node in nodes:
        items = httpx.get(f"{node.admin}/canary").json()["items"]
        assert items[0]["canary"]["percentTraffic"] == 100.0, items
    assert "canary change on shop/prod announced by" in nodes[2].stderr()
    # A reset on another node gives every node the config file's stage back.
    assert httpx.post(f"{nodes[2].admin}/canary/shop/prod/reset", timeout=30).status_code == 200
    wait_for(lambda: targets() == ["/v1/stable/1"] * 3, timeout=10)


WS_CONFIG = chat_config('{backend: redis, cluster: true, url: "URL", seeds: [SEEDS], path: state}')


def test_websocket_delivery_across_nodes_survives_a_failover_and_a_dead_node_is_gone(tmp_path, redis_cluster):
    """Three nodes on the cluster: a client on node A; boto3's @connections calls through B and C reach
    it (sharded pub/sub, SigV4); the master holding A's channel is killed and delivery resumes on the
    promoted replica, never answering 410 meanwhile; a gone connection and a dead node's are 410."""
    import asyncio
    import os
    import signal

    import websockets
    from support.gateway import GatewayProcess
    from test_websocket_nodes import ACCESS_KEY, SECRET_KEY, management

    from fastgw.websocket.api import new_connection_id, owner_of
    from fastgw.websocket.relay import GRACE_SECONDS, request_channel, worker_key

    seeds = ", ".join(f'"{s}"' for s in redis_cluster.seeds)
    started: list[GatewayProcess] = []
    try:
        for name in ("a", "b", "c"):
            directory = tmp_path / name
            directory.mkdir()
            (directory / "creds.ini").write_text(f"[p]\naws_access_key_id = {ACCESS_KEY}\n"
                                                 f"aws_secret_access_key = {SECRET_KEY}\n")
            gateway = GatewayProcess(WS_CONFIG.replace("URL", redis_cluster.url).replace("SEEDS", seeds), directory,
                                     name=name)
            started.append(gateway)
            gateway.start()
        a, b, c = started
        via_b, via_c = management(b), management(c)

        direct = cluster_client(redis_cluster)

        def answer_late(owner: tuple[int, int], at: float) -> bytes:
            """A stand-in owner that subscribes at `at`, answers the first call, and returns its body."""
            time.sleep(max(0.0, at - time.monotonic()))  # the scenario's delay, not a wait for a condition
            pubsub = direct.pubsub()
            try:
                pubsub.ssubscribe(request_channel(*owner))
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message["type"] == "smessage":
                        head, _, body = message["data"].partition(b"\n")
                        call = json.loads(head)
                        if call["op"] == "POST":
                            direct.spublish(call["reply"], json.dumps({"n": call["n"], "found": True}))
                            return body
                raise AssertionError("no call reached the late owner")
            finally:
                pubsub.close()

        async def connect() -> tuple[object, str]:
            ws = await websockets.connect(f"{a.ws_url}/prod")
            await ws.send("who")
            return ws, await ws.recv()

        async def scenario() -> None:
            loop = asyncio.get_running_loop()

            def run(call):
                return loop.run_in_executor(None, call)

            ws, connection_id = await connect()
            await run(lambda: via_b.post_to_connection(ConnectionId=connection_id, Data=b"from b"))
            assert await asyncio.wait_for(ws.recv(), 10) == "from b"
            info = await run(lambda: via_c.get_connection(ConnectionId=connection_id))
            assert info["Identity"]["SourceIp"] == "127.0.0.1"

            # The master of A's channel (and registry key) dies: calls fail with 503 (never 410: the
            # connection is alive) until the replica is promoted and A has subscribed again.
            victim = redis_cluster.master_of(worker_key(*owner_of(connection_id)))
            victim.kill()
            killed = time.monotonic()
            statuses: list[int] = []
            while True:
                try:
                    await run(lambda: via_b.post_to_connection(ConnectionId=connection_id, Data=b"after"))
                    break
                except via_b.exceptions.GoneException:
                    raise AssertionError("410 for a live connection during the failover") from None
                except via_b.exceptions.ClientError as exc:
                    statuses.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
                assert time.monotonic() - killed < 20, statuses
                await asyncio.sleep(0.2)
            assert set(statuses) <= {503}, statuses
            assert await asyncio.wait_for(ws.recv(), 10) == "after"
            info = await run(lambda: via_c.get_connection(ConnectionId=connection_id))
            assert info["Identity"]["SourceIp"] == "127.0.0.1"

            # The client leaves: 410 from every node.
            await ws.close()
            for client in (via_b, via_c, management(a)):
                with pytest.raises(client.exceptions.GoneException):
                    await run(lambda client=client: client.post_to_connection(ConnectionId=connection_id,
                                                                               Data=b"late"))

            # An owner that is registered but not subscribed yet (as after a failover) gets the call once
            # it subscribes within the grace period: not 410 at once.
            owner = (0xABCDEF, 4242)
            late_id = new_connection_id(*owner)
            direct.set(worker_key(*owner), b"1", ex=30)
            began = time.monotonic()
            answering = loop.run_in_executor(None, answer_late, owner, began + 1.0)
            await run(lambda: via_b.post_to_connection(ConnectionId=late_id, Data=b"late owner"))
            assert await answering == b"late owner"
            assert time.monotonic() - began >= 1.0

            # Node A dies without a goodbye: its connections are gone (410) once nobody has listened
            # on its channel for the grace period, well within its registry key's lifetime.
            ws, connection_id = await connect()
            assert a.proc is not None
            os.killpg(a.proc.pid, signal.SIGKILL)
            a.proc.wait(10)
            began = time.monotonic()
            with pytest.raises(via_b.exceptions.GoneException):
                await run(lambda: via_b.post_to_connection(ConnectionId=connection_id, Data=b"anyone?"))
            assert time.monotonic() - began < GRACE_SECONDS + 3
            ws.transport.abort()

        asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        for gateway in started:
            gateway.stop()
