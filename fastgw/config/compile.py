"""Compiling a validated config into the plain objects the request path reads (the Plan).

Everything that can be decided before a request arrives is decided here: stage variables are
substituted into integration URIs, URIs are split into an upstream (scheme, host, port) and a path
template, routers are built per stage, gateway responses are merged, and the server interface
(ASGI or RSGI) is chosen. A problem found here is reported with its place in the file, like the
problems `read_config` finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .._accel import Router, Template
from ..cache import CacheSetup, RouteCache, compile_cache
from ..errors import GatewayResponseOverride, GatewayResponses
from ..state.plan import RouteUsage, UsageSetup, compile_usage
from ..upstream import UpstreamPool
from .loader import ConfigError, Document, Problem, resolve_env
from .model import CURRENT_DEPLOYMENT, Api, GatewayConfig, Route, ServerConfig, Stage, read_config

STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")
ROUTE_PARAM = re.compile(r"\{([^{}]+?)\+?\}")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
# Integration types compiled below; the others are kept in the model for the issues that bring them.
NOT_YET = {
    "AWS": "AWS service integrations are not run by fastgw",
}


@dataclass(slots=True)
class HttpProxyPlan:
    """An HTTP_PROXY integration of one route in one stage."""

    pool: UpstreamPool
    host_header: str
    path_template: Template | None  # None when the path has no placeholders
    static_path: str  # the path (and fixed query) when there is no template
    uri_query: str  # query string written in the URI itself, sent before the client's
    timeout: float
    uri: str  # for display
    method: str | None = None  # the integration's httpMethod when it differs from the client's (AWS)


@dataclass(slots=True)
class UnimplementedPlan:
    """A route of an imported OpenAPI document whose integration fastgw does not run (AWS service
    integrations): 501."""

    kind: str  # AWS
    message: str
    uri: str = ""


@dataclass(slots=True)
class ApiPlan:
    name: str
    type: str
    aws_compat: bool
    encoded_slashes: str
    responses: GatewayResponses
    cors: Any = None  # fastgw/cors.py CorsPlan: preflights answered by the gateway (HTTP APIs, native cors:)


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
    validator: Any = None  # fastgw/validation.py RequestValidator; None: nothing to validate


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
    notes: list[str] = field(default_factory=list)  # load-time warnings (unimplemented OpenAPI fields)
    files: list[str] = field(default_factory=list)  # the files the config was read from
    source: str = ""  # the config file
    data: Any = None  # the native config data it was compiled from (what live reloads publish)


def _pool_for(plan_pools: dict[tuple[str, str, int], UpstreamPool], scheme: str, host: str, port: int,
              connect_timeout: float) -> UpstreamPool:
    key = (scheme, host, port)
    pool = plan_pools.get(key)
    if pool is None:
        pool = plan_pools[key] = UpstreamPool(scheme, host, port, connect_timeout)
    else:
        pool.connect_timeout = min(pool.connect_timeout, connect_timeout)
    return pool


def substitute_stage_variables(text: str, stage: Stage, where: str, problems: list[Problem],
                               variables: dict[str, str] | None = None) -> str | None:
    """`${stageVariables.NAME}` replaced; None (problems recorded) when a variable or value is missing."""
    values = stage.variables if variables is None else variables
    missing: list[str] = []

    def stage_variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            missing.append(name)
            return ""
        return values[name]

    result = STAGE_VARIABLE.sub(stage_variable, text)
    for name in missing:
        problems.append(Problem(where, f"stage '{stage.name}' has no variable '{name}'"))
    if missing:
        return None
    unknown = PLACEHOLDER.search(result)
    if unknown is not None:
        name = unknown.group(1)
        if re.match(r"^[A-Za-z_][\w:.-]*$", name) and not name.startswith(("env:", "context.", "stageVariables.")):
            problems.append(Problem(where, f"'{text}' needs the value of '{name}': give it with --param "
                                    f"{name}=VALUE (or parameters: in the config)"))
        else:
            problems.append(Problem(where, f"unknown reference in '{text}' (only ${{stageVariables.NAME}} and route "
                                    "parameters like {id} are substituted)"))
        return None
    return result


def rewrite_upstream(uri: str, upstreams: dict[str, str]) -> str:
    """`upstreams:` / --upstream FROM=TO: the longest matching prefix of the URI is replaced."""
    best = ""
    for prefix in upstreams:
        if uri.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return upstreams[best] + uri[len(best):] if best else uri


def mapped_path_parameters(template: str, request_parameters: dict[str, str]) -> str:
    """REST `integration.request.path.X: method.request.path.Y` renames `{X}` in the URI to `{Y}`."""
    for target, source in request_parameters.items():
        if target.startswith("integration.request.path.") and source.startswith("method.request.path."):
            name = target[len("integration.request.path."):]
            value = source[len("method.request.path."):]
            if name != value:
                template = template.replace("{" + name + "}", "{" + value + "}").replace(
                    "{" + name + "+}", "{" + value + "+}")
    return template


def _compile_http_proxy(route: Route, stage: Stage, pools: dict, problems: list[Problem],
                        upstreams: dict[str, str] | None = None,
                        variables: dict[str, str] | None = None) -> HttpProxyPlan | None:
    integration = route.integration
    assert integration is not None
    where = f"{integration.path}.uri"
    uri = substitute_stage_variables(integration.uri, stage, where, problems, variables)
    if uri is None:
        return None
    if upstreams:
        uri = rewrite_upstream(uri, upstreams)
    if integration.requestParameters:
        uri = mapped_path_parameters(uri, integration.requestParameters)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        problems.append(Problem(where, f"not a valid URI '{uri}': {exc}"))
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(Problem(where, f"must be an absolute http:// or https:// URI; got '{uri}'"))
        return None
    if "{" in parts.netloc or "}" in parts.netloc:
        problems.append(Problem(where, "route parameters may appear only in the path and query of the URI"))
        return None
    if parts.username or parts.password:
        problems.append(Problem(where, "credentials in the URI are not supported; use a header mapping"))
        return None
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    default_port = 443 if parts.scheme == "https" else 80
    host_in_header = f"[{host}]" if ":" in host else host
    host_header = host_in_header if port == default_port else f"{host_in_header}:{port}"

    path = parts.path or "/"
    route_params = {m.group(1) for m in ROUTE_PARAM.finditer(route.template)}
    try:
        template = Template(path)
    except ValueError as exc:
        problems.append(Problem(where, f"bad placeholder in the URI path: {exc}"))
        return None
    unknown = [n for n in template.names if n not in route_params]
    if unknown:
        problems.append(Problem(where, f"the URI uses {', '.join('{' + n + '}' for n in unknown)}, "
                                f"which the route '{route.key}' does not define"))
        return None
    if "{" in parts.query:
        problems.append(Problem(where, "route parameters in the URI query are not supported yet"))
        return None
    pool = _pool_for(pools, parts.scheme, host, port, integration.connectTimeoutInMillis / 1000)
    return HttpProxyPlan(
        pool=pool,
        host_header=host_header,
        path_template=template if template.names else None,
        static_path=path,
        uri_query=parts.query,
        timeout=integration.timeoutInMillis / 1000,
        uri=uri,
        method=integration.httpMethod if integration.httpMethod not in (None, "ANY", route.method) else None,
    )


def _compile_integration(api: Api, route: Route, stage: Stage, pools: dict, problems: list[Problem],
                         config: GatewayConfig | None, variables: dict[str, str]) -> Any:
    """The compiled integration of one route in one stage, by type."""
    integration = route.integration
    assert integration is not None
    kind = integration.type
    upstreams = config.upstreams if config is not None else {}
    if kind == "HTTP_PROXY":
        proxy = _compile_http_proxy(route, stage, pools, problems, upstreams, variables)
        if proxy is not None and api.type == "HTTP" and (integration.requestParameters or
                                                         integration.responseParameters):
            from ..parammap import MappedProxyPlan, compile_mapping

            mapping = compile_mapping(integration.requestParameters, integration.responseParameters,
                                      integration.path, problems)
            if mapping is not None:
                return MappedProxyPlan(proxy, mapping, proxy.uri)
        return proxy
    if kind == "FUNCTION":
        from ..functions import compile_function

        return compile_function(api, route, stage, variables, config.functions if config is not None else {},
                                problems, config.parameters if config is not None else {})
    if kind in ("HTTP", "FUNCTION_CUSTOM", "MOCK"):
        # REST non-proxy integrations: mapping templates, parameter mappings, integration responses
        from ..nonproxy import compile_nonproxy

        proxy = function = None
        if kind == "HTTP":
            proxy = _compile_http_proxy(route, stage, pools, problems, upstreams, variables)
            if proxy is None:
                return None
        elif kind == "FUNCTION_CUSTOM":
            from ..functions import compile_function

            function = compile_function(api, route, stage, variables, config.functions if config is not None
                                        else {}, problems, config.parameters if config is not None else {})
            if function is None:
                return None
        return compile_nonproxy(route, kind, proxy, function, problems)
    message = NOT_YET.get(kind, f"integration type {kind} is not implemented yet")
    if api.aws.source is not None:
        # An imported document: the route exists (and answers 501), listed in the load-time warning.
        return UnimplementedPlan(kind, message, integration.uri)
    problems.append(Problem(f"{integration.path}.type", message))
    return None


def _compile_stage(api: Api, api_plan: ApiPlan, stage: Stage, pools: dict, problems: list[Problem],
                   config: GatewayConfig | None = None, routes: list[Route] | None = None,
                   variables: dict[str, str] | None = None, deployment: str = CURRENT_DEPLOYMENT) -> StagePlan:
    router = Router()
    plans: list[RoutePlan] = []
    seen: dict[tuple[str, str], str] = {}
    variables = stage.variables if variables is None else variables
    for route in api.routes if routes is None else routes:
        integration = None
        if route.integration is not None:
            integration = _compile_integration(api, route, stage, pools, problems, config, variables)
        plan = RoutePlan(api_plan, stage.name, route.key, route.method, route.template or "$default", integration,
                         model=route)
        if route.method == "$default":
            if ("$default", "") in seen:
                problems.append(Problem(f"{route.path}.route", f"duplicate route: same as {seen[('$default', '')]}"))
                continue
            seen[("$default", "")] = route.path
            router.set_default(plan)
        else:
            # Two templates that differ only in parameter names are the same route.
            shape = ROUTE_PARAM.sub(lambda m: "{+}" if m.group(0).endswith("+}") else "{}", route.template)
            shape = shape.rstrip("/") or "/"
            if (route.method, shape) in seen:
                problems.append(Problem(f"{route.path}.route",
                                        f"duplicate route: '{route.key}' is the same as {seen[(route.method, shape)]}"))
                continue
            try:
                router.add(route.method, route.template, plan)
            except ValueError as exc:
                problems.append(Problem(f"{route.path}.route", str(exc)))
                continue
            seen[(route.method, shape)] = f"{route.path} '{route.key}'"
        if integration is not None:
            plans.append(plan)
    return StagePlan(api_plan, stage.name, variables, router, plans, deployment)


def _deployment_routes(api: Api, name: str | None) -> list[Route]:
    if name is None or name == CURRENT_DEPLOYMENT:
        return api.routes
    deployment = api.deployments.get(name)
    return deployment.routes if deployment is not None else []


def _compile_stage_with_canary(api: Api, api_plan: ApiPlan, stage: Stage, pools: dict, problems: list[Problem],
                               config: GatewayConfig) -> tuple[StagePlan, StagePlan | None]:
    """The stage's plan (its deployment) and, with a canary, the canary's plan (the canary deployment,
    the stage variables with the canary's overrides)."""
    base = _compile_stage(api, api_plan, stage, pools, problems, config, _deployment_routes(api, stage.deployment),
                          None, stage.deployment or CURRENT_DEPLOYMENT)
    canary = stage.canary
    if canary is None:
        return base, None
    variables = {**stage.variables, **canary.stageVariableOverrides}
    plan = _compile_stage(api, api_plan, stage, pools, problems, config, _deployment_routes(api, canary.deployment),
                          variables, canary.deployment or CURRENT_DEPLOYMENT)
    plan.is_canary = True
    base.canary = plan
    base.canary_percent = canary.percentTraffic
    return base, plan


def _responses(api: Api) -> GatewayResponses:
    overrides = {
        kind: GatewayResponseOverride(
            status=spec.statusCode,
            headers=tuple((k.lower(), v) for k, v in spec.headers.items()),
            body=spec.body,
        )
        for kind, spec in api.gatewayResponses.items()
    }
    return GatewayResponses(overrides)


def compile_config(config: GatewayConfig) -> tuple[Plan | None, list[Problem]]:
    problems: list[Problem] = []
    pools: dict[tuple[str, str, int], UpstreamPool] = {}
    stages_by_prefix: dict[str, StagePlan] = {}
    prefix_owner: dict[str, str] = {}
    default_stage: StagePlan | None = None
    by_name: dict[tuple[str, str], StagePlan] = {}
    all_stages: list[StagePlan] = []
    api_names: dict[str, str] = {}

    for api in config.apis:
        if api.name in api_names:
            message = f"duplicate API name '{api.name}' (also {api_names[api.name]})"
            problems.append(Problem(f"{api.path}.name", message))
            continue
        api_names[api.name] = api.path
        from ..cors import compile_cors

        api_plan = ApiPlan(api.name, api.type, api.awsCompat, api.encodedSlashes, _responses(api),
                           compile_cors(api.aws.cors))
        # Route template problems are the same in every stage: report them once.
        reported = len(problems)
        for stage in api.stages:
            stage_problems: list[Problem] = []
            stage_plan, canary_plan = _compile_stage_with_canary(api, api_plan, stage, pools, stage_problems, config)
            known = {str(p) for p in problems[reported:]}
            for p in stage_problems:
                if str(p) not in known:
                    known.add(str(p))
                    problems.append(p)
            by_name[(api.name, stage.name)] = stage_plan
            all_stages.append(stage_plan)
            if canary_plan is not None:
                all_stages.append(canary_plan)
            if api.disableExecuteApiEndpoint:
                continue
            if stage.name == "$default":
                if default_stage is not None:
                    problems.append(Problem(stage.path, f"only one API can have a $default stage without an "
                                            f"apiMapping (also API '{default_stage.api.name}')"))
                else:
                    default_stage = stage_plan
            elif stage.name in stages_by_prefix:
                problems.append(Problem(stage.path, f"stage path /{stage.name} is also used by API "
                                        f"'{prefix_owner[stage.name]}'; give one of them an apiMapping and "
                                        "disableExecuteApiEndpoint: true"))
            else:
                stages_by_prefix[stage.name] = stage_plan
                prefix_owner[stage.name] = api.name

    mappings: dict[str | None, list[tuple[tuple[str, ...], StagePlan]]] = {}
    seen_mappings: set[tuple[str | None, str]] = set()
    for mapping in config.apiMappings:
        target = by_name.get((mapping.api, mapping.stage))
        if target is None:
            problems.append(Problem(mapping.path, f"no API '{mapping.api}' with a stage '{mapping.stage}'"))
            continue
        if (mapping.domainName, mapping.basePath) in seen_mappings:
            problems.append(Problem(mapping.path, "duplicate domainName and basePath"))
            continue
        seen_mappings.add((mapping.domainName, mapping.basePath))
        base = tuple(s for s in mapping.basePath.split("/") if s)
        mappings.setdefault(mapping.domainName, []).append((base, target))
    for entries in mappings.values():
        entries.sort(key=lambda entry: -len(entry[0]))

    interface = config.server.interface
    raw_path_apis = [a.name for a in config.apis if a.encodedSlashes != "DECODE"]
    if interface == "auto":
        interface = "asgi" if raw_path_apis else "rsgi"
    elif interface == "rsgi" and raw_path_apis:
        problems.append(Problem("server.interface", "rsgi cannot see encoded slashes (%2F) in paths; set "
                                f"encodedSlashes: DECODE on API(s) {', '.join(raw_path_apis)} or use asgi/auto"))
    usage, usage_problems = compile_usage(config, all_stages)
    problems.extend(usage_problems)
    cache, cache_problems = compile_cache(config, all_stages)
    problems.extend(cache_problems)
    from ..validation import compile_validation

    problems.extend(compile_validation(config, all_stages))
    if problems:
        return None, problems
    plan = Plan(config.server, interface, stages_by_prefix, default_stage, mappings, pools, all_stages, usage,
                cache=cache)
    return plan, []


def load_plan(document: Document | Any, options: Any = None) -> Plan:
    """Validate and compile a parsed document (native, or OpenAPI: see fastgw/openapi/source.py);
    raise ConfigError with every problem found."""
    from ..openapi.source import expand

    document = expand(document, options)
    from ..deployments import overlay

    if not document.overlaid:
        document.data = overlay(document.data, document.source)  # canary changes made at run time
    problems: list[Problem] = []
    data = resolve_env(document.data, "", problems)
    # A missing environment variable leaves a hole that compiling would only report again as
    # an odd URI or address: stop after the reading problems then.
    env_missing = bool(problems)
    config, found = read_config(data)
    problems.extend(found)
    plan = None
    if config.functions:
        from ..functions import add_search_path

        add_search_path(document.source)
    if not env_missing:
        plan, found = compile_config(config)
        known = {(p.path, p.message) for p in problems}
        problems.extend(p for p in found if (p.path, p.message) not in known)
    if problems or plan is None:
        raise ConfigError(document.source, [document.locate(p) for p in problems])
    if plan.usage is not None:
        plan.usage.resolve_dir(document.source)
    plan.notes = document.warnings
    if plan.server.limits.keepAliveIdleMs is not None:
        plan.notes.append("server.limits.keepAliveIdleMs is not applied: granian closes an idle keep-alive "
                          "connection after server.limits.headerReadTimeoutMs")
    plan.files = document.files
    plan.source = document.source
    plan.data = document.data
    return plan
