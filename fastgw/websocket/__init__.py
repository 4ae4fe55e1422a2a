"""WebSocket connections: pass-through on HTTP_PROXY routes (passthrough.py), the client side of a
connection over granian's RSGI or ASGI (channel.py)."""
