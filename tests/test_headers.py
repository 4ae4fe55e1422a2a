"""Headers as AWS handles them (issue 23), end to end: a real gateway started as users start it, a
recording upstream, Python Lambda handlers, and clients on raw sockets.

Per integration type (HTTP_PROXY, HTTP, FUNCTION_CUSTOM = AWS non-proxy Lambda, FUNCTION = AWS_PROXY
Lambda) a client sends a wide set of headers (hop-by-hop, reserved, conditional, forged gateway
fields, `Expect: 100-continue` and `Transfer-Encoding: chunked` on a GET) to routes that map,
override and rename them; what the backend received, what the Lambda event and `$input.params()`
hold and what the client got back are checked against AWS's rules (awsCompat: true) and a correct
HTTP proxy's (awsCompat: false). The rules themselves: fastgw/integrations/headers.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.rawclient import Response, parse_one
from support.upstream import Action

TESTS = Path(__file__).resolve().parent
DUMP_HEADERS = ('{#foreach($k in $input.params().header.keySet())"$k": '
                '"$util.escapeJavaScript($input.params().header.get($k))"#if($foreach.hasNext),#end#end}')
OVERRIDE = "#set($n = $input.path('$.name'))$context.responseOverride.header.put($n, $input.path('$.value'))ok"
MAPPED = """
            integration.request.header.x-principal: context.authorizer.principalId
            integration.request.header.x-tier: context.authorizer.tier
            integration.request.header.x-api-version: "'v2'"
            integration.request.header.x-renamed: method.request.header.x-keep
            integration.request.header.x-keep: "'overridden'"
            integration.request.header.x-stage: stageVariables.color
            integration.request.header.x-forged: method.request.header.x-fastgw-user
            integration.request.querystring.src: "'gw'\""""


def config(upstream: str, compat: bool) -> str:
    framing_mapping = """
                method.response.header.Server: integration.response.header.x-origin
                method.response.header.WWW-Authenticate: "'Basic realm=api'"
                method.response.header.Transfer-Encoding: "'gzip'"
                method.response.header.Connection: "'close'"
                method.response.header.Content-Length: "'1'\"""" if compat else ""
    fuzz_mapping = """
                method.response.header.Transfer-Encoding: integration.response.body.value
                method.response.header.Connection: integration.response.body.value
                method.response.header.Content-Length: integration.response.body.value""" if compat else ""
    return f"""
functions:
  echo: handlers.lambdas:echo
  headers: handlers.lambdas:header_result
  tokenauth: handlers.authorizers:token
apis:
  - name: hdr
    type: REST
    awsCompat: {'true' if compat else 'false'}
    authorizers:
      tok:
        type: token
        authorizerUri: tokenauth
        identitySource: method.request.header.Authorization
        authorizerResultTtlInSeconds: 0
    stages:
      prod: {{variables: {{color: blue}}}}
    routes:
      - route: GET /proxy/{{id}}
        authorizer: tok
        integration:
          type: HTTP_PROXY
          uri: "http://{upstream}/proxy/{{id}}"
          requestParameters:{MAPPED}
      - route: GET /plain/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/plain/{{id}}"}}
      - route: GET /http/{{id}}
        authorizer: tok
        integration:
          type: HTTP
          uri: "http://{upstream}/http/{{id}}"
          requestParameters:{MAPPED}
          requestTemplates: {{application/json: '{DUMP_HEADERS}'}}
          responses:
            default:
              statusCode: "200"
              responseParameters:
                method.response.header.x-up: integration.response.header.x-origin
                method.response.header.x-from-body: integration.response.body.note{framing_mapping}
      - route: GET /custom
        integration:
          type: FUNCTION_CUSTOM
          uri: echo
          requestTemplates: {{application/json: '{DUMP_HEADERS}'}}
          responses:
            default:
              statusCode: "200"
              responseTemplates:
                application/json: |
                  #set($context.responseOverride.header.X-Override = "set")
                  #set($context.responseOverride.header.Transfer-Encoding = "chunked")
                  #set($context.responseOverride.header.X-Split = "a$util.urlDecode('%0D%0A')X-Injected: 1")
                  $input.json('$')
      - route: GET /fn
        authorizer: tok
        integration:
          type: FUNCTION
          uri: echo
          requestParameters: {{integration.request.header.x-api-version: "'v2'"}}
      - route: ANY /fn-headers
        integration: {{type: FUNCTION, uri: headers}}
      - route: POST /proxy-fuzz
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/fuzz"}}
      - route: POST /http-fuzz
        integration:
          type: HTTP
          uri: "http://{upstream}/fuzz"
          responses:
            default:
              statusCode: "200"
              responseParameters:
                method.response.header.X-From-Body: integration.response.body.value{fuzz_mapping}
              responseTemplates:
                application/json: "{OVERRIDE}"
"""


# What the client sends: hop-by-hop, reserved, conditional, forged gateway fields, identity spoofs.
CLIENT_HEADERS = [
    ("Authorization", "allow-get"),  # the token authorizer's "allow": principal user-get, tier gold
    ("Connection", "keep-alive, X-Hop"),
    ("X-Hop", "hop"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Proxy-Authorization", "Basic cHJveHk="),
    ("Expect", "100-continue"),
    ("Transfer-Encoding", "chunked"),
    ("If-None-Match", '"etag-1"'),
    ("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
    ("Max-Forwards", "3"),
    ("Server", "client-server"),
    ("WWW-Authenticate", "Basic realm=client"),
    ("Via", "1.1 client-proxy"),
    ("X-Fastgw-User", "admin"),
    ("X-Fastgw-Cache-Token", "forged"),
    ("Forwarded", "for=1.2.3.4"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Real-IP", "1.1.1.1"),
    ("User-Agent", "headers-test"),
    ("Accept", "application/json"),
    ("X-Keep", "client-value"),
]


def request_bytes(path: str, headers: list[tuple[str, str]] = CLIENT_HEADERS, host: str = "api.test") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    body = b"0\r\n\r\n" if any(k.lower() == "transfer-encoding" for k, _ in headers) else b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+: ?(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*"
                        rb"[\x21-\x7e\x80-\xff])?)?")


class Client:
    """One keep-alive connection; every response is checked to be one well-formed HTTP/1.1 message."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""

    def _read_response(self, deadline: float) -> tuple[Response, bytes]:
        while True:
            response, used = parse_one(self.buffer)
            if response is not None and response.complete:
                raw = self.buffer[:used]
                self.buffer = self.buffer[used:]
                return response, raw
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete response: {self.buffer[:300]!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a complete response: {self.buffer[:300]!r}")
            self.buffer += chunk

    def send(self, data: bytes) -> Response:
        self.sock.sendall(data)
        deadline = time.monotonic() + self.timeout
        while True:
            response, raw = self._read_response(deadline)
            check_wire(raw)
            if not 100 <= response.status < 200:
                return response  # interim 1xx (100 Continue) skipped

    def closed_cleanly(self, wait: float = 2.0) -> bool:
        """True when the peer closes with nothing more to say (EOF, no stray bytes)."""
        self.sock.settimeout(wait)
        try:
            rest = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert not rest and not self.buffer, f"bytes after the response: {(self.buffer + rest)[:200]!r}"
        return True

    def close(self) -> None:
        self.sock.close()


def check_wire(raw: bytes) -> None:
    """A response head whose every field line is valid HTTP, with one unambiguous framing."""
    head, _, _ = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    names = []
    for line in lines[1:]:
        assert FIELD_LINE.fullmatch(line), f"invalid field line {line!r}"
        names.append(line.split(b":", 1)[0].lower())
    assert names.count(b"content-length") + names.count(b"transfer-encoding") <= 1, head
    assert b"connection" not in names or head.lower().count(b"\r\nconnection: close") == 1, head


def header(response: Response, name: str) -> str | None:
    return response.header(name)


def names(response: Response) -> set[str]:
    return {k.lower() for k, _ in response.headers}


@pytest.fixture(params=[True, False], ids=["awsCompat", "plain"])
def gateway(request, start_gateway, upstream, tmp_path):
    upstream.behaviour = lambda r: Action(200, [("x-origin", "backend-7"), ("content-type", "application/json"),
                                                ("WWW-Authenticate", "Bearer realm=up"), ("Via", "1.1 up"),
                                                ("User-Agent", "backend")],
                                          b'{"note": "from the body"}')
    started = start_gateway(config(upstream.address, request.param), env={
        "PYTHONPATH": str(TESTS), "FASTGW_TEST_AUTH_CALLS": str(tmp_path / "calls.log")})
    started.compat = request.param
    return started


def sent_header(recorded, name: str) -> str | None:
    return recorded.header(name)


def test_http_proxy_maps_renames_and_drops(gateway, upstream):
    compat = gateway.compat
    client = Client(gateway.port)
    response = client.send(request_bytes("/prod/proxy/7?q=1"))
    assert response.status == 200, response
    sent = upstream.requests[-1]
    # mappings: authorizer values, a static version, a renamed and an overridden client header,
    # a stage variable; the query string gets the mapped parameter after the client's
    assert sent_header(sent, "x-principal") == "user-get"
    assert sent_header(sent, "x-tier") == "gold"
    assert sent_header(sent, "x-api-version") == "v2"
    assert sent_header(sent, "x-renamed") == "client-value"
    assert sent_header(sent, "x-keep") == "overridden"
    assert sent_header(sent, "x-stage") == "blue"
    assert sent.target == "/proxy/7?q=1&src=gw"
    # what the gateway asserts is never the client's
    assert sent_header(sent, "x-forged") is None
    assert not [k for k, _ in sent.headers if k.lower().startswith("x-fastgw-")]
    assert sent_header(sent, "x-forwarded-for") == "127.0.0.1"  # the client's own X-Forwarded-For is not trusted
    for name in ("forwarded", "x-real-ip", "connection", "x-hop", "keep-alive", "te", "proxy-authorization",
                 "expect", "transfer-encoding"):
        assert sent_header(sent, name) is None, name
    assert sent_header(sent, "host") == upstream.address
    # conditional and ordinary headers pass
    assert sent_header(sent, "if-none-match") == '"etag-1"'
    assert sent_header(sent, "user-agent") == "headers-test"
    # what AWS drops before an HTTP backend (REST), passed by a plain proxy
    for name in ("content-md5", "max-forwards", "server", "www-authenticate", "via"):
        assert (sent_header(sent, name) is None) is compat, name
    # the response: AWS remaps the backend's WWW-Authenticate and User-Agent and drops its Via
    if compat:
        assert header(response, "x-amzn-remapped-www-authenticate") == "Bearer realm=up"
        assert header(response, "x-amzn-remapped-user-agent") == "backend"
        assert "www-authenticate" not in names(response) and "via" not in names(response)
    else:
        assert header(response, "www-authenticate") == "Bearer realm=up"
        assert header(response, "via") == "1.1 up"
    # the connection is still usable
    again = client.send(b"GET /prod/plain/8 HTTP/1.1\r\nHost: api.test\r\nX-Fastgw-User: admin\r\n\r\n")
    assert again.status == 200
    assert upstream.requests[-1].header("x-fastgw-user") is None  # the plain path too (the request scan)
    client.close()


def test_http_non_proxy_sends_only_mapped_headers(gateway, upstream):
    compat = gateway.compat
    client = Client(gateway.port)
    response = client.send(request_bytes("/prod/http/7"))
    assert response.status == 200, response
    sent = upstream.requests[-1]
    for name, value in (("x-principal", "user-get"), ("x-tier", "gold"), ("x-api-version", "v2"),
                        ("x-renamed", "client-value"), ("x-keep", "overridden"), ("x-stage", "blue")):
        assert sent_header(sent, name) == value, name
    assert sent.target == "/http/7?src=gw"
    # a non-proxy integration gets the mapped headers, not the client's
    assert sent_header(sent, "x-forged") is None and sent_header(sent, "if-none-match") is None
    assert sent_header(sent, "transfer-encoding") is None and sent_header(sent, "connection") is None
    # the template's $input.params().header: what AWS's engine sees
    seen = {k.lower(): v for k, v in json.loads(sent.body).items()}
    assert seen["x-keep"] == "client-value" and seen["if-none-match"] == '"etag-1"'
    hidden = ["x-fastgw-user", "x-fastgw-cache-token", "connection", "keep-alive", "te", "expect", "transfer-encoding"]
    if compat:
        hidden += ["content-md5", "max-forwards", "server", "www-authenticate"]
    else:
        assert seen["max-forwards"] == "3"
    for name in hidden:
        assert name not in seen, name
    # responses: mapped headers; framing mappings (awsCompat only: refused at load otherwise) remapped or
    # dropped, never able to frame the response
    assert header(response, "x-up") == "backend-7"
    assert header(response, "x-from-body") == "from the body"
    assert json.loads(response.body) == {"note": "from the body"}
    if compat:
        assert header(response, "x-amzn-remapped-server") == "backend-7"
        assert header(response, "x-amzn-remapped-www-authenticate") == "Basic realm=api"
        assert header(response, "x-amzn-remapped-connection") == "close"
        assert header(response, "x-amzn-remapped-content-length") == "1"
        assert "transfer-encoding" not in names(response)
    assert header(response, "connection") is None
    again = client.send(request_bytes("/prod/http/8"))  # keep-alive still usable
    assert again.status == 200
    client.close()


def test_lambda_non_proxy_templates_see_what_aws_sees(gateway):
    compat = gateway.compat
    client = Client(gateway.port)
    response = client.send(request_bytes("/prod/custom"))
    assert response.status == 200, response
    event = json.loads(json.loads(response.body)["body"])["event"]  # echo's result: the rendered template
    seen = {k.lower(): v for k, v in event.items()}
    assert seen["x-keep"] == "client-value" and seen["authorization"] == "allow-get"
    for name in ("x-fastgw-user", "connection", "te", "transfer-encoding", "expect", "keep-alive"):
        assert name not in seen, name
    assert ("www-authenticate" in seen) is not compat
    # the template's response overrides: a plain header is set, a framing one is never sent, and a
    # value with CR LF (header injection) is dropped
    assert header(response, "x-override") == "set"
    assert "transfer-encoding" not in names(response)
    assert "x-injected" not in names(response) and "x-split" not in names(response)
    assert client.send(request_bytes("/prod/custom")).status == 200
    client.close()


def test_lambda_proxy_event_and_result_headers(gateway):
    compat = gateway.compat
    client = Client(gateway.port)
    response = client.send(request_bytes("/prod/fn"))
    assert response.status == 200, response
    event = json.loads(response.body)["event"]
    seen = {k.lower() for k in event["headers"]}
    assert {"x-keep", "if-none-match", "authorization", "user-agent"} <= seen
    assert not seen & {"x-fastgw-user", "x-fastgw-cache-token", "connection", "keep-alive", "te", "expect",
                       "transfer-encoding"}
    assert ("max-forwards" in seen) is not compat and ("content-md5" in seen) is not compat
    assert "x-api-version" not in seen  # a mapping is not applied to the event (AWS)
    assert event["requestContext"]["authorizer"]["principalId"] == "user-get"
    # the result's framing and server fields: remapped as AWS does, or dropped; never framing
    framing = client.send(b"GET /prod/fn-headers?case=framing HTTP/1.1\r\nHost: api.test\r\n\r\n")
    assert framing.status == 200 and framing.body == b"hello"
    assert header(framing, "x-ok") == "1"
    assert not names(framing) & {"transfer-encoding", "keep-alive", "upgrade", "trailer", "te"}
    if compat:
        for name, value in (("content-length", "5"), ("connection", "close"), ("server", "lambda"),
                            ("www-authenticate", "Basic realm=x"), ("authorization", "Bearer y"),
                            ("user-agent", "fn"), ("date", "Mon, 01 Jan 2001 00:00:00 GMT")):
            assert header(framing, f"x-amzn-remapped-{name}") == value, name
        assert header(framing, "server") == "granian"  # the gateway's own
    else:
        assert header(framing, "www-authenticate") == "Basic realm=x"
        assert not [k for k in names(framing) if k.startswith("x-amzn-remapped-")]
    # fields that are not valid HTTP never reach the client
    invalid = client.send(b"GET /prod/fn-headers?case=invalid HTTP/1.1\r\nHost: api.test\r\n\r\n")
    assert invalid.status == 200 and invalid.body == b"hello"
    # obs-text goes out as latin-1 over ASGI; granian's RSGI (the `plain` config's interface since
    # encodedSlashes defaults to DECODE) takes header values as str and sends them UTF-8-encoded
    latin = "caf\xe9" if compat else "caf\xe9".encode().decode("latin-1")
    assert header(invalid, "x-ok") == "1" and header(invalid, "x-latin") == latin
    assert not names(invalid) & {"x-ctl", "x-crlf", "x-injected", "x-nul", "x-del", "x-wide", "bad name", "x-lf"}
    assert client.send(b"GET /prod/fn-headers?case=framing HTTP/1.1\r\nHost: api.test\r\n\r\n").status == 200
    client.close()
    # counted: 7 invalid fields; framing ones, for each of the two `framing` results (awsCompat drops
    # Transfer-Encoding, Keep-Alive, TE, and from a proxy integration Upgrade and Trailer, and remaps the
    # rest; without it all 7 framing fields of the result are dropped)
    framing = 2 * (5 if compat else 7)
    dropped = wait_for_metric(gateway, "framing", framing)
    assert dropped == {"invalid": 7, "framing": framing}


def wait_for_metric(gateway, reason: str, expected: float, timeout: float = 10.0) -> dict[str, float]:
    """fastgw_response_headers_dropped_total by reason, once `reason` reached `expected` (workers
    publish their counters about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, float] = {}
        for line in httpx.get(f"{gateway.admin}/metrics", timeout=5).text.splitlines():
            if line.startswith("fastgw_response_headers_dropped_total{"):
                found[re.search(r'reason="(\w+)"', line).group(1)] = float(line.rsplit(" ", 1)[1])
        if found.get(reason, 0) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


REFUSED = """
functions:
  echo: handlers.lambdas:echo
apis:
  - name: refused
    type: REST
    awsCompat: {compat}
    stages: {{prod: {{}}}}
    routes:
      - route: GET /proxy
        integration:
          type: HTTP_PROXY
          uri: "http://{upstream}/p"
          requestParameters: {{integration.request.header.Content-Length: "'5'"}}
      - route: GET /http
        integration:
          type: HTTP
          uri: "http://{upstream}/h"
          requestParameters: {{integration.request.header.transfer-encoding: "'chunked'"}}
      - route: GET /fn
        integration:
          type: FUNCTION
          uri: echo
          requestParameters: {{integration.request.header.Authorization: "'Bearer x'"}}
      - route: GET /custom
        integration:
          type: FUNCTION_CUSTOM
          uri: echo
          requestParameters: {{integration.request.header.connection: "'close'"}}
      - route: GET /ok
        integration:
          type: HTTP_PROXY
          uri: "http://{upstream}/ok"
          requestParameters:
            integration.request.header.Connection: "'close'"
            integration.request.header.Host: "'evil'"
"""


def test_reserved_request_mappings_fail_as_on_aws(start_gateway, upstream):
    """awsCompat: a mapping onto a header AWS reserves answers 500 Internal server error, and nothing
    reaches the backend; Connection and Host mappings are dropped (the gateway owns them)."""
    gateway = start_gateway(REFUSED.format(compat="true", upstream=upstream.address), env={"PYTHONPATH": str(TESTS)})
    client = Client(gateway.port)
    for path in ("/prod/proxy", "/prod/http", "/prod/fn", "/prod/custom"):
        response = client.send(f"GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n".encode())
        assert response.status == 500, path
        assert json.loads(response.body) == {"message": "Internal server error"}
    assert upstream.requests == []
    ok = client.send(b"GET /prod/ok HTTP/1.1\r\nHost: api.test\r\n\r\n")
    assert ok.status == 200
    sent = upstream.requests[-1]
    assert sent.header("connection") is None and sent.header("host") == upstream.address
    client.close()


def test_reserved_mappings_are_config_errors_without_aws_compat(tmp_path, upstream):
    config = tmp_path / "gateway.yaml"
    config.write_text(REFUSED.format(compat="false", upstream=upstream.address) + """
      - route: GET /framing
        integration:
          type: MOCK
          requestTemplates: {application/json: '{"statusCode": 200}'}
          responses:
            default:
              statusCode: "200"
              responseParameters: {method.response.header.Transfer-Encoding: "'gzip'"}
""")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(config)], capture_output=True, text=True,
                            timeout=60, env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    for place in ("requestParameters.integration.request.header.Content-Length",
                  "requestParameters.integration.request.header.transfer-encoding",
                  "requestParameters.integration.request.header.Authorization",
                  "requestParameters.integration.request.header.connection",
                  "requestParameters.integration.request.header.Connection",
                  "requestParameters.integration.request.header.Host",
                  "responseParameters.method.response.header.Transfer-Encoding"):
        assert place in out, (place, out)
    assert "cannot be mapped" in out


# -- fuzz: no header from a function result can break the framing of a response -----------------------
header_names = st.one_of(
    st.sampled_from(["Transfer-Encoding", "Content-Length", "Connection", "Keep-Alive", "Upgrade", "TE", "Trailer",
                     "Date", "Server", "Content-Type", "Set-Cookie", "X-A", "x-a", "Proxy-Connection", "Host",
                     "WWW-Authenticate", "Expect", "Location"]),
    st.text(alphabet=st.characters(max_codepoint=0x2FF), min_size=1, max_size=12),
)
header_values = st.one_of(
    st.sampled_from(["chunked", "0", "5", "-1", "close", "keep-alive", "upgrade", "h2c", "gzip, chunked", "",
                     " ", "a\r\nContent-Length: 0", "x\r\n\r\nHTTP/1.1 200 OK", "\x00", "caf\xe9", "\t"]),
    st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=20),
)


@pytest.mark.parametrize("compat", [True, False], ids=["awsCompat", "plain"])
def test_fuzz_function_result_headers_never_break_the_response(start_gateway, upstream, compat):
    gateway = start_gateway(config(upstream.address, compat), env={"PYTHONPATH": str(TESTS)})
    state = {"client": Client(gateway.port)}

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.dictionaries(header_names, header_values, max_size=6))
    def one(headers: dict[str, str]) -> None:
        body = json.dumps(headers).encode()
        request = (b"POST /prod/fn-headers HTTP/1.1\r\nHost: api.test\r\ncontent-type: application/json\r\n"
                   b"content-length: %d\r\n\r\n%b" % (len(body), body))
        client = state["client"]
        response = client.send(request)  # one well-formed response (check_wire), complete as framed
        assert response.status == 200, response
        assert response.body == b"hello"
        sent = names(response)
        assert not sent & {"transfer-encoding", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"}
        assert header(response, "content-length") == "5"
        # keep-alive still usable, or cleanly closed
        follow = b"GET /prod/plain/1 HTTP/1.1\r\nHost: api.test\r\n\r\n"
        try:
            assert client.send(follow).status == 200
        except ConnectionError:
            client.close()
            state["client"] = Client(gateway.port)

    one()
    state["client"].close()


# -- fuzz: no mapping, template override or backend header can break the response ----------------------
backend_names = st.sampled_from(["X-A", "x-b", "Date", "Server", "WWW-Authenticate", "Authorization", "User-Agent",
                                 "Via", "Content-MD5", "Max-Forwards", "Keep-Alive", "Upgrade", "Trailer",
                                 "Set-Cookie", "Host", "Proxy-Authenticate", "Expect"])
backend_values = st.text(alphabet=st.sampled_from("ab ,;=\t\x01\x7f\xe9:"), max_size=8)


def fuzz_backend(request):
    spec = json.loads(request.body or b"{}")
    return Action(200, [(k, v) for k, v in spec.get("headers", [])],
                  json.dumps({"name": spec.get("name", ""), "value": spec.get("value", "")}).encode())


@pytest.mark.parametrize("compat", [True, False], ids=["awsCompat", "plain"])
def test_fuzz_mappings_and_backend_headers_never_break_the_response(start_gateway, upstream, compat):
    """Backend header fields (relayed by HTTP_PROXY, remapped under awsCompat), and a non-proxy route
    whose template override sets the header the backend's body names to the value it gives, and
    whose mappings copy that value into X-From-Body (and, awsCompat, into Transfer-Encoding,
    Connection and Content-Length): every response is one well-formed message, complete as framed
    (or a clean 502 for a backend response that is not valid HTTP), and the connection stays usable."""
    upstream.behaviour = fuzz_backend
    gateway = start_gateway(config(upstream.address, compat), env={"PYTHONPATH": str(TESTS)})
    state = {"client": Client(gateway.port)}

    framing = st.sampled_from(["Transfer-Encoding", "Content-Length", "Connection", "transfer-encoding"])

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(backend_names, backend_values), max_size=4), st.one_of(framing, header_names),
           header_values, st.sampled_from(["/prod/proxy-fuzz", "/prod/http-fuzz"]))
    def one(backend: list[tuple[str, str]], name: str, value: str, path: str) -> None:
        body = json.dumps({"headers": backend, "name": name, "value": value}).encode()
        request = (b"POST %b HTTP/1.1\r\nHost: api.test\r\ncontent-type: application/json\r\n"
                   b"content-length: %d\r\n\r\n%b" % (path.encode(), len(body), body))
        client = state["client"]
        try:
            response = client.send(request)
        except ConnectionError:  # a clean close is allowed, never a hang or a second message
            assert client.closed_cleanly()
            state["client"] = Client(gateway.port)
            return
        bad_backend = any(c in v for _, v in backend for c in "\x01\x7f")
        assert response.status == (502 if bad_backend else 200), response
        assert not names(response) & {"transfer-encoding", "keep-alive", "upgrade", "te", "trailer"}
        if response.status == 200 and path.endswith("http-fuzz"):
            assert response.body == b"ok"
        try:
            assert client.send(b"GET /prod/plain/1 HTTP/1.1\r\nHost: api.test\r\n\r\n").status == 200
        except ConnectionError:
            client.close()
            state["client"] = Client(gateway.port)

    one()
    state["client"].close()


def test_a_field_name_ending_in_a_newline_is_not_safe() -> None:
    """A regular expression anchored with "$" also matches before a final newline: the name check
    must take the whole name (the fuzz test above found "0\\n" going out and granian refusing it)."""
    from fastgw.httpsyntax import safe_field

    assert safe_field("x-ok", "v") and safe_field("0", "chunked")
    assert not safe_field("x-ok\n", "v") and not safe_field("0\n", "chunked") and not safe_field("x\r", "v")
