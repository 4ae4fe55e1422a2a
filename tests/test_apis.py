"""API selection and gateway responses: HTTP APIs and $default, API mappings, awsCompat, overrides."""

from __future__ import annotations

import httpx


def test_http_api_default_stage_and_default_route(start_gateway, upstream):
    config = f"""
apis:
  - name: web
    type: HTTP
    stages:
      $default: {{}}
      beta: {{}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/pet/{{id}}"}}
      - route: GET /pets/{{proxy+}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/greedy/{{proxy}}"}}
      - route: $default
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/fallback"}}
"""
    gateway = start_gateway(config)
    assert httpx.get(f"{gateway.url}/pets/7").status_code == 200
    assert upstream.requests[-1].target == "/pet/7"
    httpx.get(f"{gateway.url}/pets/7/toys")
    assert upstream.requests[-1].target == "/greedy/7/toys"
    httpx.post(f"{gateway.url}/anything/else")  # no route, no 404: the $default route
    assert upstream.requests[-1].target == "/fallback"
    httpx.get(f"{gateway.url}/beta/pets/8")  # a named stage keeps its prefix
    assert upstream.requests[-1].target == "/pet/8"


def test_api_mappings_by_host_and_base_path(start_gateway, upstream):
    config = f"""
apis:
  - name: orders
    disableExecuteApiEndpoint: true
    stages: {{live: {{}}}}
    routes:
      - route: GET /orders/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/o/{{id}}"}}
  - name: users
    stages: {{live2: {{}}}}
    routes:
      - route: GET /users/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/u/{{id}}"}}
apiMappings:
  - {{domainName: api.example.com, basePath: v1, api: orders, stage: live}}
  - {{domainName: API.example.com, basePath: v1/people, api: users, stage: live2}}
  - {{basePath: legacy, api: orders, stage: live}}
"""
    gateway = start_gateway(config)
    host = {"host": "api.example.com:443"}
    assert httpx.get(f"{gateway.url}/v1/orders/1", headers=host).status_code == 200
    assert upstream.requests[-1].target == "/o/1"
    assert httpx.get(f"{gateway.url}/v1/people/users/2", headers=host).status_code == 200
    assert upstream.requests[-1].target == "/u/2"
    assert httpx.get(f"{gateway.url}/legacy/orders/3").status_code == 200  # any host
    assert upstream.requests[-1].target == "/o/3"
    # The default /{stage} endpoint is off for "orders" but still on for "users".
    assert httpx.get(f"{gateway.url}/live/orders/4").status_code == 404
    assert httpx.get(f"{gateway.url}/live2/users/5").status_code == 200


def test_aws_compat_answers_misses_like_aws_rest_apis(start_gateway, upstream):
    config = f"""
apis:
  - name: classic
    awsCompat: true
    stages: {{prod: {{}}}}
    routes:
      - route: GET /items
        integration: {{type: HTTP_PROXY, uri: "http://{upstream.address}/items"}}
"""
    gateway = start_gateway(config)
    for response in (httpx.get(f"{gateway.url}/prod/nothing"), httpx.post(f"{gateway.url}/prod/items")):
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}
        assert response.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"


def test_gateway_response_overrides(start_gateway, upstream):
    config = """
apis:
  - name: custom
    stages: {prod: {}}
    routes:
      - route: GET /items
        integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:1/items"}
    gatewayResponses:
      RESOURCE_NOT_FOUND:
        statusCode: 410
        headers: {x-reason: gone}
        body: '{"error": $context.error.messageString, "kind": "custom"}'
      DEFAULT_5XX: {headers: {x-served-by: fastgw}}
      DEFAULT_4XX: {headers: {x-any-4xx: "yes"}}
"""
    gateway = start_gateway(config)
    response = httpx.get(f"{gateway.url}/prod/missing")
    assert response.status_code == 410
    assert response.json() == {"error": "Not Found", "kind": "custom"}
    assert response.headers["x-reason"] == "gone" and response.headers["x-any-4xx"] == "yes"
    response = httpx.get(f"{gateway.url}/prod/items")  # nothing listens on port 1
    assert response.status_code == 502
    assert response.headers["x-served-by"] == "fastgw"
    assert response.headers["x-amzn-errortype"] == "InternalServerErrorException"
