"""WebSocket: the WebSocket API type (api.py: connections, route selection, integrations, the
@connections hub across workers) and pass-through on HTTP_PROXY routes (passthrough.py, with the client
side of a connection over granian's RSGI or ASGI in channel.py). The server adapters are in
fastgw/server.py."""
