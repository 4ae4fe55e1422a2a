"""HTTP/1.1 response parser on httptools (llhttp): the reference for src_ext/_http1.pxi.

Same interface and results as the compiled parser: feed() returns 0 (more bytes needed), 1 (the
head completed in this call) or 2 (the message is complete); `headers` is the client-facing list
(hop-by-hop and gateway-computed fields dropped, names in their original case). llhttp accepts a
few framings a proxy must refuse (RFC 9112 §6.3), so they are checked here on top of it.
"""

from __future__ import annotations

import httptools

NEED_MORE, HEAD_DONE, MESSAGE_DONE = 0, 1, 2
DROPPED = frozenset((
    "date", "server", "te", "trailer", "upgrade", "connection", "keep-alive", "content-length",
    "proxy-connection", "transfer-encoding", "proxy-authenticate",
))


class ResponseError(Exception):
    """The upstream's response is not valid HTTP/1.1 (or breaks a limit). `kind` names the fault (the
    same names as src_ext/_http1.pxi)."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


# llhttp's reason for refusing a response -> the fault kind (first match wins).
LLHTTP_KINDS = (
    ("response line", "status_line"), ("HTTP/", "status_line"), ("HTTP version", "status_line"),
    ("status", "status_line"), ("Transfer-Encoding", "transfer_encoding"), ("Content-Length", "content_length"),
    ("chunk", "chunk"), ("Chunk", "chunk"), ("Missing expected CR", "bare_cr_lf"),
    ("Missing expected LF", "bare_cr_lf"),
    ("whitespace after header value", "obs_fold"),
)


def _llhttp_kind(reason: str) -> str:
    for part, kind in LLHTTP_KINDS:
        if part in reason:
            return kind
    return "header_syntax"


class ResponseParser:
    def __init__(self, max_header_bytes: int = 61440, max_header_count: int = 100):
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.reset(False)

    def reset(self, head_request: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_request = head_request
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = False
        self.buffered = 0
        self.complete = False
        self.content_length = -1  # the response's Content-Length; -1: none (chunked, close-delimited)
        # A fault that rules out reusing the connection without making the response invalid (see
        # src_ext/_http1.pxi): "after_response" or "body_not_allowed"; None if none.
        self.fault: str | None = None
        self.chunks: list[bytes] = []
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._fed = 0
        self._interim = 0  # 1xx responses skipped
        self._head_data: list[bytes] = []  # what was fed until the head ended (to find its end)
        self._head_done = False
        self._close_delimited = False
        self._extra = False

    def take_body(self) -> bytes:
        body = b"".join(self.chunks)
        self.chunks = []
        self.buffered = 0
        return body

    def eof(self) -> int:
        if self.complete:
            return MESSAGE_DONE
        if self._head_done and self._close_delimited:
            self.complete = True
            return MESSAGE_DONE
        raise ResponseError("upstream closed the connection before the response was complete", "truncated")

    def feed(self, data: bytes) -> int:
        if self.complete:
            if data:
                self.keep_alive = False
                self.fault = self.fault or "after_response"
            return MESSAGE_DONE
        was_done = self._head_done
        if not was_done:
            self._head_data.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:  # else: stopped on purpose after a complete message
                # httptools chains a callback's exception as the context of its own error
                cause = next((e for e in (exc.__cause__, exc.__context__) if isinstance(e, ResponseError)), None)
                raise cause or ResponseError(f"invalid response: {exc}", _llhttp_kind(str(exc))) from None
        if not self._head_done:
            # An endless head (no blank line ever): bounded by the bytes fed before it ended.
            self._fed += len(data)
            if self._fed > 2 * self.max_header_bytes:
                raise ResponseError("response headers too large", "header_limits")
        elif not was_done and self.head_request:
            # llhttp stopped at the end of the head: were there bytes after it?
            fed = b"".join(self._head_data)
            end = -4
            for _ in range(self._interim + 1):
                end = fed.find(b"\r\n\r\n", end + 4)
            if end + 4 < len(fed):
                self._extra = True
        if self._head_done:
            self._head_data = []
        if self._extra:
            self.keep_alive = False
            self.fault = self.fault or "after_response"
        if self.complete:
            return MESSAGE_DONE
        return HEAD_DONE if self._head_done and not was_done else NEED_MORE

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            # Bytes after a complete response: never reuse this connection.
            self._extra = True
            raise ResponseError("data after the response")
        self._raw = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if len(self._raw) > self.max_header_count:
            raise ResponseError("too many response header fields", "header_limits")
        if self._head_bytes > self.max_header_bytes:
            raise ResponseError("response headers too large", "header_limits")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if self.parser.get_http_version() not in ("1.1", "1.0"):
            raise ResponseError("unsupported HTTP version in the response", "status_line")
        if 100 <= status < 200:
            if status == 101:
                # Only a WebSocket route may switch protocols, and fastgw has none yet.
                raise ResponseError("unexpected 101 Switching Protocols", "switching_protocols")
            self._interim += 1
            return
        self.status = status
        length = None
        chunked = False
        nominated: set[str] = set()
        headers = []
        for raw_name, raw_value in self._raw:
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1").strip(" \t")
            lower = name.lower()
            if lower == "content-length":
                if not value.isdigit() or not value.isascii() or len(value) > 18:
                    raise ResponseError("invalid Content-Length", "content_length")
                if length is not None:
                    raise ResponseError("duplicate Content-Length fields", "content_length")
                length = int(value)
            elif lower == "transfer-encoding":
                if chunked or value.lower() != "chunked":
                    raise ResponseError("unsupported Transfer-Encoding", "transfer_encoding")
                chunked = True
            elif lower == "connection":
                nominated.update(t.strip().lower() for t in value.split(",") if t.strip())
            if lower not in DROPPED:
                headers.append((name, value))
        nominated -= {"close", "keep-alive"}
        if nominated:
            headers = [h for h in headers if h[0].lower() not in nominated]
        if chunked and length is not None:
            raise ResponseError("both Content-Length and Transfer-Encoding in the response", "transfer_encoding")
        self.headers = headers
        self.content_length = length if length is not None else -1
        self.keep_alive = self.parser.should_keep_alive()
        self._head_done = True
        self._close_delimited = not chunked and length is None
        no_body = self.head_request or status in (204, 304)
        if self._close_delimited and not no_body:
            self.keep_alive = False
        if (status == 204 and (chunked or (length or 0) > 0)) or (status == 304 and chunked):
            # A body a 204/304 cannot have was announced: the connection's next boundary is unknown.
            self.fault = "body_not_allowed"
            self.keep_alive = False
        if no_body:
            self.complete = True
            if self.head_request:
                # llhttp cannot be told that a HEAD response has no body: stop parsing here.
                self._extra = False
                raise ResponseError("head response complete")

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # an interim 1xx response
        self.complete = True
