"""AWS's `$context` for one request, as mapping templates and parameter mappings read it.

Built only for the routes that need it (templates, parameter mappings), never on the plain proxy
path. The keys and their meaning are reference/aws.md c.6; the ids (apiId, resourceId,
extendedRequestId) are the same ones the Lambda proxy events carry (fastgw/functions.py).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from .functions import _clf, _extended_id, api_id, resource_id


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """A request header's value (several values comma-joined, as AWS does), or None."""
    found = [value for key, value in headers if key == name]
    if not found:
        return None
    return found[0] if len(found) == 1 else ",".join(found)


def build_context(down: Any, host: str, stage: Any, route: Any, route_path: str, request_id: str,
                  api_key: str | None = None) -> dict[str, Any]:
    """The `$context` map; `requestOverride` / `responseOverride` are written by templates."""
    now = time.time()
    api = stage.api.name
    domain = host.rsplit(":", 1)[0] if host and not host.endswith("]") else host
    resource = route.resource_path or "/"
    stage_prefix = f"/{stage.name}" if down.path == f"/{stage.name}" or down.path.startswith(f"/{stage.name}/") else ""
    return {
        "accountId": "123456789012",
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
    }


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
