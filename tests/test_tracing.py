"""Tracing (issue 17): the X-Ray header and W3C Trace Context on the upstream request, $context.xrayTraceId,
and OpenTelemetry spans exported over OTLP/HTTP protobuf to a collector the test runs (decoded with
opentelemetry-proto, the reference message classes). A real gateway, upstream, Lambda authorizer."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from support.gateway import GatewayProcess

TESTS = Path(__file__).resolve().parent
XRAY = re.compile(r"^Root=(1-([0-9a-f]{8})-([0-9a-f]{24}));Parent=([0-9a-f]{16});Sampled=([01])$")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")
INCOMING_ROOT = "1-5759e988-bd862e3fe1be46a994272793"
INCOMING_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

CONFIG = """
server:
  tracing: {{otlpEndpoint: "http://127.0.0.1:{collector}/v1/traces", sampleRate: 1.0, flushIntervalMs: 100,
            serviceName: orders-gateway}}
functions:
  tokenauth: handlers.authorizers:token
apis:
  - name: shop
    type: REST
    authorizers:
      tok: {{type: token, authorizerUri: tokenauth, identitySource: method.request.header.Authorization,
            authorizerResultTtlInSeconds: 0}}
    stages:
      prod: {{tracingEnabled: true}}
      dev: {{}}
    routes:
      - route: GET /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}"}}
      - route: GET /secure
        authorizer: tok
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/secure"}}
      - route: GET /trace
        integration:
          type: MOCK
          requestTemplates: {{application/json: '{{"statusCode": 200}}'}}
          responses:
            default:
              statusCode: "200"
              responseTemplates: {{application/json: '{{"xray": "$context.xrayTraceId"}}'}}
"""

OFF = """
apis:
  - name: shop
    type: REST
    stages:
      prod: {{}}
    routes:
      - route: GET /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/items/{{id}}"}}
"""


class Collector:
    """An OTLP/HTTP trace receiver: every POST body decoded as an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.content_types.append(self.headers["content-type"])
                collector.requests.append(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list:
        return [span for request in self.requests for rs in request.resource_spans for ss in rs.scope_spans
                for span in ss.spans]

    def wait_for(self, predicate, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"the collector did not get the spans in {timeout} s: {self.spans()}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def collector():
    server = Collector()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory, collector):
    from support.upstream import RecordingUpstream

    upstream = RecordingUpstream().start()
    gateway = GatewayProcess(CONFIG.format(collector=collector.port, upstream=upstream.address),
                             tmp_path_factory.mktemp("tracing"), env={"PYTHONPATH": str(TESTS)})
    try:
        gateway.start()
        yield gateway, upstream
    finally:
        gateway.stop()
        upstream.stop()


def sent_upstream(upstream, marker: str):
    request = [r for r in upstream.requests if marker in r.target][-1]
    return request, [v for k, v in request.headers if k.lower() == "traceparent"], \
        [v for k, v in request.headers if k.lower() == "x-amzn-trace-id"]


def attributes(span) -> dict:
    return {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}


def test_a_new_trace_gets_an_xray_header_and_a_traceparent(traced):
    gateway, upstream = traced
    before = int(time.time())
    response = httpx.get(f"{gateway.url}/prod/items/new-1", timeout=10)
    assert response.status_code == 200
    _, traceparents, xrays = sent_upstream(upstream, "new-1")
    assert len(xrays) == 1 and len(traceparents) == 1
    root, seconds, rest, parent, sampled = XRAY.match(xrays[0]).groups()
    assert before - 5 <= int(seconds, 16) <= time.time() + 5  # the X-Ray epoch-seconds part
    assert sampled == "1"  # sampleRate 1.0
    trace_id, span_id, flags = TRACEPARENT.match(traceparents[0]).groups()
    assert trace_id == seconds + rest and span_id == parent and flags == "01"  # one trace, one gateway span
    assert "x-amzn-trace-id" not in response.headers


def test_an_incoming_xray_root_is_kept_with_the_gateway_as_parent(traced):
    gateway, upstream = traced
    incoming = f"Root={INCOMING_ROOT};Parent=53995c3f42cd8ad8;Sampled=1"
    httpx.get(f"{gateway.url}/prod/items/xray-2", headers={"X-Amzn-Trace-Id": incoming}, timeout=10)
    _, traceparents, xrays = sent_upstream(upstream, "xray-2")
    assert len(xrays) == 1, xrays  # replaced, not appended to the client's
    root, _, _, parent, sampled = XRAY.match(xrays[0]).groups()
    assert root == INCOMING_ROOT and parent != "53995c3f42cd8ad8" and sampled == "1"
    assert traceparents[0].startswith("00-5759e988bd862e3fe1be46a994272793-")


def test_an_incoming_traceparent_is_continued_and_tracestate_kept(traced):
    gateway, upstream = traced
    httpx.get(f"{gateway.url}/prod/items/w3c-3", timeout=10,
              headers={"traceparent": INCOMING_TP, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"})
    request, traceparents, xrays = sent_upstream(upstream, "w3c-3")
    assert len(traceparents) == 1
    trace_id, span_id, flags = TRACEPARENT.match(traceparents[0]).groups()
    assert trace_id == "0af7651916cd43dd8448eb211c80319c" and span_id != "b7ad6b7169203331" and flags == "01"
    assert [v for k, v in request.headers if k.lower() == "tracestate"] == ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]
    assert XRAY.match(xrays[0]).group(1) == "1-0af76519-16cd43dd8448eb211c80319c"  # the same trace, X-Ray's form


def test_an_unsampled_parent_is_followed(traced, collector):
    gateway, upstream = traced
    httpx.get(f"{gateway.url}/prod/items/unsampled-4", timeout=10,
              headers={"traceparent": "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"})
    _, traceparents, xrays = sent_upstream(upstream, "unsampled-4")
    assert traceparents[0].endswith("-00") and xrays[0].endswith(";Sampled=0")
    httpx.get(f"{gateway.url}/prod/items/after-4", timeout=10)  # a sampled one after it, as a fence
    spans = collector.wait_for(lambda s: any(attributes(x).get("url.path") == "/prod/items/after-4" for x in s))
    assert not any(span.trace_id.hex() == "1af7651916cd43dd8448eb211c80319c" for span in spans)


def test_invalid_trace_headers_start_a_new_trace(traced):
    gateway, upstream = traced
    httpx.get(f"{gateway.url}/prod/items/bad-5", timeout=10, headers={
        "traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "X-Amzn-Trace-Id": "Root=2-nothex;Sampled=1"})
    _, traceparents, xrays = sent_upstream(upstream, "bad-5")
    assert not traceparents[0].startswith("00-00000000000000000000000000000000")
    assert XRAY.match(xrays[0]) is not None


def test_context_xray_trace_id(traced):
    gateway, _ = traced
    incoming = f"Root={INCOMING_ROOT};Sampled=1"
    response = httpx.get(f"{gateway.url}/prod/trace", headers={"X-Amzn-Trace-Id": incoming}, timeout=10)
    assert response.json() == {"xray": INCOMING_ROOT}


def test_a_stage_without_tracing_enabled_sends_no_xray_header_but_is_exported(traced, collector):
    gateway, upstream = traced
    httpx.get(f"{gateway.url}/dev/items/dev-6", headers={"traceparent": INCOMING_TP}, timeout=10)
    _, traceparents, xrays = sent_upstream(upstream, "dev-6")
    assert xrays == [] and traceparents[0].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    spans = collector.wait_for(lambda s: any(attributes(x).get("url.path") == "/dev/items/dev-6" for x in s))
    span = next(x for x in spans if attributes(x).get("url.path") == "/dev/items/dev-6")
    assert attributes(span)["fastgw.stage"] == "dev"
    assert span.parent_span_id.hex() == "b7ad6b7169203331"


def test_spans_are_exported_with_children_for_the_authorizer_and_the_integration(traced, collector):
    gateway, upstream = traced
    response = httpx.get(f"{gateway.url}/prod/secure", timeout=10,
                         headers={"Authorization": "allow-me", "traceparent": INCOMING_TP})
    assert response.status_code == 200, response.text
    _, traceparents, _ = sent_upstream(upstream, "secure")
    own_span = TRACEPARENT.match(traceparents[0]).group(2)
    spans = collector.wait_for(lambda s: sum(x.span_id.hex() == own_span or x.parent_span_id.hex() == own_span
                                             for x in s) >= 3)
    server = next(x for x in spans if x.span_id.hex() == own_span)
    assert server.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert server.parent_span_id.hex() == "b7ad6b7169203331"
    assert server.kind == server.SPAN_KIND_SERVER and server.name == "GET /secure"
    assert attributes(server) | {"aws.request_id": None} == {
        "fastgw.api": "shop", "fastgw.stage": "prod", "fastgw.route_key": "GET /secure",
        "http.request.method": "GET", "url.path": "/prod/secure", "http.response.status_code": 200,
        "aws.request_id": None}
    children = {x.name: x for x in spans if x.parent_span_id.hex() == own_span}
    assert set(children) == {"authorizer", "integration"}
    for child in children.values():
        assert child.trace_id == server.trace_id
        assert server.start_time_unix_nano <= child.start_time_unix_nano <= child.end_time_unix_nano
        assert child.end_time_unix_nano <= server.end_time_unix_nano + 1_000_000
    assert children["authorizer"].end_time_unix_nano <= children["integration"].start_time_unix_nano + 1_000_000
    resource = collector.requests[-1].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes} == {"service.name": "orders-gateway"}
    assert set(collector.content_types) == {"application/x-protobuf"}


def test_errors_are_marked_and_every_request_is_one_span(traced, collector):
    gateway, _ = traced
    response = httpx.get(f"{gateway.url}/prod/secure", headers={"Authorization": "boom"}, timeout=10)
    assert response.status_code == 500
    request_id = response.headers["x-amzn-requestid"]
    spans = collector.wait_for(lambda s: any(attributes(x).get("aws.request_id") == request_id for x in s))
    matching = [x for x in spans if attributes(x).get("aws.request_id") == request_id]
    assert len(matching) == 1
    assert matching[0].status.code == matching[0].status.STATUS_CODE_ERROR


def test_tracing_off_passes_the_clients_headers_through(start_gateway, upstream):
    gateway = start_gateway(OFF.format(upstream=upstream.address))
    response = httpx.get(f"{gateway.url}/prod/items/off", timeout=10,
                         headers={"traceparent": INCOMING_TP, "X-Amzn-Trace-Id": f"Root={INCOMING_ROOT}"})
    assert "x-amzn-trace-id" not in response.headers
    request = upstream.requests[-1]
    assert request.header("traceparent") == INCOMING_TP
    assert request.header("x-amzn-trace-id") == f"Root={INCOMING_ROOT}"


def test_a_collector_that_is_down_costs_no_request(start_gateway, upstream):
    from support.gateway import free_port

    config = CONFIG.format(collector=free_port(), upstream=upstream.address)
    gateway = start_gateway(config, env={"PYTHONPATH": str(TESTS)})
    for i in range(20):
        assert httpx.get(f"{gateway.url}/prod/items/{i}", timeout=10).status_code == 200


def test_an_xray_parent_that_is_not_a_span_id_is_ignored(traced, collector):
    gateway, upstream = traced
    root = "1-5759e988-bd862e3fe1be46a994272799"
    response = httpx.get(f"{gateway.url}/prod/items/badparent-7", timeout=10,
                         headers={"X-Amzn-Trace-Id": f"Root={root};Parent=not-a-span!;Sampled=1"})
    assert response.status_code == 200
    spans = collector.wait_for(lambda s: any(x.trace_id.hex() == "5759e988bd862e3fe1be46a994272799" for x in s))
    span = next(x for x in spans if x.trace_id.hex() == "5759e988bd862e3fe1be46a994272799")
    assert span.parent_span_id == b""


def test_an_unsampled_request_of_an_export_only_stage_is_not_touched(traced, collector):
    gateway, upstream = traced
    unsampled = "00-2af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    httpx.get(f"{gateway.url}/dev/items/dev-unsampled-8", timeout=10,
              headers={"traceparent": unsampled, "tracestate": "congo=t61rcWkgMzE"})
    request, traceparents, xrays = sent_upstream(upstream, "dev-unsampled-8")
    assert traceparents == [unsampled] and xrays == []  # the client's, as it sent it
    assert request.header("tracestate") == "congo=t61rcWkgMzE"
