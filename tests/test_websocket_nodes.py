"""WebSocket APIs across gateway nodes (issue 16): two `fastgw serve` processes on one Redis; the
@connections API of either node reaches the connections of the other (fastgw/websocket/relay.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import websockets
from botocore.config import Config
from support.gateway import GatewayProcess
from support.redis import RedisServer
from support.wsapi import chat_config
from websockets.exceptions import ConnectionClosed

from fastgw.websocket.api import owner_of
from fastgw.websocket.relay import TTL_SECONDS, worker_key

ACCESS_KEY, SECRET_KEY = "AKIANODES00000000001", "nodes/Secret+Key00000000000000000000000"
CONFIG = chat_config('{backend: redis, url: "REDIS"}')


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess, RedisServer]]:
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    started: list[GatewayProcess] = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            (directory / "creds.ini").write_text(f"[p]\naws_access_key_id = {ACCESS_KEY}\n"
                                                 f"aws_secret_access_key = {SECRET_KEY}\n")
            gateway = GatewayProcess(CONFIG.replace("REDIS", server.url), directory, name=name)
            started.append(gateway)
            gateway.start()
        yield started[0], started[1], server
    finally:
        for gateway in started:
            gateway.stop()
        server.stop()


def management(gateway: GatewayProcess) -> Any:
    return boto3.client("apigatewaymanagementapi", endpoint_url=f"{gateway.url}/prod", region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=20))


def test_management_api_across_nodes_on_one_redis(nodes: tuple[GatewayProcess, GatewayProcess, RedisServer]) -> None:
    a, b, server = nodes
    client = management(b)

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        async with websockets.connect(f"{a.ws_url}/prod") as ws:
            await ws.send("who")
            connection_id = await ws.recv()
            assert isinstance(connection_id, str)
            await loop.run_in_executor(None, lambda: client.post_to_connection(ConnectionId=connection_id,
                                                                               Data=b"from node b"))
            assert await asyncio.wait_for(ws.recv(), 10) == "from node b"
            info = await loop.run_in_executor(None, lambda: client.get_connection(ConnectionId=connection_id))
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            await loop.run_in_executor(None, lambda: client.delete_connection(ConnectionId=connection_id))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1000
            with pytest.raises(client.exceptions.GoneException):
                await loop.run_in_executor(None, lambda: client.post_to_connection(ConnectionId=connection_id,
                                                                                   Data=b"late"))
            return connection_id

    connection_id = asyncio.run(asyncio.wait_for(scenario(), 30))
    node, pid = owner_of(connection_id)  # type: ignore[misc]
    assert 0 < redis.Redis.from_url(server.url).ttl(worker_key(node, pid)) <= TTL_SECONDS


def test_a_dead_node_s_connections_are_gone(nodes: tuple[GatewayProcess, GatewayProcess, RedisServer]) -> None:
    a, b, _ = nodes
    client = management(b)

    async def connect() -> tuple[Any, str]:
        ws = await websockets.connect(f"{a.ws_url}/prod")
        await ws.send("who")
        return ws, await ws.recv()

    async def scenario() -> None:
        ws, connection_id = await connect()
        loop = asyncio.get_running_loop()
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGKILL)  # the whole node, no goodbye
        a.proc.wait(10)
        began = time.monotonic()
        with pytest.raises(client.exceptions.GoneException):
            await loop.run_in_executor(None, lambda: client.post_to_connection(ConnectionId=connection_id,
                                                                               Data=b"anyone?"))
        assert time.monotonic() - began < 5  # nobody subscribes to its channel any more: no waiting
        ws.transport.abort()

    asyncio.run(asyncio.wait_for(scenario(), 30))
