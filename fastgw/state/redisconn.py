"""Redis connections, for every user of Redis (usage checks, the cache tier, the events channel, the
CLI): one Redis server, or a Redis Cluster through redis-py's cluster client.

    RedisLink     where and how to connect (compiled once from `state:` or a stage's `cache:`)
    async_client  a worker's client: a bounded pool, every socket operation bounded by `timeout`
    sync_client   the main process's and the CLI's client

With `cluster: true` the URL and `seeds` are seed nodes: the client asks one of them for the slot map
(CLUSTER SLOTS), keeps one bounded connection pool per node, follows MOVED and ASK itself, and
reloads the map after a connection error (a failed master) or a MOVED (a promoted replica).
Every Lua script and multi-key command fastgw sends names keys of one hash tag (`{...}`), so one
slot, so one node serves it (fastgw/policies/usage/redis.py, fastgw/policies/cache/redis.py).
The client's own retries are kept to one: the caller's budget (the usage stage's `asyncio.timeout`)
bounds the wait, and a failure is answered by the caller's failMode, not by waiting longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis as redis_sync
import redis.asyncio as redis_async
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

# What a failed Redis call raises: redis-py's errors (the cluster client's own are not RedisErrors),
# socket errors, and the caller's budget running out.
ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RedisLink:
    url: str
    cluster: bool = False
    seeds: tuple[str, ...] = ()  # more cluster seed nodes, "host:port"
    username: str | None = None  # ACL user (or in the URL)
    password: str | None = None
    tls_ca: str | None = None  # TLS: rediss:// URL, or any of these files
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://") or any((self.tls_ca, self.tls_cert, self.tls_key))

    def describe(self) -> str:
        """The URL without credentials, for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        where = f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}{parts.path}"
        return where + (" (cluster)" if self.cluster else "")


def link_of(state: Any) -> RedisLink | None:
    """The state section's (config.model.StateConfig) link; None without a URL."""
    if not state.url:
        return None
    tls = state.tls
    return RedisLink(state.url, state.cluster, tuple(state.seeds), state.username, state.password,
                     tls.caFile if tls else None, tls.certFile if tls else None, tls.keyFile if tls else None)


def link_from_data(state: Any) -> RedisLink | None:
    """The link of raw config data's `state` section (before the model reads it: the canary overlay
    runs on the data); None unless it says `backend: redis` with a URL."""
    if not isinstance(state, dict) or state.get("backend") != "redis" or not isinstance(state.get("url"), str):
        return None
    tls = state.get("tls") if isinstance(state.get("tls"), dict) else {}
    seeds = tuple(str(seed) for seed in state.get("seeds") or () if isinstance(seed, str | int))
    return RedisLink(state["url"], state.get("cluster") is True, seeds, state.get("username"), state.get("password"),
                     tls.get("caFile"), tls.get("certFile"), tls.get("keyFile"))


def _options(link: RedisLink, timeout: float) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                               "health_check_interval": 0}
    if link.username is not None:
        options["username"] = link.username
    if link.password is not None:
        options["password"] = link.password
    if link.tls and not link.url.startswith("rediss://"):
        options["ssl"] = True
    if link.tls:
        options["ssl_ca_certs"] = link.tls_ca
        options["ssl_certfile"] = link.tls_cert
        options["ssl_keyfile"] = link.tls_key
    return options


def _seeds(link: RedisLink, node_class: Any) -> list[Any]:
    nodes = []
    for seed in link.seeds:
        host, _, port = seed.rpartition(":")
        if host and port.isdigit():  # the config reader reports the others (a raw-data link may have them)
            nodes.append(node_class(host.strip("[]"), int(port)))
    return nodes


def async_client(link: RedisLink, timeout: float, pool_size: int, retries: int = 1) -> Any:
    """A worker's client. lib_name/lib_version None: no CLIENT SETINFO round trips per new connection.
    `retries`: how often a cluster client sends a command again after a connection error or timeout
    (the slot map reloaded in between). 0 for writes that must not run twice: a command whose answer
    was lost may have run (the usage checks; a plain client never retries, its connections are made
    without a Retry)."""
    options = _options(link, timeout)
    if link.cluster:
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.retry import Retry as AsyncRetry

        seeds = _seeds(link, ClusterNode)
        # The cluster client refuses a command when a node's pool is full (it does not queue):
        # callers queue on a semaphore of `pool_size` (`Gate`) instead.
        return RedisCluster.from_url(link.url, startup_nodes=seeds or None, max_connections=pool_size,
                                     retry=AsyncRetry(NoBackoff(), retries), require_full_coverage=False,
                                     **options)
    if link.tls and not link.url.startswith("rediss://"):
        options.pop("ssl")
        options["connection_class"] = redis_async.SSLConnection
    pool = redis_async.BlockingConnectionPool.from_url(
        link.url, max_connections=pool_size, timeout=None, retry_on_timeout=False, lib_name=None,
        lib_version=None, **options)
    return redis_async.Redis(connection_pool=pool)


class Gate:
    """At most `size` Redis calls of one worker in flight (the pool's size), the others wait their turn
    (inside the caller's budget); a plain client's BlockingConnectionPool already queues, a cluster
    client's pools do not."""

    def __init__(self, size: int):
        self._semaphore = asyncio.Semaphore(size)

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()


class LazyClient:
    """redis-py's sync cluster client asks a seed node for the slot map as it is made, and raises when
    none answers; this one is made on first use instead, so that a gateway starts (and follows its
    failMode) while Redis is away, as with one Redis server. Errors surface from the call."""

    def __init__(self, make: Any):
        self._make = make
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def sync_client(link: RedisLink, timeout: float) -> Any:
    options = _options(link, timeout)
    if link.cluster:
        from redis.cluster import ClusterNode, RedisCluster

        seeds = _seeds(link, ClusterNode)
        return LazyClient(lambda: RedisCluster.from_url(link.url, startup_nodes=seeds or None,
                                                        retry=Retry(NoBackoff(), 1), require_full_coverage=False,
                                                        **options))
    return redis_sync.Redis.from_url(link.url, **options)


async def subscribe(pubsub: Any, link: RedisLink, *channels: str) -> Callable[..., Any]:
    """Subscribe an asyncio `pubsub` to `channels`, sharded ones on a cluster (a channel's messages then
    stay on its shard); returns the pubsub's reader for them."""
    if link.cluster:
        await pubsub.ssubscribe(*channels)
        return pubsub.get_sharded_message
    await pubsub.subscribe(*channels)
    return pubsub.get_message


async def close_quietly(*resources: Any) -> None:
    """Close asyncio pubsubs and clients whose connection may already be gone."""
    for resource in resources:
        try:
            await resource.aclose()
        except Exception:  # noqa: BLE001 - closing what failed may fail again: nothing to do about it
            pass
