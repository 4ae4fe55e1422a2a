"""WebSocket API test handlers: every event is appended to the file named by WS_EVENTS (one JSON line),
so tests can read what each route received, whichever worker ran it."""

from __future__ import annotations

import json
import os
from typing import Any


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get("WS_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _record(event)
    ctx = event["requestContext"]
    route = ctx["routeKey"]
    if route == "$connect":
        query = event.get("queryStringParameters") or {}
        offered = (event.get("headers") or {}).get("sec-websocket-protocol")
        if offered:  # pick the client's first subprotocol, as an AWS $connect function does
            return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": offered.split(",")[0].strip()}}
        return {"statusCode": int(query.get("status", "200"))}
    if route == "fail":
        raise RuntimeError("the function failed")
    body = {"route": route, "body": event.get("body"), "isBase64Encoded": event.get("isBase64Encoded"),
            "connectionId": ctx["connectionId"]}
    return {"statusCode": 200, "body": json.dumps(body)}


def authorizer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A REQUEST authorizer on $connect: the `token` query parameter must be `letmein`."""
    _record({"authorizer": event})
    token = (event.get("queryStringParameters") or {}).get("token")
    effect = "Allow" if token == "letmein" else "Deny"
    return {"principalId": "user-1", "context": {"team": "blue"},
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}]}}
