"""WebSocket: the WebSocket API type (api.py: connections, route selection, integrations, the
@connections hub across workers). The server adapters (RSGI, ASGI) are in fastgw/server.py."""
