"""The WebSocket API of the node-to-node tests (tests/test_websocket_nodes.py on one Redis server,
tests/test_redis_cluster.py on a Redis Cluster): a MOCK `$default` route that answers with the
connection's id, the @connections API signed with SigV4 (`creds.ini` beside the config)."""

from __future__ import annotations

CHAT_API = """
apis:
  - name: chat
    type: WEBSOCKET
    routeSelectionExpression: $request.body.action
    stages:
      prod: {}
    routes:
      - route: $default
        routeResponseSelectionExpression: $default
        integration:
          type: MOCK
          responses: {$default: {responseTemplates: {$default: '$context.connectionId'}}}
"""


def chat_config(state: str) -> str:
    """The gateway's config with `state` (the YAML flow mapping of its `state:` section)."""
    return f"""
server:
  iam: {{credentialsFile: creds.ini, region: us-east-1}}
state: {state}{CHAT_API}"""
