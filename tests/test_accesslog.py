"""The access log (fastgw/accesslog.py): its lines against a plain dict-and-orjson reference, and no line
lost when a busy worker is stopped with SIGTERM (both interfaces)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import httpx
import orjson
import pytest

from fastgw.accesslog import AccessLog, clf_time


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


STAGE = _Plan(api=SimpleNamespace(name="shop"), name="prod", is_canary=False)
CANARY = _Plan(api=SimpleNamespace(name='we"ird\\api'), name="b\u00e9ta", is_canary=True)
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
