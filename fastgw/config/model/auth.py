"""Authorizers (issue 15): an API's `authorizers:` and the authorization settings of its routes.

An API's `authorizers` map a name to an authorizer, written either flat (the fields of AWS's
`x-amazon-apigateway-authorizer` object, which is also how fastgw's own configs write them) or as
the OpenAPI security scheme an imported document had (with `x-amazon-apigateway-authorizer` /
`x-amazon-apigateway-authtype` inside; the scheme itself is kept for export):

    type                 jwt | cognito_user_pools | token | request | aws_iam
    identitySource       where the identity is: "$request.header.Authorization" (HTTP APIs),
                         "method.request.header.Authorization" (REST), a list or a comma-separated text
    jwtConfiguration     {issuer, audience: [..]} (jwt); jwksUri overrides OIDC discovery
    providerARNs         Cognito user pool ARNs (cognito_user_pools); issuer/jwksUri may override them
    algorithms           the JWT signature algorithms accepted (default: the asymmetric ones AWS accepts)
    authorizerUri        the Lambda function (an ARN, an invocation URI or a name bound in `functions:`)
    authorizerResultTtlInSeconds   0..3600, default 300 (Lambda authorizers)
    identityValidationExpression   a regex the token must match before the function is called (token)
    authorizerPayloadFormatVersion "1.0" | "2.0" (HTTP API Lambda authorizers), enableSimpleResponses
    timeoutInMillis      how long a Lambda authorizer may take (default 10000, AWS's)

A route names one in `authorizer:` (with `authorizationScopes:` for jwt and cognito_user_pools), or
sets `authorizationType: AWS_IAM`. A route that requires an authorizer fastgw cannot enforce never
loads: it is a config error, not a route served open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .reader import _join, _kind, _Reader

X = "x-amazon-apigateway-"
AUTHORIZER_TYPES = ("JWT", "COGNITO_USER_POOLS", "TOKEN", "REQUEST", "AWS_IAM")
AUTHORIZATION_TYPES = ("NONE", "AWS_IAM", "CUSTOM", "JWT", "COGNITO_USER_POOLS")
# RFC 7518 asymmetric algorithms (and EdDSA): never `none`, never HMAC, whose key would be public.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
RESULT_TTL_MAX = 3600  # AWS
FLAT_FIELDS = ("type", "identitySource", "jwtConfiguration", "jwksUri", "issuer", "audience", "providerARNs",
               "algorithms", "authorizerUri", "authorizerCredentials", "authorizerResultTtlInSeconds",
               "identityValidationExpression", "authorizerPayloadFormatVersion", "enableSimpleResponses",
               "timeoutInMillis", "name")


@dataclass(slots=True)
class AuthorizerConfig:
    name: str
    type: str  # one of AUTHORIZER_TYPES
    path: str  # where it is in the file
    identitySource: list[str] = field(default_factory=list)  # as written ($request.header.X / method.request...)
    issuer: str | None = None
    audience: list[str] = field(default_factory=list)
    jwksUri: str | None = None
    providerARNs: list[str] = field(default_factory=list)
    algorithms: tuple[str, ...] = JWT_ALGORITHMS
    authorizerUri: str | None = None
    resultTtlInSeconds: int = 300
    identityValidationExpression: str | None = None
    payloadFormatVersion: str = "1.0"
    enableSimpleResponses: bool = False
    timeoutInMillis: int = 10_000


def _sources(r: _Reader, value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    r.error(where, f"must be a text or a list of texts, not {_kind(value)}")
    return []


def _strings(r: _Reader, value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    r.error(where, f"must be a list of texts, not {_kind(value)}")
    return []


def _read_one(r: _Reader, name: str, value: Any, path: str, api_type: str) -> AuthorizerConfig | None:
    """One entry of `authorizers:`; None for an OpenAPI security scheme that is not an authorizer
    (a plain API key scheme) or one already reported."""
    if not isinstance(value, dict):
        r.error(path, f"must be a mapping, not {_kind(value)}")
        return None
    header_name = None
    if any(key.startswith(X) for key in value) or value.get("type") in ("apiKey", "oauth2", "openIdConnect", "http"):
        # an OpenAPI security scheme
        authtype = str(value.get(X + "authtype") or "").lower()
        inner = value.get(X + "authorizer")
        if value.get("in") == "header" and isinstance(value.get("name"), str):
            header_name = value["name"]
        if inner is None:
            if authtype == "awssigv4":
                return AuthorizerConfig(name, "AWS_IAM", path)
            if value.get("type") == "apiKey" and authtype in ("", "apikey"):
                return None  # an API key scheme: apiKeyRequired, not an authorizer
            # An OpenAPI scheme fastgw has no way to enforce: kept; a route that requires it is refused.
            return AuthorizerConfig(name, f"UNSUPPORTED:{value.get('type')}", path)
        path = _join(path, X + "authorizer")
        value = inner
        if not isinstance(value, dict):
            r.error(path, f"must be a mapping, not {_kind(value)}")
            return None
    obj = r.mapping(value, path, FLAT_FIELDS)
    kind = str(obj.get("type") or "").upper()
    if kind in ("IAM", "AWSSIGV4"):
        kind = "AWS_IAM"
    if kind not in AUTHORIZER_TYPES:
        r.error(_join(path, "type"), f"must be one of {', '.join(t.lower() for t in AUTHORIZER_TYPES)}; "
                f"got '{obj.get('type')}'")
        return None
    config = AuthorizerConfig(name, kind, path)
    sources = _sources(r, obj.get("identitySource"), _join(path, "identitySource"))
    if not sources:
        if kind == "TOKEN" or kind == "COGNITO_USER_POOLS" or (kind == "JWT" and api_type == "REST"):
            sources = [f"method.request.header.{header_name or 'Authorization'}"]
        elif kind == "JWT":
            sources = ["$request.header.Authorization"]
        elif kind == "REQUEST" and api_type == "HTTP" and obj.get("authorizerResultTtlInSeconds", 0):
            r.error(_join(path, "identitySource"), "is required when results are cached (AWS)")
    config.identitySource = sources
    if kind in ("JWT", "COGNITO_USER_POOLS"):
        jwt = r.mapping(obj.get("jwtConfiguration"), _join(path, "jwtConfiguration"), ("issuer", "audience"))
        config.issuer = r.string(jwt, "issuer", _join(path, "jwtConfiguration")) or r.string(obj, "issuer", path)
        config.audience = _strings(r, jwt.get("audience", obj.get("audience")),
                                   _join(path, "jwtConfiguration.audience"))
        config.jwksUri = r.string(obj, "jwksUri", path)
        config.providerARNs = _strings(r, obj.get("providerARNs"), _join(path, "providerARNs"))
        if kind == "JWT":
            if config.issuer is None:
                r.error(_join(path, "jwtConfiguration.issuer"), "is required")
            if not config.audience:
                r.error(_join(path, "jwtConfiguration.audience"), "is required (a list of audiences or client ids)")
        elif not config.providerARNs and config.issuer is None:
            r.error(_join(path, "providerARNs"), "is required (or give issuer and jwksUri)")
        algorithms = _strings(r, obj.get("algorithms"), _join(path, "algorithms"))
        for algorithm in algorithms:
            if algorithm not in JWT_ALGORITHMS:
                r.error(_join(path, "algorithms"), f"'{algorithm}' is not accepted (one of {', '.join(JWT_ALGORITHMS)}:"
                        " `none` and HMAC algorithms never are, since the verification key is public)")
        if algorithms:
            config.algorithms = tuple(algorithms)
    if kind in ("TOKEN", "REQUEST"):
        config.authorizerUri = r.string(obj, "authorizerUri", path, required=True)
        config.resultTtlInSeconds = r.integer(obj, "authorizerResultTtlInSeconds", path, 300, 0, RESULT_TTL_MAX)
        config.timeoutInMillis = r.integer(obj, "timeoutInMillis", path, 10_000, 50, 30_000)
        expression = r.string(obj, "identityValidationExpression", path)
        if expression is not None:
            try:
                re.compile(expression)
            except re.error as exc:
                r.error(_join(path, "identityValidationExpression"), f"not a valid regular expression: {exc}")
            config.identityValidationExpression = expression
        version = r.string(obj, "authorizerPayloadFormatVersion", path, "2.0" if api_type == "HTTP" else "1.0",
                           choices=("1.0", "2.0"))
        config.payloadFormatVersion = version or "1.0"
        if api_type != "HTTP" and config.payloadFormatVersion == "2.0":
            r.error(_join(path, "authorizerPayloadFormatVersion"), "2.0 exists only in HTTP APIs")
        config.enableSimpleResponses = r.boolean(obj, "enableSimpleResponses", path, False)
        if config.enableSimpleResponses and config.payloadFormatVersion != "2.0":
            r.error(_join(path, "enableSimpleResponses"), "needs authorizerPayloadFormatVersion 2.0 (AWS)")
        if kind == "TOKEN" and len(sources) != 1:
            r.error(_join(path, "identitySource"), "a token authorizer reads exactly one header")
    return config


def read_authorizers(r: _Reader, value: Any, path: str, api_type: str) -> dict[str, AuthorizerConfig]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(path, f"must be a mapping of names to authorizers, not {_kind(value)}")
        return {}
    out = {}
    for name, entry in value.items():
        config = _read_one(r, str(name), entry, _join(path, str(name)), api_type)
        if config is not None:
            out[str(name)] = config
    return out


@dataclass(slots=True)
class RouteAuth:
    """A route's authorization settings as written."""

    authorizationType: str = "NONE"  # NONE | AWS_IAM | CUSTOM | JWT | COGNITO_USER_POOLS
    authorizer: str | None = None
    authorizationScopes: list[str] = field(default_factory=list)
    path: str = ""


ROUTE_AUTH_FIELDS = ("authorizer", "authorizationScopes", "authorizationType")


def read_route_auth(r: _Reader, obj: dict[str, Any], path: str) -> RouteAuth | None:
    if not any(key in obj for key in ROUTE_AUTH_FIELDS):
        return None
    kind = r.string(obj, "authorizationType", path, choices=AUTHORIZATION_TYPES)
    name = r.string(obj, "authorizer", path)
    scopes = _strings(r, obj.get("authorizationScopes"), _join(path, "authorizationScopes"))
    if kind is None:
        kind = "CUSTOM" if name is not None else "NONE"
    if kind == "NONE" and (name is not None or scopes):
        r.error(_join(path, "authorizationType"), "is NONE but the route names an authorizer")
    if kind == "AWS_IAM" and name is not None:
        r.error(_join(path, "authorizer"), "authorizationType AWS_IAM uses no named authorizer")
    if kind in ("CUSTOM", "JWT", "COGNITO_USER_POOLS") and name is None:
        r.error(_join(path, "authorizer"), f"is required with authorizationType {kind}")
    return RouteAuth(kind, name, scopes, path)
