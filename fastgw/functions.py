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

Handlers are imported when the config is compiled (in the main process, so a missing module is a
config error with its location); a handler module whose file changed is re-imported on reload.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import importlib
import inspect
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from .accesslog import clf_time
from .config.loader import Problem
from .config.model import Api, FunctionSpec, Route, Stage
from .errors import GatewayError

log = logging.getLogger("fastgw.functions")

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
THREADS = int(os.environ.get("FASTGW_FUNCTION_THREADS", "64") or 64)
# Fields fastgw computes itself; a function's values for them are dropped.
RESPONSE_HEADERS_DROPPED = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive",
                                      "upgrade", "proxy-connection", "te", "trailer"))
V1_RESULT_KEYS = frozenset(("statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"))
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "application/graphql", "application/x-yaml",
              "application/yaml")


def malformed(reason: str) -> GatewayError:
    log.error("Lambda proxy integration: %s", reason)
    return GatewayError("INTEGRATION_FAILURE", "Internal server error")


# -- compile time -----------------------------------------------------------------------------------
@dataclass(slots=True)
class FunctionPlan:
    """A FUNCTION integration of one route in one stage."""

    name: str  # the function's name (context.function_name)
    arn: str  # the invoked function's ARN (context.invoked_function_arn)
    handler: Callable[..., Any]
    is_async: bool
    timeout: float  # seconds: the function's own timeout, capped by the integration's
    integration_timeout: float
    version: str  # payload format, "1.0" or "2.0"
    http_api: bool
    memory: int
    uri: str  # for display
    binary_types: tuple[str, ...] = ()  # the API's binaryMediaTypes
    static: dict[str, Any] = field(default_factory=dict)  # event fields fixed for this route and stage


_CONFIG_DIR: list[str] = [os.getcwd()]


def add_search_path(config_source: str) -> None:
    """Handlers are imported relative to the config file's directory (like a SAM CodeUri), then sys.path."""
    directory = os.path.dirname(os.path.abspath(config_source))
    _CONFIG_DIR[0] = directory
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def _code_uri(spec: FunctionSpec) -> str | None:
    """A function's own codeUri directory, first on sys.path; None when it does not exist."""
    if not spec.codeUri:
        return ""
    path = spec.codeUri if os.path.isabs(spec.codeUri) else os.path.join(_CONFIG_DIR[0], spec.codeUri)
    path = os.path.normpath(path)
    if not os.path.isdir(path):
        return None
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    return path


_MODULE_MTIMES: dict[str, float] = {}


def load_handler(spec: str) -> Callable[..., Any]:
    """'package.module:function' -> the callable; a module whose file changed since it was imported is
    re-imported. Raises ValueError with a readable message."""
    module_name, _, attr = spec.partition(":")
    try:
        module = sys.modules.get(module_name)
        if module is not None:
            path = getattr(module, "__file__", None)
            mtime = os.stat(path).st_mtime if path and os.path.exists(path) else None
            if mtime is not None and _MODULE_MTIMES.get(module_name, mtime) != mtime:
                module = importlib.reload(module)
                _MODULE_MTIMES[module_name] = mtime
        else:
            importlib.invalidate_caches()
            module = importlib.import_module(module_name)
            path = getattr(module, "__file__", None)
            if path and os.path.exists(path):
                _MODULE_MTIMES[module_name] = os.stat(path).st_mtime
    except Exception as exc:  # noqa: BLE001 - any import error is a config problem
        raise ValueError(f"cannot import module '{module_name}': {type(exc).__name__}: {exc}") from None
    handler = getattr(module, attr, None)
    if handler is None:
        raise ValueError(f"module '{module_name}' has no '{attr}'")
    if not callable(handler):
        raise ValueError(f"'{spec}' is not callable")
    return handler


def function_ref(uri: str) -> tuple[str, str | None, str]:
    """(function name, qualifier, ARN or '') of an integration URI (Lambda path ARN, function ARN or name)."""
    from .openapi.reader import lambda_function

    arn = lambda_function(uri) or ""
    text = arn or uri
    if arn:
        # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
        parts = arn.split(":")
        name = parts[6] if len(parts) > 6 else text
        qualifier = parts[7] if len(parts) > 7 else None
        return name, qualifier, arn
    name, _, qualifier = text.partition(":")
    return name, qualifier or None, ""


def find_function(uri: str, functions: dict[str, FunctionSpec]) -> FunctionSpec | None:
    name, qualifier, arn = function_ref(uri)
    candidates = [uri, arn]
    if arn and qualifier:
        candidates.append(arn.rsplit(":", 1)[0])
    if qualifier:
        candidates.append(f"{name}:{qualifier}")
    candidates.append(name)
    for candidate in candidates:
        if candidate and candidate in functions:
            return functions[candidate]
    return None


def api_id(name: str) -> str:
    """A stable 10-character id per API, like AWS's."""
    return _short_id(name, 10)


def resource_id(api: str, resource: str) -> str:
    return _short_id(f"{api}\x1f{resource}", 6)


@functools.lru_cache(maxsize=4096)
def _short_id(text: str, size: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    number = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(size):
        number, digit = divmod(number, 36)
        out.append(alphabet[digit])
    return "".join(out)


def compile_function(api: Api, route: Route, stage: Stage, variables: dict[str, str],
                     functions: dict[str, FunctionSpec], problems: list[Problem],
                     parameters: dict[str, str] | None = None) -> FunctionPlan | None:
    from .config.compile import substitute_stage_variables

    integration = route.integration
    assert integration is not None
    where = f"{integration.path}.uri"
    uri = substitute_stage_variables(integration.uri, stage, where, problems, variables)
    if uri is None:
        return None
    spec = find_function(uri, functions)
    name, qualifier, arn = function_ref(uri)
    if spec is None:
        problems.append(Problem(where, f"no handler for Lambda function '{name}': add it to functions: "
                                f"({name}: module:function) or give --function {name}=module:function"))
        return None
    if _code_uri(spec) is None:
        problems.append(Problem(f"{spec.path}.codeUri", f"no directory '{spec.codeUri}'"))
        return None
    try:
        handler = load_handler(spec.handler)
    except ValueError as exc:
        problems.append(Problem(f"{spec.path}.handler", str(exc)))
        return None
    http_api = api.type == "HTTP"
    version = integration.payloadFormatVersion or ("2.0" if http_api else "1.0")
    if version == "2.0" and not http_api:
        problems.append(Problem(f"{integration.path}.payloadFormatVersion", "payload format 2.0 exists only in "
                                "HTTP APIs (REST APIs send 1.0)"))
        return None
    params = parameters or {}
    region = params.get("AWS::Region", DEFAULT_REGION)
    account = params.get("AWS::AccountId", DEFAULT_ACCOUNT)
    if not arn:
        arn = f"arn:aws:lambda:{region}:{account}:function:{name}" + (f":{qualifier}" if qualifier else "")
    resource = route.template or "$default"
    static = {
        "accountId": account,
        "apiId": api_id(api.name),
        "stage": stage.name,
        "resource": resource,
        "resourceId": resource_id(api.name, resource),
        "routeKey": route.key,
        "stageVariables": dict(variables) or None,
        "operationName": (route.operation or {}).get("operationId"),
    }
    timeout = min(spec.timeout, integration.timeoutInMillis / 1000)
    return FunctionPlan(
        name=name, arn=arn, handler=handler, is_async=inspect.iscoroutinefunction(handler),
        timeout=timeout, integration_timeout=integration.timeoutInMillis / 1000, version=version,
        http_api=http_api, memory=spec.memorySize, uri=uri, binary_types=tuple(api.aws.binaryMediaTypes),
        static=static,
    )


# -- the context object -----------------------------------------------------------------------------
class LambdaContext:
    """What a Lambda handler gets as `context` (the attributes of AWS's Python runtime)."""

    __slots__ = ("function_name", "function_version", "invoked_function_arn", "memory_limit_in_mb",
                 "aws_request_id", "log_group_name", "log_stream_name", "identity", "client_context",
                 "_deadline")

    def __init__(self, plan: FunctionPlan, request_id: str, deadline: float):
        self.function_name = plan.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = plan.arn
        self.memory_limit_in_mb = plan.memory
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{plan.name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()) + request_id.replace("-", "")
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext({self.function_name}, {self.aws_request_id})"


# -- events ---------------------------------------------------------------------------------------
def media_type(value: str | None) -> str:
    return value.split(";", 1)[0].strip().lower() if value else ""


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
    name = host.rsplit(":", 1)[0] if host and not host.endswith("]") else host
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
        "path": stage_prefix + call.resource_path,
        "protocol": call.protocol,
        "requestId": call.request_id,
        "requestTime": _clf(now),
        "requestTimeEpoch": int(now * 1000),
        "resourceId": static["resourceId"],
        "resourcePath": static["resource"],
        "stage": static["stage"],
    }
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
        "pathParameters": {k: unquote(v) for k, v in call.params.items()} or None,
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


_CLF: list[Any] = [-1, ""]


def _clf(now: float) -> str:
    """$context.requestTime, formatted once per second."""
    second = int(now)
    if _CLF[0] != second:
        _CLF[0], _CLF[1] = second, clf_time(now)
    return _CLF[1]


class _InvocationIds:
    """Lambda request ids (UUID layout) without a uuid4 call per invocation: a random prefix per process."""

    def __init__(self) -> None:
        self.pid = -1

    def next(self) -> str:
        if self.pid != os.getpid():
            self.pid = os.getpid()
            p = os.urandom(10).hex()
            self.format = f"{p[:8]}-{p[8:12]}-4{p[13:16]}-{p[16:20]}-%012x"
            self.counter = itertools.count(1)
        return self.format % next(self.counter)


_IDS = _InvocationIds()


def _extended_id(request_id: str) -> str:
    return base64.b64encode(hashlib.blake2b(request_id.encode(), digest_size=10).digest()).decode()[:15] + "="


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


def _clean(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in RESPONSE_HEADERS_DROPPED]


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
    return status, _clean(headers), body


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
        return status, _clean(headers), body
    if isinstance(result, str):
        body = result.encode("utf-8")
    else:
        try:
            body = orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise malformed(f"the function's result is not JSON: {exc}") from None
    return 200, [("content-type", "application/json")], body


# -- running handlers --------------------------------------------------------------------------------
def _expire(future: asyncio.Future[Any], expired: list[bool]) -> None:
    """The function's timeout: the waiting request gives up (the thread finishes on its own)."""
    if not future.done():
        expired.append(True)
        future.cancel()
_EXECUTOR: tuple[int, ThreadPoolExecutor] | None = None


def executor() -> ThreadPoolExecutor:
    """This process's thread pool (created on first use: threads do not survive granian's fork)."""
    global _EXECUTOR
    pid = os.getpid()
    if _EXECUTOR is None or _EXECUTOR[0] != pid:
        _EXECUTOR = (pid, ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="fastgw-fn"))
    return _EXECUTOR[1]


@dataclass(slots=True)
class FunctionFailed:
    """The handler raised: a Lambda non-proxy integration maps it (Lambda's error object)."""

    exc: BaseException


async def invoke(plan: FunctionPlan, event: Any, capture_errors: bool = False) -> Any:
    """Run the handler with its timeout; GatewayError on the timeout (504) and on an exception (502),
    or, with `capture_errors`, FunctionFailed for an exception."""
    started = time.monotonic()
    context = LambdaContext(plan, _IDS.next(), started + plan.timeout)
    try:
        if plan.is_async:
            async with asyncio.timeout(plan.timeout):
                return await plan.handler(event, context)
        # A thread of the pool runs the handler; the loop only waits for its future (no extra task).
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor(), plan.handler, event, context)
        expired: list[bool] = []
        timer = loop.call_later(plan.timeout, _expire, future, expired)
        try:
            return await future
        except asyncio.CancelledError:
            if expired:
                raise TimeoutError() from None
            raise
        finally:
            timer.cancel()
    except TimeoutError:
        log.error("function %s timed out after %.3f s", plan.name, plan.timeout)
        raise GatewayError("INTEGRATION_TIMEOUT") from None
    except GatewayError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing function is a 502, as in AWS
        log.error("function %s raised %s: %s", plan.name, type(exc).__name__, exc, exc_info=exc)
        if capture_errors:
            return FunctionFailed(exc)
        raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from None


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
