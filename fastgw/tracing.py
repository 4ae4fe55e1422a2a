"""Tracing: AWS X-Ray's trace header, W3C Trace Context, and OpenTelemetry export (OTLP/HTTP).

A stage is traced when it sets `tracingEnabled: true` (X-Ray: the upstream request carries
`X-Amzn-Trace-Id: Root=1-{8 hex seconds}-{24 hex};Parent={the gateway's span};Sampled=0|1`, an
incoming Root is kept, `$context.xrayTraceId` is the Root) or when `server.tracing.otlpEndpoint` is
set (every stage: spans are exported). A traced request's upstream also gets a `traceparent` with the
request's trace id and the gateway's span as parent (`tracestate` goes on as the client sent it).
Stages that are not traced cost nothing: the pipeline checks one attribute (`StagePlan.tracing`). On a
stage that only exports, a request that is not sampled is not traced either (`TracePlan.start`).

The trace id is one 128-bit number in both formats (as OpenTelemetry's X-Ray propagator maps them):
an incoming `traceparent` gives it, else an incoming X-Ray Root, else a new one whose first 32 bits are
the time in seconds (so the X-Ray form is valid). Sampling is parent-based: an incoming sampled flag
(traceparent's, else X-Ray's `Sampled=`) is followed, else `sampleRate` decides.

Export: a sampled request becomes one SERVER span (attributes: api, stage, route key, method, path,
status, request id) with child spans for the authorizer and the integration, queued by the request
(a deque append: nothing else on the request path) and sent in batches by one thread per worker
process as an OTLP/HTTP protobuf `ExportTraceServiceRequest` (encoded here: the dozen fields it
needs do not justify a protobuf dependency; tests decode it with opentelemetry-proto). A full queue
drops spans (counted), never blocks a request; a collector that fails loses that batch (logged at
debug level, counted), and the worker carries on.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from random import getrandbits, random
from typing import Any
from urllib.parse import urlsplit

from ._version import __version__
from .config.model import TracingConfig

log = logging.getLogger("fastgw.tracing")

TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
XRAY_ROOT = re.compile(r"^1-([0-9a-f]{8})-([0-9a-f]{24})$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16
OWN_FIELDS = (b"traceparent:", b"x-amzn-trace-id:")  # replaced in the upstream request, never duplicated


@dataclass(slots=True, frozen=True)
class TracePlan:
    """A stage's tracing (compiled once): X-Ray header or not, the exporter of sampled spans."""

    xray: bool
    sample_rate: float
    exporter: Exporter | None

    def start(self, headers: list[tuple[str, str]], started: float) -> Trace | None:
        """The trace of one request (`started`: its perf_counter start), from the client's headers; None
        for a request of an export-only stage that is not sampled: it is not traced at all (its client's
        trace headers go on untouched, so the upstream's parent is the client's span, the last one
        recorded), which keeps the unsampled 99 % at the cost of a header scan and a random()."""
        if self.xray:  # AWS adds the header to every request, sampled or not
            return Trace(self, headers, started)
        for name, _ in headers:
            if name == "traceparent" or name == "x-amzn-trace-id":
                trace = Trace(self, headers, started)
                return trace if trace.sampled else None
        if random() < self.sample_rate:
            return Trace(self, headers, started, True)
        return None


class Trace:
    """One request's trace context and what its span records."""

    __slots__ = ("plan", "trace_id", "parent_id", "span_id", "sampled", "xray_root", "started", "authorizer",
                 "_forward")

    def __init__(self, plan: TracePlan, headers: list[tuple[str, str]], started: float,
                 sampled: bool | None = None):
        self.plan = plan
        self.started = started
        self.authorizer: tuple[float, float] | None = None  # perf_counter (began, ended)
        self._forward: bytes | None = None
        traceparent = amzn = None
        for name, value in headers:
            if name == "traceparent":
                traceparent = value
            elif name == "x-amzn-trace-id":
                amzn = value
        trace_id = parent_id = None
        if traceparent is not None:
            found = TRACEPARENT.match(traceparent.strip())
            if found is not None:
                version, tid, pid, flags, rest = found.groups()
                if version != "ff" and tid != ZERO_TRACE and pid != ZERO_SPAN and (version != "00" or not rest):
                    trace_id, parent_id, sampled = tid, pid, bool(int(flags, 16) & 1)
        root = None
        if amzn is not None:
            fields = dict(part.strip().partition("=")[::2] for part in amzn.split(";"))
            found = XRAY_ROOT.match(fields.get("Root", ""))
            if found is not None:
                root = fields["Root"]
                if trace_id is None:
                    trace_id = found.group(1) + found.group(2)
                    parent = fields.get("Parent", "")
                    parent_id = parent if SPAN_ID.match(parent) and parent != ZERO_SPAN else None
                    flag = fields.get("Sampled")
                    sampled = True if flag == "1" else False if flag == "0" else None
        if trace_id is None:  # PERF: int.to_bytes().hex() costs a third of a formatted f-string
            trace_id = ((int(time.time()) & 0xFFFFFFFF) << 96 | getrandbits(96)).to_bytes(16, "big").hex()
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.span_id = (getrandbits(64) | 1).to_bytes(8, "big").hex()  # never all zeros (invalid in W3C)
        self.sampled = (random() < plan.sample_rate) if sampled is None else sampled
        self.xray_root = (root or f"1-{trace_id[:8]}-{trace_id[8:]}") if plan.xray else None

    @property
    def xray_trace_id(self) -> str | None:
        """$context.xrayTraceId: the X-Ray Root (stages with tracingEnabled only)."""
        return self.xray_root

    def upstream_fields(self) -> list[tuple[str, str]]:
        """What the upstream request carries: traceparent, and X-Amzn-Trace-Id on X-Ray stages."""
        flag = "01" if self.sampled else "00"
        fields = [("traceparent", f"00-{self.trace_id}-{self.span_id}-{flag}")]
        if self.xray_root is not None:
            fields.append(("x-amzn-trace-id",
                           f"Root={self.xray_root};Parent={self.span_id};Sampled={1 if self.sampled else 0}"))
        return fields

    def forward(self, block: bytes) -> bytes:
        """The client's forwardable fields (`RequestFacts.forward`) with the trace fields replaced."""
        own = self._forward
        if own is None:
            text = f"traceparent: 00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}\r\n"
            if self.xray_root is not None:
                text += (f"x-amzn-trace-id: Root={self.xray_root};Parent={self.span_id};"
                         f"Sampled={1 if self.sampled else 0}\r\n")
            own = self._forward = text.encode("latin-1")
        if b"traceparent:" in block or b"x-amzn-trace-id:" in block:
            lines = block.split(b"\r\n")
            block = b"".join(line + b"\r\n" for line in lines if line and not line.startswith(OWN_FIELDS))
        return block + own

    def finish(self, stage: Any, route: Any, method: str, path: str, status: int, elapsed: float,
               integration: float, request_id: str) -> None:
        """The request is answered: queue its spans when it is sampled and spans are exported."""
        exporter = self.plan.exporter
        if exporter is None or not self.sampled:
            return
        end_ns = time.time_ns()
        start_ns = end_ns - int(elapsed * 1e9)
        children = []
        if self.authorizer is not None:
            began, ended = self.authorizer
            children.append(("authorizer", 1, start_ns + int((began - self.started) * 1e9),
                             start_ns + int((ended - self.started) * 1e9)))
        if integration >= 0:
            children.append(("integration", 3, end_ns - int(integration * 1e9), end_ns))
        exporter.submit((self.trace_id, self.span_id, self.parent_id, route.key if route is not None else
                         f"{method} (no route)", start_ns, end_ns, status,
                         stage.api.name if stage is not None else "", stage.name if stage is not None else "",
                         route.key if route is not None else "", method, path, request_id, children))



def compile_tracing(xray: bool, config: TracingConfig) -> TracePlan | None:
    """A stage's tracing plan, or None when it is not traced (no X-Ray and no export)."""
    if not xray and not config.otlpEndpoint:
        return None
    exporter = exporter_for(config) if config.otlpEndpoint else None
    return TracePlan(xray, config.sampleRate, exporter)


# -- export ----------------------------------------------------------------------------------------
_EXPORTERS: dict[tuple[Any, ...], Exporter] = {}


def exporter_for(config: TracingConfig) -> Exporter:
    """One exporter per distinct setting in a process (reloads with the same settings keep it)."""
    key = (config.otlpEndpoint, config.serviceName, config.batchSize, config.flushIntervalMs, config.queueSize)
    exporter = _EXPORTERS.get(key)
    if exporter is None:
        exporter = _EXPORTERS[key] = Exporter(config)
    return exporter


def shutdown(timeout: float = 2.0) -> None:
    """Send what is queued (a worker stopping)."""
    for exporter in list(_EXPORTERS.values()):
        exporter.close(timeout)


class Exporter:
    """Queues spans; a thread (started in the process that queues the first span, so never across a
    fork) sends them in batches."""

    def __init__(self, config: TracingConfig):
        assert config.otlpEndpoint is not None
        parts = urlsplit(config.otlpEndpoint)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/v1/traces") + (f"?{parts.query}" if parts.query else "")
        self.service = config.serviceName
        self.batch = config.batchSize
        self.interval = config.flushIntervalMs / 1000
        self.queue: deque[tuple[Any, ...]] = deque()
        self.limit = config.queueSize
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.stopping = False
        self.sent = self.dropped = self.failed = 0

    def submit(self, span: tuple[Any, ...]) -> None:
        if self.pid != os.getpid():
            self._start()
        if len(self.queue) >= self.limit:
            self.dropped += 1
            return
        self.queue.append(span)
        if len(self.queue) >= self.batch:
            self.wake.set()

    def _start(self) -> None:
        self.pid = os.getpid()
        self.queue.clear()  # spans a parent process queued are its own
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fastgw-otlp", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            self.wake.wait(self.interval)
            self.wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the exporter must outlive any one bad batch
                log.exception("span export failed; the batch is dropped")

    def flush(self) -> None:
        while self.queue:
            spans = []
            while self.queue and len(spans) < self.batch:
                spans.append(self.queue.popleft())
            self._send(encode_request(self.service, spans), len(spans))

    def _send(self, body: bytes, count: int) -> None:
        connection_class = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        connection = connection_class(self.host, self.port, timeout=5)
        try:
            connection.request("POST", self.path, body, {"content-type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
            if response.status >= 300:
                raise OSError(f"the collector answered {response.status}")
            self.sent += count
        except (OSError, http.client.HTTPException) as exc:
            self.failed += count
            log.debug("%d span(s) not exported to %s:%d%s: %s", count, self.host, self.port, self.path, exc)
        finally:
            connection.close()

    def close(self, timeout: float) -> None:
        thread = self.thread
        if thread is None or self.pid != os.getpid():
            return
        self.stopping = True
        self.wake.set()
        thread.join(timeout)
        self.flush()


# -- OTLP protobuf (opentelemetry/proto/collector/trace/v1/trace_service.proto and its imports) ------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _string(field: int, text: str) -> bytes:
    return _bytes(field, text.encode("utf-8"))


def _fixed64(field: int, value: int) -> bytes:
    return _varint(field << 3 | 1) + struct.pack("<Q", value)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value & 0xFFFFFFFFFFFFFFFF)


def _attribute(key: str, value: str | int) -> bytes:
    """KeyValue {1: key, 2: AnyValue {1: string_value | 3: int_value}}."""
    any_value = _int(3, value) if isinstance(value, int) else _string(1, value)
    return _string(1, key) + _bytes(2, any_value)


def encode_span(span: tuple[Any, ...]) -> list[bytes]:
    """The SERVER span of one request and its children, as Span messages."""
    (trace_id, span_id, parent_id, name, start_ns, end_ns, status, api, stage, route_key, method, path,
     request_id, children) = span
    trace = bytes.fromhex(trace_id)
    own = bytes.fromhex(span_id)
    attributes = b"".join(_bytes(9, _attribute(k, v)) for k, v in (
        ("fastgw.api", api), ("fastgw.stage", stage), ("fastgw.route_key", route_key),
        ("http.request.method", method), ("url.path", path), ("http.response.status_code", status),
        ("aws.request_id", request_id)))
    message = (_bytes(1, trace) + _bytes(2, own) + (_bytes(4, bytes.fromhex(parent_id)) if parent_id else b"")
               + _string(5, name) + _int(6, 2) + _fixed64(7, start_ns) + _fixed64(8, end_ns) + attributes
               + _bytes(15, _int(3, 2 if status >= 500 else 0)))  # Status.code: ERROR for 5xx, else UNSET
    out = [message]
    for child_name, kind, began, ended in children:
        child_id = getrandbits(64) or 1
        out.append(_bytes(1, trace) + _bytes(2, child_id.to_bytes(8, "big")) + _bytes(4, own)
                   + _string(5, child_name) + _int(6, kind) + _fixed64(7, began) + _fixed64(8, ended))
    return out


def encode_request(service: str, spans: list[tuple[Any, ...]]) -> bytes:
    """ExportTraceServiceRequest {1: ResourceSpans {1: Resource {1: attributes}, 2: ScopeSpans
    {1: InstrumentationScope {1: name, 2: version}, 2: spans}}}."""
    resource = _bytes(1, _attribute("service.name", service))
    scope = _string(1, "fastgw") + _string(2, __version__)
    body = b"".join(_bytes(2, message) for span in spans for message in encode_span(span))
    scope_spans = _bytes(1, scope) + body
    return _bytes(1, _bytes(1, resource) + _bytes(2, scope_spans))
