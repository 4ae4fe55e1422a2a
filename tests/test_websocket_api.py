"""WebSocket APIs (issue 16), end to end: a real `fastgw serve` (granian, 2 workers), the `websockets`
client, boto3's `apigatewaymanagementapi` signed with SigV4, raw sockets for what a client library
would never send, and AWS's event fixtures (conformance/events/aws-lambda-go/apigw-websocket-*)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import websockets
from botocore.config import Config
from conftest import SHARED
from support.gateway import GatewayProcess
from support.upstream import Action, Recorded, RecordingUpstream
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fastgw.config.model import read_selection
from fastgw.config.model.reader import _Reader
from fastgw.websocket.api import evaluate, new_connection_id, owner_of

TESTS = Path(__file__).resolve().parent
FIXTURES = SHARED / "conformance" / "events" / "aws-lambda-go"
ACCESS_KEY, SECRET_KEY = "AKIAWSTEST0000000001", "ws/Secret+Key000000000000000000000000000"
CREDENTIALS = f"""
[poster]
aws_access_key_id = {ACCESS_KEY}
aws_secret_access_key = {SECRET_KEY}
arn = arn:aws:iam::111122223333:user/poster
"""
AWS_ID = re.compile(r"^[A-Za-z0-9+/_-]{15}=$")  # AWS's connection / message / request ids

CONFIG = """
server:
  iam: {credentialsFile: creds.ini, region: us-east-1}
functions:
  ws: handlers.ws:handler
  auth: handlers.ws:authorizer
apis:
  - name: chat
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    stages:
      prod: {variables: {room: lobby}}
    routes:
      - route: $connect
        integration: {type: FUNCTION, uri: ws}
      - route: $disconnect
        integration: {type: FUNCTION, uri: ws}
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {type: FUNCTION, uri: ws}
      - route: echo
        routeResponseSelectionExpression: $default
        integration: {type: FUNCTION, uri: ws}
      - route: quiet
        integration: {type: FUNCTION, uri: ws}
      - route: fail
        routeResponseSelectionExpression: $default
        integration: {type: FUNCTION, uri: ws}
      - route: relay
        routeResponseSelectionExpression: $default
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/messages"}
      - route: templated
        routeResponseSelectionExpression: $default
        integration:
          type: HTTP
          uri: "http://UPSTREAM/templated"
          templateSelectionExpression: $request.body.kind
          requestTemplates:
            short: '{"kind": "short", "connection": "$context.connectionId", "text": $input.json(''$.text'')}'
            $default: '{"kind": "other"}'
          responses:
            $default:
              responseTemplates:
                $default: '{"upstreamSaw": $input.body}'
      - route: mocked
        routeResponseSelectionExpression: $default
        integration:
          type: MOCK
          requestTemplates: {$default: '{"statusCode": 200}'}
          responses:
            $default:
              responseTemplates: {$default: '{"route": "$context.routeKey", "room": "$stageVariables.room"}'}
  - name: pair
    type: WEBSOCKET
    routeSelectionExpression: ${request.body.a}/${request.body.b}
    webSocket: {managementAuthorization: NONE}
    stages:
      pairs: {}
    routes:
      - route: x/y
        routeResponseSelectionExpression: $default
        integration:
          type: MOCK
          requestTemplates: {$default: '{"statusCode": 200}'}
          responses: {$default: {responseTemplates: {$default: 'matched $context.routeKey'}}}
  - name: guarded
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    authorizers:
      tokens:
        type: REQUEST
        authorizerUri: auth
        identitySource: [method.request.querystring.token]
        authorizerResultTtlInSeconds: 0
    stages:
      guarded: {}
    routes:
      - route: $connect
        authorizer: tokens
        integration: {type: MOCK, requestTemplates: {$default: '{"statusCode": 200}'}}
      - route: $default
        integration: {type: FUNCTION, uri: ws}
  - name: keyed
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    stages:
      keyed: {}
    routes:
      - route: $connect
        apiKeyRequired: true
        integration: {type: MOCK, requestTemplates: {$default: '{"statusCode": 200}'}}
      - route: $default
        routeResponseSelectionExpression: $default
        integration:
          type: MOCK
          responses: {$default: {responseTemplates: {$default: 'keyed in'}}}
  - name: signed
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    stages:
      signed: {}
    routes:
      - route: $connect
        authorizationType: AWS_IAM
        integration: {type: MOCK, requestTemplates: {$default: '{"statusCode": 200}'}}
      - route: $default
        integration: {type: FUNCTION, uri: ws}
  - name: limited
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    stages:
      limited: {}
    routes:
      - route: $connect
        throttle: {rateLimit: 0.5, burstLimit: 2}
        integration: {type: MOCK, requestTemplates: {$default: '{"statusCode": 200}'}}
  - name: metered
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    stages:
      metered: {}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        throttle: {rateLimit: 0.2, burstLimit: 2}
        integration:
          type: MOCK
          responses: {$default: {responseTemplates: {$default: 'served'}}}
apiMappings:
  - {domainName: ws.example.com, basePath: "", api: pair, stage: pairs}
usagePlans:
  - name: sockets
    apiStages: [{api: keyed, stage: keyed}]
apiKeys:
  - name: k
    value: wskey-0123456789abcdefghij
    usagePlans: [sockets]
"""


# -- helpers --------------------------------------------------------------------------------------------------
def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


class Events:
    """The events the test handlers recorded (tests/handlers/ws.py), whichever worker ran them."""

    def __init__(self, path: Path):
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.all():
                if predicate(event):
                    return event
            time.sleep(0.02)
        raise AssertionError("no such event recorded")


def context_of(event: dict[str, Any]) -> dict[str, Any]:
    return event.get("requestContext") or {}


def event_of(events: Events, connection_id: str, route: str, timeout: float = 10.0) -> dict[str, Any]:
    return events.wait(lambda e: context_of(e).get("connectionId") == connection_id
                       and context_of(e).get("routeKey") == route, timeout)


async def connect_and_id(url: str, **kwargs: Any) -> tuple[Any, str]:
    """A connection and its id (the `$default` route's answer names it)."""
    ws = await websockets.connect(url, **kwargs)
    await ws.send("who am i")
    answer = json.loads(await ws.recv())
    return ws, answer["connectionId"]


def management(gateway: GatewayProcess, stage: str = "prod") -> Any:
    return boto3.client("apigatewaymanagementapi", endpoint_url=f"{gateway.url}/{stage}", region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=20))


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    def behaviour(request: Recorded) -> Action:
        return Action(body=json.dumps({"upstream": request.target, "body": request.body.decode()}).encode())

    server = RecordingUpstream(behaviour).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("ws")
    (directory / "creds.ini").write_text(CREDENTIALS)
    events = directory / "events.jsonl"
    process = GatewayProcess(CONFIG.replace("UPSTREAM", upstream.address), directory, workers=2,
                             env={"PYTHONPATH": str(TESTS), "WS_EVENTS": str(events)})
    process.start()
    process.events = Events(events)  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def events(gateway: GatewayProcess) -> Events:
    return gateway.events  # type: ignore[attr-defined,no-any-return]


# -- events: as AWS sends them --------------------------------------------------------------------------------
def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())  # type: ignore[no-any-return]


def test_events_have_the_fields_and_types_of_aws_fixtures(gateway: GatewayProcess, events: Events) -> None:
    async def scenario() -> str:
        ws, connection_id = await connect_and_id(f"{gateway.ws_url}/prod?name=me&tag=a&tag=b",
                                                 additional_headers={"X-Custom": "1"})
        await ws.send(json.dumps({"action": "quiet", "n": 1}))
        await ws.close(1001, "bye")
        return connection_id

    connection_id = run(scenario())
    connect = event_of(events, connection_id, "$connect")
    message = event_of(events, connection_id, "quiet")
    disconnect = event_of(events, connection_id, "$disconnect")

    # MESSAGE and DISCONNECT: the same fields as AWS's, in requestContext and at the top
    for ours, name in ((message, "apigw-websocket-request-send-message.json"),
                       (disconnect, "apigw-websocket-request-disconnect.json")):
        theirs = _fixture(name)
        assert set(ours) - {"stageVariables"} == set(theirs), name
        assert set(context_of(ours)) == set(context_of(theirs)), name
        for key, value in context_of(theirs).items():
            assert type(context_of(ours)[key]) is type(value), (name, key)
        assert set(context_of(ours)["identity"]) == set(context_of(theirs)["identity"])
    # CONNECT: every WebSocket field of AWS's connect fixture (it also carries REST fields AWS does not send)
    theirs = _fixture("apigw-websocket-request.json")
    ws_fields = ("routeKey", "eventType", "extendedRequestId", "requestTime", "messageDirection", "stage",
                 "connectedAt", "requestTimeEpoch", "identity", "requestId", "domainName", "connectionId", "apiId")
    for key in ws_fields:
        assert type(context_of(connect)[key]) is type(context_of(theirs)[key]), key
    assert {"headers", "multiValueHeaders", "queryStringParameters", "multiValueQueryStringParameters",
            "isBase64Encoded"} <= set(connect)
    assert "messageId" not in context_of(connect) and "body" not in connect

    # values
    assert context_of(connect)["eventType"] == "CONNECT" and context_of(message)["eventType"] == "MESSAGE"
    assert context_of(disconnect)["eventType"] == "DISCONNECT"
    for event in (connect, message, disconnect):
        ctx = context_of(event)
        assert AWS_ID.match(ctx["connectionId"]) and AWS_ID.match(ctx["requestId"])
        assert ctx["stage"] == "prod" and ctx["messageDirection"] == "IN" and ctx["domainName"] == "127.0.0.1"
        assert ctx["connectedAt"] == context_of(connect)["connectedAt"] and ctx["identity"]["sourceIp"] == "127.0.0.1"
        assert ctx["identity"]["userAgent"].startswith("Python/")
        assert event["stageVariables"] == {"room": "lobby"}
    assert AWS_ID.match(context_of(theirs)["connectionId"])  # the fixture's ids have the same form
    assert AWS_ID.match(context_of(message)["messageId"])
    assert connect["queryStringParameters"] == {"name": "me", "tag": "b"}
    assert connect["multiValueQueryStringParameters"]["tag"] == ["a", "b"]
    assert connect["headers"]["x-custom"] == "1" and connect["multiValueHeaders"]["x-custom"] == ["1"]
    assert message["body"] == '{"action": "quiet", "n": 1}' and message["isBase64Encoded"] is False
    assert context_of(disconnect)["disconnectStatusCode"] == 1001
    assert context_of(disconnect)["disconnectReason"] == "bye"  # the client's close reason, as AWS passes it
    assert disconnect["headers"]["x-custom"] == "1"


# -- route selection and two-way routes -------------------------------------------------------------------------
def test_route_selection_json_non_json_and_binary(gateway: GatewayProcess) -> None:
    async def scenario() -> list[Any]:
        async with websockets.connect(f"{gateway.ws_url}/prod") as ws:
            answers = []
            for message in (json.dumps({"action": "echo", "x": 1}), json.dumps({"action": "nosuchroute"}),
                            json.dumps({"no": "action"}), "plain text", "[1, 2]", b"\x00\xffbinary"):
                await ws.send(message)
                answers.append(json.loads(await ws.recv()))
            return answers

    echo, unknown, missing, text, array, binary = run(scenario())
    assert echo["route"] == "echo"
    assert unknown["route"] == missing["route"] == text["route"] == array["route"] == "$default"
    assert text["body"] == "plain text" and text["isBase64Encoded"] is False
    assert binary["route"] == "$default" and binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x00\xffbinary"


def test_a_one_way_route_answers_nothing_and_a_failing_one_says_so(gateway: GatewayProcess) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with websockets.connect(f"{gateway.ws_url}/prod") as ws:
            await ws.send(json.dumps({"action": "quiet"}))  # one-way: nothing comes back
            await ws.send(json.dumps({"action": "echo"}))
            first = json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "fail"}))
            return first, json.loads(await ws.recv())

    first, failed = run(scenario())
    assert first["route"] == "echo"
    assert failed["message"] == "Internal server error" and AWS_ID.match(failed["connectionId"])
    assert AWS_ID.match(failed["requestId"])


def test_compound_selection_expressions(gateway: GatewayProcess) -> None:
    async def scenario() -> list[str]:
        async with websockets.connect(f"{gateway.ws_url}/pairs") as ws:
            await ws.send(json.dumps({"a": "x", "b": "y"}))
            return [await ws.recv()]

    assert run(scenario()) == ["matched x/y"]
    reader = _Reader()
    selection = read_selection(reader, "${request.body.a}/${request.body.b.c}-$request.body.n", "here", ("body",))
    assert selection is not None and not reader.problems
    assert evaluate(selection, {"a": "x", "b": {"c": True}, "n": 2}, None, None) == "x/true-2"
    assert evaluate(selection, {}, None, None) == "/-"  # a missing field is "" (AWS)
    assert read_selection(reader, "$request.querystring.x", "here", ("body",)) is None and reader.problems


def test_api_mapping_custom_domain(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.ws_port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        rest = _upgraded(sock)
        sock.sendall(_frame(1, b'{"a": "x", "b": "y"}'))
        data = rest
        while b"matched" not in data:
            data += sock.recv(4096)
    assert b"matched x/y" in data


def test_the_http_port_says_where_websocket_apis_listen(gateway: GatewayProcess) -> None:
    with _raw_handshake(gateway, path="/prod", on_http_port=True) as sock:
        answer = _read_until_closed(sock, 3)
    assert answer.startswith(b"HTTP/1.1 400") and f"listen on port {gateway.ws_port}".encode() in answer


def test_http_proxy_http_with_templates_and_mock_integrations(gateway: GatewayProcess,
                                                              upstream: RecordingUpstream) -> None:
    async def scenario() -> list[Any]:
        async with websockets.connect(f"{gateway.ws_url}/prod") as ws:
            out = []
            for message in ({"action": "relay", "text": "hi"}, {"action": "templated", "kind": "short", "text": "yo"},
                            {"action": "templated", "kind": "long"}, {"action": "mocked"}):
                await ws.send(json.dumps(message))
                out.append(json.loads(await ws.recv()))
            return out

    relay, short, other, mocked = run(scenario())
    assert relay == {"upstream": "/messages", "body": '{"action": "relay", "text": "hi"}'}
    assert short["upstreamSaw"]["upstream"] == "/templated"
    sent = json.loads(short["upstreamSaw"]["body"])
    assert sent["kind"] == "short" and sent["text"] == "yo" and AWS_ID.match(sent["connection"])
    assert json.loads(other["upstreamSaw"]["body"]) == {"kind": "other"}
    assert mocked == {"route": "mocked", "room": "lobby"}
    relayed = [r for r in upstream.requests if r.target == "/messages"][-1]
    assert relayed.method == "POST" and AWS_ID.match(relayed.header("connectionid") or "")


# -- $connect: refusal, authorizers -------------------------------------------------------------------------
def test_connect_refused_by_its_integration_with_its_status(gateway: GatewayProcess) -> None:
    async def scenario(status: int) -> int:
        try:
            async with websockets.connect(f"{gateway.ws_url}/prod?status={status}"):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code  # type: ignore[no-any-return]

    assert run(scenario(403)) == 403
    assert run(scenario(500)) == 500
    assert run(scenario(204)) == 101  # any 2xx accepts
    assert run(scenario(999)) == 502  # not an HTTP status: the integration failed


def test_connect_picks_a_subprotocol(gateway: GatewayProcess) -> None:
    async def scenario() -> str | None:
        async with websockets.connect(f"{gateway.ws_url}/prod",
                                      subprotocols=["chat.v2", "chat.v1"]) as ws:  # type: ignore[list-item]
            return ws.subprotocol

    assert run(scenario()) == "chat.v2"


def test_connect_authorizer(gateway: GatewayProcess, events: Events) -> None:
    base = f"{gateway.ws_url}/guarded"

    async def status(query: str) -> int:
        try:
            async with websockets.connect(base + query):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code  # type: ignore[no-any-return]

    assert run(status("")) == 401  # no identity source: no call
    assert run(status("?token=wrong")) == 403  # the authorizer denies

    async def allowed() -> None:
        async with websockets.connect(base + "?token=letmein") as ws:
            await ws.send("hello")
            await asyncio.sleep(0)

    run(allowed())
    message = events.wait(lambda e: context_of(e).get("stage") == "guarded" and context_of(e).get("eventType")
                          == "MESSAGE")
    assert context_of(message)["authorizer"]["principalId"] == "user-1"
    assert context_of(message)["authorizer"]["team"] == "blue"
    request = events.wait(lambda e: "authorizer" in e and (e["authorizer"].get("queryStringParameters") or {})
                          .get("token") == "letmein")["authorizer"]
    assert request["type"] == "REQUEST" and request["methodArn"].startswith("arn:aws:execute-api:")


def test_connect_requires_an_api_key(gateway: GatewayProcess) -> None:
    base = f"{gateway.ws_url}/keyed"

    async def attempt(key: str | None) -> Any:
        try:
            async with websockets.connect(base, additional_headers={"x-api-key": key} if key else {}) as ws:
                await ws.send("hi")
                return await ws.recv()
        except InvalidStatus as exc:
            return exc.response.status_code

    assert run(attempt(None)) == 403
    assert run(attempt("wskey-wrong-0123456789abcd")) == 403
    assert run(attempt("wskey-0123456789abcdefghij")) == "keyed in"


def test_connect_with_aws_iam_presigned_url(gateway: GatewayProcess, events: Events) -> None:
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("GET", f"{gateway.ws_url.replace('ws://', 'http://')}/signed")
    SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "execute-api", "us-east-1", expires=60).add_auth(request)
    signed = request.url.replace("http://", "ws://")

    async def attempt(url: str) -> Any:
        try:
            async with websockets.connect(url) as ws:
                await ws.send("signed hello")
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert run(attempt(f"{gateway.ws_url}/signed")) == 403  # not signed
    assert run(attempt(signed.replace("X-Amz-Signature=", "X-Amz-Signature=0"))) == 403
    assert run(attempt(signed)) == 101
    message = events.wait(lambda e: context_of(e).get("stage") == "signed")
    identity = context_of(message)["identity"]
    assert identity["userArn"] == "arn:aws:iam::111122223333:user/poster" and identity["accessKey"] == ACCESS_KEY


def test_connect_throttle_caps_new_connections(gateway: GatewayProcess) -> None:
    """AWS caps new connections per second; here a throttle on $connect does (shared by the workers)."""
    async def statuses() -> list[int]:
        out = []
        for _ in range(4):
            try:
                async with websockets.connect(f"{gateway.ws_url}/limited"):
                    out.append(101)
            except InvalidStatus as exc:
                out.append(exc.response.status_code)
        return out

    assert run(statuses()) == [101, 101, 429, 429]


def test_message_routes_are_throttled(gateway: GatewayProcess) -> None:
    async def scenario() -> list[str]:
        async with websockets.connect(f"{gateway.ws_url}/metered") as ws:
            answers = []
            for _ in range(4):
                await ws.send("m")
                answers.append(await ws.recv())
            return answers

    answers = run(scenario())
    assert answers[:2] == ["served", "served"]
    for answer in answers[2:]:
        refused = json.loads(answer)
        assert refused["message"] == "Too Many Requests" and AWS_ID.match(refused["connectionId"])


# -- @connections across 2 workers ----------------------------------------------------------------------------
def test_management_api_across_workers_with_boto3(gateway: GatewayProcess, events: Events) -> None:
    client = management(gateway)
    url = f"{gateway.ws_url}/prod"

    async def scenario() -> list[str]:
        # connections until both workers own some (the id says which worker owns it)
        connections: list[tuple[Any, str]] = []
        while len({owner_of(c) for _, c in connections}) < 2:
            assert len(connections) < 40, "every connection went to one worker"
            connections.append(await connect_and_id(url, user_agent_header="tester/1.0"))
        loop = asyncio.get_running_loop()
        for ws, connection_id in connections:
            await loop.run_in_executor(None, lambda c=connection_id: client.post_to_connection(
                ConnectionId=c, Data=b"pushed to " + c.encode()))
            assert await ws.recv() == "pushed to " + connection_id
            info = await loop.run_in_executor(None, lambda c=connection_id: client.get_connection(ConnectionId=c))
            assert info["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "tester/1.0"}
            assert abs(info["ConnectedAt"].timestamp() - time.time()) < 60
            assert info["LastActiveAt"] >= info["ConnectedAt"]
        for ws, connection_id in connections:
            await loop.run_in_executor(None, lambda c=connection_id: client.delete_connection(ConnectionId=c))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1000
            with pytest.raises(client.exceptions.GoneException):
                await loop.run_in_executor(None, lambda c=connection_id: client.post_to_connection(
                    ConnectionId=c, Data=b"too late"))
        for _, connection_id in connections:  # $disconnect ran for each, on its own worker
            assert context_of(event_of(events, connection_id, "$disconnect"))["disconnectStatusCode"] == 1000
        return [connection_id for _, connection_id in connections]

    node = owner_of(run(scenario())[0])[0]  # type: ignore[index]
    with pytest.raises(client.exceptions.GoneException):  # an id of a worker that does not exist
        client.get_connection(ConnectionId=new_connection_id(node, 4_000_000))
    with pytest.raises(client.exceptions.GoneException):  # another node's, and no Redis to reach it
        client.get_connection(ConnectionId=new_connection_id(node ^ 1, os.getpid()))
    with pytest.raises(client.exceptions.GoneException):
        client.delete_connection(ConnectionId="not-an-id")


def test_management_api_requires_sigv4(gateway: GatewayProcess) -> None:
    response = httpx.post(f"{gateway.url}/prod/@connections/AAAAAAAAAAAAAAA=", content=b"x")
    assert response.status_code == 403
    assert httpx.get(f"{gateway.url}/pairs/@connections/AAAAAAAAAAAAAAA=").status_code == 410  # NONE: open
    assert httpx.get(f"{gateway.url}/prod/@connections").status_code in (403, 404)


def test_metrics_count_connections_messages_and_errors(gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{gateway.ws_url}/prod") as ws:
            await ws.send(json.dumps({"action": "echo"}))
            await ws.recv()
            text = httpx.get(f"{gateway.admin}/metrics").text
            live = re.search(r'fastgw_websocket_connections\{api="chat",stage="prod"\} (\S+)', text)
            assert live is not None and float(live.group(1)) >= 1

    run(scenario())
    deadline = time.monotonic() + 5  # workers flush their counts every second
    while True:
        text = httpx.get(f"{gateway.admin}/metrics").text
        found = re.search(r'fastgw_websocket_messages_total\{api="chat",route="echo",stage="prod"\} [1-9]', text)
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert found
    assert re.search(r'fastgw_websocket_connects_total\{api="chat",stage="prod"\} [1-9]', text)
    assert re.search(r'fastgw_websocket_errors_total\{api="chat",kind="integration",stage="prod"\} [1-9]', text) \
        or "fail" not in text  # the failing route of another test may not have run first
    log = gateway.log_path.read_text()
    assert '"eventType":"CONNECT"' in log and '"eventType":"MESSAGE"' in log and '"eventType":"DISCONNECT"' in log


# -- limits and hostile clients (RELIABILITY.md WS-*) -----------------------------------------------------------
LIMITS = """
functions:
  ws: handlers.ws:handler
apis:
  - name: tight
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket:
      maxMessageBytes: 65536
      idleTimeoutSeconds: IDLE
      sendQueueBytes: 131072
      sendTimeoutSeconds: 1
      allowedOrigins: [https://good.example]
      managementAuthorization: NONE
    stages:
      t: {}
    routes:
      - route: $disconnect
        integration: {type: FUNCTION, uri: ws}
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {type: FUNCTION, uri: ws}
  - name: big
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {maxMessageBytes: 1048576, managementAuthorization: NONE, allowedOrigins: [https://good.example]}
    stages:
      big: {}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {type: MOCK, responses: {$default: {responseTemplates: {$default: 'took it'}}}}
  - name: brief
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {maxLifetimeSeconds: 1, managementAuthorization: NONE}
    stages:
      brief: {}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {type: FUNCTION, uri: ws}
"""


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("wstight")
    events = directory / "events.jsonl"
    process = GatewayProcess(LIMITS.replace("IDLE", "1.5"), directory, workers=1,
                             env={"PYTHONPATH": str(TESTS), "WS_EVENTS": str(events)})
    process.start()
    process.events = Events(events)  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.stop()


GOOD = {"Origin": "https://good.example"}


@pytest.mark.reliability("WS-01")
def test_ws01_origin_allowlist(tight: GatewayProcess) -> None:
    async def status(origin: str | None) -> int:
        headers = {"Origin": origin} if origin else {}
        try:
            async with websockets.connect(f"{tight.ws_url}/t", origin=None,
                                          additional_headers=headers):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code  # type: ignore[no-any-return]

    assert run(status("https://evil.example")) == 403
    assert run(status(None)) == 403
    assert run(status("https://good.example")) == 101


@pytest.mark.reliability("WS-03")
def test_ws03_message_over_the_limit_closes_1009(tight: GatewayProcess) -> None:
    async def scenario() -> tuple[int | None, str]:
        async with websockets.connect(f"{tight.ws_url}/t", additional_headers=GOOD) as ws:
            await ws.send("x" * 65536)  # at the limit: routed
            answer = json.loads(await ws.recv())
            assert answer["route"] == "$default"
            connection_id = answer["connectionId"]
            await ws.send("x" * 65537)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, connection_id

    code, connection_id = run(scenario())
    assert code == 1009
    disconnect = event_of(tight.events, connection_id, "$disconnect")  # type: ignore[attr-defined]
    assert context_of(disconnect)["disconnectStatusCode"] == 1009


def test_idle_timeout_closes_1001_and_runs_disconnect(tight: GatewayProcess) -> None:
    async def scenario() -> tuple[int | None, str, float]:
        async with websockets.connect(f"{tight.ws_url}/t", additional_headers=GOOD,
                                      ping_interval=None) as ws:
            await ws.send("hi")
            connection_id = json.loads(await ws.recv())["connectionId"]
            began = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, connection_id, time.monotonic() - began

    code, connection_id, waited = run(scenario())
    assert code == 1001 and 1.0 < waited < 5
    disconnect = event_of(tight.events, connection_id, "$disconnect")  # type: ignore[attr-defined]
    assert context_of(disconnect)["disconnectStatusCode"] == 1001


def test_connection_lifetime_closes_1001_however_busy(tight: GatewayProcess) -> None:
    async def scenario() -> tuple[int | None, float, int]:
        async with websockets.connect(f"{tight.ws_url}/brief") as ws:
            began = time.monotonic()
            answered = 0
            with pytest.raises(ConnectionClosed):
                while time.monotonic() - began < 10:
                    await ws.send("busy")
                    await ws.recv()
                    answered += 1
                    await asyncio.sleep(0.1)
            return ws.close_code, time.monotonic() - began, answered

    code, lasted, answered = run(scenario())
    assert code == 1001 and 0.8 < lasted < 4 and answered >= 5


def test_connection_ids_name_their_worker() -> None:
    for node, pid in ((0, 1), (0xABCDEF, 4242), (2**24 - 1, 2**22)):
        connection_id = new_connection_id(node, pid)
        assert AWS_ID.match(connection_id) and owner_of(connection_id) == (node, pid)
    assert len({new_connection_id(1, 7) for _ in range(1000)}) == 1000
    for bad in ("", "AAAA", "not-an-id-at-all=", "AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAA==", "AAAAAAAAAAAAA!A="):
        assert owner_of(bad) is None, bad


def _raw_handshake(gateway: GatewayProcess, path: str = "/t", version: bytes = b"13", key: bool = True,
                   extra: bytes = b"", method: bytes = b"GET", on_http_port: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port if on_http_port else gateway.ws_port), timeout=5)
    request = (method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nOrigin: https://good.example\r\n")
    if key:
        request += b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
    sock.sendall(request + b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")
    return sock


def _read_until_closed(sock: socket.socket, timeout: float = 5.0, head_only: bool = False) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
            if head_only and b"\r\n\r\n" in out:
                break
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def _frame(opcode: int, payload: bytes, mask: bool = True, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    head += bytes([bit | size]) if size < 126 else bytes([bit | 126]) + struct.pack(">H", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _upgraded(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 101"), data
    return data.split(b"\r\n\r\n", 1)[1]


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """The server's (unmasked) frames in `data`: (opcode, payload)."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, size = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if size == 126:
            (size,) = struct.unpack(">H", data[i:i + 2])
            i += 2
        elif size == 127:
            (size,) = struct.unpack(">Q", data[i:i + 8])
            i += 8
        out.append((opcode, data[i:i + size]))
        i += size
    return out


def _close_code(data: bytes) -> int | None:
    """The code of the first close frame in `data` (1005: a close frame without one), None: no close frame."""
    for opcode, payload in _frames(data):
        if opcode == 8:
            return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
    return None


@pytest.mark.reliability("WS-02")
def test_ws02_bad_handshakes(tight: GatewayProcess) -> None:
    with _raw_handshake(tight, version=b"8") as sock:  # RFC 6455 4.4: 426 and the version spoken
        answer = _read_until_closed(sock, 3, head_only=True)
        assert answer.startswith(b"HTTP/1.1 426") and b"\r\nSec-WebSocket-Version: 13\r\n" in answer
    with _raw_handshake(tight, key=False) as sock:
        assert _read_until_closed(sock, 3, head_only=True).startswith(b"HTTP/1.1 400")
    for body in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"):  # a handshake with a body
        with _raw_handshake(tight, extra=body) as sock:
            sock.sendall(b"hello" if b"Length" in body else b"5\r\nhello\r\n0\r\n\r\n")
            assert _read_until_closed(sock, 3, head_only=True).startswith(b"HTTP/1.1 400"), body
    with _raw_handshake(tight, path="/t/other") as sock:  # a WebSocket API is at the stage's root
        assert _read_until_closed(sock, 3, head_only=True).startswith(b"HTTP/1.1 404")
    with _raw_handshake(tight, method=b"POST") as sock:
        assert _read_until_closed(sock, 3, head_only=True).startswith(b"HTTP/1.1 405")


@pytest.mark.reliability("WS-03")
def test_ws03_a_frame_announcing_too_much_is_closed_1009_before_it_is_read(tight: GatewayProcess) -> None:
    """1 MiB + 1 announced on a stage whose limit is 1 MiB: the close comes before any of the payload is sent
    (a message of 512 KiB, over the listener's default but within the stage's limit, is routed)."""
    with _raw_handshake(tight, path="/big") as sock:
        rest = _upgraded(sock)
        payload, key = b"x" * 512 * 1024, os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key * (len(payload) // 4), "big")).to_bytes(
            len(payload), "big")
        sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack(">Q", len(payload)) + key + masked)
        while b"took it" not in rest and (chunk := sock.recv(4096)):
            rest += chunk
        assert b"took it" in rest, _frames(rest)
        sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack(">Q", 1024 * 1024 + 1) + os.urandom(4))
        assert _close_code(rest + _read_until_closed(sock)) == 1009


@pytest.mark.parametrize(("frame", "code"), [
    pytest.param(_frame(1, b'{"a": 1}', mask=False), 1002, id="unmasked", marks=pytest.mark.reliability("WS-04")),
    pytest.param(_frame(1, b"\xff\xfe"), 1007, id="invalid UTF-8", marks=pytest.mark.reliability("WS-05")),
    pytest.param(_frame(9, b"p" * 126), 1002, id="ping over 125 bytes"),
    pytest.param(_frame(9, b"p", fin=False), 1002, id="fragmented ping"),
])
def test_ws04_ws05_protocol_violations_close_with_their_code(tight: GatewayProcess, frame: bytes, code: int) -> None:
    """RFC 6455 5.1 / 8.1 / 5.5: the connection is closed with the code, and the message never reaches a route."""
    with _raw_handshake(tight) as sock:
        rest = _upgraded(sock)
        sock.sendall(frame)
        closing = rest + _read_until_closed(sock)
    assert _close_code(closing) == code
    assert b"route" not in closing
    with _raw_handshake(tight) as sock:  # the worker is fine
        _upgraded(sock)
        sock.sendall(_frame(1, b"still here"))
        assert b"still here" in sock.recv(4096)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


PINGS = """
server: {webSocket: {pingIntervalSeconds: 0.5, pingTimeoutSeconds: 0.5, maxPingsPerSecond: 10}}
apis:
  - name: pinged
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    stages:
      p: {}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {type: MOCK, responses: {$default: {responseTemplates: {$default: 'pong?'}}}}
"""


@pytest.mark.reliability("WS-07")
def test_ws07_ping_flood_closes_1008_and_a_silent_peer_1011(start_gateway: Any) -> None:
    """10 000 pings from a client that never reads the pongs: closed with 1008 past maxPingsPerSecond, the
    worker's memory flat; a client that never answers the keepalive ping: closed with 1011 after
    pingIntervalSeconds + pingTimeoutSeconds."""
    gateway = start_gateway(PINGS)
    worker = gateway.worker_pids()[0]
    before = _rss_kib(worker)
    with _raw_handshake(gateway, path="/p") as sock:
        rest = _upgraded(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        ping = _frame(9, b"p" * 125)
        try:
            for _ in range(100):
                sock.sendall(ping * 100)
        except OSError:
            pass  # closed under the flood
        closing = rest + _read_until_closed(sock)
    frames = _frames(closing)
    assert _close_code(closing) == 1008
    assert sum(1 for opcode, _ in frames if opcode == 10) < 10_000  # pongs stopped with the close
    assert _rss_kib(worker) - before < 20_000

    with _raw_handshake(gateway, path="/p") as sock:  # reads, never answers a ping
        rest = _upgraded(sock)
        began = time.monotonic()
        closing = rest + _read_until_closed(sock, 10)
        waited = time.monotonic() - began
    assert [opcode for opcode, _ in _frames(closing)][:1] == [9]  # the keepalive ping came first
    assert _close_code(closing) == 1011 and 0.8 < waited < 5

    async def answering() -> str:  # a client that answers pings stays, well past the timeout
        async with websockets.connect(f"{gateway.ws_url}/p", ping_interval=None) as ws:
            await asyncio.sleep(1.5)
            await ws.send("x")
            return await ws.recv()  # type: ignore[no-any-return]

    assert run(answering()) == "pong?"


@pytest.mark.reliability("WS-08")
def test_ws08_slow_consumer_is_closed_and_memory_stays_bounded(tight: GatewayProcess) -> None:
    """A client that stops reading while the backend pushes 100 MB through @connections: posts wait for the
    bounded queue (back-pressure on the poster), then the connection is closed and later posts are 410."""
    worker = tight.worker_pids()[0]
    before = _rss_kib(worker)
    with _raw_handshake(tight) as sock:
        rest = _upgraded(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(_frame(1, b"who"))
        time.sleep(0.2)
        data = rest + sock.recv(4096)
        connection_id = json.loads(data[data.index(b"{"):data.index(b"}") + 1])["connectionId"]
        chunk = b"m" * 65536
        gone_after = None
        began = time.monotonic()
        with httpx.Client(base_url=tight.url, timeout=10) as client:
            for i in range(1600):  # up to 100 MB
                status = client.post(f"/t/@connections/{connection_id}", content=chunk).status_code
                if status == 410:
                    gone_after = i
                    break
                assert status == 200
        elapsed = time.monotonic() - began
    assert gone_after is not None
    # what was accepted fits in the connection's queue (128 KiB) plus what the kernel's send buffer
    # (tcp_wmem's maximum) and granian hold; an unbounded queue accepts ~10 times more before closing
    send_buffer = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    assert gone_after * len(chunk) <= 131072 + send_buffer + 1024 * 1024
    assert elapsed < 15
    assert _rss_kib(worker) - before < 30_000


# -- the listener is the same whatever granian's interface ------------------------------------------------------
def test_websocket_apis_under_the_rsgi_interface(tmp_path: Path, start_gateway: Any) -> None:
    """`interface: auto` picks RSGI when no route needs raw paths: WebSocket APIs are not a reason for ASGI any
    more (their clients have their own listener), close codes included."""
    events = tmp_path / "events.jsonl"
    config = LIMITS.replace("IDLE", "600").replace(
        "    type: WEBSOCKET\n", "    type: WEBSOCKET\n    encodedSlashes: DECODE\n")
    gateway = start_gateway(config, env={"PYTHONPATH": str(TESTS), "WS_EVENTS": str(events)})
    assert "interface rsgi" in gateway.stderr()
    assert f"WebSocket APIs listening on ws://127.0.0.1:{gateway.ws_port}" in gateway.stderr()
    with _raw_handshake(gateway, on_http_port=True) as sock:  # refused (RSGI cannot say why: its body)
        assert _read_until_closed(sock, 3, head_only=True).startswith(b"HTTP/1.1 400")

    async def scenario() -> tuple[Any, str]:
        async with websockets.connect(f"{gateway.ws_url}/t", additional_headers=GOOD) as ws:
            await ws.send(json.dumps({"action": "anything"}))
            answer = json.loads(await ws.recv())
            response = httpx.post(f"{gateway.url}/t/@connections/{answer['connectionId']}", content=b"pushed")
            assert response.status_code == 200
            assert await ws.recv() == "pushed"
            return answer, answer["connectionId"]

    answer, connection_id = run(scenario())
    assert answer["route"] == "$default"
    assert context_of(event_of(Events(events), connection_id, "$disconnect"))["eventType"] == "DISCONNECT"

    async def refused() -> int:
        with pytest.raises(InvalidStatus) as caught:
            await websockets.connect(f"{gateway.ws_url}/t",
                                     additional_headers={"Origin": "https://evil.example"})
        return caught.value.response.status_code  # type: ignore[no-any-return]

    async def deleted() -> int | None:
        async with websockets.connect(f"{gateway.ws_url}/t", additional_headers=GOOD) as ws:
            await ws.send("x")
            connection_id = json.loads(await ws.recv())["connectionId"]
            assert httpx.delete(f"{gateway.url}/t/@connections/{connection_id}").status_code == 204
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert run(refused()) == 403
    assert run(deleted()) == 1000


# -- configuration errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("routes", "extra", "message"), [
    ("- {route: $connected, integration: {type: MOCK}}", "", "apis[0].routes[0].route (line 9): must be $connect"),
    ("- {route: x, authorizationType: AWS_IAM, integration: {type: MOCK}}", "",
     "apis[0].routes[0].authorizationType (line 9): authorizers run on $connect only"),
    ("- {route: $connect, routeResponseSelectionExpression: $default, integration: {type: MOCK}}", "",
     "$connect cannot answer the client"),
    ("- {route: $default, integration: {type: MOCK}}", "",
     "apis[0].webSocket.managementAuthorization (line 3): requires AWS_IAM authorization, but the gateway "
     "trusts no IAM"),
    ("- {route: $default, integration: {type: FUNCTION_CUSTOM, uri: x}}", "webSocket: {managementAuthorization: NONE}",
     "a WebSocket route takes FUNCTION, HTTP_PROXY, HTTP, MOCK"),
])
def test_config_errors_name_the_place(tmp_path: Path, routes: str, extra: str, message: str) -> None:
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(f"""
apis:
  - name: a
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    {extra}
    stages: {{s: {{}}}}
    routes:
      {routes}
""")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, result.stdout + result.stderr


# -- the example chat room (examples/chat.yaml) runs as documented -----------------------------------------------
def test_example_chat_room(tmp_path: Path) -> None:
    examples = TESTS.parent / "examples"
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "chat.py").write_text((examples / "handlers" / "chat.py").read_text())
    gateway = GatewayProcess((examples / "chat.yaml").read_text(), tmp_path, workers=2,
                             env={"CHAT_DB": str(tmp_path / "chat.sqlite3")})
    gateway.env["CHAT_CALLBACK"] = f"{gateway.url}/chat"  # @connections: the HTTP port
    try:
        gateway.start()
        _chat(gateway)
    finally:
        gateway.stop()


def _chat(gateway: GatewayProcess) -> None:
    url = f"{gateway.ws_url}/chat"

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 400
        async with websockets.connect(url + "?name=ada") as ada, websockets.connect(url + "?name=bob") as bob:
            await ada.send(json.dumps({"action": "members"}))
            assert json.loads(await ada.recv()) == {"members": ["ada", "bob"]}
            await ada.send(json.dumps({"action": "sendmessage", "text": "hello"}))
            assert json.loads(await ada.recv()) == {"from": "ada", "text": "hello"}
            assert json.loads(await bob.recv()) == {"from": "ada", "text": "hello"}
            await bob.send("hi")
            assert "sendmessage" in json.loads(await bob.recv())["error"]
        async with websockets.connect(url + "?name=cy") as cy:
            deadline = time.monotonic() + 10
            while True:  # $disconnect removed ada and bob
                await cy.send(json.dumps({"action": "members"}))
                members = json.loads(await cy.recv())["members"]
                if members == ["cy"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert members == ["cy"]

    run(scenario())


def test_the_websocket_port_defaults_next_to_the_http_port_and_must_be_free(tmp_path: Path) -> None:
    import subprocess
    import sys

    chat = str(TESTS.parent / "examples" / "chat.yaml")
    routes = subprocess.run([sys.executable, "-m", "fastgw", "routes", chat], capture_output=True, text=True,
                            timeout=60)
    assert "WebSocket APIs listen on ws://127.0.0.1:8081 (@connections: the HTTP port 8080)" in routes.stdout
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        gateway = GatewayProcess(PINGS, tmp_path)
        gateway.ws_port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"the WebSocket port 127.0.0.1:{gateway.ws_port} is already in use"):
            gateway.start()
        gateway.stop()


def test_openapi_export_refuses_websocket_apis() -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "fastgw", "export", str(TESTS.parent / "examples" / "chat.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "is a WebSocket API: it has no OpenAPI form" in result.stderr


def test_a_live_reload_reaches_open_connections(tmp_path: Path, start_gateway: Any) -> None:
    def config(answer: str) -> str:
        return f"""
apis:
  - name: live
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    webSocket: {{managementAuthorization: NONE}}
    stages:
      live: {{}}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {{type: MOCK, responses: {{$default: {{responseTemplates: {{$default: '{answer}'}}}}}}}}
"""

    gateway = start_gateway(config("before"), workers=2)

    async def scenario() -> list[str]:
        async with websockets.connect(f"{gateway.ws_url}/live") as ws:
            await ws.send("x")
            answers = [await ws.recv()]
            gateway.config_path.write_text(config("after"))
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(None, lambda: httpx.post(f"{gateway.admin}/reload", timeout=30))
            assert response.status_code == 202, response.text
            await ws.send("x")
            answers.append(await ws.recv())
            return answers

    assert run(scenario()) == ["before", "after"]


def test_shutdown_closes_connections_1001_and_runs_disconnect(tmp_path: Path, start_gateway: Any) -> None:
    import signal

    events = tmp_path / "events.jsonl"
    gateway = start_gateway(LIMITS.replace("IDLE", "600"), workers=2,
                            env={"PYTHONPATH": str(TESTS), "WS_EVENTS": str(events)})

    async def scenario() -> list[tuple[int | None, str]]:
        connections = []
        for _ in range(4):
            ws, connection_id = await connect_and_id(f"{gateway.ws_url}/t",
                                                     additional_headers=GOOD)
            connections.append((ws, connection_id))
        gateway.signal(signal.SIGTERM)
        closed = []
        for ws, connection_id in connections:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            closed.append((ws.close_code, connection_id))
        return closed

    for code, connection_id in run(scenario()):
        assert code == 1001
        assert context_of(event_of(Events(events), connection_id, "$disconnect"))["disconnectStatusCode"] == 1001
    assert gateway.proc.wait(30) == 0
