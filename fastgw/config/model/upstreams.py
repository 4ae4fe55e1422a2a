"""Upstream groups (issue 17): named sets of targets an integration URI's host can name, with load
balancing, active health checks and passive outlier ejection.

    upstreamGroups:
      orders:
        targets: ["10.0.0.5:8080", {target: "10.0.0.6:8080", weight: 2}]
        balance: round_robin            # or least_request
        healthCheck: {path: /health, intervalMs: 5000, timeoutMs: 1000, unhealthyThreshold: 2, healthyThreshold: 2}
        outlierDetection: {consecutiveErrors: 5, baseEjectionMs: 30000, maxEjectionPercent: 100}
        circuitBreaker: {maxRequests: 1024}   # requests in flight to the group per worker; more: 503 at once
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .reader import _join, _Reader

BALANCES = ("round_robin", "least_request")
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]*):(\d{1,5})$")


@dataclass(frozen=True, slots=True)
class GroupTarget:
    host: str  # without brackets
    port: int
    weight: int = 1

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    path: str = "/health"
    intervalMs: int = 5000
    timeoutMs: int = 1000
    unhealthyThreshold: int = 2  # consecutive failed checks that mark a target unhealthy
    healthyThreshold: int = 2  # consecutive passed checks that bring it back
    expectedStatuses: tuple[int, int] = (200, 399)  # a check passes on a status in this range


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutiveErrors: int = 5  # connect failures, resets, timeouts and 502/503/504 answers in a row
    baseEjectionMs: int = 30000  # ejected for this long times the number of ejections so far (Envoy)
    maxEjectionMs: int = 300000
    maxEjectionPercent: int = 100  # at most this share of the targets ejected at once


@dataclass(frozen=True, slots=True)
class UpstreamGroup:
    name: str
    targets: tuple[GroupTarget, ...]
    balance: str = "round_robin"
    healthCheck: HealthCheck | None = None
    outlierDetection: OutlierDetection = field(default_factory=OutlierDetection)
    path: str = ""
    # Requests in flight to the group's targets together, per worker, past which the next is answered
    # 503 at once (Envoy's per-cluster circuit breaker `max_requests`); None: server.upstream.maxRequests.
    maxRequests: int | None = None


def _read_target(r: _Reader, item: Any, where: str) -> GroupTarget | None:
    weight = 1
    if isinstance(item, dict):
        obj = r.mapping(item, where, ("target", "weight"))
        text = r.string(obj, "target", where, required=True)
        weight = r.integer(obj, "weight", where, 1, 1, 1000)
    elif isinstance(item, str):
        text = item
    else:
        r.error(where, "must be 'host:port' or {target: 'host:port', weight: N}")
        return None
    if text is None:
        return None
    found = HOST_PORT.match(text)
    if found is None or not 0 < int(found.group(2)) < 65536:
        r.error(where, f"must be host:port (an IPv6 address in brackets); got '{text}'")
        return None
    return GroupTarget(found.group(1).strip("[]"), int(found.group(2)), weight)


def read_upstream_groups(r: _Reader, root: dict[str, Any], key: str) -> dict[str, UpstreamGroup]:
    value = root.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(key, "must be a mapping of group name -> {targets, balance, healthCheck, outlierDetection, "
                "circuitBreaker}")
        return {}
    groups = {}
    for name, raw in value.items():
        where = _join(key, str(name))
        if not GROUP_NAME.match(str(name)):
            r.error(where, "a group name is letters, digits, '.', '_' and '-' (it is the host of integration URIs)")
            continue
        obj = r.mapping(raw, where, ("targets", "balance", "healthCheck", "outlierDetection", "circuitBreaker"))
        raw_targets = obj.get("targets")
        if not isinstance(raw_targets, list) or not raw_targets:
            r.error(_join(where, "targets"), "must be a non-empty list of 'host:port'")
            continue
        targets = [t for i, item in enumerate(raw_targets)
                   if (t := _read_target(r, item, f"{_join(where, 'targets')}[{i}]")) is not None]
        if len({t.address for t in targets}) != len(targets):
            r.error(_join(where, "targets"), "lists a target twice")
        balance = r.string(obj, "balance", where, "round_robin", choices=BALANCES) or "round_robin"
        health = None
        if obj.get("healthCheck") is not None:
            hwhere = _join(where, "healthCheck")
            h = r.mapping(obj["healthCheck"], hwhere, ("path", "intervalMs", "timeoutMs", "unhealthyThreshold",
                                                       "healthyThreshold", "expectedStatuses"))
            path = r.string(h, "path", hwhere, "/health") or "/health"
            if not path.startswith("/") or any(c in path for c in " \r\n\t"):
                r.error(_join(hwhere, "path"), f"must be a path starting with '/'; got '{path}'")
            statuses = h.get("expectedStatuses", [200, 399])
            if not (isinstance(statuses, list) and len(statuses) == 2 and all(isinstance(s, int) for s in statuses)
                    and 100 <= statuses[0] <= statuses[1] <= 599):
                r.error(_join(hwhere, "expectedStatuses"), "must be [low, high], HTTP statuses (default [200, 399])")
                statuses = [200, 399]
            interval = r.integer(h, "intervalMs", hwhere, 5000, 100, 3_600_000)
            health = HealthCheck(path, interval, r.integer(h, "timeoutMs", hwhere, min(1000, interval), 10, 60_000),
                                 r.integer(h, "unhealthyThreshold", hwhere, 2, 1, 100),
                                 r.integer(h, "healthyThreshold", hwhere, 2, 1, 100), (statuses[0], statuses[1]))
        owhere = _join(where, "outlierDetection")
        o = r.mapping(obj.get("outlierDetection"), owhere, ("consecutiveErrors", "baseEjectionMs", "maxEjectionMs",
                                                             "maxEjectionPercent"))
        outlier = OutlierDetection(r.integer(o, "consecutiveErrors", owhere, 5, 1, 10_000),
                                   r.integer(o, "baseEjectionMs", owhere, 30000, 10, 86_400_000),
                                   r.integer(o, "maxEjectionMs", owhere, 300000, 10, 86_400_000),
                                   r.integer(o, "maxEjectionPercent", owhere, 100, 0, 100))
        cwhere = _join(where, "circuitBreaker")
        breaker = r.mapping(obj.get("circuitBreaker"), cwhere, ("maxRequests",))
        max_requests = r.integer(breaker, "maxRequests", cwhere, 0, 1, 1_000_000) or None
        groups[str(name)] = UpstreamGroup(str(name), tuple(targets), balance, health, outlier, where, max_requests)
    return groups
