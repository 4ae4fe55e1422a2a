"""HTTP content codings (RFC 9110 §8.4): which one a client's Accept-Encoding asks for, encoding a
response body (whole or as a stream), and decoding a request body within a size limit. zlib does the
work; the gateway's compression policy (fastgw/policies/compression.py) and the non-proxy
integrations' request decoding (fastgw/integrations/nonproxy.py) use it.
"""

from __future__ import annotations

import zlib

from .errors import GatewayError

# The codings fastgw produces and decodes, as AWS's REST APIs do (gzip, deflate; identity is "none").
CODINGS = ("gzip", "deflate")
LEVEL = 6  # zlib's default: ~3x on JSON at ~20 MB/s per core (level 1: ~60 MB/s, a little larger)
# gzip: a gzip header and trailer; deflate (HTTP's "deflate" is the zlib format, RFC 9110 §8.4.1.2)
WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
_DECODE_WBITS = {"gzip": 47, "x-gzip": 47, "deflate": 15}  # 47: gzip or zlib header, auto-detected
_ACCEPT_SEEN: dict[str, str | None] = {}  # Accept-Encoding values already parsed (per worker, bounded)
_ACCEPT_SEEN_MAX = 256


def accepted_coding(accept: str | None) -> str | None:
    """The coding to answer a request with: "gzip", "deflate" or None (send it as it is).

    As AWS: no Accept-Encoding means no compression (RFC 9110 would allow any coding); among the
    codings of the highest q-value one fastgw supports must be present, else nothing is compressed
    ("br, gzip" compresses with gzip; "br;q=1, gzip;q=0.5" does not; "identity" or "gzip;q=0"
    does not); `*` stands for gzip unless gzip is refused explicitly.
    """
    if not accept:
        return None
    found = _ACCEPT_SEEN.get(accept, "")
    if found != "":
        return found
    choice = _parse_accept(accept)
    if len(_ACCEPT_SEEN) >= _ACCEPT_SEEN_MAX:
        _ACCEPT_SEEN.clear()
    if len(accept) <= 256:
        _ACCEPT_SEEN[accept] = choice
    return choice


def _parse_accept(accept: str) -> str | None:
    weights: dict[str, float] = {}
    for item in accept.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        if name == "x-gzip":
            name = "gzip"
        weights[name] = max(q, weights.get(name, 0.0)) if name in weights else q
    best = max((q for q in weights.values()), default=0.0)
    if best <= 0.0:
        return None
    top = {name for name, q in weights.items() if q == best}
    for coding in CODINGS:
        if coding in top:
            return coding
    if "*" in top and weights.get("gzip", 1.0) > 0.0:
        return "gzip"
    return None


def encode(body: bytes, coding: str) -> bytes:
    """A whole body in `coding` (gzip or deflate)."""
    return zlib.compress(body, LEVEL, WBITS[coding])


def encoder(coding: str) -> zlib._Compress:
    """A streaming encoder: feed `compress(chunk)` + `flush(zlib.Z_SYNC_FLUSH)` per chunk (so each chunk
    reaches the client at once: server-sent events keep flowing), `flush()` at the end."""
    return zlib.compressobj(LEVEL, zlib.DEFLATED, WBITS[coding])


def decode(body: bytes, coding: str, limit: int) -> bytes:
    """A request body sent with `Content-Encoding: coding`, decoded; at most `limit` bytes come out,
    whatever the ratio (a zip bomb is refused with 413 after `limit` bytes, never inflated further).
    An unknown coding is 415, data that is not what the coding says 400."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _DECODE_WBITS.get(coding)
    if wbits is None:
        raise GatewayError("UNSUPPORTED_MEDIA_TYPE", f"Unsupported Content-Encoding: {coding[:40]}")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise GatewayError("BAD_REQUEST_BODY", f"The request body is not valid {coding} data") from None
    if len(out) > limit:
        raise GatewayError("REQUEST_TOO_LARGE", "The decoded request body is too large", close=True)
    if not inflater.eof:
        raise GatewayError("BAD_REQUEST_BODY", f"The request body is not valid {coding} data (truncated)")
    return out
