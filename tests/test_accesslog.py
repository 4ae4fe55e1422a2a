"""The access log (fastgw/accesslog.py): its lines against a plain dict-and-orjson reference, and no line
lost when a busy worker is stopped with SIGTERM (both interfaces)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from types import SimpleNamespace

import httpx
import orjson
import pytest

from fastgw.accesslog import PRESETS, AccessLog, CustomLineFormat, clf_time, compile_access_format


def _reference(request_id, down, stage, route, status, length, elapsed, integration_latency, now) -> dict:
    """The line as the first version of the access log built it: a dict, dumped by orjson."""
    record = {
        "requestId": request_id, "ip": down.client, "requestTime": clf_time(now),
        "requestTimeEpoch": int(now * 1000), "httpMethod": down.method, "path": down.path,
        "resourcePath": route.resource_path if route is not None else None,
        "routeKey": route.key if route is not None else None,
        "apiName": stage.api.name if stage is not None else None,
        "stage": stage.name if stage is not None else None,
        "isCanaryRequest": stage.is_canary if stage is not None else False,
        "status": status, "protocol": down.protocol, "responseLength": length,
        "responseLatency": round(elapsed * 1000, 3),
        "integrationLatency": round(integration_latency * 1000, 3) if integration_latency >= 0 else None,
    }
    if route is not None and route.authorizer is not None:
        record["authorizerPrincipalId"] = down.auth.principal_id if down.auth is not None else None
    return json.loads(orjson.dumps(record))


class _Plan:
    """A stand-in for a stage or route plan (hashed by identity, as those are)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


STAGE = _Plan(api=SimpleNamespace(name="shop"), name="prod", is_canary=False, access_format=None)
CANARY = _Plan(api=SimpleNamespace(name='we"ird\\api'), name="b\u00e9ta", is_canary=True, access_format=None)
ROUTE = _Plan(resource_path="/items/{id}", key="GET /items/{id}", authorizer=None)
GUARDED = _Plan(resource_path="/x", key="ANY /x", authorizer=object())


def _down(path: str = "/prod/items/42", client: str = "127.0.0.1", auth=None, method: str = "GET"):
    return SimpleNamespace(client=client, method=method, path=path, protocol="HTTP/1.1", auth=auth)


@pytest.mark.parametrize(("down", "stage", "route", "latency"), [
    (_down(), STAGE, ROUTE, 0.0123456),
    (_down(client="::1"), STAGE, ROUTE, -1.0),
    (_down(path='/prod/a"b\\c\u00e9\x01'), CANARY, ROUTE, 0.5),  # what must be escaped, wherever it comes from
    (_down(path="/nostage"), None, None, -1.0),
    (_down(auth=SimpleNamespace(principal_id='user "1"')), STAGE, GUARDED, 0.001),
    (_down(auth=None), STAGE, GUARDED, 0.001),
    (_down(method="PROPFIND", client=""), STAGE, ROUTE, 12.0),
], ids=["plain", "ipv6-no-integration", "escapes", "no-stage", "principal", "refused", "other-method"])
def test_lines_match_the_reference(down, stage, route, latency) -> None:
    read, write = os.pipe()
    try:
        log = AccessLog(write)
        before = time.time()
        log.write("abc-123", down, stage, route, 200, 13, 0.0021234, latency)
        log.write("abc-124", down, stage, route, 502, 0, 1.5, latency)
        log.flush()
        lines = os.read(read, 1 << 16).decode().splitlines()
    finally:
        os.close(read)
        os.close(write)
    assert len(lines) == 2
    for line, (request_id, status, length, elapsed) in zip(lines, [("abc-123", 200, 13, 0.0021234),
                                                                   ("abc-124", 502, 0, 1.5)], strict=True):
        got = json.loads(line)
        now = got["requestTimeEpoch"] / 1000
        assert before - 1 <= now <= time.time() + 1
        assert got == _reference(request_id, down, stage, route, status, length, elapsed, latency, now)
        assert got["requestTime"] == clf_time(now)


CONFIG = """\
server: {{workers: 1, interface: {interface}}}
apis:
  - name: logged
    type: REST
    stages:
      prod: {{}}
    routes:
      - route: ANY /{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/{{p}}"}}
"""


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_no_line_is_lost_when_a_busy_worker_stops(start_gateway, upstream, interface: str) -> None:
    """SIGTERM while four clients keep requests coming: every request that got its response has its
    line in the log once the gateway has exited (the worker's stop writes what it still held)."""
    gateway = start_gateway(CONFIG.format(interface=interface, upstream=upstream.address))
    answered: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=gateway.url, timeout=5) as http:
            while not stop.is_set():
                try:
                    response = http.get("/prod/x")
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    answered.append(response.headers["x-amzn-requestid"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(answered) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        gateway.signal(signal.SIGTERM)
        assert gateway.proc.wait(30) is not None
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    logged = {json.loads(line)["requestId"] for line in gateway.stdout().splitlines() if line.startswith("{")}
    assert len(answered) >= 200
    missing = [request_id for request_id in answered if request_id not in logged]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no log line"


# -- a stage's own format (accessLogSettings.format, issue 17) --------------------------------------------
def _custom(text: str, down, stage=STAGE, route=ROUTE, status=200, length=13, elapsed=0.0124, latency=0.0101):
    now = 1_796_000_000.25
    line = CustomLineFormat(compile_access_format(text))(
        ("req-1", down, stage, route, status, length, elapsed, latency, now), clf_time(now))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return line[:-1].decode()


def _web_down(**fields):
    base = {"client": "10.1.2.3", "method": "GET", "path": "/prod/items/42", "protocol": "HTTP/1.1", "auth": None,
            "headers": [("host", "api.example.com"), ("user-agent", "curl/8")], "trace": None}
    return SimpleNamespace(**{**base, **fields})


def test_the_aws_console_presets_render_as_aws_writes_them() -> None:
    down = _web_down()
    time_text = clf_time(1_796_000_000.25)
    assert _custom("CLF", down) == (f'10.1.2.3 - - [{time_text}] "GET /items/{{id}} HTTP/1.1" 200 13 req-1')
    assert _custom("CSV", down) == f"10.1.2.3,-,-,{time_text},GET,/items/{{id}},HTTP/1.1,200,13,req-1"
    record = json.loads(_custom("JSON", down))
    assert record == {"requestId": "req-1", "ip": "10.1.2.3", "caller": "-", "user": "-", "requestTime": time_text,
                      "httpMethod": "GET", "resourcePath": "/items/{id}", "status": "200", "protocol": "HTTP/1.1",
                      "responseLength": "13"}
    xml = _custom("XML", down)
    assert xml.startswith('<request id="req-1"> <ip>10.1.2.3</ip>') and "<status>200</status>" in xml


def test_a_custom_format_substitutes_every_variable_fastgw_knows() -> None:
    auth = SimpleNamespace(principal_id="user-7", context={"tenant": "acme"}, identity={"caller": "AIDA1"})
    down = _web_down(auth=auth, trace=SimpleNamespace(xray_trace_id="1-5759e988-bd862e3fe1be46a994272793"))
    text = ("$context.requestId $context.domainName $context.domainPrefix $context.identity.userAgent "
            "$context.responseLatency $context.integrationLatency $context.routeKey $context.stage $context.apiId "
            "$context.authorizer.principalId $context.authorizer.tenant $context.identity.caller "
            "$context.xrayTraceId $context.requestTimeEpoch $context.waf.status $context.isCanaryRequest")
    assert _custom(text, down).split(" ") == [
        "req-1", "api.example.com", "api", "curl/8", "12", "10", "GET", "/items/{id}", "prod", "shop", "user-7", "acme",
        "AIDA1", "1-5759e988-bd862e3fe1be46a994272793", "1796000000250", "-", "false"]


def test_values_cannot_break_a_line_or_a_json_format() -> None:
    down = _web_down(path='/prod/x"y\\z\n{"forged":1}\x01', headers=[("user-agent", 'a"b\r\nX')])
    line = _custom('{"id":"$context.requestId","path":"$context.path","ua":"$context.identity.userAgent"}', down)
    assert json.loads(line) == {"id": "req-1", "path": '/prod/x"y\\z\n{"forged":1}\x01', "ua": 'a"b\r\nX'}
    plain = _custom("$context.requestId $context.identity.userAgent", down)
    assert plain == 'req-1 a"b\\x0d\\x0aX'


@pytest.mark.parametrize(("text", "message"), [
    ("$context.status", "must contain $context.requestId or $context.extendedRequestId"),
    ("$context.requestId $context.nope", "unknown variable $context.nope"),
    ("$context.requestId\n$context.status", "must be one line"),
])
def test_a_format_aws_would_refuse_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        compile_access_format(text)
    assert set(PRESETS) == {"CLF", "JSON", "XML", "CSV"}


def test_a_stage_format_is_what_the_gateway_writes(start_gateway, upstream) -> None:
    gateway = start_gateway(f"""
apis:
  - name: shop
    type: REST
    stages:
      prod: {{accessLogSettings: {{format: CLF}}}}
      beta: {{}}
    routes:
      - route: GET /items/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/items/{{id}}"}}
""")
    prod = httpx.get(f"{gateway.url}/prod/items/1", timeout=10)
    beta = httpx.get(f"{gateway.url}/beta/items/1", timeout=10)
    wanted = (prod.headers["x-amzn-requestid"], beta.headers["x-amzn-requestid"])

    def lines() -> list[str]:
        return [line for line in gateway.stdout().splitlines() if any(w in line for w in wanted)]

    deadline = time.monotonic() + 20
    while len(lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    clf, default = sorted(lines(), key=lambda line: line.startswith("{"))
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+ \+0000\] "GET /items/\{id\} HTTP/1\.1" 200 \d+ ' + wanted[0], clf)
    assert json.loads(default)["requestId"] == wanted[1]  # a stage without a format keeps the JSON line


def test_a_bad_stage_format_is_refused_naming_its_place(tmp_path) -> None:
    import subprocess
    import sys

    path = tmp_path / "gw.yaml"
    path.write_text("""
apis:
  - name: shop
    type: HTTP
    stages:
      prod: {accessLogSettings: {format: "$context.status"}}
    routes:
      - route: GET /x
        integration: {type: MOCK}
""")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "apis[0].stages.prod.accessLogSettings.format" in result.stderr
    assert "must contain $context.requestId" in result.stderr
