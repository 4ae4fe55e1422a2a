"""What every authorizer shares: the Authorization it asserts, identity sources, refusals.

A compiled authorizer (one per API authorizer and stage) has

    check(down, head, stage, route, route_path, params, request_id)
        -> Authorization | Awaitable[Authorization] | NeedsBody

and raises GatewayError (UNAUTHORIZED, ACCESS_DENIED, AUTHORIZER_FAILURE, ...) to refuse. NeedsBody: the
verdict depends on the request body (SigV4 signs its hash); the pipeline reads the body within the
gateway's limits, calls `finish(body)` and gives the integration the body again. The pipeline
puts the Authorization on the downstream (`down.auth`), where `$context.authorizer.*`,
`$context.identity.*`, Lambda events, usage plans (apiKeySource AUTHORIZER) and the access log read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ... import metrics
from ...config.loader import Problem
from ...errors import GatewayError
from ...httpsyntax import header


@dataclass(slots=True)
class Authorization:
    """What an authorizer asserts about one request (never anything the client wrote itself)."""

    kind: str  # "jwt" | "lambda" | "iam"
    principal_id: str | None = None
    claims: dict[str, Any] | None = None  # JWT / Cognito claims
    scopes: list[str] | None = None  # JWT scopes
    context: dict[str, Any] | None = None  # a Lambda authorizer's context map
    usage_key: str | None = None  # a Lambda authorizer's usageIdentifierKey (apiKeySource AUTHORIZER)
    identity: dict[str, Any] = field(default_factory=dict)  # $context.identity.* (IAM: accessKey, user...)

    def event_v1(self) -> dict[str, Any]:
        """requestContext.authorizer of a payload 1.0 event (REST; HTTP APIs asking for 1.0)."""
        if self.kind == "jwt":
            return {"claims": self.claims, "scopes": self.scopes}
        if self.kind == "iam":
            return {"claims": None, "scopes": None}
        out: dict[str, Any] = {"principalId": self.principal_id}
        for key, value in (self.context or {}).items():
            out[key] = value
        return out

    def event_v2(self) -> dict[str, Any]:
        """requestContext.authorizer of a payload 2.0 event (HTTP APIs)."""
        if self.kind == "jwt":
            return {"jwt": {"claims": self.claims, "scopes": self.scopes}}
        if self.kind == "iam":
            identity = self.identity
            return {"iam": {"accessKey": identity.get("accessKey"), "accountId": identity.get("accountId"),
                            "callerId": identity.get("caller"), "cognitoIdentity": None, "principalOrgId": None,
                            "userArn": identity.get("userArn"), "userId": identity.get("user")}}
        return {"lambda": dict(self.context or {})}

    def context_authorizer(self, stringify: bool) -> dict[str, Any]:
        """$context.authorizer: principalId, claims, scopes and the context keys (REST stringifies
        the Lambda context's values, as AWS does)."""
        out: dict[str, Any] = {"principalId": self.principal_id}
        if self.claims is not None:
            out["claims"] = self.claims
        if self.scopes is not None:
            out["scopes"] = self.scopes
        for key, value in (self.context or {}).items():
            out[key] = _text(value) if stringify else value
        return out


class NeedsBody:
    """An authorizer's answer that waits for the whole request body: `finish(body)` returns the
    Authorization or raises GatewayError."""

    __slots__ = ("finish",)

    def __init__(self, finish: Callable[[bytes], Authorization]):
        self.finish = finish


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) or value is None else str(value)


# -- identity sources --------------------------------------------------------------------------------------
SOURCE = re.compile(r"^(?:\$request\.(header|querystring)\.(.+)|method\.request\.(header|querystring)\.(.+)|"
                    r"\$?(context|stageVariables)\.(.+))$")


@dataclass(slots=True, frozen=True)
class IdentitySource:
    text: str  # as configured
    where: str  # header | querystring | context | stageVariables
    name: str  # lower-case for headers


def compile_sources(sources: list[str], where: str, problems: list[Problem]) -> tuple[IdentitySource, ...] | None:
    out = []
    for text in sources:
        match = SOURCE.match(text.strip())
        if match is None:
            problems.append(Problem(where, f"unknown identity source '{text}' ($request.header.NAME, "
                                    "$request.querystring.NAME, $context.NAME, $stageVariables.NAME; REST: "
                                    "method.request.header|querystring.NAME)"))
            return None
        kind = match.group(1) or match.group(3) or match.group(5)
        name = match.group(2) or match.group(4) or match.group(6)
        out.append(IdentitySource(text.strip(), kind, name.lower() if kind == "header" else name))
    return tuple(out)


def source_values(sources: tuple[IdentitySource, ...], down: Any, stage: Any, context: dict[str, Any] | None
                  ) -> list[str] | None:
    """The value of every identity source, or None when one is missing or empty (AWS then answers 401
    without calling the authorizer)."""
    values = []
    query: dict[str, str] | None = None
    for source in sources:
        value: Any
        if source.where == "header":
            value = header(down.headers, source.name)
        elif source.where == "querystring":
            if query is None:
                query = {}
                for key, item in parse_qsl(down.query, keep_blank_values=True):
                    query[key] = f"{query[key]},{item}" if key in query else item
            value = query.get(source.name)
        elif source.where == "stageVariables":
            value = stage.variables.get(source.name)
        else:
            value = context
            for part in source.name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if value is None or value == "":
            return None
        values.append(str(value))
    return values


def unauthorized(message: str = "Unauthorized", challenge: str | None = None) -> GatewayError:
    headers = (("www-authenticate", challenge),) if challenge else ()
    return GatewayError("UNAUTHORIZED", message if message != "Unauthorized" else None, headers=headers)


class Counted:
    """An authorizer as a route uses it: its decisions and cache hits, counted as plain integers until
    the worker's metrics flush (once a second), so that a remembered decision stays cheap."""

    __slots__ = ("labels", "decisions", "hits")

    def __init__(self, labels: tuple[str, str, str]):
        self.labels = labels
        self.decisions = metrics.PendingCounts(metrics.AUTHORIZER_DECISIONS, labels)
        self.hits = metrics.PendingCounts(metrics.AUTHORIZER_CACHE_HITS, labels)

    def count(self, decision: str) -> None:
        counts = self.decisions.counts
        counts[decision] = counts.get(decision, 0) + 1
