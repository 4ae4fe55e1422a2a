"""Prometheus metrics, correct across granian's worker processes.

prometheus-client's multiprocess mode keeps each worker's values in memory-mapped files under
PROMETHEUS_MULTIPROC_DIR; the admin endpoint (in the main process) sums them at scrape time. The
directory must be set before prometheus_client is first imported, which is why `fastgw serve`
sets it before importing this module.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from . import _accel
from ._version import __version__

# Latency buckets in seconds, from sub-millisecond (a cache hit) to the 29 s integration timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "fastgw_requests", "Requests answered (AWS Count, 4XXError, 5XXError by status)",
    ("api", "stage", "route", "method", "status"),
)
REQUEST_DURATION = Histogram(
    "fastgw_request_duration_seconds", "Time from request to response head (AWS Latency)",
    ("api", "stage", "route", "method"), buckets=BUCKETS,
)
INTEGRATION_DURATION = Histogram(
    "fastgw_integration_duration_seconds", "Time the integration took (AWS IntegrationLatency)",
    ("api", "stage", "route"), buckets=BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "fastgw_upstream_errors", "Failed upstream exchanges by gateway response type",
    ("api", "stage", "route", "kind"),
)
INFLIGHT = Gauge("fastgw_inflight_requests", "Requests being handled", multiprocess_mode="livesum")
BUILD_INFO = Gauge(
    "fastgw_build_info", "fastgw version and kernel implementation (c: Cython core, py: pure Python)",
    ("version", "impl"), multiprocess_mode="max",
)


def worker_started() -> None:
    BUILD_INFO.labels(__version__, _accel.IMPL).set(1)


def worker_stopped() -> None:
    # Drops this process's live gauges (in-flight) so that a stopped worker does not count.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


def scrape() -> bytes:
    registry = CollectorRegistry(support_collectors_without_names=True)
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


class RouteMetrics:
    """The metric children of one route, resolved once so a request does no label lookups."""

    __slots__ = ("labels", "method", "duration", "integration", "by_status")

    def __init__(self, api: str, stage: str, route: str, method: str):
        self.labels = (api, stage, route)
        self.method = method
        self.duration = REQUEST_DURATION.labels(api, stage, route, method)
        self.integration = INTEGRATION_DURATION.labels(api, stage, route)
        self.by_status: dict[int, Counter] = {}

    def count(self, status: int) -> None:
        child = self.by_status.get(status)
        if child is None:
            child = self.by_status[status] = REQUESTS.labels(*self.labels, self.method, str(status))
        child.inc()
