"""OpenAPI 3.x / Swagger 2.0 with x-amazon-apigateway-* extensions -> one native API entry.

The result is plain data in the native config format (the `apis[i]` entry of a fastgw file), so an
imported document goes through the same validation and compiling as a hand-written config, and
`fastgw import` is this conversion written out as YAML. Everything the document says is kept:
what fastgw runs becomes native fields, the rest (documentation, models, authorizers, validators,
templates...) is kept verbatim in the entry so that `fastgw export` gives an equivalent document,
and every field fastgw does not implement is reported in `Imported.unimplemented`, which the loader
prints as one warning.

    REST or HTTP API    HTTP when the document has x-amazon-apigateway-cors, -importexport-version,
                        x-amazon-apigateway-integrations, a `/$default` path or a 2.0 payload;
                        otherwise REST (override: --api-type / `type:` next to `openapi:`)
    routes              each method of each path; x-amazon-apigateway-any-method is ANY; an HTTP
                        API's `/$default` path is the `$default` route
    integrations        http_proxy -> HTTP_PROXY, http -> HTTP, mock -> MOCK,
                        aws_proxy + Lambda -> FUNCTION, aws + Lambda -> FUNCTION_CUSTOM,
                        other AWS services -> AWS (kept, not run)
    apiKeyRequired      a security requirement naming an apiKey scheme for the x-api-key header
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..config.loader import Document, Problem
from .cfn import Resolver
from .refs import Refs, model_name

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
ANY_METHOD = "x-amazon-apigateway-any-method"
X = "x-amazon-apigateway-"
LAMBDA_PATH = re.compile(r"^arn:[^:]+:apigateway:[^:]*:lambda:path/[^/]+/functions/(.+)/invocations$")
LAMBDA_ARN = re.compile(r"^arn:[^:]+:lambda:[^:]*:[^:]*:function:.+$")
SERVICE_ARN = re.compile(r"^arn:[^:]+:apigateway:[^:]*:([^:]+):")
API_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

# Integration fields: native name for the ones the model holds; the rest are kept in awsFields.
INTEGRATION_FIELDS = ("uri", "httpMethod", "payloadFormatVersion", "requestParameters", "requestTemplates",
                      "responses", "passthroughBehavior", "contentHandling", "cacheKeyParameters",
                      "timeoutInMillis", "responseParameters")
KNOWN_INTEGRATION_KEYS = frozenset((*INTEGRATION_FIELDS, "type", "cacheNamespace", "credentials", "connectionType",
                                    "connectionId", "tlsConfig", "integrationSubtype", "responseParameters",
                                    "description"))
# Top-level fields turned into native fields (everything else goes to `document`).
API_FIELDS = {
    X + "binary-media-types": "binaryMediaTypes",
    X + "cors": "cors",
    X + "api-key-source": "apiKeySource",
    X + "minimum-compression-size": "minimumCompressionSize",
    X + "request-validators": "requestValidators",
    X + "request-validator": "requestValidator",
    X + "gateway-responses": "gatewayResponses",
}
# Top-level extensions fastgw keeps but does not act on, with what they would do.
KEPT_EXTENSIONS = {
    X + "documentation": "documentation parts (kept for export)",
    X + "policy": "resource policy (not enforced)",
    X + "endpoint-configuration": "endpoint configuration (not applicable locally)",
    X + "security-policy": "TLS security policy (use server.tlsCert/tlsKey)",
    X + "endpoint-access-mode": "endpoint access mode (not applicable locally)",
    X + "tag-value": "tags (kept for export)",
    X + "importexport-version": None,  # only says which algorithm wrote the document
}


@dataclass
class Imported:
    api: dict[str, Any]  # the native `apis[i]` entry
    problems: list[Problem] = field(default_factory=list)
    unimplemented: list[tuple[str, str]] = field(default_factory=list)  # (what, where)
    origins: list[tuple[str, str]] = field(default_factory=list)  # (native suffix, document path)
    functions: set[str] = field(default_factory=set)  # Lambda functions the routes invoke
    params_used: set[str] = field(default_factory=set)


def is_openapi(data: Any) -> bool:
    return isinstance(data, dict) and ("openapi" in data or "swagger" in data) and "apis" not in data


def api_type_of(doc: dict[str, Any]) -> str:
    if any(k in doc for k in (X + "cors", X + "importexport-version")):
        return "HTTP"
    if X + "integrations" in (doc.get("components") or {}):
        return "HTTP"
    paths = doc.get("paths") or {}
    if "/$default" in paths:
        return "HTTP"
    for item in paths.values():
        if not isinstance(item, dict):
            continue
        for op in item.values():
            if isinstance(op, dict):
                integration = op.get(X + "integration")
                if isinstance(integration, dict) and str(integration.get("payloadFormatVersion")) in ("2.0", "2"):
                    return "HTTP"
    return "REST"


def lambda_function(uri: str) -> str | None:
    """The Lambda function an integration URI invokes: its ARN (possibly with a qualifier), or None."""
    match = LAMBDA_PATH.match(uri)
    if match:
        return match.group(1)
    if LAMBDA_ARN.match(uri):
        return uri
    return None


def api_name(title: Any) -> str:
    name = API_NAME_CHARS.sub("-", str(title or "api")).strip("-.")[:128]
    return name or "api"


class Reader:
    def __init__(self, document: Document, params: dict[str, str], api_type: str | None = None):
        self.document = document
        self.source = document.source
        self.resolver = Resolver(params)
        self.doc: dict[str, Any] = self.resolver.resolve(document.data)
        self.refs = Refs(self.doc, document.source)
        self.forced_type = api_type
        self.result = Imported(api={})

    # -- reporting ----------------------------------------------------------------------------------
    def problem(self, where: str, message: str) -> None:
        self.result.problems.append(Problem(where, message))

    def note(self, what: str, where: str) -> None:
        self.result.unimplemented.append((what, where))

    # -- the document -------------------------------------------------------------------------------
    def read(self) -> Imported:
        doc = self.doc
        result = self.result
        version = str(doc.get("openapi") or doc.get("swagger") or "")
        if "swagger" in doc and version != "2.0":
            self.problem("swagger", f"unsupported Swagger version '{version}' (2.0 is read)")
        if "openapi" in doc and not re.match(r"^3\.[01](\.\d+)?$", version):
            self.problem("openapi", f"unsupported OpenAPI version '{version}' (3.0.x and 3.1.x are read)")
        self.swagger = "swagger" in doc
        api_type = self.forced_type or api_type_of(doc)
        self.api_type = api_type
        self.refs.check_all(doc)
        api: dict[str, Any] = {"name": api_name((doc.get("info") or {}).get("title")), "type": api_type}
        info = doc.get("info") or {}
        if info.get("description"):
            api["description"] = str(info["description"])

        components = doc.get("components") if isinstance(doc.get("components"), dict) else {}
        schemes = (doc.get("securityDefinitions") if self.swagger else components.get("securitySchemes")) or {}
        self.schemes = {}
        at = "securityDefinitions" if self.swagger else "components.securitySchemes"
        for name, scheme in schemes.items():
            scheme = self.refs.deref(scheme, f"security scheme {name}") or {}
            if not isinstance(scheme, dict):
                self.problem(f"{at}.{name}", "must be a security scheme object")
                continue
            self.schemes[name] = scheme
        self.global_security = doc.get("security")

        routes: list[dict[str, Any]] = []
        no_integration: dict[str, dict[str, Any]] = {}
        paths = doc.get("paths")
        if not isinstance(paths, dict) or not paths:
            self.problem("paths", "the document defines no paths")
            paths = {}
        for template, item in paths.items():
            where = f"paths.{template}"
            item = self.refs.deref(item, where)
            if not isinstance(item, dict):
                continue
            if not str(template).startswith("/"):
                self.problem(where, "a path starts with '/'")
                continue
            for key, op in item.items():
                if key in ("parameters", "summary", "description", "servers") or (
                        key.startswith("x-") and key != ANY_METHOD):
                    continue
                method = "ANY" if key == ANY_METHOD else key.upper()
                op_where = f"{where}.{key}"
                if key != ANY_METHOD and key not in METHODS:
                    self.problem(op_where, f"unknown method '{key}'")
                    continue
                op = self.refs.deref(op, op_where)
                if not isinstance(op, dict):
                    continue
                route = self.route(template, method, op, item, op_where, len(routes))
                if route is None:
                    no_integration.setdefault(template, {})[key] = op
                    self.note("an operation without x-amazon-apigateway-integration (not served; AWS answers "
                              "500)", op_where)
                    continue
                routes.append(route)
            for key in item:
                if key.startswith("x-") and key != ANY_METHOD:
                    self.note(f"path item extension {key} (kept)", f"{where}.{key}")
        api["routes"] = routes

        for ext, native in API_FIELDS.items():
            if ext == X + "cors" and api_type != "HTTP":
                continue  # AWS ignores it on REST APIs: kept in `document`, exported back, not applied
            if ext in doc:
                api[native] = self.api_field(ext, doc[ext])
                result.origins.append((native, ext))
        if ("requestValidators" in api or "requestValidator" in api) and api_type != "REST":
            self.note("request validation on an HTTP API (AWS validates requests of REST APIs only; kept, not "
                      "applied)", X + "request-validators")
        if X + "cors" in doc and api_type != "HTTP":
            self.note("x-amazon-apigateway-cors applies to HTTP APIs only (AWS ignores it on REST APIs; REST "
                      "APIs answer CORS with their OPTIONS methods)", X + "cors")
        if self.schemes:
            # Every scheme is kept (export writes them back); the authorizers among them are enforced on
            # the routes that require them (config/model/auth.py; a scheme fastgw cannot enforce makes
            # such a route a config error, never an open one).
            api["authorizers"] = {name: self.authorizer_scheme(scheme, name) for name, scheme in schemes.items()}
            result.origins.append(("authorizers", "securityDefinitions" if self.swagger
                                   else "components.securitySchemes"))

        models = doc.get("definitions") if self.swagger else components.get("schemas")
        if models:
            api["models"] = models
            result.origins.append(("models", "definitions" if self.swagger else "components.schemas"))

        document: dict[str, Any] = {}
        for key, value in doc.items():
            if key in ("paths", "definitions", "securityDefinitions") or (
                    key in API_FIELDS and not (key == X + "cors" and api_type != "HTTP")):
                continue
            if key == "components":
                # Kept even when empty: export writes `components` back as the document had it.
                document["components"] = {k: v for k, v in value.items() if k not in ("schemas", "securitySchemes")}
                continue
            document[key] = value
            if key in KEPT_EXTENSIONS and KEPT_EXTENSIONS[key]:
                self.note(f"{key}: {KEPT_EXTENSIONS[key]}", key)
            elif key.startswith(X) and key not in KEPT_EXTENSIONS:
                self.note(f"unknown extension {key} (kept)", key)
            elif key in ("host", "basePath", "servers") and value:
                self.note(f"{key} (ignored, as AWS's import does by default; stages give the path prefix)", key)
        if no_integration:
            document["x-fastgw-unrouted-paths"] = no_integration
        api["document"] = document
        result.api = api
        result.problems.extend(self.resolver.problems)
        result.problems.extend(self.refs.problems)
        result.params_used = self.resolver.used
        return result

    def api_field(self, ext: str, value: Any) -> Any:
        if ext == X + "gateway-responses" and isinstance(value, dict):
            out = {}
            for kind, spec in value.items():
                spec = self.refs.deref(spec, f"{ext}.{kind}")
                if not isinstance(spec, dict):
                    out[kind] = spec
                    continue
                entry: dict[str, Any] = {}
                if "statusCode" in spec:
                    entry["statusCode"] = int(spec["statusCode"]) if str(spec["statusCode"]).isdigit() else \
                        spec["statusCode"]
                for key in ("responseParameters", "responseTemplates"):
                    if key in spec:
                        entry[key] = spec[key]
                for name, source in (spec.get("responseParameters") or {}).items():
                    text = str(source)
                    if not (len(text) >= 2 and text[0] == text[-1] == "'"):
                        self.note("gateway response header from a request value (only static 'values' are "
                                  "applied)", f"{ext}.{kind}.responseParameters.{name}")
                for mime, template in (spec.get("responseTemplates") or {}).items():
                    if mime != "application/json":
                        self.note("gateway response template for a type other than application/json (kept)",
                                  f"{ext}.{kind}.responseTemplates.{mime}")
                    elif "#" in str(template) or re.search(r"\$(?!context\.error\.message)", str(template)):
                        self.note("gateway response template with VTL beyond $context.error.message(String) "
                                  "(sent as written)", f"{ext}.{kind}.responseTemplates.{mime}")
                out[kind] = entry
            return out
        if ext == X + "minimum-compression-size":
            return value
        return value

    # -- routes -------------------------------------------------------------------------------------
    def route(self, template: str, method: str, op: dict[str, Any], item: dict[str, Any], where: str,
              index: int) -> dict[str, Any] | None:
        raw = op.get(X + "integration")
        if raw is None:
            return None
        integ_where = f"{where}.{X}integration"
        raw = self.refs.deref(raw, integ_where)
        if not isinstance(raw, dict):
            self.problem(integ_where, "must be a mapping")
            return None
        if template == "/$default" and self.api_type == "HTTP":
            key = "$default"
        else:
            key = f"{method} {template}"
        route: dict[str, Any] = {"route": key}
        operation = {k: v for k, v in op.items() if k != X + "integration"}
        integration_ref = op.get(X + "integration")
        if isinstance(integration_ref, dict) and "$ref" in integration_ref:
            operation["x-fastgw-integration-ref"] = integration_ref["$ref"]
        if item.get("parameters"):
            operation["x-fastgw-path-parameters"] = item["parameters"]
        route["operation"] = operation
        if self.api_key_required(op):
            route["apiKeyRequired"] = True
        self.route_auth(route, op, where, index)
        if self.api_type == "REST":
            self.method_request(route, op, item, where, index)
        route["integration"] = self.integration(raw, integ_where)
        self.result.origins.append((f"routes[{index}].integration", integ_where))
        self.result.origins.append((f"routes[{index}]", where))
        return route

    def method_request(self, route: dict[str, Any], op: dict[str, Any], item: dict[str, Any], where: str,
                       index: int) -> None:
        """AWS's method request of an operation, for request validation (fastgw/policies/validation.py): the
        validator, the parameters (`required`; path parameters always) and the body models by media type
        (a `$ref` to a model is the model's name, as AWS's import makes it). Read only when a validator
        applies (the operation's own or the document's default)."""
        origins = self.result.origins
        validator = op.get(X + "request-validator")
        if validator is not None:
            route["requestValidator"] = validator
            origins.append((f"routes[{index}].requestValidator", f"{where}.{X}request-validator"))
        elif X + "request-validator" not in self.doc:
            return
        parameters: dict[str, bool] = {}
        body: tuple[Any, str] | None = None
        kinds = {"query": "querystring", "header": "header", "path": "path"}
        for owner, at in ((item, where.rsplit(".", 1)[0]), (op, where)):
            listed = owner.get("parameters")
            if not isinstance(listed, list):
                continue
            for i, parameter in enumerate(listed):
                parameter = self.refs.deref(parameter, f"{at}.parameters[{i}]")
                if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
                    continue
                if not isinstance(parameter.get("in"), str):
                    self.problem(f"{at}.parameters[{i}].in", "must be a location (query, header, path, cookie, body, "
                                 "formData)")
                    continue
                if parameter.get("in") == "body":
                    body = (parameter.get("schema"), f"{at}.parameters[{i}].schema")
                kind = kinds.get(parameter.get("in"))
                if kind is not None:
                    key = f"method.request.{kind}.{parameter['name']}"
                    parameters[key] = kind == "path" or parameter.get("required") is True
                    origins.append((f"routes[{index}].requestParameters.{key}", f"{at}.parameters[{i}]"))
        if parameters:
            route["requestParameters"] = parameters
        content: dict[str, tuple[Any, str]] = {}
        if self.swagger and body is not None:
            consumes = op.get("consumes") or self.doc.get("consumes") or ["application/json"]
            for media in consumes if isinstance(consumes, list) else [consumes]:
                content[str(media)] = body
        request_body = self.refs.deref(op.get("requestBody"), f"{where}.requestBody")
        if not self.swagger and isinstance(request_body, dict) and isinstance(request_body.get("content"), dict):
            for media, spec in request_body["content"].items():
                if isinstance(spec, dict) and "schema" in spec:
                    content[str(media)] = (spec["schema"], f"{where}.requestBody.content.{media}.schema")
        models: dict[str, Any] = {}
        for media, (schema, at) in content.items():
            if not isinstance(schema, dict):
                continue
            ref = schema.get("$ref") if len(schema) == 1 else None
            name = model_name(ref) if isinstance(ref, str) else None
            models[media] = name if name is not None else schema
            origins.append((f"routes[{index}].requestModels.{media}", at))
        if models:
            route["requestModels"] = models

    def security_of(self, op: dict[str, Any]) -> list[dict[str, Any]]:
        security = op.get("security", self.global_security)
        return security if isinstance(security, list) else []

    def api_key_required(self, op: dict[str, Any]) -> bool:
        for requirement in self.security_of(op):
            if isinstance(requirement, dict):
                for name in requirement:
                    if _is_api_key_scheme(self.schemes.get(name) or {}):
                        return True
        return False

    def authorizer_scheme(self, scheme: Any, name: str) -> Any:
        """A security scheme as kept, with `${name}` placeholders in its Lambda function and user pools
        filled from the parameters (as integration URIs are)."""
        inner = scheme.get(X + "authorizer") if isinstance(scheme, dict) else None
        if not isinstance(inner, dict):
            return scheme
        where = f"{'securityDefinitions' if self.swagger else 'components.securitySchemes'}.{name}.{X}authorizer"
        inner = dict(inner)
        if isinstance(inner.get("authorizerUri"), str):
            inner["authorizerUri"] = self.resolver.placeholders(inner["authorizerUri"], f"{where}.authorizerUri",
                                                                required=False)
        if isinstance(inner.get("providerARNs"), list):
            inner["providerARNs"] = [self.resolver.placeholders(arn, f"{where}.providerARNs", required=False)
                                     if isinstance(arn, str) else arn for arn in inner["providerARNs"]]
        return {**scheme, X + "authorizer": inner}

    def route_auth(self, route: dict[str, Any], op: dict[str, Any], where: str, index: int) -> None:
        """The method's authorization: `x-amazon-apigateway-auth` (AWS_IAM), or the one authorizer its
        `security` requires (with its scopes). AWS runs one authorizer per method: more is an error."""
        auth = op.get(X + "auth")
        if isinstance(auth, dict) and str(auth.get("type", "")).upper() in ("AWS_IAM", "NONE"):
            route["authorizationType"] = str(auth["type"]).upper()
            self.result.origins.append((f"routes[{index}].authorizationType", f"{where}.{X}auth"))
        elif auth is not None:
            self.problem(f"{where}.{X}auth", "must be {type: AWS_IAM} or {type: NONE}")
        names = self.authorizers_of(op)
        if not names or route.get("authorizationType") == "NONE":
            return
        if len(names) > 1:
            self.problem(f"{where}.security", f"requires several authorizers ({', '.join(names)}); AWS runs one "
                         "per method")
            return
        name = names[0]
        route["authorizer"] = name
        self.result.origins.append((f"routes[{index}].authorizer", f"{where}.security"))
        for requirement in self.security_of(op):
            if isinstance(requirement, dict) and requirement.get(name):
                scopes = requirement[name]
                if not isinstance(scopes, list):
                    self.problem(f"{where}.security", f"the scopes of '{name}' must be a list")
                    continue
                route["authorizationScopes"] = [str(s) for s in scopes]
                self.result.origins.append((f"routes[{index}].authorizationScopes", f"{where}.security"))

    def authorizers_of(self, op: dict[str, Any]) -> list[str]:
        names = []
        for requirement in self.security_of(op):
            if isinstance(requirement, dict):
                for name in requirement:
                    scheme = self.schemes.get(name)
                    if scheme is not None and not _is_api_key_scheme(scheme) and name not in names:
                        names.append(name)
        return names

    def integration(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        kind = str(raw.get("type", "")).lower()
        uri = raw.get("uri")
        if isinstance(uri, str):
            uri = self.resolver.placeholders(uri, f"{where}.uri", required=False)
        native: dict[str, Any] = {}
        function = lambda_function(uri) if isinstance(uri, str) else None
        if kind == "http_proxy":
            native["type"] = "HTTP_PROXY"
        elif kind == "http":
            native["type"] = "HTTP"
        elif kind == "mock":
            native["type"] = "MOCK"
        elif kind == "aws_proxy" and function is not None:
            native["type"] = "FUNCTION"
            self.result.functions.add(function)
        elif kind == "aws" and function is not None:
            native["type"] = "FUNCTION_CUSTOM"
            self.result.functions.add(function)
        elif kind in ("aws", "aws_proxy"):
            native["type"] = "AWS"
        else:
            self.problem(f"{where}.type", f"unknown integration type '{raw.get('type')}' (http, http_proxy, "
                         "aws, aws_proxy or mock)")
            native["type"] = str(raw.get("type", "")).upper() or "MOCK"
        kept: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "type":
                if str(value) != kind:  # the spelling, for export (HTTP_PROXY vs http_proxy)
                    kept["type"] = value
                continue
            if key == "uri":
                native["uri"] = uri
            elif key in INTEGRATION_FIELDS:
                native[key] = str(value).upper() if key == "passthroughBehavior" else value
            else:
                kept[key] = value
                if key not in KNOWN_INTEGRATION_KEYS:
                    self.note(f"unknown integration field '{key}' (kept)", f"{where}.{key}")
        if kept:
            native["awsFields"] = kept
        if isinstance(native.get("responses"), dict):
            native["responses"] = {str(k): v for k, v in native["responses"].items()}
        self.integration_notes(native, where)
        return native

    def integration_notes(self, native: dict[str, Any], where: str) -> None:
        kind = native["type"]
        kept = native.get("awsFields", {})
        if kind == "AWS":
            self.note("AWS service integration (not run locally; answers 501)", where)
        if kind in ("HTTP", "HTTP_PROXY", "FUNCTION"):
            for name in native.get("requestParameters") or {}:
                if kind == "FUNCTION" and not name.startswith("integration.request.path."):
                    self.note("request parameter mapping on a Lambda proxy integration (not in the event, as by "
                              "AWS; the event has the headers, requestContext.authorizer and stageVariables)",
                              f"{where}.requestParameters.{name}")
                elif self.api_type == "HTTP" and kind != "HTTP_PROXY":
                    self.note("HTTP API parameter mapping on a non-HTTP_PROXY integration (ignored)",
                              f"{where}.requestParameters.{name}")
            if kind == "HTTP_PROXY" and native.get("responses"):
                pass  # AWS ignores integration responses of proxy integrations; so does fastgw
            if "cacheNamespace" in kept:
                self.note("cacheNamespace (kept; the stage cache keys by route)", f"{where}.cacheNamespace")
            if kind == "FUNCTION" and native.get("contentHandling"):
                self.note("contentHandling on a Lambda proxy integration (ignored)", f"{where}.contentHandling")
        if kept.get("credentials") and kind in ("HTTP", "HTTP_PROXY", "FUNCTION"):
            self.note("integration credentials (IAM roles are not used locally)", f"{where}.credentials")
        if str(kept.get("connectionType", "INTERNET")).upper() == "VPC_LINK":
            self.note("VPC link (connectionType VPC_LINK): the URI is called directly", f"{where}.connectionType")
        if "tlsConfig" in kept:
            self.note("tlsConfig (kept; backend TLS settings are not applied)", f"{where}.tlsConfig")
        if native.get("responseParameters") and (self.api_type != "HTTP" or kind != "HTTP_PROXY"):
            self.note("integration-level responseParameters (applied only to HTTP API HTTP_PROXY integrations)",
                      f"{where}.responseParameters")
        if "integrationSubtype" in kept:
            self.note("AWS service integration subtype (not run locally)", f"{where}.integrationSubtype")


def _is_api_key_scheme(scheme: dict[str, Any]) -> bool:
    """AWS reads an apiKey scheme for the x-api-key header (and no authorizer) as 'API key required'."""
    return (scheme.get("type") == "apiKey" and str(scheme.get("name", "")).lower() == "x-api-key"
            and scheme.get("in") == "header" and X + "authorizer" not in scheme)


METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace", X + "any-method")


def shape_problems(doc: Any) -> list[Problem]:
    """The containers the reader walks must have their OpenAPI types: a located problem for each that
    does not, instead of a traceback (found by tests/test_fuzz.py on mutated AWS documents)."""
    problems: list[Problem] = []

    def expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> bool:
        if isinstance(value, kind):
            return True
        problems.append(Problem(where, f"must be {what}"))
        return False

    if not expect(doc, dict, "", "a mapping (an OpenAPI document)"):
        return problems
    for key in ("info", "components", "paths", "definitions", "securityDefinitions"):
        if key in doc:
            expect(doc[key], dict, key, "a mapping")
    if "security" in doc:
        expect(doc["security"], list, "security", "a list")
    for group in ("components", "definitions", "securityDefinitions"):
        if isinstance(doc.get(group), dict):
            for name, value in doc[group].items():
                expect(value, (dict, bool) if group != "components" else dict, f"{group}.{name}", "a mapping")
    components = doc.get("components")
    if isinstance(components, dict):
        for group in ("schemas", "securitySchemes"):
            if isinstance(components.get(group), dict):
                for name, value in components[group].items():
                    expect(value, (dict, bool), f"components.{group}.{name}", "a mapping")
    responses = doc.get(X + "gateway-responses")
    if responses is not None and expect(responses, dict, X + "gateway-responses", "a mapping"):
        for kind, spec in responses.items():
            at = f"{X}gateway-responses.{kind}"
            if expect(spec, dict, at, "a mapping"):
                for key in ("responseParameters", "responseTemplates"):
                    if key in spec and spec[key] is not None:
                        expect(spec[key], dict, f"{at}.{key}", "a mapping")
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        return problems
    for path, item in paths.items():
        where = f"paths.{path}"
        if not expect(item, dict, where, "a mapping (a path item)"):
            continue
        if "parameters" in item:
            expect(item["parameters"], list, f"{where}.parameters", "a list")
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            at = f"{where}.{method}"
            if not expect(operation, dict, at, "a mapping (an operation)"):
                continue
            for key, kind, what in (("parameters", list, "a list"), ("responses", dict, "a mapping"),
                                    ("security", list, "a list"), ("tags", list, "a list"),
                                    (X + "integration", dict, "a mapping"), ("requestBody", dict, "a mapping")):
                if key in operation:
                    expect(operation[key], kind, f"{at}.{key}", what)
            for key in ("parameters", "security"):
                if isinstance(operation.get(key), list):
                    for i, entry in enumerate(operation[key]):
                        expect(entry, dict, f"{at}.{key}[{i}]", "a mapping")
            if isinstance(operation.get("responses"), dict):
                for status, response in operation["responses"].items():
                    expect(response, dict, f"{at}.responses.{status}", "a mapping")
            integration = operation.get(X + "integration")
            if isinstance(integration, dict):
                for key in ("requestTemplates", "requestParameters", "responses"):
                    if key in integration:
                        expect(integration[key], dict, f"{at}.{X}integration.{key}", "a mapping")
                if isinstance(integration.get("responses"), dict):
                    for pattern, response in integration["responses"].items():
                        where_r = f"{at}.{X}integration.responses.{pattern}"
                        if expect(response, dict, where_r, "a mapping"):
                            for key in ("responseParameters", "responseTemplates"):
                                if key in response and response[key] is not None:
                                    expect(response[key], dict, f"{where_r}.{key}", "a mapping")
    return problems


def read_openapi(document: Document, params: dict[str, str], api_type: str | None = None) -> Imported:
    problems = shape_problems(document.data)
    if problems:
        return Imported(api={}, problems=problems)
    return Reader(document, params, api_type).read()
