"""AWS service integrations (`type: AWS`): not run by fastgw. A route of an imported OpenAPI document
that has one still exists and answers 501 (listed in the load-time warning); in a native config it
is a config error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.loader import Problem
from ..config.model import Api, GatewayConfig, Route, Stage
from ..errors import GatewayError
from .base import IntegrationType

MESSAGE = "AWS service integrations are not run by fastgw"


@dataclass(slots=True)
class UnimplementedPlan:
    """A route whose integration fastgw does not run: 501."""

    kind: str  # AWS
    message: str
    uri: str = ""


def compile_unimplemented(api: Api, route: Route, stage: Stage, variables: dict[str, str], pools: dict,
                          problems: list[Problem], config: GatewayConfig | None) -> UnimplementedPlan | None:
    integration = route.integration
    assert integration is not None
    if api.aws.source is not None:
        return UnimplementedPlan(integration.type, MESSAGE, integration.uri)
    problems.append(Problem(f"{integration.path}.type", MESSAGE))
    return None


async def run_unimplemented(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                            plan: UnimplementedPlan, params: dict[str, str], request_id: str,
                            fill: Any = None) -> tuple[int, int]:
    raise GatewayError("NOT_IMPLEMENTED", plan.message)


AWS = IntegrationType("AWS", compile_unimplemented, ((UnimplementedPlan, run_unimplemented),), served=False)
