"""Issue #24, the first hour of a new user (part b): export in the other OpenAPI version, the document's
own payloadFormatVersion type, stored canary state made visible and resettable, and the smaller CLI
points (validate's counts, `canary show`'s running, usage exit codes, import's bindings)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from test_openapi import DOCUMENTS, NEEDS, NOT_ENFORCED_YET, OPENAPI
from test_openapi_export import imported, normalize

from fastgw.compile import load_plan
from fastgw.config.loader import ConfigError, load_document
from fastgw.openapi.convert import ConversionError, convert
from fastgw.openapi.export import export_api
from fastgw.openapi.source import LoadOptions

FORMATS = ("oas30", "swagger")


def _fastgw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True, text=True, timeout=timeout)


def _route_keys(config) -> set[str]:
    return {f"{r.method} {r.template}" for r in config.apis[0].routes}


# -- 1. export --format converts between Swagger 2.0 and OpenAPI 3.0 --------------------------------
@pytest.mark.parametrize("version", FORMATS)
@pytest.mark.parametrize("name", DOCUMENTS)
def test_export_in_either_format_imports_back_and_exports_the_same(tmp_path, name, version):
    """export -> import -> export of every shared conformance document in both versions: the export is
    a document of that version (no Swagger 2.0 field in an OpenAPI 3.0 one and back), its import loads
    (compiles) with the same routes, and exporting that import again gives the same document."""
    options = NEEDS.get(name) or LoadOptions()
    config = imported(OPENAPI / name, options)
    first = export_api(config.apis[0], config, None, version)
    text = json.dumps(first)
    if version == "oas30":
        assert "openapi" in first and "swagger" not in first
        assert "#/definitions/" not in text and "definitions" not in first and "securityDefinitions" not in first
        for key in ("consumes", "produces", "host", "basePath", "schemes"):
            assert key not in first
        for item in first["paths"].values():
            for op in item.values():
                if isinstance(op, dict):
                    assert "consumes" not in op and "produces" not in op
                    assert all(p.get("in") not in ("body", "formData") for p in op.get("parameters") or [])
                    assert all("schema" not in r for r in (op.get("responses") or {}).values()
                               if isinstance(r, dict))
    else:
        assert first["swagger"] == "2.0" and "openapi" not in first and "components" not in first
        assert "#/components/" not in text and "servers" not in first
        for item in first["paths"].values():
            for op in item.values():
                if isinstance(op, dict):
                    assert "requestBody" not in op
                    assert all("content" not in r for r in (op.get("responses") or {}).values()
                               if isinstance(r, dict))
    path = tmp_path / f"export.{version}.json"
    path.write_text(text)
    if name in NOT_ENFORCED_YET:  # refused as the original is (its AWS_IAM authorization kept)
        with pytest.raises(ConfigError) as refused:
            load_plan(load_document(path), options)
        assert any(NOT_ENFORCED_YET[name] in str(p) for p in refused.value.problems)
    else:
        assert load_plan(load_document(path), options).stages  # the import of the export loads
    again = imported(path, options)
    assert _route_keys(again) == _route_keys(config)
    second = export_api(again.apis[0], again, None, version)
    assert normalize(second) == normalize(first)


def test_swagger_to_oas30_conversion_details():
    doc = {"swagger": "2.0", "info": {"title": "t", "version": "1"}, "host": "api.example.com",
           "basePath": "/v1", "schemes": ["https"], "consumes": ["application/json"],
           "produces": ["application/json"],
           "paths": {"/pets": {"post": {
               "parameters": [{"in": "body", "name": "Pet", "required": True, "schema": {"$ref": "#/definitions/Pet"}},
                              {"in": "query", "name": "q", "type": "string", "required": False}],
               "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/Pet"},
                                     "headers": {"X-Id": {"type": "string"}}}}}},
               "/upload": {"post": {"consumes": ["multipart/form-data"], "parameters": [
                   {"in": "formData", "name": "file", "type": "file", "required": True},
                   {"in": "formData", "name": "note", "type": "string"}],
                   "responses": {"200": {"description": "ok"}}}}},
           "definitions": {"Pet": {"type": "object", "properties": {"id": {"type": "integer"}}}},
           "securityDefinitions": {"key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}}
    out = convert(doc, "oas30")
    assert out["servers"] == [{"url": "https://api.example.com/v1"}]
    post = out["paths"]["/pets"]["post"]
    assert post["requestBody"] == {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}},
                                   "required": True}
    assert post["parameters"] == [{"in": "query", "name": "q", "required": False, "schema": {"type": "string"}}]
    assert post["responses"]["200"]["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}
    assert post["responses"]["200"]["headers"] == {"X-Id": {"schema": {"type": "string"}}}
    upload = out["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload == {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "note": {"type": "string"}}}
    assert out["components"]["schemas"]["Pet"]["type"] == "object"
    assert out["components"]["securitySchemes"]["key"]["in"] == "header"
    back = convert(out, "swagger")
    assert back["host"] == "api.example.com" and back["basePath"] == "/v1" and back["schemes"] == ["https"]
    body = back["paths"]["/pets"]["post"]["parameters"][-1]
    assert body == {"in": "body", "name": "Pet", "required": True, "schema": {"$ref": "#/definitions/Pet"}}
    assert back["paths"]["/pets"]["post"]["consumes"] == ["application/json"]
    assert back["paths"]["/pets"]["post"]["responses"]["200"]["schema"] == {"$ref": "#/definitions/Pet"}
    form = back["paths"]["/upload"]["post"]["parameters"]
    assert {(p["name"], p["in"], p["type"], p["required"]) for p in form} == {
        ("file", "formData", "file", True), ("note", "formData", "string", False)}


def test_what_swagger_cannot_say_is_refused_with_a_message(tmp_path):
    doc = {"openapi": "3.0.1", "info": {"title": "t", "version": "1"},
           "paths": {"/a": {"get": {"parameters": [{"in": "cookie", "name": "c", "schema": {"type": "string"}}],
                                    "responses": {"200": {"description": "ok"}},
                                    "x-amazon-apigateway-integration": {"type": "mock", "requestTemplates": {
                                        "application/json": '{"statusCode": 200}'}}}}}}
    with pytest.raises(ConversionError, match=r"paths\./a\.get\.parameters: a cookie parameter"):
        convert(doc, "swagger")
    path = tmp_path / "cookie.json"
    path.write_text(json.dumps(doc))
    run = _fastgw("export", str(path), "--format", "swagger")
    assert run.returncode == 2
    assert "cannot export API 't' as Swagger 2.0: paths./a.get.parameters: a cookie parameter" in run.stderr


def test_cli_export_of_a_swagger_import_as_oas30_imports_back(tmp_path):
    name = "awsdocs__request-validation-sample.swagger2.json"
    native = tmp_path / "native.yaml"
    assert _fastgw("import", str(OPENAPI / name), "-o", str(native)).returncode == 0
    out = tmp_path / "out.json"
    run = _fastgw("export", str(native), "--format", "oas30", "-o", str(out))
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    assert doc["openapi"].startswith("3.") and "definitions" not in doc
    assert "#/definitions/" not in out.read_text()
    run = _fastgw("validate", str(out))
    assert run.returncode == 0, run.stderr


# -- 2. payloadFormatVersion keeps the document's type ----------------------------------------------
def test_payload_format_version_keeps_its_type_through_the_cli(tmp_path):
    for name, expected in (("awsdocs__http-api-example-petstore.oas30.json", 1.0),
                           ("localstack__openapi.spec.stage-variables.json", "1.0")):
        native = tmp_path / f"{name}.yaml"
        assert _fastgw("import", str(OPENAPI / name), "-o", str(native)).returncode == 0
        out = tmp_path / f"{name}.out.json"
        run = _fastgw("export", str(native), "-o", str(out))
        assert run.returncode == 0, run.stderr
        versions = [op["x-amazon-apigateway-integration"]["payloadFormatVersion"]
                    for item in json.loads(out.read_text())["paths"].values() for op in item.values()
                    if isinstance(op, dict) and "payloadFormatVersion" in op.get("x-amazon-apigateway-integration", {})]
        assert versions and all(v == expected and type(v) is type(expected) for v in versions), (name, versions)


_ = httpx  # used below
