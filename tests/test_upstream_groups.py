"""Upstream groups (issue 17): several targets behind one integration URI, balanced, health-checked,
ejected on errors, retried on another target, and an open circuit answered at once with 503.

Real processes: `fastgw serve` and RecordingUpstream targets the tests stop and start again on the
same port."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from support.upstream import Action, RecordingUpstream
from support.waiting import metric, wait_until


def config(targets: list[str], extra: str = "", balance: str = "round_robin", outlier: str = "",
           health: str = "") -> str:
    listed = ", ".join(f'"{t}"' if ":" in t and not t.startswith("{") else t for t in targets)
    return f"""
upstreamGroups:
  orders:
    targets: [{listed}]
    balance: {balance}
    {outlier}
    {health}
apis:
  - name: shop
    type: HTTP
    stages: {{$default: {{}}}}
    routes:
      - route: ANY /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://orders/items/{{id}}", connectTimeoutInMillis: 2000}}
{extra}
"""


def who(request) -> Action:
    return Action(body=b"ok")


@pytest.fixture
def two_targets():
    a, b = RecordingUpstream(who).start(), RecordingUpstream(who).start()
    yield a, b
    a.stop()
    b.stop()


def restart(target: RecordingUpstream, behaviour=who) -> RecordingUpstream:
    """A new upstream on the same port (the old one stopped)."""
    again = RecordingUpstream(behaviour, port=target.port)
    deadline = time.monotonic() + 10
    while True:
        try:
            return again.start()
        except Exception:  # noqa: BLE001 - the port may linger a moment
            if time.monotonic() > deadline:
                raise
            again = RecordingUpstream(behaviour, port=target.port)
            time.sleep(0.1)


def test_round_robin_spreads_requests_by_weight_and_the_host_is_the_group(start_gateway, two_targets):
    a, b = two_targets
    gateway = start_gateway(config([f'{{target: "{a.address}", weight: 3}}', b.address]))
    with httpx.Client(timeout=10) as client:
        for i in range(40):
            assert client.get(f"{gateway.url}/items/{i}").status_code == 200
    # One worker: smooth weighted round robin is exact, 3:1.
    assert (len(a.requests), len(b.requests)) == (30, 10)
    assert a.requests[0].header("host") == "orders"
    assert wait_until(lambda: metric(gateway.admin, "fastgw_upstream_target_requests_total", group="orders",
                                   target=a.address) == 30, "the per-target request count")


@pytest.mark.reliability("F-01")
def test_a_dead_target_is_skipped_ejected_and_taken_back(start_gateway, two_targets):
    a, b = two_targets
    gateway = start_gateway(config([a.address, b.address],
                                   outlier="outlierDetection: {consecutiveErrors: 2, baseEjectionMs: 1500}"))
    b.stop()
    with httpx.Client(timeout=10) as client:
        # Every request succeeds: a refused connection is tried on the other target, whatever the method
        # (nothing was sent), POST included.
        for i in range(10):
            assert client.get(f"{gateway.url}/items/{i}").status_code == 200
            assert client.post(f"{gateway.url}/items/{i}", content=b"x").status_code == 200
    assert len(a.requests) == 20
    assert wait_until(lambda: metric(gateway.admin, "fastgw_upstream_target_ejections_total", target=b.address) >= 1,
                    "b's ejection")
    assert metric(gateway.admin, "fastgw_upstream_target_available", target=b.address) == 0
    assert wait_until(lambda: metric(gateway.admin, "fastgw_upstream_target_failures_total", target=b.address) >= 2,
                    "b's failures counted")
    b = restart(b)
    try:
        # Back after its ejection time (1.5 s): it takes requests again.
        def b_serves() -> bool:
            httpx.get(f"{gateway.url}/items/again", timeout=10)
            return len(b.requests) > 0
        wait_until(b_serves, "b to take requests again")
    finally:
        b.stop()


@pytest.mark.reliability("F-12")
def test_when_no_target_is_available_the_circuit_is_open(start_gateway, two_targets):
    a, b = two_targets
    gateway = start_gateway(config([a.address, b.address],
                                   outlier="outlierDetection: {consecutiveErrors: 1, baseEjectionMs: 60000}"))
    a.stop()
    b.stop()
    first = httpx.get(f"{gateway.url}/items/1", timeout=10)
    assert first.status_code == 502  # both refused: the connect error
    # Both are ejected now: no connection is even attempted, the answer is an immediate 503.
    with socket.socket() as listener_a, socket.socket() as listener_b:
        for listener, target in ((listener_a, a), (listener_b, b)):
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", target.port))
            listener.listen(16)
            listener.setblocking(False)
        answer = httpx.get(f"{gateway.url}/items/2", timeout=10)
        assert answer.status_code == 503
        assert answer.headers["x-amzn-errortype"] == "ServiceUnavailableException"
        assert 1 <= int(answer.headers["retry-after"]) <= 60
        assert answer.json() == {"message": "Service Unavailable"}
        for listener in (listener_a, listener_b):
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody connected


@pytest.mark.reliability("F-06")
def test_a_connection_dropped_without_an_answer_is_retried_on_another_target_when_idempotent(start_gateway):
    def drop(request) -> Action:
        return Action(reset=True)

    bad, good = RecordingUpstream(drop).start(), RecordingUpstream(who).start()
    try:
        gateway = start_gateway(config([bad.address, good.address],
                                       outlier="outlierDetection: {consecutiveErrors: 1000}"))
        with httpx.Client(timeout=10) as client:
            gets = [client.get(f"{gateway.url}/items/{i}").status_code for i in range(6)]
            posts = [client.post(f"{gateway.url}/items/{i}", content=b"x").status_code for i in range(6)]
        assert gets == [200] * 6  # each GET that hit `bad` went again to `good`
        # A POST the upstream may have acted on is never sent twice: those that hit `bad` fail.
        assert posts.count(502) == 3 and posts.count(200) == 3
    finally:
        bad.stop()
        good.stop()


@pytest.mark.reliability("F-12")
def test_active_health_checks_take_a_target_out_and_bring_it_back(start_gateway, two_targets):
    a, b = two_targets
    sick = threading.Event()
    sick.set()

    def b_behaviour(request) -> Action:
        if request.target == "/health":
            return Action(status=500 if sick.is_set() else 200, body=b"")
        return Action(body=b"ok")

    b.stop()
    b = restart(b, b_behaviour)
    try:
        gateway = start_gateway(config(
            [a.address, b.address],
            health="healthCheck: {path: /health, intervalMs: 200, unhealthyThreshold: 2, healthyThreshold: 2}"))
        wait_until(lambda: metric(gateway.admin, "fastgw_upstream_target_available", target=b.address) == 0 and
                 metric(gateway.admin, "fastgw_upstream_health_checks_total", target=b.address, result="fail") >= 2,
                 "b marked unhealthy")
        served_before = len([r for r in b.requests if r.target != "/health"])
        with httpx.Client(timeout=10) as client:
            for i in range(10):
                assert client.get(f"{gateway.url}/items/{i}").status_code == 200
        assert len([r for r in b.requests if r.target != "/health"]) == served_before
        assert all(r.header("user-agent") == "fastgw-health-check" for r in b.requests if r.target == "/health")
        sick.clear()

        def b_serves() -> bool:
            httpx.get(f"{gateway.url}/items/x", timeout=10)
            return any(r.target == "/items/x" for r in b.requests)
        wait_until(b_serves, "b healthy again and served")
    finally:
        b.stop()


def test_least_request_prefers_the_less_busy_target(start_gateway):
    def slow(request) -> Action:
        return Action(body=b"slow", delay=0.3)

    slow_target, fast_target = RecordingUpstream(slow).start(), RecordingUpstream(who).start()
    try:
        gateway = start_gateway(config([slow_target.address, fast_target.address], balance="least_request"))

        def one(i: int) -> int:
            return httpx.get(f"{gateway.url}/items/{i}", timeout=20).status_code

        with httpx.Client(timeout=20):
            threads = []
            results: list[int] = []
            for i in range(60):
                thread = threading.Thread(target=lambda i=i: results.append(one(i)))
                thread.start()
                threads.append(thread)
                time.sleep(0.01)
            for thread in threads:
                thread.join(30)
        assert results.count(200) == 60
        # The slow target holds its requests 0.3 s, so it is busier whenever both are compared.
        assert len(fast_target.requests) > 2 * len(slow_target.requests)
    finally:
        slow_target.stop()
        fast_target.stop()


@pytest.mark.parametrize(("groups", "message"), [
    ("orders: {targets: []}", r"upstreamGroups\.orders\.targets \(line \d+\): must be a non-empty list"),
    ('orders: {targets: ["nohost"]}', r"upstreamGroups\.orders\.targets\[0\] \(line \d+\): must be host:port"),
    ('orders: {targets: ["a:1"], balance: random}', r"upstreamGroups\.orders\.balance \(line \d+\): must be one of"),
    ('orders: {targets: ["a:1"], healthCheck: {path: health}}',
     r"upstreamGroups\.orders\.healthCheck\.path \(line \d+\): must be a path"),
    ('orders: {targets: ["a:1", "a:1"]}', r"upstreamGroups\.orders\.targets \(line \d+\): lists a target twice"),
])
def test_a_bad_group_is_refused_naming_its_place(tmp_path, groups, message):
    path = tmp_path / "gw.yaml"
    path.write_text(f"""
upstreamGroups:
  {groups}
apis:
  - name: shop
    type: HTTP
    stages: {{$default: {{}}}}
    routes:
      - route: GET /x
        integration: {{type: HTTP_PROXY, uri: "http://orders/x"}}
""")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr
    assert "1 problem(s)" in result.stderr, result.stderr


def test_the_dashboard_shows_each_target_and_its_state(start_gateway, two_targets):
    a, b = two_targets
    gateway = start_gateway(config([a.address, b.address],
                                   outlier="outlierDetection: {consecutiveErrors: 1, baseEjectionMs: 60000}"))
    b.stop()
    for i in range(4):
        httpx.get(f"{gateway.url}/items/{i}", timeout=10)

    def rows() -> dict:
        data = httpx.get(f"{gateway.admin}/dashboard/data", timeout=10).json()
        found = {t["target"]: t for t in data["targets"] if t["group"] == "orders"}
        # Ejections are counted at once, requests and failures at the workers' next flush (1 s).
        done = found.get(b.address, {}).get("failures") and found.get(a.address, {}).get("requests", 0) >= 3
        return found if done else {}

    targets = wait_until(rows, "the targets on the dashboard")
    assert targets[a.address]["available"] is True
    assert targets[b.address]["available"] is False and targets[b.address]["ejections"] == 1
