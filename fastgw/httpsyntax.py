"""Request syntax checks the gateway makes itself before routing (RELIABILITY.md B1–B4, B6).

granian (hyper) parses the bytes; these checks enforce fastgw's own limits and rules on what it
receives, so that a request is either rejected whole or forwarded exactly as it was understood.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from .errors import GatewayError

# Hop-by-hop fields (RFC 9110 §7.6.1) plus those the gateway always computes itself.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "host",
))
# Set by the gateway from the real peer; a client's copies are never passed on as they are.
FORWARDED = frozenset(("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"))
# A request carrying two of these is ambiguous (which one did the authorizer see?): 400.
SINGLETON = frozenset(("host", "authorization", "x-api-key", "content-length", "content-type"))
# Characters that may stand unencoded in a path segment (RFC 3986 pchar minus '%').
PATH_SAFE = "/!$&'()*+,;=:@-._~"
NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/!$&'()*+,;=:@\-._~%]")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEX = frozenset("0123456789abcdefABCDEF")


def bad_request(message: str) -> GatewayError:
    return GatewayError("BAD_REQUEST_PARAMETERS", message)


def normalize_path(path: str, encoded_slashes: str) -> str:
    """The canonical, still percent-encoded form of a request path.

    Percent-encoded unreserved characters are decoded and other escapes upper-cased (RFC 3986
    §6.2.2), dot segments are removed and repeated slashes merged, so that routing, authorisation,
    limits and the upstream all see one and the same path. `%2F` is rejected (REJECT), kept as an
    escape inside its segment (PASS), or taken as a separator (DECODE). `%00` is always rejected.
    """
    if "%" in path or NEEDS_QUOTING.search(path):
        path = _canonical_escapes(path, encoded_slashes)
    if "//" in path or "/." in path:
        path = _remove_dot_segments(path)
    return path


def _canonical_escapes(path: str, encoded_slashes: str) -> str:
    if NEEDS_QUOTING.search(path):
        path = quote(path, safe=PATH_SAFE + "%")
    out: list[str] = []
    i = 0
    n = len(path)
    while i < n:
        ch = path[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        pair = path[i + 1:i + 3]
        if len(pair) != 2 or pair[0] not in HEX or pair[1] not in HEX:
            raise bad_request("Malformed percent-encoding in the request path")
        char = chr(int(pair, 16))
        if char == "\x00":
            raise bad_request("Encoded NUL in the request path")
        if char == "/":
            if encoded_slashes == "REJECT":
                raise bad_request("Encoded slash in the request path")
            out.append("/" if encoded_slashes == "DECODE" else "%2F")
        elif char in UNRESERVED:
            out.append(char)
        else:
            out.append("%" + pair.upper())
        i += 3
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    segments: list[str] = []
    parts = path.split("/")
    for part in parts[1:]:
        if part == "" or part == ".":
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = parts[-1] in ("", ".", "..") and len(parts) > 2
    result = "/" + "/".join(segments)
    if trailing and segments:
        result += "/"
    return result


def encode_decoded_path(path: str) -> str:
    """RSGI hands over a percent-decoded path: encode it back for forwarding."""
    if NEEDS_QUOTING.search(path) or "%" in path:
        return quote(path, safe=PATH_SAFE)
    return path


class RequestHead:
    """What the header checks learned about a request, for the later stages."""

    __slots__ = ("host", "content_length", "chunked", "drop", "expect_continue")

    def __init__(self) -> None:
        self.host = ""
        self.content_length = -1  # -1: no Content-Length
        self.chunked = False
        self.drop: frozenset[str] | set[str] = HOP_BY_HOP  # fields not to forward
        self.expect_continue = False


def check_headers(headers: list[tuple[str, str]], max_count: int, max_total: int, max_field: int,
                  max_body: int) -> RequestHead:
    """Enforce header limits and syntax (431 / 400 / 413 / 417 / 501) and read the framing fields.

    Names arrive lower-cased from granian. Content-Length is parsed as digits only (no sign, no
    `0x`, no `_`), Transfer-Encoding must be exactly `chunked`, and both together are refused:
    the body must mean one thing to the gateway and the upstream (RFC 9112 §6.3).
    """
    if len(headers) > max_count:
        raise GatewayError("HEADERS_TOO_LARGE", "Too many request header fields")
    head = RequestHead()
    total = 0
    seen: set[str] = set()
    drop: set[str] | None = None
    for name, value in headers:
        size = len(name) + len(value)
        total += size + 4
        if size > max_field:
            raise GatewayError("HEADERS_TOO_LARGE", "Request header field too large")
        if name in SINGLETON:
            if name in seen:
                raise bad_request(f"Duplicate {name} header")
            seen.add(name)
            if name == "host":
                head.host = value
            elif name == "content-length":
                if not value.isdigit() or not value.isascii():
                    raise bad_request("Invalid Content-Length")
                head.content_length = int(value)
        elif name == "transfer-encoding":
            if head.chunked or value.strip().lower() != "chunked":
                raise GatewayError("NOT_IMPLEMENTED", "Unsupported Transfer-Encoding")
            head.chunked = True
        elif name == "connection":
            tokens = {t.strip().lower() for t in value.split(",") if t.strip()}
            drop = set(HOP_BY_HOP) if drop is None else drop
            drop.update(tokens)
        elif name == "expect":
            if value.lower() != "100-continue":
                raise GatewayError("EXPECTATION_FAILED")
            head.expect_continue = True
        if "_" in name:
            # Underscores are legal token characters, but proxies and apps disagree on whether
            # X_Api_Key means X-Api-Key (Envoy edge guidance: reject). Other illegal names never
            # get here: granian's parser refuses them (pinned by tests/test_reliability.py).
            raise bad_request("Invalid header field name")
    if total > max_total:
        raise GatewayError("HEADERS_TOO_LARGE")
    if head.chunked and head.content_length >= 0:
        raise bad_request("Both Content-Length and Transfer-Encoding")
    if head.content_length > max_body:
        raise GatewayError("REQUEST_TOO_LARGE")
    if drop is not None:
        head.drop = drop
    return head
