"""The WebSocket echo upstream of the WebSocket scenario (benchmarks/ws.py): every message back as it
came, on granian's RSGI (Rust framing, so the upstream is not what limits the contenders).
Run as `granian --interface rsgi --working-dir benchmarks ws_echo_app:app`. Standard library only.
"""

from __future__ import annotations

from typing import Any


async def app(scope: Any, proto: Any) -> None:
    if scope.proto != "ws":
        proto.response_bytes(200, [("content-type", "text/plain")], b"WebSocket echo upstream\n")
        return
    transport = await proto.accept()
    while True:
        message = await transport.receive()
        if message.kind == 0:
            return
        if message.kind == 1:
            await transport.send_bytes(message.data)
        else:
            await transport.send_str(message.data)
