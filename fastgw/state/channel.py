"""The events channel: one Redis pub/sub channel every node listens to, so that a change made on one
node (a key created or disabled, a cache flushed) is acted on by every node at once instead of at
its next once-a-second poll.

A message is a nudge, never the state: `{"kind": "keys"}` or `{"kind": "cache", "api": .., "stage": ..}`
(JSON). The state itself stays in Redis keys (the key list and its version, the cache generations),
and the polls go on, so a message lost while a subscriber reconnects costs at most one poll
interval. On a Redis Cluster the channel is a sharded one (SPUBLISH/SSUBSCRIBE, Redis 7): it lives
on the shard of its hash tag, and a subscriber follows it through a failover. On one Redis server:
PUBLISH/SUBSCRIBE (any Redis version).

Kinds are open: a later WebSocket delivery across nodes uses the same mechanism on per-node channels
(docs/DESIGN.md, "Scale-out on Redis").
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from .redisconn import ERRORS, RedisLink, async_client, close_quietly, subscribe, sync_client

log = logging.getLogger("fastgw.state")

CHANNEL = "fastgw:{events}"
RETRY_SECONDS = 1.0


def publish(link: RedisLink, kind: str, client: Any = None, **fields: Any) -> bool:
    """Tell every node; False when Redis did not take it (the nodes' polls still catch up)."""
    own = client is None
    if own:
        client = sync_client(link, 2.0)
    message = orjson.dumps({"kind": kind, **fields})
    try:
        if link.cluster:
            client.spublish(CHANNEL, message)
        else:
            client.publish(CHANNEL, message)
        return True
    except ERRORS as exc:
        log.warning("events: could not publish %s: %s", kind, exc)
        return False
    finally:
        if own:
            client.close()


class Subscriber:
    """One worker's listener: `on(kind, callback)`; callbacks get the message (a dict) and run on the
    worker's event loop. Reconnects by itself; after each (re)subscription every callback is called
    once with `{"kind": kind, "resync": True}`, since messages sent meanwhile are lost."""

    def __init__(self, link: RedisLink, loop: asyncio.AbstractEventLoop):
        self.link = link
        self.loop = loop
        self.handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.received = 0
        self._task: asyncio.Task[Any] | None = None

    def on(self, kind: str, callback: Callable[[dict[str, Any]], None]) -> None:
        self.handlers.setdefault(kind, []).append(callback)
        if self._task is None:
            self._task = self.loop.create_task(self._run())

    def _dispatch(self, message: dict[str, Any]) -> None:
        for callback in self.handlers.get(str(message.get("kind")), ()):
            try:
                callback(message)
            except Exception:  # noqa: BLE001 - one bad handler must not stop the listener
                log.exception("events: handler for %s failed", message.get("kind"))

    async def _run(self) -> None:
        connected_once = False
        while True:
            client = async_client(self.link, 5.0, 2)
            pubsub = client.pubsub()
            try:
                read = await subscribe(pubsub, self.link, CHANNEL)
                if connected_once:
                    log.info("events: subscribed again to %s", CHANNEL)
                    for kind in self.handlers:
                        self._dispatch({"kind": kind, "resync": True})
                connected_once = True
                while True:
                    data = _event(await read(ignore_subscribe_messages=True, timeout=1.0))
                    if data is not None:
                        self.received += 1
                        self._dispatch(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: start over after a pause
                log.debug("events: %s; subscribing again in %.0f s", exc, RETRY_SECONDS)
            finally:
                await close_quietly(pubsub, client)
            await asyncio.sleep(RETRY_SECONDS)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def _event(message: dict[str, Any] | None) -> dict[str, Any] | None:
    """The event a pub/sub message carries (a JSON object), or None (no message, a subscription notice,
    a payload that is not one)."""
    if message is None or message.get("type") not in ("message", "smessage"):
        return None
    try:
        data = orjson.loads(message["data"])
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def follow(link: RedisLink, handlers: dict[str, Callable[[dict[str, Any]], None]], stop: threading.Event) -> None:
    """The main process's listener (blocking: run it in a thread until `stop` is set). Like
    `Subscriber`: reconnects by itself, and calls every handler with `resync` after a reconnection
    (also after a first subscription that had failed before: what was read meanwhile may be stale)."""
    connected_once = False
    while not stop.is_set():
        client = sync_client(link, 5.0)
        pubsub = client.pubsub()
        try:
            if link.cluster:
                pubsub.ssubscribe(CHANNEL)
                read = pubsub.get_sharded_message
            else:
                pubsub.subscribe(CHANNEL)
                read = pubsub.get_message
            if connected_once:
                for kind, handler in handlers.items():
                    handler({"kind": kind, "resync": True})
            connected_once = True
            while not stop.is_set():
                data = _event(read(ignore_subscribe_messages=True, timeout=1.0))
                handler = handlers.get(str(data.get("kind"))) if data is not None else None
                if handler is not None:
                    handler(data)
        except Exception as exc:  # noqa: BLE001 - any failure: start over after a pause
            log.debug("events: %s; subscribing again in %.0f s", exc, RETRY_SECONDS)
            connected_once = True
        finally:
            try:
                pubsub.close()
                client.close()
            except Exception:  # noqa: BLE001
                pass
        stop.wait(RETRY_SECONDS)
