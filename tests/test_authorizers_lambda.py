"""Lambda (custom) authorizers, end to end: a real gateway, Python authorizer handlers
(tests/handlers/authorizers.py), real clients. AWS's contract is reference/aws.md c.5; the events are
compared with AWS's documented examples in ../shared/conformance/events."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import SHARED
from test_functions import compare, shape

from fastgw.config.loader import ConfigError
from fastgw.openapi.source import LoadOptions
from fastgw.runtime import compile_file

TESTS = Path(__file__).resolve().parent
EVENTS = SHARED / "conformance" / "events"
OPENAPI = SHARED / "conformance" / "openapi"

TOKEN_ARN = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:"
             "function:tokenauth/invocations")
MOCK_CONTEXT = ('{"principal": "$context.authorizer.principalId", "tier": "$context.authorizer.tier", '
                '"n": "$context.authorizer.n", "ok": "$context.authorizer.ok"}')


def rest_config(ttl: int = 300, expression: str = "", timeout: int = 500) -> str:
    validation = f"\n        identityValidationExpression: '{expression}'" if expression else ""
    return f"""
functions:
  tokenauth: handlers.authorizers:token
  requestauth: handlers.authorizers:request
  echo: handlers.lambdas:echo
apis:
  - name: shop
    type: REST
    authorizers:
      tok:
        type: token
        authorizerUri: "{TOKEN_ARN}"
        identitySource: method.request.header.Authorization
        authorizerResultTtlInSeconds: {ttl}
        timeoutInMillis: {timeout}{validation}
      req:
        type: request
        authorizerUri: requestauth
        identitySource: "method.request.header.X-User, method.request.querystring.q"
        authorizerResultTtlInSeconds: 0
    stages:
      prod: {{variables: {{color: blue}}}}
    routes:
      - route: GET /items/{{id}}
        authorizer: tok
        integration:
          type: MOCK
          requestTemplates: {{application/json: '{{"statusCode": 200}}'}}
          responses: {{default: {{statusCode: "200", responseTemplates: {{application/json: '{MOCK_CONTEXT}'}}}}}}
      - route: POST /items/{{id}}
        authorizer: tok
        integration: {{type: MOCK, requestTemplates: {{application/json: '{{"statusCode": 200}}'}}}}
      - route: GET /event
        authorizer: tok
        integration: {{type: FUNCTION, uri: echo}}
      - route: GET /request
        authorizer: req
        integration: {{type: FUNCTION, uri: echo}}
      - route: GET /open
        integration: {{type: MOCK, requestTemplates: {{application/json: '{{"statusCode": 200}}'}}}}
"""


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    return tmp_path / "calls.log"


def count(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def env(calls: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(TESTS), "FASTGW_TEST_AUTH_CALLS": str(calls)}


def get(gateway, path: str, token: str | None = None, method: str = "GET", **kwargs) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = token
    return httpx.request(method, f"{gateway.url}{path}", headers=headers, timeout=10, **kwargs)


@pytest.mark.reliability("AU-15")
def test_token_authorizer_decisions(start_gateway, calls):
    gateway = start_gateway(rest_config(ttl=0), env=env(calls))
    assert get(gateway, "/prod/open").status_code == 200
    # no token: 401 without calling the authorizer
    response = get(gateway, "/prod/items/1")
    assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})
    assert response.headers["x-amzn-errortype"] == "UnauthorizedException"
    assert count(calls) == 0
    # allowed: $context.authorizer in the mapping template, context values stringified (REST)
    response = get(gateway, "/prod/items/1", "allow-get")
    assert response.status_code == 200, response.text
    assert response.json() == {"principal": "user-get", "tier": "gold", "n": "3", "ok": "true"}
    # explicit deny, no allow, Unauthorized, failures
    response = get(gateway, "/prod/items/1", "deny")
    assert (response.status_code, response.json()["message"]) == (
        403, "User is not authorized to access this resource with an explicit deny")
    assert response.headers["x-amzn-errortype"] == "AccessDeniedException"
    response = get(gateway, "/prod/items/1", "allow-get", method="POST")
    assert (response.status_code, response.json()["message"]) == (403, "User is not authorized to access this resource")
    assert get(gateway, "/prod/items/1", "unauthorized").status_code == 401
    for token, kind in (("boom", "AuthorizerFailureException"), ("malformed", "AuthorizerConfigurationException"),
                        ("bad-context", "AuthorizerConfigurationException")):
        response = get(gateway, "/prod/items/1", token)
        assert (response.status_code, response.json()) == (500, {"message": "Internal server error"}), token
        assert response.headers["x-amzn-errortype"] == kind, token


@pytest.mark.reliability("AU-15", "F-19")
def test_a_slow_authorizer_fails_closed_within_its_timeout(start_gateway, calls):
    gateway = start_gateway(rest_config(ttl=0, timeout=300), env=env(calls))
    started = time.monotonic()
    response = get(gateway, "/prod/items/1", "slow")
    assert response.status_code == 500 and response.headers["x-amzn-errortype"] == "AuthorizerFailureException"
    assert time.monotonic() - started < 1.5  # the handler sleeps 2 s


def test_identity_validation_expression_is_checked_before_calling(start_gateway, calls):
    gateway = start_gateway(rest_config(ttl=0, expression="allow-[a-z]+"), env=env(calls))
    assert get(gateway, "/prod/items/1", "deny").status_code == 401
    assert get(gateway, "/prod/items/1", "allow-get-x").status_code == 401  # a full match is required
    assert count(calls) == 0
    assert get(gateway, "/prod/items/1", "allow-get").status_code == 200
    assert count(calls) == 1


def test_results_are_cached_per_identity_and_evaluated_per_method(start_gateway, calls):
    gateway = start_gateway(rest_config(ttl=300), env=env(calls))
    for _ in range(3):
        assert get(gateway, "/prod/items/1", "allow-get").status_code == 200
    assert count(calls) == 1
    # the cached policy allows GET only: POST with the same token is refused without a new call
    assert get(gateway, "/prod/items/1", "allow-get", method="POST").status_code == 403
    assert count(calls) == 1
    # another token is another cache entry
    assert get(gateway, "/prod/items/2", "deny-one").status_code == 200
    assert get(gateway, "/prod/items/secret", "deny-one").status_code == 403  # explicit Deny wins
    assert count(calls) == 2
    # an error is not cached
    assert get(gateway, "/prod/items/1", "boom").status_code == 500
    assert get(gateway, "/prod/items/1", "boom").status_code == 500
    assert count(calls) == 4


def test_workers_of_a_node_share_the_result_cache(start_gateway, calls):
    gateway = start_gateway(rest_config(ttl=300), workers=2, env=env(calls))
    assert get(gateway, "/prod/items/1", "allow-get").status_code == 200
    pids = set()
    for _ in range(30):  # a new connection each: both workers answer
        response = get(gateway, "/prod/items/1", "allow-get")
        assert response.status_code == 200
    assert len(gateway.worker_pids()) == 2
    lines = calls.read_text().splitlines()
    pids = {line.split()[0] for line in lines}
    assert len(lines) == 1, lines  # one call for the node, not one per worker
    assert len(pids) == 1


def test_token_and_request_events_are_aws_shaped(start_gateway, calls, tmp_path):
    record = tmp_path / "events.jsonl"
    gateway = start_gateway(rest_config(ttl=0).replace("handlers.authorizers:token", "handlers.authorizers:token"),
                            env={**env(calls)})
    response = get(gateway, "/prod/event", "allow-me")
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    # requestContext.authorizer of the proxy event: principalId and the context (REST, payload 1.0)
    assert event["requestContext"]["authorizer"]["principalId"] == "user-allow-me"
    assert event["requestContext"]["authorizer"]["tier"] == "silver"
    # REQUEST authorizer: identity from a header and the query string; both are required
    assert get(gateway, "/prod/request", headers={"x-user": "bob"}).status_code == 401
    assert get(gateway, "/prod/request?q=1").status_code == 401
    response = get(gateway, "/prod/request?q=7", headers={"x-user": "bob"})
    assert response.status_code == 200, response.text
    authorizer = response.json()["event"]["requestContext"]["authorizer"]
    assert authorizer == {"principalId": "user-bob", "type": "REQUEST", "version": "", "q": "7", "stage": "blue"}
    assert not record.exists()


def test_authorizer_inputs_match_the_aws_examples(tmp_path):
    """The events a TOKEN and a REQUEST authorizer receive, field by field against AWS's examples."""
    import asyncio

    from fastgw.policies.authorizers.custom import CustomRoute

    seen: list[dict] = []

    class Down:
        method = "GET"
        path = "/prod/request"
        query = "QueryString1=queryValue1"
        headers = [("headerauth1", "headerValue1"), ("user-agent", "test")]
        client = "127.0.0.1"
        protocol = "HTTP/1.1"
        auth = None

    class Head:
        host = "abcdef123.execute-api.us-east-1.amazonaws.com"

    def capture(event, context):
        seen.append(event)
        return {"principalId": "me", "policyDocument": {"Statement": [
            {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}]}}

    config_text = """
functions: {}
apis:
  - name: a
    type: REST
    authorizers:
      tok: {type: token, authorizerUri: cap, identitySource: method.request.header.HeaderAuth1,
            authorizerResultTtlInSeconds: 0}
      req: {type: request, authorizerUri: cap, identitySource: method.request.header.HeaderAuth1,
            authorizerResultTtlInSeconds: 0}
    stages: {prod: {variables: {StageVar1: stageValue1}}}
    routes:
      - {route: GET /request, authorizer: tok, integration: {type: MOCK}}
      - {route: GET /request2, authorizer: req, integration: {type: MOCK}}
  - name: h
    type: HTTP
    authorizers:
      v1: {type: request, authorizerUri: cap, identitySource: "$request.header.HeaderAuth1",
           authorizerPayloadFormatVersion: "1.0", authorizerResultTtlInSeconds: 0}
      v2: {type: request, authorizerUri: cap, identitySource: ["$request.header.HeaderAuth1"],
           authorizerResultTtlInSeconds: 0}
    stages: {$default: {}}
    routes:
      - {route: GET /request, authorizer: v1, integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/"}}
      - {route: GET /request2, authorizer: v2, integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/"}}
"""
    path = tmp_path / "gw.yaml"
    path.write_text(config_text)
    import sys
    import types

    module = types.ModuleType("capmod")
    module.cap = capture  # type: ignore[attr-defined]
    sys.modules["capmod"] = module
    plan = compile_file(str(path), {}, LoadOptions(functions={"cap": "capmod:cap"}))
    routes = {(s.api.name, r.key): (s, r) for s in plan.stages for r in s.routes}

    async def run(api: str, key: str) -> None:
        stage, route = routes[(api, key)]
        down = Down()
        result = route.authorizer.check(down, Head(), stage, route, key.split(" ")[1], {}, "req-1")
        if not isinstance(result, type(None)) and hasattr(result, "__await__"):
            await result

    for api, key in (("a", "GET /request"), ("a", "GET /request2"), ("h", "GET /request"), ("h", "GET /request2")):
        asyncio.run(run(api, key))
    assert isinstance(routes[("a", "GET /request")][1].authorizer, CustomRoute)
    token, rest_request, http_v1, http_v2 = seen
    expected = json.loads((EVENTS / "awsdocs" / "rest-api-authorizer-token-input.json").read_text())
    assert set(token) == set(expected) and token["type"] == "TOKEN" and token["authorizationToken"] == "headerValue1"
    assert token["methodArn"].endswith("/prod/GET/request")
    optional = frozenset({"requestContext.domainName", "requestContext.domainPrefix",
                          "requestContext.extendedRequestId",
                          "requestContext.protocol", "requestContext.requestTime", "requestContext.requestTimeEpoch",
                          "requestContext.authorizer", "requestContext.identity", "multiValueHeaders",
                          "multiValueQueryStringParameters", "requestContext.operationName", "pathParameters",
                          "requestContext.resourcePath", "requestContext.requestId", "requestContext.path",
                          "requestContext.httpMethod", "requestContext.stage", "requestContext.resourceId",
                          "requestContext.accountId", "requestContext.apiId", "stageVariables", "version"})
    for ours, name in ((rest_request, "rest-api-authorizer-request-input.json"),
                       (http_v1, "http-api-authorizer-request-input-v1.json")):
        theirs = json.loads((EVENTS / "awsdocs" / name).read_text())
        assert compare(shape(ours), shape(theirs), optional=optional) == [], name
        assert ours["type"] == "REQUEST" and "/GET/request" in ours["methodArn"]
    assert http_v1["version"] == "1.0" and http_v1["identitySource"] == "headerValue1"
    theirs = json.loads((EVENTS / "awsdocs" / "http-api-authorizer-request-input-v2.json").read_text())
    assert set(theirs) - set(http_v2) <= {"cookies", "pathParameters", "stageVariables", "rawQueryString"}
    assert http_v2["identitySource"] == ["headerValue1"] and http_v2["routeArn"].endswith("/$default/GET/request2")
    assert "body" not in http_v2


HTTP_CONFIG = """
functions:
  simple: handlers.authorizers:async_simple
  iamform: handlers.authorizers:request
  echo: handlers.lambdas:echo
apis:
  - name: web
    type: HTTP
    authorizers:
      simple: {type: request, authorizerUri: simple, identitySource: "$request.header.X-User",
               enableSimpleResponses: true, authorizerPayloadFormatVersion: "2.0", authorizerResultTtlInSeconds: 60}
      iam: {type: request, authorizerUri: iamform, identitySource: "$request.header.X-User",
            authorizerPayloadFormatVersion: "1.0", authorizerResultTtlInSeconds: 0}
    stages:
      $default: {}
    routes:
      - route: GET /simple
        authorizer: simple
        integration: {type: FUNCTION, uri: echo}
      - route: GET /iam
        authorizer: iam
        integration: {type: FUNCTION, uri: echo}
"""


def test_http_api_simple_responses_and_payload_versions(start_gateway, calls):
    gateway = start_gateway(HTTP_CONFIG, env=env(calls))
    assert get(gateway, "/simple").status_code == 401  # no identity
    response = get(gateway, "/simple", headers={"x-user": "bob"})
    assert (response.status_code, response.json()) == (403, {"message": "Forbidden"})
    response = get(gateway, "/simple", headers={"x-user": "alice"})
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    # payload 2.0: requestContext.authorizer.lambda holds the context as returned (lists kept)
    assert event["requestContext"]["authorizer"] == {"lambda": {"user": "alice", "roles": ["a", "b"]}}
    response = get(gateway, "/iam", headers={"x-user": "carol"})
    assert response.status_code == 200, response.text
    assert response.json()["event"]["requestContext"]["authorizer"]["lambda"]["version"] == "1.0"
    assert get(gateway, "/iam", headers={"x-user": "nobody"}).status_code == 401


def test_usage_identifier_key_feeds_usage_plans(start_gateway, calls):
    key = "authorizer-key-0123456789abcdef"
    text = rest_config(ttl=0).replace("    type: REST\n", "    type: REST\n    apiKeySource: AUTHORIZER\n", 1)
    text = text.replace("      - route: POST /items/{id}\n        authorizer: tok\n",
                        "      - route: POST /items/{id}\n        authorizer: tok\n        apiKeyRequired: true\n")
    text += f"""
usagePlans:
  - name: basic
    apiStages: [{{api: shop, stage: prod}}]
    quota: {{limit: 2, period: DAY}}
apiKeys:
  - {{name: k, value: {key}, usagePlans: [basic]}}
"""
    gateway = start_gateway(text, env=env(calls))
    assert get(gateway, "/prod/items/1", "key:wrong-key-0123456789abcdef", method="POST").status_code == 403
    assert get(gateway, "/prod/items/1", f"key:{key}", method="POST").status_code == 200
    assert get(gateway, "/prod/items/1", f"key:{key}", method="POST").status_code == 200
    assert get(gateway, "/prod/items/1", f"key:{key}", method="POST").status_code == 429


# -- fail closed -----------------------------------------------------------------------------------------
def problems_of(tmp_path: Path, text: str, **options) -> list[str]:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        compile_file(str(path), {}, LoadOptions(**options))
    return [str(p) for p in caught.value.problems]


def test_a_route_whose_authorizer_cannot_be_enforced_does_not_load(tmp_path):
    base = rest_config(ttl=0)
    found = problems_of(tmp_path, base.replace("authorizer: tok\n        integration: {type: FUNCTION",
                                               "authorizer: nope\n        integration: {type: FUNCTION"))
    assert any("routes[2]" in p and "authorizer 'nope'" in p for p in found), found
    found = problems_of(tmp_path, base.replace("  tokenauth: handlers.authorizers:token\n", ""))
    assert any("authorizers.tok.authorizerUri" in p and "no handler" in p for p in found), found
    # an OpenAPI security scheme without x-amazon-apigateway-authorizer: refused, never served open
    document = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
                "components": {"securitySchemes": {"oidc": {"type": "openIdConnect",
                                                            "openIdConnectUrl": "https://id.example/.well-known"}}},
                "paths": {"/a": {"get": {"security": [{"oidc": []}], "x-amazon-apigateway-integration": {
                    "type": "http_proxy", "httpMethod": "GET", "uri": "http://127.0.0.1:9/a"}}}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError) as caught:
        compile_file(str(path), {}, LoadOptions())
    assert any("oidc" in str(p) and "cannot enforce" in str(p) for p in caught.value.problems), caught.value.problems


def test_conformance_documents_with_lambda_authorizers_load_and_enforce(start_gateway, calls, upstream):
    # LocalStack's petstore with a TOKEN authorizer (identityValidationExpression ^x-[a-z]+)
    source = OPENAPI / "localstack__petstore-authorizer.swagger.json"
    gateway = start_gateway(
        source.read_text(), env=env(calls), name="petstore",
        args=("--function", "function-name=handlers.authorizers:token",
              "--param", "uri=https://petstore.example.com/petstore/pets",
              "--upstream", f"https://petstore.example.com=http://{upstream.address}"))
    assert get(gateway, "/prod/pets").status_code == 401
    assert get(gateway, "/prod/pets", "allow").status_code == 401  # not ^x-[a-z]+
    response = get(gateway, "/prod/pets", "x-abc")
    assert response.status_code == 200, response.text
    assert upstream.requests[-1].target.startswith("/petstore/pets")
    # a REQUEST authorizer required by the whole document (global security)
    source = OPENAPI / "localstack__openapi.spec.global-auth.json"
    gateway = start_gateway(
        source.read_text(), env=env(calls), name="global",
        args=("--function", "requestauth=handlers.authorizers:request",
              "--param", "authorizer_lambda_invocation_arn=requestauth"))
    paths = json.loads(source.read_text())["paths"]
    first = next(iter(paths))
    url = "/prod" + first.split("{")[0].rstrip("/")
    assert get(gateway, url).status_code == 401
    denied = get(gateway, url, headers={"custom-authorization": "x"})
    assert denied.status_code == 403, denied.text  # the handler denies without x-user


def test_export_writes_authorizers_back_and_they_import_again(tmp_path):
    """A native API's authorizers and its routes' requirements become AWS's OpenAPI extensions, and the
    exported document, imported again, requires the same of the same routes."""
    from fastgw.config.loader import Document
    from fastgw.config.model import read_config
    from fastgw.openapi.export import export_api
    from fastgw.openapi.reader import Reader

    text = rest_config(ttl=60).replace("    type: REST\n", "    type: REST\n", 1)
    text = text.replace("      - route: GET /open\n", "      - route: GET /iam\n        authorizationType: AWS_IAM\n"
                        "        integration: {type: MOCK}\n      - route: GET /open\n")
    import yaml

    config, problems = read_config(yaml.safe_load(text))
    assert problems == []
    for version in ("oas30", "swagger"):
        document = export_api(config.apis[0], config, version=version)
        schemes = document["securityDefinitions"] if version == "swagger" else document["components"]["securitySchemes"]
        assert schemes["tok"]["x-amazon-apigateway-authtype"] == "custom"
        assert schemes["tok"]["x-amazon-apigateway-authorizer"]["type"] == "token"
        assert schemes["tok"]["x-amazon-apigateway-authorizer"]["authorizerResultTtlInSeconds"] == 60
        assert schemes["req"]["x-amazon-apigateway-authorizer"]["type"] == "request"
        assert document["paths"]["/items/{id}"]["get"]["security"] == [{"tok": []}]
        assert document["paths"]["/iam"]["get"]["x-amazon-apigateway-auth"] == {"type": "AWS_IAM"}
        assert "security" not in document["paths"]["/open"]["get"]
        imported = Reader(Document(document, str(tmp_path / "api.json"), {}), {}).read()
        again, problems = read_config({"apis": [{**imported.api, "stages": {"prod": {}}}]})
        assert problems == [], problems
        auth = {route.key: route.auth for route in again.apis[0].routes}
        assert auth["GET /items/{id}"].authorizer == "tok"
        assert auth["GET /request"].authorizer == "req"
        assert auth["GET /iam"].authorizationType == "AWS_IAM"
        assert auth["GET /open"] is None
        assert again.apis[0].authorizers["tok"].type == "TOKEN"
        assert again.apis[0].authorizers["tok"].resultTtlInSeconds == 60


def test_gateway_responses_override_authorizer_refusals(start_gateway, calls):
    text = rest_config(ttl=0).replace("    stages:\n      prod:", """    gatewayResponses:
      UNAUTHORIZED:
        statusCode: 401
        headers: {www-authenticate: 'Bearer realm="shop"'}
        body: '{"error": "login first", "type": "$context.error.responseType"}'
      ACCESS_DENIED:
        body: '{"error": "$context.error.message"}'
    stages:
      prod:""", 1)
    gateway = start_gateway(text, env=env(calls))
    response = get(gateway, "/prod/items/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="shop"'
    assert response.json() == {"error": "login first", "type": "UNAUTHORIZED"}
    response = get(gateway, "/prod/items/1", "deny")
    assert (response.status_code, response.json()) == (
        403, {"error": "User is not authorized to access this resource with an explicit deny"})


def test_the_access_log_names_the_principal(start_gateway, calls):
    gateway = start_gateway(rest_config(ttl=0), env=env(calls))
    assert get(gateway, "/prod/items/1", "allow-get").status_code == 200
    assert get(gateway, "/prod/items/1").status_code == 401
    assert get(gateway, "/prod/open").status_code == 200
    deadline = time.monotonic() + 10
    records: list[dict] = []
    while time.monotonic() < deadline and len(records) < 3:
        records = [json.loads(line) for line in gateway.stdout().splitlines() if line.startswith("{")]
        time.sleep(0.05)
    assert [r.get("authorizerPrincipalId", "-") for r in records[:3]] == ["user-get", None, "-"], records
