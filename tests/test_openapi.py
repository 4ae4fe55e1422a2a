"""OpenAPI 3.x / Swagger 2.0 with x-amazon-apigateway-* extensions: loading, CloudFormation values,
$ref, the one warning about unimplemented fields, serving a document directly and from a native config.

The documents are the real AWS definitions of ../shared/conformance/openapi (loaded from there)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import SHARED

from fastgw.compile import load_plan
from fastgw.config.loader import ConfigError, load_document, parse_text
from fastgw.openapi.source import LoadOptions

OPENAPI = SHARED / "conformance" / "openapi"
DOCUMENTS = sorted(p.name for p in OPENAPI.iterdir() if p.is_file() and p.suffix in (".json", ".yaml"))
ECHO = "handlers.lambdas:echo"

# What each document needs from the user to run: CloudFormation values, handlers, stage variables.
AUTHORIZER = "handlers.authorizers:token"  # a Lambda authorizer (tests/test_authorizers_lambda.py runs them)
NEEDS: dict[str, LoadOptions] = {
    "localstack__petstore-swagger.json": LoadOptions(params={"uri": "http://petstore.example.com/petstore/pets"}),
    "localstack__petstore-authorizer.swagger.json": LoadOptions(
        params={"uri": "http://petstore.example.com/petstore/pets"},
        functions={"function-name": AUTHORIZER}),
    "localstack__openapi.spec.global-auth.json": LoadOptions(
        params={"authorizer_lambda_invocation_arn": "authorizer"}, functions={"authorizer": AUTHORIZER}),
    "aws-samples__reminders-api.cfn-include.yaml": LoadOptions(params={
        "AWS::Region": "eu-west-1", "RemindersTable": "reminders",
        "APIGatewayDynamoDBRole.Arn": "arn:aws:iam::1:role/r"}),
    "aws-samples__cache-invalidation-api.cfn-include.yaml": LoadOptions(params={
        "AWS::Region": "eu-west-1", "PetTable": "pets", "PetTableRole.Arn": "arn:aws:iam::1:role/p"}),
    "localstack__openapi.spec.pulumi.json": LoadOptions(functions={"s3OnObjectCreatedLambda-60c92b6": ECHO,
                                                                   "apiGwAuthorizerLambda-2152989": AUTHORIZER}),
    "localstack__swagger-mock-cors.json": LoadOptions(functions={
        "aws-serverless-shopping-cart-produc-GetProductFunction-28378339": ECHO,
        "aws-serverless-shopping-cart-produ-GetProductsFunction-c1359550": ECHO}),
    "awsdocs__simple-calc-lambda-api.swagger2.json": LoadOptions(functions={"Calc": "handlers.lambdas:calc"}),
    "localstack__openapi.cognito-auth.json": LoadOptions(params={
        "cognito_pool_arn": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Example"}),
    "localstack__openapi.spec.stage-variables.json": LoadOptions(stage_variables={
        "TestHost": "example.com", "testPath": "api", "querystring": "a=1"}),
}


def load(name: str, options: LoadOptions | None = None):
    return load_plan(load_document(OPENAPI / name), options if options is not None else NEEDS.get(name))


# Documents whose authorization fastgw cannot enforce as loaded here: they must be refused (fail closed),
# never served open. AWS_IAM needs the credentials the gateway trusts (tests/test_authorizers_iam.py
# serves such a document with them).
NOT_ENFORCED_YET = {"awsdocs__s3-proxy-binary.swagger2.json": "the gateway trusts no IAM credentials"}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_conformance_document_loads(name):
    if name in NOT_ENFORCED_YET:
        with pytest.raises(ConfigError) as refused:
            load(name)
        assert any(NOT_ENFORCED_YET[name] in str(p) for p in refused.value.problems), refused.value.problems
        return
    plan = load(name)
    assert plan.stages and all(stage.routes for stage in plan.stages)
    # At most one warning per document, listing everything fastgw does not implement.
    assert len(plan.notes) <= 1


def test_api_type_and_default_stage():
    rest = load("localstack__petstore-swagger.json")
    assert [(s.api.type, s.name) for s in rest.stages] == [("REST", "prod")]
    http = load("awsdocs__http-api-example-petstore.oas30.json")
    assert [(s.api.type, s.name) for s in http.stages] == [("HTTP", "$default")]
    assert http.default_stage is http.stages[0]  # no path prefix
    named = load("awsdocs__http-api-example-petstore.oas30.json", LoadOptions(stage="beta"))
    assert named.stages[0].name == "beta" and "beta" in named.stages_by_prefix


def test_routes_any_method_and_integration_types():
    plan = load("awsdocs__simple-calc-lambda-api.swagger2.json")
    routes = {r.key: type(r.integration).__name__ for r in plan.stages[0].routes}
    assert routes == {"GET /": "NonProxyPlan", "POST /": "NonProxyPlan", "ANY /{a}": "NonProxyPlan",
                      "ANY /{a}/{b}": "NonProxyPlan", "GET /{a}/{b}/{op}": "NonProxyPlan"}
    kinds = {r.key: r.integration.kind for r in plan.stages[0].routes}
    assert kinds["ANY /{a}"] == "MOCK" and kinds["GET /"] == "FUNCTION_CUSTOM"
    pulumi = load("localstack__openapi.spec.pulumi.json")
    by_key = {r.key: r for r in pulumi.stages[0].routes}
    assert type(by_key["GET /just_do_it"].integration).__name__ == "FunctionPlan"
    assert by_key["GET /just_do_it"].integration.name == "s3OnObjectCreatedLambda-60c92b6"
    # security: [{Auth0: []}, {api_key: []}] -> API key required (AWS's reading of the api_key scheme)
    assert by_key["GET /just_do_it"].usage is not None and by_key["GET /just_do_it"].usage.key_required


def test_cloudformation_values_resolved_and_missing_ones_named():
    plan = load("aws-samples__reminders-api.cfn-include.yaml")
    api_routes = plan.stages[0].routes
    assert {r.integration.uri for r in api_routes} == {
        "arn:aws:apigateway:eu-west-1:dynamodb:action/" + action
        for action in ("GetItem", "UpdateItem", "DeleteItem", "Scan")}
    with pytest.raises(ConfigError) as info:
        load("aws-samples__reminders-api.cfn-include.yaml", LoadOptions())
    text = str(info.value)
    for name in ("AWS::Region", "RemindersTable", "APIGatewayDynamoDBRole.Arn"):
        assert f"needs the value of '{name}'" in text
    assert "--param" in text
    first = info.value.problems[0]
    assert first.path.startswith("paths./reminders/{id}.get.x-amazon-apigateway-integration") and first.line


def test_cloudformation_intrinsics(tmp_path):
    doc = {"openapi": "3.0.1", "info": {"title": "cfn", "version": "1"}, "paths": {"/a": {"get": {
        "x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET",
            "uri": {"Fn::Join": ["", [{"Fn::Sub": "http://${Host}"}, "/", {"Ref": "Path"},
                                      {"Fn::Sub": "/${!literal}"}]]},
            "credentials": {"Fn::GetAtt": ["Role", "Arn"]},
            "requestTemplates": {"application/json": {"Fn::Sub": ["${A}-${AWS::Partition}", {"A": "x"}]}},
        }}}}}
    path = tmp_path / "cfn.json"
    path.write_text(json.dumps(doc))
    options = LoadOptions(params={"Host": "127.0.0.1:9", "Path": "p", "Role.Arn": "arn:role"}, api_type="REST")
    from fastgw.openapi.source import load_source

    api = load_source(path, options).data["apis"][0]
    integration = api["routes"][0]["integration"]
    assert integration["uri"] == "http://127.0.0.1:9/p/${literal}"
    assert integration["awsFields"]["credentials"] == "arn:role"
    assert integration["requestTemplates"] == {"application/json": "x-aws"}


def test_placeholder_uri_needs_its_value():
    with pytest.raises(ConfigError) as info:
        load("localstack__petstore-swagger.json", LoadOptions())
    assert "needs the value of 'uri': give it with --param uri=VALUE" in str(info.value)
    assert "paths./pets.get.x-amazon-apigateway-integration.uri (line" in str(info.value)


def test_circular_models_and_dangling_refs(tmp_path):
    plan = load("localstack__openapi.spec.circular-ref-with-request-body.json")
    assert plan.stages[0].routes[0].key == "POST /person"
    config_doc = json.loads((OPENAPI / "localstack__openapi.spec.circular-ref-with-request-body.json").read_text())
    config_doc["components"]["schemas"]["House"]["properties"]["owner"] = {"$ref": "#/components/schemas/Nobody"}
    config_doc["paths"]["/loop"] = {"$ref": "#/paths/~1loop"}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(config_doc, indent=1))
    with pytest.raises(ConfigError) as info:
        load_plan(load_document(path))
    text = str(info.value)
    assert "components.schemas.House.properties.owner.$ref" in text and "points to nothing" in text
    assert "circular $ref" in text


def test_one_warning_lists_every_unimplemented_field():
    plan = load("aws-samples__reminders-api.cfn-include.yaml")
    assert len(plan.notes) == 1
    note = plan.notes[0]
    assert "AWS service integration" in note and "paths./reminders.post.x-amazon-apigateway-integration" in note
    assert "request-validator" not in note  # request validation is applied (tests/test_validation.py)
    petstore = load("localstack__petstore-authorizer.swagger.json")
    note = petstore.notes[0]
    assert "x-amazon-apigateway-documentation" in note
    # the authorizer is enforced (tests/test_authorizers_lambda.py), so it is no longer listed as not implemented
    assert "test-authorizer" not in note
    assert {r.key for r in petstore.stages[0].routes if r.authorizer is not None} == {"GET /", "GET /pets"}


def test_problems_are_located_in_the_openapi_file(tmp_path):
    text = """openapi: "3.0.1"
info: {title: bad, version: "1"}
paths:
  /items/{id}:
    get:
      x-amazon-apigateway-integration:
        type: http_proxy
        httpMethod: GET
        uri: "http://127.0.0.1:9/items/{nope}"
"""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_plan(load_document(path))
    problem = info.value.problems[0]
    assert problem.path == "paths./items/{id}.get.x-amazon-apigateway-integration.uri"
    assert problem.line == 9
    assert "{nope}" in problem.message


def test_upstreams_rewrite_by_longest_prefix(tmp_path):
    plan = load("awsdocs__http-api-example-petstore.oas30.json", LoadOptions(upstreams={
        "http://petstore.execute-api.us-west-1.amazonaws.com": "http://127.0.0.1:1",
        "http://petstore.execute-api.us-west-1.amazonaws.com/petstore/pets/": "http://127.0.0.1:2/one/"}))
    uris = sorted(r.integration.uri for r in plan.stages[0].routes)
    assert uris == ["http://127.0.0.1:1/petstore/pets", "http://127.0.0.1:1/petstore/pets",
                    "http://127.0.0.1:2/one/{petId}"]


def test_native_config_includes_documents(tmp_path):
    config = f"""
parameters: {{uri: "http://petstore.example.com/petstore/pets"}}
upstreams: {{"http://petstore.example.com": "http://127.0.0.1:9"}}
apis:
  - name: shop
    openapi: {OPENAPI / "localstack__petstore-swagger.json"}
    stages: {{v1: {{variables: {{a: b}}}}}}
  - name: http
    openapi: {OPENAPI / "awsdocs__http-api-example-petstore.oas30.json"}
    stages: {{$default: {{}}}}
"""
    path = tmp_path / "gateway.yaml"
    path.write_text(config)
    plan = load_plan(load_document(path))
    assert [(s.api.name, s.name, len(s.routes)) for s in plan.stages] == [("shop", "v1", 6), ("http", "$default", 3)]
    assert plan.stages[0].routes[1].integration.proxy.uri == "http://127.0.0.1:9/petstore/pets"
    assert len(plan.notes) == 1  # the petstore's MOCK routes and documentation
    # A problem inside an included document is reported at its place there.
    path.write_text(config.replace("petstore.example.com/petstore", "other.example.com/x").replace(
        'parameters: {uri: "http://other.example.com/x/pets"}', ""))
    with pytest.raises(ConfigError) as info:
        load_plan(load_document(path))
    assert any(p.path.startswith(f"{OPENAPI / 'localstack__petstore-swagger.json'}: paths./pets.get")
               for p in info.value.problems), info.value


def test_document_with_bad_version_or_no_paths(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"swagger": "1.2", "info": {"title": "t"}, "paths": {}}))
    with pytest.raises(ConfigError) as info:
        load_plan(load_document(path))
    assert "unsupported Swagger version" in str(info.value) and "defines no paths" in str(info.value)


def test_parse_keeps_lines_for_json():
    document = parse_text('{\n "openapi": "3.0.1",\n "paths": {\n  "/a": {}\n }\n}', "x.json")
    assert document.line_of("paths./a") == 4


# -- served end to end ----------------------------------------------------------------------------------
def _args(**flags: list[str] | str) -> tuple[str, ...]:
    out: list[str] = []
    for flag, values in flags.items():
        for value in [values] if isinstance(values, str) else values:
            out += [f"--{flag.replace('_', '-')}", value]
    return tuple(out)


def test_serve_swagger_petstore_against_a_local_upstream(start_gateway, upstream):
    text = (OPENAPI / "localstack__petstore-swagger.json").read_text()
    gateway = start_gateway(text, args=_args(param="uri=https://petstore.example.com/petstore/pets",
                                             upstream=f"https://petstore.example.com=http://{upstream.address}"))
    base = f"{gateway.url}/prod"
    # GET /pets: a non-proxy HTTP integration: only the mapped query parameters go upstream.
    response = httpx.get(f"{base}/pets?type=dog&page=2&other=x", headers={"x-secret": "s"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["content-type"] == "application/json"
    seen = upstream.requests[-1]
    assert (seen.method, seen.target) == ("GET", "/petstore/pets?page=2&type=dog")
    assert seen.header("x-secret") is None and seen.header("host") == upstream.address
    # POST /pets: the body passes through.
    response = httpx.post(f"{base}/pets", json={"type": "cat", "price": 123.11})
    assert response.status_code == 200
    seen = upstream.requests[-1]
    assert (seen.method, seen.target) == ("POST", "/petstore/pets")
    assert json.loads(seen.body) == {"type": "cat", "price": 123.11}
    assert seen.header("content-type") == "application/json"
    # GET /pets/{petId}
    assert httpx.get(f"{base}/pets/7").status_code == 200
    assert upstream.requests[-1].target == "/petstore/pets/7"
    # The MOCK integration of GET / renders its HTML page (a VTL template with $context.stage in it).
    response = httpx.get(f"{base}/")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html"
    assert '<a href="/prod/pets/" target="_blank">' in response.text and "color: #333;" in response.text
    assert len(upstream.requests) == 3


def test_serve_oas30_http_api_petstore(start_gateway, upstream):
    text = (OPENAPI / "awsdocs__http-api-example-petstore.oas30.json").read_text()
    gateway = start_gateway(text, args=_args(
        upstream=f"http://petstore.execute-api.us-west-1.amazonaws.com=http://{upstream.address}"))
    response = httpx.get(f"{gateway.url}/pets?type=dog", headers={"x-extra": "1"})
    assert response.status_code == 200
    seen = upstream.requests[-1]
    assert (seen.method, seen.target, seen.header("x-extra")) == ("GET", "/petstore/pets?type=dog", "1")
    assert httpx.get(f"{gateway.url}/pets/12").status_code == 200
    assert upstream.requests[-1].target == "/petstore/pets/12"
    assert httpx.post(f"{gateway.url}/pets", content=b"{}").status_code == 200
    assert upstream.requests[-1].method == "POST"
    assert httpx.get(f"{gateway.url}/nope").status_code == 404


def test_import_writes_native_config_that_serves(tmp_path, start_gateway, upstream):
    import subprocess
    import sys

    out = tmp_path / "native.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "fastgw", "import", str(OPENAPI / "localstack__pets.json"), "-o", str(out)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    native = out.read_text()
    assert "type: HTTP" in native and "binaryMediaTypes" in native
    config = native.replace("http://petstore-demo-endpoint.execute-api.com", f"http://{upstream.address}")
    gateway = start_gateway(config)
    assert httpx.get(f"{gateway.url}/prod/pets/3").status_code == 200
    assert upstream.requests[-1].target == "/petstore/pets/3"


def test_validate_command_prints_the_warning_and_exits_zero(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "fastgw", "validate",
                             str(OPENAPI / "localstack__petstore-swagger.json"),
                             "--param", "uri=http://x.example/petstore/pets"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "OK (1 stage(s), 0 canaries, 6 route(s)" in result.stdout
    assert result.stderr.count("fastgw: warning:") == 1 and "documentation parts" in result.stderr
    missing = subprocess.run([sys.executable, "-m", "fastgw", "validate",
                              str(OPENAPI / "aws-samples__reminders-api.cfn-include.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "AWS::Region" in missing.stderr


def test_relative_include_paths(tmp_path):
    doc = tmp_path / "api" / "doc.json"
    doc.parent.mkdir()
    doc.write_text((OPENAPI / "awsdocs__http-api-example-petstore.oas30.json").read_text())
    (tmp_path / "gw.yaml").write_text("apis:\n  - {name: a, openapi: api/doc.json, stages: {$default: {}}}\n")
    plan = load_plan(load_document(tmp_path / "gw.yaml"))
    assert plan.files == [str((tmp_path / "gw.yaml").resolve()), str(doc.resolve())]
    assert Path(plan.stages[0].api.name) == Path("a")


def test_http_api_reusable_integrations_and_default_route(tmp_path, start_gateway, upstream):
    doc = {
        "openapi": "3.0.1", "info": {"title": "reuse", "version": "1"},
        "x-amazon-apigateway-importexport-version": "1.0",
        "paths": {
            "/items/{id}": {"get": {"x-amazon-apigateway-integration": {
                "$ref": "#/components/x-amazon-apigateway-integrations/items"}}},
            "/$default": {"x-amazon-apigateway-any-method": {"x-amazon-apigateway-integration": {
                "$ref": "#/components/x-amazon-apigateway-integrations/fallback"}}},
        },
        "components": {"x-amazon-apigateway-integrations": {
            "items": {"type": "HTTP_PROXY", "httpMethod": "GET", "uri": f"http://{upstream.address}/items/{{id}}",
                      "payloadFormatVersion": "1.0"},
            "fallback": {"type": "HTTP_PROXY", "httpMethod": "ANY", "uri": f"http://{upstream.address}/fallback"},
        }},
    }
    path = tmp_path / "reuse.json"
    path.write_text(json.dumps(doc))
    plan = load_plan(load_document(path))
    assert plan.stages[0].api.type == "HTTP" and {r.key for r in plan.stages[0].routes} == {"GET /items/{id}",
                                                                                           "$default"}
    gateway = start_gateway(path.read_text(), name="reuse")
    assert httpx.get(f"{gateway.url}/items/5").status_code == 200
    assert upstream.requests[-1].target == "/items/5"
    assert httpx.delete(f"{gateway.url}/anything/else").status_code == 200
    assert upstream.requests[-1].target == "/fallback"
    from fastgw.commands.openapi import _read
    from fastgw.openapi.export import export_api

    _, config = _read(str(path), LoadOptions())
    exported = export_api(config.apis[0], config)
    assert exported["paths"]["/items/{id}"]["get"]["x-amazon-apigateway-integration"] == {
        "$ref": "#/components/x-amazon-apigateway-integrations/items"}
