"""The chat room of examples/chat.yaml: one Lambda-style handler for every route of a WebSocket API.

Members are kept in a small SQLite file (CHAT_DB, default: the system's temp directory), since
fastgw's workers are separate processes. A message is pushed to each member through the @connections
API of the same gateway, as a Lambda does on AWS (there with boto3's apigatewaymanagementapi client and
`https://{domainName}/{stage}`; here a plain POST, the example's management API being open on loopback).
fastgw serves @connections on its HTTP port, WebSocket clients on their own (8081 next to 8080): the
callback is the HTTP port's stage URL, CHAT_CALLBACK.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from typing import Any

DB = os.environ.get("CHAT_DB") or os.path.join(tempfile.gettempdir(), "fastgw-chat.sqlite3")


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(DB, timeout=5, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, name TEXT, callback TEXT)")
    return db


def _post(callback: str, connection_id: str, payload: dict[str, Any]) -> bool:
    """Push to one member; False when the connection is gone (410)."""
    request = urllib.request.Request(f"{callback}/@connections/{connection_id}", method="POST",
                                     data=json.dumps(payload).encode())
    try:
        urllib.request.urlopen(request, timeout=5).close()
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 410:
            return False
        raise


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ctx = event["requestContext"]
    route, me = ctx["routeKey"], ctx["connectionId"]
    with _db() as db:
        if route == "$connect":
            name = (event.get("queryStringParameters") or {}).get("name")
            if not name:
                return {"statusCode": 400}  # refuses the handshake
            callback = os.environ.get("CHAT_CALLBACK", f"http://127.0.0.1:8080/{ctx['stage']}")
            db.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?)", (me, name, callback))
            return {"statusCode": 200}
        if route == "$disconnect":
            db.execute("DELETE FROM members WHERE id = ?", (me,))
            return {"statusCode": 200}
        if route == "sendmessage":
            text = json.loads(event["body"]).get("text", "")
            row = db.execute("SELECT name FROM members WHERE id = ?", (me,)).fetchone()
            payload = {"from": row[0] if row else "?", "text": text}
            for member, callback in db.execute("SELECT id, callback FROM members").fetchall():
                if not _post(callback, member, payload):
                    db.execute("DELETE FROM members WHERE id = ?", (member,))
            return {"statusCode": 200}
        if route == "members":  # a two-way route: the answer goes back to the caller only
            names = [name for (name,) in db.execute("SELECT name FROM members ORDER BY name")]
            return {"statusCode": 200, "body": json.dumps({"members": names})}
    # $default: anything else, or not JSON (two-way)
    return {"statusCode": 200, "body": json.dumps({"error": "send {\"action\": \"sendmessage\", \"text\": ...} "
                                                              "or {\"action\": \"members\"}"})}
