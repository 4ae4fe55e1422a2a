"""`fastgw export`: the model back to OpenAPI with the x-amazon-apigateway-* extensions. Exporting an
imported document gives an equivalent document (every conformance document), through the CLI too;
a native config exports to a document that imports back to the same routes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from conftest import SHARED
from test_openapi import DOCUMENTS, NEEDS, OPENAPI

from fastgw.config.loader import load_document, resolve_env
from fastgw.config.model import read_config
from fastgw.openapi.cfn import Resolver
from fastgw.openapi.export import export_api
from fastgw.openapi.refs import Refs
from fastgw.openapi.source import LoadOptions, load_source

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
    if name == "localstack__petstore-swagger.json" or name.startswith("localstack__petstore-authorizer"):
        text = json.dumps(data).replace("${uri}", options.params["uri"])
        data = json.loads(text)
    return data


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
