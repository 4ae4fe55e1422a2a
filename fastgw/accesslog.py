"""JSON access log: one line per request on stdout, fields named after AWS's `$context` variables.

PERF: the request path only keeps each request's facts (`write`: one tuple, one list append). They are
formatted and written together every FLUSH_SECONDS, or once FLUSH_RECORDS are waiting (`flush`), with a
single write(2), so a busy worker does not pay a system call per request or per loop iteration, and a
line is never split between workers. Each (stage, route) gets a formatter made once
(`LineFormat`, remembered in `formats`), which holds the fields that depend on the route only, already
serialised. A configurable format (AWS's `accessLogSettings.format`) is another such formatter,
chosen in `formatter`.

No line is lost at shutdown: the worker's stop flushes what is left, waiting (a bounded time) for a
full pipe instead of dropping it. While serving, a full non-blocking pipe keeps the rest for the next
flush, up to MAX_PENDING_BYTES (then the oldest lines are dropped and counted in `dropped`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import time
from typing import TYPE_CHECKING, Any

import orjson

from ._accel import access_line

if TYPE_CHECKING:
    from .plan import RoutePlan, StagePlan

log = logging.getLogger("fastgw")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
FLUSH_SECONDS = 0.05
FLUSH_RECORDS = 512
FORMATS_MAX = 4096  # (stage, route) formatters a worker remembers (plans swapped by reloads leave some)
MAX_PENDING_BYTES = 8 * 1024 * 1024  # log output waiting for a full pipe, at most
FINAL_FLUSH_SECONDS = 5.0  # how long the last flush waits for a full pipe at shutdown


def clf_time(epoch: float) -> str:
    """AWS's $context.requestTime format: 25/Nov/2026:09:05:28 +0000."""
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


class LineFormat:
    """fastgw's default line: a JSON object with AWS's `$context` names, made by the `access_line` kernel
    (PERF: ~30k instructions a line in Python, float rounding and repr through dtoa above all). Made once
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
        self.fixed = orjson.dumps(fixed)[1:-1]
        # $context.authorizer.principalId, for routes with an authorizer (None: the request was refused)
        self.principal = route is not None and route.authorizer is not None

    def __call__(self, record: tuple[Any, ...], request_time: str) -> bytes:
        request_id, down, _, _, status, length, elapsed, integration_latency, now = record
        principal = None
        if self.principal:
            auth = getattr(down, "auth", None)
            principal = auth.principal_id if auth is not None else None
            if principal is not None and principal.__class__ is not str:
                principal = str(principal)
        return access_line(request_id, down.client, request_time, now, down.method, down.path, self.fixed, status,
                           down.protocol, length, elapsed, integration_latency, self.principal, principal)


class AccessLog:
    def __init__(self, fd: int = 1):
        self.fd = fd
        self.records: list[tuple[Any, ...]] = []
        self.ws_lines: list[bytes] = []  # WebSocket API events, already formatted (write_ws)
        self.pending = b""  # formatted output a full pipe did not take yet
        self.dropped = 0  # lines dropped because the pipe stayed full
        self.scheduled = False
        self.formats: dict[tuple[Any, Any], LineFormat] = {}
        self._second = -1
        self._second_text = ""

    def write(self, request_id: str, down: Any, stage: StagePlan | None, route: RoutePlan | None, status: int,
              length: int, elapsed: float, integration_latency: float) -> None:
        records = self.records
        records.append((request_id, down, stage, route, status, length, elapsed, integration_latency, time.time()))
        if not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:
                self.flush()
        elif len(records) >= FLUSH_RECORDS:
            self.write_out()  # the timer stays set, for what comes next

    def write_ws(self, request_id: str, connection_id: str, ip: str, stage: StagePlan | None, event_type: str,
                 route_key: str, status: int, elapsed: float, close_code: int | None = None) -> None:
        """One line per WebSocket event (CONNECT, MESSAGE, DISCONNECT), as AWS's WebSocket access logs;
        formatted at once (events are far fewer than requests) and written with the next flush."""
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
        self.ws_lines.append(orjson.dumps(record) + b"\n")
        if not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:
                self.flush()

    def formatter(self, stage: StagePlan | None, route: RoutePlan | None) -> LineFormat:
        """The line format of a (stage, route): where a stage's own format (issue 17) will be chosen."""
        key = (stage, route)
        found = self.formats.get(key)
        if found is None:
            if len(self.formats) >= FORMATS_MAX:
                self.formats.clear()
            found = self.formats[key] = LineFormat(stage, route)
        return found

    def format(self) -> bytes:
        """The records so far as lines (and forget them)."""
        records, self.records = self.records, []
        lines = []
        formats = self.formats
        for record in records:
            now = record[8]
            second = int(now)
            if second != self._second:
                self._second = second
                self._second_text = clf_time(now)
            line_format = formats.get((record[2], record[3])) or self.formatter(record[2], record[3])
            lines.append(line_format(record, self._second_text))
        return b"".join(lines)

    def flush(self, final: bool = False) -> None:
        """The timer's call, and the worker's last one (`final`: waits for a full pipe, a bounded time)."""
        self.scheduled = False
        self.write_out(final)

    def write_out(self, final: bool = False) -> None:
        data = self.pending + self.format() if self.records else self.pending
        self.pending = b""
        if self.ws_lines:
            data += b"".join(self.ws_lines)
            self.ws_lines.clear()
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
