"""Memory per idle WebSocket API connection: one `fastgw serve` worker, N raw clients that complete the
handshake and then say nothing.

    python -m benchmarks.ws_idle                  # 10 000 connections
    python -m benchmarks.ws_idle 2000

The connections go to the WebSocket APIs' own listener (fastgw/websocket/listener.py, `--ws-port`);
granian's interface does not matter to them any more.

Prints the worker's RSS before and after, and the difference per connection (KiB). The gateway and the
clients run on this machine: the figure is the worker's own memory, independent of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CONFIG = """
apis:
  - name: idle
    type: WEBSOCKET
    encodedSlashes: DECODE
    routeSelectionExpression: $request.body.action
    webSocket: {managementAuthorization: NONE}
    stages:
      s: {}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        integration: {type: MOCK, responses: {$default: {responseTemplates: {$default: 'ok'}}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # type: ignore[no-any-return]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def open_one(port: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return writer


async def open_all(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 200):
        writers += await asyncio.gather(*(open_one(port) for _ in range(min(200, count - start))))
    return writers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("count", type=int, nargs="?", default=10_000)
    args = ap.parse_args()
    directory = tempfile.mkdtemp(prefix="fastgw-ws-idle-")
    config = Path(directory, "gateway.yaml")
    config.write_text(CONFIG)
    http_port, port, admin = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve", str(config), "--port", str(http_port),
                             "--ws-port", str(port), "--admin-port", str(admin), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        worker = int(subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                    text=True).stdout.split()[0])

        async def run() -> None:
            warm = await open_all(port, 100)  # first connections pay for imports and pools
            await asyncio.sleep(1)
            before = rss_kib(worker)
            writers = await open_all(port, args.count)
            await asyncio.sleep(2)
            after = rss_kib(worker)
            print(f"{args.count} idle connections: worker RSS {before} KiB -> {after} KiB, "
                  f"{(after - before) / args.count:.2f} KiB per connection")
            for writer in warm + writers:
                writer.close()

        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
