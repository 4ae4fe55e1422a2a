"""WebSocket pass-through on HTTP_PROXY routes (issue 16), against a real `fastgw serve` over ASGI and
RSGI, a real WebSocket upstream (tests/support/wsupstream.py) and the `websockets` client.

What granian's RSGI cannot carry (fastgw/websocket/channel.py): close codes to and from the client
(1005), the refusal's headers and body, a subprotocol. The tests say which interface sees what.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support.gateway import GatewayProcess, free_port
from support.wsupstream import WsUpstream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

IDLE_SECONDS = 3.0

CONFIG = """\
server:
  workers: 1
  accessLog: false
  interface: {interface}
  webSocketPassThrough: {{idleTimeoutSeconds: {idle}}}
state: {{backend: local, path: {state}}}
apis:
  - name: ws
    type: REST
    encodedSlashes: DECODE  # what the RSGI interface can serve
    apiKeySource: HEADER
    stages: {{prod: {{}}}}
    routes:
      - route: ANY /{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://127.0.0.1:{port}/{{p}}?via=gw"}}
      - route: GET /keyed/{{p+}}
        apiKeyRequired: true
        integration: {{type: HTTP_PROXY, uri: "http://127.0.0.1:{port}/{{p}}"}}
      - route: GET /checked/{{p+}}
        requestValidator: all
        requestParameters: {{method.request.querystring.token: true}}
        requestModels: {{$default: {{type: object}}}}
        integration: {{type: HTTP_PROXY, uri: "http://127.0.0.1:{port}/{{p}}"}}
      - route: GET /dead
        integration: {{type: HTTP_PROXY, uri: "http://127.0.0.1:{dead}/"}}
      - route: GET /mock
        integration:
          type: MOCK
          requestTemplates: {{application/json: '{{"statusCode": 200}}'}}
          responses: {{default: {{statusCode: "200"}}}}
usagePlans:
  - name: basic
    apiStages: [{{api: ws, stage: prod}}]
apiKeys:
  - {{name: alice, value: "alice-key-0123456789abcdef", usagePlans: [basic]}}
"""


@pytest.fixture(scope="module")
def upstream():
    server = WsUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def gateway(request, upstream, tmp_path_factory):
    interface = request.param
    directory = tmp_path_factory.mktemp(f"ws-{interface}")
    config = CONFIG.format(interface=interface, idle=IDLE_SECONDS, port=upstream.port, state=directory / "state",
                           dead=free_port())
    process = GatewayProcess(config, Path(directory), workers=1).start()
    process.interface = interface
    yield process
    process.stop()


def ws_url(gateway: GatewayProcess, path: str) -> str:
    return gateway.url.replace("http://", "ws://") + path


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_messages_relay_both_ways_text_and_binary(gateway, upstream):
    async def scenario():
        async with connect(ws_url(gateway, "/prod/echo/room?x=1"), subprotocols=["chat"],
                           additional_headers={"x-trace": "t-1"}) as ws:
            await ws.send("whoami")
            seen = json.loads(await ws.recv())
            await ws.send("héllo")
            text = await ws.recv()
            await ws.send(b"\x00\xff" * 1000)
            binary = await ws.recv()
            return seen, text, binary, ws.subprotocol

    seen, text, binary, subprotocol = run(scenario())
    assert text == "héllo" and isinstance(text, str)
    assert binary == b"\x00\xff" * 1000 and isinstance(binary, bytes)
    # the route's rules: the path parameter, the URI's own query then the client's, forwarded fields
    assert seen["path"] == "/echo/room?via=gw&x=1"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["x-trace"] == "t-1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["host"] == f"127.0.0.1:{upstream.port}"
    if gateway.interface == "asgi":
        assert subprotocol == seen["subprotocol"] == "chat"
    else:  # RSGI cannot answer with a subprotocol, so none is asked of the upstream
        assert subprotocol is None and seen["subprotocol"] is None


def test_an_upstream_refusal_is_answered_over_http(gateway):
    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(gateway, "/prod/refuse")):
                pass
        return refused.value.response

    response = run(scenario())
    assert response.status_code == 403
    if gateway.interface == "asgi":
        assert response.headers["x-refused"] == "yes"
        assert json.loads(bytes(response.body)) == {"refused": True}


def test_an_upstream_redirect_is_relayed_never_followed(gateway, upstream):
    seen = len(upstream.handshakes)

    class NoRedirect(connect):  # this client must not follow it either
        def process_redirect(self, exc):
            return exc

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with NoRedirect(ws_url(gateway, "/prod/redirect")):
                pass
        return refused.value.response

    response = run(scenario())
    assert response.status_code == 302
    if gateway.interface == "asgi":
        assert response.headers["location"] == f"ws://127.0.0.1:{upstream.port}/echo"
    assert [r.path for r in upstream.handshakes[seen:]] == ["/redirect?via=gw"]  # the gateway went nowhere else


def test_an_upstream_group_balances_upgrades_and_skips_a_refusing_target(start_gateway, upstream):
    config = f"""\
server: {{workers: 1, accessLog: false}}
upstreamGroups:
  chat:
    targets: ["127.0.0.1:{free_port()}", "127.0.0.1:{upstream.port}"]
apis:
  - name: ws
    type: HTTP
    stages: {{$default: {{}}}}
    routes:
      - route: GET /{{p+}}
        integration: {{type: HTTP_PROXY, uri: "http://chat/{{p}}"}}
"""
    gateway = start_gateway(config)

    async def scenario():
        seen = []
        for _ in range(2):  # round robin: one of the two tries the dead target first, then the live one
            async with connect(ws_url(gateway, "/echo")) as ws:
                await ws.send("whoami")
                seen.append(json.loads(await ws.recv()))
        return seen

    for seen in run(scenario()):
        assert dict((k.lower(), v) for k, v in seen["headers"])["host"] == "chat"


@pytest.mark.parametrize(("path", "status"), [
    ("/prod/mock", 400), ("/nostage/x", 404), ("/prod/keyed/echo", 403), ("/prod/checked/echo", 400),
    ("/prod/dead", 502)])
def test_routes_that_cannot_relay_and_policies_refuse_the_upgrade(gateway, path, status):
    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(gateway, path)):
                pass
        return refused.value.response

    response = run(scenario())
    assert response.status_code == status
    if gateway.interface == "asgi":
        assert "message" in json.loads(bytes(response.body))


def test_an_upgrade_that_passes_its_policies_is_relayed(gateway):
    async def scenario(path, headers):
        async with connect(ws_url(gateway, path), additional_headers=headers) as ws:
            await ws.send("ok")
            return await ws.recv()

    assert run(scenario("/prod/keyed/echo", {"x-api-key": "alice-key-0123456789abcdef"})) == "ok"
    assert run(scenario("/prod/checked/echo?token=t", {})) == "ok"  # validated parameters and body


def test_close_codes_propagate_both_ways(gateway, upstream):
    async def upstream_closes():
        async with connect(ws_url(gateway, "/prod/close/4321")) as ws:
            await ws.send("bye?")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    code, reason = run(upstream_closes())
    if gateway.interface == "asgi":
        assert (code, reason) == (4321, "upstream says bye")
    else:
        assert code == 1005  # granian's RSGI close frame carries no code
    path = f"/client-close-{gateway.interface}"

    async def client_closes():
        async with connect(ws_url(gateway, f"/prod{path}")) as ws:
            await ws.send("hi")
            await ws.recv()
            await ws.close(4100, "client bye")

    run(client_closes())
    code, _ = upstream.wait_close(path)
    assert code == (4100 if gateway.interface == "asgi" else 1000)


def test_a_message_over_the_limit_closes_with_1009(gateway, upstream):
    path = f"/quiet-too-big-{gateway.interface}"  # an upstream that answers nothing

    async def client_sends_too_much():
        async with connect(ws_url(gateway, f"/prod{path}"), max_size=None) as ws:
            await ws.send(b"x" * (128 * 1024))  # the limit itself passes
            await ws.send("é" * (64 * 1024 + 1))  # 128 KiB + 2 bytes of UTF-8
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    code = run(client_sends_too_much())
    assert code == (1009 if gateway.interface == "asgi" else 1005)
    assert upstream.wait_close(path)[0] == 1009

    async def upstream_sends_too_much():
        async with connect(ws_url(gateway, "/prod/big/200000"), max_size=None) as ws:
            await ws.send("go")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    code = run(upstream_sends_too_much())
    assert code == (1009 if gateway.interface == "asgi" else 1005)
    assert upstream.wait_close("/big/200000")[0] == 1009


def test_an_idle_session_is_closed_with_1001(gateway, upstream):
    path = f"/idle-{gateway.interface}"

    async def scenario():
        async with connect(ws_url(gateway, f"/prod{path}"), ping_interval=None) as ws:
            await ws.send("hi")
            await ws.recv()
            began = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return time.monotonic() - began, ws.close_code, ws.close_reason

    waited, code, reason = run(scenario())
    assert IDLE_SECONDS * 0.8 <= waited < IDLE_SECONDS + 10
    if gateway.interface == "asgi":
        assert (code, reason) == (1001, "Idle timeout")
    assert upstream.wait_close(path)[0] == 1001


def test_a_session_ends_at_its_lifetime_with_1001(start_gateway, upstream):
    config = CONFIG.format(interface="asgi", idle=IDLE_SECONDS, port=upstream.port, state="/nonexistent", dead=1)
    config = config.replace("{idleTimeoutSeconds: 3.0}", "{maxLifetimeSeconds: 1.5}")
    config = config.replace("state: {backend: local, path: /nonexistent}\n", "")
    gateway = start_gateway(config)

    async def scenario():
        async with connect(ws_url(gateway, "/prod/echo"), ping_interval=None) as ws:
            began, echoed = time.monotonic(), 0
            try:
                while True:  # never idle: a message every 0.2 s
                    await ws.send("tick")
                    await ws.recv()
                    echoed += 1
                    await asyncio.sleep(0.2)
            except ConnectionClosed:
                pass
            return time.monotonic() - began, echoed, ws.close_code, ws.close_reason

    lasted, echoed, code, reason = run(scenario())
    assert 1.2 <= lasted < 10 and echoed >= 3
    assert (code, reason) == (1001, "Connection lifetime exceeded")


def worker_rss_kib(gateway: GatewayProcess) -> int:
    """The resident memory of the gateway's worker (granian's child of `fastgw serve`)."""
    pid = gateway.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


FLOOD_MESSAGE = 65536


def test_a_client_that_reads_nothing_does_not_grow_the_gateway(gateway, upstream):
    """The upstream sends 64 KiB messages as fast as it can; the client stops reading. The relay stops
    reading the upstream once the client's socket is full: the upstream's sends stall, and the worker's
    memory stays bounded (without back-pressure it would buffer the flood: ~100s of MiB a second)."""

    async def scenario():
        rss_before = worker_rss_kib(gateway)
        async with connect(ws_url(gateway, "/prod/flood"), max_queue=1, max_size=None) as ws:
            await ws.recv()  # the flood has begun; from now on this client reads nothing
            # websockets stops reading its socket once its one-frame queue is full
            stalled_at, last, deadline = None, -1, time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                if upstream.flood_sent == last:
                    stalled_at = stalled_at or time.monotonic()
                    if time.monotonic() - stalled_at > 1.0:
                        break
                else:
                    stalled_at, last = None, upstream.flood_sent
            rss_after = worker_rss_kib(gateway)
            sent = upstream.flood_sent
            ws.transport.abort()
            return rss_before, rss_after, sent, stalled_at is not None

    rss_before, rss_after, sent, stalled = run(scenario())
    assert stalled, f"the upstream never stalled: {sent} messages of 64 KiB sent"
    # What is in flight: socket buffers (kernel memory, not the worker's) and a few messages.
    assert sent * FLOOD_MESSAGE < 256 * 1024 * 1024
    assert rss_after - rss_before < 48 * 1024, f"the worker grew from {rss_before} to {rss_after} KiB"


def test_an_upstream_that_reads_nothing_stops_the_client_not_the_gateway(gateway):
    async def scenario():
        rss_before = worker_rss_kib(gateway)
        chunk = b"y" * FLOOD_MESSAGE
        sent = 0
        async with connect(ws_url(gateway, "/prod/sink"), write_limit=FLOOD_MESSAGE) as ws:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.send(chunk), 1.5)
                except TimeoutError:
                    break  # the gateway stopped reading this client
                sent += 1
            rss_after = worker_rss_kib(gateway)
            ws.transport.abort()
            return rss_before, rss_after, sent, time.monotonic() < deadline

    rss_before, rss_after, sent, stalled = run(scenario())
    assert stalled, f"the client was never held back: {sent} messages of 64 KiB went through"
    assert rss_after - rss_before < 48 * 1024, f"the worker grew from {rss_before} to {rss_after} KiB"


def test_plain_http_requests_still_work_beside_upgrades(gateway):
    response = httpx.get(gateway.url + "/prod/mock")
    assert response.status_code == 200


def test_pass_through_can_be_turned_off(start_gateway, upstream):
    config = CONFIG.format(interface="asgi", idle=IDLE_SECONDS, port=upstream.port, state="/nonexistent", dead=1)
    config = config.replace("webSocketPassThrough: {idleTimeoutSeconds: 3.0}", "webSocketPassThrough: {enabled: false}")
    config = config.replace("state: {backend: local, path: /nonexistent}\n", "")
    gateway = start_gateway(config)
    seen = len(upstream.handshakes)

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(gateway, "/prod/echo")):
                pass
        return refused.value.response.status_code

    # granian serves no upgrades: the request goes upstream as a plain GET (its Upgrade fields are
    # hop-by-hop), which the WebSocket upstream does not upgrade
    assert run(scenario()) != 101
    assert all(request.headers.get("upgrade") is None for request in upstream.handshakes[seen:])


def test_bad_pass_through_settings_are_refused_with_their_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  webSocketPassThrough: {maxMessageBytes: 0, idleTimeout: 5}\n"
                    "apis:\n  - name: x\n    stages: {p: {}}\n"
                    "    routes: [{route: 'GET /a', integration: {type: HTTP_PROXY, uri: 'http://127.0.0.1:1/'}}]\n")
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 2
    assert "server.webSocketPassThrough.maxMessageBytes" in run.stderr
    assert "server.webSocketPassThrough.idleTimeout" in run.stderr  # an unknown field


def test_a_handshake_with_a_body_is_refused(gateway, upstream):
    seen = len(upstream.handshakes)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /prod/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     b"Content-Length: 5\r\n\r\nhello")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert len(upstream.handshakes) == seen  # nothing went upstream
