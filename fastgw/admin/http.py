"""The admin API's HTTP side: a small threaded server in the main process that looks each request up
in the endpoint table (fastgw/admin/endpoints.py) and answers with one shape.

Every endpoint requires the admin token (`server.adminToken`, `Authorization: Bearer TOKEN`) unless it
is marked public (health and readiness). A handler gets a `Request` and returns `(status, payload)`:
a JSON-able payload, or `Text` for a non-JSON body (the Prometheus scrape). A path that no endpoint
has is 404, a known path with another method 405; an unexpected error is 500 with a JSON body (and
logged), never a dropped connection.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

log = logging.getLogger("fastgw.server")

MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    parts: tuple[str, ...]  # the path's segments, percent-decoded
    query: dict[str, list[str]]
    body: bytes

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Text:
    body: bytes
    content_type: str


Handler = Callable[[Request], tuple[int, Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # "/keys/*/enable": `*` is any one segment
    handler: Handler
    public: bool = False  # answered without the admin token

    def matches(self, parts: tuple[str, ...]) -> bool:
        pattern = self.path.strip("/").split("/")
        return len(pattern) == len(parts) and all(p in ("*", part) for p, part in zip(pattern, parts, strict=True))


class AdminHandler(BaseHTTPRequestHandler):
    server_version = "fastgw-admin"
    server: Any  # AdminServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def handle_one_request(self) -> None:
        self.answered = False
        try:
            super().handle_one_request()
        except Exception:  # noqa: BLE001 - the admin API's last line of defence
            log.exception("admin API error on %s", getattr(self, "path", "?"))
            if not self.answered:
                try:
                    self._send(500, b'{"message":"Internal server error (see the gateway log)"}', "application/json")
                except OSError:
                    pass
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        parts = tuple(unquote(p) for p in path.strip("/").split("/"))
        found = [e for e in self.server.endpoints if e.matches(parts)]
        endpoint = next((e for e in found if e.method == method), None)
        if endpoint is None:
            if found:
                allowed = ", ".join(sorted({e.method for e in found}))
                self._reply(405, {"message": f"{method} is not allowed on {path} (allowed: {allowed})"})
            else:
                self._reply(404, {"message": "Not Found"})
            return
        if not endpoint.public and not self._authorized():
            self._reply(401, {"message": "Unauthorized"})
            return
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(min(length, MAX_BODY)) if length > 0 else b""
        status, payload = endpoint.handler(Request(method, path, parts, parse_qs(query), body))
        self._reply(status, payload)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _reply(self, status: int, payload: Any) -> None:
        if isinstance(payload, Text):
            self._send(status, payload.body, payload.content_type)
        else:
            self._send(status, orjson.dumps(payload), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.answered = True
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class AdminServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str | None, endpoints: tuple[Endpoint, ...]):
        super().__init__(address, AdminHandler)
        self.token = token
        self.endpoints = endpoints


def start_admin(host: str, port: int, token: str | None, endpoints: tuple[Endpoint, ...]) -> AdminServer:
    httpd = AdminServer((host, port), token, endpoints)
    thread = threading.Thread(target=httpd.serve_forever, name="fastgw-admin", daemon=True)
    thread.start()
    return httpd
