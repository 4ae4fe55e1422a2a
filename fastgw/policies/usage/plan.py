"""The usage part of the compiled config: throttle levels, usage plans, config API keys.

Everything the request path needs is decided here, once: which throttle levels apply to each
route (gateway-wide, then the stage's per-method setting), which plan a key is bound to in each
stage, the per-key per-method throttles of each plan, and the 64-bit ident of every bucket or
counter in the shared table. A request then costs a few dict lookups and the kernel calls.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..._accel import emission_interval, span
from ...config.loader import Problem
from ...config.model import GatewayConfig, Quota, StateConfig, Throttle
from ...config.overlay import resolve_state_dir
from . import keys as keylib

if TYPE_CHECKING:
    from ...plan import StagePlan

# AWS's account-level default, applied when `awsCompat: true` and no top-level throttle is set.
AWS_ACCOUNT_THROTTLE = Throttle(10_000.0, 5_000)
MAX_PLANS_PER_KEY = 10  # AWS


def ident(*parts: str) -> int:
    """A stable non-zero signed 64-bit id of a bucket or counter in the shared table."""
    raw = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    value = int.from_bytes(raw, "little", signed=True)
    return value or 1


@dataclass(slots=True)
class Level:
    """One throttle bucket that does not depend on the API key."""

    kind: str  # "gateway" | "method" (the stage default or the route's own stage setting)
    name: str  # stable; part of the Redis key
    rate: float
    burst: int
    ident: int = 0
    slot: int = -1  # resolved by each worker against the shared table

    def __post_init__(self) -> None:
        self.ident = ident("level", self.name)


@dataclass(slots=True)
class UsagePlanDef:
    name: str
    throttle: Throttle | None
    quota: Quota | None
    stages: list[tuple[str, str]]
    # (api, stage) -> route key -> per-key throttle of that method
    methods: dict[tuple[str, str], dict[str, Throttle]] = field(default_factory=dict)


@dataclass(slots=True)
class RouteUsage:
    """What the usage stage needs for one route in one stage."""

    api: str
    stage: str
    route: str  # route key, "GET /orders/{id}"
    key_required: bool
    key_source: str  # HEADER | AUTHORIZER
    levels: tuple[Level, ...]  # AWS order: gateway-wide, then stage/method
    stage_key: tuple[str, str]
    # Filled by each worker once slots are known: (slot, interval_ns, tolerance_ns) per level, for
    # SlotTable.admit; [0] with the full limits, [1] with the Redis fallback's share.
    chains: list[tuple[tuple[int, int, int], ...]] = field(default_factory=list)


@dataclass(slots=True)
class ConfigKey:
    id: str
    name: str
    digest: bytes
    plans: tuple[str, ...]
    enabled: bool


@dataclass(slots=True)
class UsageSetup:
    state: StateConfig
    state_dir: str  # absolute once load_plan resolved it against the config file's folder
    plans: dict[str, UsagePlanDef]
    keys: list[ConfigKey]
    # (api, stage) -> names of the plans bound to it
    stage_plans: dict[tuple[str, str], list[str]]
    levels: list[Level]  # every key-independent bucket, for slot resolution
    routes: list[RouteUsage]

    def resolve_dir(self, config_source: str) -> None:
        self.state_dir = resolve_state_dir(self.state_dir, config_source)


def gcra_params(rate: float, burst: int, divisor: int = 1) -> tuple[int, int]:
    """(interval_ns, tolerance_ns) exactly as GcraTable.acquire computes them; tolerance -1 refuses
    everything (a zero rate or burst). `divisor` > 1 gives one node's share of the limit."""
    if divisor > 1:
        rate, burst = rate / divisor, max(1, burst // divisor)
    if not rate > 0 or burst <= 0:
        return 1, -1
    interval = emission_interval(rate)
    return interval, span(interval, burst)


# -- quota periods (UTC) ---------------------------------------------------------------------------
def period_of(kind: str, epoch: float) -> int:
    """The number of the DAY / WEEK (Monday-based) / MONTH that holds `epoch`; never 0 after 1970."""
    days = int(epoch // 86400)
    if kind == "DAY":
        return days + 1
    if kind == "WEEK":
        return (days + 3) // 7 + 1  # 1970-01-01 was a Thursday
    t = time.gmtime(epoch)
    return (t.tm_year - 1970) * 12 + t.tm_mon


def period_bounds(kind: str, period: int) -> tuple[float, float]:
    """[start, end) of a period, in epoch seconds."""
    if kind == "DAY":
        start = (period - 1) * 86400.0
        return start, start + 86400.0
    if kind == "WEEK":
        start = ((period - 1) * 7 - 3) * 86400.0
        return start, start + 7 * 86400.0
    index = period - 1
    year, month = 1970 + index // 12, index % 12 + 1
    start = float(calendar.timegm((year, month, 1, 0, 0, 0)))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return start, float(calendar.timegm((year, month, 1, 0, 0, 0)))


def day_text(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


# -- compiling --------------------------------------------------------------------------------------
def compile_usage(config: GatewayConfig, stages: list[StagePlan]) -> tuple[UsageSetup | None, list[Problem]]:
    """Attach a RouteUsage to every route that needs one; None when nothing usage-related is set."""
    problems: list[Problem] = []
    apis = {api.name: api for api in config.apis}
    routes_by_api = {api.name: {route.key: route for route in api.routes} for api in config.apis}
    stage_cfg = {(api.name, s.name): s for api in config.apis for s in api.stages}

    # Usage plans.
    plans: dict[str, UsagePlanDef] = {}
    stage_plans: dict[tuple[str, str], list[str]] = {}
    for plan in config.usagePlans:
        if plan.name in plans:
            problems.append(Problem(f"{plan.path}.name", f"duplicate usage plan name '{plan.name}'"))
            continue
        compiled = UsagePlanDef(plan.name, plan.throttle, plan.quota, [])
        for entry in plan.apiStages:
            api = apis.get(entry.api)
            if api is None:
                problems.append(Problem(f"{entry.path}.api", f"no API named '{entry.api}'"))
                continue
            if (entry.api, entry.stage) not in stage_cfg:
                problems.append(Problem(f"{entry.path}.stage", f"API '{entry.api}' has no stage '{entry.stage}'"))
                continue
            if api.type not in ("REST", "WEBSOCKET"):
                problems.append(Problem(f"{entry.path}.api", f"API '{entry.api}' is an {api.type} API; usage "
                                        "plans apply to REST and WebSocket APIs (AWS), use stage and route "
                                        "throttles instead"))
                continue
            key = (entry.api, entry.stage)
            if key in compiled.methods:
                problems.append(Problem(entry.path, f"stage {entry.api}/{entry.stage} is listed twice"))
                continue
            for route_key in entry.throttle:
                if route_key not in routes_by_api[entry.api]:
                    problems.append(Problem(f"{entry.path}.throttle.{route_key}",
                                            f"API '{entry.api}' has no route '{route_key}'"))
            compiled.stages.append(key)
            compiled.methods[key] = dict(entry.throttle)
            stage_plans.setdefault(key, []).append(plan.name)
        plans[plan.name] = compiled

    # API keys declared in the config.
    config_keys: list[ConfigKey] = []
    names: dict[str, str] = {}
    digests: dict[bytes, str] = {}
    for key in config.apiKeys:
        if key.name in names:
            problems.append(Problem(f"{key.path}.name", f"duplicate API key name (also {names[key.name]})"))
            continue
        names[key.name] = key.path
        value_digest = keylib.digest(key.value)
        if value_digest in digests:
            # AWS treats two keys with one value as the same key: refuse the ambiguity.
            problems.append(Problem(f"{key.path}.value", f"the same value as {digests[value_digest]}"))
            continue
        digests[value_digest] = key.path
        problems.extend(check_key_plans(key.usagePlans, plans, f"{key.path}.usagePlans"))
        config_keys.append(ConfigKey(keylib.config_key_id(key.name), key.name, value_digest,
                                     tuple(key.usagePlans), key.enabled))

    # Key-independent throttle levels and the per-route usage.
    gateway_throttle = config.throttle
    gateway_level: Level | None = None
    aws_gateway_level: Level | None = None
    if gateway_throttle is not None:
        gateway_level = Level("gateway", "gateway", gateway_throttle.rateLimit, gateway_throttle.burstLimit)
    elif any(api.awsCompat for api in config.apis):
        # AWS's account default, shared by the APIs that ask for AWS behaviour.
        aws_gateway_level = Level("gateway", "gateway", AWS_ACCOUNT_THROTTLE.rateLimit,
                                  AWS_ACCOUNT_THROTTLE.burstLimit)
    levels: list[Level] = [lv for lv in (gateway_level, aws_gateway_level) if lv is not None]
    route_usages: list[RouteUsage] = []
    for stage_plan in stages:
        api_name, stage_name = stage_plan.api.name, stage_plan.name
        api = apis[api_name]
        stage = stage_cfg[(api_name, stage_name)]
        top = gateway_level or (aws_gateway_level if api.awsCompat else None)
        for route_plan in stage_plan.routes:
            # The route as its deployment declares it (a stage or canary may run another deployment).
            route = route_plan.model or routes_by_api[api_name].get(route_plan.key)
            if route is None:
                continue
            if route.apiKeyRequired and api.type not in ("REST", "WEBSOCKET"):
                problems.append(Problem(f"{route.path}.apiKeyRequired",
                                        "API keys apply to REST and WebSocket APIs (AWS)"))
            chosen = route.throttle or stage.throttle
            route_levels: list[Level] = [top] if top is not None else []
            if chosen is not None:
                # AWS applies the stage default to each method separately: one bucket per route.
                level = Level("method", f"{api_name}\x1f{stage_name}\x1f{route.key}", chosen.rateLimit,
                              chosen.burstLimit)
                levels.append(level)
                route_levels.append(level)
            if not route_levels and not route.apiKeyRequired:
                continue
            usage = RouteUsage(api_name, stage_name, route.key, route.apiKeyRequired, api.apiKeySource,
                               tuple(route_levels), (api_name, stage_name))
            route_plan.usage = usage
            route_usages.append(usage)

    if not (route_usages or plans or config_keys or config.throttle):
        return None, problems
    setup = UsageSetup(config.state, config.state.path, plans, config_keys, stage_plans, levels, route_usages)
    return setup, problems


def check_key_plans(plan_names: list[str] | tuple[str, ...], plans: dict[str, UsagePlanDef],
                    where: str) -> list[Problem]:
    """A key's plans must exist, be at most 10, and bind each API stage at most once (AWS)."""
    problems: list[Problem] = []
    if len(plan_names) > MAX_PLANS_PER_KEY:
        problems.append(Problem(where, f"a key can be in at most {MAX_PLANS_PER_KEY} usage plans"))
    bound: dict[tuple[str, str], str] = {}
    for i, name in enumerate(plan_names):
        plan = plans.get(name)
        if plan is None:
            problems.append(Problem(f"{where}[{i}]", f"no usage plan named '{name}'"))
            continue
        for stage in plan.stages:
            if stage in bound and bound[stage] != name:
                problems.append(Problem(f"{where}[{i}]", f"plans '{bound[stage]}' and '{name}' both cover stage "
                                        f"{stage[0]}/{stage[1]}; a key can be in only one plan per stage"))
            bound[stage] = name
    return problems
