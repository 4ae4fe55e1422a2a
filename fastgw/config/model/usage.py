"""Usage plans, API keys, throttling and state (issue 4)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .reader import ROUTE_KEY, _join, _read_name_list, _Reader

STATE_BACKENDS = ("local", "redis")
FAIL_MODES = ("open", "closed")
QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")
# AWS: 20 to 128 characters. Visible ASCII only, since the value travels in a header.
API_KEY_VALUE = re.compile(r"^[\x21-\x7e]{20,128}$")
# AWS's per-method throttle key form, "/orders/{id}/GET", beside fastgw's route key "GET /orders/{id}".
AWS_METHOD_PATH = re.compile(r"^(/\S*)/([A-Z]+|\*)$")
QUOTA_MAX = (1 << 40) - 1  # what a shared-memory counter holds


@dataclass(slots=True)
class Throttle:
    """AWS's ThrottleSettings: steady requests per second and bucket size (GCRA)."""

    rateLimit: float
    burstLimit: int


@dataclass(slots=True)
class StateConfig:
    backend: str = "local"  # local: shared memory + SQLite on this host; redis: shared by every node
    path: str = ".fastgw"  # state directory; relative paths are relative to the config file
    url: str | None = None  # redis://host:port/db
    failMode: str = "open"  # Redis unreachable: open (per-node local limits) or closed (503)
    timeoutMillis: int = 50  # per Redis operation
    nodes: int = 1  # gateway nodes sharing the Redis: a cut-off node allows limit/nodes locally
    cluster: bool = False  # url (and seeds) name Redis Cluster seed nodes
    seeds: list[str] = field(default_factory=list)  # more seed nodes, "host:port"
    username: str | None = None  # Redis ACL user (or in the URL)
    password: str | None = None  # (or in the URL); ${env:NAME} keeps it out of the file
    tls: RedisTls | None = None  # client TLS files; a rediss:// URL turns TLS on with the system CAs
    # > 0: each worker leases tokens of the key-independent throttles (gateway, stage, method) from Redis,
    # about this many milliseconds of its traffic at a time, instead of one script per request
    leaseMillis: int = 0


@dataclass(slots=True)
class RedisTls:
    caFile: str | None = None
    certFile: str | None = None
    keyFile: str | None = None


@dataclass(slots=True)
class Quota:
    limit: int
    period: str  # DAY | WEEK | MONTH (UTC; weeks start on Monday)
    offset: int = 0  # requests subtracted from the limit in the initial period (AWS)


@dataclass(slots=True)
class UsagePlanStage:
    api: str
    stage: str
    throttle: dict[str, Throttle]  # route key ("GET /orders/{id}") -> per-key per-method throttle
    path: str = ""


@dataclass(slots=True)
class UsagePlan:
    name: str
    apiStages: list[UsagePlanStage]
    throttle: Throttle | None
    quota: Quota | None
    path: str = ""


@dataclass(slots=True)
class ApiKeyConfig:
    name: str
    value: str
    usagePlans: list[str]
    enabled: bool = True
    path: str = ""


def _read_throttle(r: _Reader, value: Any, path: str) -> Throttle | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("rateLimit", "burstLimit"))
    if not obj:
        return None
    missing = [k for k in ("rateLimit", "burstLimit") if k not in obj]
    for k in missing:
        r.error(_join(path, k), "is required")
    rate = r.number(obj, "rateLimit", path, -1.0)
    burst = r.integer(obj, "burstLimit", path, -1, 0, 1 << 40)
    if missing or rate < 0 or burst < 0:
        return None
    return Throttle(rate, burst)


def _read_state(r: _Reader, value: Any) -> StateConfig:
    path = "state"
    obj = r.mapping(value, path, ("backend", "path", "url", "failMode", "timeoutMillis", "nodes", "cluster",
                                  "seeds", "username", "password", "tls", "leaseMillis"))
    d = StateConfig()
    backend = r.string(obj, "backend", path, d.backend, choices=STATE_BACKENDS) or d.backend
    url = r.string(obj, "url", path)
    cluster = r.boolean(obj, "cluster", path, d.cluster)
    if backend == "redis":
        if not url:
            r.error(_join(path, "url"), "is required with backend: redis (redis://host:port/db)")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            r.error(_join(path, "url"), f"must be a redis://, rediss:// or unix:// URL; got '{url}'")
        elif cluster and (url.startswith("unix://") or urlsplit(url).path not in ("", "/", "/0")):
            r.error(_join(path, "url"), "a Redis Cluster is reached over TCP (redis:// or rediss://) and has "
                    f"only database 0; got '{url}'")
    elif cluster:
        r.error(_join(path, "cluster"), "needs backend: redis")
    seeds = _read_name_list(r, obj, "seeds", path)
    for i, seed in enumerate(seeds):
        host, _, port = seed.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            r.error(_join(_join(path, "seeds"), i), f"must be host:port; got '{seed}'")
    if seeds and not cluster:
        r.error(_join(path, "seeds"), "are Redis Cluster seed nodes: set cluster: true")
    lease = r.integer(obj, "leaseMillis", path, d.leaseMillis, 0, 10_000)
    if lease and backend != "redis":
        r.error(_join(path, "leaseMillis"), "leases tokens from Redis: needs backend: redis")
    return StateConfig(
        backend=backend,
        path=r.string(obj, "path", path, d.path) or d.path,
        url=url,
        failMode=r.string(obj, "failMode", path, d.failMode, choices=FAIL_MODES) or d.failMode,
        timeoutMillis=r.integer(obj, "timeoutMillis", path, d.timeoutMillis, 1, 10_000),
        nodes=r.integer(obj, "nodes", path, d.nodes, 1, 1000),
        cluster=cluster,
        seeds=seeds,
        username=r.string(obj, "username", path),
        password=r.string(obj, "password", path),
        tls=_read_tls(r, obj.get("tls"), _join(path, "tls")),
        leaseMillis=lease,
    )


def _read_tls(r: _Reader, value: Any, path: str) -> RedisTls | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("caFile", "certFile", "keyFile"))
    tls = RedisTls(r.string(obj, "caFile", path), r.string(obj, "certFile", path), r.string(obj, "keyFile", path))
    if (tls.certFile is None) != (tls.keyFile is None):
        r.error(path, "certFile and keyFile go together (a client certificate and its key)")
    return tls


def method_throttle_key(key: str) -> str | None:
    """'GET /orders/{id}' or AWS's '/orders/{id}/GET' -> 'GET /orders/{id}'; None if neither."""
    key = key.strip()
    match = ROUTE_KEY.match(key)
    if match is not None:
        return key
    match = AWS_METHOD_PATH.match(key)
    if match is not None:
        method = "ANY" if match.group(2) == "*" else match.group(2)
        return f"{method} {match.group(1) or '/'}"
    return None


def _read_usage_plans(r: _Reader, value: Any) -> list[UsagePlan]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.error("usagePlans", "must be a list")
        return []
    plans = []
    for i, item in enumerate(value):
        where = f"usagePlans[{i}]"
        obj = r.mapping(item, where, ("name", "description", "apiStages", "throttle", "quota"))
        if not obj:
            continue
        name = r.string(obj, "name", where, required=True)
        stages: list[UsagePlanStage] = []
        raw_stages = obj.get("apiStages")
        stages_path = _join(where, "apiStages")
        if raw_stages is None:
            r.error(stages_path, "is required: the API stages this plan applies to")
        elif not isinstance(raw_stages, list):
            r.error(stages_path, "must be a list of {api, stage, throttle}")
        else:
            for j, entry in enumerate(raw_stages):
                at = _join(stages_path, j)
                spec = r.mapping(entry, at, ("api", "stage", "throttle"))
                api = r.string(spec, "api", at, required=True)
                stage = r.string(spec, "stage", at, required=True)
                methods: dict[str, Throttle] = {}
                raw_methods = spec.get("throttle")
                if raw_methods is not None and not isinstance(raw_methods, dict):
                    r.error(_join(at, "throttle"), 'must map route keys ("GET /orders/{id}") to throttles')
                elif raw_methods:
                    if len(raw_methods) > 20:
                        r.error(_join(at, "throttle"), "at most 20 method throttles per stage (AWS)")
                    for key, setting in raw_methods.items():
                        key_path = _join(_join(at, "throttle"), key)
                        route_key = method_throttle_key(str(key))
                        if route_key is None:
                            r.error(key_path, "must be a route key like 'GET /orders/{id}' (or AWS's "
                                    "'/orders/{id}/GET')")
                            continue
                        throttle = _read_throttle(r, setting, key_path)
                        if throttle is not None:
                            methods[route_key] = throttle
                if api is not None and stage is not None:
                    stages.append(UsagePlanStage(api, stage, methods, at))
        throttle = _read_throttle(r, obj.get("throttle"), _join(where, "throttle"))
        quota = None
        raw_quota = obj.get("quota")
        if raw_quota is not None:
            at = _join(where, "quota")
            spec = r.mapping(raw_quota, at, ("limit", "period", "offset"))
            if "limit" not in spec:
                r.error(_join(at, "limit"), "is required")
            limit = r.integer(spec, "limit", at, -1, 0, QUOTA_MAX)
            period = r.string(spec, "period", at, required=True, choices=QUOTA_PERIODS)
            offset = r.integer(spec, "offset", at, 0, 0, QUOTA_MAX)
            if limit >= 0 and offset > limit:
                r.error(_join(at, "offset"), f"must not exceed the limit ({limit})")
            if limit >= 0 and period is not None:
                quota = Quota(limit, period, min(offset, limit))
        if name is not None:
            plans.append(UsagePlan(name, stages, throttle, quota, where))
    return plans


def _read_api_keys(r: _Reader, value: Any) -> list[ApiKeyConfig]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.error("apiKeys", "must be a list")
        return []
    keys = []
    for i, item in enumerate(value):
        where = f"apiKeys[{i}]"
        obj = r.mapping(item, where, ("name", "description", "value", "usagePlans", "enabled"))
        if not obj:
            continue
        name = r.string(obj, "name", where, required=True)
        if name is not None and not 1 <= len(name) <= 1024:
            r.error(_join(where, "name"), "must be 1 to 1024 characters")
        secret = r.string(obj, "value", where, required=True)
        if secret is not None and not API_KEY_VALUE.match(secret):
            # Never echo the value: it is a secret.
            r.error(_join(where, "value"), f"must be 20 to 128 visible ASCII characters (got {len(secret)} "
                    "characters)")
            secret = None
        plans = _read_name_list(r, obj, "usagePlans", where)
        enabled = r.boolean(obj, "enabled", where, True)
        if name is not None and secret is not None:
            keys.append(ApiKeyConfig(name, secret, plans, enabled, where))
    return keys
