"""A scriptable WebSocket upstream for tests (the `websockets` server), on its own thread and loop.

Paths choose the behaviour:
    /echo...        every message back as it came (text as text, binary as binary); the first one
                    may be "whoami": answered with the handshake's path, query and headers as JSON
    /refuse         no upgrade: 403 with a JSON body and an `x-refused` field
    /redirect       no upgrade: 302 to this server's /echo
    /close/CODE     closes with CODE (reason "upstream says bye") after the first message
    /big/N          sends one binary message of N bytes after the first message
    /flood          sends 64 KiB binary messages as fast as the connection takes them
    /sink           reads nothing: the client's messages pile up until the socket is full
    /quiet...       reads every message, answers none
Every close frame received from the gateway is recorded (`closes`, path -> [(code, reason)]) and so is
every handshake (`handshakes`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


class WsUpstream:
    def __init__(self) -> None:
        self.port = 0
        self.closes: dict[str, list[tuple[int | None, str]]] = {}
        self.handshakes: list[Request] = []
        self.flood_sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> WsUpstream:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the WebSocket upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def wait_close(self, path: str, timeout: float = 10.0) -> tuple[int | None, str]:
        """The close frame the gateway sent on `path` (waits until there is one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.closes.get(path):
                return self.closes[path][-1]
            time.sleep(0.02)
        raise AssertionError(f"the upstream saw no close on {path}; it saw {self.closes}")

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._process_request, compression=None,
                         max_size=None, ping_interval=None,
                         select_subprotocol=lambda _, offered: "chat" if "chat" in offered else None) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(request)
        if request.path.startswith("/refuse"):
            body = b'{"refused": true}'
            headers = Headers([("content-type", "application/json"), ("x-refused", "yes"),
                               ("content-length", str(len(body)))])
            return Response(HTTPStatus.FORBIDDEN, "Forbidden", headers, body)
        if request.path.startswith("/redirect"):
            headers = Headers([("location", f"ws://127.0.0.1:{self.port}/echo"), ("content-length", "0")])
            return Response(HTTPStatus.FOUND, "Found", headers, b"")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        key = path.split("?")[0]
        try:
            if key == "/sink":
                await ws.wait_closed()
            elif key.startswith("/quiet"):
                async for _ in ws:
                    pass
            elif key == "/flood":
                chunk = b"x" * 65536
                while True:
                    await ws.send(chunk)
                    self.flood_sent += 1
            else:
                first = await ws.recv()
                if key.startswith("/close/"):
                    await ws.close(int(key.rsplit("/", 1)[1]), "upstream says bye")
                elif key.startswith("/big/"):
                    await ws.send(b"b" * int(key.rsplit("/", 1)[1]))
                    await ws.wait_closed()
                else:
                    if first == "whoami":
                        request = ws.request
                        assert request is not None
                        first = json.dumps({"path": request.path, "subprotocol": ws.subprotocol,
                                            "headers": [list(h) for h in request.headers.raw_items()]})
                    await ws.send(first)
                    async for message in ws:
                        await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            rcvd = ws.protocol.close_rcvd
            self.closes.setdefault(key, []).append((rcvd.code if rcvd else None, rcvd.reason if rcvd else ""))
