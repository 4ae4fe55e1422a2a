"""REST non-proxy integrations with mapping templates (issue 7 parts 1-3, 6): HTTP, Lambda non-proxy
(FUNCTION_CUSTOM) and MOCK, through a real gateway, upstream and handler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.upstream import Action

TESTS = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": str(TESTS)}

CONFIG = r"""
functions:
  pets: handlers.lambdas:lookup_pet
apis:
  - name: shop
    type: REST
    stages:
      prod: {variables: {region: eu}}
    routes:
      - route: POST /items/{id}
        integration:
          type: HTTP
          uri: "http://UPSTREAM/items/{id}"
          httpMethod: PUT
          passthroughBehavior: WHEN_NO_TEMPLATES
          requestParameters:
            integration.request.header.x-region: stageVariables.region
            integration.request.querystring.color: method.request.querystring.colour
          requestTemplates:
            application/json: |
              #set($root = $input.path('$'))
              #set($context.requestOverride.header.ItemCount = "$root.items.size()")
              #set($context.requestOverride.header.Agent = $util.escapeJavaScript($input.params('user-agent')))
              {
                "id": "$input.params('id')",
                "names": [#foreach($item in $root.items)"$item.name.toUpperCase()"#if($foreach.hasNext),#end#end],
                "agent": "$util.escapeJavaScript($input.params('user-agent')).replaceAll("\\'","'")",
                "stage": "$context.stage"
              }
          responses:
            "4\\d{2}":
              statusCode: "404"
              responseParameters:
                method.response.header.x-upstream-status: "'not there'"
              responseTemplates:
                application/json: '{"message": "no item $input.params(''id'')", "upstream": $input.json(''$.reason'')}'
            default:
              statusCode: "200"
              responseParameters:
                method.response.header.x-origin: integration.response.header.x-origin
                method.response.header.x-kind: integration.response.body.kind
              responseTemplates:
                application/json: |
                  #set($body = $input.path('$'))
                  #set($context.responseOverride.header.Shape = "$body")
                  {"kind": "$body.kind", "size": $body.names.size()}
      - route: POST /plain
        integration:
          type: HTTP
          uri: "http://UPSTREAM/plain"
          passthroughBehavior: NEVER
          requestTemplates:
            application/json: '{"wrapped": $input.json(''$'')}'
      - route: GET /pets/{petId}
        integration:
          type: FUNCTION_CUSTOM
          uri: pets
          requestTemplates:
            application/json: |
              {"petId": "$input.params('petId')", "kind": "$input.params('kind')",
               "caller": "$context.identity.sourceIp"}
          responses:
            "NotFound:.*":
              statusCode: "404"
              responseTemplates:
                application/json: '{"error": "$input.path(''$.errorMessage'')", "type": "$input.path(''$.errorType'')"}'
            default:
              statusCode: "200"
              responseTemplates:
                application/json: |
                  #set($names = $input.path('$.names'))
                  {"pet": "$input.path('$.id')",
                   "names": "#foreach($n in $names)$n#if($foreach.hasNext)/#end#end"}
      - route: GET /mock
        integration:
          type: MOCK
          requestTemplates:
            application/json: |
              #if($input.params('scope') == "internal")
              {"statusCode": 200}
              #else
              {"statusCode": 403}
              #end
          responses:
            "403":
              statusCode: "403"
              responseTemplates:
                application/json: '{"message": "scope $input.params(''scope'') is not allowed"}'
            default:
              statusCode: "200"
              responseParameters:
                method.response.header.x-mock: "'yes'"
              responseTemplates:
                application/json: |
                  #if($input.params('teapot') == "1")
                  #set($context.responseOverride.status = 418)
                  #set($context.responseOverride.header.Brew = "earl grey")
                  #end
                  {"ok": true, "requestId": "$context.requestId"}
                text/plain: "ok as text"
      - route: GET /echo
        integration:
          type: MOCK
          requestTemplates:
            application/json: '{"statusCode": 200}'
          responses:
            default:
              statusCode: "200"
              responseTemplates:
                application/json: |
                  #set($context.responseOverride.header.Echo = $util.urlDecode($input.params('v')))
                  {"echoed": true}
      - route: GET /broken
        integration:
          type: MOCK
          requestTemplates:
            application/json: '{"statusCode": 200}'
          responses:
            default:
              statusCode: "200"
              responseTemplates:
                application/json: '$util.parseJson("{not json")'
"""


def behaviour(request):
    if "/items/huge" in request.target:
        return Action(200, [("content-type", "application/json")], b"[" + b"1," * (5 * 1024 * 1024 + 1) + b"1]")
    if "/items/404" in request.target:
        return Action(404, [("content-type", "application/json")], b'{"reason": {"code": "gone"}}')
    if request.target.startswith("/items/"):
        return Action(201, [("content-type", "application/json"), ("x-origin", "store-1")],
                      b'{"kind": "widget", "names": ["a", "b"]}')
    return Action()


@pytest.fixture
def gateway(start_gateway, upstream):
    upstream.behaviour = behaviour
    return start_gateway(CONFIG.replace("UPSTREAM", upstream.address), env=ENV)


def test_http_request_template_parameters_and_override(gateway, upstream):
    body = {"items": [{"name": "apple"}, {"name": "pear"}]}
    answer = httpx.post(f"{gateway.url}/prod/items/7", params={"colour": "red"}, json=body,
                        headers={"user-agent": "it's me"})
    assert answer.status_code == 200, answer.text
    sent = upstream.requests[-1]
    assert sent.method == "PUT" and sent.target == "/items/7?color=red"
    assert sent.header("x-region") == "eu"
    assert sent.header("itemcount") == "2"  # $context.requestOverride.header
    assert sent.header("content-type") == "application/json"
    assert sent.header("agent") == "it\\'s me"  # escapeJavaScript escapes ' as AWS does
    # ... and AWS's documented idiom turns it back for JSON
    assert json.loads(sent.body) == {"id": "7", "names": ["APPLE", "PEAR"], "agent": "it's me", "stage": "prod"}
    # the default integration response: status, mapped headers, the response template
    assert answer.headers["x-origin"] == "store-1" and answer.headers["x-kind"] == "widget"
    assert answer.json() == {"kind": "widget", "size": 2}
    # A map from $input.path prints in Java's form (its JSON array member as JSON, json-smart's way)
    assert answer.headers["shape"] == '{kind=widget, names=["a","b"]}'


def test_http_selection_pattern_maps_upstream_404(gateway, upstream):
    answer = httpx.post(f"{gateway.url}/prod/items/404", json={"items": []})
    assert answer.status_code == 404
    assert answer.headers["x-upstream-status"] == "not there"
    assert answer.json() == {"message": "no item 404", "upstream": {"code": "gone"}}


def test_passthrough_behaviours(gateway, upstream):
    # WHEN_NO_TEMPLATES with templates defined: another content type is refused
    answer = httpx.post(f"{gateway.url}/prod/items/8", content=b"x=1", headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and answer.json() == {"message": "Unsupported Media Type"}
    # NEVER: the same
    answer = httpx.post(f"{gateway.url}/prod/plain", content=b"x=1", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    count = len(upstream.requests)
    answer = httpx.post(f"{gateway.url}/prod/plain", json={"a": [1, 2]})
    assert answer.status_code == 200
    assert json.loads(upstream.requests[-1].body) == {"wrapped": {"a": [1, 2]}}
    assert len(upstream.requests) == count + 1


def test_lambda_non_proxy_success_and_error_selection(gateway):
    answer = httpx.get(f"{gateway.url}/prod/pets/12", params={"kind": "dog"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"pet": "12", "names": "Rex/Fido"}
    missing = httpx.get(f"{gateway.url}/prod/pets/missing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "NotFound: no pet missing", "type": "LookupError"}
    # An error no pattern selects takes the default response, as in AWS (status 200, the template
    # rendered over Lambda's error object).
    crash = httpx.get(f"{gateway.url}/prod/pets/crash")
    assert crash.status_code == 200
    assert crash.json()["names"] == ""


def test_mock_with_templates_and_response_override(gateway):
    allowed = httpx.get(f"{gateway.url}/prod/mock", params={"scope": "internal"})
    assert allowed.status_code == 200
    assert allowed.headers["x-mock"] == "yes" and allowed.headers["content-type"] == "application/json"
    assert allowed.json() == {"ok": True, "requestId": allowed.headers["x-amzn-requestid"]}
    refused = httpx.get(f"{gateway.url}/prod/mock", params={"scope": "public"})
    assert refused.status_code == 403 and refused.json() == {"message": "scope public is not allowed"}
    teapot = httpx.get(f"{gateway.url}/prod/mock", params={"scope": "internal", "teapot": "1"})
    assert teapot.status_code == 418 and teapot.headers["brew"] == "earl grey"
    # The response template is chosen by Accept.
    text = httpx.get(f"{gateway.url}/prod/mock", params={"scope": "internal"}, headers={"accept": "text/plain"})
    assert text.text == "ok as text" and text.headers["content-type"] == "text/plain"


def test_render_error_is_a_500(gateway):
    answer = httpx.get(f"{gateway.url}/prod/broken")
    assert answer.status_code == 500 and answer.json() == {"message": "Internal server error"}
    assert httpx.get(f"{gateway.url}/prod/mock", params={"scope": "internal"}).status_code == 200  # still serving


@pytest.mark.reliability("SZ-07")
def test_template_body_cap(gateway, upstream):
    count = len(upstream.requests)
    big = json.dumps({"items": [{"name": "x" * 1000}] * 1100})  # > 1 MiB
    answer = httpx.post(f"{gateway.url}/prod/items/9", content=big, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert len(upstream.requests) == count  # nothing half-forwarded
    deep = "[" * 5000 + "]" * 5000
    answer = httpx.post(f"{gateway.url}/prod/items/9", content=deep, headers={"content-type": "application/json"})
    # A body the template cannot read (orjson refuses 5000 levels): the template fails, which
    # aws.md c.9 types API_CONFIGURATION_ERROR (500), as any template that does not render (no
    # request validator is configured here, so it is not BAD_REQUEST_BODY's 400).
    assert (answer.status_code, answer.json()) == (500, {"message": "Internal server error"})
    assert answer.headers["x-amzn-errortype"] == "ApiConfigurationException"


def test_template_that_does_not_parse_is_a_located_config_error(tmp_path, upstream):
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.replace("UPSTREAM", upstream.address).replace(
        '#if($input.params(\'teapot\') == "1")', '#if($input.params(\'teapot\') == "1"'))
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True,
                            text=True, env={**__import__("os").environ, **ENV}, timeout=60)
    assert result.returncode != 0
    text = result.stderr + result.stdout
    assert "responses.default.responseTemplates.application/json" in text
    assert "line" in text and "column" in text


def test_aws_simple_calc_document_served_with_its_templates(start_gateway):
    """AWS's developer-guide Calc API (Lambda non-proxy with mapping templates, MOCK 404s), served
    from the document as it is, with a Python port of its Calc function."""
    from conftest import SHARED

    document = SHARED / "conformance" / "openapi" / "awsdocs__simple-calc-lambda-api.swagger2.json"
    gateway = start_gateway(document.read_text(), env=ENV, args=("--function", "Calc=handlers.lambdas:calc"))
    base = f"{gateway.url}/prod"  # a REST document is served on the stage "prod" unless --stage says otherwise
    expected = {"input": {"a": 3, "b": 4, "op": "add"}, "output": {"c": 7}}
    assert httpx.get(f"{base}/", params={"a": "3", "b": "4", "op": "add"}).json() == expected
    assert httpx.get(f"{base}/3/4/add").json() == expected
    answer = httpx.post(f"{base}/", json={"a": 6, "b": 4, "op": "div"})
    assert answer.status_code == 200 and answer.json() == {"input": {"a": 6, "b": 4, "op": "div"},
                                                           "output": {"c": 1.5}}
    missing = httpx.delete(f"{base}/anything")
    assert missing.status_code == 404 and missing.json() == {"Message": "Can't DELETE /{a}"}


def test_template_headers_cannot_split_the_response(gateway):
    """A header value a template builds from the request (here CR LF smuggled in percent-encoded) is
    dropped, never written: no header injection."""
    clean = httpx.get(f"{gateway.url}/prod/echo", params={"v": "plain value"})
    assert clean.status_code == 200 and clean.headers["echo"] == "plain value"
    evil = httpx.get(f"{gateway.url}/prod/echo", params={"v": "x\r\ninjected: yes"})
    assert evil.status_code == 200 and evil.json() == {"echoed": True}
    assert "echo" not in evil.headers and "injected" not in evil.headers


def test_oversized_integration_response_is_a_502(gateway, upstream):
    """An integration response is read whole for mapping: past AWS's 10 MB it is a 502, and the
    gateway goes on serving."""
    answer = httpx.post(f"{gateway.url}/prod/items/huge", json={"items": []}, timeout=30)
    assert answer.status_code == 502 and "message" in answer.json()
    assert httpx.get(f"{gateway.url}/prod/mock", params={"scope": "internal"}).status_code == 200

