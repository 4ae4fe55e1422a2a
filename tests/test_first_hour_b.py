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


def _method_requests(config) -> list[tuple]:
    """What a route asks of a request, as the import of either version reads it."""
    api = config.apis[0]
    routes = sorted((f"{r.method} {r.template}", json.dumps(r.requestModels, sort_keys=True),
                     json.dumps(r.requestParameters, sort_keys=True), str(r.requestValidator), r.apiKeyRequired,
                     str(r.auth)) for r in api.routes)
    return [api.type, sorted(api.authorizers), sorted(api.aws.models or {}), *routes]


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
    # the same API: type, authorizers, models, and every route's validation, parameters, body models, auth
    assert _method_requests(again) == _method_requests(config)
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




# -- 3. stored canary state: visible, and resettable --------------------------------------------------
def _canary_config(upstream: str, flavour: str = "stable", canary: bool = True) -> str:
    from test_canary import config

    return config(upstream, percent=10.0, canary=canary).replace("flavour: stable", f"flavour: {flavour}")


def _targets(gateway, n: int = 40) -> set[str]:
    return {httpx.get(f"{gateway.url}/prod/items/7", timeout=10).json()["target"] for _ in range(n)}


def _until(check, timeout: float = 20.0, what: str = "") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_stored_state_is_named_on_reload_shown_and_reset_through_the_admin_api(start_gateway, upstream):
    gateway = start_gateway(_canary_config(upstream.address))
    admin = ("-c", str(gateway.config_path), "--admin-port", str(gateway.admin_port))
    run = _fastgw("canary", "promote", "--api", "shop", "--stage", "prod", *admin)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["running"] is True
    assert _targets(gateway) == {"/v2/canary/7"}
    # The file is edited (the stage's variables): the stored promote still wins, and the reload says so.
    gateway.config_path.write_text(_canary_config(upstream.address, flavour="edited"))
    assert httpx.post(f"{gateway.admin}/reload", timeout=30).status_code == 202
    _until(lambda: "stage shop/prod: the stored canary state" in gateway.stderr(), what="the warning")
    warning = next(line for line in gateway.stderr().splitlines() if "stage shop/prod: the stored" in line)
    assert "deployment 'v1' -> 'v2'" in warning and "variables" in warning
    assert "fastgw canary reset --api shop --stage prod" in warning
    assert _targets(gateway) == {"/v2/canary/7"}
    # `canary show` marks the stage, and says the gateway answered.
    run = _fastgw("canary", "show", *admin)
    shown = json.loads(run.stdout)
    assert shown["running"] is True
    assert shown["items"][0]["storedState"] == ["canary", "deployment", "variables"]
    # reset: through the admin API; the file's stage applies at once, in every worker.
    run = _fastgw("canary", "reset", "--api", "shop", "--stage", "prod", *admin)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["running"] is True and answer["reset"] == ["shop/prod"]
    assert answer["stage"]["deployment"] == "v1" and "storedState" not in answer["stage"]
    assert _targets(gateway) <= {"/v1/edited/7", "/v2/canary/7"}
    assert "/v1/edited/7" in _targets(gateway, 60)
    # Nothing left to reset: a clear refusal, exit 1.
    again = httpx.post(f"{gateway.admin}/canary/shop/prod/reset", timeout=30)
    assert again.status_code == 404 and "no stored canary state for shop/prod" in again.json()["message"]
    run = _fastgw("canary", "reset", "--api", "shop", "--stage", "prod", *admin)
    assert run.returncode == 1 and "no stored canary state" in run.stderr


def test_reset_while_stopped_works_on_the_stored_file(tmp_path, upstream):
    path = tmp_path / "gw.yaml"
    path.write_text(_canary_config(upstream.address))
    offline = ("-c", str(path), "--admin-port", "1")
    assert _fastgw("canary", "promote", "--api", "shop", "--stage", "prod", *offline).returncode == 0
    path.write_text(_canary_config(upstream.address, flavour="edited"))
    # validate warns on load; show (offline) marks the stage and says running: false.
    run = _fastgw("validate", str(path))
    assert run.returncode == 0 and "stage shop/prod: the stored canary state" in run.stderr
    shown = json.loads(_fastgw("canary", "show", *offline).stdout)
    assert shown["running"] is False and shown["items"][0]["storedState"] == ["canary", "deployment", "variables"]
    assert shown["items"][0]["variables"] == {"flavour": "canary"}
    run = _fastgw("canary", "reset", *offline)
    assert run.returncode == 2 and "--api and --stage, or --all" in run.stderr
    run = _fastgw("canary", "reset", "--all", *offline)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["reset"] == ["shop/prod"] and answer["running"] is False
    assert answer["items"][0]["deployment"] == "v1" and answer["items"][0]["variables"] == {"flavour": "edited"}
    run = _fastgw("validate", str(path))
    assert run.returncode == 0 and "stored canary state" not in run.stderr


# -- 4. the smaller points -----------------------------------------------------------------------------
def test_validate_reports_stages_and_canaries_apart(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(_canary_config("127.0.0.1:9"))
    run = _fastgw("validate", str(path))
    assert run.returncode == 0, run.stderr
    assert "OK (1 stage(s), 1 canary, 1 route(s)" in run.stdout
    path.write_text(_canary_config("127.0.0.1:9", canary=False))
    assert "OK (1 stage(s), 0 canaries, 1 route(s)" in _fastgw("validate", str(path)).stdout


USAGE_CONFIG = """
apis:
  - name: shop
    routes:
      - route: GET /a
        apiKeyRequired: true
        integration: {type: MOCK}
    stages: {prod: {}}
usagePlans:
  - name: basic
    apiStages: [{api: shop, stage: prod}]
    quota: {limit: 100, period: DAY}
"""


def test_usage_and_keys_exit_codes(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(USAGE_CONFIG)
    plain = tmp_path / "plain.yaml"
    plain.write_text(USAGE_CONFIG.split("usagePlans:")[0].replace("        apiKeyRequired: true\n", ""))
    c = ("-c", str(path))
    # 2: usage or config errors
    assert _fastgw("usage", "bob").returncode == 2  # no config file
    assert _fastgw("usage", "bob", "-c", str(plain)).returncode == 2  # no usage plans
    assert _fastgw("usage", "bob", "--remaining", "5", *c).returncode == 2  # --remaining without --plan
    assert _fastgw("keys", "create", *c, "--name", "bob", "--value", "short").returncode == 2  # bad value
    assert _fastgw("keys", "create", *c, "--name", "bob", "--plan", "basic").returncode == 0
    assert _fastgw("usage", "bob", *c, "--from", "yesterday").returncode == 2  # bad date
    # 1: operational failures
    assert _fastgw("usage", "nobody", *c).returncode == 1  # unknown key
    assert _fastgw("keys", "disable", "nobody", *c).returncode == 1
    assert _fastgw("keys", "create", *c, "--name", "bob").returncode == 1  # exists
    assert _fastgw("usage", "bob", *c).returncode == 0


def test_import_names_the_bindings_its_output_needs(tmp_path):
    run = _fastgw("import", str(OPENAPI / "awsdocs__simple-calc-lambda-api.swagger2.json"), "-o",
                  str(tmp_path / "calc.yaml"))
    assert run.returncode == 0, run.stderr
    assert "to serve it, bind (serve, validate, routes): --function Calc=module:function" in run.stderr
    run = _fastgw("import", str(OPENAPI / "localstack__petstore-swagger.json"), "-o", str(tmp_path / "p.yaml"))
    assert "--param uri=VALUE" in run.stderr and "--function" not in run.stderr
    run = _fastgw("import", str(OPENAPI / "awsdocs__simple-calc-lambda-api.swagger2.json"), "-o",
                  str(tmp_path / "bound.yaml"), "--function", "Calc=handlers.lambdas:calc")
    assert run.returncode == 0 and "to serve it" not in run.stderr
