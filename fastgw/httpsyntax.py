"""Request paths: the one canonical form that routing, limits and the upstream all see; and the
check of header fields the gateway itself writes from mappings and templates.

(The checks of the client's headers are the `scan_request_headers` kernel: src_ext/_request.pxi.)
"""

from __future__ import annotations

import re
from urllib.parse import quote

from .errors import GatewayError

# Characters that may stand unencoded in a path segment (RFC 3986 pchar minus '%').
PATH_SAFE = "/!$&'()*+,;=:@-._~"
NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/!$&'()*+,;=:@\-._~%]")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEX = frozenset("0123456789abcdefABCDEF")


FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token; used with fullmatch
# A field value holds visible characters, spaces, tabs and obs-text (0x80-0xFF) only: no CR, LF,
# NUL or other control characters, nothing latin-1 cannot carry (RFC 9110 §5.5).
BAD_FIELD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0100-\U0010ffff]")


def safe_field(name: str, value: str) -> bool:
    """A header a mapping, a template or a function produced may go out: a token for its name, and a
    value of visible characters, spaces and tabs only (a CR, LF or NUL would split the message: header
    injection; other control characters make granian refuse the whole response)."""
    # fullmatch, not match with "$": "$" also matches before a final "\n", which let "name\n" out.
    return bool(FIELD_NAME.fullmatch(name)) and not BAD_FIELD_VALUE.search(value)


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


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    """A request header's value (several values comma-joined, as AWS does), or None."""
    found = [value for key, value in headers if key == name]
    if not found:
        return None
    return found[0] if len(found) == 1 else ",".join(found)


def host_name(host: str) -> str:
    """A Host header's name without its port (`[v6]` hosts kept whole)."""
    return host.rsplit(":", 1)[0] if host and not host.endswith("]") else host


def media_type(value: str | None) -> str:
    """A Content-Type's media type, lower-case, without parameters ("" for none)."""
    return value.split(";", 1)[0].strip().lower() if value else ""
