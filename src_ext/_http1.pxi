# HTTP/1.1 response parser for the upstream leg. Mirrors fastgw/_py/http1.py (built on httptools,
# the reference and test oracle); keep the two in step.
#
# PERF: the httptools version costs a Python callback per header and per body piece; this one
# parses the whole head in C and hands back the client-facing header list (hop-by-hop fields
# already dropped, names in their original case) with one call per read.

from libc.string cimport memchr, memcmp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeLatin1

cdef extern from "string.h":
    void* memmem(const void* haystack, size_t hlen, const void* needle, size_t nlen)
    int strncasecmp(const char* a, const char* b, size_t n)


class ResponseError(Exception):
    """The upstream's response is not valid HTTP/1.1 (or breaks a limit). `kind` names the fault for
    the fastgw_upstream_framing_errors_total metric: status_line, header_syntax, bare_cr_lf, obs_fold,
    content_length, transfer_encoding, header_limits, chunk, switching_protocols (the same in both
    builds)."""

    def __init__(self, message, kind="invalid"):
        super().__init__(message)
        self.kind = kind


cdef enum:
    ST_HEAD = 0
    ST_BODY_LENGTH = 1
    ST_CHUNK_SIZE = 2
    ST_CHUNK_DATA = 3
    ST_CHUNK_END = 4
    ST_TRAILERS = 5
    ST_BODY_CLOSE = 6
    ST_DONE = 7

# feed() results
cdef enum:
    NEED_MORE = 0
    HEAD_DONE = 1
    MESSAGE_DONE = 2

# tchar per RFC 9110 §5.6.2
cdef bint _TCHAR[256]
cdef int _i
for _i in range(256):
    _TCHAR[_i] = (
        (48 <= _i <= 57) or (65 <= _i <= 90) or (97 <= _i <= 122)
        or chr(_i) in "!#$%&'*+-.^_`|~"
    )

cdef inline bint _name_is(const char* name, Py_ssize_t n, const char* lower, Py_ssize_t ln):
    return n == ln and strncasecmp(name, lower, <size_t>n) == 0


cdef bint _chunk_extensions(const char* p, const char* end) noexcept:
    """`;name[=value]` repeated, as llhttp reads them: name a token, value a token or a quoted string
    (RFC 9112 §7.1.1), no whitespace, no control character (a bare CR there is how parsers come to
    disagree on where a chunk line ends). The extensions are then ignored."""
    cdef unsigned char c
    while p < end:
        if p[0] != 59:  # ;
            return False
        p += 1
        if p >= end or not _TCHAR[<unsigned char>p[0]]:
            return False
        while p < end and _TCHAR[<unsigned char>p[0]]:
            p += 1
        if p < end and p[0] == 61:  # =
            p += 1
            if p >= end:
                return False
            if p[0] == 34:  # a quoted string
                p += 1
                while True:
                    if p >= end:
                        return False
                    c = <unsigned char>p[0]
                    if c == 34:
                        p += 1
                        break
                    if c == 92:  # a quoted pair
                        p += 1
                        if p >= end:
                            return False
                        c = <unsigned char>p[0]
                        if (c < 32 and c != 9) or c == 127:
                            return False
                    elif (c < 32 and c != 9) or c == 127:
                        return False
                    p += 1
            else:
                if not _TCHAR[<unsigned char>p[0]]:
                    return False
                while p < end and _TCHAR[<unsigned char>p[0]]:
                    p += 1
    return True


cdef inline bint _dropped(const char* name, Py_ssize_t n):
    """Fields a proxy never relays as they are (hop-by-hop) or computes itself."""
    if n == 4:
        return strncasecmp(name, b"date", 4) == 0
    if n == 6:
        return strncasecmp(name, b"server", 6) == 0
    if n == 2:
        return strncasecmp(name, b"te", 2) == 0
    if n == 7:
        return strncasecmp(name, b"trailer", 7) == 0 or strncasecmp(name, b"upgrade", 7) == 0
    if n == 10:
        return strncasecmp(name, b"connection", 10) == 0 or strncasecmp(name, b"keep-alive", 10) == 0
    if n == 14:
        return strncasecmp(name, b"content-length", 14) == 0
    if n == 16:
        return strncasecmp(name, b"proxy-connection", 16) == 0
    if n == 17:
        return strncasecmp(name, b"transfer-encoding", 17) == 0
    if n == 18:
        return strncasecmp(name, b"proxy-authenticate", 18) == 0
    return False


cdef inline const char* _trim(const char* p, const char* end, const char** out_end):
    while p < end and (p[0] == 32 or p[0] == 9):
        p += 1
    while end > p and (end[-1] == 32 or end[-1] == 9):
        end -= 1
    out_end[0] = end
    return p


@cython.final
cdef class ResponseParser:
    """Incremental HTTP/1.1 response parser: feed() the bytes of a read, get the state back."""
    # its fields and methods: fastgw/_core.pxd

    def __cinit__(self, Py_ssize_t max_header_bytes=61440, Py_ssize_t max_header_count=100):
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.reset(False)

    cpdef reset(self, bint head_request):
        self.status = 0
        self.headers = []
        self.keep_alive = False
        self.buffered = 0
        self.complete = False
        self.content_length = -1
        self.fault = None
        self.chunks = []
        self.pending = b""
        self.state = ST_HEAD
        self.remaining = 0
        self.head_request = head_request
        self.nominated = False
        self.connection_tokens = None

    cpdef bytes take_body(self):
        cdef list chunks = self.chunks
        cdef bytes body
        if not chunks:
            return b""
        body = <bytes>chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        return body

    cpdef int eof(self) except -1:
        """The upstream closed the connection: completes a close-delimited body, else an error."""
        if self.state == ST_BODY_CLOSE:
            self.state = ST_DONE
            self.complete = True
            return MESSAGE_DONE
        if self.state == ST_DONE:
            return MESSAGE_DONE
        raise ResponseError("upstream closed the connection before the response was complete", "truncated")

    cpdef int feed(self, bytes data) except -1:
        cdef bytes buf
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t n
        cdef Py_ssize_t head_start
        cdef int result = NEED_MORE
        if self.state == ST_DONE:
            if PyBytes_GET_SIZE(data):
                # Bytes after a complete response: never reuse this connection.
                self.keep_alive = False
                if self.fault is None:
                    self.fault = "after_response"
            return MESSAGE_DONE
        if PyBytes_GET_SIZE(self.pending):
            buf = self.pending + data
            self.pending = b""
        else:
            buf = data
        n = PyBytes_GET_SIZE(buf)
        while True:
            if self.state == ST_HEAD:
                head_start = pos
                pos = self._parse_head(buf, pos)
                if pos < 0:
                    self.pending = buf[head_start:] if head_start else buf
                    return NEED_MORE
                if self.state == ST_HEAD:
                    continue  # an interim 1xx response was skipped
                result = HEAD_DONE
                if self.state == ST_DONE:
                    self._finish(pos, n)
                    return MESSAGE_DONE
            elif self.state == ST_BODY_LENGTH:
                pos = self._take(buf, pos, n)
                if self.remaining == 0:
                    self._finish(pos, n)
                    return MESSAGE_DONE
                return result
            elif self.state == ST_BODY_CLOSE:
                if pos < n:
                    self._append(buf, pos, n - pos)
                return result
            elif self.state == ST_CHUNK_DATA:
                pos = self._take(buf, pos, n)
                if self.remaining:
                    return result
                self.state = ST_CHUNK_END
            elif self.state == ST_CHUNK_END:
                if n - pos < 2:
                    self.pending = buf[pos:]
                    return result
                if buf[pos] != 13 or buf[pos + 1] != 10:
                    raise ResponseError("invalid chunk: data longer than its size", "chunk")
                pos += 2
                self.state = ST_CHUNK_SIZE
            elif self.state == ST_CHUNK_SIZE:
                pos = self._chunk_size(buf, pos, n)
                if pos < 0:
                    return result
            elif self.state == ST_TRAILERS:
                pos = self._trailers(buf, pos, n)
                if pos < 0:
                    return result
                self._finish(pos, n)
                return MESSAGE_DONE
            else:
                return MESSAGE_DONE

    cdef void _finish(self, Py_ssize_t pos, Py_ssize_t n):
        self.state = ST_DONE
        self.complete = True
        if pos < n:
            self.keep_alive = False
            if self.fault is None:
                self.fault = "after_response"

    cdef void _append(self, bytes buf, Py_ssize_t start, Py_ssize_t length):
        if start == 0 and length == PyBytes_GET_SIZE(buf):
            self.chunks.append(buf)
        else:
            self.chunks.append(PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + start, length))
        self.buffered += length

    cdef Py_ssize_t _take(self, bytes buf, Py_ssize_t pos, Py_ssize_t n):
        cdef Py_ssize_t avail = n - pos
        cdef Py_ssize_t length = <Py_ssize_t>self.remaining if self.remaining < avail else avail
        if length > 0:
            self._append(buf, pos, length)
            self.remaining -= length
        return pos + length

    cdef Py_ssize_t _chunk_size(self, bytes buf, Py_ssize_t pos, Py_ssize_t n) except -2:
        cdef const char* base = PyBytes_AS_STRING(buf)
        cdef const char* p = base + pos
        cdef const char* end = base + n
        cdef const char* lf = <const char*>memchr(p, 10, <size_t>(end - p))
        cdef long long size = 0
        cdef int digits = 0
        cdef unsigned char c
        if lf == NULL:
            if end - p > 1024:
                raise ResponseError("invalid chunk size line", "chunk")
            self.pending = buf[pos:]
            return -1
        if lf == p or lf[-1] != 13:
            raise ResponseError("invalid chunk size line (bare LF)", "chunk")
        while p < lf - 1:
            c = <unsigned char>p[0]
            if 48 <= c <= 57:
                size = size * 16 + (c - 48)
            elif 97 <= c <= 102:
                size = size * 16 + (c - 87)
            elif 65 <= c <= 70:
                size = size * 16 + (c - 55)
            else:
                break
            digits += 1
            if digits > 15:
                raise ResponseError("chunk size too large", "chunk")
            p += 1
        if digits == 0:
            raise ResponseError("invalid chunk size", "chunk")
        if p < lf - 1 and p[0] != 59:  # only ";extension" may follow the size
            raise ResponseError("invalid chunk size", "chunk")
        if p < lf - 1 and not _chunk_extensions(p, lf - 1):
            raise ResponseError("invalid chunk extension", "chunk")
        pos = (lf - base) + 1
        if size == 0:
            self.state = ST_TRAILERS
        else:
            self.remaining = size
            self.state = ST_CHUNK_DATA
        return pos

    cdef Py_ssize_t _trailers(self, bytes buf, Py_ssize_t pos, Py_ssize_t n) except -2:
        # Trailer fields are dropped (never relayed, never parsed as a new message).
        cdef const char* base = PyBytes_AS_STRING(buf)
        cdef const char* p
        cdef const char* lf
        cdef const char* colon
        cdef Py_ssize_t k
        while True:
            p = base + pos
            lf = <const char*>memchr(p, 10, <size_t>(n - pos))
            if lf == NULL:
                if n - pos > self.max_header_bytes:
                    raise ResponseError("response trailers too large", "header_limits")
                self.pending = buf[pos:]
                return -1
            if lf == p or lf[-1] != 13:
                raise ResponseError("invalid trailer line (bare LF)", "chunk")
            pos = (lf - base) + 1
            if lf - p == 1:
                return pos
            # Dropped, but still checked like a header line (as llhttp does): a malformed trailer
            # section says the upstream's framing cannot be trusted (found by tests/test_fuzz.py).
            colon = <const char*>memchr(p, 58, <size_t>(lf - p))
            if colon == NULL or colon == p:
                raise ResponseError("invalid trailer line", "chunk")
            for k in range(colon - p):
                if not _TCHAR[<unsigned char>p[k]]:
                    raise ResponseError("invalid trailer name", "chunk")
            if (_name_is(p, colon - p, b"content-length", 14) or _name_is(p, colon - p, b"transfer-encoding", 17)
                    or _name_is(p, colon - p, b"host", 4)):
                # framing and routing fields may not be trailers (RFC 9110 §6.5.1); llhttp refuses them
                raise ResponseError("a framing field among the trailers", "chunk")
            for k in range(colon + 1 - p, lf - 1 - p):  # the value: no control character but HTAB
                if (<unsigned char>p[k] < 32 and p[k] != 9) or <unsigned char>p[k] == 127:
                    raise ResponseError("invalid character in a trailer value", "chunk")

    cdef Py_ssize_t _parse_head(self, bytes buf, Py_ssize_t start) except -2:
        """Parse a complete head starting at `start`; -1 if more bytes are needed."""
        cdef const char* base = PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
        cdef const char* p = base + start
        cdef const char* end
        cdef const char* head_end
        cdef const char* line_end
        cdef const char* colon
        cdef const char* value
        cdef const char* value_end
        cdef const char* q
        cdef Py_ssize_t name_len
        cdef int status
        cdef bint http10
        cdef long long content_length = -1
        cdef long long length
        cdef bint chunked = False
        cdef bint conn_close = False
        cdef bint conn_keep = False
        cdef int count = 0
        cdef list headers
        cdef unsigned char c
        cdef Py_ssize_t k

        if n - start >= 5 and memcmp(p, b"HTTP/", 5) != 0:
            raise ResponseError("not an HTTP response", "status_line")
        head_end = <const char*>memmem(p, <size_t>(n - start), b"\r\n\r\n", 4)
        if head_end == NULL:
            if n - start > self.max_header_bytes:
                raise ResponseError("response headers too large", "header_limits")
            return -1
        if head_end - p > self.max_header_bytes:
            raise ResponseError("response headers too large", "header_limits")
        end = head_end + 2  # the last header line's CRLF is part of the lines

        # status line: HTTP/1.x SP 3DIGIT [SP reason]
        line_end = <const char*>memchr(p, 10, <size_t>(end - p))
        if line_end - p < 13 or line_end[-1] != 13:
            raise ResponseError("invalid status line", "status_line")
        if memcmp(p, b"HTTP/1.1 ", 9) == 0:
            http10 = False
        elif memcmp(p, b"HTTP/1.0 ", 9) == 0:
            http10 = True
        else:
            raise ResponseError("unsupported HTTP version in the response", "status_line")
        status = 0
        for k in range(9, 12):
            c = <unsigned char>p[k]
            if c < 48 or c > 57:
                raise ResponseError("invalid status code", "status_line")
            status = status * 10 + (c - 48)
        if status < 100 or (p[12] != 32 and p + 12 != line_end - 1):
            raise ResponseError("invalid status line", "status_line")
        q = p + 12
        while q < line_end - 1:
            c = <unsigned char>q[0]
            if c == 0 or c == 13 or c == 10 or c == 127:
                raise ResponseError("invalid status line", "status_line")
            q += 1

        headers = []
        p = line_end + 1
        while p < end:
            line_end = <const char*>memchr(p, 10, <size_t>(end - p))
            if line_end == NULL or line_end == p or line_end[-1] != 13:
                raise ResponseError("invalid header line (bare LF)", "bare_cr_lf")
            if p[0] == 32 or p[0] == 9:
                raise ResponseError("obsolete line folding in the response", "obs_fold")
            colon = <const char*>memchr(p, 58, <size_t>(line_end - p))
            if colon == NULL or colon == p:
                if memchr(p, 13, <size_t>(line_end - 1 - p)) != NULL:
                    raise ResponseError("bare CR in a header line", "bare_cr_lf")
                raise ResponseError("invalid header line", "header_syntax")
            name_len = colon - p
            for k in range(name_len):
                if not _TCHAR[<unsigned char>p[k]]:
                    raise ResponseError("invalid header name", "header_syntax")
            value = _trim(colon + 1, line_end - 1, &value_end)
            q = value
            while q < value_end:
                c = <unsigned char>q[0]
                if (c < 32 and c != 9) or c == 127:
                    if c == 13:
                        raise ResponseError("bare CR in a header value", "bare_cr_lf")
                    raise ResponseError("invalid character in a header value", "header_syntax")
                q += 1
            count += 1
            if count > self.max_header_count:
                raise ResponseError("too many response header fields", "header_limits")

            if _name_is(p, name_len, b"content-length", 14):
                if value == value_end or value_end - value > 18:
                    raise ResponseError("invalid Content-Length", "content_length")
                length = 0
                q = value
                while q < value_end:
                    c = <unsigned char>q[0]
                    if c < 48 or c > 57:
                        raise ResponseError("invalid Content-Length", "content_length")
                    length = length * 10 + (c - 48)
                    q += 1
                if content_length >= 0:
                    # Even two equal values: RFC 9110 §8.6 lets a recipient merge them, but a sender
                    # that repeats the field frames its messages in a way the gateway will not guess at.
                    raise ResponseError("duplicate Content-Length fields", "content_length")
                content_length = length
            elif _name_is(p, name_len, b"transfer-encoding", 17):
                if chunked or not _name_is(value, value_end - value, b"chunked", 7):
                    raise ResponseError("unsupported Transfer-Encoding", "transfer_encoding")
                chunked = True
            elif _name_is(p, name_len, b"connection", 10):
                self._connection(value, value_end, &conn_close, &conn_keep)
            if not _dropped(p, name_len):
                headers.append((PyUnicode_DecodeLatin1(p, name_len, NULL),
                                PyUnicode_DecodeLatin1(value, value_end - value, NULL)))
            p = line_end + 1

        start = (head_end - base) + 4
        if 100 <= status < 200:
            if status == 101:
                # Only a WebSocket route may switch protocols, and fastgw has none yet.
                raise ResponseError("unexpected 101 Switching Protocols", "switching_protocols")
            if http10:  # HTTP/1.0 has no interim responses (RFC 9110 §15.2); llhttp refuses them too
                raise ResponseError("an interim response in HTTP/1.0", "status_line")
            return start  # interim response: the final one follows
        if chunked and content_length >= 0:
            raise ResponseError("both Content-Length and Transfer-Encoding in the response", "transfer_encoding")
        self.status = status
        self.content_length = content_length
        self.keep_alive = (not conn_close) if not http10 else conn_keep
        if self.nominated:
            headers = self._drop_nominated(headers)
        self.headers = headers
        if self.head_request or status == 204 or status == 304:
            self.state = ST_DONE
            if (status == 204 and (chunked or content_length > 0)) or (status == 304 and chunked):
                # The upstream announced a body a 204/304 cannot have: its bytes may follow, so this
                # connection's next message boundary is unknown.
                self.fault = "body_not_allowed"
                self.keep_alive = False
        elif chunked:
            self.state = ST_CHUNK_SIZE
        elif content_length >= 0:
            self.remaining = content_length
            self.state = ST_BODY_LENGTH if content_length else ST_DONE
        else:
            self.state = ST_BODY_CLOSE
            self.keep_alive = False
        return start

    cdef void _connection(self, const char* value, const char* end, bint* close, bint* keep):
        cdef const char* token
        cdef const char* comma
        cdef const char* token_end
        while value < end:
            comma = <const char*>memchr(value, 44, <size_t>(end - value))
            if comma == NULL:
                comma = end
            token = _trim(value, comma, &token_end)
            if _name_is(token, token_end - token, b"close", 5):
                close[0] = True
            elif _name_is(token, token_end - token, b"keep-alive", 10):
                keep[0] = True
            elif token_end > token:
                self.nominated = True
                if self.connection_tokens is None:
                    self.connection_tokens = []
                self.connection_tokens.append(PyUnicode_DecodeLatin1(token, token_end - token, NULL).lower())
            value = comma + 1

    cdef list _drop_nominated(self, list headers):
        cdef set names = set(self.connection_tokens)
        return [h for h in headers if (<str>h[0]).lower() not in names]
