"""Prometheus metrics, correct across granian's worker processes.

prometheus-client's multiprocess mode keeps each worker's values in memory-mapped files under
PROMETHEUS_MULTIPROC_DIR; the admin endpoint (in the main process) sums them at scrape time. The
directory must be set before prometheus_client is first imported, which is why `fastgw serve`
sets it before importing this module.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from . import _accel
from ._accel import Tally
from ._version import __version__

# Latency buckets in seconds, from sub-millisecond (a cache hit) to the 29 s integration timeout.
FLUSH_SECONDS = 1.0
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# `canary`: "true" for requests a stage's canary deployment served (AWS logs them apart too).
REQUESTS = Counter(
    "fastgw_requests", "Requests answered (AWS Count, 4XXError, 5XXError by status)",
    ("api", "stage", "route", "method", "canary", "status"),
)
REQUEST_DURATION = Histogram(
    "fastgw_request_duration_seconds", "Time from request to response head (AWS Latency)",
    ("api", "stage", "route", "method", "canary"), buckets=BUCKETS,
)
INTEGRATION_DURATION = Histogram(
    "fastgw_integration_duration_seconds", "Time the integration took (AWS IntegrationLatency)",
    ("api", "stage", "route"), buckets=BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "fastgw_upstream_errors", "Failed upstream exchanges by gateway response type",
    ("api", "stage", "route", "kind"),
)
# Upstream responses that broke HTTP/1.1 framing or the exchange's order (fastgw/upstream.py): the
# connection is closed, never reused. `kind`: status_line, header_syntax, bare_cr_lf, obs_fold,
# content_length, transfer_encoding, header_limits, chunk, switching_protocols, body_not_allowed,
# after_response, unsolicited, early_response.
UPSTREAM_FRAMING_ERRORS = Counter(
    "fastgw_upstream_framing_errors", "Upstream framing faults that closed a connection, by kind",
    ("upstream", "kind"),
)
# Response header fields the gateway would not send (fastgw/integrations/headers.py): `invalid` (not
# HTTP field syntax: a control character, CR, LF or NUL from a template, a mapping or a function's
# result) or `framing` (a framing field such as Transfer-Encoding the gateway did not compute).
RESPONSE_HEADERS_DROPPED = Counter(
    "fastgw_response_headers_dropped", "Response header fields dropped before the client, by reason",
    ("api", "reason"),
)
# Requests refused at once because an upstream (or upstream group) had its `maxRequests` in flight
# (fastgw/upstream.py, RELIABILITY.md F-13): Envoy's upstream_rq_pending_overflow.
UPSTREAM_OVERFLOW = Counter(
    "fastgw_upstream_overflow", "Requests refused with 503: the upstream's maxRequests were in flight",
    ("upstream",),
)
# Failed lookups of an upstream host name (fastgw/upstream.py, RELIABILITY.md F-30): the last good
# addresses are kept meanwhile, and the log says so once per failing streak.
UPSTREAM_DNS_FAILURES = Counter(
    "fastgw_upstream_dns_failures", "Failed lookups of an upstream host name (the last good address is kept)",
    ("host",),
)
# Requests a worker shed with 503 before reading them (fastgw/pipeline.py, RELIABILITY.md F-23), by
# reason: `requests` (maxRequestsInFlight) or `memory` (maxRssBytes).
OVERLOAD_SHED = Counter(
    "fastgw_overload_shed", "Requests refused with 503 by the worker's overload limits, by reason", ("reason",),
)
INFLIGHT = Gauge(
    "fastgw_inflight_requests", "Requests being handled (sampled each flush)", multiprocess_mode="livesum"
)
BUILD_INFO = Gauge(
    "fastgw_build_info", "fastgw version and kernel implementation (c: compiled, py: pure Python, mixed: some of each)",
    ("version", "impl"), multiprocess_mode="max",
)

# API keys, throttles and quotas (fastgw/policies/usage).
THROTTLED = Counter("fastgw_throttled", "Requests refused with 429 Too Many Requests (AWS THROTTLED)",
                    ("api", "stage", "plan", "level"))
QUOTA_EXCEEDED = Counter("fastgw_quota_exceeded", "Requests refused with 429 Limit Exceeded (AWS QUOTA_EXCEEDED)",
                         ("api", "stage", "plan"))
KEY_REJECTED = Counter("fastgw_api_key_rejected", "Requests refused with 403 for their API key",
                       ("api", "stage", "reason"))
BACKEND_UP = Gauge("fastgw_state_backend_up", "1 when the state backend (Redis) answers, 0 while a worker "
                   "falls back (failMode open) or refuses (closed)", ("backend",), multiprocess_mode="livemin")
BACKEND_ERRORS = Counter("fastgw_state_backend_errors", "Failed state backend operations", ("backend", "kind"))
STATE_EVENTS = Counter("fastgw_state_events", "Changes other nodes announced on the Redis events channel, acted on "
                       "by a worker (fastgw/state/channel.py)", ("kind",))
# The stage caches (fastgw/policies/cache).
CACHE_HITS = Counter("fastgw_cache_hits", "Requests answered from the stage cache (AWS CacheHitCount)",
                     ("api", "stage", "route"))
CACHE_MISSES = Counter("fastgw_cache_misses", "Requests on cached routes served by the integration "
                       "(AWS CacheMissCount)", ("api", "stage", "route"))
CACHE_ENTRIES = Gauge("fastgw_cache_entries", "Entries held, summed over workers", ("api", "stage"),
                      multiprocess_mode="livesum")
CACHE_BYTES = Gauge("fastgw_cache_bytes", "Bytes held as counted against the budget, summed over workers",
                    ("api", "stage"), multiprocess_mode="livesum")
CACHE_CAPACITY = Gauge("fastgw_cache_capacity_bytes", "The stage's cache budget on this host", ("api", "stage"),
                       multiprocess_mode="max")
# Upstream groups (fastgw/upstream_groups.py): per target. `available` is per worker (each ejects from
# its own traffic); the scrape shows the lowest, so 0 means at least one worker keeps it out.
TARGET_AVAILABLE = Gauge("fastgw_upstream_target_available", "1 while a group's target takes requests (healthy, "
                         "not ejected), 0 while it is out", ("group", "target"), multiprocess_mode="livemin")
TARGET_REQUESTS = Counter("fastgw_upstream_target_requests", "Exchanges sent to a group's target", ("group", "target"))
TARGET_FAILURES = Counter("fastgw_upstream_target_failures", "Failed exchanges (connect, reset, timeout, invalid, "
                          "502/503/504) on a group's target", ("group", "target"))
TARGET_EJECTIONS = Counter("fastgw_upstream_target_ejections", "Passive outlier ejections of a group's target",
                           ("group", "target"))
TARGET_HEALTH_CHECKS = Counter("fastgw_upstream_health_checks", "Active health checks of a group's target by result",
                               ("group", "target", "result"))
# Authorizers (fastgw/policies/authorizers).
AUTHORIZER_DECISIONS = Counter(
    "fastgw_authorizer_decisions", "Authorizer outcomes: allowed, denied, unauthorized, missing, invalid, error",
    ("api", "stage", "authorizer", "decision"),
)
AUTHORIZER_CACHE_HITS = Counter("fastgw_authorizer_cache_hits", "Authorizer results answered from the cache",
                                ("api", "stage", "authorizer"))
AUTHORIZER_DURATION = Histogram("fastgw_authorizer_duration_seconds", "Time an authorizer function or key fetch took",
                                ("api", "stage", "authorizer"), buckets=BUCKETS)

# WebSocket APIs (fastgw/websocket/api.py): AWS's ConnectCount, MessageCount, IntegrationError,
# ClientError, ExecutionError, and the connections open now.
WS_CONNECTS = Counter("fastgw_websocket_connects", "WebSocket connections accepted (AWS ConnectCount)",
                      ("api", "stage"))
WS_MESSAGES = Counter("fastgw_websocket_messages", "WebSocket messages routed (AWS MessageCount)",
                      ("api", "stage", "route"))
WS_ERRORS = Counter("fastgw_websocket_errors", "WebSocket failures by kind: integration (AWS IntegrationError), "
                    "client (ClientError: refused handshakes, limits, unmatched routes, slow consumers), "
                    "execution (ExecutionError)", ("api", "stage", "kind"))
WS_CONNECTIONS = Gauge("fastgw_websocket_connections", "WebSocket connections open, summed over workers",
                       ("api", "stage"), multiprocess_mode="livesum")


def worker_started() -> None:
    BUILD_INFO.labels(__version__, _accel.impl()).set(1)


def worker_stopped() -> None:
    # Drops this process's live gauges (in-flight) so that a stopped worker does not count.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(support_collectors_without_names=True)
    multiprocess.MultiProcessCollector(registry)
    return registry


def scrape() -> bytes:
    return generate_latest(_registry())


def samples() -> list[tuple[str, dict[str, str], float]]:
    """Every worker's samples summed, as (name, labels, value): what the dashboard reads instead of
    parsing the exposition text."""
    return [(s.name, s.labels, s.value) for family in _registry().collect() for s in family.samples]


class PendingCounts:
    """Counts of one labelled Counter kept as plain integers until the worker's next flush: the hot
    path's +1 is a dict update, not a lock and an mmap write. `key` is the last label's value (None:
    the counter has no further label)."""

    __slots__ = ("__weakref__", "counter", "counts", "labels")

    def __init__(self, counter: Counter, labels: tuple[str, ...]):
        self.counter = counter
        self.labels = labels
        self.counts: dict[str | None, int] = {}
        _PENDING.add(self)

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for key, n in counts.items():
            child = self.counter.labels(*self.labels) if key is None else self.counter.labels(*self.labels, key)
            child.inc(n)


_PENDING: weakref.WeakSet[PendingCounts] = weakref.WeakSet()


class WorkerMetrics:
    """Per-worker tallies, written to the shared metric files once per FLUSH_SECONDS.

    Updating prometheus-client's multi-process values costs a lock and an mmap write per value,
    several microseconds per request for a counter and two histograms; a request here only bumps
    plain integers. A scrape therefore lags the traffic by at most FLUSH_SECONDS (and a worker
    flushes on its way out).
    """

    # PERF: slots: every request counts `inflight` up and down
    __slots__ = ("tallies", "inflight", "_timer", "_loop")

    def __init__(self) -> None:
        # (route or stage or None, method) -> Tally; the Tally knows its label values.
        self.tallies: dict[tuple[object, str], Tally] = {}
        self.inflight = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = loop.call_later(FLUSH_SECONDS, self._tick)

    def _tick(self) -> None:
        self.flush()
        self._timer = self._loop.call_later(FLUSH_SECONDS, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    def tally(self, owner: object, method: str, api: str, stage: str, route: str, canary: str = "false") -> Tally:
        """The tally of one (route, method); `owner` is the compiled route (or the stage, for
        requests that matched none) so the lookup hashes an identity, not four strings."""
        key = (owner, method)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally((api, stage, route, method, canary), BUCKETS)
        return tally

    def flush(self) -> None:
        for tally in self.tallies.values():
            statuses, durations, integrations = tally.drain()
            labels = tally.labels
            for status, n in statuses.items():
                REQUESTS.labels(*labels, str(status)).inc(n)
            if statuses:
                _add_histogram(REQUEST_DURATION.labels(*labels), durations)
            if integrations is not None:
                _add_histogram(INTEGRATION_DURATION.labels(*labels[:3]), integrations)
        for pending in list(_PENDING):
            pending.flush()
        INFLIGHT.set(self.inflight)


def _add_histogram(child: Histogram, tally: list[float]) -> None:
    # prometheus-client keeps one (non-cumulative) value per bucket plus the sum; adding the
    # tallies directly is what `observe` would have done value by value.
    for index, count in enumerate(tally[:-1]):
        if count:
            child._buckets[index].inc(count)
    child._sum.inc(tally[-1])
