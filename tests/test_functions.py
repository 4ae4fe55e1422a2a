"""FUNCTION integrations: Python handlers run as Lambda functions behind REST (payload 1.0) and HTTP
APIs (payload 2.0). The events handlers receive are compared field by field with AWS's documented
examples in ../shared/conformance/events; the response mapping follows reference/aws.md c.3."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import SHARED
from handlers.lambdas import PNG

from fastgw.errors import GatewayError
from fastgw.events import matches_binary
from fastgw.handlers import FunctionPlan
from fastgw.integrations.function import map_result_v1, map_result_v2
from fastgw.integrations.headers import AWS_PROXY_RULES, PLAIN_RULES

EVENTS = SHARED / "conformance" / "events"
TESTS = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": str(TESTS)}


def fixture(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def shape(value):
    """The structure of a JSON value: keys of objects, element shape of lists, type names of scalars."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "null" if value is None else type(value).__name__


MAPS = frozenset(("headers", "multiValueHeaders", "queryStringParameters", "multiValueQueryStringParameters",
                  "pathParameters", "stageVariables"))


def compare(ours: dict, theirs: dict, path: str = "", optional: frozenset[str] = frozenset()) -> list[str]:
    """Field-by-field differences between two events' shapes; `optional` paths may be null or absent."""
    problems = []
    for key in sorted(set(ours) | set(theirs)):
        where = f"{path}.{key}" if path else key
        if where in optional:
            continue  # present only in some requests (mutual TLS, an authorizer, ...)
        if key not in ours or key not in theirs:
            if where not in optional:
                problems.append(f"{where}: {'missing' if key not in ours else 'not in AWS example'}")
            continue
        a, b = ours[key], theirs[key]
        if where in MAPS:  # maps of names chosen by the caller: their values must have AWS's shape
            values = {repr(v) for v in (a.values() if isinstance(a, dict) else [])}
            aws_values = {repr(v) for v in (b.values() if isinstance(b, dict) else [])}
            if "null" not in (a, b) and not (isinstance(a, dict) == isinstance(b, dict)
                                             and values <= aws_values | {"'str'"}):
                problems.append(f"{where}: {a} vs {b}")
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            problems.extend(compare(a, b, where, optional))
        elif isinstance(a, dict) != isinstance(b, dict) or (type(a) is not type(b) and "null" not in (a, b)):
            problems.append(f"{where}: {a} vs {b}")
    return problems


ECHO_URI = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:"
            "function:echo/invocations")


def config(api_type: str, handler: str = "handlers.lambdas:echo", version: str | None = None,
           extra_api: str = "", functions_extra: str = "", stage: str | None = None) -> str:
    stage = stage or ("$default" if api_type == "HTTP" else "prod")
    version_line = f", payloadFormatVersion: '{version}'" if version else ""
    return f"""
functions:
  echo: {{handler: "{handler}", timeout: 2}}
  sleepy: handlers.lambdas:sleepy
  slow: {{handler: handlers.lambdas:slow, timeout: 0.5}}
  boom: handlers.lambdas:boom
  result: handlers.lambdas:result
  echo-async: handlers.lambdas:echo_async
{functions_extra}
apis:
  - name: fn
    type: {api_type}
{extra_api}
    stages:
      {stage}: {{variables: {{color: blue, size: "10"}}}}
    routes:
      - route: ANY /items/{{id}}
        integration: {{type: FUNCTION, uri: "{ECHO_URI}"{version_line}}}
      - route: GET /sleep
        integration: {{type: FUNCTION, uri: sleepy{version_line}}}
      - route: GET /slow
        integration: {{type: FUNCTION, uri: slow{version_line}}}
      - route: GET /boom
        integration: {{type: FUNCTION, uri: boom{version_line}}}
      - route: ANY /result
        integration: {{type: FUNCTION, uri: "arn:aws:lambda:us-east-1:123456789012:function:result"{version_line}}}
      - route: GET /async
        integration: {{type: FUNCTION, uri: "echo-async"{version_line}}}
      - route: ANY /fn/{{proxy+}}
        integration: {{type: FUNCTION, uri: "${{stageVariables.fname}}"{version_line}}}
"""


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    from support.gateway import GatewayProcess

    text = config("REST", extra_api="    binaryMediaTypes: [image/png]").replace(
        "variables: {color: blue, size: \"10\"}", "variables: {color: blue, size: \"10\", fname: echo}")
    gateway = GatewayProcess(text, tmp_path_factory.mktemp("rest"), workers=2, env=ENV).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def http_api(tmp_path_factory):
    from support.gateway import GatewayProcess

    text = config("HTTP").replace("variables: {color: blue, size: \"10\"}",
                                  "variables: {color: blue, size: \"10\", fname: echo}")
    gateway = GatewayProcess(text, tmp_path_factory.mktemp("http"), workers=1, env=ENV).start()
    yield gateway
    gateway.stop()


def echo(gateway, method: str, path: str, **kwargs) -> tuple[httpx.Response, dict]:
    response = httpx.request(method, f"{gateway.url}{path}", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response, response.json()


# -- payload 1.0 (REST) ---------------------------------------------------------------------------------
def test_rest_event_matches_the_aws_example_field_by_field(rest):
    response, body = echo(rest, "POST", "/prod/items/42?parameter1=value1&parameter1=value2&parameter2=value",
                          headers=[("header1", "value1"), ("header2", "value1"), ("header2", "value2"),
                                   ("user-agent", "agent/1")], content=b"Hello from Lambda!")
    event = body["event"]
    aws = fixture("awsdocs/rest-api-lambda-proxy-event-v1.json")
    # clientCert: only with mutual TLS (AWS's example shows one).
    assert compare(shape(event), shape(aws), optional=frozenset({"requestContext.identity.clientCert"})) == []
    assert compare(shape(event), shape(fixture("aws-lambda-go/apigw-request.json")), optional=frozenset({
        "isBase64Encoded", "requestContext.identity.clientCert", "requestContext.identity.apiKey",
        "requestContext.identity.apiKeyId", "requestContext.identity.principalOrgId",
        "requestContext.authorizer"})) == []
    assert "version" not in event  # REST's 1.0 events have none
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/items/{id}", "/items/42", "POST")
    assert event["headers"]["header2"] == "value2"  # the last value
    assert event["multiValueHeaders"]["header2"] == ["value1", "value2"]
    assert event["queryStringParameters"] == {"parameter1": "value2", "parameter2": "value"}
    assert event["multiValueQueryStringParameters"] == {"parameter1": ["value1", "value2"], "parameter2": ["value"]}
    assert event["pathParameters"] == {"id": "42"}
    assert event["stageVariables"] == {"color": "blue", "size": "10", "fname": "echo"}
    assert (event["body"], event["isBase64Encoded"]) == ("Hello from Lambda!", False)
    context = event["requestContext"]
    assert context["requestId"] == response.headers["x-amzn-requestid"]
    assert (context["stage"], context["resourcePath"], context["path"]) == ("prod", "/items/{id}", "/prod/items/42")
    assert (context["httpMethod"], context["protocol"]) == ("POST", "HTTP/1.1")
    assert context["identity"]["sourceIp"] == "127.0.0.1" and context["identity"]["userAgent"] == "agent/1"
    assert context["domainName"] == "127.0.0.1" and context["accountId"] == "123456789012"
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert len(context["apiId"]) == 10 and context["requestTime"].endswith("+0000")
    lambda_context = body["context"]
    assert lambda_context["function_name"] == "echo"
    assert lambda_context["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert 0 < lambda_context["remaining"] <= 2000 and lambda_context["aws_request_id"]


def test_rest_event_without_query_body_or_params(rest):
    _, body = echo(rest, "GET", "/prod/fn/a/b%20c")
    event = body["event"]
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["pathParameters"] == {"proxy": "a/b c"}  # decoded, as AWS gives them
    assert event["resource"] == "/fn/{proxy+}"


def test_rest_binary_media_types_drive_base64(rest):
    _, body = echo(rest, "PUT", "/prod/items/1", content=PNG, headers={"content-type": "image/png"})
    assert body["event"]["isBase64Encoded"] is True
    assert base64.b64decode(body["event"]["body"]) == PNG
    _, text = echo(rest, "PUT", "/prod/items/1", content=b"{}", headers={"content-type": "application/json"})
    assert (text["event"]["isBase64Encoded"], text["event"]["body"]) == (False, "{}")
    # A base64 result is decoded only when the client accepts a binary media type (AWS, c.3).
    binary = httpx.get(f"{rest.url}/prod/result?case=binary", headers={"accept": "image/png"})
    assert binary.status_code == 200 and binary.content == PNG
    assert binary.headers["content-type"] == "image/png"
    as_text = httpx.get(f"{rest.url}/prod/result?case=binary", headers={"accept": "application/json"})
    # The result's own content type (image/png) is a binary media type too: decoded.
    assert as_text.content == PNG


@pytest.mark.parametrize(("case", "status"), [
    ("plain", 201), ("multi", 200), ("no-status", 502), ("extra-key", 502), ("body-not-string", 502),
    ("bad-status", 502), ("not-a-dict", 502), ("bad-base64", 502)])
def test_rest_response_mapping(rest, case, status):
    response = httpx.get(f"{rest.url}/prod/result?case={case}", headers={"accept": "image/png"})
    assert response.status_code == status
    if status == 502:
        assert response.json() == {"message": "Internal server error"}
        assert response.headers["x-amzn-errortype"] == "InternalServerErrorException"
    if case == "plain":
        assert (response.text, response.headers["x-one"]) == ("created", "1")
        assert response.headers["content-type"] == "application/json"  # AWS's default
    if case == "multi":
        assert response.headers.get_list("x-a") == ["m1", "m2"]  # multiValueHeaders wins
        assert response.headers["x-b"] == "b"


def test_handler_exception_is_502_and_timeout_is_504(rest):
    response = httpx.get(f"{rest.url}/prod/boom")
    assert (response.status_code, response.json()) == (502, {"message": "Internal server error"})
    started = time.monotonic()
    response = httpx.get(f"{rest.url}/prod/slow", timeout=10)
    assert response.status_code == 504 and response.json() == {"message": "Endpoint request timed out"}
    assert time.monotonic() - started < 1.5  # the function's 0.5 s timeout, not the handler's 2 s
    assert "handler failed" in rest.stderr()  # the traceback is logged, never sent


def test_async_handler(rest):
    _, body = echo(rest, "GET", "/prod/async")
    assert body["event"]["resource"] == "/async"


def test_fifty_concurrent_sync_handlers_of_100ms(rest):
    """Acceptance: 50 concurrent requests to a sync handler that sleeps 100 ms finish in well under 5 s."""
    import asyncio

    async def run() -> tuple[list[int], float]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50), timeout=30) as client:
            started = time.monotonic()
            responses = await asyncio.gather(*(client.get(f"{rest.url}/prod/sleep") for _ in range(50)))
            return [r.status_code for r in responses], time.monotonic() - started

    statuses, elapsed = asyncio.run(run())
    print(f"\n50 concurrent 100 ms sync handlers: {elapsed:.2f} s")
    assert statuses == [200] * 50
    assert elapsed < 2.5  # one after another it would be 5 s; the thread pools run them side by side


# -- payload 2.0 (HTTP API) ------------------------------------------------------------------------------
def test_http_event_v2_matches_the_aws_example_field_by_field(http_api):
    response, body = echo(http_api, "POST", "/items/7?parameter1=value1&parameter1=value2&parameter2=value",
                          headers=[("header1", "value1"), ("header2", "value1"), ("header2", "value2"),
                                   ("cookie", "cookie1; cookie2"), ("user-agent", "agent")],
                          content=b"Hello from Lambda")
    event = body["event"]
    aws = fixture("awsdocs/http-api-lambda-event-v2.json")
    # authentication: only with mutual TLS; authorizer: only with a JWT or Lambda authorizer.
    optional = frozenset({"requestContext.authentication", "requestContext.authorizer"})
    assert compare(shape(event), shape(aws), optional=optional) == []
    assert compare(shape(event), shape(fixture("powertools/apiGatewayProxyV2Event.json")), optional=optional) == []
    assert (event["version"], event["routeKey"], event["rawPath"]) == ("2.0", "ANY /items/{id}", "/items/7")
    assert event["rawQueryString"] == "parameter1=value1&parameter1=value2&parameter2=value"
    assert event["cookies"] == ["cookie1", "cookie2"] and "cookie" not in event["headers"]
    assert event["headers"]["header2"] == "value1,value2"
    assert event["queryStringParameters"] == {"parameter1": "value1,value2", "parameter2": "value"}
    assert event["pathParameters"] == {"id": "7"} and event["stageVariables"]["color"] == "blue"
    assert (event["body"], event["isBase64Encoded"]) == ("Hello from Lambda", False)
    http = event["requestContext"]["http"]
    assert (http["method"], http["path"], http["sourceIp"], http["userAgent"]) == ("POST", "/items/7", "127.0.0.1",
                                                                                  "agent")
    assert event["requestContext"]["requestId"] == response.headers["x-amzn-requestid"]
    assert event["requestContext"]["stage"] == "$default"


def test_http_event_v2_minimal_matches_the_no_authorizer_example(http_api):
    _, body = echo(http_api, "GET", "/items/1")
    event = body["event"]
    assert "queryStringParameters" not in event and "cookies" not in event and "body" not in event
    aws = fixture("aws-lambda-go/apigw-v2-request-no-authorizer.json")
    optional = frozenset({"requestContext.authentication", "pathParameters", "stageVariables"})
    assert compare(shape(event), shape(aws), optional=optional) == []


def test_http_binary_request_is_base64(http_api):
    _, body = echo(http_api, "PUT", "/items/1", content=PNG, headers={"content-type": "application/octet-stream"})
    assert body["event"]["isBase64Encoded"] is True and base64.b64decode(body["event"]["body"]) == PNG


@pytest.mark.parametrize(("case", "status", "text", "content_type"), [
    ("v2-string", 200, "Hello", "application/json"),
    ("v2-object", 200, '{"message":"hi"}', "application/json"),
    ("v2-number", 200, "42", "application/json"),
    ("plain", 201, "created", "application/json"),
])
def test_http_v2_response_inference(http_api, case, status, text, content_type):
    response = httpx.get(f"{http_api.url}/result?case={case}")
    assert (response.status_code, response.text, response.headers["content-type"]) == (status, text, content_type)


def test_http_v2_cookies_and_base64(http_api):
    response = httpx.get(f"{http_api.url}/result?case=v2-cookies")
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
    assert httpx.get(f"{http_api.url}/result?case=binary").content == PNG  # HTTP APIs always decode
    assert httpx.get(f"{http_api.url}/result?case=bad-base64").status_code == 502


def test_http_api_payload_1_0_event(tmp_path, start_gateway):
    gateway = start_gateway(config("HTTP", version="1.0").replace("size: \"10\"}", "size: \"10\", fname: echo}"),
                            env=ENV)
    _, body = echo(gateway, "GET", "/items/3?a=1")
    event = body["event"]
    assert compare(shape(event), shape(fixture("awsdocs/http-api-lambda-event-v1.json")), optional=frozenset(
        {"requestContext.identity.clientCert", "body"})) == []
    assert event["version"] == "1.0" and event["requestContext"]["path"] == "/items/3"


# -- mapping units ---------------------------------------------------------------------------------------
def _plan(http_api: bool = False, binary: tuple[str, ...] = ()) -> FunctionPlan:
    return FunctionPlan("f", "arn", lambda e, c: None, False, 1.0, 1.0, "1.0", http_api, 128, "f", binary, {})


def test_map_result_v1_units():
    status, headers, body = map_result_v1(_plan(), {"statusCode": "204"}, "")
    assert (status, body, headers) == (204, b"", [("content-type", "application/json")])
    _, headers, _ = map_result_v1(_plan(), {"statusCode": 200, "headers": {"Content-Length": "99", "X": True}}, "")
    assert headers == [("Content-Length", "99"), ("X", "true"), ("content-type", "application/json")]
    # the gateway computes Content-Length itself: the header rules drop (or, awsCompat, remap) it
    assert PLAIN_RULES.finish(headers, "api") == [("X", "true"), ("content-type", "application/json")]
    assert AWS_PROXY_RULES.finish(headers, "api")[0] == ("x-amzn-Remapped-Content-Length", "99")
    _, _, body = map_result_v1(_plan(binary=("*/*",)), {"statusCode": 200, "isBase64Encoded": True,
                                                        "body": base64.b64encode(b"\x00").decode()}, "*/*")
    assert body == b"\x00"
    with pytest.raises(GatewayError):
        map_result_v1(_plan(), {"statusCode": 200, "headers": {"x": {"nested": 1}}}, "")
    with pytest.raises(GatewayError):
        map_result_v1(_plan(), {"statusCode": 700}, "")


def test_map_result_v2_units():
    assert map_result_v2(None) == (200, [("content-type", "application/json")], b"null")
    assert map_result_v2({"statusCode": 200, "body": "x", "headers": {"a": "1,2"}})[1][0] == ("a", "1,2")
    with pytest.raises(GatewayError):
        map_result_v2({"statusCode": 200, "cookies": "a=1"})
    assert matches_binary("image/png", ("image/*",)) and not matches_binary("text/plain", ("image/*",))


def test_missing_handler_and_import_error_are_config_errors(tmp_path):
    from fastgw.compile import load_plan
    from fastgw.config.loader import ConfigError, parse_text

    text = config("REST").replace("handlers.lambdas:boom", "handlers.nope:boom").replace(
        "echo-async: handlers.lambdas:echo_async", "")
    with pytest.raises(ConfigError) as info:
        load_plan(parse_text(text, str(tmp_path / "gw.yaml")))
    message = str(info.value)
    assert "functions.boom.handler" in message and "cannot import module 'handlers.nope'" in message
    assert "no handler for Lambda function 'echo-async'" in message
    assert "--function echo-async=module:function" in message


def test_code_uri_imports_handlers_from_a_directory(tmp_path):
    from fastgw.compile import load_plan
    from fastgw.config.loader import ConfigError, parse_text

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "coded_handler.py").write_text("def go(event, context):\n    return 'ok'\n")
    text = """
functions: {go: {handler: "coded_handler:go", codeUri: code, timeout: 1.5, memorySize: 512}}
apis:
  - {name: a, type: HTTP, stages: {$default: {}}, routes: [{route: GET /go, integration: {type: FUNCTION, uri: go}}]}
"""
    plan = load_plan(parse_text(text, str(tmp_path / "gw.yaml")))
    function = plan.stages[0].routes[0].integration
    assert (function.name, function.timeout, function.memory, function.version) == ("go", 1.5, 512, "2.0")
    with pytest.raises(ConfigError) as info:
        load_plan(parse_text(text.replace("codeUri: code", "codeUri: nowhere"), str(tmp_path / "gw.yaml")))
    assert "functions.go.codeUri" in str(info.value) and "no directory 'nowhere'" in str(info.value)
