"""The typed config model (native fastgw format) and its validation.

`read_config(data)` turns plain data into the dataclasses of this package, collecting every problem
with its location instead of stopping at the first. Field names follow AWS's (`stageVariables` are
`variables` on a stage, `timeoutInMillis`, `gatewayResponses`, ...).

One module per concern; this package re-exports their public names, so `from fastgw.config.model
import X` is the way to import them:

* `reader`: `_Reader`, which reads typed fields and records each problem, and the shared small readers;
* `server`: the `server` section (`ServerConfig`, `Limits`, `IamConfig`, `TracingConfig`, `UpstreamSettings`,
  `OverloadSettings`), its `FASTGW_*`
  environment variables and `default_workers`;
* `usage`: usage plans, API keys, throttling and state (issue 4);
* `cache`: the response cache (issue 5);
* `validation`: a route's request validation settings (issue 7);
* `api`: APIs, stages, routes, integrations, gateway responses, API mappings and the extras of AWS API
  definitions: OpenAPI fields, deployments, canaries, functions (issue 6);
* `upstreams`: upstream groups (issue 17);
* `document`: the whole document (`GatewayConfig`) and `read_config`.

Imports among them point one way: every module imports `reader`; `cache` imports `usage`; `api`
imports `usage`, `cache` and `validation` (which names api's `Route` for type checking only);
`document` imports `server`, `usage` and `api`.
"""

from .api import (
    API_EXTRAS,
    API_KEY_SOURCES,
    API_NAME,
    API_TYPES,
    CONTENT_HANDLINGS,
    CURRENT_DEPLOYMENT,
    DEPLOYMENT_NAME,
    ENCODED_SLASHES,
    FUNCTION_HANDLER,
    HTTP_METHODS,
    INTEGRATION_EXTRAS,
    INTEGRATION_TYPES,
    PASSTHROUGH_BEHAVIORS,
    PAYLOAD_VERSIONS,
    STAGE_NAME,
    SUPPORTED_API_TYPES,
    SUPPORTED_INTEGRATION_TYPES,
    Api,
    ApiExtras,
    ApiMapping,
    Canary,
    Cors,
    Deployment,
    FunctionSpec,
    GatewayResponseConfig,
    Integration,
    Route,
    Stage,
    WebSocketSettings,
    read_selection,
)
from .auth import AUTHORIZATION_TYPES, AUTHORIZER_TYPES, JWT_ALGORITHMS, AuthorizerConfig, RouteAuth
from .cache import (
    AWS_CACHE_SIZES,
    CACHE_BACKENDS,
    CACHE_CAPACITY,
    CACHE_KEY_PARAMETER,
    CACHE_STRATEGIES,
    CACHE_TTL_MAX,
    RouteCacheConfig,
    StageCacheConfig,
)
from .document import GatewayConfig, read_config
from .reader import ROUTE_KEY
from .server import (
    INTERFACES,
    IamConfig,
    Limits,
    OverloadSettings,
    ServerConfig,
    TracingConfig,
    UpstreamSettings,
    default_workers,
    env_name,
    websocket_address,
)
from .upstreams import BALANCES, GroupTarget, HealthCheck, OutlierDetection, UpstreamGroup
from .usage import (
    API_KEY_VALUE,
    AWS_METHOD_PATH,
    FAIL_MODES,
    QUOTA_MAX,
    QUOTA_PERIODS,
    STATE_BACKENDS,
    ApiKeyConfig,
    Quota,
    RedisTls,
    StateConfig,
    Throttle,
    UsagePlan,
    UsagePlanStage,
    method_throttle_key,
)
from .validation import BUILTIN_VALIDATORS, MEDIA_TYPE, METHOD_REQUEST_PARAMETER, ROUTE_VALIDATION

__all__ = [
    "WebSocketSettings",
    "read_selection",
    "AUTHORIZATION_TYPES",
    "AUTHORIZER_TYPES",
    "AuthorizerConfig",
    "JWT_ALGORITHMS",
    "RouteAuth",
    "BUILTIN_VALIDATORS",
    # reader
    "ROUTE_KEY",
    # server
    "INTERFACES", "IamConfig", "Limits", "OverloadSettings", "ServerConfig", "TracingConfig", "UpstreamSettings",
    "default_workers", "env_name", "websocket_address",
    # usage
    "API_KEY_VALUE", "AWS_METHOD_PATH", "FAIL_MODES", "QUOTA_MAX", "QUOTA_PERIODS", "STATE_BACKENDS",
    "ApiKeyConfig", "Quota", "RedisTls", "StateConfig", "Throttle", "UsagePlan", "UsagePlanStage",
    "method_throttle_key",
    # cache
    "AWS_CACHE_SIZES", "CACHE_BACKENDS", "CACHE_CAPACITY", "CACHE_KEY_PARAMETER", "CACHE_STRATEGIES",
    "CACHE_TTL_MAX", "RouteCacheConfig", "StageCacheConfig",
    # validation
    "MEDIA_TYPE", "METHOD_REQUEST_PARAMETER", "ROUTE_VALIDATION",
    # api
    "API_EXTRAS", "API_KEY_SOURCES", "API_NAME", "API_TYPES", "CONTENT_HANDLINGS", "CURRENT_DEPLOYMENT",
    "DEPLOYMENT_NAME", "ENCODED_SLASHES", "FUNCTION_HANDLER", "HTTP_METHODS", "INTEGRATION_EXTRAS",
    "INTEGRATION_TYPES", "PASSTHROUGH_BEHAVIORS", "PAYLOAD_VERSIONS", "STAGE_NAME", "SUPPORTED_API_TYPES",
    "SUPPORTED_INTEGRATION_TYPES", "Api", "ApiExtras", "ApiMapping", "Canary", "Cors", "Deployment",
    "FunctionSpec", "GatewayResponseConfig", "Integration", "Route", "Stage",
    # document
    "GatewayConfig", "read_config",
    "BALANCES", "GroupTarget", "HealthCheck", "OutlierDetection", "UpstreamGroup",
]
