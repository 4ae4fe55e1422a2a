"""A bounded WebSocket load client for benchmarks/ws.py (Debian has no tcpkali): asyncio + uvloop +
the `websockets` library, one process.

    python -m benchmarks.wsload echo URL --connections 64 --duration 5 --size 64
        each connection sends a message and waits for its echo, again and again, for DURATION
        seconds; prints JSON: messages (round trips), per second, p50/p99 round-trip ms, errors
    python -m benchmarks.wsload idle URL --connections 10000 --hold-file PATH
        opens CONNECTIONS connections (one echo each), writes how many opened to PATH, then holds them
        until it is sent SIGTERM (or for --hold seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

from websockets.asyncio.client import connect


async def _echo_loop(url: str, payload: bytes, stop_at: float, latencies: list[float], errors: list[str]) -> None:
    try:
        async with connect(url, compression=None, ping_interval=None, max_size=None, proxy=None) as ws:
            clock = time.perf_counter
            while clock() < stop_at:
                began = clock()
                await ws.send(payload)
                await ws.recv()
                latencies.append(clock() - began)
    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
        errors.append(f"{type(exc).__name__}: {exc}")


async def echo(url: str, connections: int, duration: float, size: int, warmup: float) -> dict[str, Any]:
    payload = b"m" * size
    if warmup > 0:
        await asyncio.gather(*(_echo_loop(url, payload, time.perf_counter() + warmup, [], [])
                               for _ in range(min(connections, 8))))
    latencies: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    await asyncio.gather(*(_echo_loop(url, payload, began + duration, latencies, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def percentile(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 3) if latencies else None

    return {"messages": len(latencies), "seconds": round(elapsed, 3),
            "per_second": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
            "errors": len(errors), "first_errors": errors[:3]}


async def idle(url: str, connections: int, hold_file: str, hold: float, batch: int) -> None:
    held: list[Any] = []
    errors: list[str] = []

    async def one() -> None:
        try:
            ws = await connect(url, compression=None, ping_interval=None, max_size=None, proxy=None,
                               open_timeout=60)
            await ws.send(b"x")
            await ws.recv()
            held.append(ws)
        except Exception as exc:  # noqa: BLE001 - counted
            errors.append(f"{type(exc).__name__}: {exc}")

    for start in range(0, connections, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, connections - start))))
    with open(hold_file, "w") as out:
        json.dump({"opened": len(held), "errors": len(errors), "first_errors": errors[:3]}, out)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), hold)
    except TimeoutError:
        pass
    for ws in held:
        ws.transport.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wsload")
    parser.add_argument("mode", choices=("echo", "idle"))
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--hold-file", default="")
    parser.add_argument("--hold", type=float, default=600.0)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    if args.mode == "echo":
        print(json.dumps(run(echo(args.url, args.connections, args.duration, args.size, args.warmup))))
    else:
        run(idle(args.url, args.connections, args.hold_file, args.hold, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
