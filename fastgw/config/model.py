"""The typed config model (native fastgw format) and its validation.

`read_config(data)` turns plain data into the dataclasses below, collecting every problem with its
location instead of stopping at the first. Field names follow AWS's (`stageVariables` are
`variables` on a stage, `timeoutInMillis`, `gatewayResponses`, ...).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import RESPONSE_TYPES
from ..scheduling import POLICIES
from .loader import Problem

API_TYPES = ("REST", "HTTP", "WEBSOCKET")
SUPPORTED_API_TYPES = ("REST", "HTTP")
# AWS: AWS service integrations (S3, DynamoDB, ...), kept from imported documents, not run.
INTEGRATION_TYPES = ("HTTP_PROXY", "HTTP", "FUNCTION", "FUNCTION_CUSTOM", "MOCK", "AWS")
# Read into the model; compile_config decides which ones it can run.
SUPPORTED_INTEGRATION_TYPES = INTEGRATION_TYPES
ENCODED_SLASHES = ("REJECT", "PASS", "DECODE")
INTERFACES = ("auto", "asgi", "rsgi")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "ANY")
ROUTE_KEY = re.compile(r"^([A-Z]+) (/\S*)$")
STAGE_NAME = re.compile(r"^(\$default|[A-Za-z0-9_-]{1,128})$")
API_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
API_KEY_SOURCES = ("HEADER", "AUTHORIZER")
STATE_BACKENDS = ("local", "redis")
FAIL_MODES = ("open", "closed")
QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")
# AWS: 20 to 128 characters. Visible ASCII only, since the value travels in a header.
API_KEY_VALUE = re.compile(r"^[\x21-\x7e]{20,128}$")
# AWS's per-method throttle key form, "/orders/{id}/GET", beside fastgw's route key "GET /orders/{id}".
AWS_METHOD_PATH = re.compile(r"^(/\S*)/([A-Z]+|\*)$")
QUOTA_MAX = (1 << 40) - 1  # what a shared-memory counter holds


@dataclass(slots=True)
class Limits:
    maxUriBytes: int = 8 * 1024
    maxHeaderBytes: int = 60 * 1024
    maxHeaderFieldBytes: int = 16 * 1024
    maxHeaderCount: int = 100
    maxBodyBytes: int = 10 * 1024 * 1024
    headerReadTimeoutMs: int = 10_000
    bodyIdleTimeoutMs: int = 30_000  # between two reads of a request body (408 and close); RELIABILITY.md F-27
    sendIdleTimeoutMs: int = 60_000  # a streamed response whose client reads nothing this long is aborted (F-28)
    # Accepted, not applied: granian (hyper) closes an idle keep-alive connection after
    # headerReadTimeoutMs, the same timer that cuts slow heads; loading a config that sets it warns.
    keepAliveIdleMs: int | None = None
    maxValidatedBodyBytes: int = 1024 * 1024  # request validation reads bodies up to this size (413 above)


@dataclass(slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 0  # 0: one per CPU
    adminHost: str = "127.0.0.1"
    adminPort: int = 9901
    adminToken: str | None = None
    interface: str = "auto"
    accessLog: bool = True
    tlsCert: str | None = None
    tlsKey: str | None = None
    drainSeconds: float = 25.0
    trustedHops: int = 0  # proxies in front of fastgw whose X-Forwarded-For is trusted
    cpuScheduling: str = "normal"  # "batch": SCHED_BATCH workers (fastgw/scheduling.py)
    limits: Limits = field(default_factory=Limits)


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
    requestParameters: dict[str, str] = field(default_factory=dict)
    requestTemplates: dict[str, str] = field(default_factory=dict)
    responses: dict[str, Any] = field(default_factory=dict)  # integration responses by selection pattern
    responseParameters: dict[str, Any] = field(default_factory=dict)  # HTTP APIs: status -> response mapping
    passthroughBehavior: str | None = None
    contentHandling: str | None = None  # CONVERT_TO_TEXT | CONVERT_TO_BINARY
    cacheKeyParameters: list[str] = field(default_factory=list)
    aws: dict[str, Any] = field(default_factory=dict)  # other AWS fields, kept verbatim for export


@dataclass(slots=True)
class Throttle:
    """AWS's ThrottleSettings: steady requests per second and bucket size (GCRA)."""

    rateLimit: float
    burstLimit: int


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
    # request validation (fastgw/validation.py): AWS's method request settings
    requestValidator: str | None = None  # a name from the API's requestValidators, or body|params|all|none
    requestParameters: dict[str, bool] = field(default_factory=dict)  # method.request.querystring.X: required
    requestModels: dict[str, Any] = field(default_factory=dict)  # media type -> model name or inline schema


@dataclass(slots=True)
class Stage:
    name: str
    variables: dict[str, str]
    path: str = ""
    throttle: Throttle | None = None  # the stage default for every route
    deployment: str | None = None  # None: the API's own `routes` (deployment CURRENT_DEPLOYMENT)
    canary: Canary | None = None
    cache: StageCacheConfig | None = None  # issue 5: the stage cache


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


@dataclass(slots=True)
class ApiMapping:
    domainName: str | None
    basePath: str
    api: str
    stage: str
    path: str = ""


@dataclass(slots=True)
class GatewayConfig:
    server: ServerConfig
    apis: list[Api]
    apiMappings: list[ApiMapping]
    state: StateConfig = field(default_factory=lambda: StateConfig())
    throttle: Throttle | None = None  # gateway-wide (AWS's account level)
    usagePlans: list[UsagePlan] = field(default_factory=list)
    apiKeys: list[ApiKeyConfig] = field(default_factory=list)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)  # Lambda name/ARN -> Python handler
    parameters: dict[str, str] = field(default_factory=dict)  # CloudFormation values for imported documents
    upstreams: dict[str, str] = field(default_factory=dict)  # integration URI prefix -> replacement


class _Reader:
    """Reads typed fields out of plain data and records a Problem for each mistake."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(self, value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping, not {_kind(value)}")
            return {}
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.error(_join(path, key), f"unknown field{hint}")
        return value

    def string(self, obj: dict[str, Any], key: str, path: str, default: str | None = None,
               required: bool = False, choices: tuple[str, ...] | None = None) -> str | None:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.error(where, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(where, f"must be a string, not {_kind(value)}")
            return default
        value = str(value)
        if choices is not None and value not in choices:
            self.error(where, f"must be one of {', '.join(choices)}; got '{value}'")
            return default
        return value

    def integer(self, obj: dict[str, Any], key: str, path: str, default: int,
                low: int | None = None, high: int | None = None) -> int:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # from ${env:...}
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"must be a whole number, not {_kind(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            self.error(where, f"must be between {low} and {high}; got {value}")
            return default
        return value

    def number(self, obj: dict[str, Any], key: str, path: str, default: float, low: float = 0.0) -> float:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            self.error(where, f"must be a number >= {low}")
            return default
        return float(value)

    def boolean(self, obj: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.error(_join(path, key), f"must be true or false, not {_kind(value)}")
            return default
        return value

    def string_map(self, obj: dict[str, Any], key: str, path: str) -> dict[str, str]:
        value = obj.get(key)
        where = _join(path, key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(where, f"must be a mapping, not {_kind(value)}")
            return {}
        result = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                self.error(_join(where, k), f"must be a string, not {_kind(v)}")
                continue
            result[str(k)] = str(v)
        return result


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _read_limits(r: _Reader, value: Any, path: str) -> Limits:
    known = tuple(Limits.__dataclass_fields__)
    obj = r.mapping(value, path, known)
    d = Limits()
    return Limits(
        maxUriBytes=r.integer(obj, "maxUriBytes", path, d.maxUriBytes, 256, 1 << 20),
        maxHeaderBytes=r.integer(obj, "maxHeaderBytes", path, d.maxHeaderBytes, 1024, 1 << 20),
        maxHeaderFieldBytes=r.integer(obj, "maxHeaderFieldBytes", path, d.maxHeaderFieldBytes, 256, 1 << 20),
        maxHeaderCount=r.integer(obj, "maxHeaderCount", path, d.maxHeaderCount, 8, 10_000),
        maxBodyBytes=r.integer(obj, "maxBodyBytes", path, d.maxBodyBytes, 0, 1 << 40),
        headerReadTimeoutMs=r.integer(obj, "headerReadTimeoutMs", path, d.headerReadTimeoutMs, 100, 600_000),
        bodyIdleTimeoutMs=r.integer(obj, "bodyIdleTimeoutMs", path, d.bodyIdleTimeoutMs, 100, 600_000),
        sendIdleTimeoutMs=r.integer(obj, "sendIdleTimeoutMs", path, d.sendIdleTimeoutMs, 100, 3_600_000),
        keepAliveIdleMs=r.integer(obj, "keepAliveIdleMs", path, 0, 100, 3_600_000) or None,
        maxValidatedBodyBytes=r.integer(obj, "maxValidatedBodyBytes", path, d.maxValidatedBodyBytes, 0, 1 << 30),
    )


def _read_server(r: _Reader, value: Any) -> ServerConfig:
    path = "server"
    known = tuple(ServerConfig.__dataclass_fields__)
    obj = r.mapping(value, path, known)
    d = ServerConfig()
    return ServerConfig(
        host=r.string(obj, "host", path, d.host) or d.host,
        port=r.integer(obj, "port", path, d.port, 0, 65535),
        workers=r.integer(obj, "workers", path, d.workers, 0, 1024),
        adminHost=r.string(obj, "adminHost", path, d.adminHost) or d.adminHost,
        adminPort=r.integer(obj, "adminPort", path, d.adminPort, 0, 65535),
        adminToken=r.string(obj, "adminToken", path),
        interface=r.string(obj, "interface", path, d.interface, choices=INTERFACES) or d.interface,
        accessLog=r.boolean(obj, "accessLog", path, d.accessLog),
        tlsCert=r.string(obj, "tlsCert", path),
        tlsKey=r.string(obj, "tlsKey", path),
        drainSeconds=r.number(obj, "drainSeconds", path, d.drainSeconds),
        trustedHops=r.integer(obj, "trustedHops", path, d.trustedHops, 0, 32),
        cpuScheduling=r.string(obj, "cpuScheduling", path, d.cpuScheduling, choices=POLICIES) or d.cpuScheduling,
        limits=_read_limits(r, obj.get("limits"), f"{path}.limits"),
    )


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
    obj = r.mapping(value, path, ("route", "integration", "name", "apiKeyRequired", "throttle", "cache", "operation",
                                  *ROUTE_VALIDATION))
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
    return route


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
             "gatewayResponses", "description", "apiKeySource", "deployments", *API_EXTRAS)
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
    encoded = r.string(obj, "encodedSlashes", path, "REJECT", choices=ENCODED_SLASHES) or "REJECT"

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
                                                  "canary"))
            variables = r.string_map(spec, "variables", where)
            for var in variables:
                if not re.match(r"^[A-Za-z0-9_]{1,64}$", var):
                    r.error(_join(_join(where, "variables"), var), "a stage variable name holds only letters, "
                            "digits and _ (1 to 64 characters)")
            stage_throttle = _read_throttle(r, spec.get("throttle"), _join(where, "throttle"))
            stages.append(Stage(stage_name, variables, where, stage_throttle, r.string(spec, "deployment", where),
                                _read_canary(r, spec.get("canary"), _join(where, "canary"))))
            stages[-1].cache = _read_stage_cache(r, spec.get("cache"), _join(where, "cache"))

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
    return Api(
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
    )


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


# -- usage plans, API keys, throttling and state (issue 4) ------------------------------------------
@dataclass(slots=True)
class StateConfig:
    backend: str = "local"  # local: shared memory + SQLite on this host; redis: shared by every node
    path: str = ".fastgw"  # state directory; relative paths are relative to the config file
    url: str | None = None  # redis://host:port/db
    failMode: str = "open"  # Redis unreachable: open (per-node local limits) or closed (503)
    timeoutMillis: int = 50  # per Redis operation
    nodes: int = 1  # gateway nodes sharing the Redis: a cut-off node allows limit/nodes locally


@dataclass(slots=True)
class Quota:
    limit: int
    period: str  # DAY | WEEK | MONTH (UTC; weeks start on Monday)
    offset: int = 0  # requests subtracted from the limit in the initial period (AWS)


@dataclass(slots=True)
class UsagePlanStage:
    api: str
    stage: str
    throttle: dict[str, Throttle]  # route key ("GET /orders/{id}") -> per-key per-method throttle
    path: str = ""


@dataclass(slots=True)
class UsagePlan:
    name: str
    apiStages: list[UsagePlanStage]
    throttle: Throttle | None
    quota: Quota | None
    path: str = ""


@dataclass(slots=True)
class ApiKeyConfig:
    name: str
    value: str
    usagePlans: list[str]
    enabled: bool = True
    path: str = ""


def _read_throttle(r: _Reader, value: Any, path: str) -> Throttle | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("rateLimit", "burstLimit"))
    if not obj:
        return None
    missing = [k for k in ("rateLimit", "burstLimit") if k not in obj]
    for k in missing:
        r.error(_join(path, k), "is required")
    rate = r.number(obj, "rateLimit", path, -1.0)
    burst = r.integer(obj, "burstLimit", path, -1, 0, 1 << 40)
    if missing or rate < 0 or burst < 0:
        return None
    return Throttle(rate, burst)


def _read_state(r: _Reader, value: Any) -> StateConfig:
    path = "state"
    obj = r.mapping(value, path, ("backend", "path", "url", "failMode", "timeoutMillis", "nodes"))
    d = StateConfig()
    backend = r.string(obj, "backend", path, d.backend, choices=STATE_BACKENDS) or d.backend
    url = r.string(obj, "url", path)
    if backend == "redis":
        if not url:
            r.error(_join(path, "url"), "is required with backend: redis (redis://host:port/db)")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            r.error(_join(path, "url"), f"must be a redis://, rediss:// or unix:// URL; got '{url}'")
    return StateConfig(
        backend=backend,
        path=r.string(obj, "path", path, d.path) or d.path,
        url=url,
        failMode=r.string(obj, "failMode", path, d.failMode, choices=FAIL_MODES) or d.failMode,
        timeoutMillis=r.integer(obj, "timeoutMillis", path, d.timeoutMillis, 1, 10_000),
        nodes=r.integer(obj, "nodes", path, d.nodes, 1, 1000),
    )


def _read_name_list(r: _Reader, obj: dict[str, Any], key: str, path: str) -> list[str]:
    value = obj.get(key)
    where = _join(path, key)
    if value is None:
        return []
    if not isinstance(value, list):
        r.error(where, f"must be a list, not {_kind(value)}")
        return []
    result = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int) or not str(item):
            r.error(_join(where, i), f"must be a name, not {_kind(item)}")
            continue
        result.append(str(item))
    return result


def method_throttle_key(key: str) -> str | None:
    """'GET /orders/{id}' or AWS's '/orders/{id}/GET' -> 'GET /orders/{id}'; None if neither."""
    key = key.strip()
    match = ROUTE_KEY.match(key)
    if match is not None:
        return key
    match = AWS_METHOD_PATH.match(key)
    if match is not None:
        method = "ANY" if match.group(2) == "*" else match.group(2)
        return f"{method} {match.group(1) or '/'}"
    return None


def _read_usage_plans(r: _Reader, value: Any) -> list[UsagePlan]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.error("usagePlans", "must be a list")
        return []
    plans = []
    for i, item in enumerate(value):
        where = f"usagePlans[{i}]"
        obj = r.mapping(item, where, ("name", "description", "apiStages", "throttle", "quota"))
        if not obj:
            continue
        name = r.string(obj, "name", where, required=True)
        stages: list[UsagePlanStage] = []
        raw_stages = obj.get("apiStages")
        stages_path = _join(where, "apiStages")
        if raw_stages is None:
            r.error(stages_path, "is required: the API stages this plan applies to")
        elif not isinstance(raw_stages, list):
            r.error(stages_path, "must be a list of {api, stage, throttle}")
        else:
            for j, entry in enumerate(raw_stages):
                at = _join(stages_path, j)
                spec = r.mapping(entry, at, ("api", "stage", "throttle"))
                api = r.string(spec, "api", at, required=True)
                stage = r.string(spec, "stage", at, required=True)
                methods: dict[str, Throttle] = {}
                raw_methods = spec.get("throttle")
                if raw_methods is not None and not isinstance(raw_methods, dict):
                    r.error(_join(at, "throttle"), 'must map route keys ("GET /orders/{id}") to throttles')
                elif raw_methods:
                    if len(raw_methods) > 20:
                        r.error(_join(at, "throttle"), "at most 20 method throttles per stage (AWS)")
                    for key, setting in raw_methods.items():
                        key_path = _join(_join(at, "throttle"), key)
                        route_key = method_throttle_key(str(key))
                        if route_key is None:
                            r.error(key_path, "must be a route key like 'GET /orders/{id}' (or AWS's "
                                    "'/orders/{id}/GET')")
                            continue
                        throttle = _read_throttle(r, setting, key_path)
                        if throttle is not None:
                            methods[route_key] = throttle
                if api is not None and stage is not None:
                    stages.append(UsagePlanStage(api, stage, methods, at))
        throttle = _read_throttle(r, obj.get("throttle"), _join(where, "throttle"))
        quota = None
        raw_quota = obj.get("quota")
        if raw_quota is not None:
            at = _join(where, "quota")
            spec = r.mapping(raw_quota, at, ("limit", "period", "offset"))
            if "limit" not in spec:
                r.error(_join(at, "limit"), "is required")
            limit = r.integer(spec, "limit", at, -1, 0, QUOTA_MAX)
            period = r.string(spec, "period", at, required=True, choices=QUOTA_PERIODS)
            offset = r.integer(spec, "offset", at, 0, 0, QUOTA_MAX)
            if limit >= 0 and offset > limit:
                r.error(_join(at, "offset"), f"must not exceed the limit ({limit})")
            if limit >= 0 and period is not None:
                quota = Quota(limit, period, min(offset, limit))
        if name is not None:
            plans.append(UsagePlan(name, stages, throttle, quota, where))
    return plans


def _read_api_keys(r: _Reader, value: Any) -> list[ApiKeyConfig]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.error("apiKeys", "must be a list")
        return []
    keys = []
    for i, item in enumerate(value):
        where = f"apiKeys[{i}]"
        obj = r.mapping(item, where, ("name", "description", "value", "usagePlans", "enabled"))
        if not obj:
            continue
        name = r.string(obj, "name", where, required=True)
        if name is not None and not 1 <= len(name) <= 1024:
            r.error(_join(where, "name"), "must be 1 to 1024 characters")
        secret = r.string(obj, "value", where, required=True)
        if secret is not None and not API_KEY_VALUE.match(secret):
            # Never echo the value: it is a secret.
            r.error(_join(where, "value"), f"must be 20 to 128 visible ASCII characters (got {len(secret)} "
                    "characters)")
            secret = None
        plans = _read_name_list(r, obj, "usagePlans", where)
        enabled = r.boolean(obj, "enabled", where, True)
        if name is not None and secret is not None:
            keys.append(ApiKeyConfig(name, secret, plans, enabled, where))
    return keys


# -- response cache (issue 5) -----------------------------------------------------------------------
CACHE_BACKENDS = ("local", "redis")
CACHE_STRATEGIES = ("FAIL_WITH_403", "SUCCEED_WITH_RESPONSE_HEADER", "SUCCEED_WITHOUT_RESPONSE_HEADER")
# AWS's cache cluster sizes (cacheClusterSize, GB); accepted as a byte budget of that many GiB.
AWS_CACHE_SIZES = ("0.5", "1.6", "6.1", "13.5", "28.4", "58.2", "118", "237")
CACHE_TTL_MAX = 3600  # AWS: 0 to 3600 s
CACHE_CAPACITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_CACHE_UNITS = {None: 1, "B": 1, "KB": 10**3, "KiB": 1 << 10, "MB": 10**6, "MiB": 1 << 20, "GB": 10**9,
                "GiB": 1 << 30, "TB": 10**12, "TiB": 1 << 40}
CACHE_KEY_PARAMETER = re.compile(r"^method\.request\.(path|querystring|header|multivaluequerystring|"
                                 r"multivalueheader)\.([^\s.][^\s]*)$")


@dataclass(slots=True)
class StageCacheConfig:
    """A stage's cache (AWS cacheClusterEnabled/Size and the stage-wide method settings)."""

    enabled: bool = True  # the section's presence turns it on; `enabled: false` turns it off
    capacity: int = 1 << 29  # bytes for the whole host (AWS's default size, 0.5 GB)
    ttlInSeconds: int = 300
    requireAuthorizationForCacheControl: bool = True
    unauthorizedCacheControlHeaderStrategy: str = "SUCCEED_WITH_RESPONSE_HEADER"
    invalidationTokens: list[str] = field(default_factory=list)  # fastgw's execute-api:InvalidateCache
    debugHeader: bool = False  # X-Cache: Hit | Miss
    backend: str = "local"  # local: per-worker memory; redis: plus a Redis tier shared by every node
    url: str | None = None  # Redis URL; default: state.url
    timeoutMillis: int = 50  # per Redis operation
    path: str = ""


@dataclass(slots=True)
class RouteCacheConfig:
    """A route's own cache settings (AWS method settings and cacheKeyParameters)."""

    enabled: bool | None = None  # None: GET and HEAD are cached, other methods are not
    ttlInSeconds: int | None = None  # None: the stage's
    keyParameters: list[str] | None = None  # None: the integration's cacheKeyParameters (OpenAPI), if any
    path: str = ""


def _read_capacity(r: _Reader, obj: dict[str, Any], path: str) -> int | None:
    capacity, size = obj.get("capacity"), obj.get("size")
    if capacity is not None and size is not None:
        r.error(_join(path, "size"), "give either capacity or AWS's size, not both")
        return None
    if size is not None:
        text = str(size).strip()
        if isinstance(size, bool) or text not in AWS_CACHE_SIZES:
            r.error(_join(path, "size"), f"must be one of AWS's cache sizes {', '.join(AWS_CACHE_SIZES)} (GB)")
            return None
        return int(float(text) * (1 << 30))
    if capacity is None:
        return None
    match = CACHE_CAPACITY.match(str(capacity)) if not isinstance(capacity, bool) else None
    if match is None:
        r.error(_join(path, "capacity"), "must be a size in bytes, like 67108864, 64MiB or 1.5GB")
        return None
    value = int(float(match.group(1)) * _CACHE_UNITS[match.group(2)])
    if not 64 * 1024 <= value <= 1 << 40:
        r.error(_join(path, "capacity"), "must be between 64KiB and 1TiB")
        return None
    return value


def _read_stage_cache(r: _Reader, value: Any, path: str) -> StageCacheConfig | None:
    if value is None:
        return None
    known = tuple(f for f in StageCacheConfig.__dataclass_fields__ if f not in ("path", "capacity"))
    obj = r.mapping(value, path, (*known, "capacity", "size"))
    d = StageCacheConfig()
    tokens = _read_name_list(r, obj, "invalidationTokens", path)
    for i, token in enumerate(tokens):
        if not API_KEY_VALUE.match(token):  # never echoed: a secret
            r.error(_join(_join(path, "invalidationTokens"), i), "must be 20 to 128 visible ASCII characters")
    backend = r.string(obj, "backend", path, d.backend, choices=CACHE_BACKENDS) or d.backend
    url = r.string(obj, "url", path)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        r.error(_join(path, "url"), f"must be a redis://, rediss:// or unix:// URL; got '{url}'")
    return StageCacheConfig(
        enabled=r.boolean(obj, "enabled", path, d.enabled),
        capacity=_read_capacity(r, obj, path) or d.capacity,
        ttlInSeconds=r.integer(obj, "ttlInSeconds", path, d.ttlInSeconds, 0, CACHE_TTL_MAX),
        requireAuthorizationForCacheControl=r.boolean(obj, "requireAuthorizationForCacheControl", path,
                                                      d.requireAuthorizationForCacheControl),
        unauthorizedCacheControlHeaderStrategy=r.string(
            obj, "unauthorizedCacheControlHeaderStrategy", path, d.unauthorizedCacheControlHeaderStrategy,
            choices=CACHE_STRATEGIES) or d.unauthorizedCacheControlHeaderStrategy,
        invalidationTokens=tokens,
        debugHeader=r.boolean(obj, "debugHeader", path, d.debugHeader),
        backend=backend,
        url=url,
        timeoutMillis=r.integer(obj, "timeoutMillis", path, d.timeoutMillis, 1, 10_000),
        path=path,
    )


def _read_route_cache(r: _Reader, value: Any, path: str) -> RouteCacheConfig | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("enabled", "ttlInSeconds", "keyParameters"))
    enabled = r.boolean(obj, "enabled", path, False) if "enabled" in obj else None
    ttl = r.integer(obj, "ttlInSeconds", path, -1, 0, CACHE_TTL_MAX) if "ttlInSeconds" in obj else None
    params = None
    if "keyParameters" in obj:
        params = _read_name_list(r, obj, "keyParameters", path)
        for i, name in enumerate(params):
            if not CACHE_KEY_PARAMETER.match(name):
                r.error(_join(_join(path, "keyParameters"), i), "must be method.request.path.NAME, "
                        f"method.request.querystring.NAME or method.request.header.NAME; got '{name}'")
    return RouteCacheConfig(enabled, ttl if ttl is None or ttl >= 0 else None, params, path)


def read_config(data: Any) -> tuple[GatewayConfig, list[Problem]]:
    r = _Reader()
    root = r.mapping(data, "", ("version", "server", "apis", "apiMappings", "state", "throttle", "usagePlans",
                                "apiKeys", "functions", "parameters", "upstreams"))
    if data is None:
        r.error("", "the file is empty")
    version = root.get("version", 1)
    if version != 1:
        r.error("version", f"unsupported config format version {version!r} (this fastgw reads version 1)")
    server = _read_server(r, root.get("server"))
    apis: list[Api] = []
    raw_apis = root.get("apis")
    if not isinstance(raw_apis, list) or not raw_apis:
        if data is not None:
            r.error("apis", "must be a non-empty list of APIs")
    else:
        for i, item in enumerate(raw_apis):
            api = _read_api(r, item, f"apis[{i}]")
            if api is not None:
                apis.append(api)
    mappings = _read_mappings(r, root.get("apiMappings"))
    config = GatewayConfig(
        server, apis, mappings,
        state=_read_state(r, root.get("state")),
        throttle=_read_throttle(r, root.get("throttle"), "throttle"),
        usagePlans=_read_usage_plans(r, root.get("usagePlans")),
        apiKeys=_read_api_keys(r, root.get("apiKeys")),
        functions=_read_functions(r, root.get("functions")),
        parameters=r.string_map(root, "parameters", ""),
        upstreams=_read_upstreams(r, root, "upstreams"),
    )
    # The config is returned even with problems, so that compiling can report its own ones too.
    return config, r.problems


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- AWS API definitions: OpenAPI fields, deployments, canaries, functions (issue 6) ----------------
CURRENT_DEPLOYMENT = "current"  # an API's own `routes`, as a deployment a stage or canary can name
INTEGRATION_EXTRAS = ("httpMethod", "payloadFormatVersion", "requestParameters", "requestTemplates", "responses",
                      "responseParameters",
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
    minimumCompressionSize: int | None = None  # kept; compression is not implemented
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


# -- request validation (issue 7) -------------------------------------------------------------------------
ROUTE_VALIDATION = ("requestValidator", "requestParameters", "requestModels")
METHOD_REQUEST_PARAMETER = re.compile(r"^method\.request\.(querystring|header|path)\.([^\s.][^\s]*)$")
MEDIA_TYPE = re.compile(r"^(\$default|[\w.+-]+/[\w.+*-]+)$")


def _read_route_validation(r: _Reader, obj: dict[str, Any], path: str, route: Route) -> None:
    """AWS's method request settings: the validator's name, the parameters (true: required) and the
    body models by media type (a model name, or a JSON Schema written in place)."""
    route.requestValidator = r.string(obj, "requestValidator", path)
    raw = obj.get("requestParameters")
    where = _join(path, "requestParameters")
    if raw is not None and not isinstance(raw, dict):
        r.error(where, 'must map "method.request.querystring|header|path.NAME" to true (required) or false')
    elif raw:
        for key, required in raw.items():
            at = _join(where, str(key))
            if not METHOD_REQUEST_PARAMETER.match(str(key)):
                r.error(at, "must be method.request.querystring.NAME, method.request.header.NAME or "
                        "method.request.path.NAME")
                continue
            if isinstance(required, str) and required.lower() in ("true", "false"):
                required = required.lower() == "true"
            if not isinstance(required, bool):
                r.error(at, "must be true (required) or false")
                continue
            route.requestParameters[str(key)] = required
    raw = obj.get("requestModels")
    where = _join(path, "requestModels")
    if raw is not None and not isinstance(raw, dict):
        r.error(where, "must map media types (application/json, $default) to a model name or a JSON Schema")
    elif raw:
        for media, model in raw.items():
            at = _join(where, str(media))
            if not MEDIA_TYPE.match(str(media)):
                r.error(at, "must be a media type like application/json, or $default")
            elif not isinstance(model, str | dict) or not model:
                r.error(at, "must be a model name (from the API's models) or a JSON Schema")
            else:
                route.requestModels[str(media)] = model
