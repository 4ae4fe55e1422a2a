"""Python Lambda handlers: binding a function name to `module:function`, and running it as AWS's Python
runtime would (a LambdaContext, the function's timeout, sync handlers on a thread pool).

FUNCTION (Lambda proxy) and FUNCTION_CUSTOM (Lambda non-proxy) integrations call handlers through
`invoke`; so will Lambda authorizers. How a request becomes an event, and a result a response, is
the integration's business (fastgw/integrations/).
"""

from __future__ import annotations

import asyncio
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

from .config.loader import Problem
from .config.model import Api, FunctionSpec, Route, Stage
from .config.stagevars import substitute_stage_variables
from .context import DEFAULT_ACCOUNT, DEFAULT_REGION, api_id, resource_id
from .errors import GatewayError
from .openapi.reader import lambda_function

log = logging.getLogger("fastgw.functions")

THREADS = int(os.environ.get("FASTGW_FUNCTION_THREADS", "64") or 64)


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
_MODULE_MTIMES: dict[str, float] = {}


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


def bind_function(uri: str, where: str, functions: dict[str, FunctionSpec], problems: list[Problem],
                  parameters: dict[str, str] | None, timeout: float, version: str = "1.0",
                  http_api: bool = False) -> FunctionPlan | None:
    """The Python handler a Lambda function reference (`uri`, stage variables already substituted) is
    bound to in `functions:` (or --function), imported; None with the problems recorded. Integrations
    and Lambda authorizers bind their functions here."""
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
    params = parameters or {}
    if not arn:
        region = params.get("AWS::Region", DEFAULT_REGION)
        account = params.get("AWS::AccountId", DEFAULT_ACCOUNT)
        arn = f"arn:aws:lambda:{region}:{account}:function:{name}" + (f":{qualifier}" if qualifier else "")
    return FunctionPlan(
        name=name, arn=arn, handler=handler, is_async=inspect.iscoroutinefunction(handler),
        timeout=min(spec.timeout, timeout), integration_timeout=timeout, version=version,
        http_api=http_api, memory=spec.memorySize, uri=uri,
    )


def compile_function(api: Api, route: Route, stage: Stage, variables: dict[str, str],
                     functions: dict[str, FunctionSpec], problems: list[Problem],
                     parameters: dict[str, str] | None = None) -> FunctionPlan | None:
    """The function of a FUNCTION or FUNCTION_CUSTOM integration, with the event fields fixed for its
    route and stage."""
    integration = route.integration
    assert integration is not None
    where = f"{integration.path}.uri"
    uri = substitute_stage_variables(integration.uri, stage, where, problems, variables)
    if uri is None:
        return None
    http_api = api.type == "HTTP"
    version = integration.payloadFormatVersion or ("2.0" if http_api else "1.0")
    if version == "2.0" and not http_api:
        problems.append(Problem(f"{integration.path}.payloadFormatVersion", "payload format 2.0 exists only in "
                                "HTTP APIs (REST APIs send 1.0)"))
        return None
    plan = bind_function(uri, where, functions, problems, parameters, integration.timeoutInMillis / 1000, version,
                         http_api)
    if plan is None:
        return None
    resource = route.template or "$default"
    plan.binary_types = tuple(api.aws.binaryMediaTypes)
    plan.static = {
        "accountId": (parameters or {}).get("AWS::AccountId", DEFAULT_ACCOUNT),
        "apiId": api_id(api.name),
        "stage": stage.name,
        "resource": resource,
        "resourceId": resource_id(api.name, resource),
        "routeKey": route.key,
        "stageVariables": dict(variables) or None,
        "operationName": (route.operation or {}).get("operationId"),
    }
    return plan


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


async def invoke(plan: FunctionPlan, event: Any, capture_errors: bool = False, log_errors: bool = True) -> Any:
    """Run the handler with its timeout; GatewayError on the timeout (504) and on an exception (502),
    or, with `capture_errors`, FunctionFailed for an exception (logged unless `log_errors` is False:
    the caller then says what it means)."""
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
        if log_errors:
            log.error("function %s raised %s: %s", plan.name, type(exc).__name__, exc, exc_info=exc)
        if capture_errors:
            return FunctionFailed(exc)
        raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from None
