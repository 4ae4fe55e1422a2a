"""CORS and binary media: an HTTP API's x-amazon-apigateway-cors (and a native cors: block) answered by
the gateway, preflights never reaching the integration; REST APIs answering with their own OPTIONS
methods (static MOCK integrations); binary bodies through HTTP_PROXY."""

from __future__ import annotations

from pathlib import Path

import httpx
from test_openapi import OPENAPI, _args

PREFLIGHT = {"origin": "https://app.example.com", "access-control-request-method": "POST",
             "access-control-request-headers": "content-type"}


def test_http_api_cors_preflight_never_reaches_the_upstream(start_gateway, upstream):
    text = (OPENAPI / "awsdocs__http-api-example-petstore.oas30.json").read_text()
    gateway = start_gateway(text, args=_args(
        upstream=f"http://petstore.execute-api.us-west-1.amazonaws.com=http://{upstream.address}"))
    response = httpx.options(f"{gateway.url}/pets", headers=PREFLIGHT)
    assert response.status_code == 204 and response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "GET,OPTIONS,POST"
    assert response.headers["access-control-allow-headers"] == ("x-amzm-header,x-apigateway-header,x-api-key,"
                                                                 "authorization,x-amz-date,content-type")
    # Even where no route is: the gateway answers every preflight of a CORS-enabled HTTP API.
    assert httpx.options(f"{gateway.url}/no/route", headers=PREFLIGHT).status_code == 204
    assert not upstream.requests
    # A request with an Origin gets the CORS header on the integration's response.
    response = httpx.get(f"{gateway.url}/pets", headers={"origin": "https://app.example.com"})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
    assert len(upstream.requests) == 1
    # Without an Origin nothing is added.
    assert "access-control-allow-origin" not in httpx.get(f"{gateway.url}/pets").headers


def test_native_cors_block_with_credentials_and_listed_origins(start_gateway, upstream):
    from support.upstream import Action, RecordingUpstream

    own = RecordingUpstream(lambda request: Action(headers=[("access-control-allow-origin", "https://evil")],
                                                   body=b"{}")).start()
    try:
        gateway = start_gateway(f"""
apis:
  - name: web
    type: HTTP
    cors: {{allowOrigins: ["https://app.example.com", "https://*.example.org"], allowMethods: [GET, POST],
            allowHeaders: ["*"], exposeHeaders: [x-total], maxAge: 600, allowCredentials: true}}
    stages: {{$default: {{}}}}
    routes:
      - route: ANY /{{proxy+}}
        integration: {{type: HTTP_PROXY, uri: "http://{own.address}/{{proxy}}"}}
""")
        response = httpx.options(f"{gateway.url}/x", headers={**PREFLIGHT, "access-control-request-headers": "x-a,x-b"})
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-allow-headers"] == "x-a,x-b"  # "*": the request's own
        assert response.headers["access-control-max-age"] == "600"
        assert response.headers["vary"] == "origin"
        sub = httpx.options(f"{gateway.url}/x", headers={**PREFLIGHT, "origin": "https://a.example.org"})
        assert sub.headers["access-control-allow-origin"] == "https://a.example.org"
        refused = httpx.options(f"{gateway.url}/x", headers={**PREFLIGHT, "origin": "https://evil.example.com"})
        assert refused.status_code == 204 and "access-control-allow-origin" not in refused.headers
        # The integration's own CORS headers are replaced by the gateway's.
        simple = httpx.get(f"{gateway.url}/x", headers={"origin": "https://app.example.com"})
        assert simple.headers.get_list("access-control-allow-origin") == ["https://app.example.com"]
        assert simple.headers["access-control-expose-headers"] == "x-total"
        assert len(own.requests) == 1
    finally:
        own.stop()


def test_rest_api_answers_cors_with_its_options_methods(start_gateway, upstream):
    text = (OPENAPI / "localstack__petstore-swagger.json").read_text()
    gateway = start_gateway(text, args=_args(param="uri=https://petstore.example.com/petstore/pets",
                                             upstream=f"https://petstore.example.com=http://{upstream.address}"))
    response = httpx.options(f"{gateway.url}/prod/pets", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-methods"] == "POST,GET,OPTIONS"
    assert response.headers["access-control-allow-headers"] == "Content-Type,X-Amz-Date,Authorization,X-Api-Key"
    assert response.headers["access-control-allow-origin"] == "*"
    assert httpx.options(f"{gateway.url}/prod/pets/3").status_code == 200
    assert not upstream.requests
    mock_cors = (OPENAPI / "localstack__swagger-mock-cors.json").read_text()
    names = ("aws-serverless-shopping-cart-produc-GetProductFunction-28378339",
             "aws-serverless-shopping-cart-produ-GetProductsFunction-c1359550")
    other = start_gateway(mock_cors, name="mockcors", env={"PYTHONPATH": str(Path(__file__).resolve().parent)},
                          args=_args(function=[f"{n}=handlers.lambdas:echo" for n in names]))
    response = httpx.options(f"{other.url}/prod/product")
    assert response.status_code == 200 and response.text == "{}\n"
    assert response.headers["access-control-allow-origin"] == "http://localhost:8080"
    assert response.headers["content-type"] == "application/json"
    assert httpx.get(f"{other.url}/prod/product/7").json()["event"]["pathParameters"] == {"product_id": "7"}


def test_binary_bodies_pass_through_http_proxy(start_gateway):
    from support.upstream import Action, RecordingUpstream

    png = bytes(range(256)) * 4
    own = RecordingUpstream(lambda request: Action(headers=[("content-type", "image/png")], body=png)).start()
    try:
        text = (OPENAPI / "awsdocs__http-api-example-petstore.oas30.json").read_text()
        gateway = start_gateway(text, args=_args(
            upstream=f"http://petstore.execute-api.us-west-1.amazonaws.com=http://{own.address}"))
        response = httpx.post(f"{gateway.url}/pets", content=png, headers={"content-type": "image/png"})
        assert response.content == png and own.requests[-1].body == png
    finally:
        own.stop()
