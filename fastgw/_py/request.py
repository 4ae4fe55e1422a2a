"""Request-head scan for the proxy path: the reference for src_ext/_request.pxi.

One pass over the header list granian hands over (names lower-cased): enforce the header limits,
read the framing fields, refuse ambiguous ones, and serialise the forwardable fields into one
bytes block for the upstream request.
"""

from __future__ import annotations

NOT_FORWARDED = frozenset((
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "host",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip",
    # The server layer answered any 100-continue with the client; the body goes upstream at once.
    "expect",
))
GATEWAY_PREFIX = "x-fastgw-"  # the gateway's own fields (the cache token included): never forwarded
SINGLETON = frozenset(("host", "authorization", "x-api-key", "content-length", "content-type"))
# Fields that make the stage cache look closer at a request (fastgw/policies/cache/stage.py): credentials, client
# cache directives and the cache's own invalidation token.
CACHE_FIELDS = frozenset(("authorization", "cache-control", "x-fastgw-cache-token"))
PROXIED_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class RequestRejected(Exception):
    """The request head breaks a limit or a rule; `kind` is the gateway response type."""

    def __init__(self, kind: str, message: str | None = None):
        super().__init__(message or kind)
        self.kind = kind
        self.message = message


class RequestFacts:
    __slots__ = ("host", "content_length", "chunked", "expect_continue", "forward", "forwarded_for", "cache_fields",
                 "api_key")

    def __init__(self) -> None:
        self.host = ""
        self.content_length = -1
        self.chunked = False
        self.expect_continue = False
        self.forward = b""
        self.forwarded_for = ""
        self.cache_fields = False
        self.api_key = ""


def _one_byte(text: str) -> bool:
    """Every character fits one byte (what granian hands over: latin-1 decoded or ASCII)."""
    return text.isascii() or max(text) <= "\xff"


def scan_request_headers(headers: list[tuple[str, str]], max_count: int, max_total: int, max_field: int,
                         max_body: int) -> RequestFacts:
    facts = RequestFacts()
    if len(headers) > max_count:
        raise RequestRejected("HEADERS_TOO_LARGE", "Too many request header fields")
    total = 0
    seen: set[str] = set()
    nominated: set[str] = set()
    for name, value in headers:
        if not (_one_byte(name) and _one_byte(value)):  # as the compiled scan: before any limit
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field")
        size = len(name) + len(value)
        total += size + 4
        if size > max_field:
            raise RequestRejected("HEADERS_TOO_LARGE", "Request header field too large")
        if "_" in name:
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field name")
        if not (name.isascii() and value.isascii()) and max(map(ord, name + value)) > 255:
            # No wire byte decodes to it; the compiled kernel refuses such a field wherever it is.
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field value")
        if name in CACHE_FIELDS:
            facts.cache_fields = True
        if name in SINGLETON:
            if name in seen:
                raise RequestRejected("BAD_REQUEST_PARAMETERS", f"Duplicate {name} header")
            seen.add(name)
            if name == "host":
                facts.host = value
            elif name == "x-api-key":
                facts.api_key = value
            elif name == "content-length":
                if not (value.isascii() and value.isdigit()) or len(value) > 18:
                    raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid Content-Length")
                facts.content_length = int(value)
        elif name == "transfer-encoding":
            # RFC 9112 §6.1/§6.3: chunked must be the final coding, once; other codings are not
            # supported (501). Anything ambiguous is a 400.
            codings = [c.strip().lower() for c in value.split(",")]
            if facts.chunked or codings.count("chunked") != 1 or codings[-1] != "chunked":
                raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid Transfer-Encoding")
            if len(codings) > 1:
                raise RequestRejected("NOT_IMPLEMENTED", "Unsupported Transfer-Encoding")
            facts.chunked = True
        elif name == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            nominated.update(t for t in tokens if t and t not in ("close", "keep-alive"))
        elif name == "expect":
            if value.lower() != "100-continue":
                raise RequestRejected("EXPECTATION_FAILED")
            facts.expect_continue = True
        elif name == "x-forwarded-for":
            facts.forwarded_for = value
    if total > max_total:
        raise RequestRejected("HEADERS_TOO_LARGE")
    if facts.chunked and facts.content_length >= 0:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Both Content-Length and Transfer-Encoding")
    if facts.content_length > max_body:
        raise RequestRejected("REQUEST_TOO_LARGE")
    # What the gateway asserts to the upstream (X-Fastgw-*) is never taken from the client.
    block = "".join(
        f"{name}: {value}\r\n" for name, value in headers
        if name not in NOT_FORWARDED and name not in nominated and not name.startswith(GATEWAY_PREFIX)
    )
    try:
        facts.forward = block.encode("latin-1")
    except UnicodeEncodeError:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field value") from None
    return facts


def scan_request(method: str, path: str, query: str, absolute_form: bool, headers: list[tuple[str, str]],
                 limits: tuple[int, int, int, int, int]) -> RequestFacts:
    """The request line, then the head (scan_request_headers). `limits`: (max URI bytes, max header
    count, max header bytes, max field bytes, max body bytes)."""
    if method not in PROXIED_METHODS:
        if method == "TRACE":
            raise RequestRejected("METHOD_NOT_ALLOWED")
        if method == "CONNECT":
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "CONNECT is not supported")
        raise RequestRejected("NOT_IMPLEMENTED", "Unknown method")
    # request line: METHOD SP target SP HTTP/1.1
    if len(method) + len(path) + len(query) + (1 if query else 0) + 11 > limits[0]:
        raise RequestRejected("URI_TOO_LONG")
    if absolute_form:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Absolute-form request targets are not supported")
    if not path.startswith("/"):
        # asterisk-form (OPTIONS *) and the authority form are not proxied.
        if method == "OPTIONS" and path == "*":
            raise RequestRejected("METHOD_NOT_ALLOWED")
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid request target")
    return scan_request_headers(headers, limits[1], limits[2], limits[3], limits[4])


def latin1_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI's (bytes, bytes) header pairs as (str, str), byte for byte (latin-1)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def bytes_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """(str, str) header pairs as ASGI's (bytes, bytes), byte for byte (latin-1)."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def peer_host(address: str) -> str:
    """The client's host from the address the server gives: "host:port" and "[v6]:port" (RSGI) lose
    the port and brackets; a bare host (ASGI gives one, v4 or v6: more than one colon) is kept whole."""
    if address[:1] == "[":
        close = address.find("]", 1)
        return address[1:close] if close >= 0 else address
    colon = address.find(":")
    if colon >= 0 and address.find(":", colon + 1) < 0:
        return address[:colon]
    return address


def upstream_request_head(method: str, target: str, host: str, forward: bytes, peer: str, prior_hops: str,
                          scheme: str, forwarded_host: str, framing: str) -> bytes:
    """The head of a request to the upstream: request line, Host, the forwardable client fields
    (`forward`, serialised by scan_request_headers), X-Forwarded-For (the trusted `prior_hops`, if
    any, then the host of `peer`, the client's address as the server gives it), X-Forwarded-Proto,
    X-Forwarded-Host when the client sent a Host, then `framing` (the body's framing field and the
    blank line)."""
    client = peer_host(peer)
    forwarded_for = f"{prior_hops}, {client}" if prior_hops else client
    forwarded = f"x-forwarded-host: {forwarded_host}\r\n" if forwarded_host else ""
    return b"".join((
        f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1"),
        forward,
        f"x-forwarded-for: {forwarded_for}\r\nx-forwarded-proto: {scheme}\r\n{forwarded}{framing}".encode("latin-1"),
    ))


class RequestIds:
    """AWS-shaped request ids (the UUID layout) without a uuid4 per request: a prefix of 24
    characters chosen once per worker ("xxxxxxxx-xxxx-xxxx-xxxx-"), then a counter as 12 hex digits."""

    def __init__(self, prefix: str) -> None:
        if len(prefix) != 24:
            raise ValueError("a request id prefix has 24 characters")
        self.prefix = prefix
        self.counter = 0

    def next(self) -> str:
        self.counter += 1
        return f"{self.prefix}{self.counter & 0xFFFFFFFFFFFF:012x}"
