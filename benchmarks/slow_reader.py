"""Memory held for clients that stop reading a large response (issue 18: ≤ 32 MiB per stalled reader).

    python -m benchmarks.slow_reader                      # fastgw (README's first example, as written) and nginx
    python -m benchmarks.slow_reader --readers 4 --size-mib 400 --hold 8

An upstream (in this process) answers every GET with `--size-mib` MiB. Each contender proxies it to
`--readers` raw clients that read the response head and the first MiB, then stop reading and keep the
connection open for `--hold` seconds. The contender's resident memory (all its processes) is sampled
every 0.1 s; the report gives the peak growth over its warmed-up baseline, per stalled reader, and how
far each stream got from the upstream (a proxy that keeps reading the upstream for a client that does
not read has to hold the difference somewhere: memory, or nginx's temporary files). fastgw runs with
the config a new user writes (benchmarks/readme.py), once per interface, one worker, on this machine's
loopback. Timings do not matter here: the figures are memory, so a busy machine changes little.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import measure, peers
from .readme import ENV, REQUEST_PATH, default_config

CHUNK = 64 * 1024
TARGET_MIB = 32.0  # the bound per stalled reader


class BigUpstream:
    """Answers every request with `size` bytes, as fast as the reader takes them; counts what it sent."""

    def __init__(self, size: int):
        self.size = size
        self.sent: dict[int, int] = {}  # connection number -> bytes of body written
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BigUpstream:
        self.thread.start()
        self.ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.sent)
        self.sent[number] = 0
        chunk = b"x" * CHUNK
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             f"Content-Length: {self.size}\r\n\r\n".encode())
                left = self.size
                while left > 0:
                    piece = chunk if left >= CHUNK else chunk[:left]
                    writer.write(piece)
                    await writer.drain()
                    left -= len(piece)
                    self.sent[number] += len(piece)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class Result:
    contender: str
    baseline_mib: float
    peak_mib: float
    readers: int
    upstream_mib: list[float]  # per stalled reader: how much the upstream sent

    @property
    def per_reader_mib(self) -> float:
        return max(0.0, self.peak_mib - self.baseline_mib) / self.readers


def _stall(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a small client window, as a phone's
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    got = 0
    while got < 1024 * 1024:
        data = sock.recv(CHUNK)
        if not data:
            raise RuntimeError("the contender closed the connection before the first MiB")
        got += len(data)
    return sock


def measure_one(name: str, server: measure.Server, port: int, path: str, upstream: BigUpstream, readers: int,
                hold: float) -> Result:
    for _ in range(3):  # warm: imports, pools, the first buffers
        sock = _stall(port, path)
        sock.close()
    time.sleep(1.0)
    baseline = measure.rss_kib(server.tree()) / 1024
    before = set(upstream.sent)
    sockets = [_stall(port, path) for _ in range(readers)]
    peak = baseline
    deadline = time.monotonic() + hold
    try:
        while time.monotonic() < deadline:
            peak = max(peak, measure.rss_kib(server.tree()) / 1024)
            time.sleep(0.1)
    finally:
        for sock in sockets:
            sock.close()
    streams = [upstream.sent[n] / 2**20 for n in sorted(set(upstream.sent) - before)]
    return Result(name, baseline, peak, readers, streams)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--size-mib", type=int, default=400)
    ap.add_argument("--hold", type=float, default=8.0, help="seconds the readers stay stalled (default 8)")
    ap.add_argument("--only", default="fastgw-rsgi,fastgw-asgi,nginx")
    args = ap.parse_args()
    wanted = args.only.split(",")
    fastgw_bin = shutil.which("fastgw", path=str(Path(sys.executable).parent)) or "fastgw"
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    upstream = BigUpstream(args.size_mib * 2**20).start()
    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="fastgw-slow-reader-"))
    try:
        with measure.ServerSet(work) as servers:
            for name in wanted:
                port = measure.free_port()
                if name.startswith("fastgw"):
                    config = work / f"{name}.yaml"
                    config.write_text(default_config(f"127.0.0.1:{upstream.port}", port, measure.free_port()))
                    launch = peers.fastgw_serve(fastgw_bin, config, port, measure.free_port(), tuned=False,
                                                env=ENV)
                    cmd = launch.cmd + (["--interface", name.split("-", 1)[1]] if name != "fastgw" else [])
                    server = servers.start(name, cmd, port, None, env=launch.env)
                    path = REQUEST_PATH
                elif name == "nginx":
                    launch = peers.nginx_proxy(nginx, work, port, upstream.port)
                    server = servers.start(name, launch.cmd, port, None)
                    path = "/big-stream"
                else:
                    raise SystemExit(f"unknown contender {name!r} (fastgw-rsgi, fastgw-asgi, nginx)")
                results.append(measure_one(name, server, port, path, upstream, args.readers, args.hold))
                servers.stop(name)
    finally:
        upstream.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.readers} stalled readers of a {args.size_mib} MiB response each, held {args.hold:g} s "
          f"(bound asked: ≤ {TARGET_MIB:g} MiB per reader)\n")
    print("| contender | RSS before (MiB) | peak (MiB) | growth per stalled reader (MiB) | upstream sent per "
          "reader (MiB) | within bound |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        sent = ", ".join(f"{s:.0f}" for s in r.upstream_mib)
        print(f"| {r.contender} | {r.baseline_mib:.1f} | {r.peak_mib:.1f} | {r.per_reader_mib:.1f} | {sent} | "
              f"{'yes' if r.per_reader_mib <= TARGET_MIB else 'NO'} |")


if __name__ == "__main__":
    main()
