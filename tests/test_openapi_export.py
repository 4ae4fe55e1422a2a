"""`fastgw export`: the model back to OpenAPI with the x-amazon-apigateway-* extensions. Exporting an
imported document gives an equivalent document (every conformance document), through the CLI too;
a native config exports to a document that imports back to the same routes, validating requests the
same way (validators, required parameters, body models, as AWS's GetExport writes them)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import httpx
import pytest
import yaml
from conftest import SHARED
from support.upstream import Action, RecordingUpstream
from test_openapi import DOCUMENTS, NEEDS, OPENAPI

from fastgw.compile import load_plan
from fastgw.config.loader import load_document, resolve_env
from fastgw.config.model import read_config
from fastgw.errors import GatewayError
from fastgw.openapi.cfn import Resolver
from fastgw.openapi.export import export_api
from fastgw.openapi.refs import Refs
from fastgw.openapi.source import LoadOptions, load_source
from fastgw.policies.validation import check_body

X = "x-amazon-apigateway-"


def imported(path, options: LoadOptions | None = None):
    expanded = load_source(path, options)
    config, problems = read_config(resolve_env(expanded.data, "", []))
    assert not problems, problems
    return config


def normalize(doc: dict) -> dict:
    """What makes two documents equivalent for API Gateway: integrations dereferenced, spelling and
    number/string forms of the same values unified, documented defaults dropped."""
    doc = copy.deepcopy(doc)
    refs = Refs(doc, "x.json")
    for item in (doc.get("paths") or {}).values():
        for op in item.values():
            if not isinstance(op, dict) or X + "integration" not in op:
                continue
            integration = refs.deref(op[X + "integration"], "") or {}
            integration = dict(integration)
            integration["type"] = str(integration.get("type", "")).lower()
            if "payloadFormatVersion" in integration:
                integration["payloadFormatVersion"] = f"{float(integration['payloadFormatVersion']):.1f}"
            if "passthroughBehavior" in integration:
                integration["passthroughBehavior"] = str(integration["passthroughBehavior"]).lower()
            if integration.get("timeoutInMillis") == 29000:
                del integration["timeoutInMillis"]
            if isinstance(integration.get("responses"), dict):
                integration["responses"] = {
                    str(k): {**v, "statusCode": str(v["statusCode"])} if isinstance(v, dict) and "statusCode" in v
                    else v for k, v in integration["responses"].items()}
            op[X + "integration"] = integration
    for response in (doc.get(X + "gateway-responses") or {}).values():
        if "statusCode" in response:
            response["statusCode"] = str(response["statusCode"])
    if doc.get(X + "api-key-source") == "HEADER":
        del doc[X + "api-key-source"]
    return doc


def original(name: str) -> dict:
    document = load_document(OPENAPI / name)
    options = NEEDS.get(name) or LoadOptions()
    resolver = Resolver(options.params)
    data = resolver.resolve(document.data)
    # `${name}` placeholders given with --param are filled on import (integration URIs, authorizer URIs)
    text = json.dumps(data)
    for key, value in options.params.items():
        if "::" not in key and "." not in key:
            text = text.replace("${" + key + "}", value)
    return json.loads(text)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_export_of_an_import_is_equivalent(name):
    config = imported(OPENAPI / name, NEEDS.get(name))
    exported = export_api(config.apis[0], config)
    assert normalize(exported) == normalize(original(name))


def test_round_trip_through_the_cli(tmp_path):
    for name in ("localstack__petstore-swagger.json", "awsdocs__http-api-example-petstore.oas30.json",
                 "localstack__openapi.spec.pulumi.json", "aws-samples__reminders-api.cfn-include.yaml"):
        native = tmp_path / f"{name}.native.yaml"
        params = [arg for key, value in (NEEDS.get(name) or LoadOptions()).params.items()
                  for arg in ("--param", f"{key}={value}")]
        run = subprocess.run([sys.executable, "-m", "fastgw", "import", str(OPENAPI / name), "-o", str(native),
                              *params], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        out = tmp_path / f"{name}.out.json"
        run = subprocess.run([sys.executable, "-m", "fastgw", "export", str(native), "-o", str(out)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert normalize(json.loads(out.read_text())) == normalize(original(name)), name


def test_export_swagger_petstore_matches_what_aws_exports():
    """AWS's own GetExport of the imported PetStore (recorded by LocalStack against AWS): the same paths,
    methods and integrations."""
    snapshot = json.loads((SHARED / "conformance" / "openapi" / "expected" /
                           "localstack__test_apigateway_extended.export.snapshot.json").read_text())
    aws = None
    for entry in snapshot.values():
        for key, value in (entry.get("recorded-content") or {}).items():
            body = value.get("body") if isinstance(value, dict) else None
            if key.startswith("get-export") and isinstance(body, dict) and "/pets/{petId}" in body.get("paths", {}) \
                    and "swagger" in body and X + "integration" in json.dumps(body):
                aws = body
                break
        if aws:
            break
    assert aws is not None
    options = LoadOptions(params={"uri": "http://petstore.execute-api.us-east-1.amazonaws.com/petstore/pets"})
    config = imported(OPENAPI / "localstack__petstore-swagger.json", options)
    ours = export_api(config.apis[0], config)
    assert {p: sorted(item) for p, item in ours["paths"].items()} == \
        {p: sorted(k for k in item if k != "parameters") for p, item in aws["paths"].items()}
    for path, item in aws["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            theirs = op[X + "integration"]
            mine = ours["paths"][path][method][X + "integration"]
            assert mine["type"] == theirs["type"]
            for key in ("httpMethod", "requestParameters", "requestTemplates", "passthroughBehavior"):
                if key in theirs:
                    assert mine.get(key) == theirs[key], (path, method, key)


def test_native_config_exports_and_imports_back(tmp_path):
    config_text = """
functions: {pets: "handlers.lambdas:echo"}
apis:
  - name: shop
    type: REST
    binaryMediaTypes: [image/png]
    stages: {prod: {}}
    gatewayResponses:
      DEFAULT_4XX: {statusCode: 400, headers: {x-a: b}, body: '{"error": $context.error.messageString}'}
    routes:
      - route: GET /pets/{id}
        apiKeyRequired: true
        integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/pets/{id}", timeoutInMillis: 5000}
      - route: POST /pets
        integration: {type: FUNCTION, uri: pets}
      - route: ANY /files/{path+}
        integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/{path}"}
"""
    path = tmp_path / "native.yaml"
    path.write_text(config_text)
    config = imported(path)
    for version in ("oas30", "swagger"):
        document = export_api(config.apis[0], config, version=version)
        assert ("swagger" in document) == (version == "swagger")
        assert document[X + "binary-media-types"] == ["image/png"]
        get = document["paths"]["/pets/{id}"]["get"]
        assert get["security"] == [{"api_key": []}]
        assert get[X + "integration"] == {"type": "http_proxy", "uri": "http://127.0.0.1:9/pets/{id}",
                                          "timeoutInMillis": 5000}
        post = document["paths"]["/pets"]["post"][X + "integration"]
        assert post["type"] == "aws_proxy" and post["httpMethod"] == "POST"
        assert post["uri"].startswith("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                                      "arn:aws:lambda:us-east-1:123456789012:function:pets/invocations")
        assert "x-amazon-apigateway-any-method" in document["paths"]["/files/{path+}"]
        assert document[X + "gateway-responses"]["DEFAULT_4XX"] == {
            "statusCode": 400, "responseParameters": {"gatewayresponse.header.x-a": "'b'"},
            "responseTemplates": {"application/json": '{"error": $context.error.messageString}'}}
        back = tmp_path / f"back-{version}.yaml"
        back.write_text(yaml.safe_dump(document))
        again = imported(back, LoadOptions(functions={"pets": "handlers.lambdas:echo"}))
        routes = sorted((r.key, r.integration.type, r.apiKeyRequired) for r in again.apis[0].routes)
        assert routes == [("ANY /files/{path+}", "HTTP_PROXY", False), ("GET /pets/{id}", "HTTP_PROXY", True),
                          ("POST /pets", "FUNCTION", False)]


# -- request validation of a native config (AWS's GetExport form) ------------------------------------------
VALIDATED = """
apis:
  - name: shop
    type: REST
    requestValidators:
      strict: {validateRequestBody: true, validateRequestParameters: true}
    requestValidator: params                  # a built-in name as the API's default
    stages: {prod: {}}
    models:
      Pet: {type: object, required: [name], properties: {name: {type: string}, owner: {$ref: "#/definitions/Owner"}}}
      Owner: {type: object, required: [id], properties: {id: {type: integer}}}
    routes:
      - route: POST /pets/{id}
        requestValidator: strict
        requestParameters:
          method.request.querystring.lang: true
          method.request.header.x-team: true
          method.request.querystring.page: false
          method.request.path.id: true
        requestModels: {application/json: Pet}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/pets"}
      - route: GET /pets
        requestParameters: {method.request.querystring.limit: true, method.request.header.x-tenant: true}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/pets"}
      - route: PUT /notes
        requestValidator: body
        requestModels:
          application/json: {type: object, required: [text], properties: {by: {$ref: "#/definitions/Owner"}}}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/notes"}
      - route: PATCH /notes
        requestValidator: "Validate body, query string parameters, and headers"
        requestParameters: {method.request.header.if-match: true}
        requestModels: {application/json: Owner, text/plain: Owner}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/notes"}
      - route: DELETE /notes
        requestValidator: none
        requestParameters: {method.request.querystring.force: true}
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/notes"}
"""
CONSOLE_ALL = "Validate body, query string parameters, and headers"


def _written(tmp_path, text: str, name: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("version", ["oas30", "swagger"])
def test_native_request_validation_exports_as_aws_does(tmp_path, version):
    swagger = version == "swagger"
    config = imported(_written(tmp_path, VALIDATED, "native.yaml"))
    document = export_api(config.apis[0], config, version=version)
    ref = "#/definitions/" if swagger else "#/components/schemas/"

    def param(name, where, required):
        if swagger:
            return {"name": name, "in": where, "required": required, "type": "string"}
        return {"name": name, "in": where, **({"required": True} if required else {}), "schema": {"type": "string"}}

    # the API's validators, the built-in ones its routes and default use, the default
    assert document[X + "request-validators"] == {
        "strict": {"validateRequestBody": True, "validateRequestParameters": True},
        "params": {"validateRequestBody": False, "validateRequestParameters": True},
        "body": {"validateRequestBody": True, "validateRequestParameters": False},
        CONSOLE_ALL: {"validateRequestBody": True, "validateRequestParameters": True},
        "none": {"validateRequestBody": False, "validateRequestParameters": False},
    }
    assert document[X + "request-validator"] == "params"
    # parameters: the path's own once, then the route's in their order
    post = document["paths"]["/pets/{id}"]["post"]
    assert post[X + "request-validator"] == "strict"
    params = [param("id", "path", True), param("lang", "query", True), param("x-team", "header", True),
              param("page", "query", False)]
    get = document["paths"]["/pets"]["get"]
    assert X + "request-validator" not in get  # the API's default applies
    assert get["parameters"] == [param("limit", "query", True), param("x-tenant", "header", True)]
    put = document["paths"]["/notes"]["put"]
    patch = document["paths"]["/notes"]["patch"]
    assert patch[X + "request-validator"] == CONSOLE_ALL
    assert document["paths"]["/notes"]["delete"]["parameters"] == [param("force", "query", True)]
    inline = {"type": "object", "required": ["text"], "properties": {"by": {"$ref": ref + "Owner"}}}
    if swagger:  # one `in: body` parameter named after its model, and `consumes`
        assert post["parameters"] == [*params, {"in": "body", "name": "Pet", "required": True,
                                                "schema": {"$ref": ref + "Pet"}}]
        assert post["consumes"] == ["application/json"]
        assert put["parameters"] == [{"in": "body", "name": "body", "required": True, "schema": inline}]
        assert patch["parameters"] == [param("if-match", "header", True), {
            "in": "body", "name": "Owner", "required": True, "schema": {"$ref": ref + "Owner"}}]
        assert patch["consumes"] == ["application/json", "text/plain"]
        models = document["definitions"]
        assert "requestBody" not in post
    else:  # requestBody: a $ref for a named model, the schema itself when written in place
        assert post["parameters"] == params
        assert post["requestBody"] == {"content": {"application/json": {"schema": {"$ref": ref + "Pet"}}},
                                       "required": True}
        assert put["requestBody"] == {"content": {"application/json": {"schema": inline}}, "required": True}
        assert patch["requestBody"]["content"] == {"application/json": {"schema": {"$ref": ref + "Owner"}},
                                                   "text/plain": {"schema": {"$ref": ref + "Owner"}}}
        assert "consumes" not in post
        models = document["components"]["schemas"]
    # the models, their references to each other in the version's form
    assert models == {
        "Pet": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "owner": {"$ref": ref + "Owner"}}},
        "Owner": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}}
    # the config is not changed by exporting it
    assert config.apis[0].aws.models["Pet"]["properties"]["owner"] == {"$ref": "#/definitions/Owner"}


def _validators(path) -> dict:
    """route key -> what its compiled validator checks (path parameters the path defines are never missing)."""
    plan = load_plan(load_document(path))
    out = {}
    for route in plan.stages[0].routes:
        v = route.validator
        if v is None:
            out[route.key] = None
            continue
        order = tuple(o for o in v.order if o[0] != "path" or o[1] in v.absent)
        out[route.key] = (order, v.query, v.headers, v.absent, {media: m.name for media, m in v.models.items()})
    return out, plan


@pytest.mark.parametrize("version", ["oas30", "swagger"])
def test_exported_request_validation_imports_back_the_same(tmp_path, version):
    native = _written(tmp_path, VALIDATED.replace("UPSTREAM", "127.0.0.1:9"), "native.yaml")
    config = imported(native)
    document = export_api(config.apis[0], config, version=version)
    exported = _written(tmp_path, json.dumps(document), f"exported-{version}.json")
    before, before_plan = _validators(native)
    after, after_plan = _validators(exported)
    assert after == before
    assert after_plan.notes == []  # nothing in the exported document left unread
    assert before["POST /pets/{id}"] == ((("header", "x-team"), ("querystring", "lang")), frozenset({"lang"}),
                                         frozenset({"x-team"}), frozenset(), {"application/json": "Pet"})
    assert before["GET /pets"][0] == (("header", "x-tenant"), ("querystring", "limit"))
    assert before["PUT /notes"][4] == {"application/json": ""}
    assert before["PATCH /notes"][4] == {"application/json": "Owner", "text/plain": "Owner"}
    assert before["DELETE /notes"] is None  # `none`: nothing checked
    # the models accept and refuse the same bodies (Pet through its $ref to Owner, the inline one too)
    bodies = [b'{"name": "rex"}', b'{"name": "rex", "owner": {}}', b'{"name": "rex", "owner": {"id": 7}}',
              b'{"text": "hi"}', b'{"text": "hi", "by": {"id": "x"}}', b'{"id": 3}', b"[]"]

    def outcomes(plan) -> dict:
        result = {}
        for route in plan.stages[0].routes:
            for media, model in (route.validator.models.items() if route.validator else ()):
                for body in bodies:
                    try:
                        check_body(model, body)
                        result[(route.key, media, body)] = True
                    except GatewayError:
                        result[(route.key, media, body)] = False
        return result

    assert outcomes(after_plan) == outcomes(before_plan)
    assert outcomes(before_plan)[("POST /pets/{id}", "application/json", b'{"name": "rex", "owner": {}}')] is False
    assert outcomes(before_plan)[("PUT /notes", "application/json", b'{"text": "hi", "by": {"id": "x"}}')] is False


def test_swagger_export_keeps_the_json_body_model_only():
    """Swagger 2.0 has one body schema per operation: the application/json model's (and the media types
    that share it); OpenAPI 3.0 writes every media type."""
    config, problems = read_config({"apis": [{
        "name": "shop", "type": "REST", "stages": {"prod": {}}, "models": {"Pet": {"type": "object"}},
        "routes": [{"route": "POST /pets", "requestValidator": "body",
                    "requestModels": {"text/plain": {"type": "string"}, "application/json": "Pet",
                                      "application/x-pet": "Pet"},
                    "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/pets"}}]}]})
    assert not problems, problems
    post = export_api(config.apis[0], config, version="swagger")["paths"]["/pets"]["post"]
    assert post["consumes"] == ["application/json", "application/x-pet"]
    assert post["parameters"] == [{"in": "body", "name": "Pet", "required": True,
                                   "schema": {"$ref": "#/definitions/Pet"}}]
    content = export_api(config.apis[0], config, version="oas30")["paths"]["/pets"]["post"]["requestBody"]["content"]
    assert list(content) == ["text/plain", "application/json", "application/x-pet"]


@pytest.mark.parametrize("version", ["oas30", "swagger"])
def test_exported_document_is_served_with_the_validators(tmp_path, start_gateway, version):
    upstream = RecordingUpstream(lambda request: Action(body=b'{"ok":true}')).start()
    try:
        config = imported(_written(tmp_path, VALIDATED.replace("UPSTREAM", upstream.address), "native.yaml"))
        gateway = start_gateway(json.dumps(export_api(config.apis[0], config, version=version)))
        url = f"{gateway.url}/prod"
        response = httpx.get(f"{url}/pets")
        assert response.status_code == 400
        assert response.content == b'{"message":"Missing required request parameters: [x-tenant, limit]"}'
        assert response.headers["x-amzn-errortype"] == "BadRequestException"
        response = httpx.post(f"{url}/pets/7?lang=", json={"name": "rex"}, headers={"x-team": "a"})
        assert response.json() == {"message": "Missing required request parameters: [lang]"}
        response = httpx.post(f"{url}/pets/7?lang=en", json={"name": "rex", "owner": {}}, headers={"x-team": "a"})
        assert response.status_code == 400 and response.json() == {"message": "Invalid request body"}
        assert upstream.requests == []
        body = b'{"name": "rex", "owner": {"id": 7}}'
        response = httpx.post(f"{url}/pets/7?lang=en", content=body,
                              headers={"x-team": "a", "content-type": "application/json"})
        assert response.status_code == 200 and response.json() == {"ok": True}
        assert (upstream.requests[-1].target, upstream.requests[-1].body) == ("/pets?lang=en", body)
        assert httpx.delete(f"{url}/notes").status_code == 200  # `none`
    finally:
        upstream.stop()
