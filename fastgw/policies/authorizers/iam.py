"""AWS_IAM authorization: SigV4 signatures by the credentials the gateway trusts."""

from __future__ import annotations

from typing import Any

from ...config.loader import Problem
from ...config.model import Api, AuthorizerConfig, GatewayConfig


def compile_iam(config: GatewayConfig, authorizer: AuthorizerConfig, api: Api, stage: Any,
                problems: list[Problem]) -> Any:
    # Fail closed until the verifier lands: a route that requires AWS_IAM does not load.
    where = next((r.auth.path for r in api.routes if r.auth is not None and r.auth.authorizationType == "AWS_IAM"),
                 api.path)
    problems.append(Problem(where, "AWS_IAM authorization is not enforced yet, so this route cannot be served"))
    return None
