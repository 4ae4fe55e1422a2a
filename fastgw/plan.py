"""The compiled plan: the plain objects the request path reads.

`fastgw/compile.py` builds them once from a validated config; the pipeline, the integrations and the
policies only read them. Each route's `integration` is the plan of its integration type
(fastgw/integrations/), and `usage`, `cache`, `validator` the compiled parts of its per-request
policies (fastgw/policies/); this module only names their types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._accel import Router
from .config.model import CURRENT_DEPLOYMENT, Route, ServerConfig
from .errors import GatewayResponses

if TYPE_CHECKING:
    from .policies.cache.stage import CacheSetup, RouteCache
    from .policies.compression import CompressionPlan
    from .policies.cors import CorsPlan
    from .policies.usage.plan import RouteUsage, UsageSetup
    from .tracing import TracePlan
    from .upstream import UpstreamPool


@dataclass(slots=True)
class ApiPlan:
    name: str
    type: str
    aws_compat: bool
    encoded_slashes: str
    responses: GatewayResponses
    cors: CorsPlan | None = None  # preflights answered by the gateway (HTTP APIs, native cors:)
    compression: CompressionPlan | None = None  # minimumCompressionSize (fastgw/policies/compression.py)


@dataclass(slots=True, eq=False)  # identity hash: the metrics key requests by it
class RoutePlan:
    api: ApiPlan
    stage: str
    key: str  # "GET /items/{id}"; the metrics label
    method: str
    resource_path: str  # "/items/{id}"; AWS's $context.resourcePath
    integration: Any  # HttpProxyPlan, FunctionPlan, ...; None only in a config that failed to compile
    usage: RouteUsage | None = None  # API key / throttle / quota checks; None: the route has none
    model: Route | None = None  # the config's route (its deployment's, for a stage bound to one)
    cache: RouteCache | None = None  # the stage cache (issue 5); None: not cached
    validator: Any = None  # fastgw/policies/validation.py RequestValidator; None: nothing to validate
    served: bool = True  # False: the integration is not run by fastgw (answers 501; never cached)
    authorizer: Any = None  # fastgw/policies/authorizers: the route's compiled authorizer; None: open


@dataclass(slots=True, eq=False)  # identity hash: the metrics key requests by it
class StagePlan:
    api: ApiPlan
    name: str
    variables: dict[str, str]
    router: Router
    routes: list[RoutePlan]
    deployment: str = CURRENT_DEPLOYMENT
    canary: StagePlan | None = None  # the canary's stage plan (its deployment, overridden variables)
    canary_percent: float = 0.0  # share of requests (0-100) that go to `canary`
    is_canary: bool = False  # this plan is a stage's canary ($context.isCanaryRequest)
    tracing: TracePlan | None = None  # X-Ray header / OTLP export (fastgw/tracing.py); None: not traced
    websocket: WsStagePlan | None = None  # a WebSocket API's stage (its routes; `router` has @connections)


# -- WebSocket APIs (issue 16; run by fastgw/websocket/api.py) ------------------------------------------
# A selection expression: literal text and ("body" | "header" | "context", dotted path) variables.
Selection = list[Any]


@dataclass(slots=True, eq=False)
class WsRoutePlan:
    """One route of a WebSocket API in one stage."""

    key: str  # "$connect", "$default", "sendmessage", ...
    route: RoutePlan  # its authorizer and usage ($connect), metrics labels
    kind: str  # FUNCTION | HTTP_PROXY | HTTP | MOCK
    uri: str  # for display
    function: Any = None  # FUNCTION: its FunctionPlan
    proxy: Any = None  # HTTP_PROXY, HTTP: the HttpProxyPlan (the name `integrations.target_of` reads)
    two_way: bool = False  # routeResponseSelectionExpression: the integration's answer goes to the client
    request_templates: dict[str, Any] = field(default_factory=dict)  # selection key -> compiled VTL
    template_selection: Selection | None = None  # None: the `$default` template
    response_templates: dict[str, Any] = field(default_factory=dict)  # selection key -> compiled VTL
    passthrough: str = "WHEN_NO_MATCH"
    method: str = "POST"  # HTTP_PROXY / HTTP: the integration's httpMethod

    @property
    def handler(self) -> Any:  # the FUNCTION's handler (--watch follows its module)
        return self.function.handler if self.function is not None else None


@dataclass(slots=True)
class WsStagePlan:
    selection: Selection  # the API's routeSelectionExpression
    routes: dict[str, WsRoutePlan]  # custom route keys
    connect: WsRoutePlan | None
    disconnect: WsRoutePlan | None
    default: WsRoutePlan | None
    max_message_bytes: int
    idle_seconds: float
    lifetime_seconds: float
    send_queue_bytes: int
    send_timeout_seconds: float
    allowed_origins: frozenset[str]  # empty: any
    api_id: str


@dataclass(slots=True)
class Plan:
    server: ServerConfig
    interface: str  # "asgi" or "rsgi"
    stages_by_prefix: dict[str, StagePlan]
    default_stage: StagePlan | None  # an HTTP API's $default stage: no path prefix
    # host (None: any host) -> [(base path segments, stage)], longest base path first
    mappings: dict[str | None, list[tuple[tuple[str, ...], StagePlan]]]
    pools: dict[tuple[str, str, int], UpstreamPool] = field(default_factory=dict)
    stages: list[StagePlan] = field(default_factory=list)
    usage: UsageSetup | None = None  # usage plans, API keys, throttles and their state
    cache: CacheSetup | None = None  # stage caches (issue 5)
    authorizers: list[Any] = field(default_factory=list)  # every compiled authorizer (issue 15)
    notes: list[str] = field(default_factory=list)  # load-time warnings (unimplemented OpenAPI fields)
    files: list[str] = field(default_factory=list)  # the files the config was read from
    source: str = ""  # the config file
    data: Any = None  # the native config data it was compiled from (what live reloads publish)
    state: Any = None  # the config's StateConfig (WebSocket APIs: Redis for node-to-node @connections calls)


def route_table(plan: Plan) -> list[dict[str, str]]:
    """Every served route, as `fastgw routes` prints them and the dashboard lists them."""
    rows = []
    for stage in plan.stages:
        name = f"{stage.name} (canary {stage.deployment})" if stage.is_canary else stage.name
        for route in stage.routes:
            integration = route.integration
            kind = route.model.integration.type if route.model is not None and route.model.integration else "-"
            rows.append({
                "api": stage.api.name, "stage": name,
                "prefix": "/" if stage.name == "$default" else f"/{stage.name}",
                "route": route.key,
                "integration": f"{kind} {integration.uri}" if integration is not None else "-",
                "authorizer": "yes" if route.authorizer is not None else "",
            })
    return rows
