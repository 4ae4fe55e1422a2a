"""JWT authorizers (HTTP APIs) and Cognito user pool authorizers (REST APIs)."""

from __future__ import annotations

from typing import Any

from ...config.loader import Problem
from ...config.model import Api, AuthorizerConfig, GatewayConfig


def compile_jwt(config: GatewayConfig, authorizer: AuthorizerConfig, api: Api, stage: Any,
                problems: list[Problem]) -> Any:
    # Fail closed until the verifier lands: a route that requires this authorizer does not load.
    problems.append(Problem(authorizer.path, f"{authorizer.type.lower()} authorizers are not enforced yet, so the "
                            "routes that require this one cannot be served"))
    return None
