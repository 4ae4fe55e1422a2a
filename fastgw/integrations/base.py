"""What every integration type gives the registry (fastgw/integrations/__init__.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..config.loader import Problem
from ..config.model import Api, GatewayConfig, Route, Stage
from ..errors import GatewayError

# compile(api, route, stage, variables, pools, problems, config) -> the integration's plan, or None with
# problems recorded. `pools` is the plan's upstream pools by (scheme, host, port), shared by all routes.
Compile = Callable[[Api, Route, Stage, dict[str, str], dict, list[Problem], GatewayConfig | None], Any]
# run(gateway, down, head, stage, route, route_path, plan, params, request_id, fill) -> (status, bytes sent).
# `fill`: a cache miss (fastgw/policies/cache) that may store the response, or None.
Run = Callable[..., Awaitable[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class IntegrationType:
    name: str  # the config's integration type (HTTP_PROXY, FUNCTION, ...)
    compile: Compile
    runs: tuple[tuple[type, Run], ...]  # each plan class this type compiles to, and how it runs
    served: bool = True  # False: the route exists but answers 501 (AWS service integrations)


@dataclass(frozen=True, slots=True)
class MisconfiguredPlan:
    """awsCompat: an integration AWS deploys but fails when called, because its URI names a stage
    variable the stage does not define. AWS answers each request 500 (reference/aws.md); fastgw does
    the same instead of refusing the config (and warns at load time)."""

    reason: str
    uri: str = ""  # as configured, for `fastgw routes` and the dashboard


async def run_misconfigured(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                            plan: MisconfiguredPlan, params: dict[str, str], request_id: str,
                            fill: Any = None) -> tuple[int, int]:
    raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
