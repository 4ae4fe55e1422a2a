"""The response cache (issue 5): a stage's cache and a route's own cache settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .reader import _join, _read_name_list, _Reader
from .usage import API_KEY_VALUE

CACHE_BACKENDS = ("local", "redis")
CACHE_STRATEGIES = ("FAIL_WITH_403", "SUCCEED_WITH_RESPONSE_HEADER", "SUCCEED_WITHOUT_RESPONSE_HEADER")
# AWS's cache cluster sizes (cacheClusterSize, GB); accepted as a byte budget of that many GiB.
AWS_CACHE_SIZES = ("0.5", "1.6", "6.1", "13.5", "28.4", "58.2", "118", "237")
CACHE_TTL_MAX = 3600  # AWS: 0 to 3600 s
CACHE_CAPACITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*$")
_CACHE_UNITS = {None: 1, "B": 1, "KB": 10**3, "KiB": 1 << 10, "MB": 10**6, "MiB": 1 << 20, "GB": 10**9,
                "GiB": 1 << 30, "TB": 10**12, "TiB": 1 << 40}
CACHE_KEY_PARAMETER = re.compile(r"^method\.request\.(path|querystring|header|multivaluequerystring|"
                                 r"multivalueheader)\.([^\s.][^\s]*)$")


@dataclass(slots=True)
class StageCacheConfig:
    """A stage's cache (AWS cacheClusterEnabled/Size and the stage-wide method settings)."""

    enabled: bool = True  # the section's presence turns it on; `enabled: false` turns it off
    capacity: int = 1 << 29  # bytes for the whole host (AWS's default size, 0.5 GB)
    ttlInSeconds: int = 300
    requireAuthorizationForCacheControl: bool = True
    unauthorizedCacheControlHeaderStrategy: str = "SUCCEED_WITH_RESPONSE_HEADER"
    invalidationTokens: list[str] = field(default_factory=list)  # fastgw's execute-api:InvalidateCache
    debugHeader: bool = False  # X-Cache: Hit | Miss
    backend: str = "local"  # local: per-worker memory; redis: plus a Redis tier shared by every node
    url: str | None = None  # Redis URL; default: state.url (and the state section's cluster and TLS settings)
    cluster: bool = False  # with url: it names a Redis Cluster seed node
    timeoutMillis: int = 50  # per Redis operation
    path: str = ""


@dataclass(slots=True)
class RouteCacheConfig:
    """A route's own cache settings (AWS method settings and cacheKeyParameters)."""

    enabled: bool | None = None  # None: GET and HEAD are cached, other methods are not
    ttlInSeconds: int | None = None  # None: the stage's
    keyParameters: list[str] | None = None  # None: the integration's cacheKeyParameters (OpenAPI), if any
    path: str = ""


def _read_capacity(r: _Reader, obj: dict[str, Any], path: str) -> int | None:
    capacity, size = obj.get("capacity"), obj.get("size")
    if capacity is not None and size is not None:
        r.error(_join(path, "size"), "give either capacity or AWS's size, not both")
        return None
    if size is not None:
        text = str(size).strip()
        if isinstance(size, bool) or text not in AWS_CACHE_SIZES:
            r.error(_join(path, "size"), f"must be one of AWS's cache sizes {', '.join(AWS_CACHE_SIZES)} (GB)")
            return None
        return int(float(text) * (1 << 30))
    if capacity is None:
        return None
    match = CACHE_CAPACITY.match(str(capacity)) if not isinstance(capacity, bool) else None
    if match is None:
        r.error(_join(path, "capacity"), "must be a size in bytes, like 67108864, 64MiB or 1.5GB")
        return None
    value = int(float(match.group(1)) * _CACHE_UNITS[match.group(2)])
    if not 64 * 1024 <= value <= 1 << 40:
        r.error(_join(path, "capacity"), "must be between 64KiB and 1TiB")
        return None
    return value


def _read_stage_cache(r: _Reader, value: Any, path: str) -> StageCacheConfig | None:
    if value is None:
        return None
    known = tuple(f for f in StageCacheConfig.__dataclass_fields__ if f not in ("path", "capacity"))
    obj = r.mapping(value, path, (*known, "capacity", "size"))
    d = StageCacheConfig()
    tokens = _read_name_list(r, obj, "invalidationTokens", path)
    for i, token in enumerate(tokens):
        if not API_KEY_VALUE.match(token):  # never echoed: a secret
            r.error(_join(_join(path, "invalidationTokens"), i), "must be 20 to 128 visible ASCII characters")
    backend = r.string(obj, "backend", path, d.backend, choices=CACHE_BACKENDS) or d.backend
    url = r.string(obj, "url", path)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        r.error(_join(path, "url"), f"must be a redis://, rediss:// or unix:// URL; got '{url}'")
    return StageCacheConfig(
        enabled=r.boolean(obj, "enabled", path, d.enabled),
        capacity=_read_capacity(r, obj, path) or d.capacity,
        ttlInSeconds=r.integer(obj, "ttlInSeconds", path, d.ttlInSeconds, 0, CACHE_TTL_MAX),
        requireAuthorizationForCacheControl=r.boolean(obj, "requireAuthorizationForCacheControl", path,
                                                      d.requireAuthorizationForCacheControl),
        unauthorizedCacheControlHeaderStrategy=r.string(
            obj, "unauthorizedCacheControlHeaderStrategy", path, d.unauthorizedCacheControlHeaderStrategy,
            choices=CACHE_STRATEGIES) or d.unauthorizedCacheControlHeaderStrategy,
        invalidationTokens=tokens,
        debugHeader=r.boolean(obj, "debugHeader", path, d.debugHeader),
        backend=backend,
        url=url,
        cluster=r.boolean(obj, "cluster", path, d.cluster),
        timeoutMillis=r.integer(obj, "timeoutMillis", path, d.timeoutMillis, 1, 10_000),
        path=path,
    )


def _read_route_cache(r: _Reader, value: Any, path: str) -> RouteCacheConfig | None:
    if value is None:
        return None
    obj = r.mapping(value, path, ("enabled", "ttlInSeconds", "keyParameters"))
    enabled = r.boolean(obj, "enabled", path, False) if "enabled" in obj else None
    ttl = r.integer(obj, "ttlInSeconds", path, -1, 0, CACHE_TTL_MAX) if "ttlInSeconds" in obj else None
    params = None
    if "keyParameters" in obj:
        params = _read_name_list(r, obj, "keyParameters", path)
        for i, name in enumerate(params):
            if not CACHE_KEY_PARAMETER.match(name):
                r.error(_join(_join(path, "keyParameters"), i), "must be method.request.path.NAME, "
                        f"method.request.querystring.NAME or method.request.header.NAME; got '{name}'")
    return RouteCacheConfig(enabled, ttl if ttl is None or ttl >= 0 else None, params, path)
