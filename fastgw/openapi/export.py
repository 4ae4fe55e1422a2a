"""The model -> OpenAPI 3.0 / Swagger 2.0 with x-amazon-apigateway-* extensions (`fastgw export`).

An API imported from a document is written back in that document's version with everything it
kept (documentation, models, authorizers, validators, templates), so export(import(doc)) is
equivalent to doc. An API written natively gets a minimal document of the chosen version, with its
method requests written as AWS's GetExport writes them (`extensions=integrations`): the validators
(x-amazon-apigateway-request-validator(s); fastgw's built-in names a route uses are defined in the
map), `requestParameters` as operation parameters, `requestModels` as the request body (OAS 3.0) or
the `in: body` parameter and `consumes` (Swagger 2.0), models as components.schemas / definitions.
Importing that document gives routes that validate the same way. An imported document asked for in
the other version is converted (fastgw/openapi/convert.py), or refused with a ConversionError.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ..config.model import (
    BUILTIN_VALIDATORS,
    CURRENT_DEPLOYMENT,
    Api,
    AuthorizerConfig,
    GatewayConfig,
    Integration,
    Route,
)
from ..config.model import METHOD_REQUEST_PARAMETER as PARAMETER
from .convert import convert
from .reader import ANY_METHOD, X, lambda_function

TYPES_OUT = {"HTTP_PROXY": "http_proxy", "HTTP": "http", "MOCK": "mock", "FUNCTION": "aws_proxy",
             "FUNCTION_CUSTOM": "aws", "AWS": "aws"}
TYPES_IN = {"http_proxy": "HTTP_PROXY", "http": "HTTP", "mock": "MOCK", "aws_proxy": ("FUNCTION", "AWS"),
            "aws": ("FUNCTION_CUSTOM", "AWS")}
API_KEY_SCHEME = {"type": "apiKey", "name": "x-api-key", "in": "header"}


def _lambda_uri(uri: str, params: dict[str, str]) -> str:
    if lambda_function(uri) is not None:
        if uri.startswith("arn:") and ":apigateway:" not in uri.split(":function:")[0]:
            region = uri.split(":")[3]
            return f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{uri}/invocations"
        return uri
    region = params.get("AWS::Region", "us-east-1")
    account = params.get("AWS::AccountId", "123456789012")
    arn = f"arn:aws:lambda:{region}:{account}:function:{uri}"
    return f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations"


def export_integration(integration: Integration, http_api: bool, params: dict[str, str]) -> dict[str, Any]:
    kept = dict(integration.aws)
    spelled = kept.pop("type", None)
    kind = TYPES_OUT[integration.type].upper() if http_api else TYPES_OUT[integration.type]
    if spelled is not None:  # the document's own spelling (HTTP_PROXY vs http_proxy)
        mapped = TYPES_IN.get(str(spelled).lower())
        if mapped == integration.type or (isinstance(mapped, tuple) and integration.type in mapped):
            kind = spelled
    out: dict[str, Any] = {"type": kind}
    uri = integration.uri
    if uri:
        if integration.type in ("FUNCTION", "FUNCTION_CUSTOM") and not http_api:
            uri = _lambda_uri(uri, params)
        out["uri"] = uri
    if integration.httpMethod:
        out["httpMethod"] = integration.httpMethod
    elif integration.type in ("FUNCTION", "FUNCTION_CUSTOM"):
        out["httpMethod"] = "POST"
    if integration.payloadFormatVersion:
        # The document's own type: `payloadFormatVersion: 1.0` stays a number, "1.0" a string.
        spelled = integration.payloadFormatVersionSpelled
        number = isinstance(spelled, int | float) and not isinstance(spelled, bool)
        same = number and f"{float(spelled):.1f}" == integration.payloadFormatVersion
        out["payloadFormatVersion"] = spelled if same else integration.payloadFormatVersion
    if integration.requestParameters:
        out["requestParameters"] = dict(integration.requestParameters)
    if integration.requestTemplates:
        out["requestTemplates"] = dict(integration.requestTemplates)
    if integration.responses:
        out["responses"] = copy.deepcopy(integration.responses)
    if integration.responseParameters:
        out["responseParameters"] = copy.deepcopy(integration.responseParameters)
    if integration.passthroughBehavior:
        out["passthroughBehavior"] = integration.passthroughBehavior.lower()
    if integration.contentHandling:
        out["contentHandling"] = integration.contentHandling
    if integration.cacheKeyParameters:
        out["cacheKeyParameters"] = list(integration.cacheKeyParameters)
    if integration.timeoutInMillis != 29_000:
        out["timeoutInMillis"] = integration.timeoutInMillis
    out.update(kept)
    return out


TEMPLATE_PARAMETER = re.compile(r"\{([^{}+]+)\+?\}")
PARAMETER_IN = {"querystring": "query", "header": "header", "path": "path"}
MODEL_REF = {False: "#/components/schemas/", True: "#/definitions/"}  # by `swagger`


def _parameter(name: str, where: str, required: bool, swagger: bool) -> dict[str, Any]:
    """An operation parameter as AWS exports it: Swagger 2.0 always says `required`, OAS 3.0 only when true."""
    if swagger:
        return {"name": name, "in": where, "required": required, "type": "string"}
    out: dict[str, Any] = {"name": name, "in": where}
    if required:
        out["required"] = True
    out["schema"] = {"type": "string"}
    return out


def _path_parameters(template: str, swagger: bool) -> list[dict[str, Any]]:
    return [_parameter(name, "path", True, swagger) for name in TEMPLATE_PARAMETER.findall(template)]


def _request_parameters(route: Route, swagger: bool) -> list[dict[str, Any]]:
    """A route's `requestParameters` (method.request.querystring|header|path.NAME: required) as operation
    parameters, after the path's own (already written, always required). A path parameter the path does
    not define is written only when required (an imported `in: path` parameter is always required)."""
    in_path = set(TEMPLATE_PARAMETER.findall(route.template or ""))
    out = []
    for key, required in route.requestParameters.items():
        match = PARAMETER.match(key)
        if match is None:
            continue
        kind, name = match.groups()
        if kind == "path" and (name in in_path or not required):
            continue
        out.append(_parameter(name, PARAMETER_IN[kind], bool(required), swagger))
    return out


def _model_refs(schema: Any, swagger: bool, models: dict[str, Any]) -> Any:
    """A native schema with its references to the API's models in the output version's form
    (#/definitions/NAME or #/components/schemas/NAME, both read back); a schema's own definitions and
    other references are left as written."""
    local = schema.get("definitions") if isinstance(schema, dict) else None
    local = local if isinstance(local, dict) else {}
    own, other = MODEL_REF[swagger], MODEL_REF[not swagger]

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(other):
            name = ref[len(other):]
            if name in models and name.split("/", 1)[0] not in local:
                out["$ref"] = own + name
        return out

    return walk(schema)


def _request_body(route: Route, swagger: bool, models: dict[str, Any]) -> tuple[Any, list[str]]:
    """A route's `requestModels` as the OAS 3.0 requestBody, or (Swagger 2.0) the `in: body` parameter and
    its `consumes`. A model name is a $ref to the model, an inline schema is written in place. Swagger 2.0
    has one body schema per operation: the application/json one's (else the first), with every media
    type that has the same model."""
    def schema_of(spec: Any) -> Any:
        if isinstance(spec, str):
            return {"$ref": MODEL_REF[swagger] + spec}
        return _model_refs(copy.deepcopy(spec), swagger, models)

    if not swagger:
        content = {media: {"schema": schema_of(spec)} for media, spec in route.requestModels.items()}
        return {"content": content, "required": True}, []
    specs = route.requestModels
    chosen = specs.get("application/json", next(iter(specs.values())))
    consumes = [media for media, spec in specs.items() if spec == chosen]
    name = chosen if isinstance(chosen, str) else "body"
    return {"in": "body", "name": name, "required": True, "schema": schema_of(chosen)}, consumes


def _method_request(route: Route, swagger: bool, models: dict[str, Any], operation: dict[str, Any]) -> None:
    """A native REST route's validator, parameters and body models, written into its new operation."""
    parameters = operation.get("parameters") or []
    parameters += _request_parameters(route, swagger)
    if route.requestModels:
        body, consumes = _request_body(route, swagger, models)
        if swagger:
            operation["consumes"] = consumes
            parameters.append(body)
        else:
            operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    if route.requestValidator is not None:
        operation[X + "request-validator"] = route.requestValidator


def _security_has_api_key(security: Any, schemes: dict[str, Any]) -> bool:
    from .reader import _is_api_key_scheme

    return isinstance(security, list) and any(
        isinstance(req, dict) and any(_is_api_key_scheme(schemes.get(n) or {}) for n in req) for req in security)


def export_route(route: Route, http_api: bool, swagger: bool, params: dict[str, str], schemes: dict[str, Any],
                 global_security: Any, components: dict[str, Any],
                 models: dict[str, Any] | None = None) -> tuple[str, str, dict[str, Any], list[Any]]:
    """(path, method key, operation, path-level parameters). `models`: the API's, for a native route's
    request models."""
    if route.method == "$default":
        path, method = "/$default", ANY_METHOD
    else:
        path = route.template
        method = ANY_METHOD if route.method == "ANY" else route.method.lower()
    operation = copy.deepcopy(route.operation) if route.operation is not None else None
    path_parameters: list[Any] = []
    if operation is None:
        operation = {}
        found = _path_parameters(route.template, swagger)
        if found:
            operation["parameters"] = found
        if not http_api:
            _method_request(route, swagger, models or {}, operation)
        operation["responses"] = {"200": {"description": "200 response"}}
    else:
        path_parameters = operation.pop("x-fastgw-path-parameters", []) or []
    ref = operation.pop("x-fastgw-integration-ref", None)
    if route.integration is not None:
        integration = export_integration(route.integration, http_api, params)
        if ref is not None and ref.startswith("#/components/" + X + "integrations/"):
            name = ref.rsplit("/", 1)[1]
            if (components.get(X + "integrations") or {}).get(name) == integration:
                integration = {"$ref": ref}
        operation[X + "integration"] = integration
    security = operation.get("security", global_security)
    has_key = _security_has_api_key(security, schemes)
    if route.apiKeyRequired and not has_key:
        name = next((n for n, s in schemes.items() if s == API_KEY_SCHEME), "api_key")
        schemes.setdefault(name, dict(API_KEY_SCHEME))
        operation["security"] = [*(security or []), {name: []}]
    elif not route.apiKeyRequired and has_key:
        from .reader import _is_api_key_scheme

        kept = [{n: v for n, v in req.items() if not _is_api_key_scheme(schemes.get(n) or {})} for req in security]
        operation["security"] = [req for req in kept if req]
    auth = route.auth
    if route.operation is None and auth is not None:  # an imported operation kept its own
        if auth.authorizationType == "AWS_IAM":
            operation[X + "auth"] = {"type": "AWS_IAM"}
        elif auth.authorizer is not None:
            operation["security"] = [*(operation.get("security") or []),
                                     {auth.authorizer: list(auth.authorizationScopes)}]
    return path, method, operation, path_parameters


AUTHORIZER_FIELDS = ("type", "identitySource", "jwtConfiguration", "providerARNs", "authorizerUri",
                     "authorizerCredentials", "authorizerResultTtlInSeconds", "identityValidationExpression",
                     "authorizerPayloadFormatVersion", "enableSimpleResponses")


def export_scheme(raw: Any, config: AuthorizerConfig | None) -> Any:
    """An API's authorizer as an OpenAPI security scheme: an imported scheme as it was; a native
    (flat) authorizer as AWS writes one (x-amazon-apigateway-authorizer / -authtype)."""
    if not isinstance(raw, dict) or config is None or any(k.startswith(X) for k in raw) or \
            raw.get("type") in ("apiKey", "oauth2", "openIdConnect", "http"):
        return raw
    if config.type == "AWS_IAM":
        return {"type": "apiKey", "name": "Authorization", "in": "header", X + "authtype": "awsSigv4"}
    inner = {k: v for k, v in raw.items() if k in AUTHORIZER_FIELDS}
    inner["type"] = config.type.lower()
    if config.type == "JWT":
        inner["jwtConfiguration"] = {"issuer": config.issuer, "audience": list(config.audience)}
        if config.identitySource:
            inner["identitySource"] = ", ".join(config.identitySource)
        return {"type": "oauth2", "flows": {}, X + "authorizer": inner}
    header = next((s.rsplit(".", 1)[1] for s in config.identitySource if ".header." in s), "Authorization")
    authtype = "cognito_user_pools" if config.type == "COGNITO_USER_POOLS" else "custom"
    return {"type": "apiKey", "name": header, "in": "header", X + "authtype": authtype, X + "authorizer": inner}


def export_api(api: Api, config: GatewayConfig | None = None, deployment: str | None = None,
               version: str | None = None) -> dict[str, Any]:
    """One API as an OpenAPI document. `version`: "oas30" or "swagger" (default: the version it was
    imported from, else oas30). `deployment`: which deployment's routes (default the API's own)."""
    params = config.parameters if config is not None else {}
    document = copy.deepcopy(api.aws.document)
    original_swagger = "swagger" in document
    imported = "swagger" in document or "openapi" in document
    if imported and version and (version == "swagger") != original_swagger:
        # Written in its own version, then converted (ConversionError: what the other cannot say).
        return convert(export_api(api, config, deployment), version)
    swagger = (version == "swagger") if version else original_swagger
    http_api = api.type == "HTTP"
    out: dict[str, Any] = {}
    if swagger:
        out["swagger"] = "2.0"
    else:
        out["openapi"] = document.get("openapi", "3.0.1") if not original_swagger else "3.0.1"
    document.pop("swagger", None)
    document.pop("openapi", None)
    info = document.pop("info", None) or {"title": api.name, "version": "1.0"}
    out["info"] = info
    unrouted = document.pop("x-fastgw-unrouted-paths", {}) or {}
    had_components = "components" in document
    components = document.pop("components", {}) or {}
    schemes = {name: export_scheme(raw, api.authorizers.get(name))
               for name, raw in copy.deepcopy(api.aws.authorizers).items()}
    global_security = document.get("security")

    routes = api.routes
    if deployment not in (None, CURRENT_DEPLOYMENT):
        routes = api.deployments[deployment].routes
    native = not ("swagger" in api.aws.document or "openapi" in api.aws.document)
    models = api.aws.models if isinstance(api.aws.models, dict) else {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path, method, operation, path_parameters = export_route(route, http_api, swagger, params, schemes,
                                                                global_security, components, models)
        item = paths.setdefault(path, {})
        if path_parameters and "parameters" not in item:
            item["parameters"] = path_parameters
        item[method] = operation
    for path, operations in unrouted.items():
        paths.setdefault(path, {}).update(operations)
    for key in list(document):
        if key in ("host", "basePath", "schemes", "consumes", "produces", "servers", "tags", "externalDocs"):
            out[key] = document.pop(key)
    out["paths"] = paths

    if api.aws.binaryMediaTypes:
        out[X + "binary-media-types"] = list(api.aws.binaryMediaTypes)
    if api.aws.cors is not None:
        cors = api.aws.cors
        spec: dict[str, Any] = {}
        for key in ("allowOrigins", "allowMethods", "allowHeaders", "exposeHeaders"):
            if getattr(cors, key):
                spec[key] = list(getattr(cors, key))
        if cors.maxAge is not None:
            spec["maxAge"] = cors.maxAge
        if cors.allowCredentials:
            spec["allowCredentials"] = True
        out[X + "cors"] = spec
    if api.apiKeySource != "HEADER":
        out[X + "api-key-source"] = api.apiKeySource
    if api.aws.minimumCompressionSize is not None:
        out[X + "minimum-compression-size"] = api.aws.minimumCompressionSize
    validators = _validators(api, routes, http_api)
    if validators:
        out[X + "request-validators"] = validators
    if api.aws.requestValidator:
        out[X + "request-validator"] = api.aws.requestValidator
    if api.gatewayResponses:
        responses = {}
        for kind, response in api.gatewayResponses.items():
            entry: dict[str, Any] = {}
            if response.statusCode is not None:
                entry["statusCode"] = response.statusCode
            parameters = dict(response.responseParameters)
            for name, value in response.headers.items():
                parameters.setdefault(f"gatewayresponse.header.{name}", f"'{value}'")
            if parameters:
                entry["responseParameters"] = parameters
            templates = dict(response.responseTemplates)
            if response.body is not None:
                templates.setdefault("application/json", response.body)
            if templates:
                entry["responseTemplates"] = templates
            responses[kind] = entry
        out[X + "gateway-responses"] = responses

    if swagger:
        if schemes:
            out["securityDefinitions"] = schemes
        if api.aws.models:
            out["definitions"] = _models(api, swagger, native)
    else:
        comps = dict(components)
        if api.aws.models:
            comps["schemas"] = _models(api, swagger, native)
        if schemes:
            comps["securitySchemes"] = schemes
        if comps or had_components:
            out["components"] = comps
    out.update(document)  # everything else the document had (documentation, policy, security...)
    return out


def _validators(api: Api, routes: list[Route], http_api: bool) -> dict[str, Any]:
    """The API's request validators, and fastgw's built-in ones (body, params, all, none, the console's
    names) that its native routes or its default use, defined as AWS needs every validator a document
    names to be. An imported document's map is written as it was."""
    out = copy.deepcopy(api.aws.requestValidators)
    native_routes = [r for r in routes if r.operation is None]
    if http_api or not native_routes:
        return out
    for name in [api.aws.requestValidator, *(r.requestValidator for r in native_routes)]:
        if name is not None and name not in out and name in BUILTIN_VALIDATORS:
            body, parameters = BUILTIN_VALIDATORS[name]
            out[name] = {"validateRequestBody": body, "validateRequestParameters": parameters}
    return out


def _models(api: Api, swagger: bool, native: bool) -> dict[str, Any]:
    """The API's models. A native API's references between them take the output version's form
    (AWS's export does the same); an imported document's are written as they were."""
    models = copy.deepcopy(api.aws.models)
    if not native or not isinstance(models, dict):
        return models
    return {name: _model_refs(schema, swagger, models) for name, schema in models.items()}
