"""The access log's default line and its buffer (twins of src_ext/_logline.pxi access_line and LineBuffer; the
reference)."""

from __future__ import annotations

import time
from typing import Any

import orjson

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def clf_time(epoch: float) -> str:
    """AWS's $context.requestTime format: 25/Nov/2026:09:05:28 +0000."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def _text(value: str) -> str:
    return orjson.dumps(value).decode()


def _millis(seconds: float) -> str:
    """Seconds as milliseconds with three decimals (rounded half up, as the kernel does)."""
    micros = int(seconds * 1e6 + 0.5)
    return f"{micros // 1000}.{micros % 1000:03d}"


def access_line(request_id: str, client: str, request_time: str, now: float, method: str, path: str, fixed: bytes,
                status: int, protocol: str, length: int, elapsed: float, integration_latency: float,
                with_principal: bool, principal: str | None) -> bytes:
    """One JSON line: `fixed` is the route's fields, already serialised (UTF-8, no braces, no commas around);
    `integration_latency` < 0 is null; `with_principal` adds authorizerPrincipalId (None: null)."""
    line = (f'{{"requestId":{_text(request_id)},"ip":{_text(client)},"requestTime":{_text(request_time)},'
            f'"requestTimeEpoch":{int(now * 1000)},"httpMethod":{_text(method)},"path":{_text(path)},{fixed.decode()},'
            f'"status":{status},"protocol":{_text(protocol)},"responseLength":{length},'
            f'"responseLatency":{_millis(elapsed)},'
            f'"integrationLatency":{_millis(integration_latency) if integration_latency >= 0 else "null"}')
    if with_principal:
        line += f',"authorizerPrincipalId":{_text(principal) if principal is not None else "null"}'
    return (line + "}\n").encode()


class LineBuffer:
    """The access log's pending output: lines formatted as requests end, taken whole by the flush."""

    def __init__(self, flush_bytes: int = 65536) -> None:
        self.flush_bytes = flush_bytes
        self.parts: list[bytes] = []
        self.size = 0
        self.lines = 0

    def line(self, request_id: str, down: Any, line_format: Any, status: int, length: int, elapsed: float,
             integration_latency: float, now: float = -1.0) -> bool:
        """fastgw's JSON line for one request: `down` gives the client, method, path, protocol and auth,
        `line_format` the route's serialised fields (`fixed`) and whether it has an authorizer (`principal`);
        `now` < 0: the clock's time. True when the buffer holds `flush_bytes` or more."""
        principal = None
        if line_format.principal:
            auth = getattr(down, "auth", None)
            principal = auth.principal_id if auth is not None else None
            if principal is not None and principal.__class__ is not str:
                principal = str(principal)
        return self.line_of(request_id, down.client, down.method, down.path, down.protocol, line_format.fixed,
                            status, length, elapsed, integration_latency, line_format.principal, principal, now)

    def line_of(self, request_id: str, client: str, method: str, path: str, protocol: str, fixed: bytes, status: int,
                length: int, elapsed: float, integration_latency: float, with_principal: bool = False,
                principal: str | None = None, now: float = -1.0) -> bool:
        """`line` with the request's fields given (the plain lane has no request object)."""
        if now < 0:
            now = time.time()
        return self.raw(access_line(request_id, client, clf_time(int(now)), now, method, path, fixed, status,
                                    protocol, length, elapsed, integration_latency, with_principal, principal))

    def raw(self, data: bytes) -> bool:
        """Lines formatted elsewhere, newline included. True when the buffer holds `flush_bytes` or more."""
        self.parts.append(data)
        self.size += len(data)
        self.lines += data.count(b"\n")
        return self.size >= self.flush_bytes

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts, self.size, self.lines = [], 0, 0
        return data
