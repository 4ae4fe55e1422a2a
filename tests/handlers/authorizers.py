"""Lambda authorizers for tests/test_authorizers_lambda.py. Each call is counted in a file, so tests can
see how often an authorizer ran across the gateway's worker processes."""

from __future__ import annotations

import asyncio
import os
import time


def _count(event: dict) -> None:
    path = os.environ.get("FASTGW_TEST_AUTH_CALLS")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {event.get('type')} {event.get('methodArn') or event.get('routeArn')}\n")


def _policy(principal: str, effect: str, resource: str, context: dict | None = None, **extra) -> dict:
    out = {"principalId": principal, "policyDocument": {"Version": "2012-10-17", "Statement": [
        {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]}, **extra}
    if context is not None:
        out["context"] = context
    return out


def token(event, context):
    """TOKEN: the token says what to do. `allow-get` allows GET on every path of the stage only."""
    _count(event)
    t = event["authorizationToken"]
    arn = event["methodArn"]
    stage_arn = arn.split("/", 2)[0] + "/" + arn.split("/", 2)[1]  # arn:...:apiId/stage
    if t == "unauthorized":
        raise Exception("Unauthorized")
    if t == "boom":
        raise RuntimeError("the authorizer broke")
    if t == "slow":
        time.sleep(2)
    if t == "malformed":
        return {"principalId": "x"}
    if t == "bad-context":
        return _policy("x", "Allow", arn, {"nested": {"a": 1}})
    if t == "deny":
        return _policy("user-deny", "Deny", arn)
    if t == "allow-get":
        return _policy("user-get", "Allow", stage_arn + "/GET/*", {"tier": "gold", "n": 3, "ok": True})
    if t == "deny-one":  # Allow everything, Deny one path: explicit Deny wins
        out = _policy("user-d", "Allow", stage_arn + "/*")
        out["policyDocument"]["Statement"].append(
            {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": stage_arn + "/GET/items/secret"})
        return out
    if t.startswith("key:"):
        return _policy("user-key", "Allow", stage_arn + "/*", usageIdentifierKey=t[4:])
    return _policy("user-" + t, "Allow", arn, {"tier": "silver"})


def request(event, context):
    """REQUEST (REST, or HTTP payload 1.0/2.0 with an IAM policy): allows when header x-user is set,
    and echoes what it saw in the context."""
    _count(event)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    user = headers.get("x-user")
    arn = event.get("methodArn") or event.get("routeArn")
    if user == "nobody":
        raise Exception("Unauthorized")
    query = event.get("queryStringParameters") or {}
    return _policy("user-" + str(user), "Allow" if user else "Deny", arn,
                   {"type": event["type"], "version": event.get("version", ""), "q": query.get("q", ""),
                    "stage": (event.get("stageVariables") or {}).get("color", "")})


def simple(event, context):
    """HTTP API simple response."""
    _count(event)
    user = (event.get("headers") or {}).get("x-user")
    return {"isAuthorized": user == "alice", "context": {"user": user, "roles": ["a", "b"]}}


async def async_simple(event, context):
    await asyncio.sleep(0)
    return simple(event, context)
