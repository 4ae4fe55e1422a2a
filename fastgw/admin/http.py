"""The admin API's HTTP side: a small threaded server in the main process that looks each request up
in the endpoint table (fastgw/admin/endpoints.py) and answers with one shape.

Every endpoint requires the admin token (`server.adminToken`, `Authorization: Bearer TOKEN`) unless it
is marked public (health and readiness). A handler gets a `Request` and returns `(status, payload)`:
a JSON-able payload, or `Text` for a non-JSON body (the Prometheus scrape). A path that no endpoint
has is 404, a known path with another method 405; an unexpected error is 500 with a JSON body (and
logged), never a dropped connection.

A handler that takes a JSON body reads it with `request.json_body(required={...}, optional={...})`:
a body that is not JSON, not an object, lacks a required field, has a field of the wrong type or an
unknown field raises `BadRequest`, which the dispatcher answers with 400 and
`{"message": ..., "field": ..., "body": "{keyId, usagePlanId, remaining}"}` (the message names the
endpoint, the field and the body it takes; `field` when one field is at fault).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

import orjson

log = logging.getLogger("fastgw.server")

MAX_BODY = 1 << 20


class Kind(NamedTuple):
    """A JSON field's type, as the body reader checks it and its error messages name it."""

    name: str
    check: Callable[[Any], bool]


STRING = Kind("a string", lambda v: isinstance(v, str))
INTEGER = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
NUMBER = Kind("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
BOOLEAN = Kind("true or false", lambda v: isinstance(v, bool))
STRINGS = Kind("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
STRING_MAP = Kind("an object of string values",
                  lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class BadRequest(Exception):
    """A request the admin API refuses with 400: the message says what is wrong and what it takes."""

    def __init__(self, message: str, field: str | None = None, body: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.body = body

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.body is not None:
            out["body"] = self.body
        return out


def body_format(required: dict[str, Kind], optional: dict[str, Kind]) -> str:
    """`{keyId, usagePlanId, remaining}`; optional fields with a `?`."""
    return "{" + ", ".join([*required, *(f"{name}?" for name in optional)]) + "}"


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

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    def args(self, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, str | None]:
        """The query string's parameters; BadRequest names the missing ones."""
        usage = "?" + "&".join(f"{n}=" for n in required) + "".join(f"[&{n}=]" for n in optional)
        missing = [name for name in required if not self.arg(name)]
        if missing:
            names = ", ".join(f"'{name}'" for name in missing)
            plural = "s" if len(missing) > 1 else ""
            raise BadRequest(f"missing query parameter{plural} {names} ({self.endpoint} takes {usage})",
                             missing[0] if len(missing) == 1 else None, usage)
        return {name: self.arg(name) for name in (*required, *optional)}

    def json_body(self, required: dict[str, Kind] | None = None,
                  optional: dict[str, Kind] | None = None) -> dict[str, Any]:
        """The body as a JSON object with these fields (a null optional field counts as left out).

        Raises BadRequest naming the problem: not JSON, not an object, a missing field (and whether it
        was given in the query string instead), a field of the wrong type, an unknown field."""
        required = required or {}
        optional = optional or {}
        shape = body_format(required, optional)
        takes = f"{self.endpoint} takes a JSON body {shape}"
        if not self.body.strip():
            data: Any = {}
        else:
            try:
                data = orjson.loads(self.body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"the body is not valid JSON ({exc}); {takes}", None, shape) from None
        if not isinstance(data, dict):
            raise BadRequest(f"the body must be a JSON object, not {_json_type(data)}; {takes}", None, shape)
        for name in required:
            if name not in data or data[name] is None:
                where = " in the JSON body (it was given in the query string)" if name in self.query else ""
                raise BadRequest(f"missing field '{name}'{where} ({takes})", name, shape)
        kinds = {**required, **optional}
        for name, value in data.items():
            kind = kinds.get(name)
            if kind is None:
                known = ", ".join(kinds) or "none"
                raise BadRequest(f"unknown field '{name}' ({takes}; known fields: {known})", name, shape)
            if value is not None and not kind.check(value):
                raise BadRequest(f"field '{name}' must be {kind.name}, not {_json_type(value)} ({takes})",
                                 name, shape)
        return {name: value for name, value in data.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Text:
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


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
        if method != "GET" and not self._same_origin():
            # A browser page elsewhere (a CSRF form or fetch) must not change the gateway through an
            # operator's browser, token or not; curl and the CLI send no Origin.
            self._reply(403, {"message": f"cross-origin {method} refused (Origin must be this admin address)"})
            return
        if not endpoint.public and not self._authorized():
            self._reply(401, {"message": "Unauthorized"})
            return
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            self._reply(400, {"message": "the content-length header is not a number"})
            self.close_connection = True
            return
        if length > MAX_BODY:
            self._reply(413, {"message": f"the body is larger than {MAX_BODY} bytes"})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length > 0 else b""
        try:
            status, payload = endpoint.handler(Request(method, path, parts, parse_qs(query), body))
        except BadRequest as exc:
            status, payload = 400, exc.payload()
        self._reply(status, payload)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _same_origin(self) -> bool:
        if self.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = self.headers.get("origin")
        host = self.headers.get("host", "")
        # https: the admin port behind a TLS-terminating proxy that keeps the Host header.
        return origin is None or origin in (f"http://{host}", f"https://{host}")

    def _reply(self, status: int, payload: Any) -> None:
        if isinstance(payload, Text):
            self._send(status, payload.body, payload.content_type, payload.headers)
        else:
            self._send(status, orjson.dumps(payload), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.answered = True
        self.send_response(status)
        self.send_header("content-type", content_type)
        for name, value in headers:
            self.send_header(name, value)
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
