"""JSON access log: one line per request on stdout, fields named after AWS's `$context` variables.

Lines are collected during one event-loop iteration and written with a single write(2), so a
busy worker does not pay a system call per request, and a line is never split between workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .plan import RoutePlan, StagePlan

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clf_time(epoch: float) -> str:
    """AWS's $context.requestTime format: 25/Nov/2026:09:05:28 +0000."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


class AccessLog:
    def __init__(self, fd: int = 1):
        self.fd = fd
        self.lines: list[bytes] = []
        self.scheduled = False
        self._second = -1
        self._second_text = ""

    def write(self, request_id: str, down: Any, stage: StagePlan | None, route: RoutePlan | None, status: int,
              length: int, elapsed: float, integration_latency: float) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = clf_time(now)
        record = {
            "requestId": request_id,
            "ip": down.client,
            "requestTime": self._second_text,
            "requestTimeEpoch": int(now * 1000),
            "httpMethod": down.method,
            "path": down.path,
            "resourcePath": route.resource_path if route is not None else None,
            "routeKey": route.key if route is not None else None,
            "apiName": stage.api.name if stage is not None else None,
            "stage": stage.name if stage is not None else None,
            "isCanaryRequest": stage.is_canary if stage is not None else False,
            "status": status,
            "protocol": down.protocol,
            "responseLength": length,
            "responseLatency": round(elapsed * 1000, 3),
            "integrationLatency": round(integration_latency * 1000, 3) if integration_latency >= 0 else None,
        }
        if route is not None and route.authorizer is not None:
            auth = getattr(down, "auth", None)  # $context.authorizer.principalId (None: refused)
            record["authorizerPrincipalId"] = auth.principal_id if auth is not None else None
        self.lines.append(orjson.dumps(record) + b"\n")
        if not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def write_ws(self, request_id: str, connection_id: str, ip: str, stage: StagePlan | None, event_type: str,
                 route_key: str, status: int, elapsed: float, close_code: int | None = None) -> None:
        """One line per WebSocket event (CONNECT, MESSAGE, DISCONNECT), as AWS's WebSocket access logs."""
        now = time.time()
        record = {
            "requestId": request_id,
            "ip": ip,
            "requestTimeEpoch": int(now * 1000),
            "eventType": event_type,
            "routeKey": route_key,
            "connectionId": connection_id,
            "apiName": stage.api.name if stage is not None else None,
            "stage": stage.name if stage is not None else None,
            "status": status,
            "responseLatency": round(elapsed * 1000, 3),
        }
        if close_code is not None:
            record["disconnectStatusCode"] = close_code
        self.lines.append(orjson.dumps(record) + b"\n")
        if not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if not self.lines:
            return
        data = b"".join(self.lines)
        self.lines.clear()
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except BlockingIOError:
            pass  # stdout is a full non-blocking pipe: drop rather than stall the event loop
        except OSError:
            pass
