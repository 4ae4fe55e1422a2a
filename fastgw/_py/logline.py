"""The access log's default line (twin of src_ext/_logline.pxi access_line; the reference)."""

from __future__ import annotations

import orjson


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
