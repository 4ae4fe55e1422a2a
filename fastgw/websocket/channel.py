"""The client side of one WebSocket connection, over granian's RSGI or ASGI (granian 2.8.7).

One interface for the relays: `refuse` (an HTTP answer instead of the upgrade), `accept`, `receive`
(a message, or None once the client closed: `close_code` then says how), `send`, `close`.

What each interface can carry, checked with a bare granian app:

| | ASGI | RSGI |
|---|---|---|
| refusal | status, headers and body (the `websocket.http.response` extension) | the status only |
| subprotocol (`Sec-WebSocket-Protocol`) | chosen at accept | none can be chosen |
| close code and reason sent to the client | yes | no: the close frame carries no code (1005) |
| the client's close code | yes (no reason) | no: 1005 |
| `send` while the client reads nothing | waits (back-pressure) | waits (back-pressure) |
"""

from __future__ import annotations

from typing import Any

from granian._granian import RSGIProtocolClosed, RSGIProtocolError

NO_STATUS = 1005  # RFC 6455: the close frame carried no code (or the interface does not say)
ABNORMAL = 1006  # RFC 6455: the connection ended without a close frame


class ClientGone(Exception):
    """The client's connection ended while a message was being sent to it."""


class RsgiChannel:
    __slots__ = ("proto", "transport", "close_code", "close_reason")
    subprotocols: tuple[str, ...] = ()  # RSGI's accept cannot answer with one: none is offered upstream
    carries_close_codes = False

    def __init__(self, proto: Any):
        self.proto = proto
        self.transport: Any = None
        self.close_code = NO_STATUS
        self.close_reason = ""

    async def refuse(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.proto.close(status)  # granian answers the status with an empty body

    async def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        try:
            self.transport = await self.proto.accept()
        except (RSGIProtocolError, RSGIProtocolClosed):
            raise ClientGone() from None  # the client left during the upstream's handshake

    async def receive(self) -> bytes | str | None:
        try:
            message = await self.transport.receive()
        except (RSGIProtocolError, RSGIProtocolClosed):
            self.close_code = ABNORMAL
            return None
        if message.kind == 0:
            return None
        return message.data  # type: ignore[no-any-return]

    async def send(self, data: bytes | str) -> None:
        try:
            if data.__class__ is str:
                await self.transport.send_str(data)
            else:
                await self.transport.send_bytes(data)
        except (RSGIProtocolError, RSGIProtocolClosed):
            raise ClientGone() from None

    async def close(self, code: int, reason: str) -> None:
        self.proto.close(code)  # the frame goes out without the code (granian 2.8.7)


class AsgiChannel:
    __slots__ = ("scope", "receive_message", "send_message", "connected", "close_code", "close_reason")
    carries_close_codes = True

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any):
        self.scope = scope
        self.receive_message = receive
        self.send_message = send
        self.connected = False
        self.close_code = NO_STATUS
        self.close_reason = ""

    @property
    def subprotocols(self) -> tuple[str, ...]:
        return tuple(self.scope.get("subprotocols") or ())

    async def _connect(self) -> bool:
        """ASGI's first message is websocket.connect (or a disconnect: the client already left)."""
        if not self.connected:
            self.connected = True
            message = await self.receive_message()
            if message["type"] != "websocket.connect":
                self.close_code = message.get("code", ABNORMAL)
                return False
        return True

    async def refuse(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if not await self._connect():
            return
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
            fields.append((b"content-length", b"%d" % len(body)))
            await self.send_message({"type": "websocket.http.response.start", "status": status, "headers": fields})
            await self.send_message({"type": "websocket.http.response.body", "body": body})
        else:
            await self.send_message({"type": "websocket.close", "code": 1008})  # granian: a bare 403

    async def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> None:
        if not await self._connect():
            raise ClientGone()
        await self.send_message({"type": "websocket.accept", "subprotocol": subprotocol,
                                 "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]})

    async def receive(self) -> bytes | str | None:
        message = await self.receive_message()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        if kind == "websocket.disconnect":
            self.close_code = message.get("code", ABNORMAL)
            self.close_reason = message.get("reason") or ""
        return None

    async def send(self, data: bytes | str) -> None:
        message = {"type": "websocket.send", "text": data} if data.__class__ is str else \
            {"type": "websocket.send", "bytes": data}
        try:
            await self.send_message(message)
        except Exception:  # noqa: BLE001 - granian raises once the client has gone
            raise ClientGone() from None

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.send_message({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # noqa: BLE001 - the client has gone already
            pass
