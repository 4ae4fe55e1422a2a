"""Lambda proxy events as AWS builds them (reference/aws.md c.1, c.2): payload format 1.0 and 2.0.

FUNCTION integrations send them to their handler (fastgw/integrations/function.py), and Lambda
REQUEST authorizers build their input from them (fastgw/policies/authorizers/custom.py). What an
authorizer asserted (`Call.auth`) appears as `requestContext.authorizer`.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from .context import _clf, _extended_id
from .handlers import FunctionPlan
from .httpsyntax import host_name, media_type

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "application/graphql", "application/x-yaml",
              "application/yaml")


def matches_binary(content_type: str, binary_types: tuple[str, ...]) -> bool:
    """AWS's binaryMediaTypes match: exact, `type/*`, or `*/*`."""
    if not content_type or not binary_types:
        return False
    main = content_type.split("/", 1)[0]
    for pattern in binary_types:
        pattern = pattern.lower()
        if pattern in ("*/*", content_type) or (pattern.endswith("/*") and pattern[:-2] == main):
            return True
    return False


def is_text(content_type: str, body: bytes) -> bool:
    if not content_type:
        try:
            body.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False
    return content_type.startswith(TEXT_TYPES) or content_type.endswith(("+json", "+xml"))


def encode_body(body: bytes, base64_body: bool) -> str:
    if base64_body:
        return base64.b64encode(body).decode("ascii")
    return body.decode("utf-8", errors="replace")


@dataclass(slots=True)
class Call:
    """One request, as the event builders need it."""

    method: str
    path: str  # the request path as received (percent-encoded), stage prefix included
    resource_path: str  # the path within the stage (REST: `path`)
    query: str
    headers: list[tuple[str, str]]  # lower-case names
    source_ip: str
    protocol: str
    host: str
    request_id: str
    params: dict[str, str]
    body: bytes
    is_canary: bool = False
    auth: Any = None  # fastgw/policies/authorizers/base.py Authorization: what the route's authorizer asserted
    context_path: str | None = None  # requestContext.path when it is not stage prefix + resource_path
    raw_params: frozenset[str] = frozenset()  # path parameters AWS delivers still percent-encoded


def aws_rest_paths(raw_path: str, stage_prefix: str, resource: str) -> tuple[str, str, str | None]:
    """A REST Lambda proxy event's `path`, `requestContext.path` and greedy parameter as AWS
    delivers them (tests/data/aws_lambda_proxy_paths.json, recorded on AWS): leading slashes collapse
    to one, slashes inside the path are kept, percent-encoding is kept, and requestContext.path is the
    path as sent. Routing still used the normalised path: this only shapes what the handler sees."""
    context_path = "/" + raw_path.lstrip("/")
    rest = context_path
    if stage_prefix and (rest == stage_prefix or rest.startswith(stage_prefix + "/")):
        rest = rest[len(stage_prefix):]
    path = "/" + rest.lstrip("/")
    greedy = None
    if resource.endswith("+}"):
        fixed = resource.count("/") - 1  # the template's segments before the greedy one
        greedy = "/".join(path[1:].split("/")[fixed:]).rstrip("/")
    return path, context_path, greedy


def _header_maps(headers: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def _query_maps(query: str) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    if not query:
        return None, None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single or None, multi or None


def _domain(host: str) -> tuple[str, str]:
    name = host_name(host)
    return name, name.split(".", 1)[0] if name else ""


def _content_type(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name == "content-type":
            return media_type(value)
    return ""


def build_event_v1(plan: FunctionPlan, call: Call, stage_prefix: str) -> dict[str, Any]:
    """Payload format 1.0 (reference/aws.md c.1)."""
    static = plan.static
    now = time.time()
    single, multi = _header_maps(call.headers)
    query, multi_query = _query_maps(call.query)
    domain, prefix = _domain(call.host)
    body: str | None = None
    base64_body = False
    if call.body:
        content_type = _content_type(call.headers)
        if plan.http_api:
            base64_body = not is_text(content_type, call.body)
        else:
            base64_body = matches_binary(content_type, plan.binary_types)
        body = encode_body(call.body, base64_body)
    context: dict[str, Any] = {
        "accountId": static["accountId"],
        "apiId": static["apiId"],
        "authorizer": {"claims": None, "scopes": None},
        "domainName": domain,
        "domainPrefix": prefix,
        "extendedRequestId": _extended_id(call.request_id),
        "httpMethod": call.method,
        "identity": {
            "accessKey": None, "accountId": None, "caller": None, "cognitoAuthenticationProvider": None,
            "cognitoAuthenticationType": None, "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
            "principalOrgId": None, "sourceIp": call.source_ip, "user": None, "userAgent": single.get("user-agent"),
            "userArn": None, "clientCert": None,
        },
        "path": call.context_path if call.context_path is not None else stage_prefix + call.resource_path,
        "protocol": call.protocol,
        "requestId": call.request_id,
        "requestTime": _clf(now),
        "requestTimeEpoch": int(now * 1000),
        "resourceId": static["resourceId"],
        "resourcePath": static["resource"],
        "stage": static["stage"],
    }
    if call.auth is not None:
        context["authorizer"] = call.auth.event_v1()
        context["identity"].update(call.auth.identity)
    if static["operationName"]:
        context["operationName"] = static["operationName"]
    event: dict[str, Any] = {}
    if plan.http_api:
        event["version"] = "1.0"
    event.update({
        "resource": static["resource"],
        "path": call.resource_path,
        "httpMethod": call.method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "requestContext": context,
        "pathParameters": {k: v if k in call.raw_params else unquote(v) for k, v in call.params.items()} or None,
        "stageVariables": static["stageVariables"],
        "body": body,
        "isBase64Encoded": base64_body,
    })
    return event


def build_event_v2(plan: FunctionPlan, call: Call) -> dict[str, Any]:
    """Payload format 2.0 (reference/aws.md c.2)."""
    static = plan.static
    now = time.time()
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in call.headers:
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    domain, prefix = _domain(call.host)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": static["routeKey"],
        "rawPath": call.path,
        "rawQueryString": call.query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if call.query:
        query: dict[str, str] = {}
        for name, value in parse_qsl(call.query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": static["accountId"],
        "apiId": static["apiId"],
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": call.method,
            "path": call.path,
            "protocol": call.protocol,
            "sourceIp": call.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": call.request_id,
        "routeKey": static["routeKey"],
        **({"authorizer": call.auth.event_v2()} if call.auth is not None else {}),
        "stage": static["stage"],
        "time": _clf(now),
        "timeEpoch": int(now * 1000),
    }
    if call.body:
        base64_body = not is_text(_content_type(call.headers), call.body)
        event["body"] = encode_body(call.body, base64_body)
        event["isBase64Encoded"] = base64_body
    else:
        event["isBase64Encoded"] = False
    if call.params:
        event["pathParameters"] = {k: unquote(v) for k, v in call.params.items()}
    if static["stageVariables"]:
        event["stageVariables"] = static["stageVariables"]
    return event


# -- WebSocket APIs (reference/aws.md c.4; fixtures: conformance/events/aws-lambda-go/apigw-websocket-*) --
@dataclass(slots=True)
class WsCall:
    """One WebSocket event (CONNECT, MESSAGE, DISCONNECT) as the event builder needs it."""

    route_key: str
    event_type: str  # CONNECT | MESSAGE | DISCONNECT
    connection_id: str
    connected_at: int  # epoch ms
    request_id: str  # AWS's form (16 characters ending in '=')
    stage: str
    api_id: str
    domain_name: str
    source_ip: str
    user_agent: str | None
    headers: list[tuple[str, str]] | None = None  # the handshake's (CONNECT, DISCONNECT)
    query: str = ""  # the handshake's (CONNECT)
    message_id: str | None = None  # MESSAGE
    body: str | bytes | None = None  # MESSAGE: a text frame (str) or a binary one (bytes)
    disconnect_code: int | None = None  # DISCONNECT
    disconnect_reason: str = ""
    auth: Any = None  # what the $connect authorizer asserted, on every event of the connection
    stage_variables: dict[str, str] | None = None


def ws_request_context(call: WsCall, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    context: dict[str, Any] = {"routeKey": call.route_key}
    if call.message_id is not None:
        context["messageId"] = call.message_id
    if call.disconnect_code is not None:
        context["disconnectStatusCode"] = call.disconnect_code
    context.update({
        "eventType": call.event_type,
        "extendedRequestId": call.request_id,
        "requestTime": _clf(now),
        "messageDirection": "IN",
    })
    if call.event_type == "DISCONNECT":
        context["disconnectReason"] = call.disconnect_reason
    context.update({
        "stage": call.stage,
        "connectedAt": call.connected_at,
        "requestTimeEpoch": int(now * 1000),
        "identity": {"userAgent": call.user_agent, "sourceIp": call.source_ip},
        "requestId": call.request_id,
        "domainName": call.domain_name,
        "connectionId": call.connection_id,
        "apiId": call.api_id,
    })
    if call.auth is not None:
        context["authorizer"] = call.auth.event_v1()
        if call.auth.identity:  # AWS_IAM on $connect: the signer, as in REST events
            context["identity"].update(call.auth.identity)
    return context


def build_ws_event(call: WsCall) -> dict[str, Any]:
    """The Lambda proxy event of a WebSocket route, in the order and shape AWS sends."""
    event: dict[str, Any] = {}
    if call.headers is not None:
        event["headers"], event["multiValueHeaders"] = _header_maps(call.headers)
    if call.event_type == "CONNECT":
        single, multi = _query_maps(call.query)
        if single is not None:
            event["queryStringParameters"], event["multiValueQueryStringParameters"] = single, multi
    event["requestContext"] = ws_request_context(call)
    if call.stage_variables:
        event["stageVariables"] = call.stage_variables
    binary = isinstance(call.body, bytes)
    if call.event_type == "MESSAGE":
        event["body"] = base64.b64encode(call.body).decode("ascii") if binary else call.body  # type: ignore[arg-type]
    event["isBase64Encoded"] = binary
    return event
