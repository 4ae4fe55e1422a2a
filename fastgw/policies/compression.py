"""Response compression: a REST API's `minimumCompressionSize`, as AWS applies it.

With the setting (0 to 10 485 760 bytes; absent: off), a response whose body is at least that large
is sent gzip- or deflate-encoded when the client's Accept-Encoding asks for it (fastgw/codings.py
`accepted_coding`: q-values honoured, AWS's "the highest-priority coding must be supported"), unless
the response already has a Content-Encoding (an upstream that compressed it itself: never encoded
twice), has no body (HEAD, 1xx, 204, 304) or the request was a HEAD. Every response of such an API
carries `Vary: Accept-Encoding`, compressed or not, so a shared cache keeps the two apart. A strong
ETag becomes weak on a compressed response (the bytes differ from the identity ones).

Whole responses (the gateway's own, buffered upstream responses, functions, templates, cache hits) are
measured exactly. Streamed upstream responses are measured by their Content-Length; one without (a
chunked or close-delimited stream) is compressed whatever its size, chunk by chunk with a sync flush
so each piece reaches the client when it arrives (server-sent events keep flowing). The stage cache
stores the identity response; each hit is encoded for its own client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codings import accepted_coding, encode, encoder
from ..httpsyntax import header

NO_BODY = (204, 304)
VARY = ("vary", "Accept-Encoding")


@dataclass(slots=True, frozen=True)
class CompressionPlan:
    minimum: int  # bytes

    def check(self, down: Any) -> Any:
        """The client side of the request, with the coding its response will get."""
        coding = None if down.method == "HEAD" else accepted_coding(header(down.headers, "accept-encoding"))
        return CompressingDownstream(down, coding, self.minimum)


def compile_compression(minimum: int | None) -> CompressionPlan | None:
    return None if minimum is None else CompressionPlan(minimum)


def _prepare(headers: list[tuple[str, str]], coding: str | None) -> tuple[list[tuple[str, str]], bool]:
    """(the headers to send, whether to encode): Vary added; encoding only when nothing is encoded yet."""
    out: list[tuple[str, str]] = []
    vary = None
    encoded = False
    for name, value in headers:
        lower = name.lower()
        if lower == "content-encoding" and value.strip().lower() not in ("", "identity"):
            encoded = True
        elif lower == "vary":
            vary = value
            continue
        out.append((name, value))
    if vary is None:
        out.append(VARY)
    elif vary.strip() == "*" or "accept-encoding" in vary.lower():
        out.append(("vary", vary))
    else:
        out.append(("vary", f"{vary}, Accept-Encoding"))
    return out, coding is not None and not encoded


def _encoded_headers(headers: list[tuple[str, str]], coding: str) -> list[tuple[str, str]]:
    """The headers of a response about to be encoded: no length (it changes), a weak ETag, the coding."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in ("content-length", "content-encoding"):
            continue
        if lower == "etag" and not value.startswith("W/"):
            value = "W/" + value
        out.append((name, value))
    out.append(("content-encoding", coding))
    return out


class CompressingDownstream:
    """The client side of one request of an API with compression: responses go out encoded when the
    rules above allow it."""

    def __init__(self, down: Any, coding: str | None, minimum: int):
        self._down = down
        self._coding = coding
        self._minimum = minimum
        self._stream: Any = None  # the zlib encoder of a streamed response being encoded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._down, name)

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> Any:
        headers, may = _prepare(headers, self._coding)
        if may and status not in NO_BODY and status >= 200 and len(body) >= self._minimum:
            coding = self._coding
            assert coding is not None
            body = encode(body, coding)
            headers = _encoded_headers(headers, coding)
        return self._down.respond(status, headers, body)

    async def start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        headers, may = _prepare(headers, self._coding)
        if may and status not in NO_BODY and status >= 200:
            length = header(headers, "content-length")
            if length is None or not length.isdigit() or int(length) >= self._minimum:
                coding = self._coding
                assert coding is not None
                self._stream = encoder(coding)
                headers = _encoded_headers(headers, coding)
        await self._down.start_stream(status, headers)

    async def send(self, chunk: bytes) -> None:
        stream = self._stream
        if stream is not None:
            chunk = stream.compress(chunk) + stream.flush(2)  # zlib.Z_SYNC_FLUSH
            if not chunk:
                return
        await self._down.send(chunk)

    async def finish(self) -> None:
        stream = self._stream
        if stream is not None:
            self._stream = None
            tail = stream.flush()
            if tail:
                await self._down.send(tail)
        await self._down.finish()
