"""@connections calls between gateway nodes, through the Redis state backend's pub/sub (issue 16).

A connection id names its owner's node and worker (fastgw/websocket/api.py). With `state: {backend:
redis}`, every worker of every node subscribes to its own request channel `fastgw:ws:req:{node}:{pid}`
and reply channel `fastgw:ws:rep:{node}:{pid}`, and keeps a registry key `fastgw:ws:worker:{node}:{pid}`
alive (SET EX, refreshed every REFRESH_SECONDS). A call for another node's connection:

    registry key gone          -> 410 (the node or worker died; the key expired by itself)
    PUBLISH to its request channel answered by 0 subscribers -> 410 (nobody listens any more)
    otherwise                  -> the owner runs the call (Hub.local) and publishes the answer on the
                                  caller's reply channel, matched by a per-worker call number

Redis unreachable, or no answer in time: 503 (a 410 would make backends forget connections that are alive).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import orjson
import redis.asyncio as redis_async
from redis.exceptions import RedisError

from ..errors import GatewayError

log = logging.getLogger("fastgw.websocket")

TTL_SECONDS = 10  # a worker that stops refreshing its registry key is forgotten after this long
REFRESH_SECONDS = 3


def worker_key(node: int, pid: int) -> str:
    return f"fastgw:ws:worker:{node:06x}:{pid}"


def request_channel(node: int, pid: int) -> str:
    return f"fastgw:ws:req:{node:06x}:{pid}"


def reply_channel(node: int, pid: int) -> str:
    return f"fastgw:ws:rep:{node:06x}:{pid}"


class RedisRelay:
    """One worker's side of the node-to-node path."""

    def __init__(self, url: str, node: int, pid: int, local: Any):
        self.url = url
        self.node = node
        self.pid = pid
        self.local = local  # Hub.local(method, connection_id, body)
        self.client: redis_async.Redis | None = None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.numbers = itertools.count(1)
        self.tasks: list[asyncio.Task[Any]] = []
        self.ready = asyncio.Event()

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

    async def _forget(self, client: redis_async.Redis) -> None:
        try:
            await client.delete(worker_key(self.node, self.pid))
            await client.aclose()
        except (RedisError, OSError):
            pass

    def _client(self) -> redis_async.Redis:
        if self.client is None:
            self.client = redis_async.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5,
                                                     lib_name=None, lib_version=None)
        return self.client

    async def _register(self) -> None:
        while True:
            try:
                await self._client().set(worker_key(self.node, self.pid), b"1", ex=TTL_SECONDS)
            except (RedisError, OSError) as exc:
                log.warning("WebSocket registry: cannot reach Redis: %s", exc)
            await asyncio.sleep(REFRESH_SECONDS)

    async def _listen(self) -> None:
        """Subscribe (again after a Redis failure) and serve the calls and answers addressed here."""
        while True:
            try:
                pubsub = self._client().pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(request_channel(self.node, self.pid), reply_channel(self.node, self.pid))
                self.ready.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel = message["channel"].decode()
                    if channel.startswith("fastgw:ws:req:"):
                        asyncio.get_running_loop().create_task(self._serve(message["data"]))
                    else:
                        self._answered(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.ready.clear()
                log.warning("WebSocket relay: Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1)

    async def _serve(self, frame: bytes) -> None:
        head, _, body = frame.partition(b"\n")
        call = orjson.loads(head)
        found = await self.local(call["op"], call["id"], body)
        answer = orjson.dumps({"n": call["n"], "found": found})
        try:
            await self._client().publish(call["reply"], answer)
        except (RedisError, OSError) as exc:
            log.warning("WebSocket relay: cannot answer a call: %s", exc)

    def _answered(self, frame: bytes) -> None:
        answer = orjson.loads(frame)
        waiter = self.pending.pop(answer["n"], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer["found"])

    async def call(self, node: int, pid: int, method: str, connection_id: str, body: bytes, timeout: float) -> Any:
        """The owner's answer, or None when it is gone (410)."""
        client = self._client()
        number = next(self.numbers)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[number] = waiter
        head = orjson.dumps({"op": method, "id": connection_id, "n": number,
                             "reply": reply_channel(self.node, self.pid)})
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
                if not await client.exists(worker_key(node, pid)):
                    return None
                if not await client.publish(request_channel(node, pid), head + b"\n" + body):
                    return None
                return await waiter
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("WebSocket relay: a @connections call to node %06x failed: %s", node, exc)
            raise GatewayError("SERVICE_UNAVAILABLE") from None
        finally:
            self.pending.pop(number, None)
