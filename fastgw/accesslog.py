"""JSON access log: one line per request on stdout, fields named after AWS's `$context` variables.

PERF: a request's line is formatted as the request ends, into one C buffer (`LineBuffer`,
src_ext/_logline.pxi; ~4k instructions a line), so nothing of the request is kept alive for the log.
The buffer is written every FLUSH_SECONDS, or once FLUSH_BYTES are waiting (`flush`), with a single
write(2), so a busy worker does not pay a system call per request, and a line is never split between
workers. Each (stage, route) gets a formatter made once (`LineFormat`, remembered in `formats`), which
holds the fields that depend on the route only, already serialised. A stage's own format (AWS's
`accessLogSettings.format`, compiled once by `compile_access_format` into literal text and value
getters) is a CustomLineFormat, chosen in `formatter`.

No line is lost at shutdown: the worker's stop flushes what is left, waiting (a bounded time) for a
full pipe instead of dropping it. While serving, a full non-blocking pipe keeps the rest for the next
flush, up to MAX_PENDING_BYTES (then the oldest lines are dropped and counted in `dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ._accel import LineBuffer, clf_time
from .httpsyntax import header

if TYPE_CHECKING:
    from .plan import RoutePlan, StagePlan

log = logging.getLogger("fastgw")

FLUSH_SECONDS = 0.05
FLUSH_BYTES = 128 * 1024  # written at once past this, without waiting for the timer
FORMATS_MAX = 4096  # (stage, route) formatters a worker remembers (plans swapped by reloads leave some)
MAX_PENDING_BYTES = 8 * 1024 * 1024  # log output waiting for a full pipe, at most
FINAL_FLUSH_SECONDS = 5.0  # how long the last flush waits for a full pipe at shutdown


class LineFormat:
    """fastgw's default line: a JSON object with AWS's `$context` names, made by `LineBuffer.line`. Made once
    per (stage, route): the fields that depend only on them are serialised here."""

    __slots__ = ("fixed", "principal")

    def __init__(self, stage: StagePlan | None, route: RoutePlan | None):
        fixed = {
            "resourcePath": route.resource_path if route is not None else None,
            "routeKey": route.key if route is not None else None,
            "apiName": stage.api.name if stage is not None else None,
            "stage": stage.name if stage is not None else None,
            "isCanaryRequest": stage.is_canary if stage is not None else False,
        }
        self.fixed: bytes = orjson.dumps(fixed)[1:-1]
        # $context.authorizer.principalId, for routes with an authorizer (None: the request was refused)
        self.principal = route is not None and route.authorizer is not None


# AWS console's presets for a stage's `accessLogSettings.format` (REST), by name.
PRESETS = {
    "CLF": '$context.identity.sourceIp $context.identity.caller $context.identity.user [$context.requestTime] '
           '"$context.httpMethod $context.resourcePath $context.protocol" $context.status $context.responseLength '
           '$context.requestId',
    "JSON": '{ "requestId":"$context.requestId", "ip": "$context.identity.sourceIp", '
            '"caller":"$context.identity.caller", "user":"$context.identity.user",'
            '"requestTime":"$context.requestTime", "httpMethod":"$context.httpMethod",'
            '"resourcePath":"$context.resourcePath", "status":"$context.status",'
            '"protocol":"$context.protocol", "responseLength":"$context.responseLength" }',
    "XML": '<request id="$context.requestId"> <ip>$context.identity.sourceIp</ip> '
           '<caller>$context.identity.caller</caller> <user>$context.identity.user</user> '
           '<requestTime>$context.requestTime</requestTime> <httpMethod>$context.httpMethod</httpMethod> '
           '<resourcePath>$context.resourcePath</resourcePath> <status>$context.status</status> '
           '<protocol>$context.protocol</protocol> <responseLength>$context.responseLength</responseLength> </request>',
    "CSV": '$context.identity.sourceIp,$context.identity.caller,$context.identity.user,$context.requestTime,'
           '$context.httpMethod,$context.resourcePath,$context.protocol,$context.status,$context.responseLength,'
           '$context.requestId',
}
VARIABLE = re.compile(r"\$context\.([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9_-]*)*)")
# What a record knows, by variable: (record, request time text) -> value (None is logged "-", as AWS does).
Getter = Callable[[tuple[Any, ...], str], Any]


def _millis_int(seconds: float) -> int:
    return int(seconds * 1000 + 0.5)


def _header(name: str) -> Getter:
    return lambda record, _: header(record[1].headers, name)


def _principal(record: tuple[Any, ...], _: str) -> Any:
    auth = getattr(record[1], "auth", None)
    return auth.principal_id if auth is not None else None


def _authorizer_field(name: str) -> Getter:
    def get(record: tuple[Any, ...], _: str) -> Any:
        auth = getattr(record[1], "auth", None)
        context = getattr(auth, "context", None) if auth is not None else None
        return context.get(name) if isinstance(context, dict) else None
    return get


def _identity(name: str) -> Getter:
    """$context.identity.* an authorizer asserted (AWS_IAM: caller, user, userArn, accountId, accessKey)."""
    def get(record: tuple[Any, ...], _: str) -> Any:
        auth = getattr(record[1], "auth", None)
        return auth.identity.get(name) if auth is not None else None
    return get


def _xray(record: tuple[Any, ...], _: str) -> Any:
    trace = getattr(record[1], "trace", None)
    return getattr(trace, "xray_trace_id", None) if trace is not None else None


GETTERS: dict[str, Getter] = {
    "requestId": lambda r, _: r[0],
    "extendedRequestId": lambda r, _: r[0],
    "identity.sourceIp": lambda r, _: r[1].client,
    "identity.userAgent": _header("user-agent"),
    "requestTime": lambda _, t: t,
    "requestTimeEpoch": lambda r, _: int(r[8] * 1000),
    "httpMethod": lambda r, _: r[1].method,
    "path": lambda r, _: r[1].path,
    "protocol": lambda r, _: r[1].protocol,
    "domainName": _header("host"),
    "domainPrefix": lambda r, _: (header(r[1].headers, "host") or "").split(".", 1)[0].split(":", 1)[0] or None,
    "status": lambda r, _: r[4],
    "responseLength": lambda r, _: r[5],
    "responseLatency": lambda r, _: _millis_int(r[6]),
    "integrationLatency": lambda r, _: _millis_int(r[7]) if r[7] >= 0 else None,
    "integration.latency": lambda r, _: _millis_int(r[7]) if r[7] >= 0 else None,
    "resourcePath": lambda r, _: r[3].resource_path if r[3] is not None else None,
    "routeKey": lambda r, _: r[3].key if r[3] is not None else None,
    "stage": lambda r, _: r[2].name if r[2] is not None else None,
    "apiId": lambda r, _: r[2].api.name if r[2] is not None else None,
    "deploymentId": lambda r, _: r[2].deployment if r[2] is not None else None,
    "isCanaryRequest": lambda r, _: ("true" if r[2].is_canary else "false") if r[2] is not None else None,
    "authorizer.principalId": _principal,
    **{f"identity.{name}": _identity(name) for name in ("caller", "user", "userArn", "accountId", "accessKey")},
    "xrayTraceId": _xray,
}
# AWS's other access-log variables (aws.md c.6): accepted, logged "-" (fastgw has no value for them).
KNOWN_WITHOUT_VALUE = frozenset((
    "accountId", "awsEndpointRequestId", "error.message", "error.messageString", "error.responseType",
    "error.validationErrorString", "identity.apiKey", "identity.apiKeyId",
    "identity.cognitoAuthenticationProvider", "identity.cognitoAuthenticationType", "identity.cognitoIdentityId",
    "identity.cognitoIdentityPoolId", "identity.principalOrgId",
    "identity.clientCert.clientCertPem", "identity.clientCert.subjectDN", "identity.clientCert.issuerDN",
    "identity.clientCert.serialNumber", "identity.clientCert.validity.notBefore",
    "identity.clientCert.validity.notAfter", "resourceId", "wafResponseCode", "webaclArn", "authorize.error",
    "authorize.latency", "authorize.status", "authorizer.error", "authorizer.integrationLatency",
    "authorizer.integrationStatus", "authorizer.latency", "authorizer.requestId", "authorizer.status",
    "authenticate.error", "authenticate.latency", "authenticate.status", "customDomain.basePathMatched",
    "integration.error", "integration.integrationStatus", "integration.requestId", "integration.status",
    "integrationErrorMessage", "integrationStatus", "waf.error", "waf.latency", "waf.status", "dataProcessed",
))
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def compile_access_format(text: str) -> tuple[tuple[str, Getter | None], ...]:
    """A stage's `accessLogSettings.format` (or a preset name) -> (literal, getter) pairs, in order; the
    last pair's getter is None. ValueError names what AWS would refuse: no $context.requestId or
    extendedRequestId, a variable it does not know, a line break."""
    text = PRESETS.get(text, text)
    if "\n" in text or "\r" in text:
        raise ValueError("must be one line (no line breaks)")
    names = VARIABLE.findall(text)
    if "requestId" not in names and "extendedRequestId" not in names:
        raise ValueError("must contain $context.requestId or $context.extendedRequestId (as AWS requires), or "
                         f"be one of the presets {', '.join(PRESETS)}")
    parts: list[tuple[str, Getter | None]] = []
    last = 0
    for match in VARIABLE.finditer(text):
        name = match.group(1)
        getter = GETTERS.get(name)
        if getter is None and name.startswith("authorizer.") and name.count(".") == 1:
            getter = _authorizer_field(name.split(".", 1)[1])  # a Lambda authorizer's context key
        if getter is None and name not in KNOWN_WITHOUT_VALUE:
            raise ValueError(f"unknown variable $context.{name} (see README \"Access log\" for the variables)")
        parts.append((text[last:match.start()], getter or _nothing))
        last = match.end()
    parts.append((text[last:], None))
    return tuple(parts)


def _nothing(record: tuple[Any, ...], _: str) -> Any:
    return None


class CustomLineFormat:
    """A stage's own `accessLogSettings.format`: the text with each `$context` variable substituted (a
    missing value is `-`, as AWS logs it). Values cannot break the line: control characters are escaped,
    and in a format that is a JSON object (begins with `{`) so are quotes and backslashes."""

    __slots__ = ("fixed", "json", "parts", "principal")

    def __init__(self, parts: tuple[tuple[str, Getter | None], ...]):
        self.parts = parts
        self.fixed = None  # not fastgw's JSON line (AccessLog.write)
        self.principal = False
        self.json = parts[0][0].lstrip().startswith("{")

    def __call__(self, record: tuple[Any, ...], request_time: str) -> bytes:
        out = []
        for literal, getter in self.parts:
            out.append(literal)
            if getter is None:
                break
            value = getter(record, request_time)
            if value is None:
                out.append("-")
                continue
            value = value if value.__class__ is str else str(value)
            if self.json:
                value = orjson.dumps(value).decode()[1:-1]
            elif CONTROL.search(value):
                value = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
            out.append(value)
        out.append("\n")
        return "".join(out).encode()


class AccessLog:
    # PERF: the compiled plain lane reads `scheduled` on every request (a slot, not an instance dict)
    __slots__ = ("fd", "buffer", "pending", "dropped", "scheduled", "formats", "_second", "_second_text")

    def __init__(self, fd: int = 1):
        self.fd = fd
        self.buffer = LineBuffer(FLUSH_BYTES)  # formatted lines waiting for the next flush
        self.pending = b""  # formatted output a full pipe did not take yet
        self.dropped = 0  # lines dropped because the pipe stayed full
        self.scheduled = False
        self.formats: dict[tuple[Any, Any], LineFormat | CustomLineFormat] = {}
        self._second = -1
        self._second_text = ""

    def write(self, request_id: str, down: Any, stage: StagePlan | None, route: RoutePlan | None, status: int,
              length: int, elapsed: float, integration_latency: float) -> None:
        line_format = self.formats.get((stage, route)) or self.formatter(stage, route)
        if line_format.fixed is not None:
            full = self.buffer.line(request_id, down, line_format, status, length, elapsed, integration_latency)
        else:
            now = time.time()
            record = (request_id, down, stage, route, status, length, elapsed, integration_latency, now)
            full = self.buffer.raw(line_format(record, self.request_time(now)))
        if full:
            self.write_out()  # a timer set stays set, for what comes next
        if not self.scheduled:
            self.schedule()

    def write_ws(self, request_id: str, connection_id: str, ip: str, stage: StagePlan | None, event_type: str,
                 route_key: str, status: int, elapsed: float, close_code: int | None = None) -> None:
        """One line per WebSocket event (CONNECT, MESSAGE, DISCONNECT), as AWS's WebSocket access logs;
        written with the next flush."""
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
        if self.buffer.raw(orjson.dumps(record) + b"\n"):
            self.write_out()
        if not self.scheduled:
            self.schedule()

    def schedule(self) -> None:
        """The next flush, FLUSH_SECONDS from now (`scheduled` says one is set)."""
        self.scheduled = True
        try:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        except RuntimeError:  # no event loop (a tool, a test): at once
            self.flush()

    def request_time(self, now: float) -> str:
        """$context.requestTime of `now`, made once a second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = clf_time(now)
        return self._second_text

    def formatter(self, stage: StagePlan | None, route: RoutePlan | None) -> LineFormat | CustomLineFormat:
        """The line format of a (stage, route): the stage's own `accessLogSettings.format` if it has one,
        else fastgw's JSON line."""
        key = (stage, route)
        found = self.formats.get(key)
        if found is None:
            if len(self.formats) >= FORMATS_MAX:
                self.formats.clear()
            parts = stage.access_format if stage is not None else None
            found = self.formats[key] = CustomLineFormat(parts) if parts is not None else LineFormat(stage, route)
        return found

    def flush(self, final: bool = False) -> None:
        """The timer's call, and the worker's last one (`final`: waits for a full pipe, a bounded time)."""
        self.scheduled = False
        self.write_out(final)

    def write_out(self, final: bool = False) -> None:
        data = self.pending + self.buffer.take() if self.buffer.size else self.pending
        self.pending = b""
        deadline = time.monotonic() + FINAL_FLUSH_SECONDS
        while data:
            try:
                written = os.write(self.fd, data)
                data = data[written:]
            except BlockingIOError:
                if final and time.monotonic() < deadline:
                    select.select([], [self.fd], [], 0.1)  # the worker is stopping: wait for the reader
                    continue
                self._keep(data)
                return
            except OSError:
                return  # stdout is gone (closed pipe): nothing can be written any more

    def _keep(self, data: bytes) -> None:
        """Keep what a full non-blocking pipe did not take, for the next flush (bounded)."""
        if len(data) > MAX_PENDING_BYTES:
            cut = data.index(b"\n", len(data) - MAX_PENDING_BYTES) + 1
            self.dropped += data[:cut].count(b"\n")
            log.warning("access log: stdout does not keep up; %d line(s) dropped so far", self.dropped)
            data = data[cut:]
        self.pending = data
        if data and not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:
                self.scheduled = False
