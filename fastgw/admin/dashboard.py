"""The dashboard on the admin port: a page (fastgw/admin/static/) and the one JSON snapshot it polls.

    GET /dashboard             the page (plain HTML, CSS and JavaScript shipped in the package)
    GET /dashboard/{file}      its script and style sheet
    GET /dashboard/data        the snapshot: routes, stages and canaries, live traffic per route,
                               usage per key and plan, cache per stage, upstream group targets,
                               WebSocket connections

Read-only, so public like health and readiness; its actions (promote, rollback, canary percentage)
call the canary endpoints, which take the admin token. Nothing secret is in the snapshot: API keys
appear by id and name, never by value.

Off the request path: everything here runs in the main process. Live rates come from the workers'
own metric files (fastgw/metrics.py), sampled by a thread that runs only while someone looks (it
stops SAMPLER_IDLE_S after the last snapshot was asked for), so a gateway nobody watches pays nothing.
"""

from __future__ import annotations

import bisect
import datetime as dt
import importlib.resources
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import metrics, runtime
from .._version import __version__
from ..canary import describe
from ..plan import route_table
from ..policies.usage.service import UsageError
from . import usage
from .http import Endpoint, Request, Text

log = logging.getLogger("fastgw.server")

SAMPLE_EVERY_S = 2.0
WINDOW_S = 10.0  # rates and latency quantiles are over the last WINDOW_S seconds
HISTORY = 30  # samples kept per route for the page's sparklines (a minute at SAMPLE_EVERY_S)
SAMPLER_IDLE_S = 60.0
MAX_KEYS = 200  # usage rows in one snapshot: a bounded answer whatever the number of keys

# Same-origin only: the page loads nothing from elsewhere and cannot be framed.
SECURITY_HEADERS = (
    ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)
STATIC = {"": ("dashboard.html", "text/html; charset=utf-8"),
          "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}


# -- live traffic: counters and histogram buckets per route, sampled -----------------------------------
RouteId = tuple[str, str, str]  # (api, stage, route)


@dataclass(slots=True)
class RouteCounts:
    requests: float = 0.0
    errors4: float = 0.0
    errors5: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


@dataclass(slots=True)
class Sample:
    at: float
    routes: dict[RouteId, RouteCounts]
    cache: dict[tuple[str, str], dict[str, float]]  # (api, stage) -> hits, misses, entries, bytes, capacity
    websocket: dict[tuple[str, str], float]  # (api, stage) -> live connections
    targets: dict[tuple[str, str], dict[str, float]]  # (group, target) -> available, requests, failures, ejections


def read_sample(now: float) -> Sample:
    routes: dict[RouteId, RouteCounts] = {}
    cache: dict[tuple[str, str], dict[str, float]] = {}
    websocket: dict[tuple[str, str], float] = {}
    targets: dict[tuple[str, str], dict[str, float]] = {}
    for name, labels, value in metrics.samples():
        if name == "fastgw_requests_total":
            counts = routes.setdefault((labels["api"], labels["stage"], labels["route"]), RouteCounts())
            counts.requests += value
            status = labels.get("status", "")
            if status.startswith("4"):
                counts.errors4 += value
            elif status.startswith("5"):
                counts.errors5 += value
        elif name == "fastgw_request_duration_seconds_bucket":
            counts = routes.setdefault((labels["api"], labels["stage"], labels["route"]), RouteCounts())
            bound = float(labels["le"])
            counts.buckets[bound] = counts.buckets.get(bound, 0.0) + value
        elif name in _CACHE_FIELDS:
            entry = cache.setdefault((labels["api"], labels["stage"]), dict.fromkeys(_CACHE_FIELDS.values(), 0.0))
            entry[_CACHE_FIELDS[name]] += value
        elif name == "fastgw_websocket_connections":
            key = (labels.get("api", ""), labels.get("stage", ""))
            websocket[key] = websocket.get(key, 0.0) + value
        elif name in _TARGET_FIELDS:
            entry = targets.setdefault((labels["group"], labels["target"]),
                                       dict.fromkeys(_TARGET_FIELDS.values(), 0.0))
            entry[_TARGET_FIELDS[name]] += value
    return Sample(now, routes, cache, websocket, targets)


_CACHE_FIELDS = {"fastgw_cache_hits_total": "hits", "fastgw_cache_misses_total": "misses",
                 "fastgw_cache_entries": "entries", "fastgw_cache_bytes": "bytes",
                 "fastgw_cache_capacity_bytes": "capacity"}


_TARGET_FIELDS = {"fastgw_upstream_target_available": "available", "fastgw_upstream_target_requests_total": "requests",
                  "fastgw_upstream_target_failures_total": "failures",
                  "fastgw_upstream_target_ejections_total": "ejections"}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets (upper bound -> count, +Inf included):
    linear interpolation inside the bucket the rank falls in; None without observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    counts = [buckets[b] for b in bounds]
    index = bisect.bisect_left(counts, rank)
    index = min(index, len(bounds) - 1)
    if bounds[index] == float("inf"):
        # Above the last finite bound: Prometheus answers that bound.
        return bounds[index - 1] if index > 0 else None
    lower = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    inside = counts[index] - below
    if inside <= 0:
        return bounds[index]
    return lower + (bounds[index] - lower) * (rank - below) / inside


def _delta(new: RouteCounts, old: RouteCounts | None) -> RouteCounts:
    if old is None:
        return new
    # A counter that went down means a worker's files were removed (it restarted): start over from 0.
    if new.requests < old.requests:
        return new
    return RouteCounts(new.requests - old.requests, new.errors4 - old.errors4, new.errors5 - old.errors5,
                       {b: c - old.buckets.get(b, 0.0) for b, c in new.buckets.items()})


class Sampler:
    """Samples the metrics every SAMPLE_EVERY_S while the dashboard is open, keeping a minute."""

    def __init__(self) -> None:
        self.samples: deque[Sample] = deque(maxlen=HISTORY + 1)
        self.lock = threading.Lock()
        self.last_asked = 0.0
        self.thread: threading.Thread | None = None

    def latest(self) -> list[Sample]:
        """The samples so far (oldest first), taking one now; starts the sampling thread if idle."""
        now = time.monotonic()
        with self.lock:
            self.last_asked = now
            if not self.samples or now - self.samples[-1].at >= 0.5:
                self.samples.append(read_sample(now))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="fastgw-dashboard", daemon=True)
                self.thread.start()
            return list(self.samples)

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_EVERY_S)
            with self.lock:
                now = time.monotonic()
                if now - self.last_asked > SAMPLER_IDLE_S:
                    self.samples.clear()
                    self.thread = None
                    return
                try:
                    self.samples.append(read_sample(now))
                except Exception:  # noqa: BLE001 - a torn metric file must not end the sampler
                    log.exception("dashboard: could not read the metrics")


SAMPLER = Sampler()


def live_traffic(samples: list[Sample]) -> list[dict[str, Any]]:
    """Per route: rate, 4xx and 5xx rates and p50/p99 latency over the last WINDOW_S, and the rate
    history for a sparkline. Rates are None until two samples exist."""
    latest = samples[-1]
    base = next((s for s in samples if latest.at - s.at <= WINDOW_S and s is not latest), None)
    rows = []
    for route_id, counts in sorted(latest.routes.items()):
        row: dict[str, Any] = {"api": route_id[0], "stage": route_id[1], "route": route_id[2],
                               "requests": int(counts.requests), "rate": None, "rate4xx": None, "rate5xx": None,
                               "p50": None, "p99": None, "history": []}
        window = _delta(counts, base.routes.get(route_id)) if base is not None else counts
        if base is not None:
            seconds = latest.at - base.at
            row["rate"] = window.requests / seconds
            row["rate4xx"] = window.errors4 / seconds
            row["rate5xx"] = window.errors5 / seconds
        # Latency over the window when it saw traffic, else since the start (labelled by `latencyOver`).
        over = window if base is not None and window.requests > 0 else counts
        row["latencyOver"] = "window" if over is window and base is not None else "total"
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            value = quantile(q, over.buckets)
            row[name] = None if value is None else value * 1000.0
        for older, newer in zip(samples, samples[1:], strict=False):
            step = _delta(newer.routes.get(route_id, RouteCounts()), older.routes.get(route_id))
            row["history"].append(round(step.requests / max(newer.at - older.at, 1e-6), 3))
        rows.append(row)
    return rows


def cache_rows(sample: Sample) -> list[dict[str, Any]]:
    rows = []
    for (api, stage), entry in sorted(sample.cache.items()):
        lookups = entry["hits"] + entry["misses"]
        rows.append({"api": api, "stage": stage, "hits": int(entry["hits"]), "misses": int(entry["misses"]),
                     "hitRatio": entry["hits"] / lookups if lookups else None, "entries": int(entry["entries"]),
                     "bytes": int(entry["bytes"]), "capacity": int(entry["capacity"])})
    return rows


def usage_rows() -> list[dict[str, Any]]:
    """Per key and plan: requests today and the quota left in the current period (AWS GetUsage)."""
    try:
        service = usage.service()
    except UsageError:
        return []
    today = dt.datetime.now(dt.UTC).date().isoformat()
    rows = []
    for record in service.list_keys()[:MAX_KEYS]:
        public = record.public()
        try:
            answers = service.get_usage(record.id, today, today)
        except UsageError:
            answers = []
        plans = {a["usagePlanId"]: a["items"][record.id][-1] for a in answers}
        for plan_name in record.plans or [None]:
            used, remaining = plans.get(plan_name, (None, None)) if plan_name else (None, None)
            plan = service.setup.plans.get(plan_name) if plan_name else None
            quota = plan.quota if plan is not None else None
            rows.append({"keyId": public["id"], "name": public["name"], "enabled": public["enabled"],
                         "plan": plan_name, "today": used, "remaining": remaining,
                         "limit": quota.limit if quota is not None else None,
                         "period": quota.period if quota is not None else None})
    return rows


def snapshot(request: Request) -> tuple[int, Any]:
    current = runtime.RUNTIME
    assert current is not None
    plan = current.plan
    samples = SAMPLER.latest()
    ready, status = runtime.readiness()
    return 200, {
        "version": __version__,
        "generation": runtime.LIVE.generation if runtime.LIVE is not None else 0,
        "ready": ready, "status": status,
        "tokenRequired": current.plan.server.adminToken is not None,
        "sampleSeconds": SAMPLE_EVERY_S, "windowSeconds": WINDOW_S,
        "routes": route_table(plan),
        "stages": describe(plan),
        "traffic": live_traffic(samples),
        "usage": usage_rows(),
        "cache": cache_rows(samples[-1]),
        "websocket": [{"api": api, "stage": stage, "connections": int(n)}
                      for (api, stage), n in sorted(samples[-1].websocket.items())],
        "targets": [{"group": group, "target": target, "available": bool(entry["available"]),
                     "requests": int(entry["requests"]), "failures": int(entry["failures"]),
                     "ejections": int(entry["ejections"])}
                    for (group, target), entry in sorted(samples[-1].targets.items())],
    }


def page(request: Request) -> tuple[int, Any]:
    name = request.parts[1] if len(request.parts) > 1 else ""
    found = STATIC.get(name)
    if found is None:
        return 404, {"message": "Not Found"}
    filename, content_type = found
    body = importlib.resources.files(__package__).joinpath("static", filename).read_bytes()
    return 200, Text(body, content_type, SECURITY_HEADERS)


ENDPOINTS = (
    Endpoint("GET", "/dashboard", page, public=True),
    Endpoint("GET", "/dashboard/data", snapshot, public=True),
    Endpoint("GET", "/dashboard/*", page, public=True),
)
