"""@connections calls between gateway nodes, through the Redis state backend (issues 16 and 19): one
Redis server, or a Redis Cluster on sharded pub/sub.

A connection id names its owner's node and worker (fastgw/websocket/api.py), so the registry of live
connections is a registry of live workers: each worker keeps `fastgw:ws:{<node>:<pid>}:alive` set
(SET EX TTL_SECONDS, refreshed every REFRESH_SECONDS), so a dead node's connections leave the registry
within TTL_SECONDS by themselves, and listens on its request channel `fastgw:ws:{<node>:<pid>}:req`
and reply channel `...:rep`. All three share the worker's hash tag: on a cluster they live on one
shard (one subscription connection per worker), and the workers spread over the shards.

On a cluster the channels are sharded (SSUBSCRIBE/SPUBLISH, Redis 7): a classic PUBLISH would count
only the subscribers of the node it reached, SPUBLISH counts those of the channel's shard. A sharded
subscription ends when its shard's master fails; the worker subscribes again (a fresh slot map each
time, so it lands on the promoted replica) and re-registers; every REFRESH_SECONDS it also checks its
own request channel still reaches it (an SPUBLISH answered by 0 means the subscription was lost
silently). On one Redis server: PUBLISH/SUBSCRIBE (any Redis version).

A call for another node's connection:

    registry key gone               -> 410 (the node or worker died; the key expired by itself)
    published to 0 subscribers      -> 410 (nobody listens any more); on a cluster only when that
                                       lasts GRACE_SECONDS: an owner re-subscribing after a failover
                                       is not a dead one
    otherwise                       -> the owner runs the call (Hub.local) and publishes the answer on
                                       the caller's reply channel, matched by a per-worker call number

Redis unreachable, or no answer in time: 503 (a 410 would make backends forget connections that are
alive).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import orjson

from ..errors import GatewayError
from ..state.redisconn import ERRORS, Gate, RedisLink, async_client, close_quietly, link_of, subscribe

log = logging.getLogger("fastgw.websocket")

TTL_SECONDS = 10  # a worker that stops refreshing its registry key is forgotten after this long
REFRESH_SECONDS = 3
GRACE_SECONDS = 2.0  # cluster: how long a live-registered owner may have no subscription before 410
RETRY_SECONDS = 0.5  # between two subscription attempts
POOL_SIZE = 16
PING = b'{"op":"ping"}\n'


def worker_tag(node: int, pid: int) -> str:
    return f"fastgw:ws:{{{node:06x}:{pid}}}"


def worker_key(node: int, pid: int) -> str:
    return worker_tag(node, pid) + ":alive"


def request_channel(node: int, pid: int) -> str:
    return worker_tag(node, pid) + ":req"


def reply_channel(node: int, pid: int) -> str:
    return worker_tag(node, pid) + ":rep"


class RedisRelay:
    """One worker's side of the node-to-node path. `state`: the config's StateConfig."""

    def __init__(self, state: Any, node: int, pid: int, local: Any):
        link = link_of(state)
        assert link is not None  # the config requires state.url with backend: redis
        self.link: RedisLink = link
        self.node = node
        self.pid = pid
        self.local = local  # Hub.local(method, connection_id, body)
        self.client: Any = None  # commands (registry, publish); the subscription has its own
        self.gate = Gate(POOL_SIZE)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.numbers = itertools.count(1)
        self.tasks: list[asyncio.Task[Any]] = []
        self.ready = asyncio.Event()
        self.lost = asyncio.Event()  # the heartbeat found the subscription gone: subscribe again
        self.subscriptions = 0  # how many times it subscribed (tests, logs)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tasks = [loop.create_task(self._listen()), loop.create_task(self._register())]

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        client = self.client
        if client is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            loop.create_task(self._forget(client))

    async def _forget(self, client: Any) -> None:
        try:
            await client.delete(worker_key(self.node, self.pid))
            await client.aclose()
        except ERRORS:
            pass

    def _client(self) -> Any:
        if self.client is None:
            self.client = async_client(self.link, 5.0, POOL_SIZE)
        return self.client

    async def _publish(self, channel: str, data: bytes) -> int:
        async with self.gate:
            client = self._client()
            if self.link.cluster:
                return int(await client.spublish(channel, data))
            return int(await client.publish(channel, data))

    async def _register(self) -> None:
        """The registry heartbeat, which also checks the subscription still reaches this worker."""
        key = worker_key(self.node, self.pid)
        while True:
            try:
                async with self.gate:
                    await self._client().set(key, b"1", ex=TTL_SECONDS)
                if self.ready.is_set() and not await self._publish(request_channel(self.node, self.pid), PING):
                    log.warning("WebSocket relay: the subscription of %s was lost; subscribing again", key)
                    self.lost.set()
            except ERRORS as exc:
                log.warning("WebSocket registry: cannot reach Redis: %s", exc)
            await asyncio.sleep(REFRESH_SECONDS)

    async def _listen(self) -> None:
        """Subscribe (again after any failure, with a fresh client: a fresh slot map) and serve the calls
        and answers addressed here."""
        requests, replies = request_channel(self.node, self.pid), reply_channel(self.node, self.pid)
        while True:
            client = async_client(self.link, 5.0, 2)
            pubsub = client.pubsub()
            try:
                read = await subscribe(pubsub, self.link, requests, replies)
                self.lost.clear()
                async with self.gate:  # registered again at once (the key may have been lost with its shard)
                    await self._client().set(worker_key(self.node, self.pid), b"1", ex=TTL_SECONDS)
                self.subscriptions += 1
                if self.subscriptions > 1:
                    log.info("WebSocket relay: subscribed again to %s", requests)
                self.ready.set()
                while not self.lost.is_set():
                    message = await read(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    if message.get("type") in ("sunsubscribe", "unsubscribe"):
                        break  # the server dropped the subscription (a slot moved): subscribe again
                    if message.get("type") not in ("message", "smessage"):
                        continue
                    channel = message["channel"]
                    if (channel.decode() if isinstance(channel, bytes) else channel) == requests:
                        asyncio.get_running_loop().create_task(self._serve(message["data"]))
                    else:
                        self._answered(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: subscribe again after a pause
                log.warning("WebSocket relay: Redis subscription lost (%s); retrying", exc)
            finally:
                self.ready.clear()
                await close_quietly(pubsub, client)
            await asyncio.sleep(RETRY_SECONDS)

    async def _serve(self, frame: bytes) -> None:
        head, _, body = frame.partition(b"\n")
        call = orjson.loads(head)
        if call.get("op") == "ping":
            return
        found = await self.local(call["op"], call["id"], body)
        answer = orjson.dumps({"n": call["n"], "found": found})
        try:
            await self._publish(call["reply"], answer)
        except ERRORS as exc:
            log.warning("WebSocket relay: cannot answer a call: %s", exc)

    def _answered(self, frame: bytes) -> None:
        answer = orjson.loads(frame)
        waiter = self.pending.pop(answer["n"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer["found"])

    async def call(self, node: int, pid: int, method: str, connection_id: str, body: bytes, timeout: float) -> Any:
        """The owner's answer, or None when it is gone (410)."""
        number = next(self.numbers)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[number] = waiter
        head = orjson.dumps({"op": method, "id": connection_id, "n": number,
                             "reply": reply_channel(self.node, self.pid)})
        unheard_since: float | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.ready.wait()  # the answer comes on our own reply channel
                    async with self.gate:
                        alive = await self._client().exists(worker_key(node, pid))
                    if not alive:
                        return None
                    if await self._publish(request_channel(node, pid), head + b"\n" + body):
                        return await waiter
                    if not self.link.cluster:
                        return None
                    now = time.monotonic()
                    if unheard_since is None:
                        unheard_since = now
                    elif now - unheard_since >= GRACE_SECONDS:
                        return None
                    await asyncio.sleep(0.1)
        except (*ERRORS, TimeoutError) as exc:
            log.warning("WebSocket relay: a @connections call to node %06x failed: %s", node, exc)
            raise GatewayError("SERVICE_UNAVAILABLE") from None
        finally:
            self.pending.pop(number, None)
