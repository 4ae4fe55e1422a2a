"""Authorizers (issue 15): who may call a route, checked before every other policy.

    jwt.py      JWT authorizers (HTTP APIs) and Cognito user pools (REST): signature by the issuer's
                JWKS (OIDC discovery), iss/aud/exp/nbf/iat, scopes; a verified token is remembered
    custom.py   Lambda (custom) authorizers, TOKEN and REQUEST: a Python handler bound like FUNCTION
                integrations, its IAM policy or simple response, a result cache
    iam.py      AWS_IAM: SigV4 signatures by the credentials the gateway trusts
    base.py     the Authorization they assert, identity sources, refusals

`compile_authorizers` gives each route that requires authorization its compiled authorizer
(`RoutePlan.authorizer`), one per API authorizer and stage, shared by the stage's routes. Fail closed:
a route that requires an authorizer fastgw cannot enforce (an unknown scheme, a missing handler, no
trusted IAM credentials) is a config error; it is never served open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...config.loader import Problem
from ...config.model import Api, AuthorizerConfig, GatewayConfig
from . import custom, iam, jwt
from .base import Authorization

# authorizer type -> compile(config, authorizer, api, stage plan, problems) -> compiled authorizer | None
COMPILERS: dict[str, Callable[..., Any]] = {
    "JWT": jwt.compile_jwt,
    "COGNITO_USER_POOLS": jwt.compile_jwt,
    "TOKEN": custom.compile_custom,
    "REQUEST": custom.compile_custom,
    "AWS_IAM": iam.compile_iam,
}
IAM = AuthorizerConfig("AWS_IAM", "AWS_IAM", "")


def _required(api: Api, route: Any) -> AuthorizerConfig | None | str:
    """The authorizer config a route requires; None: none; a text: why the route cannot load."""
    auth = route.auth
    if auth is None or auth.authorizationType == "NONE":
        return None
    if auth.authorizationType == "AWS_IAM":
        return IAM
    config = api.authorizers.get(auth.authorizer or "")
    if config is None:
        raw = api.aws.authorizers.get(auth.authorizer or "")
        if raw is not None:
            return (f"requires security scheme '{auth.authorizer}', which is not an authorizer fastgw can "
                    "enforce (an API key scheme is apiKeyRequired)")
        known = ", ".join(api.authorizers) or "none"
        return f"names authorizer '{auth.authorizer}', which the API does not define (authorizers: {known})"
    if config.type.startswith("UNSUPPORTED:"):
        return (f"requires security scheme '{config.name}' ({config.type.split(':', 1)[1]}) with no "
                "x-amazon-apigateway-authorizer: fastgw cannot enforce it, so the route is not served")
    if auth.authorizationScopes and config.type not in ("JWT", "COGNITO_USER_POOLS"):
        return f"authorizationScopes apply to jwt and cognito_user_pools authorizers, not {config.type.lower()}"
    return config


def compile_authorizers(config: GatewayConfig, stages: list[Any]) -> tuple[list[Any], list[Problem]]:
    """Attach the compiled authorizer to every route plan that requires one; returns every compiled
    authorizer (load_plan gives them the state directory) and the problems."""
    problems: list[Problem] = []
    every: list[Any] = []
    apis = {api.name: api for api in config.apis}
    reported: set[str] = set()
    for stage_plan in stages:
        api = apis.get(stage_plan.api.name)
        if api is None:
            continue
        compiled: dict[str, Any] = {}
        for route_plan in stage_plan.routes:
            route = route_plan.model
            if route is None:
                continue
            required = _required(api, route)
            if required is None:
                continue
            where = route.auth.path if route.auth is not None else route.path
            if isinstance(required, str):
                if where not in reported:
                    reported.add(where)
                    problems.append(Problem(where, required))
                continue
            authorizer = compiled.get(required.name)
            if authorizer is None and required.name not in compiled:
                found: list[Problem] = []
                authorizer = COMPILERS[required.type](config, required, api, stage_plan, found)
                for problem in found:
                    if f"{problem.path}|{problem.message}" not in reported:
                        reported.add(f"{problem.path}|{problem.message}")
                        problems.append(problem)
                compiled[required.name] = authorizer
                if authorizer is not None:
                    every.append(authorizer)
            if authorizer is None:
                continue  # its problems are reported: the config does not load
            route_plan.authorizer = authorizer.for_route(route_plan, route.auth)
    return every, problems


__all__ = ["COMPILERS", "Authorization", "compile_authorizers"]
