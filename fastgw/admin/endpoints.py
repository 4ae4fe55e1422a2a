"""The admin API's endpoint table: every (method, path) the admin port answers, and its handler.

    GET  /healthz, /livez          the main process answers (public)
    GET  /readyz                   200 once every worker serves the current config, else 503 (public)
    GET  /metrics                  Prometheus exposition of every worker
    POST /reload                   compile the config file again; 202 once every worker runs it
    POST /cache/flush?api=&stage=  AWS FlushStageCache (either may be left out: every one)
    /canary...                     fastgw/admin/canary.py
    /keys..., /usage               fastgw/admin/usage.py
    /dashboard...                  fastgw/admin/dashboard.py (public: read-only)
"""

from __future__ import annotations

from typing import Any

from .. import metrics, runtime
from ..config.loader import ConfigError
from ..policies.cache import stage as cache
from . import canary, dashboard, usage
from .http import Endpoint, Request, Text


def health(request: Request) -> tuple[int, Any]:
    return 200, {"status": "ok"}


def ready(request: Request) -> tuple[int, Any]:
    ok, status = runtime.readiness()
    return (200 if ok else 503), {"status": status}


def scrape(request: Request) -> tuple[int, Any]:
    return 200, Text(metrics.scrape(), "text/plain; version=0.0.4; charset=utf-8")


def reload(request: Request) -> tuple[int, Any]:
    current = runtime.RUNTIME
    assert current is not None
    try:
        runtime.compile_file(current.config_path, current.overrides)
    except ConfigError as exc:
        runtime.reload_rejected(exc, "POST /reload")
        return 400, {"message": "config rejected", "problems": [str(p) for p in exc.problems]}
    if not runtime.reload_config("POST /reload"):
        return 400, {"message": "config rejected (see the log)"}
    # Answered once every worker runs the new plan (at most 10 s).
    generation = runtime.LIVE.generation if runtime.LIVE is not None else 0
    workers = runtime.wait_for_workers(generation, current.plan)
    return 202, {"message": "reload accepted", "generation": generation, "workers": workers}


def flush_cache(request: Request) -> tuple[int, Any]:
    """In every worker of this host and, for stages with the Redis tier, on every node."""
    current = runtime.RUNTIME
    assert current is not None
    return cache.flush(current.plan.cache, request.arg("api"), request.arg("stage"))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/healthz", health, public=True),
    Endpoint("GET", "/livez", health, public=True),
    Endpoint("GET", "/readyz", ready, public=True),
    Endpoint("GET", "/metrics", scrape),
    Endpoint("POST", "/reload", reload),
    Endpoint("POST", "/cache/flush", flush_cache),
    *canary.ENDPOINTS,
    *usage.ENDPOINTS,
    *dashboard.ENDPOINTS,
)
