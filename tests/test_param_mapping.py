"""HTTP API parameter mapping (issue 7 part 4): requests and responses changed on the way, as AWS
does for HTTP_PROXY integrations of HTTP APIs (reference/aws.md c.15)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
from support.upstream import Action

CONFIG = """
apis:
  - name: web
    type: HTTP
    stages:
      $default: {{variables: {{tier: gold}}}}
    routes:
      - route: GET /pets/{{id}}
        integration:
          type: HTTP_PROXY
          uri: "http://{upstream}/pet/{{id}}"
          requestParameters:
            "append:header.x-pet": "$request.path.id"
            "overwrite:header.x-tier": "$stageVariables.tier"
            "remove:header.x-secret": "''"
            "append:querystring.source": "gateway"
            "overwrite:querystring.page": "${{request.querystring.p}}-${{request.header.x-page-size}}"
            "remove:querystring.debug": "''"
            "append:header.x-request-id": "$context.requestId"
            "append:header.x-missing": "$request.header.x-absent"
          responseParameters:
            "200":
              "append:header.x-upstream-said": "$response.header.x-origin"
              "remove:header.x-origin": "''"
              "overwrite:header.x-route": "$context.routeKey"
            "404":
              "overwrite:statuscode": "410"
              "append:header.x-why": "gone, says ${{response.body.reason}}"
      - route: POST /orders
        integration:
          type: HTTP_PROXY
          uri: "http://{upstream}/orders"
          requestParameters:
            "overwrite:path": "/v2/customers/${{request.body.customer.id}}/orders"
            "append:header.x-first-item": "$request.body.items[0]"
            "append:header.x-note": "$request.body.note"
"""


def behaviour(request):
    if request.target.startswith("/pet/404"):
        return Action(404, [("content-type", "application/json")], b'{"reason": "adopted"}')
    return Action(200, [("x-origin", "backend-7")])


def test_request_mapping_changes_headers_query_and_path(start_gateway, upstream):
    upstream.behaviour = behaviour
    gateway = start_gateway(CONFIG.format(upstream=upstream.address))
    answer = httpx.get(f"{gateway.url}/pets/7", params=[("p", "3"), ("debug", "1"), ("keep", "yes")],
                       headers={"x-secret": "s3cr3t", "x-tier": "bronze", "x-page-size": "50"})
    assert answer.status_code == 200
    sent = upstream.requests[-1]
    assert sent.header("x-pet") == "7"
    assert sent.header("x-tier") == "gold"  # overwritten from the stage variable
    assert sent.header("x-secret") is None
    assert sent.header("x-missing") is None  # a missing source maps to nothing
    assert sent.header("x-request-id") == answer.headers["x-amzn-requestid"]
    path, _, query = sent.target.partition("?")
    assert path == "/pet/7"
    pairs = sorted(pair.split("=") for pair in query.split("&"))
    assert pairs == [["keep", "yes"], ["p", "3"], ["page", "3-50"], ["source", "gateway"]]
    # the response mapping for 200
    assert answer.headers["x-upstream-said"] == "backend-7"
    assert "x-origin" not in answer.headers
    assert answer.headers["x-route"] == "GET /pets/{id}"


def test_response_mapping_rewrites_status_from_body(start_gateway, upstream):
    upstream.behaviour = behaviour
    gateway = start_gateway(CONFIG.format(upstream=upstream.address))
    answer = httpx.get(f"{gateway.url}/pets/404")
    assert answer.status_code == 410
    assert answer.headers["x-why"] == "gone, says adopted"
    assert answer.json() == {"reason": "adopted"}


def test_path_overwritten_from_the_body(start_gateway, upstream):
    gateway = start_gateway(CONFIG.format(upstream=upstream.address))
    body = {"customer": {"id": "c-42"}, "items": ["apple", "pear"]}
    answer = httpx.post(f"{gateway.url}/orders", json=body)
    assert answer.status_code == 200
    sent = upstream.requests[-1]
    assert sent.target == "/v2/customers/c-42/orders"
    assert sent.header("x-first-item") == "apple"
    assert json.loads(sent.body) == body  # the body itself goes unchanged


def test_bad_mappings_are_config_errors(tmp_path, upstream):
    config = tmp_path / "bad.yaml"
    config.write_text(f"""
apis:
  - name: web
    type: HTTP
    stages: {{$default: {{}}}}
    routes:
      - route: GET /x
        integration:
          type: HTTP_PROXY
          uri: "http://{upstream.address}/x"
          requestParameters:
            "append:header.authorization": "'Bearer x'"
            "rename:header.a": "b"
            "append:header.x-ok": "$request.nothing.here"
          responseParameters:
            "700": {{"overwrite:statuscode": "200"}}
""")
    result = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "requestParameters.append:header.authorization" in text and "reserved" in text
    assert "requestParameters.rename:header.a" in text
    assert "unknown variable '$request.nothing.here'" in text
    assert "responseParameters.700" in text


def test_mapped_values_cannot_split_the_request(start_gateway, upstream):
    gateway = start_gateway(CONFIG.format(upstream=upstream.address))
    body = {"customer": {"id": "c-1"}, "items": ["a"], "note": "fine\r\nx-evil: 1"}
    assert httpx.post(f"{gateway.url}/orders", json=body).status_code == 200
    sent = upstream.requests[-1]
    assert sent.header("x-evil") is None and sent.header("x-note") is None  # dropped, not injected
    assert sent.header("x-first-item") == "a"

