"""Compiling a validated config into the plain objects the request path reads (the Plan).

Everything that can be decided before a request arrives is decided here: stage variables are
substituted into integration URIs, URIs are split into an upstream (scheme, host, port) and a path
template, routers are built per stage, gateway responses are merged, and the server interface
(ASGI or RSGI) is chosen. A problem found here is reported with its place in the file, like the
problems `read_config` finds.
"""

from __future__ import annotations

import logging
from typing import Any

from ._accel import Router
from .accesslog import compile_access_format
from .config.loader import ConfigError, Document, Problem, resolve_env
from .config.model import CURRENT_DEPLOYMENT, Api, GatewayConfig, Route, RouteAuth, Stage, read_config, read_selection
from .config.model.reader import _Reader
from .config.overlay import resolve_state_dir
from .config.stagevars import NO_VARIABLE
from .context import api_id
from .errors import GatewayResponseOverride, GatewayResponses
from .handlers import add_search_path, compile_function
from .integrations import INTEGRATIONS, MisconfiguredPlan
from .integrations.connections import MANAGEMENT_ROUTES, ConnectionsPlan
from .integrations.target import ROUTE_PARAM, compile_target
from .openapi.source import expand
from .plan import ApiPlan, Plan, RoutePlan, StagePlan, WsRoutePlan, WsStagePlan
from .policies.authorizers import compile_authorizers
from .policies.cache.stage import compile_cache
from .policies.compression import compile_compression
from .policies.cors import compile_cors
from .policies.usage.plan import compile_usage
from .policies.validation import compile_validation
from .resolver import read_hosts
from .state.canary import overlay
from .tracing import compile_tracing
from .upstream import UpstreamPool
from .vtl import TemplateError, compile_template

log = logging.getLogger("fastgw")


def _compile_integration(api: Api, route: Route, stage: Stage, pools: dict, problems: list[Problem],
                         config: GatewayConfig | None, variables: dict[str, str]) -> Any:
    """The compiled integration of one route in one stage, by its type's entry in INTEGRATIONS."""
    integration = route.integration
    assert integration is not None
    kind = INTEGRATIONS.get(integration.type)
    if kind is None:
        problems.append(Problem(f"{integration.path}.type", f"integration type {integration.type} is not implemented"))
        return None
    if not api.awsCompat:
        return kind.compile(api, route, stage, variables, pools, problems, config)
    # awsCompat: a stage variable the stage lacks is AWS's run-time 500, not a config error.
    found: list[Problem] = []
    plan = kind.compile(api, route, stage, variables, pools, found, config)
    missing = [p for p in found if p.path == f"{integration.path}.uri" and NO_VARIABLE in p.message]
    if plan is None and missing and len(missing) == len(found):
        log.warning("%s (stage %s): %s; answering 500 as AWS does", route.key, stage.name,
                    "; ".join(p.message for p in missing))
        return MisconfiguredPlan("; ".join(p.message for p in missing), integration.uri)
    problems.extend(found)
    return plan


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
        if route.integration is not None and not INTEGRATIONS[route.integration.type].served:
            plan.served = False
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
        api_plan = ApiPlan(api.name, api.type, api.awsCompat, api.encodedSlashes, _responses(api),
                           compile_cors(api.aws.cors), compile_compression(api.aws.minimumCompressionSize))
        # Route template problems are the same in every stage: report them once.
        reported = len(problems)
        for stage in api.stages:
            stage_problems: list[Problem] = []
            if api.type == "WEBSOCKET":
                stage_plan, canary_plan = _compile_ws_stage(api, api_plan, stage, pools, stage_problems, config), None
            else:
                stage_plan, canary_plan = _compile_stage_with_canary(api, api_plan, stage, pools, stage_problems,
                                                                     config)
            known = {str(p) for p in problems[reported:]}
            for p in stage_problems:
                if str(p) not in known:
                    known.add(str(p))
                    problems.append(p)
            stage_plan.tracing = compile_tracing(stage.tracingEnabled, config.server.tracing)
            if stage.accessLogFormat is not None:
                try:
                    stage_plan.access_format = compile_access_format(stage.accessLogFormat)
                except ValueError as exc:
                    problems.append(Problem(f"{stage.path}.accessLogSettings.format", str(exc)))
            if canary_plan is not None:
                canary_plan.tracing = stage_plan.tracing
                canary_plan.access_format = stage_plan.access_format
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
        # SigV4 signs the path as the client encoded it: only ASGI hands over the raw path (AWS_IAM routes, and
        # a WebSocket API's @connections API). WebSocket API clients have their own listener either way.
        interface = "asgi" if raw_path_apis or any(_signs_paths(a) for a in config.apis) else "rsgi"
    elif interface == "rsgi" and raw_path_apis:
        problems.append(Problem("server.interface", "rsgi cannot see encoded slashes (%2F) in paths; set "
                                f"encodedSlashes: DECODE on API(s) {', '.join(raw_path_apis)} or use asgi/auto"))
    usage, usage_problems = compile_usage(config, all_stages)
    problems.extend(usage_problems)
    cache, cache_problems = compile_cache(config, all_stages)
    problems.extend(cache_problems)
    problems.extend(compile_validation(config, all_stages))
    authorizers, auth_problems = compile_authorizers(config, all_stages)
    problems.extend(auth_problems)
    if problems:
        return None, problems
    plan = Plan(config.server, interface, stages_by_prefix, default_stage, mappings, pools, all_stages, usage,
                cache=cache, authorizers=authorizers)
    plan.state = config.state
    return plan, []


def _signs_paths(api: Api) -> bool:
    """Whether a route of the API requires AWS_IAM (SigV4)."""
    if api.webSocket is not None and api.webSocket.managementAuthorization == "AWS_IAM":
        return True  # the @connections API
    for route in api.routes:
        auth = route.auth
        if auth is not None and (auth.authorizationType == "AWS_IAM" or (
                auth.authorizer in api.authorizers and api.authorizers[auth.authorizer].type == "AWS_IAM")):
            return True
    return False


# -- WebSocket APIs (issue 16) ------------------------------------------------------------------------------
def _compile_ws_stage(api: Api, api_plan: ApiPlan, stage: Stage, pools: dict, problems: list[Problem],
                      config: GatewayConfig) -> StagePlan:
    """A WebSocket API's stage: its routes by key (run by fastgw/websocket/api.py), and a router holding
    the @connections management API (run through the HTTP pipeline, SigV4 like any AWS_IAM route)."""
    settings = api.webSocket
    assert settings is not None
    if stage.canary is not None:
        problems.append(Problem(stage.canary.path, "canaries apply to REST APIs (AWS)"))
    if stage.cache is not None:
        problems.append(Problem(f"{stage.path}.cache", "stage caches apply to REST APIs (AWS)"))
    reader = _Reader()
    selection = read_selection(reader, api.routeSelectionExpression, f"{api.path}.routeSelectionExpression",
                               ("body",)) or []
    router = Router()
    plans: list[RoutePlan] = []
    routes: dict[str, WsRoutePlan] = {}
    for route in api.routes:
        if route.integration is None:
            continue
        route_plan = RoutePlan(api_plan, stage.name, route.key, "WEBSOCKET", route.key, None, model=route)
        ws = _compile_ws_route(api, route, route_plan, stage, pools, problems, config, reader)
        if ws is None:
            continue
        route_plan.integration = ws
        plans.append(route_plan)
        routes[route.key] = ws
    auth = None
    if settings.managementAuthorization == "AWS_IAM":
        auth = RouteAuth("AWS_IAM", None, [], f"{settings.path or api.path + '.webSocket'}.managementAuthorization")
    for method in MANAGEMENT_ROUTES:
        model = Route(f"{method} /@connections/{{connectionId}}", method, "/@connections/{connectionId}", None,
                      f"{api.path}.webSocket", auth=auth)
        plan = RoutePlan(api_plan, stage.name, model.key, method, model.template, ConnectionsPlan(method),
                         model=model)
        router.add(method, model.template, plan)
        plans.append(plan)
    problems.extend(reader.problems)
    custom = {key: ws for key, ws in routes.items() if not key.startswith("$")}
    stage_plan = StagePlan(api_plan, stage.name, stage.variables, router, plans)
    stage_plan.websocket = WsStagePlan(
        selection, custom, routes.get("$connect"), routes.get("$disconnect"), routes.get("$default"),
        settings.maxMessageBytes, settings.idleTimeoutSeconds, settings.maxLifetimeSeconds, settings.sendQueueBytes,
        settings.sendTimeoutSeconds, frozenset(o.lower().rstrip("/") for o in settings.allowedOrigins),
        api_id(api.name))
    return stage_plan


def _compile_ws_route(api: Api, route: Route, route_plan: RoutePlan, stage: Stage, pools: dict,
                      problems: list[Problem], config: GatewayConfig, reader: _Reader) -> WsRoutePlan | None:
    integration = route.integration
    assert integration is not None
    kind = integration.type
    ws = WsRoutePlan(route.key, route_plan, kind, integration.uri or kind,
                     two_way=route.routeResponseSelectionExpression is not None)
    if kind == "FUNCTION":
        ws.function = compile_function(api, route, stage, stage.variables, config.functions, problems,
                                       config.parameters)
        if ws.function is None:
            return None
    elif kind in ("HTTP_PROXY", "HTTP"):
        ws.proxy = compile_target(route, stage, pools, problems, config, stage.variables)
        if ws.proxy is None:
            return None
        ws.method = integration.httpMethod if integration.httpMethod not in (None, "ANY") else "POST"
    if kind in ("HTTP", "MOCK"):
        ws.request_templates = _ws_templates(integration.requestTemplates, f"{integration.path}.requestTemplates",
                                             problems)
        responses = integration.responses.get("$default") if isinstance(integration.responses, dict) else None
        templates = responses.get("responseTemplates") if isinstance(responses, dict) else None
        if isinstance(templates, dict):
            ws.response_templates = _ws_templates(templates, f"{integration.path}.responses.$default."
                                                  "responseTemplates", problems)
        ws.template_selection = read_selection(reader, integration.templateSelectionExpression,
                                               f"{integration.path}.templateSelectionExpression",
                                               ("body", "header", "context"))
        ws.passthrough = integration.passthroughBehavior or "WHEN_NO_MATCH"
    elif integration.requestTemplates or integration.templateSelectionExpression:
        problems.append(Problem(f"{integration.path}.requestTemplates", f"templates apply to HTTP and MOCK "
                                f"integrations; {kind} sends the message as it is"))
    return ws


def _ws_templates(templates: dict[str, Any], where: str, problems: list[Problem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, text in templates.items():
        try:
            out[str(key)] = compile_template("" if text is None else str(text))
        except TemplateError as exc:
            problems.append(Problem(f"{where}.{key}", f"mapping template: {exc}"))
    return out


def load_plan(document: Document | Any, options: Any = None) -> Plan:
    """Validate and compile a parsed document (native, or OpenAPI: see fastgw/openapi/source.py);
    raise ConfigError with every problem found."""
    document = expand(document, options)
    if not document.overlaid:
        document.data = overlay(document.data, document.source)  # canary changes made at run time
    problems: list[Problem] = []
    data = resolve_env(document.data, "", problems)
    # A missing environment variable leaves a hole that compiling would only report again as
    # an odd URI or address: stop after the reading problems then.
    env_missing = bool(problems)
    config, found = read_config(data)
    problems.extend(found)
    if config.server.iam.credentialsFile is not None:  # relative to the config file, like the state directory
        config.server.iam.credentialsFile = resolve_state_dir(config.server.iam.credentialsFile, document.source)
    if config.server.upstream.hostsFile is not None:  # read at every lookup (fastgw/resolver.py)
        config.server.upstream.hostsFile = resolve_state_dir(config.server.upstream.hostsFile, document.source)
        try:
            read_hosts(config.server.upstream.hostsFile)
        except OSError as exc:
            problems.append(Problem("server.upstream.hostsFile", f"cannot read '{config.server.upstream.hostsFile}': "
                                    f"{exc.strerror or exc}"))
    plan = None
    if config.functions:
        add_search_path(document.source)
    if not env_missing:
        plan, found = compile_config(config)
        known = {(p.path, p.message) for p in problems}
        problems.extend(p for p in found if (p.path, p.message) not in known)
    if problems or plan is None:
        raise ConfigError(document.source, [document.locate(p) for p in problems])
    if plan.usage is not None:
        plan.usage.resolve_dir(document.source)
    state_dir = resolve_state_dir(config.state.path, document.source)
    for authorizer in plan.authorizers:
        attach = getattr(authorizer, "attach_state", None)
        if attach is not None:
            attach(state_dir)
    plan.notes = document.warnings
    if plan.server.limits.keepAliveIdleMs is not None:
        plan.notes.append("server.limits.keepAliveIdleMs is not applied: granian closes an idle keep-alive "
                          "connection after server.limits.headerReadTimeoutMs")
    plan.files = document.files
    credentials = config.server.iam.credentialsFile
    if credentials is not None and credentials not in plan.files:
        plan.files = [*plan.files, credentials]  # --watch reloads when the trusted IAM credentials change
    plan.source = document.source
    plan.data = document.data
    return plan
