"""Lambda (custom) authorizers: TOKEN and REQUEST, on REST and HTTP APIs (reference/aws.md c.5).

The authorizer is a Python handler bound like a FUNCTION integration's (`functions:` or --function,
sync or async, with `timeoutInMillis`). Per request:

    identity    every identity source must have a value, else 401 without calling the function; a
                TOKEN's value must match identityValidationExpression (a full match), else 401
    cache       keyed by the authorizer, its stage and the identity values (REST and HTTP, as AWS), for
                authorizerResultTtlInSeconds (default 300, 0: off): the function's *output* is kept, and
                evaluated again for each request, so an Allow for one method is never reused for a
                method the policy does not allow. Each worker keeps recent outputs in memory; the node's
                workers share them through the state directory's SQLite file (fastgw/state/results.py)
    call        the event AWS sends (TOKEN, REQUEST 1.0, HTTP 2.0); `raise Exception("Unauthorized")` ->
                401; any other exception or the timeout -> 500 AUTHORIZER_FAILURE (fail closed)
    output      an IAM policy (principalId, policyDocument, context, usageIdentifierKey) evaluated as
                AWS does: `execute-api:Invoke` on the method ARN, `*` and `?` wildcards, an explicit
                Deny wins, no Allow -> 403; a context value that is not a string, number or boolean ->
                500 AUTHORIZER_CONFIGURATION_ERROR. HTTP APIs with enableSimpleResponses: {isAuthorized,
                context}
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from ... import metrics
from ...config.loader import Problem
from ...config.model import Api, AuthorizerConfig, GatewayConfig
from ...config.stagevars import substitute_stage_variables
from ...context import DEFAULT_ACCOUNT, DEFAULT_REGION, api_id, build_context, resource_id
from ...errors import GatewayError
from ...events import Call, build_event_v1, build_event_v2
from ...handlers import FunctionFailed, FunctionPlan, bind_function, invoke
from ...state.results import ResultStore
from .base import Authorization, Counted, IdentitySource, compile_sources, source_values, unauthorized

log = logging.getLogger("fastgw.authorizers")

WORKER_CACHE_ENTRIES = 10_000
Statement = tuple[str, tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...]]  # effect, actions, resources
EXPLICIT_DENY = "User is not authorized to access this resource with an explicit deny"
NO_ALLOW = "User is not authorized to access this resource"


class CustomAuthorizer:
    """One Lambda authorizer of one API stage (shared by the stage's routes)."""

    def __init__(self, config: AuthorizerConfig, api: Api, stage_name: str, variables: dict[str, str],
                 function: FunctionPlan, sources: tuple[IdentitySource, ...], region: str, account: str):
        self.config = config
        self.name = config.name
        self.kind = config.type  # TOKEN | REQUEST
        self.api_type = api.type
        self.api_name = api.name
        self.stage_name = stage_name
        self.variables = variables
        self.function = function
        self.sources = sources
        self.needs_context = any(source.where == "context" for source in sources)
        self.pattern = re.compile(config.identityValidationExpression) \
            if config.identityValidationExpression is not None else None
        self.ttl = float(config.resultTtlInSeconds)
        self.version = config.payloadFormatVersion
        self.simple = config.enableSimpleResponses
        self.arn_prefix = f"arn:aws:execute-api:{region}:{account}:{api_id(api.name)}/{stage_name}/"
        self.cache_tag = f"{api.name}\x1f{stage_name}\x1f{config.name}\x1f"
        self.account = account
        self.recent: OrderedDict[tuple[str, ...], tuple[float, Any]] = OrderedDict()  # this worker's outputs
        self.store: ResultStore | None = None  # the node's (set when the state directory is known)

    def attach_state(self, state_dir: str) -> None:
        """The node's shared result cache lives in the config's state directory."""
        if self.ttl > 0:
            self.store = ResultStore(state_dir)

    def for_route(self, route_plan: Any, route_auth: Any) -> CustomRoute:
        resource = route_plan.resource_path
        static = {"accountId": self.account, "apiId": api_id(self.api_name), "stage": self.stage_name,
                  "resource": resource, "resourceId": resource_id(self.api_name, resource),
                  "routeKey": route_plan.key, "stageVariables": dict(self.variables) or None,
                  "operationName": None}
        plan = dataclasses.replace(self.function, static=static, http_api=self.api_type == "HTTP",
                                   version=self.version)
        return CustomRoute(self, plan)

    # -- the result cache ---------------------------------------------------------------------------------
    def stored_key(self, key: tuple[str, ...]) -> str:
        """The node store's key of an identity (the worker's memory uses the identity values themselves;
        JSON keeps values that contain the separator apart)."""
        return hashlib.sha256(self.cache_tag.encode() + orjson.dumps(key)).hexdigest()

    def cached(self, key: tuple[str, ...]) -> Any:
        """The output remembered for `key` (checked and compiled), or None."""
        if self.ttl <= 0:
            return None
        now = time.time()
        found = self.recent.get(key)
        if found is not None:
            if found[0] > now:
                return found[1]
            del self.recent[key]
        if self.store is not None:
            stored = self.store.get(self.stored_key(key), now)  # another worker of this node called it
            if stored is not None:
                expires, raw = stored
                try:
                    output = prepare(raw, self.simple)
                except ValueError:
                    return None
                self._keep(key, (expires, output))
                return output
        return None

    def remember(self, key: tuple[str, ...], raw: Any, output: Any) -> None:
        if self.ttl <= 0:
            return
        expires = time.time() + self.ttl
        self._keep(key, (expires, output))
        if self.store is not None:
            self.store.put(self.stored_key(key), expires, raw)

    def _keep(self, key: tuple[str, ...], entry: tuple[float, Any]) -> None:
        self.recent[key] = entry
        if len(self.recent) > WORKER_CACHE_ENTRIES:
            self.recent.popitem(last=False)


class CustomRoute(Counted):
    """A Lambda authorizer as one route uses it."""

    def __init__(self, authorizer: CustomAuthorizer, plan: FunctionPlan):
        super().__init__((authorizer.api_name, authorizer.stage_name, authorizer.name))
        self.authorizer = authorizer
        self.plan = plan

    def check(self, down: Any, head: Any, stage: Any, route: Any, route_path: str, params: dict[str, str],
              request_id: str) -> Any:
        a = self.authorizer
        context = None
        if a.needs_context:
            context = build_context(down, head.host, stage, route, route_path, request_id)
        values = source_values(a.sources, down, stage, context)
        if values is None:
            self.count("missing")
            log.debug("authorizer %s: an identity source is missing or empty (401)", a.name)
            raise unauthorized()
        if a.pattern is not None and a.pattern.fullmatch(values[0]) is None:
            self.count("invalid")
            log.debug("authorizer %s: the token does not match identityValidationExpression (401)", a.name)
            raise unauthorized()
        method_arn = "" if a.simple else a.arn_prefix + down.method + "/" + route_path.lstrip("/")
        key = tuple(values)
        output = a.cached(key)
        if output is not None:
            hits = self.hits.counts
            hits[None] = hits.get(None, 0) + 1
            return self.decide(output, method_arn)
        return self.call(down, head, stage, route_path, params, request_id, values, method_arn, key)

    async def call(self, down: Any, head: Any, stage: Any, route_path: str, params: dict[str, str], request_id: str,
                   values: list[str], method_arn: str, key: tuple[str, ...]) -> Authorization:
        a = self.authorizer
        method_arn = method_arn or a.arn_prefix + down.method + "/" + route_path.lstrip("/")
        event = self.event(down, head, stage, route_path, params, request_id, values, method_arn)
        started = time.perf_counter()
        try:
            output = await invoke(self.plan, event, capture_errors=True, log_errors=False)
        except GatewayError as exc:  # the function's timeout
            self.count("error")
            log.warning("authorizer %s failed: %s", a.name, exc.kind)
            raise GatewayError("AUTHORIZER_FAILURE") from None
        finally:
            metrics.AUTHORIZER_DURATION.labels(*self.labels).observe(time.perf_counter() - started)
        if isinstance(output, FunctionFailed):
            if str(output.exc) == "Unauthorized":
                self.count("unauthorized")
                log.debug("authorizer %s: Unauthorized", a.name)
                raise unauthorized()
            self.count("error")
            log.error("authorizer %s raised %s: %s", a.name, type(output.exc).__name__, output.exc,
                      exc_info=output.exc)
            raise GatewayError("AUTHORIZER_FAILURE")
        try:
            prepared = prepare(output, a.simple)
        except ValueError as exc:
            self.count("error")
            log.warning("authorizer %s returned an output AWS would refuse: %s", a.name, exc)
            raise GatewayError("AUTHORIZER_CONFIGURATION_ERROR") from None
        a.remember(key, output, prepared)
        return self.decide(prepared, method_arn)

    def event(self, down: Any, head: Any, stage: Any, route_path: str, params: dict[str, str], request_id: str,
              values: list[str], method_arn: str) -> dict[str, Any]:
        a = self.authorizer
        if a.kind == "TOKEN":
            return {"type": "TOKEN", "authorizationToken": values[0], "methodArn": method_arn}
        path = down.path
        prefix = f"/{stage.name}"
        stage_prefix = prefix if path == prefix or path.startswith(prefix + "/") else ""
        call = Call(down.method, path, route_path, down.query, down.headers, down.client, down.protocol,
                    head.host, request_id, params, b"", stage.is_canary)
        if a.version == "2.0":
            event = build_event_v2(self.plan, call)
            for field in ("body", "isBase64Encoded"):
                event.pop(field, None)
            return {"version": "2.0", "type": "REQUEST", "routeArn": method_arn, "identitySource": values,
                    **{k: v for k, v in event.items() if k != "version"}}
        event = build_event_v1(self.plan, call, stage_prefix)
        for field in ("body", "isBase64Encoded"):
            event.pop(field, None)
        out: dict[str, Any] = {}
        if a.api_type == "HTTP":
            joined = ",".join(values)
            out = {"version": "1.0", "type": "REQUEST", "methodArn": method_arn, "identitySource": joined,
                   "authorizationToken": joined}
        else:
            out = {"type": "REQUEST", "methodArn": method_arn}
        out.update((k, v) for k, v in event.items() if k != "version")
        return out

    # -- the output -------------------------------------------------------------------------------------------
    def decide(self, output: Prepared, method_arn: str) -> Authorization:
        if output.statements is None:  # a simple response
            if output.authorization is None:
                self.count("denied")
                raise GatewayError("ACCESS_DENIED")
            self.count("allowed")
            return output.authorization
        allowed = False
        for effect, actions, resources in output.statements:
            if any(p.fullmatch("execute-api:Invoke") for p in actions) and \
                    any(p.fullmatch(method_arn) for p in resources):
                if effect == "deny":
                    self.count("denied")
                    raise GatewayError("ACCESS_DENIED", EXPLICIT_DENY)
                allowed = True
        if not allowed:
            self.count("denied")
            raise GatewayError("ACCESS_DENIED", NO_ALLOW)
        self.count("allowed")
        assert output.authorization is not None
        return output.authorization


@dataclass(slots=True, frozen=True)
class Prepared:
    """A checked output, ready for `decide`: the compiled statements of an IAM policy (None: a simple
    response) and the Authorization it gives when it allows (None: a simple response that denies).
    Kept in the cache and shared by the requests it answers, so nothing downstream changes it."""

    statements: tuple[Statement, ...] | None
    authorization: Authorization | None


def prepare(output: Any, simple: bool) -> Any:
    """A function's output checked as AWS checks it (ValueError: AUTHORIZER_CONFIGURATION_ERROR), with
    its policy's statements compiled for `decide`."""
    if simple:
        if not isinstance(output, dict) or not isinstance(output.get("isAuthorized"), bool):
            raise ValueError("a simple response needs isAuthorized: true or false")
        if output.get("context") is not None and not isinstance(output["context"], dict):
            raise ValueError("context must be a map")
        allowed = Authorization("lambda", context=output.get("context") or {}) if output["isAuthorized"] else None
        return Prepared(None, allowed)
    if not isinstance(output, dict):
        raise ValueError(f"the output is a {type(output).__name__}, not an object")
    document = output.get("policyDocument")
    if "principalId" not in output or not isinstance(document, dict):
        raise ValueError("the output needs principalId and policyDocument")
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(s, dict) for s in statements):
        raise ValueError("policyDocument.Statement must be a list of statements")
    for statement in statements:
        if str(statement.get("Effect", "")).lower() not in ("allow", "deny") or "Action" not in statement or \
                "Resource" not in statement:
            raise ValueError("each statement needs Effect (Allow|Deny), Action and Resource")
    context = output.get("context")
    if context is not None and (not isinstance(context, dict) or not all(
            isinstance(v, str | int | float | bool) or v is None for v in context.values())):
        raise ValueError("context values must be strings, numbers or booleans")
    if output.get("usageIdentifierKey") is not None and not isinstance(output["usageIdentifierKey"], str):
        raise ValueError("usageIdentifierKey must be a string")
    principal = output.get("principalId")
    authorization = Authorization("lambda", principal_id=None if principal is None else str(principal),
                                  context=output.get("context") or {}, usage_key=output.get("usageIdentifierKey"))
    return Prepared(tuple(_compile_statement(s) for s in statements), authorization)


def _wildcard(text: str, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters, `?` any one."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(pattern, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)



def _compile_statement(statement: dict[str, Any]) -> Statement:
    actions = statement["Action"]
    resources = statement["Resource"]
    actions = actions if isinstance(actions, list) else [actions]
    resources = resources if isinstance(resources, list) else [resources]
    return (str(statement["Effect"]).lower(), tuple(_wildcard(str(a), ignore_case=True) for a in actions),
            tuple(_wildcard(str(r)) for r in resources))


def compile_custom(config: GatewayConfig, authorizer: AuthorizerConfig, api: Api, stage_plan: Any,
                   problems: list[Problem]) -> CustomAuthorizer | None:
    where = f"{authorizer.path}.authorizerUri"
    stage = next((s for s in api.stages if s.name == stage_plan.name), None)
    uri = authorizer.authorizerUri or ""
    if stage is not None:
        substituted = substitute_stage_variables(uri, stage, where, problems, stage_plan.variables)
        if substituted is None:
            return None
        uri = substituted
    if authorizer.type == "TOKEN" and api.type == "HTTP":
        problems.append(Problem(f"{authorizer.path}.type", "HTTP APIs have request authorizers (and jwt), not token"))
        return None
    sources = compile_sources(authorizer.identitySource, f"{authorizer.path}.identitySource", problems)
    if sources is None:
        return None
    if authorizer.type == "TOKEN" and (len(sources) != 1 or sources[0].where != "header"):
        problems.append(Problem(f"{authorizer.path}.identitySource", "a token authorizer reads one header"))
        return None
    function = bind_function(uri, where, config.functions, problems, config.parameters,
                             authorizer.timeoutInMillis / 1000)
    if function is None:
        return None
    parameters = config.parameters or {}
    return CustomAuthorizer(authorizer, api, stage_plan.name, stage_plan.variables, function, sources,
                            parameters.get("AWS::Region", DEFAULT_REGION),
                            parameters.get("AWS::AccountId", DEFAULT_ACCOUNT))
