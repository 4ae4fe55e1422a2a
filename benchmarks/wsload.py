"""A bounded WebSocket load client for benchmarks/ws.py (Debian has no tcpkali): asyncio + uvloop, one
process.

    python -m benchmarks.wsload echo URL --connections 64 --duration 5 --size 64
        each connection sends a binary message and waits for its echo, again and again, for DURATION
        seconds; prints JSON: messages (round trips), per second, p50/p99 round-trip ms, errors.
        Like tcpkali, it sends one pre-built masked frame again and again and only counts the echo's
        bytes (the first echo of each connection is checked in full), so the client costs a few
        microseconds per message and the contender is what is measured; the handshake is the
        `websockets` library's, whose connection then hands its socket over.
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

MASK = b"\x5a\xa5\x3c\xc3"


def frame_head(opcode: int, size: int, masked: bool) -> bytes:
    mask = 0x80 if masked else 0
    if size < 126:
        return bytes((0x80 | opcode, mask | size))
    if size < 65536:
        return bytes((0x80 | opcode, mask | 126)) + size.to_bytes(2, "big")
    return bytes((0x80 | opcode, mask | 127)) + size.to_bytes(8, "big")


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One masked frame (RFC 6455 5.2; opcode 2 binary, 1 text), built once and sent again and again."""
    return frame_head(opcode, len(payload), True) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def server_frame(payload: bytes, opcode: int = 2) -> bytes:
    return frame_head(opcode, len(payload), False) + payload


class EchoProtocol(asyncio.Protocol):
    """Round trips on a WebSocket connection whose handshake is done: send the frame, wait for the
    echo's bytes, again until `stop_at`."""

    def __init__(self, frame: bytes, expected: bytes, stop_at: float, latencies: list[float], done: asyncio.Future):
        self.frame, self.expected, self.stop_at = frame, expected, stop_at
        self.latencies, self.done = latencies, done
        self.need = len(expected)
        self.got = bytearray()
        self.checked = False
        self.began = 0.0
        self.transport: Any = None

    def start(self, transport: Any) -> None:
        self.transport = transport
        self.began = time.perf_counter()
        transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        self.got += data
        while len(self.got) >= self.need:
            if not self.checked:
                if bytes(self.got[:self.need]) != self.expected:
                    self._finish(ValueError(f"the echo differs: {bytes(self.got[:16])!r}..."))
                    return
                self.checked = True
            del self.got[:self.need]
            now = time.perf_counter()
            self.latencies.append(now - self.began)
            if now >= self.stop_at:
                self._finish(None)
                return
            self.began = now
            self.transport.write(self.frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or ConnectionError("closed by the server"))

    def _finish(self, error: Exception | None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)


async def _echo_loop(url: str, payload: bytes, stop_at: float, latencies: list[float], errors: list[str],
                     opcode: int = 2) -> None:
    try:
        ws = await connect(url, compression=None, ping_interval=None, max_size=None, proxy=None, open_timeout=30)
    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
        errors.append(f"{type(exc).__name__}: {exc}")
        return
    transport = ws.transport
    done = asyncio.get_running_loop().create_future()
    protocol = EchoProtocol(client_frame(payload, opcode), server_frame(payload, opcode), stop_at, latencies, done)
    transport.set_protocol(protocol)  # websockets is done with it: the handshake is all it did
    protocol.start(transport)
    try:
        await asyncio.wait_for(done, max(0.0, stop_at - time.perf_counter()) + 10)  # an echo that never comes
    except TimeoutError:
        errors.append(f"no echo within 10 s (got {len(protocol.got)} bytes of {protocol.need})")
    except Exception as exc:  # noqa: BLE001 - counted
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        transport.abort()


async def echo(url: str, connections: int, duration: float, size: int, warmup: float, text: bool) -> dict[str, Any]:
    payload = b"m" * size  # benchmarks/ws.py's WebSocket API contender answers exactly this
    opcode = 1 if text else 2
    if warmup > 0:
        await asyncio.gather(*(_echo_loop(url, payload, time.perf_counter() + warmup, [], [], opcode)
                               for _ in range(min(connections, 8))))
    latencies: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    await asyncio.gather(*(_echo_loop(url, payload, began + duration, latencies, errors, opcode)
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
    parser.add_argument("--text", action="store_true", help="text messages (default: binary)")
    parser.add_argument("--hold-file", default="")
    parser.add_argument("--hold", type=float, default=600.0)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    if args.mode == "echo":
        print(json.dumps(run(echo(args.url, args.connections, args.duration, args.size, args.warmup, args.text))))
    else:
        run(idle(args.url, args.connections, args.hold_file, args.hold, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
