"""The plain lane (fastgw/lane.py, issue 18) against the general path (fastgw/pipeline.py `Gateway.handle`).

Two gateways run the same config against two identical recording upstreams: one as users run it, one with
`FASTGW_PLAIN_LANE=off` (every request through `Gateway.handle`). The same requests go to both, one at a time,
and everything observable must be the same: the client's status, headers and body; the request the
upstream read; the access log line; the Prometheus counters. The requests cover what the lane serves (plain
routes with parameters, queries, encoded characters, HEAD, OPTIONS, a usage plan's key and throttle, an X-Ray
traced stage, an API mapping's domain) and what it must hand to `handle` unchanged (bodies, refused heads,
absolute-form targets, routes with a cache or an authorizer, misses), and the upstream failing (404 relayed,
a streamed 600 KiB body, a chunked body, a timeout, a reset).
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from support.gateway import GatewayProcess
from support.upstream import Action, Recorded, RecordingUpstream
from support.waiting import scrape, wait_for

from fastgw import lane as py_lane
from fastgw.pipeline import Gateway, lane
from fastgw.plan import ApiPlan, RoutePlan, StagePlan
from fastgw.runtime import compile_file

KEY = "plain-lane-key-0123456789abcdef"
BIG = b"b" * (600 * 1024)  # past the 256 KiB read whole: relayed as a stream

CONFIG = """\
server:
  workers: 1
  accessLog: true
  trustedHops: 0
  tracing: {{sampleRate: 0}}  # a trace without the caller's decision is never sampled: both sides decide alike
apis:
  - name: shop
    type: REST
    stages:
      prod: {{}}
      traced: {{tracingEnabled: true}}
      cached: {{cache: {{enabled: true, capacity: 1MiB, ttlInSeconds: 60}}}}
    routes:
      - route: GET /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}?fixed=1"}}
      - route: ANY /any/{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{p}}", timeoutInMillis: 500}}
      - route: GET /keyed
        apiKeyRequired: true
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/keyed"}}
      - route: GET /grouped/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://backends/items/{{id}}"}}
upstreamGroups:
  backends: {{targets: ["{upstream}"]}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod, throttle: {{"GET /keyed": {{rateLimit: 1, burstLimit: 2}}}}}}]
apiKeys:
  - {{name: alice, value: "{key}", usagePlans: [basic]}}
apiMappings:
  - {{domainName: api.example.com, basePath: v1, api: shop, stage: prod}}
"""


def behaviour(request: Recorded) -> Action:
    target = request.target
    if target.startswith("/status/404"):
        return Action(status=404, headers=[("x-from", "upstream")], body=b'{"missing": true}')
    if target.startswith("/big"):
        return Action(headers=[("content-type", "application/octet-stream")], body=BIG)
    if target.startswith("/chunked"):
        return Action(raw=b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n"
                          b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    if target.startswith("/slow"):
        return Action(delay=2.0)
    if target.startswith("/reset"):
        return Action(reset=True)
    if target.startswith("/close"):
        return Action(close=True)
    return Action()  # the request, echoed as JSON


# (method, target, extra headers, body); every request also carries `Host: gw.test` unless it sets its own
REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/prod/items/42", {}, b""),
    ("GET", "/prod/items/42?a=1&b=%20x&a=2", {}, b""),
    ("HEAD", "/prod/items/7", {}, b""),
    ("GET", "/prod/items/caf%C3%A9%20x", {}, b""),
    ("GET", "/prod/items/a%2Fb", {}, b""),
    ("GET", "/prod/any/a/b/c?x", {"user-agent": "plain-lane", "x-forwarded-for": "1.2.3.4"}, b""),
    ("DELETE", "/prod/any/x", {}, b""),
    ("OPTIONS", "/prod/any/x", {}, b""),
    ("POST", "/prod/any/x", {"content-type": "text/plain"}, b"a body"),
    ("POST", "/prod/any/x", {"content-length": "0"}, b""),
    ("PUT", "/prod/any/x", {"transfer-encoding": "chunked"}, b"4\r\nbody\r\n0\r\n\r\n"),
    ("GET", "/prod/any/status/404", {}, b""),
    ("GET", "/prod/any/big", {}, b""),
    ("GET", "/prod/any/chunked", {}, b""),
    ("GET", "/prod/any/close", {}, b""),
    ("GET", "/prod/any/slow", {}, b""),
    ("GET", "/prod/any/reset", {}, b""),
    ("GET", "/prod/grouped/3", {}, b""),  # an upstream group: its connection goes back to its target's pool
    ("GET", "/prod/grouped/3", {}, b""),
    ("GET", "/prod/nothing", {}, b""),
    ("POST", "/prod/items/1", {}, b""),
    ("GET", "/nostage/items/1", {}, b""),
    ("GET", "/prod/keyed", {}, b""),
    ("GET", "/prod/keyed", {"x-api-key": "wrong"}, b""),
    ("GET", "/prod/keyed", {"x-api-key": KEY}, b""),
    ("GET", "/prod/keyed", {"x-api-key": KEY}, b""),
    ("GET", "/prod/keyed", {"x-api-key": KEY}, b""),  # past the burst of 2: 429
    ("GET", "/cached/items/1", {}, b""),
    ("GET", "/cached/items/1", {}, b""),
    ("GET", "/traced/items/9", {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, b""),
    ("GET", "/traced/items/9", {}, b""),
    ("GET", "/v1/items/5", {"host": "api.example.com"}, b""),
    ("GET", "/v1/items/5", {}, b""),
    ("GET", "/prod/items/42", {"x-big": "v" * 20000}, b""),
    ("GET", "/prod/items/../items/42", {}, b""),
    ("GET", "/prod/items/42", {"connection": "close"}, b""),
]

# raw requests (what httpx cannot send): a missing Host, an absolute-form target, HTTP/1.0
# (each ends its connection with its response: the client never half-closes, which the server may take for
# the client leaving before the answer)
RAW: list[bytes] = [
    b"GET /prod/items/1 HTTP/1.1\r\nconnection: close\r\n\r\n",
    b"GET http://gw.test/prod/items/2 HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n",
    b"GET /prod/items/3 HTTP/1.0\r\nhost: gw.test\r\n\r\n",
    b"GET /prod/items/4 HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\ncontent-length: 3\r\n\r\nabc",
]

# what differs between two runs of the same request, whichever path served it
VOLATILE_HEADERS = {"date", "server"}
ID_HEADER = "x-amzn-requestid"  # present on both sides, with a different value per request
TRACE_IDS = re.compile(r"(Root=|Parent=|00-)[0-9a-f-]{16,}")


UPSTREAM = ""  # the address of the side's upstream, shown as <upstream> (the two run on different ports)


def _normal(text: str) -> str:
    return TRACE_IDS.sub(r"\1<id>", text).replace(UPSTREAM, "<upstream>")


def _normal_body(body: bytes) -> str:
    return _normal(body.decode("latin-1"))


def _upstream_request(request: Recorded) -> tuple[Any, ...]:
    return (request.method, request.target, [(k.lower(), _normal(v)) for k, v in request.headers], request.body)


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    lines = [line if not line.lower().startswith(ID_HEADER.encode()) else b"x-amzn-requestid: <id>"
             for line in head.split(b"\r\n") if line.split(b":", 1)[0].lower().decode() not in VOLATILE_HEADERS]
    return b"\r\n".join(lines) + b"\r\n\r\n" + _normal_body(body).encode("latin-1")


def _log_lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    lines = []
    for line in gateway.log_path.read_bytes().splitlines():
        if line.startswith(b"{"):
            record = orjson.loads(line)
            for name in ("requestId", "requestTime", "requestTimeEpoch", "responseLatency"):
                record.pop(name, None)
            # whether the integration ran must agree; how long it took cannot
            record["integrationLatency"] = record.get("integrationLatency") is not None
            lines.append(record)
    return lines


def _counters(gateway: GatewayProcess) -> dict[str, float]:
    found = {}
    for line in scrape(gateway.admin).splitlines():
        if line.startswith(("fastgw_requests_total{", "fastgw_upstream_errors_total{")):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    directory = tmp_path_factory.mktemp("plain-lane")
    upstreams = [RecordingUpstream(behaviour).start(), RecordingUpstream(behaviour).start()]
    gateways = []
    try:
        for upstream, lane in zip(upstreams, ("on", "off"), strict=True):
            own = directory / lane  # each gateway its own state directory (usage counters)
            own.mkdir()
            config = CONFIG.format(upstream=upstream.address, key=KEY)
            gateways.append(GatewayProcess(config, own, env={"FASTGW_PLAIN_LANE": lane}).start())
        yield SimpleNamespace(gateways=gateways, upstreams=upstreams, directory=directory)
    finally:
        for gateway in gateways:
            gateway.stop()
        for upstream in upstreams:
            upstream.stop()


def test_the_plain_lane_and_the_general_path_answer_alike(pair: SimpleNamespace) -> None:
    global UPSTREAM
    seen: list[list[Any]] = [[], []]
    for side, (gateway, upstream) in enumerate(zip(pair.gateways, pair.upstreams, strict=True)):
        UPSTREAM = upstream.address
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            for method, target, headers, body in REQUESTS:
                before = len(upstream.requests)
                response = client.request(method, target, headers={"host": "gw.test", **headers}, content=body)
                answer = (response.status_code,
                          sorted((k, "<id>" if k == ID_HEADER else _normal(v))
                                 for k, v in response.headers.items() if k not in VOLATILE_HEADERS),
                          _normal_body(response.content))
                wait_for(lambda u=upstream, n=before: len(u.requests) >= n, timeout=5)
                sent = [_upstream_request(r) for r in upstream.requests[before:]]
                seen[side].append((method, target, answer, sent))
        for data in RAW:
            before = len(upstream.requests)
            seen[side].append((data[:40], _raw_exchange(gateway.port, data),
                               [_upstream_request(r) for r in upstream.requests[before:]]))
    for on, off in zip(seen[0], seen[1], strict=True):
        assert on == off
    # the requests went where they should: a sample of what the general path answered
    statuses = {(entry[0], entry[1]): entry[2][0] for entry in seen[1] if len(entry) == 4}
    assert statuses[("GET", "/prod/items/42")] == 200
    assert statuses[("GET", "/prod/any/slow")] == 504
    assert statuses[("GET", "/prod/any/reset")] == 502
    assert statuses[("GET", "/v1/items/5")] == 404  # another host: the mapping's base path is no stage

    total = len(REQUESTS) + len(RAW)
    wait_for(lambda: all(len(_log_lines(g)) >= total for g in pair.gateways), timeout=10, what="access log lines")
    on_log, off_log = (_log_lines(g) for g in pair.gateways)
    assert on_log == off_log

    def counters_agree() -> bool:
        on, off = (_counters(g) for g in pair.gateways)
        return on == off and sum(v for k, v in on.items() if k.startswith("fastgw_requests_total")) >= total - 2

    wait_for(counters_agree, timeout=10, what="the same Prometheus counters")


@pytest.mark.parametrize(("method", "path", "plain"), [
    ("GET", "/prod/items/42", True),
    ("HEAD", "/prod/any/x", True),
    ("HEAD", "/prod/items/42", False),  # a REST API's GET route is not HEAD's: handle answers
    ("DELETE", "/prod/any/x/y", True),
    ("GET", "/prod/keyed", True),  # a usage plan: the lane runs its check
    ("GET", "/prod/grouped/1", True),  # an upstream group
    ("GET", "/traced/items/1", True),  # X-Ray: the lane starts and finishes the trace
    ("GET", "/cached/items/1", False),  # a stage cache: handle
    ("POST", "/prod/items/1", False),  # no such route: handle answers the 403/405
    ("GET", "/v1/items/5", False),  # an API mapping's base path: the stage depends on the host
    ("GET", "/nostage/items/1", False),
])
def test_which_requests_take_the_plain_lane(tmp_path: Path, method: str, path: str, plain: bool) -> None:
    """The lane must actually be taken where the differential test above expects it (else that test
    compares the general path with itself)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(upstream="127.0.0.1:9", key=KEY))
    gateway = Gateway(compile_file(str(config), {}), None)
    scope = SimpleNamespace(method=method, path=path, authority=None)
    found = lane.plain_route(gateway, scope)
    assert (found.__class__ is lane.PlainRoute) is plain
    assert lane.plain_route(gateway, scope) is found  # remembered
    assert py_lane.plain_route(gateway, scope) is found  # the lane as Python (FASTGW_NO_EXTENSIONS) finds the same
    absolute = SimpleNamespace(method=method, path=path, authority="gw.test")
    assert lane.plain_route(gateway, absolute) is None  # an absolute-form target (or HTTP/2): handle
    assert py_lane.plain_route(gateway, absolute) is None


def test_the_switch_turns_the_lane_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTGW_PLAIN_LANE", "off")
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(upstream="127.0.0.1:9", key=KEY))
    gateway = Gateway(compile_file(str(config), {}), None)
    assert lane.plain_route(gateway, SimpleNamespace(method="GET", path="/prod/items/42", authority=None)) is None


# Every field of the plans the pipeline reads, and what the plain lane does with it. A new field (a new
# policy, a new stage setting) fails here until it is decided on: handled by the lane, or a reason for
# `is_plain` to send the route to `handle`. The lane must never serve open what it does not know.
LANE_KNOWS = {
    RoutePlan: {"api", "stage", "key", "method", "resource_path", "model",  # names and labels
                "integration", "served", "usage",  # run by the lane
                "cache", "validator", "authorizer"},  # `is_plain`: handle
    StagePlan: {"api", "name", "variables", "router", "routes", "deployment", "is_canary", "websocket",
                "tracing",  # run by the lane
                "canary", "canary_percent", "access_format"},  # `is_plain`: handle
    ApiPlan: {"name", "type", "aws_compat", "encoded_slashes", "responses",
              "cors", "compression"},  # `is_plain`: handle
}


@pytest.mark.parametrize("plan_class", list(LANE_KNOWS), ids=lambda c: c.__name__)
def test_the_plain_lane_knows_every_field_of_the_plans(plan_class: type) -> None:
    assert {f.name for f in dataclasses.fields(plan_class)} == LANE_KNOWS[plan_class]


RELOADED = """\
server:
  workers: 1
  trustedHops: {hops}
  limits: {{maxUriBytes: {uri}}}
apis:
  - name: shop
    type: REST
    stages: {{prod: {{}}}}
    routes:
      - route: GET /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}"}}
      - route: GET /keyed
        apiKeyRequired: true
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/keyed"}}
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
apiKeys:
  - {{name: alice, value: "{key}", usagePlans: [basic], enabled: {enabled}}}
"""


def test_a_reload_reaches_the_plain_lane(tmp_path: Path) -> None:
    """A PlainRoute keeps the worker's settings the lane reads (the request limits, the trusted hops, the usage
    stage and its keys); after a live reload the lane must serve with the new ones, not the remembered."""
    upstream = RecordingUpstream(behaviour).start()
    before = RELOADED.format(hops=0, uri=8192, upstream=upstream.address, key=KEY, enabled="true")
    gateway = GatewayProcess(before, tmp_path).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            def forwarded_for() -> str:
                count = len(upstream.requests)
                assert client.get("/prod/items/1", headers={"x-forwarded-for": "203.0.113.7"}).status_code == 200
                wait_for(lambda: len(upstream.requests) > count, timeout=5)
                return upstream.requests[-1].header("x-forwarded-for")

            long_path = "/prod/items/" + "x" * 400
            keyed = {"x-api-key": KEY}
            for _ in range(2):  # the second of each is served from the lane's memory
                assert forwarded_for() == "127.0.0.1"
                assert client.get(long_path).status_code == 200
                assert client.get("/prod/keyed", headers=keyed).status_code == 200
            after = RELOADED.format(hops=1, uri=300, upstream=upstream.address, key=KEY, enabled="false")
            gateway.config_path.write_text(after)
            assert httpx.post(f"{gateway.admin}/reload", timeout=30).status_code == 202
            wait_for(lambda: forwarded_for() == "203.0.113.7, 127.0.0.1", timeout=10, what="the new trustedHops")
            assert client.get(long_path).status_code == 414
            assert client.get("/prod/keyed", headers=keyed).status_code == 403
    finally:
        gateway.stop()
        upstream.stop()
