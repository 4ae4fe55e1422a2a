"""APIs: their stages, routes and integrations, gateway responses and API mappings, and the extras of
AWS API definitions (OpenAPI fields, deployments, canaries, functions; issue 6)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errors import RESPONSE_TYPES
from .auth import ROUTE_AUTH_FIELDS, AuthorizerConfig, RouteAuth, read_authorizers, read_route_auth
from .cache import RouteCacheConfig, StageCacheConfig, _read_route_cache, _read_stage_cache
from .reader import ROUTE_KEY, _join, _read_name_list, _Reader
from .usage import Throttle, _read_throttle
from .validation import ROUTE_VALIDATION, _read_route_validation

API_TYPES = ("REST", "HTTP", "WEBSOCKET")
SUPPORTED_API_TYPES = ("REST", "HTTP", "WEBSOCKET")
# AWS: AWS service integrations (S3, DynamoDB, ...), kept from imported documents, not run.
INTEGRATION_TYPES = ("HTTP_PROXY", "HTTP", "FUNCTION", "FUNCTION_CUSTOM", "MOCK", "AWS")
# Read into the model; compile_config decides which ones it can run.
SUPPORTED_INTEGRATION_TYPES = INTEGRATION_TYPES
ENCODED_SLASHES = ("REJECT", "PASS", "DECODE")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "ANY")
STAGE_NAME = re.compile(r"^(\$default|[A-Za-z0-9_-]{1,128})$")
API_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
API_KEY_SOURCES = ("HEADER", "AUTHORIZER")


@dataclass(slots=True)
class Integration:
    type: str
    uri: str
    timeoutInMillis: int = 29_000
    connectTimeoutInMillis: int = 5_000
    path: str = ""  # location in the file, for errors found while compiling
    # x-amazon-apigateway-integration fields (issue 6); see IntegrationExtras below
    httpMethod: str | None = None  # the method sent to the backend (None: the client's)
    payloadFormatVersion: str | None = None  # FUNCTION: "1.0" or "2.0" (default: REST 1.0, HTTP 2.0)
    payloadFormatVersionSpelled: Any = None  # as the document wrote it (1.0 or "1.0"), for export
    requestParameters: dict[str, str] = field(default_factory=dict)
    requestTemplates: dict[str, str] = field(default_factory=dict)
    responses: dict[str, Any] = field(default_factory=dict)  # integration responses by selection pattern
    responseParameters: dict[str, Any] = field(default_factory=dict)  # HTTP APIs: status -> response mapping
    passthroughBehavior: str | None = None
    contentHandling: str | None = None  # CONVERT_TO_TEXT | CONVERT_TO_BINARY
    cacheKeyParameters: list[str] = field(default_factory=list)
    aws: dict[str, Any] = field(default_factory=dict)  # other AWS fields, kept verbatim for export
    templateSelectionExpression: str | None = None  # WebSocket APIs: picks the request template


@dataclass(slots=True)
class Route:
    key: str  # "GET /items/{id}" or "$default"
    method: str  # "$default" for the default route
    template: str
    integration: Integration | None  # None when the integration itself is invalid (already reported)
    path: str = ""
    apiKeyRequired: bool = False
    throttle: Throttle | None = None  # the per-method stage setting
    operation: dict[str, Any] | None = None  # the OpenAPI operation it came from (kept for export)
    cache: RouteCacheConfig | None = None  # issue 5: this route's cache settings
    # request validation (fastgw/policies/validation.py): AWS's method request settings
    requestValidator: str | None = None  # a name from the API's requestValidators, or body|params|all|none
    requestParameters: dict[str, bool] = field(default_factory=dict)  # method.request.querystring.X: required
    requestModels: dict[str, Any] = field(default_factory=dict)  # media type -> model name or inline schema
    auth: RouteAuth | None = None  # issue 15: the route's authorizer or AWS_IAM; None: open
    routeResponseSelectionExpression: str | None = None  # WebSocket APIs: `$default` makes the route two-way


@dataclass(slots=True)
class Stage:
    name: str
    variables: dict[str, str]
    path: str = ""
    throttle: Throttle | None = None  # the stage default for every route
    deployment: str | None = None  # None: the API's own `routes` (deployment CURRENT_DEPLOYMENT)
    canary: Canary | None = None
    cache: StageCacheConfig | None = None  # issue 5: the stage cache
    tracingEnabled: bool = False  # AWS X-Ray: the X-Amzn-Trace-Id header upstream (fastgw/tracing.py)


@dataclass(slots=True)
class GatewayResponseConfig:
    statusCode: int | None
    headers: dict[str, str]
    body: str | None
    # AWS's form (x-amazon-apigateway-gateway-responses); static values are also in headers/body
    responseParameters: dict[str, str] = field(default_factory=dict)
    responseTemplates: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Api:
    name: str
    type: str
    awsCompat: bool
    encodedSlashes: str
    disableExecuteApiEndpoint: bool
    stages: list[Stage]
    routes: list[Route]
    gatewayResponses: dict[str, GatewayResponseConfig]
    path: str = ""
    apiKeySource: str = "HEADER"  # HEADER (x-api-key) or AUTHORIZER (usageIdentifierKey)
    aws: ApiExtras = field(default_factory=lambda: ApiExtras())  # issue 6: OpenAPI-level settings
    deployments: dict[str, Deployment] = field(default_factory=dict)
    authorizers: dict[str, AuthorizerConfig] = field(default_factory=dict)  # issue 15 (raw schemes: aws.authorizers)
    # WebSocket APIs (issue 16)
    routeSelectionExpression: str | None = None
    apiKeySelectionExpression: str | None = None
    webSocket: WebSocketSettings | None = None


WS_RESERVED_ROUTES = ("$connect", "$disconnect", "$default")
WS_ROUTE_KEY = re.compile(r"^[^$\s][^\s]{0,127}$")
MANAGEMENT_AUTH = ("AWS_IAM", "NONE")


@dataclass(slots=True)
class WebSocketSettings:
    """A WebSocket API's limits (AWS's quotas by default, reference/aws.md c.14) and its management API."""

    maxMessageBytes: int = 128 * 1024  # a bigger message closes the connection with 1009
    idleTimeoutSeconds: float = 600.0  # no message either way for this long: closed with 1001
    maxLifetimeSeconds: float = 7200.0  # closed with 1001 after this long
    sendQueueBytes: int = 1024 * 1024  # bytes waiting for a client that does not read
    sendTimeoutSeconds: float = 10.0  # a send or a full queue stuck this long: closed (1008 / 1011)
    allowedOrigins: list[str] = field(default_factory=list)  # empty: any Origin (AWS checks none)
    managementAuthorization: str = "AWS_IAM"  # the @connections API: SigV4 (AWS), or NONE
    path: str = ""


@dataclass(slots=True)
class ApiMapping:
    domainName: str | None
    basePath: str
    api: str
    stage: str
    path: str = ""


def _read_integration(r: _Reader, value: Any, path: str) -> Integration | None:
    obj = r.mapping(value, path, ("type", "uri", "timeoutInMillis", "connectTimeoutInMillis", *INTEGRATION_EXTRAS))
    if not obj:
        if value is None:
            r.error(path, "is required")
        return None
    kind = r.string(obj, "type", path, required=True)
    if kind is not None:
        kind = kind.upper()
        if kind not in INTEGRATION_TYPES:
            r.error(_join(path, "type"), f"unknown integration type '{kind}' (one of {', '.join(INTEGRATION_TYPES)})")
            kind = None
        elif kind not in SUPPORTED_INTEGRATION_TYPES:
            r.error(_join(path, "type"), f"integration type {kind} is not implemented yet in this version")
            kind = None
    uri = r.string(obj, "uri", path, required=kind != "MOCK")
    timeout = r.integer(obj, "timeoutInMillis", path, 29_000, 50, 3_600_000)
    connect = r.integer(obj, "connectTimeoutInMillis", path, 5_000, 10, 600_000)
    if kind is None or (uri is None and kind != "MOCK"):
        return None
    integration = Integration(kind, uri or "", timeout, connect, path)
    _read_integration_extras(r, obj, path, integration)
    return integration


def _read_route(r: _Reader, value: Any, path: str, api_type: str) -> Route | None:
    if api_type == "WEBSOCKET":
        return _read_ws_route(r, value, path)
    obj = r.mapping(value, path, ("route", "integration", "name", "apiKeyRequired", "throttle", "cache", "operation",
                                  *ROUTE_VALIDATION, *ROUTE_AUTH_FIELDS))
    if not obj:
        return None
    key = r.string(obj, "route", path, required=True)
    integration = _read_integration(r, obj.get("integration"), _join(path, "integration"))
    key_required = r.boolean(obj, "apiKeyRequired", path, False)
    throttle = _read_throttle(r, obj.get("throttle"), _join(path, "throttle"))
    cache = _read_route_cache(r, obj.get("cache"), _join(path, "cache"))
    if key is None:
        return None
    key = key.strip()
    if key == "$default":
        if api_type != "HTTP":
            r.error(_join(path, "route"), "the $default route exists only in HTTP APIs")
            return None
        method, template = "$default", ""
    else:
        match = ROUTE_KEY.match(key)
        if match is None:
            r.error(_join(path, "route"), f"must be 'METHOD /path' or '$default'; got '{key}'")
            return None
        method, template = match.groups()
        if method not in HTTP_METHODS:
            r.error(_join(path, "route"), f"unknown method '{method}' (one of {', '.join(HTTP_METHODS)})")
            return None
    operation = obj.get("operation")
    if operation is not None and not isinstance(operation, dict):
        r.error(_join(path, "operation"), "must be a mapping (an OpenAPI operation object)")
        operation = None
    route = Route(key, method, template, integration, path, key_required, throttle, operation, cache=cache)
    _read_route_validation(r, obj, path, route)
    route.auth = read_route_auth(r, obj, path)
    return route


def _read_ws_route(r: _Reader, value: Any, path: str) -> Route | None:
    """A WebSocket API route: `$connect`, `$disconnect`, `$default` or a route key (AWS)."""
    obj = r.mapping(value, path, ("route", "integration", "name", "apiKeyRequired", "throttle",
                                  "routeResponseSelectionExpression", *ROUTE_AUTH_FIELDS))
    if not obj:
        return None
    key = r.string(obj, "route", path, required=True)
    integration = _read_integration(r, obj.get("integration"), _join(path, "integration"))
    if integration is not None and integration.type not in WS_INTEGRATION_TYPES:
        r.error(_join(path, "integration.type"), f"a WebSocket route takes {', '.join(WS_INTEGRATION_TYPES)}")
        integration = None
    key_required = r.boolean(obj, "apiKeyRequired", path, False)
    throttle = _read_throttle(r, obj.get("throttle"), _join(path, "throttle"))
    selection = r.string(obj, "routeResponseSelectionExpression", path)
    if key is None:
        return None
    key = key.strip()
    if key not in WS_RESERVED_ROUTES and not WS_ROUTE_KEY.match(key):
        r.error(_join(path, "route"), "must be $connect, $disconnect, $default or a route key that does not "
                f"start with $ (AWS); got '{key}'")
        return None
    if selection is not None and selection != "$default":
        r.error(_join(path, "routeResponseSelectionExpression"), "must be $default (the only value AWS accepts)")
    if selection is not None and key in ("$connect", "$disconnect"):
        r.error(_join(path, "routeResponseSelectionExpression"), f"{key} cannot answer the client (AWS)")
        selection = None
    route = Route(key, "WEBSOCKET", "", integration, path, key_required, throttle)
    route.routeResponseSelectionExpression = selection
    route.auth = read_route_auth(r, obj, path)
    if key != "$connect":
        if route.auth is not None and route.auth.authorizationType != "NONE":
            r.error(_join(path, "authorizationType"), "authorizers run on $connect only (AWS)")
            route.auth = None
        if key_required:
            r.error(_join(path, "apiKeyRequired"), "API keys are checked on $connect only (AWS)")
    return route


def _read_websocket(r: _Reader, value: Any, path: str) -> WebSocketSettings:
    obj = r.mapping(value, path, ("maxMessageBytes", "idleTimeoutSeconds", "maxLifetimeSeconds", "sendQueueBytes",
                                  "sendTimeoutSeconds", "allowedOrigins", "managementAuthorization"))
    settings = WebSocketSettings(
        maxMessageBytes=r.integer(obj, "maxMessageBytes", path, 128 * 1024, 1, 64 * 1024 * 1024),
        idleTimeoutSeconds=r.number(obj, "idleTimeoutSeconds", path, 600.0, 0.05),
        maxLifetimeSeconds=r.number(obj, "maxLifetimeSeconds", path, 7200.0, 0.05),
        sendQueueBytes=r.integer(obj, "sendQueueBytes", path, 1024 * 1024, 1024, 1024 * 1024 * 1024),
        sendTimeoutSeconds=r.number(obj, "sendTimeoutSeconds", path, 10.0, 0.05),
        allowedOrigins=_string_list(r, obj, "allowedOrigins", path),
        managementAuthorization=r.string(obj, "managementAuthorization", path, "AWS_IAM",
                                         choices=MANAGEMENT_AUTH) or "AWS_IAM",
        path=path,
    )
    if settings.sendQueueBytes < settings.maxMessageBytes:
        r.error(_join(path, "sendQueueBytes"), f"must hold at least one message (maxMessageBytes, "
                f"{settings.maxMessageBytes})")
    return settings


SELECTION_PART = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z][\w.-]*)")


def read_selection(r: _Reader, text: str | None, where: str, sources: tuple[str, ...]) -> list[Any] | None:
    """A selection expression (reference/aws.md c.13): literal text and `$request.body.a.b` /
    `${request.body.a}` variables -> [str | ("body" | "header" | "context", path)]."""
    if text is None:
        return None
    parts: list[Any] = []
    pos = 0
    text = text.replace("\\$", "\x00")
    for match in SELECTION_PART.finditer(text):
        if match.start() > pos:
            parts.append(text[pos:match.start()].replace("\x00", "$"))
        name = match.group(1) or match.group(2)
        for source in sources:
            prefix = {"body": "request.body", "header": "request.header", "context": "context"}[source]
            if name == prefix or name.startswith(prefix + "."):
                rest = name[len(prefix) + 1:]
                if not rest:
                    r.error(where, f"'{match.group(0)}' names no field")
                    return None
                parts.append((source, rest.lower() if source == "header" else rest))
                break
        else:
            if name == "default" and len(text) == len("$default"):
                return ["$default"]
            allowed = ", ".join({"body": "$request.body.X", "header": "$request.header.X",
                                 "context": "$context.X"}[s] for s in sources)
            r.error(where, f"'{match.group(0)}' is not a selection variable fastgw knows ({allowed})")
            return None
        pos = match.end()
    if pos < len(text):
        parts.append(text[pos:].replace("\x00", "$"))
    return parts


def _read_gateway_responses(r: _Reader, value: Any, path: str) -> dict[str, GatewayResponseConfig]:
    obj = r.mapping(value, path, tuple(RESPONSE_TYPES))
    result = {}
    for kind, entry in obj.items():
        if kind not in RESPONSE_TYPES:
            continue
        where = _join(path, kind)
        spec = r.mapping(entry, where, ("statusCode", "headers", "body", "responseParameters", "responseTemplates"))
        result[kind] = GatewayResponseConfig(
            statusCode=r.integer(spec, "statusCode", where, 0, 100, 599) or None,
            headers=r.string_map(spec, "headers", where),
            body=r.string(spec, "body", where),
            responseParameters=r.string_map(spec, "responseParameters", where),
            responseTemplates=r.string_map(spec, "responseTemplates", where),
        )
        _aws_gateway_response(result[kind])
    return result


def _read_api(r: _Reader, value: Any, path: str) -> Api | None:
    known = ("name", "type", "awsCompat", "encodedSlashes", "disableExecuteApiEndpoint", "stages", "routes",
             "gatewayResponses", "description", "apiKeySource", "deployments", *API_EXTRAS, *WS_API_FIELDS)
    obj = r.mapping(value, path, known)
    if not obj:
        return None
    name = r.string(obj, "name", path, required=True)
    if name is not None and not API_NAME.match(name):
        r.error(_join(path, "name"), "may hold only letters, digits and . _ - (1 to 128 characters)")
    api_type = (r.string(obj, "type", path, "REST") or "REST").upper()
    if api_type not in API_TYPES:
        r.error(_join(path, "type"), f"must be one of {', '.join(API_TYPES)}; got '{api_type}'")
    elif api_type not in SUPPORTED_API_TYPES:
        r.error(_join(path, "type"), f"{api_type} APIs are not implemented yet in this version")
    # The default is nginx's (an encoded slash is a separator: decoded, then the path normalised), which
    # granian's RSGI can serve; an awsCompat API keeps REJECT. Why that is safe: docs/DESIGN.md
    # "Server interface: ASGI or RSGI".
    default_encoded = "REJECT" if obj.get("awsCompat") is True else "DECODE"
    encoded = r.string(obj, "encodedSlashes", path, default_encoded, choices=ENCODED_SLASHES) or default_encoded

    stages: list[Stage] = []
    stages_path = _join(path, "stages")
    raw_stages = obj.get("stages")
    if not raw_stages:
        r.error(stages_path, "at least one stage is required")
    elif not isinstance(raw_stages, dict):
        r.error(stages_path, "must be a mapping of stage name to stage settings")
    else:
        for stage_name, stage_value in raw_stages.items():
            where = _join(stages_path, stage_name)
            if not STAGE_NAME.match(stage_name):
                r.error(where, "a stage name holds only letters, digits, - and _ (or is $default)")
                continue
            if stage_name == "$default" and api_type != "HTTP":
                r.error(where, "the $default stage exists only in HTTP APIs")
                continue
            spec = r.mapping(stage_value, where, ("variables", "description", "throttle", "cache", "deployment",
                                                  "canary", "tracingEnabled"))
            variables = r.string_map(spec, "variables", where)
            for var in variables:
                if not re.match(r"^[A-Za-z0-9_]{1,64}$", var):
                    r.error(_join(_join(where, "variables"), var), "a stage variable name holds only letters, "
                            "digits and _ (1 to 64 characters)")
            stage_throttle = _read_throttle(r, spec.get("throttle"), _join(where, "throttle"))
            stages.append(Stage(stage_name, variables, where, stage_throttle, r.string(spec, "deployment", where),
                                _read_canary(r, spec.get("canary"), _join(where, "canary"))))
            stages[-1].cache = _read_stage_cache(r, spec.get("cache"), _join(where, "cache"))
            stages[-1].tracingEnabled = r.boolean(spec, "tracingEnabled", where, False)

    routes: list[Route] = []
    routes_path = _join(path, "routes")
    raw_routes = obj.get("routes")
    if raw_routes is None and obj.get("deployments"):
        pass  # every stage names one of the deployments
    elif not isinstance(raw_routes, list) or not raw_routes:
        r.error(routes_path, "must be a non-empty list of routes")
    else:
        for i, item in enumerate(raw_routes):
            route = _read_route(r, item, _join(routes_path, i), api_type)
            if route is not None:
                routes.append(route)
    deployments = _read_deployments(r, obj.get("deployments"), _join(path, "deployments"), api_type)
    _check_stage_deployments(r, stages, deployments, raw_routes is not None)

    if name is None:
        return None
    ws = _read_ws_api(r, obj, path, api_type, routes)
    api = Api(
        name=name,
        type=api_type,
        awsCompat=r.boolean(obj, "awsCompat", path, False),
        encodedSlashes=encoded,
        disableExecuteApiEndpoint=r.boolean(obj, "disableExecuteApiEndpoint", path, False),
        stages=stages,
        routes=routes,
        gatewayResponses=_read_gateway_responses(r, obj.get("gatewayResponses"), _join(path, "gatewayResponses")),
        path=path,
        apiKeySource=r.string(obj, "apiKeySource", path, "HEADER", choices=API_KEY_SOURCES) or "HEADER",
        aws=_read_api_extras(r, obj, path),
        deployments=deployments,
        authorizers=read_authorizers(r, obj.get("authorizers"), _join(path, "authorizers"), api_type),
    )
    if ws is not None:
        api.routeSelectionExpression, api.apiKeySelectionExpression, api.webSocket = ws
        if api.apiKeySelectionExpression == "$context.authorizer.usageIdentifierKey":
            api.apiKeySource = "AUTHORIZER"
    return api


WS_API_FIELDS = ("routeSelectionExpression", "apiKeySelectionExpression", "webSocket")
WS_INTEGRATION_TYPES = ("FUNCTION", "HTTP_PROXY", "HTTP", "MOCK")


def _read_ws_api(r: _Reader, obj: dict[str, Any], path: str, api_type: str,
                 routes: list[Route]) -> tuple[str, str | None, WebSocketSettings] | None:
    if api_type != "WEBSOCKET":
        for key in WS_API_FIELDS:
            if key in obj:
                r.error(_join(path, key), "applies to WEBSOCKET APIs only")
        return None
    selection = r.string(obj, "routeSelectionExpression", path, required=True) or "$request.body.action"
    read_selection(r, selection, _join(path, "routeSelectionExpression"), ("body",))
    api_key = r.string(obj, "apiKeySelectionExpression", path)
    if api_key is not None and api_key not in ("$request.header.x-api-key", "$context.authorizer.usageIdentifierKey"):
        r.error(_join(path, "apiKeySelectionExpression"), "must be $request.header.x-api-key or "
                "$context.authorizer.usageIdentifierKey (AWS)")
    if obj.get("deployments"):
        r.error(_join(path, "deployments"), "WebSocket APIs serve their own routes (deployments are not supported)")
    seen: dict[str, str] = {}
    for route in routes:
        if route.key in seen:
            r.error(_join(route.path, "route"), f"duplicate route: same as {seen[route.key]}")
        seen[route.key] = route.path
    return selection, api_key, _read_websocket(r, obj.get("webSocket"), _join(path, "webSocket"))


def _read_mappings(r: _Reader, value: Any) -> list[ApiMapping]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.error("apiMappings", "must be a list")
        return []
    result = []
    for i, item in enumerate(value):
        where = f"apiMappings[{i}]"
        obj = r.mapping(item, where, ("domainName", "basePath", "api", "stage"))
        api = r.string(obj, "api", where, required=True)
        stage = r.string(obj, "stage", where, required=True)
        domain = r.string(obj, "domainName", where)
        base = (r.string(obj, "basePath", where, "") or "").strip("/")
        if api is not None and stage is not None:
            result.append(ApiMapping(domain.lower() if domain else None, base, api, stage, where))
    return result


# -- AWS API definitions: OpenAPI fields, deployments, canaries, functions (issue 6) ----------------
CURRENT_DEPLOYMENT = "current"  # an API's own `routes`, as a deployment a stage or canary can name
INTEGRATION_EXTRAS = ("httpMethod", "payloadFormatVersion", "requestParameters", "requestTemplates", "responses",
                      "responseParameters", "templateSelectionExpression",
                      "passthroughBehavior", "contentHandling", "cacheKeyParameters", "awsFields")
API_EXTRAS = ("binaryMediaTypes", "cors", "minimumCompressionSize", "requestValidators", "requestValidator",
              "authorizers", "models", "document", "source")
PASSTHROUGH_BEHAVIORS = ("WHEN_NO_MATCH", "WHEN_NO_TEMPLATES", "NEVER")
CONTENT_HANDLINGS = ("CONVERT_TO_TEXT", "CONVERT_TO_BINARY")
PAYLOAD_VERSIONS = ("1.0", "2.0")
FUNCTION_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(slots=True)
class Cors:
    """An HTTP API's CORS configuration (x-amazon-apigateway-cors), answered by the gateway."""

    allowOrigins: list[str] = field(default_factory=list)
    allowMethods: list[str] = field(default_factory=list)
    allowHeaders: list[str] = field(default_factory=list)
    exposeHeaders: list[str] = field(default_factory=list)
    maxAge: int | None = None
    allowCredentials: bool = False


@dataclass(slots=True)
class ApiExtras:
    """API-level settings of an AWS API definition."""

    binaryMediaTypes: list[str] = field(default_factory=list)
    cors: Cors | None = None
    minimumCompressionSize: int | None = None  # bytes; None: no response compression (policies/compression.py)
    requestValidators: dict[str, Any] = field(default_factory=dict)  # kept; validation arrives later
    requestValidator: str | None = None
    authorizers: dict[str, Any] = field(default_factory=dict)  # security schemes; enforced when authorizers land
    models: dict[str, Any] = field(default_factory=dict)  # JSON schemas by name
    document: dict[str, Any] = field(default_factory=dict)  # other OpenAPI top-level fields (info, tags, ...)
    source: str | None = None  # the OpenAPI file the API was read from


@dataclass(slots=True)
class Deployment:
    """An immutable snapshot of an API's routes."""

    name: str
    routes: list[Route]
    path: str = ""
    description: str | None = None
    source: str | None = None


@dataclass(slots=True)
class Canary:
    deployment: str | None  # None: the API's own routes
    percentTraffic: float = 0.0  # 0.0 - 100.0
    stageVariableOverrides: dict[str, str] = field(default_factory=dict)
    useStageCache: bool = False
    path: str = ""


@dataclass(slots=True)
class FunctionSpec:
    """A Lambda function run locally: its name (or ARN) and the Python callable that handles it."""

    name: str
    handler: str  # module:function
    timeout: float = 3.0  # seconds (Lambda's default)
    memorySize: int = 128  # reported in the context object
    path: str = ""
    codeUri: str | None = None  # a directory to import the handler from (SAM's CodeUri); relative to the config


def _read_integration_extras(r: _Reader, obj: dict[str, Any], path: str, integration: Integration) -> None:
    method = r.string(obj, "httpMethod", path)
    integration.httpMethod = method.upper() if method else None
    version = obj.get("payloadFormatVersion")
    if version is not None:
        text = f"{float(version):.1f}" if isinstance(version, int | float) and not isinstance(version, bool) else str(
            version)
        if text not in PAYLOAD_VERSIONS:
            r.error(_join(path, "payloadFormatVersion"), f"must be 1.0 or 2.0; got '{version}'")
        else:
            integration.payloadFormatVersion = text
            integration.payloadFormatVersionSpelled = version
    integration.requestParameters = r.string_map(obj, "requestParameters", path)
    integration.requestTemplates = r.string_map(obj, "requestTemplates", path)
    responses = obj.get("responses")
    if responses is not None and not isinstance(responses, dict):
        r.error(_join(path, "responses"), "must be a mapping of selection pattern to integration response")
    elif responses:
        integration.responses = responses
    mapped = obj.get("responseParameters")
    if mapped is not None and not isinstance(mapped, dict):
        r.error(_join(path, "responseParameters"), "must be a mapping of status code to response parameters")
    elif mapped:
        integration.responseParameters = {str(k): v for k, v in mapped.items()}
    passthrough = r.string(obj, "passthroughBehavior", path)
    if passthrough is not None:
        if passthrough.upper() not in PASSTHROUGH_BEHAVIORS:
            r.error(_join(path, "passthroughBehavior"), f"must be one of {', '.join(PASSTHROUGH_BEHAVIORS)} "
                    f"(any case); got '{passthrough}'")
        else:
            integration.passthroughBehavior = passthrough.upper()
    handling = r.string(obj, "contentHandling", path)
    if handling is not None:
        if handling.upper() not in CONTENT_HANDLINGS:
            r.error(_join(path, "contentHandling"), f"must be one of {', '.join(CONTENT_HANDLINGS)}; got "
                    f"'{handling}'")
        else:
            integration.contentHandling = handling.upper()
    integration.cacheKeyParameters = _read_name_list(r, obj, "cacheKeyParameters", path)
    integration.templateSelectionExpression = r.string(obj, "templateSelectionExpression", path)
    kept = obj.get("awsFields")
    if kept is not None and not isinstance(kept, dict):
        r.error(_join(path, "awsFields"), "must be a mapping")
    elif kept:
        integration.aws = kept


def _aws_gateway_response(response: GatewayResponseConfig) -> None:
    """AWS's gateway response form: static header values and the application/json template apply."""
    for name, value in response.responseParameters.items():
        prefix = "gatewayresponse.header."
        if name.startswith(prefix) and len(value) >= 2 and value[0] == value[-1] == "'":
            response.headers.setdefault(name[len(prefix):], value[1:-1])
    if response.body is None and "application/json" in response.responseTemplates:
        response.body = response.responseTemplates["application/json"]


def _string_list(r: _Reader, obj: dict[str, Any], key: str, path: str) -> list[str]:
    value = obj.get(key)
    if isinstance(value, str):
        return [value]
    return _read_name_list(r, obj, key, path)


def _read_cors(r: _Reader, value: Any, path: str) -> Cors | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("allowOrigins", "allowMethods", "allowHeaders", "exposeHeaders", "maxAge",
                                  "allowCredentials"))
    cors = Cors(
        allowOrigins=_string_list(r, obj, "allowOrigins", path),
        allowMethods=[m.upper() for m in _string_list(r, obj, "allowMethods", path)],
        allowHeaders=[h.lower() for h in _string_list(r, obj, "allowHeaders", path)],
        exposeHeaders=[h.lower() for h in _string_list(r, obj, "exposeHeaders", path)],
        maxAge=r.integer(obj, "maxAge", path, -1, -1, 86_400),
        allowCredentials=r.boolean(obj, "allowCredentials", path, False),
    )
    if cors.maxAge == -1:
        cors.maxAge = None
    if cors.allowCredentials and "*" in cors.allowOrigins:
        r.error(_join(path, "allowOrigins"), "'*' cannot be combined with allowCredentials: true (AWS refuses it)")
    return cors


def _raw_mapping(r: _Reader, obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(_join(path, key), "must be a mapping")
        return {}
    return value


def _read_api_extras(r: _Reader, obj: dict[str, Any], path: str) -> ApiExtras:
    size = obj.get("minimumCompressionSize")
    return ApiExtras(
        binaryMediaTypes=_read_name_list(r, obj, "binaryMediaTypes", path),
        cors=_read_cors(r, obj.get("cors"), _join(path, "cors")),
        minimumCompressionSize=None if size is None else r.integer(obj, "minimumCompressionSize", path, 0, 0,
                                                                    10_485_760),
        requestValidators=_raw_mapping(r, obj, "requestValidators", path),
        requestValidator=r.string(obj, "requestValidator", path),
        authorizers=_raw_mapping(r, obj, "authorizers", path),
        models=_raw_mapping(r, obj, "models", path),
        document=_raw_mapping(r, obj, "document", path),
        source=r.string(obj, "source", path),
    )


def _read_deployments(r: _Reader, value: Any, path: str, api_type: str) -> dict[str, Deployment]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(path, "must be a mapping of deployment name to {routes} (or {openapi: FILE})")
        return {}
    result: dict[str, Deployment] = {}
    for name, spec in value.items():
        where = _join(path, name)
        if not DEPLOYMENT_NAME.match(str(name)) or name == CURRENT_DEPLOYMENT:
            r.error(where, f"a deployment name holds letters, digits and . _ - (and is not '{CURRENT_DEPLOYMENT}', "
                    "the name of the API's own routes)")
            continue
        obj = r.mapping(spec, where, ("routes", "description", "source"))
        raw_routes = obj.get("routes")
        routes: list[Route] = []
        if not isinstance(raw_routes, list) or not raw_routes:
            r.error(_join(where, "routes"), "must be a non-empty list of routes")
        else:
            for i, item in enumerate(raw_routes):
                route = _read_route(r, item, _join(_join(where, "routes"), i), api_type)
                if route is not None:
                    routes.append(route)
        result[str(name)] = Deployment(str(name), routes, where, r.string(obj, "description", where),
                                       r.string(obj, "source", where))
    return result


def _read_canary(r: _Reader, value: Any, path: str) -> Canary | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("deployment", "percentTraffic", "stageVariableOverrides", "useStageCache"))
    percent = r.number(obj, "percentTraffic", path, 0.0)
    if percent > 100.0:
        r.error(_join(path, "percentTraffic"), f"must be between 0.0 and 100.0; got {percent}")
        percent = 100.0
    return Canary(
        deployment=r.string(obj, "deployment", path),
        percentTraffic=percent,
        stageVariableOverrides=r.string_map(obj, "stageVariableOverrides", path),
        useStageCache=r.boolean(obj, "useStageCache", path, False),
        path=path,
    )


def _check_stage_deployments(r: _Reader, stages: list[Stage], deployments: dict[str, Deployment],
                             own_routes: bool) -> None:
    known = ([CURRENT_DEPLOYMENT] if own_routes else []) + list(deployments)
    for stage in stages:
        bound = [(stage.deployment, _join(stage.path, "deployment"))]
        if stage.canary is not None:
            bound.append((stage.canary.deployment, _join(stage.path, "canary.deployment")))
        for name, where in bound:
            if name is None:
                if not own_routes and deployments:
                    r.error(where, "is required: the API has no routes of its own (deployments: "
                            f"{', '.join(deployments)})")
            elif name not in known:
                r.error(where, f"no deployment '{name}' (known: {', '.join(known) or 'none'})")


def _read_functions(r: _Reader, value: Any) -> dict[str, FunctionSpec]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error("functions", "must map Lambda function names (or ARNs) to handlers 'module:function'")
        return {}
    result: dict[str, FunctionSpec] = {}
    for name, spec in value.items():
        where = _join("functions", name)
        if isinstance(spec, str):
            spec = {"handler": spec}
        obj = r.mapping(spec, where, ("handler", "timeout", "memorySize", "description", "codeUri"))
        handler = r.string(obj, "handler", where, required=True)
        if handler is not None and not FUNCTION_HANDLER.match(handler):
            r.error(_join(where, "handler"), f"must be 'module:function' (e.g. app.handlers:get_pet); got '{handler}'")
            handler = None
        timeout = r.number(obj, "timeout", where, 3.0, 0.001)
        if timeout > 900:
            r.error(_join(where, "timeout"), "must be at most 900 seconds (Lambda's maximum)")
        memory = r.integer(obj, "memorySize", where, 128, 128, 10_240)
        if handler is not None:
            result[str(name)] = FunctionSpec(str(name), handler, timeout, memory, where,
                                             r.string(obj, "codeUri", where))
    return result


def _read_upstreams(r: _Reader, root: dict[str, Any], key: str) -> dict[str, str]:
    result = r.string_map(root, key, "")
    for prefix, target in result.items():
        if not target.startswith(("http://", "https://")):
            r.error(_join(key, prefix), f"must be an http:// or https:// URI prefix; got '{target}'")
    return result
