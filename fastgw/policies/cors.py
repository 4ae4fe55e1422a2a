"""CORS answered by the gateway (an HTTP API's x-amazon-apigateway-cors, or a native `cors:` block).

As in AWS's HTTP APIs: a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered
by the gateway, whatever the routes, and never reaches the integration; other requests with an
allowed Origin get Access-Control-Allow-Origin (and -Allow-Credentials, -Expose-Headers) on their
response, replacing any the integration sent. REST APIs get what their own OPTIONS methods define.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.model import Cors
from ..errors import GatewayAnswered
from ..httpsyntax import header


@dataclass(slots=True, frozen=True)
class CorsPlan:
    any_origin: bool
    origins: frozenset[str]
    suffixes: tuple[str, ...]  # "https://*.example.com" -> ("https://", ".example.com")
    methods: str
    headers: str  # "" : none; "*" : echo the request's
    expose: str
    max_age: str | None
    credentials: bool

    def check(self, down: Any) -> Any:
        """A preflight is answered here (GatewayAnswered); any other request with an Origin goes on
        with the CORS headers added to whatever response goes out."""
        origin = header(down.headers, "origin")
        if origin is None:
            return down
        if down.method == "OPTIONS":
            wanted = header(down.headers, "access-control-request-method")
            if wanted is not None:
                requested = header(down.headers, "access-control-request-headers") or ""
                raise GatewayAnswered(204, self.preflight(origin, requested))
        extra = self.simple(origin)
        return CorsDownstream(down, extra) if extra else down

    def origin_allowed(self, origin: str) -> bool:
        if self.any_origin or origin in self.origins:
            return True
        return any(origin.startswith(scheme) and origin.endswith(suffix) and len(origin) > len(scheme) + len(suffix)
                   for scheme, suffix in self.suffixes)

    def allow_origin(self, origin: str) -> str:
        return "*" if self.any_origin and not self.credentials else origin

    def preflight(self, origin: str, request_headers: str) -> list[tuple[str, str]]:
        if not self.origin_allowed(origin):
            return []
        headers = [("access-control-allow-origin", self.allow_origin(origin))]
        if self.methods:
            headers.append(("access-control-allow-methods", self.methods))
        allow_headers = request_headers if self.headers == "*" else self.headers
        if allow_headers:
            headers.append(("access-control-allow-headers", allow_headers))
        if self.max_age is not None:
            headers.append(("access-control-max-age", self.max_age))
        if self.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        if not self.any_origin or self.credentials:
            headers.append(("vary", "origin"))
        return headers

    def simple(self, origin: str) -> list[tuple[str, str]]:
        if not self.origin_allowed(origin):
            return []
        headers = [("access-control-allow-origin", self.allow_origin(origin))]
        if self.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        if self.expose:
            headers.append(("access-control-expose-headers", self.expose))
        if not self.any_origin or self.credentials:
            headers.append(("vary", "origin"))
        return headers


def compile_cors(cors: Cors | None) -> CorsPlan | None:
    if cors is None:
        return None
    origins = [o.rstrip("/") for o in cors.allowOrigins]
    suffixes = tuple((o.split("*.", 1)[0], "." + o.split("*.", 1)[1]) for o in origins if "*." in o)
    return CorsPlan(
        any_origin="*" in origins,
        origins=frozenset(o for o in origins if "*" not in o),
        suffixes=suffixes,
        methods=",".join(cors.allowMethods) if "*" not in cors.allowMethods else
        "DELETE,GET,HEAD,OPTIONS,PATCH,POST,PUT",
        headers="*" if "*" in cors.allowHeaders else ",".join(cors.allowHeaders),
        expose=",".join(cors.exposeHeaders),
        max_age=str(cors.maxAge) if cors.maxAge is not None else None,
        credentials=cors.allowCredentials,
    )


class CorsDownstream:
    """The client side of one request with CORS headers added to whatever response goes out."""

    def __init__(self, down: Any, extra: list[tuple[str, str]]):
        self._down = down
        self._extra = extra

    def __getattr__(self, name: str) -> Any:
        return getattr(self._down, name)

    def _headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
        kept.extend(self._extra)
        return kept

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
        return self._down.respond(status, self._headers(headers), body)

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        await self._down.start_stream(status, self._headers(headers))
