"""FUNCTION integrations (AWS_PROXY): Python callables run as Lambda functions.

A route's integration URI names a Lambda function (`arn:aws:apigateway:REGION:lambda:path/2015-03-31/
functions/arn:aws:lambda:REGION:ACCOUNT:function:NAME/invocations`, the function's own ARN, or a plain
name, any of them possibly with `${stageVariables.x}`); the `functions:` table (or `--function
NAME=module:function`) maps that name to a Python handler `handler(event, context)`.

    event     AWS's proxy event: payload 1.0 (REST APIs, and HTTP APIs that ask for it) or 2.0
              (HTTP APIs' default); see build_event_v1 / build_event_v2 (reference/aws.md c.1, c.2)
    context   a Lambda-like context object (aws_request_id, function_name, get_remaining_time_in_millis())
    run       `async def` handlers are awaited on the worker's event loop; plain handlers run in a
              bounded thread pool per worker (FASTGW_FUNCTION_THREADS, default 64), so a slow handler
              never blocks the loop and many requests run at once
    result    mapped per c.3 (map_result_v1 / map_result_v2); an exception or a malformed result is
              502 {"message": "Internal server error"}; the function's timeout (default 3 s, Lambda's)
              is 504
    headers   the event carries the client's headers as AWS's engine sees them, and the result's
              headers go through AWS's rules (fastgw/integrations/headers.py): framing fields never,
              invalid fields dropped, REST awsCompat remaps (x-amzn-Remapped-Date, ...). A REST
              `requestParameters` header mapping is not applied to the event (AWS sends those to
              Lambda's Invoke call, not in the event) but one AWS refuses fails as on AWS: 500
              (awsCompat) or a config error

Handlers are imported when the config is compiled (in the main process, so a missing module is a
config error with its location); a handler module whose file changed is re-imported on reload.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import orjson

from ..config.loader import Problem
from ..config.model import Api, GatewayConfig, Route, Stage
from ..errors import GatewayError
from ..events import Call, aws_rest_paths, build_event_v1, build_event_v2, matches_binary
from ..handlers import FunctionPlan, compile_function, invoke
from ..httpsyntax import media_type
from .base import IntegrationType
from .headers import FAIL, client_headers, request_rule, response_rules

log = logging.getLogger("fastgw.functions")

V1_RESULT_KEYS = frozenset(("statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"))


def malformed(reason: str) -> GatewayError:
    log.error("Lambda proxy integration: %s", reason)
    return GatewayError("INTEGRATION_FAILURE", "Internal server error")


# -- compile time -----------------------------------------------------------------------------------


# -- the context object -----------------------------------------------------------------------------


# -- events ---------------------------------------------------------------------------------------


# -- results --------------------------------------------------------------------------------------
def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(type(value).__name__)


def _status(value: Any) -> int:
    if isinstance(value, bool):
        raise malformed("statusCode must be a number")
    if isinstance(value, int):
        status = value
    elif isinstance(value, str) and value.strip().isdigit():
        status = int(value)
    else:
        raise malformed(f"statusCode must be a number, not {type(value).__name__}")
    if not 100 <= status <= 599:
        raise malformed(f"statusCode {status} is not an HTTP status")
    return status


def _body(result: dict[str, Any], decode: bool) -> bytes:
    body = result.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise malformed(f"body must be a string, not {type(body).__name__}")
    if result.get("isBase64Encoded") and decode:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise malformed("isBase64Encoded is true but the body is not base64") from None
    return body.encode("utf-8")


def map_result_v1(plan: FunctionPlan, result: Any, accept: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Payload 1.0 result: {statusCode, headers, multiValueHeaders, body, isBase64Encoded}; anything
    else is a malformed result (502)."""
    if not isinstance(result, dict):
        raise malformed(f"the function returned {type(result).__name__}, not an object with statusCode")
    extra = set(result) - V1_RESULT_KEYS
    if extra:
        raise malformed(f"unexpected field(s) {', '.join(sorted(extra))} in the function's result")
    if "statusCode" not in result:
        raise malformed("the function's result has no statusCode")
    status = _status(result["statusCode"])
    merged: dict[str, list[str]] = {}
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise malformed("headers and multiValueHeaders must be objects")
    try:
        for name, value in single.items():
            merged[str(name)] = [_header_value(value)]
        for name, values in multi.items():
            if not isinstance(values, list):
                raise malformed(f"multiValueHeaders.{name} must be a list")
            merged[str(name)] = [_header_value(v) for v in values]  # multiValueHeaders wins
    except TypeError as exc:
        raise malformed(f"a header value must be a string, not {exc}") from None
    headers = [(name, value) for name, values in merged.items() for value in values]
    content_type = ""
    for name, value in headers:
        if name.lower() == "content-type":
            content_type = media_type(value)
    if plan.http_api:
        decode = True
    else:
        first_accept = media_type(accept.split(",", 1)[0]) if accept else ""
        decode = matches_binary(first_accept, plan.binary_types) or matches_binary(content_type, plan.binary_types)
    body = _body(result, decode)
    if not content_type:
        headers.append(("content-type", "application/json"))
    return status, headers, body


def map_result_v2(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Payload 2.0 result: the structured form when it has statusCode; otherwise the output itself is the
    JSON body of a 200 (a string is the body as is)."""
    if isinstance(result, dict) and "statusCode" in result:
        status = _status(result["statusCode"])
        raw = result.get("headers") or {}
        if not isinstance(raw, dict):
            raise malformed("headers must be an object")
        try:
            headers = [(str(k), _header_value(v)) for k, v in raw.items()]
        except TypeError as exc:
            raise malformed(f"a header value must be a string, not {exc}") from None
        cookies = result.get("cookies") or []
        if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
            raise malformed("cookies must be a list of strings")
        headers.extend(("set-cookie", cookie) for cookie in cookies)
        body = _body(result, True)
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("content-type", "application/json"))
        return status, headers, body
    if isinstance(result, str):
        body = result.encode("utf-8")
    else:
        try:
            body = orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise malformed(f"the function's result is not JSON: {exc}") from None
    return 200, [("content-type", "application/json")], body


# -- running handlers --------------------------------------------------------------------------------


async def run(plan: FunctionPlan, call: Call, stage_prefix: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Build the event, run the function, map its result: (status, headers, body)."""
    if plan.version == "2.0":
        result = await invoke(plan, build_event_v2(plan, call))
        return map_result_v2(result)
    result = await invoke(plan, build_event_v1(plan, call, stage_prefix))
    accept = ""
    for name, value in call.headers:
        if name == "accept":
            accept = value
            break
    return map_result_v1(plan, result, accept)


# FunctionPlan.static key: the route has a request header mapping AWS refuses (each call is a 500)
REFUSED_MAPPING = "refusedHeaderMapping"


def compile_proxy_function(api: Api, route: Route, stage: Stage, variables: dict[str, str], pools: dict,
                           problems: list[Problem], config: GatewayConfig | None) -> FunctionPlan | None:
    plan = compile_function(api, route, stage, variables, config.functions if config is not None else {},
                            problems, config.parameters if config is not None else {})
    integration = route.integration
    if plan is None or integration is None or api.type != "REST":
        return plan
    refused = False
    for target in integration.requestParameters:
        if not target.startswith("integration.request.header."):
            continue  # not applied to a Lambda proxy event (AWS)
        verdict, message = request_rule(target[len("integration.request.header."):].lower(), "FUNCTION",
                                        api.awsCompat)
        if message is not None:
            problems.append(Problem(f"{integration.path}.requestParameters.{target}", message))
        refused = refused or verdict == FAIL
    if refused:
        plan.static[REFUSED_MAPPING] = True
    return plan


async def run_function(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                       plan: FunctionPlan, params: dict[str, str], request_id: str,
                       fill: Any = None) -> tuple[int, int]:
    api = stage.api
    if REFUSED_MAPPING in plan.static:
        log.error("a request header mapping of %s is refused (AWS reserves the header): 500", route.key)
        raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
    body = await gateway.read_whole_body(down, head)
    path = down.path
    prefix = f"/{stage.name}"
    stage_prefix = prefix if path == prefix or path.startswith(prefix + "/") else ""
    rest_compat = api.type == "REST" and api.aws_compat
    call = Call(down.method, path, route_path, down.query, client_headers(down.headers, rest_compat), down.client,
                down.protocol, head.host, request_id, params, body, stage.is_canary, getattr(down, "auth", None))
    if rest_compat and plan.version == "1.0":
        call.resource_path, call.context_path, greedy = aws_rest_paths(path, prefix, plan.static["resource"])
        if greedy is not None:
            name = plan.static["resource"].rsplit("{", 1)[1][:-2]
            call.params = {**params, name: greedy}
            call.raw_params = frozenset((name,))
    status, headers, payload = await run(plan, call, stage_prefix)
    headers = response_rules(api.type, api.aws_compat, "FUNCTION").finish(headers, api.name)
    return await gateway.answer(down, status, headers, payload, request_id, fill)


FUNCTION = IntegrationType("FUNCTION", compile_proxy_function, ((FunctionPlan, run_function),))
