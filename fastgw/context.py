"""AWS's `$context` for one request, as mapping templates and parameter mappings read it.

Built only for the routes that need it (templates, parameter mappings), never on the plain proxy
path. The keys and their meaning are reference/aws.md c.6; the ids (apiId, resourceId,
extendedRequestId) are the same ones the Lambda proxy events carry (fastgw/integrations/function.py).
This module is their one home, below the integrations and policies that read them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from typing import Any

import orjson

from .accesslog import clf_time
from .httpsyntax import header, host_name

DEFAULT_ACCOUNT = "123456789012"  # $context.accountId and Lambda ARNs when no AWS::AccountId is given
DEFAULT_REGION = "us-east-1"


def build_context(down: Any, host: str, stage: Any, route: Any, route_path: str, request_id: str,
                  api_key: str | None = None) -> dict[str, Any]:
    """The `$context` map; `requestOverride` / `responseOverride` are written by templates."""
    now = time.time()
    api = stage.api.name
    domain = host_name(host)
    resource = route.resource_path or "/"
    stage_prefix = f"/{stage.name}" if down.path == f"/{stage.name}" or down.path.startswith(f"/{stage.name}/") else ""
    auth = getattr(down, "auth", None)  # what the route's authorizer asserted (fastgw/policies/authorizers)
    context = {
        "accountId": DEFAULT_ACCOUNT,
        "apiId": api_id(api),
        "authorizer": {"principalId": None, "claims": None},
        "awsEndpointRequestId": None,
        "deploymentId": stage.deployment,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0] if domain else "",
        "error": {"message": None, "messageString": None, "responseType": None, "validationErrorString": None},
        "extendedRequestId": _extended_id(request_id),
        "httpMethod": down.method,
        "identity": {
            "accountId": None, "apiKey": api_key, "apiKeyId": None, "caller": None,
            "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None, "cognitoIdentityId": None,
            "cognitoIdentityPoolId": None, "principalOrgId": None, "sourceIp": down.client, "user": None,
            "userAgent": header(down.headers, "user-agent"), "userArn": None, "clientCert": None,
        },
        "isCanaryRequest": stage.is_canary,
        "path": stage_prefix + route_path,
        "protocol": down.protocol,
        "requestId": request_id,
        "requestOverride": {"header": {}, "path": {}, "querystring": {}},
        "requestTime": _clf(now),
        "requestTimeEpoch": int(now * 1000),
        "resourceId": resource_id(api, resource),
        "resourcePath": resource,
        "responseOverride": {"header": {}, "status": None},
        "routeKey": route.key,
        "stage": stage.name,
        "wafResponseCode": None,
        "webaclArn": None,
        # the X-Ray Root of a stage with tracingEnabled (fastgw/tracing.py), else null as in AWS
        "xrayTraceId": trace.xray_trace_id if (trace := getattr(down, "trace", None)) is not None else None,
    }
    if auth is not None:
        # REST stringifies a Lambda authorizer's context values in $context.authorizer.KEY (AWS).
        context["authorizer"] = {"principalId": None, "claims": None,
                                 **auth.context_authorizer(stringify=stage.api.type == "REST")}
        context["identity"].update(auth.identity)
    return context


JSONPATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]")


def json_field(body: bytes, path: str) -> str | None:
    """`...body` (the whole body) or `...body.a.b[0]` (a JSONPath into it), as text."""
    if not path:
        return body.decode("utf-8", "replace")
    try:
        value: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    for name, index, quoted in JSONPATH_STEP.findall(path):
        key = name or quoted
        if key:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def lookup(context: dict[str, Any], dotted: str) -> Any:
    """`identity.sourceIp` -> context["identity"]["sourceIp"]; None when absent."""
    value: Any = context
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


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


_CLF: list[Any] = [-1, ""]


def _clf(now: float) -> str:
    """$context.requestTime, formatted once per second."""
    second = int(now)
    if _CLF[0] != second:
        _CLF[0], _CLF[1] = second, clf_time(now)
    return _CLF[1]


def _extended_id(request_id: str) -> str:
    return base64.b64encode(hashlib.blake2b(request_id.encode(), digest_size=10).digest()).decode()[:15] + "="
