"""Request validation (issue 7 part 5), as AWS API Gateway's REST request validators answer:

    missing required parameters  400 {"message": "Missing required request parameters: [a, b]"}
    body not matching its model  400 {"message": "Invalid request body"} (details in
                                 $context.error.validationErrorString)

from a native config and from OpenAPI documents (OAS 3 and Swagger 2), served by a real gateway
process in front of a recording upstream; plus the compiled validator on its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.upstream import Action, RecordingUpstream

from fastgw.compile import load_plan
from fastgw.config.loader import ConfigError, load_document
from fastgw.errors import GatewayError, GatewayResponseOverride, GatewayResponses
from fastgw.pipeline import Gateway
from fastgw.policies.validation import BodyModel, ReplayedBody, _compile, check_body, meta_check

PET = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["name", "age"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "friends": {"type": "array", "items": {"$ref": "#/definitions/Pet"}},
    },
}


@pytest.fixture
def quiet_upstream() -> Iterator[RecordingUpstream]:
    """Records every request and answers a small fixed body (no echo of large bodies)."""
    server = RecordingUpstream(lambda request: Action(body=b'{"ok":true}')).start()
    yield server
    server.stop()


def native_config(upstream: str, limits: str = "") -> str:
    return f"""
server: {{limits: {{{limits}}}}}
apis:
  - name: shop
    type: REST
    requestValidators:
      strict: {{validateRequestBody: true, validateRequestParameters: true}}
    models:
      Pet: {json.dumps(PET)}
    stages: {{prod: {{}}}}
    gatewayResponses:
      BAD_REQUEST_BODY:
        body: '{{"message": $context.error.messageString, "detail": "$context.error.validationErrorString"}}'
    routes:
      - route: POST /pets
        requestValidator: strict
        requestParameters:
          method.request.querystring.lang: true
          method.request.header.x-team: true
          method.request.querystring.page: false
        requestModels: {{application/json: Pet}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/pets"}}
      - route: POST /params-only
        requestValidator: params
        requestParameters: {{method.request.querystring.lang: true}}
        requestModels: {{application/json: Pet}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/params-only"}}
      - route: POST /body-only
        requestValidator: body
        requestParameters: {{method.request.querystring.lang: true}}
        requestModels: {{application/json: Pet}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/body-only"}}
      - route: PUT /any-type
        requestValidator: body
        requestModels:
          application/json: {{type: object, required: [json]}}
          $default: {{type: object, required: [other]}}
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/any-type"}}
      - route: POST /open
        integration: {{type: HTTP_PROXY, uri: "http://{upstream}/open"}}
"""


# -- a native config, served -------------------------------------------------------------------------------
def test_missing_required_parameters_exact_aws_answer(start_gateway, quiet_upstream):
    gateway = start_gateway(native_config(quiet_upstream.address))
    url = f"{gateway.url}/prod/pets"
    pet = {"name": "rex", "age": 3}
    response = httpx.post(url, json=pet)
    assert response.status_code == 400
    # AWS lists the names sorted by their keys: method.request.header.* before .querystring.*
    assert response.content == b'{"message":"Missing required request parameters: [x-team, lang]"}'
    assert response.headers["x-amzn-errortype"] == "BadRequestException"
    assert response.headers["content-type"] == "application/json"
    # a blank value is missing too ("included and not blank"); the optional `page` is never required
    response = httpx.post(f"{url}?lang=&page=1", json=pet, headers={"x-team": "a"})
    assert response.json() == {"message": "Missing required request parameters: [lang]"}
    response = httpx.post(f"{url}?lang=en", json=pet, headers={"x-team": ""})
    assert response.json() == {"message": "Missing required request parameters: [x-team]"}
    assert quiet_upstream.requests == []
    # present: the request reaches the upstream unchanged
    body = json.dumps(pet).encode()
    response = httpx.post(f"{url}?lang=en", content=body, headers={"x-team": "blue", "content-type":
                                                                   "application/json", "x-other": "kept"})
    assert response.status_code == 200 and response.json() == {"ok": True}
    seen = quiet_upstream.requests[-1]
    assert (seen.method, seen.target, seen.body) == ("POST", "/pets?lang=en", body)
    assert seen.header("x-team") == "blue" and seen.header("x-other") == "kept"
    assert seen.header("content-type") == "application/json" and seen.header("content-length") == str(len(body))


def test_invalid_body_exact_aws_answer_and_valid_bodies_pass_unchanged(start_gateway, quiet_upstream):
    gateway = start_gateway(native_config(quiet_upstream.address))
    url = f"{gateway.url}/prod/pets?lang=en"
    headers = {"x-team": "blue", "content-type": "application/json"}
    cases = {
        b'{"name": "rex"}': '[object has missing required properties (["age"])]',
        b'{"name": "rex", "age": "3"}':
            '[instance type (string) does not match any allowed primitive type (allowed: ["integer"])]',
        b'{"name": "rex", "age": -1}':
            "[numeric instance is lower than the required minimum (minimum: 0, found: -1)]",
        b'{"name": "a", "age": 1, "friends": [{"name": "b"}]}': '[object has missing required properties (["age"])]',
        b"not json": None,
        b"": '[object has missing required properties (["age","name"])]',  # an empty body is {}
    }
    for body, detail in cases.items():
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400, body
        assert response.json()["message"] == "Invalid request body"
        assert response.headers["x-amzn-errortype"] == "BadRequestException"
        if detail is not None:
            assert response.json()["detail"] == detail, body
    assert quiet_upstream.requests == []
    # valid: forwarded byte for byte, with its headers; small, large (streamed path) and chunked bodies
    small = b'{"name": "rex", "age": 3, "friends": [{"name": "b", "age": 1}]}'
    large = json.dumps({"name": "rex", "age": 3, "tags": ["x" * 100] * 2000}).encode()
    assert len(large) > 64 * 1024
    for body in (small, large):
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 200
        seen = quiet_upstream.requests[-1]
        assert seen.body == body and seen.header("content-length") == str(len(body))
        assert seen.header("x-team") == "blue"

    def chunks() -> Iterator[bytes]:
        yield small[:10]
        yield small[10:]

    response = httpx.post(url, content=chunks(), headers=headers)
    assert response.status_code == 200 and quiet_upstream.requests[-1].body == small
    # the gateway response machinery (gatewayResponses overrides) is not involved for a valid request
    assert httpx.post(url, content=b'{"name": 1, "age": 1}', headers=headers).json()["detail"].startswith(
        "[instance type")
    # within the JSON limit but deeper than the validator can follow (a recursive model): 400, not 500
    nested = b'{"name": "a", "age": 1, "friends": [' * 1000 + b'{"name": "a", "age": 1}' + b"]}" * 1000
    response = httpx.post(url, content=nested, headers=headers)
    assert response.status_code == 400 and response.json()["message"] == "Invalid request body"


def test_params_only_and_body_only_validators(start_gateway, quiet_upstream):
    gateway = start_gateway(native_config(quiet_upstream.address))
    bad_body = b'{"nothing": true}'
    # params only: the body is not checked (nor read before the integration)
    response = httpx.post(f"{gateway.url}/prod/params-only", content=bad_body)
    assert response.json() == {"message": "Missing required request parameters: [lang]"}
    response = httpx.post(f"{gateway.url}/prod/params-only?lang=en", content=bad_body)
    assert response.status_code == 200 and quiet_upstream.requests[-1].body == bad_body
    # body only: the parameters are not checked
    response = httpx.post(f"{gateway.url}/prod/body-only", content=bad_body)
    assert response.status_code == 400 and response.json()["message"] == "Invalid request body"
    response = httpx.post(f"{gateway.url}/prod/body-only", json={"name": "a", "age": 1})
    assert response.status_code == 200
    # a route without a validator passes anything
    assert httpx.post(f"{gateway.url}/prod/open", content=b"<xml/>").status_code == 200
    assert quiet_upstream.requests[-1].body == b"<xml/>"


def test_model_chosen_by_content_type(start_gateway, quiet_upstream):
    gateway = start_gateway(native_config(quiet_upstream.address))
    url = f"{gateway.url}/prod/any-type"
    # application/json (parameters ignored, any case); no Content-Type at all is application/json too
    assert httpx.put(url, content=b'{"json": 1}', headers={"content-type": "Application/JSON; charset=utf-8"}
                     ).status_code == 200
    assert httpx.put(url, content=b'{"other": 1}', headers={"content-type": "application/json"}).status_code == 400
    assert httpx.put(url, content=b'{"other": 1}').status_code == 400
    # other types: the $default model
    assert httpx.put(url, content=b'{"other": 1}', headers={"content-type": "text/plain"}).status_code == 200
    response = httpx.put(url, content=b"plain text", headers={"content-type": "text/plain"})
    assert response.status_code == 400 and response.json()["message"] == "Invalid request body"
    # no model for the type and no $default: not validated (AWS)
    url = f"{gateway.url}/prod/body-only"
    response = httpx.post(url, content=b"<pet/>", headers={"content-type": "application/xml"})
    assert response.status_code == 200 and quiet_upstream.requests[-1].body == b"<pet/>"


@pytest.mark.reliability("SZ-07")
def test_oversize_and_deeply_nested_bodies(start_gateway, quiet_upstream):
    gateway = start_gateway(native_config(quiet_upstream.address, "maxValidatedBodyBytes: 8192"))
    url = f"{gateway.url}/prod/body-only"
    big = json.dumps({"name": "x" * 9000, "age": 1}).encode()
    response = httpx.post(url, content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json() == {"message": "Request Too Large"}

    def chunked() -> Iterator[bytes]:
        yield big[:5000]
        yield big[5000:]

    assert httpx.post(url, content=chunked()).status_code == 413
    # a route that does not validate bodies keeps the server's body limit
    assert httpx.post(f"{gateway.url}/prod/open", content=big).status_code == 200
    # nested far deeper than orjson's limit of 1024: refused at once
    for body in (b"[" * 3000 + b"]" * 3000, b'{"a":' * 1100 + b"1" + b"}" * 1100, b"[" * 8000):
        started = time.perf_counter()
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["message"] == "Invalid request body"
        assert time.perf_counter() - started < 5.0  # a bound against pathological parsing, not a speed check
    assert all(r.target == "/open" for r in quiet_upstream.requests)


# -- OpenAPI documents, served ----------------------------------------------------------------------------
OAS3 = {
    "openapi": "3.0.1",
    "info": {"title": "validated", "version": "1"},
    "x-amazon-apigateway-request-validators": {
        "all": {"validateRequestBody": True, "validateRequestParameters": True},
        "params-only": {"validateRequestBody": False, "validateRequestParameters": True},
    },
    "x-amazon-apigateway-request-validator": "params-only",
    "paths": {
        "/pets": {
            "parameters": [{"name": "x-tenant", "in": "header", "required": True, "schema": {"type": "string"}}],
            "get": {
                "parameters": [{"name": "limit", "in": "query", "required": True, "schema": {"type": "integer"}},
                               {"name": "offset", "in": "query", "schema": {"type": "integer"}}],
                "x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "GET",
                                                    "uri": "http://backend.example/pets"},
            },
            "post": {
                "x-amazon-apigateway-request-validator": "all",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                "x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "POST",
                                                    "uri": "http://backend.example/pets"},
            },
        },
    },
    "components": {"schemas": {
        "Pet": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "owner": {"$ref": "#/components/schemas/Owner"}}},
        "Owner": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
    }},
}

SWAGGER2 = {
    "swagger": "2.0",
    "info": {"title": "validated", "version": "1"},
    "x-amazon-apigateway-request-validators": {"basic": {"validateRequestBody": True,
                                                         "validateRequestParameters": True}},
    "paths": {
        "/orders/{id}": {
            "put": {
                "x-amazon-apigateway-request-validator": "basic",
                "consumes": ["application/json"],
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "type": "string"},
                    {"name": "version", "in": "query", "required": True, "type": "string"},
                    {"name": "body", "in": "body", "required": True, "schema": {"$ref": "#/definitions/Order"}},
                ],
                "x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "PUT",
                                                    "uri": "http://backend.example/orders/{id}",
                                                    "requestParameters": {
                                                        "integration.request.path.id": "method.request.path.id"}},
            },
        },
    },
    "definitions": {"Order": {"type": "object", "required": ["qty"],
                              "properties": {"qty": {"type": "integer", "minimum": 1}}}},
}


def test_openapi3_document_served_with_its_validators(start_gateway, quiet_upstream):
    gateway = start_gateway(json.dumps(OAS3), args=("--upstream", f"http://backend.example=http://"
                                                                  f"{quiet_upstream.address}"))
    url = f"{gateway.url}/prod/pets"
    # the document's default validator (params-only) on GET: path-item and operation parameters
    response = httpx.get(url)
    assert response.status_code == 400
    assert response.json() == {"message": "Missing required request parameters: [x-tenant, limit]"}
    assert httpx.get(f"{url}?limit=5", headers={"x-tenant": "t1"}).status_code == 200
    assert quiet_upstream.requests[-1].target == "/pets?limit=5"
    # POST: its own validator (all): parameters first, then the body against Pet (and Owner through $ref)
    assert httpx.post(url, json={"name": "rex"}).json() == {
        "message": "Missing required request parameters: [x-tenant]"}
    headers = {"x-tenant": "t1"}
    response = httpx.post(url, json={"name": "rex", "owner": {}}, headers=headers)
    assert response.status_code == 400 and response.json() == {"message": "Invalid request body"}
    body = b'{"name": "rex", "owner": {"id": 7}}'
    response = httpx.post(url, content=body, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 200 and quiet_upstream.requests[-1].body == body
    assert "request validation" not in gateway.stderr()  # no longer listed as unimplemented


def test_swagger2_document_served_with_its_validators(start_gateway, quiet_upstream):
    gateway = start_gateway(json.dumps(SWAGGER2), args=("--upstream", f"http://backend.example=http://"
                                                                      f"{quiet_upstream.address}"))
    url = f"{gateway.url}/prod/orders/42"
    response = httpx.put(url, json={"qty": 1})
    assert response.status_code == 400
    assert response.json() == {"message": "Missing required request parameters: [version]"}
    response = httpx.put(f"{url}?version=1", json={"qty": 0})
    assert response.status_code == 400 and response.json() == {"message": "Invalid request body"}
    response = httpx.put(f"{url}?version=1", content=b'{"qty": 2}', headers={"content-type": "application/json"})
    assert response.status_code == 200
    seen = quiet_upstream.requests[-1]
    assert (seen.method, seen.target, seen.body) == ("PUT", "/orders/42?version=1", b'{"qty": 2}')


def test_conformance_sample_gets_its_validators():
    from conftest import SHARED

    plan = load_plan(load_document(SHARED / "conformance/openapi/awsdocs__request-validation-sample.swagger2.json"))
    routes = {r.key: r.validator for r in plan.stages[0].routes}
    post, get = routes["POST /validation"], routes["GET /validation"]
    assert post.order == (("header", "h1"),) and list(post.models) == ["application/json"]
    assert post.models["application/json"].name == "RequestBodyModel"
    assert get.order == (("querystring", "q1"),) and get.models == {}  # params-only: no body check


# -- bad configs -------------------------------------------------------------------------------------------
def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True)


def test_bad_schema_or_validator_is_a_config_error_naming_the_place(tmp_path):
    config = native_config("127.0.0.1:9").replace('"minLength": 1', '"minLength": -1').replace(
        "requestValidator: params", "requestValidator: paranoid").replace(
        "required: [json]", "required: []").replace("method.request.querystring.page", "method.request.body.page")
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    result = _validate(path)
    assert result.returncode == 2, result.stdout
    err = result.stderr
    assert "apis[0].models.Pet (line 9): not a valid JSON Schema (draft 4): properties.name.minLength" in err
    assert "apis[0].routes[1].requestValidator (line " in err and "no request validator 'paranoid'" in err
    assert "apis[0].routes[3].requestModels.application/json (line " in err
    assert "apis[0].routes[0].requestParameters.method.request.body.page" in err
    # unknown model names and unsupported references
    path.write_text(native_config("127.0.0.1:9").replace("{application/json: Pet}", "{application/json: Cat}", 1)
                    .replace("#/definitions/Pet", "other.json#/Pet"))
    err = _validate(path).stderr
    assert "apis[0].routes[0].requestModels.application/json" in err and "no model 'Cat'" in err
    assert "apis[0].models.Pet" in err and "$ref 'other.json#/Pet' is not supported" in err


def test_bad_schema_in_an_openapi_document_is_located_in_the_document(tmp_path):
    doc = json.loads(json.dumps(OAS3))
    doc["components"]["schemas"]["Owner"]["properties"]["id"]["type"] = "int"
    path = tmp_path / "api.json"
    path.write_text(json.dumps(doc, indent=1))
    result = _validate(path)
    assert result.returncode == 2
    assert "components.schemas.Owner (line " in result.stderr and "properties.id.type" in result.stderr
    # a schema that is not draft 4 but that no validating route uses is not an error (AWS imports it)
    doc["paths"]["/pets"]["post"].pop("x-amazon-apigateway-request-validator")
    path.write_text(json.dumps(doc))
    assert _validate(path).returncode == 0


def test_http_apis_have_no_request_validation(tmp_path):
    path = tmp_path / "http.yaml"
    path.write_text("""
apis:
  - name: h
    type: HTTP
    stages: {$default: {}}
    routes:
      - route: GET /a
        requestValidator: all
        integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/a"}
""")
    with pytest.raises(ConfigError) as info:
        load_plan(load_document(path))
    assert "apis[0].routes[0]" in str(info.value) and "only in REST APIs" in str(info.value)


# -- the compiled validator ------------------------------------------------------------------------------
def _validator(tmp_path: Path, route: str = "POST /pets") -> Any:
    path = tmp_path / "gateway.yaml"
    path.write_text(native_config("127.0.0.1:9"))
    plan = load_plan(load_document(path))
    return {r.key: r.validator for r in plan.stages[0].routes}[route]


def _error(call: Any, *args: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        call(*args)
    return info.value


def test_compiled_route_validators(tmp_path):
    pets = _validator(tmp_path)
    assert pets.order == (("header", "x-team"), ("querystring", "lang"))
    assert _validator(tmp_path, "POST /open") is None  # nothing to check: no cost on the hot path
    assert _validator(tmp_path, "POST /params-only").models == {}
    assert _validator(tmp_path, "POST /body-only").order == ()
    error = _error(pets.check_parameters, "page=2&lang", [("x-team", "")])
    assert (error.kind, error.message) == ("BAD_REQUEST_PARAMETERS", "Missing required request parameters: "
                                                                     "[x-team, lang]")
    pets.check_parameters("lang=en+GB&x=1", [("X-Team", "a")])
    pets.check_parameters("l%61ng=%20x", [("x-team", "a")])  # names and values are percent-decoded
    assert pets.model_for([]) is pets.models["application/json"]
    assert pets.model_for([("content-type", "text/xml")]) is None


def test_body_check_messages():
    check = BodyModel("T", _compile({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                                     "additionalProperties": False,
                                     "properties": {"s": {"type": "string", "maxLength": 2, "pattern": "^a"},
                                                    "n": {"type": "number", "maximum": 5, "exclusiveMaximum": True},
                                                    "e": {"enum": ["x", "y"]},
                                                    "l": {"type": "array", "minItems": 2}}}))
    cases = {
        b'{"s": "abc"}': '[string "abc" is too long (length: 3, maximum allowed: 2)]',
        b'{"s": "b"}': '[ECMA 262 regex "^a" does not match input string "b"]',
        b'{"n": 5}': "[numeric instance is not strictly lower than the required maximum 5]",
        b'{"e": "z"}': '[instance value ("z") not found in enum (possible values: ["x","y"])]',
        b'{"l": [1]}': "[array is too short: must have at least 2 elements but instance has 1 elements]",
        b'{"zz": 1}': '[object instance has properties which are not allowed by the schema: ["zz"]]',
    }
    for body, detail in cases.items():
        error = _error(check_body, check, body)
        assert (error.kind, error.message, error.message.validation) == ("BAD_REQUEST_BODY", "Invalid request body",
                                                                         detail)
    check_body(check, b' {"s": "a", "n": 4.5, "e": "x", "l": [1, 2]} ')
    # the detail reaches a gatewayResponses template JSON-escaped; the default body is AWS's
    responses = GatewayResponses({"BAD_REQUEST_BODY": GatewayResponseOverride(
        body='{"d": "$context.error.validationErrorString"}')})
    error = _error(check_body, check, b'{"e": "z"}')
    assert json.loads(responses.render(error.kind, error.message)[2])["d"] == error.message.validation
    assert GatewayResponses().render(error.kind, error.message)[2] == b'{"message":"Invalid request body"}'


def test_meta_schema_check():
    assert meta_check(PET) is None
    assert meta_check({"type": "object", "nullable": True, "x-extra": 1}) is None  # unknown keywords are allowed
    assert "required" in (meta_check({"required": []}) or "")
    assert "exclusiveMinimum" in (meta_check({"exclusiveMinimum": 5}) or "")  # draft 6+ form, not draft 4
    assert "type" in (meta_check({"type": "int"}) or "")


def test_read_body_and_replay():
    class Head:
        def __init__(self, content_length: int, chunked: bool = False):
            self.content_length, self.chunked = content_length, chunked

    class Down:
        def __init__(self, parts: list[bytes]):
            self.parts, self.query = parts, "q=1"

        async def _gen(self) -> Any:
            for part in self.parts:
                yield part

        def body_chunks(self) -> Any:
            return self._gen()

    class BareGateway(Gateway):
        def __init__(self) -> None:  # only what reading a body needs
            self.max_body = 1 << 20
            self.body_idle_seconds = 30.0

    def read_body(down: Any, head: Any, limit: int) -> Any:
        return BareGateway().read_whole_body(down, head, limit)

    async def run() -> None:
        assert await read_body(Down([b"ab", b"c"]), Head(3), 10) == b"abc"
        assert await read_body(Down([]), Head(-1), 10) == b""
        assert (await _raises(read_body(Down([b"x" * 11]), Head(11), 10))).kind == "REQUEST_TOO_LARGE"
        assert (await _raises(read_body(Down([b"x" * 6] * 2), Head(-1, True), 10))).kind == "REQUEST_TOO_LARGE"
        assert (await _raises(read_body(Down([b"ab"]), Head(3), 10))).message == "Incomplete request body"
        replay = ReplayedBody(Down([]), b"body")
        assert replay.query == "q=1" and await replay.read_body() == b"body"
        assert [chunk async for chunk in replay.body_chunks()] == [b"body"]

    async def _raises(coroutine: Any) -> GatewayError:
        try:
            await coroutine
        except GatewayError as exc:
            return exc
        raise AssertionError("no GatewayError")

    asyncio.run(run())
