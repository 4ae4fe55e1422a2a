"""The cache's Redis tier (`cache: {backend: redis}`): entries shared by every gateway node.

Each worker keeps its own LRU in front (fastgw/policies/cache/stage.py); a local miss asks Redis with one GET
before it goes to the integration, and a stored response is written to Redis (SET with PX, in
the background: the client never waits for it). Redis is an optimisation here, never a
dependency: a timeout (`timeoutMillis`, 50 ms), a refused connection or any other error is a
miss, and after FAILURES_TO_OPEN failures in a row Redis is left alone for DOWN_SECONDS.

Keys: `fastgw:cache:{gen}:<api>:<stage>` holds the stage's generation (one hash tag for all of them:
they are read together); entries are `fastgw:cache:<api>:<stage>:<generation>:<blake2b-128 of the
cache key>` (no hash tags: entries spread over a Redis Cluster's slots). A flush increments the
generation and says so on the events channel (fastgw/state/channel.py): every node reads the
generations then (and once a second anyway), empties its local copies of a stage whose generation
moved, and from then on reads and writes under the new one; the old entries expire with their TTL.
Values: b"FGC1", status (u16), expiry (epoch seconds, f64), header length (u32), the header
fields as JSON, the body.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

import orjson

from ... import metrics
from ...state.channel import Subscriber, publish
from ...state.redisconn import ERRORS as REDIS_ERRORS
from ...state.redisconn import Gate, RedisLink, async_client, sync_client

if TYPE_CHECKING:
    from .stage import Fill, StageCache

log = logging.getLogger("fastgw.cache")

PREFIX = "fastgw:cache:"
MAGIC = b"FGC1"
HEAD = struct.Struct("!HdI")
POOL_SIZE = 32  # connections per worker
FAILURES_TO_OPEN = 5
DOWN_SECONDS = 1.0
BACKGROUND_TIMEOUT = 1.0  # seconds, for what no request waits on
ERRORS = REDIS_ERRORS


def stage_prefix(sc: StageCache) -> str:
    return f"{PREFIX}{sc.api}:{sc.stage}:"


def generation_key(sc: StageCache) -> str:
    # Every stage's generation under one hash tag: the once-a-second MGET of them all is one slot.
    return f"{PREFIX}{{gen}}:{sc.api}:{sc.stage}"


def entry_key(sc: StageCache, generation: int, key: str) -> str:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{stage_prefix(sc)}{generation}:{digest}"


def encode(hit: tuple[int, list[tuple[str, str]], bytes], expires: float) -> bytes:
    status, headers, body = hit
    fields = orjson.dumps(headers)
    return b"".join((MAGIC, HEAD.pack(status, expires, len(fields)), fields, body))


def decode(raw: bytes) -> tuple[tuple[int, list[tuple[str, str]], bytes], float] | None:
    if raw[:4] != MAGIC or len(raw) < 4 + HEAD.size:
        return None
    status, expires, size = HEAD.unpack_from(raw, 4)
    start = 4 + HEAD.size
    headers = [(name, value) for name, value in orjson.loads(raw[start:start + size])]
    return (status, headers, raw[start + size:]), expires


class RedisTier:
    """One worker's Redis clients (one per URL) for the stages with `backend: redis`."""

    def __init__(self, stages: list[StageCache], loop: asyncio.AbstractEventLoop):
        self.stages = stages
        self.loop = loop
        self.clients: dict[RedisLink, Any] = {}
        self.events: list[Subscriber] = []
        self.gate = Gate(POOL_SIZE)
        for sc in stages:
            assert sc.link is not None
            if sc.link not in self.clients:
                # Socket operations get at least a second: background work (writes, the generations'
                # poll, the cluster's slot map) may take it; a request's GET is bounded by its own
                # budget (`asyncio.timeout` in `get`).
                self.clients[sc.link] = async_client(sc.link, max(sc.timeout, BACKGROUND_TIMEOUT), POOL_SIZE)
                events = Subscriber(sc.link, loop)
                events.on("cache", self._flushed_elsewhere)
                self.events.append(events)
            sc.remote = self
        self.up = True
        self.failures = 0
        self.down_until = 0.0
        self.errors = 0  # failed operations since start (tests and logs)
        self._polling = False
        self._epoch = 0  # local flushes seen; a generation read across one is read again
        self._poll_task: asyncio.Task[Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tick()

    # -- health -------------------------------------------------------------------------------------
    def usable(self) -> bool:
        return self.up or time.monotonic() >= self.down_until

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.failures += 1
        if self.failures < FAILURES_TO_OPEN and self.up:
            return
        self.down_until = time.monotonic() + DOWN_SECONDS
        if self.up:
            self.up = False
            log.warning("cache: Redis unreachable (%s); serving from the local caches only", type(exc).__name__)

    def _recovered(self) -> None:
        self.failures = 0
        if not self.up:
            self.up = True
            log.warning("cache: Redis answers again; the shared tier is back")

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- entries ------------------------------------------------------------------------------------
    async def get(self, fill: Fill) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The entry from Redis (then also kept locally), or None: absent, expired, or Redis failed."""
        sc = fill.rc.stage
        generation = sc.redis_generation
        if generation is None or not self.usable():
            return None
        assert fill.key is not None and sc.link is not None
        try:
            async with asyncio.timeout(sc.timeout), self.gate:  # the budget, also through a cluster's redirects
                raw = await self.clients[sc.link].get(entry_key(sc, generation, fill.key))
        except ERRORS as exc:
            self._failed(exc)
            return None
        self._recovered()
        if raw is None:
            return None
        decoded = decode(raw)
        if decoded is None:
            return None
        hit, expires = decoded
        remaining = expires - time.time()
        if remaining <= 0 or hit[0] != 200:
            return None
        fill.cache.remote_hit(fill, hit, remaining)
        return hit

    def put(self, sc: StageCache, key: str, hit: tuple[int, list[tuple[str, str]], bytes], ttl: float) -> None:
        if not self.usable():
            return
        self._spawn(self._put(sc, key, encode(hit, time.time() + ttl), ttl))

    async def _put(self, sc: StageCache, key: str, value: bytes, ttl: float) -> None:
        assert sc.link is not None
        generation = sc.redis_generation
        if generation is None and self._poll_task is not None:
            # Just after a flush: the response was fetched after it, so it belongs to the new generation.
            await asyncio.shield(self._poll_task)
            generation = sc.redis_generation
        if generation is None:
            return
        try:
            async with self.gate:
                await self.clients[sc.link].set(entry_key(sc, generation, key), value, px=max(1, int(ttl * 1000)))
        except ERRORS as exc:
            self._failed(exc)
            return
        self._recovered()

    def delete(self, sc: StageCache, key: str) -> None:
        generation = sc.redis_generation
        if generation is None or not self.usable():
            return
        self._spawn(self._delete(sc, entry_key(sc, generation, key)))

    async def _delete(self, sc: StageCache, name: str) -> None:
        assert sc.link is not None
        try:
            await self.clients[sc.link].delete(name)
        except ERRORS as exc:
            self._failed(exc)

    # -- generations (flushes on other nodes) -------------------------------------------------------------
    def tick(self) -> None:
        """Called every second: read the stages' generations."""
        if self._polling or not self.usable():
            return
        self._polling = True
        self._poll_task = self._spawn(self._poll())

    def _flushed_elsewhere(self, message: dict[str, Any]) -> None:
        """A node said it flushed a stage: read the generations now (a poll in flight may predate it)."""
        if not message.get("resync"):
            metrics.STATE_EVENTS.labels("cache").inc()
        self._epoch += 1
        self.tick()

    def flushed(self, sc: StageCache) -> None:
        """This host flushed the stage (the admin API moved the Redis generation first): forget the
        generation known so far and read it again now."""
        sc.redis_generation = None
        self._epoch += 1
        self.tick()

    async def _poll(self) -> None:
        try:
            while True:
                epoch = self._epoch
                found: list[tuple[StageCache, int]] = []
                for link, client in self.clients.items():
                    stages = [sc for sc in self.stages if sc.link == link]
                    values = await client.mget([generation_key(sc) for sc in stages])
                    found += [(sc, int(value or 0)) for sc, value in zip(stages, values, strict=True)]
                if epoch != self._epoch:
                    continue  # a flush happened meanwhile: what was read may predate it
                for sc, generation in found:
                    if sc.redis_generation is not None and generation != sc.redis_generation:
                        sc.lru.clear()  # flushed on some node: drop this worker's copies too
                    sc.redis_generation = generation
                break
            self._recovered()
        except ERRORS as exc:
            self._failed(exc)
        finally:
            self._polling = False

    def close(self) -> None:
        for events in self.events:
            events.close()
        for task in list(self._tasks):
            task.cancel()
        if self.loop.is_running():
            for client in self.clients.values():
                self.loop.create_task(client.aclose())


def flush_remote(sc: StageCache) -> str:
    """The main process's part of a flush: move the stage's generation in Redis (every node follows
    within a second). Returns "flushed" or why not."""
    assert sc.link is not None
    client = sync_client(sc.link, 2.0)
    try:
        client.incr(generation_key(sc))
        publish(sc.link, "cache", client, api=sc.api, stage=sc.stage)
        return "flushed"
    except REDIS_ERRORS as exc:
        log.warning("cache flush: Redis unreachable for %s/%s: %s", sc.api, sc.stage, exc)
        return f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
