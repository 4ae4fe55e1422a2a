"""The @connections management API of a WebSocket API (issue 16): `POST | GET | DELETE
/{stage}/@connections/{connectionId}` on the data port, as AWS's `apigatewaymanagementapi` serves it.

Its routes are ordinary HTTP routes of the WebSocket API's stage (fastgw/compile.py adds them), so the
pipeline authorizes them like any other (AWS_IAM: SigV4 by the trusted credentials). Their run step
hands the call to the worker's WebSocket hub (`gateway.websockets`, fastgw/websocket/api.py), which
owns the connections and reaches the other workers' ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from ..errors import GatewayError

MANAGEMENT_ROUTES = ("POST", "GET", "DELETE")


@dataclass(frozen=True, slots=True)
class ConnectionsPlan:
    method: str  # POST (send), GET (describe), DELETE (close)
    uri: str = "@connections"  # for display


def _error(status: int, kind: str, message: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
    # botocore reads the error's code from x-amzn-ErrorType (rest-json)
    return status, [("content-type", "application/json"), ("x-amzn-errortype", kind)], \
        orjson.dumps({"message": message})


async def run_connections(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                          plan: ConnectionsPlan, params: dict[str, str], request_id: str,
                          fill: Any = None) -> tuple[int, int]:
    hub = getattr(gateway, "websockets", None)
    if hub is None or stage.websocket is None:
        raise GatewayError("RESOURCE_NOT_FOUND")
    connection_id = unquote(params.get("connectionId", ""))
    body = await gateway.read_whole_body(down, head) if plan.method == "POST" else b""
    if plan.method == "POST" and len(body) > stage.websocket.max_message_bytes:
        status, headers, payload = _error(413, "PayloadTooLargeException",
                                          f"Message is larger than {stage.websocket.max_message_bytes} bytes")
        return await gateway.answer(down, status, headers, payload, request_id)
    found = await hub.manage(plan.method, connection_id, body)
    if found is None:
        status, headers, payload = _error(410, "GoneException", None)
    elif plan.method == "GET":
        status, headers, payload = 200, [("content-type", "application/json")], orjson.dumps(found)
    else:
        status, headers, payload = (200 if plan.method == "POST" else 204), [], b""
    return await gateway.answer(down, status, headers, payload, request_id)


RUN = (ConnectionsPlan, run_connections)
