"""REST `minimumCompressionSize` (issue 17): responses at or above the size go out gzip/deflate-encoded
when the client accepts it, already-encoded responses are left alone, streamed ones are encoded as they
flow; request bodies sent with Content-Encoding are decoded for mapping templates, within the limit.
A real gateway, a real upstream, raw HTTP clients (so that Accept-Encoding is exactly what the test
says and nothing is decoded behind its back)."""

from __future__ import annotations

import gzip
import http.client
import json
import random
import zlib

import pytest
from support.gateway import GatewayProcess
from support.upstream import Action, RecordingUpstream

from fastgw.codings import accepted_coding, decode
from fastgw.errors import GatewayError

BIG = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(200)]}).encode()  # ~5 KB
SMALL = b'{"ok": true}'
STREAMED = b"x" * 400_000  # over the 256 KiB read-whole limit: relayed as a stream
NOISE = random.Random(17).randbytes(3000)  # incompressible: its gzip form stays above the minimum size
ALREADY = gzip.compress(NOISE)

CONFIG = r"""
server: {interface: INTERFACE}
apis:
  - name: shop
    type: REST
    encodedSlashes: DECODE
    minimumCompressionSize: 1000
    stages:
      prod: {}
    routes:
      - route: ANY /{proxy+}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/{proxy}"}
      - route: POST /mapped
        integration:
          type: HTTP
          uri: "http://UPSTREAM/mapped"
          requestTemplates:
            application/json: '{"count": $input.path(''$.items'').size()}'
  - name: cached
    type: REST
    encodedSlashes: DECODE
    minimumCompressionSize: 1000
    stages:
      cache:
        cache: {enabled: true, capacity: 4MiB, ttlInSeconds: 300, debugHeader: true}
    routes:
      - route: GET /cached/{id}
        cache: {keyParameters: [method.request.path.id]}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/cached/{id}"}
  - name: plain
    type: REST
    encodedSlashes: DECODE
    stages:
      v1: {}
    routes:
      - route: GET /{proxy+}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/{proxy}"}
"""


def behaviour(request):
    path = request.target.split("?")[0]
    if path.endswith("/big") or "/cached/" in path:
        return Action(body=BIG, headers=[("etag", '"v1"')])
    if path.endswith("/small"):
        return Action(body=SMALL)
    if path.endswith("/encoded"):
        return Action(body=ALREADY, headers=[("content-encoding", "gzip")])
    if path.endswith("/streamed"):
        return Action(body=STREAMED, headers=[("content-type", "text/plain")])
    if path.endswith("/chunked"):
        body = b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in (b"a" * 700, b"b" * 700)) + b"0\r\n\r\n"
        return Action(body=body, headers=[("transfer-encoding", "chunked")])
    if path.endswith("/vary"):
        return Action(body=BIG, headers=[("vary", "Origin")])
    return Action()


@pytest.fixture(scope="module")
def upstream():
    server = RecordingUpstream(behaviour).start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def gateway(tmp_path_factory, upstream, request):
    config = CONFIG.replace("UPSTREAM", upstream.address).replace("INTERFACE", request.param)
    process = GatewayProcess(config, tmp_path_factory.mktemp("compression"))
    try:
        yield process.start()
    finally:
        process.stop()


def fetch(gateway, path, accept=None, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        sent = dict(headers or {})
        if accept is not None:
            sent["Accept-Encoding"] = accept
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in sent.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_a_large_response_is_gzip_encoded_when_the_client_accepts_it(gateway):
    status, headers, body = fetch(gateway, "/prod/big", "gzip, deflate, br")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert headers["etag"] == 'W/"v1"'  # the bytes differ from the identity response's
    assert gzip.decompress(body) == BIG and len(body) < len(BIG) // 2
    assert int(headers["content-length"]) == len(body)


def test_the_cache_keeps_the_identity_body_and_encodes_each_hit(gateway):
    answers = [fetch(gateway, "/cache/cached/1", accept) for accept in ("gzip", "identity", "deflate", "gzip")]
    assert [h.get("x-cache") for _, h, _ in answers] == ["Miss", "Hit", "Hit", "Hit"]
    assert [h.get("content-encoding") for _, h, _ in answers] == ["gzip", None, "deflate", "gzip"]
    assert gzip.decompress(answers[0][2]) == answers[1][2] == zlib.decompress(answers[2][2]) == BIG


def test_deflate_is_the_zlib_format(gateway):
    status, headers, body = fetch(gateway, "/prod/big", "deflate")
    assert status == 200 and headers["content-encoding"] == "deflate"
    assert zlib.decompress(body) == BIG


@pytest.mark.parametrize("accept", [None, "", "identity", "br", "br;q=1, gzip;q=0.5", "gzip;q=0", "*;q=0"])
def test_no_compression_unless_the_highest_priority_coding_is_supported(gateway, accept):
    status, headers, body = fetch(gateway, "/prod/big", accept)
    assert status == 200
    assert "content-encoding" not in headers
    assert body == BIG
    assert headers["vary"] == "Accept-Encoding"  # the answer depends on the header all the same


@pytest.mark.parametrize("accept, coding", [("gzip;q=0.2, deflate;q=0.9", "deflate"), ("*", "gzip"),
                                            ("br;q=0.5, gzip;q=0.5, identity;q=0.1", "gzip"),
                                            ("x-gzip", "gzip")])
def test_q_values_choose_the_coding(gateway, accept, coding):
    _, headers, _ = fetch(gateway, "/prod/big", accept)
    assert headers.get("content-encoding") == coding


def test_below_the_minimum_size_nothing_is_encoded(gateway):
    status, headers, body = fetch(gateway, "/prod/small", "gzip")
    assert status == 200 and "content-encoding" not in headers and body == SMALL
    assert headers["vary"] == "Accept-Encoding"


def test_an_api_without_the_setting_is_never_encoded(gateway):
    _, headers, body = fetch(gateway, "/v1/big", "gzip")
    assert "content-encoding" not in headers and "vary" not in headers and body == BIG


def test_an_already_encoded_upstream_response_is_not_encoded_again(gateway):
    _, headers, body = fetch(gateway, "/prod/encoded", "gzip")
    assert headers["content-encoding"] == "gzip"
    assert len(ALREADY) > 1000 and body == ALREADY  # as the upstream sent it


def test_an_existing_vary_is_extended(gateway):
    _, headers, body = fetch(gateway, "/prod/vary", "gzip")
    assert headers["content-encoding"] == "gzip" and headers["vary"] == "Origin, Accept-Encoding"


def test_a_head_request_is_not_encoded(gateway):
    status, headers, body = fetch(gateway, "/prod/big", "gzip", method="HEAD")
    assert status == 200 and "content-encoding" not in headers and body == b""


@pytest.mark.parametrize("path, expected", [("/prod/streamed", STREAMED), ("/prod/chunked", b"a" * 700 + b"b" * 700)])
def test_streamed_responses_are_encoded_as_they_flow(gateway, path, expected):
    status, headers, body = fetch(gateway, path, "gzip")
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    if len(expected) > 256 * 1024:  # streamed (smaller ones are read whole): the encoded length is unknown
        assert "content-length" not in headers and headers.get("transfer-encoding") == "chunked"
    assert gzip.decompress(body) == expected


def test_gateway_error_responses_follow_the_same_rule(gateway):
    status, headers, _ = fetch(gateway, "/nope/x", "gzip")  # no such stage: a gateway response, small
    assert status in (403, 404) and "content-encoding" not in headers


# -- request bodies ----------------------------------------------------------------------------------
def test_a_gzip_request_body_is_decoded_for_the_mapping_template(gateway, upstream):
    payload = json.dumps({"items": [1, 2, 3]}).encode()
    status, _, _ = fetch(gateway, "/prod/mapped", method="POST", body=gzip.compress(payload),
                         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 200
    sent = [r for r in upstream.requests if r.target.startswith("/mapped")][-1]
    assert json.loads(sent.body) == {"count": 3}
    assert sent.header("content-encoding") is None


def test_a_deflate_request_body_is_decoded_too(gateway, upstream):
    payload = json.dumps({"items": [1]}).encode()
    status, _, _ = fetch(gateway, "/prod/mapped", method="POST", body=zlib.compress(payload),
                         headers={"Content-Type": "application/json", "Content-Encoding": "deflate"})
    assert status == 200
    assert json.loads(upstream.requests[-1].body) == {"count": 1}


def test_a_zip_bomb_is_refused_after_the_limit(gateway, upstream):
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # 8 MiB of zeros in ~8 KB
    assert len(bomb) < 64 * 1024
    before = len(upstream.requests)
    status, headers, body = fetch(gateway, "/prod/mapped", method="POST", body=bomb,
                                  headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 413
    assert len(upstream.requests) == before


@pytest.mark.parametrize("coding, data, status", [("gzip", b"not gzip at all", 400), ("br", b"\x0b\x02\x80", 415),
                                                  ("gzip", gzip.compress(b'{"items": []}')[:-12], 400)])
def test_bad_or_unknown_request_codings_are_refused(gateway, upstream, coding, data, status):
    before = len(upstream.requests)
    got, _, body = fetch(gateway, "/prod/mapped", method="POST", body=data,
                         headers={"Content-Type": "application/json", "Content-Encoding": coding})
    assert got == status, body
    assert b"message" in body
    assert len(upstream.requests) == before


def test_a_proxied_request_body_is_passed_through_encoded(gateway, upstream):
    data = gzip.compress(b"hello")
    status, _, _ = fetch(gateway, "/prod/raw", method="POST", body=data, headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert upstream.requests[-1].body == data and upstream.requests[-1].header("content-encoding") == "gzip"


# -- the kernels of it, against the RFC's rules ------------------------------------------------------
def test_accept_encoding_parsing():
    assert accepted_coding(None) is None
    assert accepted_coding("gzip") == "gzip"
    assert accepted_coding("deflate, gzip") == "gzip"  # equal weights: gzip first
    assert accepted_coding("gzip;q=0.5, deflate;q=0.6") == "deflate"
    assert accepted_coding("gzip; q=1.5") is None  # an invalid q-value counts as 0
    assert accepted_coding("identity, *;q=0") is None
    assert accepted_coding("*, gzip;q=0") is None


def test_decode_is_bounded():
    assert decode(gzip.compress(b"a" * 100), "gzip", 100) == b"a" * 100
    with pytest.raises(GatewayError) as caught:
        decode(gzip.compress(b"a" * 101), "gzip", 100)
    assert caught.value.kind == "REQUEST_TOO_LARGE"
    assert decode(b"plain", "identity", 10) == b"plain"


def test_a_zip_bomb_never_inflates_past_the_limit_in_memory():
    import tracemalloc

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KB
    tracemalloc.start()
    try:
        with pytest.raises(GatewayError) as caught:
            decode(bomb, "gzip", 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.kind == "REQUEST_TOO_LARGE"
    assert peak < 4 * 1024 * 1024, peak
