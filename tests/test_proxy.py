"""End to end through `fastgw serve` on the README's example config (issue 2 acceptance)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.gateway import GatewayProcess
from support.upstream import Action, RecordingUpstream
from support.waiting import metric, wait_for, wait_value

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml").read_text()


@pytest.fixture
def example(start_gateway, upstream):
    return start_gateway(EXAMPLE, env={"BACKEND": upstream.address}), upstream


def test_get_reaches_upstream_with_forwarded_headers(example):
    gateway, upstream = example
    response = httpx.get(f"{gateway.url}/prod/items/42", headers={"X-Forwarded-For": "6.6.6.6"})
    assert response.status_code == 200
    assert response.headers["x-amzn-requestid"]
    seen = upstream.requests[-1]
    assert (seen.method, seen.target) == ("GET", "/items/42")
    # The client's own X-Forwarded-For is not trusted by default: replaced by the real peer.
    assert seen.header("x-forwarded-for") == "127.0.0.1"
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-forwarded-host") == f"127.0.0.1:{gateway.port}"
    assert seen.header("host") == upstream.address


def test_greedy_any_route_keeps_query(example):
    gateway, upstream = example
    response = httpx.put(f"{gateway.url}/prod/files/a/b/c?x=1", content=b"payload")
    assert response.status_code == 200
    seen = upstream.requests[-1]
    assert (seen.method, seen.target, seen.body) == ("PUT", "/static/a/b/c?x=1", b"payload")
    assert seen.header("content-length") == "7"


def test_unknown_path_is_404_json(example):
    gateway, upstream = example
    response = httpx.get(f"{gateway.url}/prod/nope")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-amzn-requestid"]
    assert not upstream.requests


def test_wrong_method_is_405_with_allow(example):
    gateway, upstream = example
    response = httpx.delete(f"{gateway.url}/prod/items/42")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json() == {"message": "Method Not Allowed"}
    assert not upstream.requests


@pytest.mark.reliability("F-01")
def test_upstream_down_is_fast_502_with_gateway_response_header(start_gateway):
    stopped = RecordingUpstream().start()
    try:
        gateway = start_gateway(EXAMPLE, env={"BACKEND": stopped.address})
        assert httpx.get(f"{gateway.url}/prod/items/1").status_code == 200  # a pooled connection exists
    finally:
        stopped.stop()
    # No pause: whether or not the gateway has seen its pooled connection close yet, the answer is a
    # fast 502 (a dead pooled connection is retried once on a new one, which is refused).
    started = time.perf_counter()
    response = httpx.get(f"{gateway.url}/prod/items/1")
    elapsed = time.perf_counter() - started
    assert response.status_code == 502
    assert response.json() == {"message": "Bad Gateway"}
    assert response.headers["x-served-by"] == "fastgw"
    assert elapsed < 2.0  # a bound, not a speed check: no wait for the 5 s connect timeout


@pytest.mark.reliability("F-03")
def test_integration_timeout_is_504_after_timeout_in_millis(start_gateway):
    hanging = RecordingUpstream(lambda request: Action(hang=True)).start()
    try:
        gateway = start_gateway(EXAMPLE, env={"BACKEND": hanging.address})
        started = time.perf_counter()
        response = httpx.post(f"{gateway.url}/prod/slow", content=b"{}", timeout=10)
        elapsed = time.perf_counter() - started
    finally:
        hanging.stop()
    assert response.status_code == 504
    assert response.json() == {"message": "Endpoint request timed out"}
    assert response.headers["x-served-by"] == "fastgw"
    assert 0.45 <= elapsed < 3.0  # not before the 500 ms timeout; the upper bound only proves it ended


@pytest.mark.reliability("RL-07")
def test_encoded_slash_decoded_by_default_and_spaces_forwarded_encoded(example):
    """The default (nginx's): %2F is a separator, and the path is normalised after decoding, so an
    encoded dot-dot cannot leave the route the gateway matched. interface: auto serves it over RSGI."""
    gateway, upstream = example
    response = httpx.get(f"{gateway.url}/prod/files/a%2Fb")
    assert response.status_code == 200
    assert upstream.requests[-1].target == "/static/a/b"
    response = httpx.get(f"{gateway.url}/prod/files/a%2F..%2F..%2Fitems%2F7")
    assert response.status_code == 200
    assert upstream.requests[-1].target == "/items/7"  # what GET /prod/items/7 reaches, nothing else
    response = httpx.get(f"{gateway.url}/prod/files/x%20y")
    assert response.status_code == 200
    assert upstream.requests[-1].target == "/static/x%20y"
    assert "interface rsgi" in gateway.stderr()


def test_encoded_slash_rejected_when_configured(start_gateway, upstream):
    config = EXAMPLE.replace("    type: REST\n", "    type: REST\n    encodedSlashes: REJECT\n")
    gateway = start_gateway(config, env={"BACKEND": upstream.address})
    response = httpx.get(f"{gateway.url}/prod/files/a%2Fb")
    assert response.status_code == 400
    assert response.json() == {"message": "Encoded slash in the request path"}
    assert not upstream.requests
    assert "interface asgi" in gateway.stderr()


def test_encoded_slash_passed_when_configured(start_gateway, upstream):
    config = EXAMPLE.replace("    type: REST\n", "    type: REST\n    encodedSlashes: PASS\n")
    gateway = start_gateway(config, env={"BACKEND": upstream.address})
    response = httpx.get(f"{gateway.url}/prod/files/a%2Fb")
    assert response.status_code == 200
    assert upstream.requests[-1].target == "/static/a%2Fb"


@pytest.mark.reliability("RL-07")
def test_path_is_normalised_before_routing(example):
    gateway, upstream = example
    # Dot segments and repeated slashes are resolved before the stage and route are chosen.
    response = httpx.get(f"{gateway.url}/prod/files/../items//42")
    assert response.status_code == 200
    assert upstream.requests[-1].target == "/items/42"
    assert httpx.get(f"{gateway.url}/prod/%2e%2e/prod/items/7").status_code == 200
    assert upstream.requests[-1].target == "/items/7"
    assert httpx.get(f"{gateway.url}/prod/items/1%00").status_code == 400


def test_metrics_count_every_request_across_two_workers(start_gateway, upstream):
    gateway = start_gateway(EXAMPLE, workers=2, env={"BACKEND": upstream.address})
    route = "GET /items/{id}"
    baseline = _requests_total(gateway, route)  # 0 on a fresh gateway; read, not assumed
    n = 120
    errors: list[Exception] = []

    def client(count: int) -> None:
        try:
            with httpx.Client() as http:  # one connection per thread: spread over the workers
                for i in range(count):
                    assert http.get(f"{gateway.url}/prod/items/{i}").status_code == 200
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n // 6,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # Workers publish their tallies about once a second: the count must reach n exactly (an
    # over-count never equals n and fails at the deadline).
    wait_value(lambda: _requests_total(gateway, route) - baseline, n, what="requests counted")


def _requests_total(gateway, route: str) -> int:
    return int(metric(gateway.admin, "fastgw_requests_total", route=route))


def test_upstream_connections_are_kept_alive_and_reused(start_gateway, upstream):
    """The keep-alive pool: sequential requests through one worker use one upstream connection;
    concurrent ones use no more connections than there were requests in flight at once."""
    gateway = start_gateway(EXAMPLE, env={"BACKEND": upstream.address})
    with httpx.Client() as http:
        for i in range(30):
            assert http.get(f"{gateway.url}/prod/items/{i}").status_code == 200
    assert len(upstream.requests) == 30
    assert upstream.connections == 1, f"30 sequential requests opened {upstream.connections} upstream connections"
    # Four clients at once, 20 requests each: the pool grows to at most 4 and they are reused.
    errors: list[Exception] = []

    def client() -> None:
        try:
            with httpx.Client() as http:
                for i in range(20):
                    assert http.get(f"{gateway.url}/prod/items/{i}").status_code == 200
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(upstream.requests) == 110
    assert upstream.connections <= 4, f"110 requests, at most 4 at a time, opened {upstream.connections} connections"


@pytest.mark.reliability("F-21")
def test_sigterm_lets_in_flight_request_finish(start_gateway):
    slow = RecordingUpstream(lambda request: Action(delay=2.0, body=b"done")).start()
    try:
        gateway = start_gateway(EXAMPLE, env={"BACKEND": slow.address})
        result: dict[str, object] = {}

        def call() -> None:
            result["response"] = httpx.get(f"{gateway.url}/prod/items/1", timeout=10)

        thread = threading.Thread(target=call)
        thread.start()
        wait_for(lambda: len(slow.requests) == 1, what="the request to reach the upstream")  # in flight now
        gateway.signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{gateway.admin}/readyz").status_code == 503, what="/readyz to fail")
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(f"{gateway.url}/prod/items/2", timeout=2)
        thread.join(10)
        assert gateway.proc.wait(30) == 0
    finally:
        slow.stop()
    response = result["response"]
    assert response.status_code == 200 and response.content == b"done"


def test_validate_reports_every_problem_with_its_location(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apis:\n"
        "  - name: a\n"
        "    stages: {prod: {}}\n"
        "    routes:\n"
        "      - route: GET /x\n"
        "        integration: {type: LAMBDA, uri: 'http://127.0.0.1:1/x'}\n"
        "      - route: GET /a/{x+}/b\n"
        "        integration: {type: HTTP_PROXY, uri: 'http://127.0.0.1:1/'}\n"
        "      - route: GET /items/{id}\n"
        "        integration: {type: HTTP_PROXY, uri: 'http://127.0.0.1:1/'}\n"
        "      - route: GET /items/{other}\n"
        "        integration: {type: HTTP_PROXY, uri: 'http://127.0.0.1:1/'}\n"
    )
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(bad)], capture_output=True, text=True)
    assert run.returncode != 0
    out = run.stderr
    assert "apis[0].routes[0].integration.type (line 6): unknown integration type 'LAMBDA'" in out
    assert "apis[0].routes[1].route (line 7):" in out and "greedy" in out
    assert "apis[0].routes[3].route (line 11): duplicate route" in out
    assert "Traceback" not in out


def test_validate_and_routes_on_the_example():
    example = str(Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml")
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", example], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "fastgw", "routes", example], capture_output=True, text=True)
    assert run.returncode == 0
    assert "ANY /files/{path+}" in run.stdout and "/prod" in run.stdout


@pytest.mark.reliability("UP-05")
@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_x_forwarded_for_is_the_peer_host_v4_v6_and_after_trusted_hops(tmp_path, upstream, interface):
    """X-Forwarded-For carries the client's host without its port, over both server interfaces,
    for an IPv6 client too; with trustedHops the client's own X-Forwarded-For comes first."""
    config = EXAMPLE.replace("adminPort: 9901}", "adminPort: 9901, trustedHops: 1}", 1)
    assert "trustedHops: 1" in config
    gateways = [GatewayProcess(config, tmp_path, args=("--interface", interface), env={"BACKEND": upstream.address},
                               name="v4"),
                GatewayProcess(config, tmp_path, args=("--interface", interface), env={"BACKEND": upstream.address},
                               name="v6", host="::1")]
    try:
        for gateway, peer in zip(gateways, ("127.0.0.1", "::1"), strict=True):
            gateway.start()
            assert httpx.get(f"{gateway.url}/prod/items/42", timeout=10).status_code == 200
            assert upstream.requests[-1].header("x-forwarded-for") == peer
            response = httpx.get(f"{gateway.url}/prod/items/42", headers={"X-Forwarded-For": "6.6.6.6"}, timeout=10)
            assert response.status_code == 200
            assert upstream.requests[-1].header("x-forwarded-for") == f"6.6.6.6, {peer}"
    finally:
        for gateway in gateways:
            gateway.stop()
