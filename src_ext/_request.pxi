# Request-head scan for the proxy path. Mirrors fastgw/_py/request.py; keep the two in step.
#
# One pass over the header list that granian hands over (names lower-cased, values str): enforce
# the header limits, read the framing fields, refuse ambiguous ones, and serialise the fields that
# may be forwarded upstream into one bytes block, so that building the upstream request later is
# a single concatenation.

from libc.string cimport memcpy
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_KIND, PyUnicode_1BYTE_KIND, PyUnicode_1BYTE_DATA

cdef extern from "Python.h":
    Py_ssize_t PyUnicode_FindChar(object text, Py_UCS4 ch, Py_ssize_t start, Py_ssize_t end, int direction) except -2
    object PyUnicode_Substring(object text, Py_ssize_t start, Py_ssize_t end)


class RequestRejected(Exception):
    """The request head breaks a limit or a rule; `kind` is the gateway response type."""

    def __init__(self, kind, message=None):
        super().__init__(message or kind)
        self.kind = kind
        self.message = message


# How the scan treats a header field, by its (lower-cased) name.
cdef enum:
    F_FORWARD = 0         # forwarded as it is
    F_DROP = 1            # hop-by-hop (RFC 9110 §7.6.1) or a forwarding field the gateway sets itself
    F_HOST = 2
    F_CONTENT_LENGTH = 3
    F_TRANSFER_ENCODING = 4
    F_CONNECTION = 5
    F_EXPECT = 6          # not forwarded: the server layer answered 100-continue; the body goes at once
    F_FORWARDED_FOR = 7
    F_AUTHORIZATION = 8   # forwarded, but two of them are ambiguous (which one did the authorizer see?)
    F_API_KEY = 9
    F_CONTENT_TYPE = 10
    F_CACHE_CONTROL = 11  # forwarded; may be repeated; tells the stage cache to look closer
    F_CACHE_TOKEN = 12    # x-fastgw-cache-token: the cache's invalidation token (never forwarded)
    F_GATEWAY = 13        # any other x-fastgw-*: the gateway's own fields, never taken from a client

cdef inline bint _eq(const char* a, Py_ssize_t n, const char* b, Py_ssize_t m):
    return n == m and memcmp(a, b, <size_t>n) == 0

cdef int _classify(const char* n, Py_ssize_t k):
    if k >= 9 and n[0] == 120 and memcmp(n, b"x-fastgw-", 9) == 0:
        # What the gateway asserts to the upstream (X-Fastgw-*) is never taken from the client.
        if k == 20 and memcmp(n + 9, b"cache-token", 11) == 0: return F_CACHE_TOKEN
        return F_GATEWAY
    if k == 4:
        if memcmp(n, b"host", 4) == 0: return F_HOST
    elif k == 2:
        if memcmp(n, b"te", 2) == 0: return F_DROP
    elif k == 6:
        if memcmp(n, b"expect", 6) == 0: return F_EXPECT
    elif k == 7:
        if memcmp(n, b"upgrade", 7) == 0 or memcmp(n, b"trailer", 7) == 0: return F_DROP
    elif k == 8:
        if memcmp(n, b"trailers", 8) == 0: return F_DROP
    elif k == 9:
        if memcmp(n, b"x-api-key", 9) == 0: return F_API_KEY
        if memcmp(n, b"forwarded", 9) == 0 or memcmp(n, b"x-real-ip", 9) == 0: return F_DROP
    elif k == 10:
        if memcmp(n, b"connection", 10) == 0: return F_CONNECTION
        if memcmp(n, b"keep-alive", 10) == 0: return F_DROP
    elif k == 12:
        if memcmp(n, b"content-type", 12) == 0: return F_CONTENT_TYPE
    elif k == 13:
        if memcmp(n, b"authorization", 13) == 0: return F_AUTHORIZATION
        if memcmp(n, b"cache-control", 13) == 0: return F_CACHE_CONTROL
    elif k == 14:
        if memcmp(n, b"content-length", 14) == 0: return F_CONTENT_LENGTH
    elif k == 15:
        if memcmp(n, b"x-forwarded-for", 15) == 0: return F_FORWARDED_FOR
    elif k == 16:
        if memcmp(n, b"proxy-connection", 16) == 0 or memcmp(n, b"x-forwarded-host", 16) == 0: return F_DROP
    elif k == 17:
        if memcmp(n, b"transfer-encoding", 17) == 0: return F_TRANSFER_ENCODING
        if memcmp(n, b"x-forwarded-proto", 17) == 0: return F_DROP
    elif k == 18:
        if memcmp(n, b"proxy-authenticate", 18) == 0: return F_DROP
    elif k == 19:
        if memcmp(n, b"proxy-authorization", 19) == 0: return F_DROP
    return F_FORWARD


@cython.final
cdef class RequestFacts:  # its fields: fastgw/_core.pxd
    pass


cdef _check_transfer_encoding(str value, bint already_chunked):
    """RFC 9112 §6.1/§6.3: chunked must be the final coding, once; other codings are not
    supported (501). Anything ambiguous is a 400."""
    codings = [c.strip().lower() for c in value.split(",")]
    if already_chunked or codings.count("chunked") != 1 or codings[-1] != "chunked":
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid Transfer-Encoding")
    if len(codings) > 1:
        raise RequestRejected("NOT_IMPLEMENTED", "Unsupported Transfer-Encoding")


cdef inline bint _is_digits(str value):
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(value)
    cdef Py_UCS4 c
    if n == 0 or n > 18:
        return False
    for i in range(n):
        c = PyUnicode_READ_CHAR(value, i)
        if c < 48 or c > 57:
            return False
    return True


cdef inline const char* _latin1(str text, Py_ssize_t* size) except? NULL:
    """The bytes of a one-byte-kind str (what granian hands over: latin-1 decoded or ASCII)."""
    if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field")
    size[0] = PyUnicode_GET_LENGTH(text)
    return <const char*>PyUnicode_1BYTE_DATA(text)


cpdef RequestFacts scan_request_headers(list headers, Py_ssize_t max_count, Py_ssize_t max_total,
                                        Py_ssize_t max_field, long long max_body):
    cdef RequestFacts facts = RequestFacts.__new__(RequestFacts)
    cdef Py_ssize_t count = PyList_GET_SIZE(headers)
    cdef Py_ssize_t i, k, n_len, v_len, total = 0, forward_size = 0
    cdef const char* name
    cdef const char* value
    cdef tuple pair
    cdef str name_str, value_str
    cdef int kind
    cdef unsigned int seen = 0
    cdef set nominated = None
    cdef char* out
    cdef bytes block
    cdef long long length
    cdef unsigned char c
    facts.host = ""
    facts.content_length = -1
    facts.chunked = False
    facts.expect_continue = False
    facts.forwarded_for = ""
    facts.cache_fields = False
    facts.api_key = ""
    if count > max_count:
        raise RequestRejected("HEADERS_TOO_LARGE", "Too many request header fields")
    # Pass 1: limits, syntax, framing fields; the size of the forwardable block.
    for i in range(count):
        pair = <tuple>PyList_GET_ITEM(headers, i)
        name_str = <str>PyTuple_GET_ITEM(pair, 0)
        value_str = <str>PyTuple_GET_ITEM(pair, 1)
        name = _latin1(name_str, &n_len)
        value = _latin1(value_str, &v_len)
        total += n_len + v_len + 4
        if n_len + v_len > max_field:
            raise RequestRejected("HEADERS_TOO_LARGE", "Request header field too large")
        if memchr(name, 95, <size_t>n_len) != NULL:
            # Underscores are legal token characters, but X_Api_Key may or may not mean X-Api-Key
            # depending on who reads it (Envoy's edge guidance: reject).
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field name")
        kind = _classify(name, n_len)
        if kind >= F_HOST and kind <= F_CONTENT_TYPE and kind != F_TRANSFER_ENCODING and kind != F_CONNECTION \
                and kind != F_EXPECT and kind != F_FORWARDED_FOR:
            if seen & (1u << kind):
                raise RequestRejected("BAD_REQUEST_PARAMETERS", f"Duplicate {name_str} header")
            seen |= 1u << kind
        if kind == F_FORWARD or (kind >= F_AUTHORIZATION and kind <= F_CACHE_CONTROL):
            forward_size += n_len + v_len + 4
            if kind == F_AUTHORIZATION or kind == F_CACHE_CONTROL:
                facts.cache_fields = True
            elif kind == F_API_KEY:
                facts.api_key = value_str
        elif kind == F_CACHE_TOKEN:
            facts.cache_fields = True
        elif kind == F_HOST:
            facts.host = value_str
        elif kind == F_CONTENT_LENGTH:
            if v_len == 0 or v_len > 18:
                raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid Content-Length")
            length = 0
            for k in range(v_len):
                c = <unsigned char>value[k]
                if c < 48 or c > 57:
                    raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid Content-Length")
                length = length * 10 + (c - 48)
            facts.content_length = length
        elif kind == F_TRANSFER_ENCODING:
            _check_transfer_encoding(value_str, facts.chunked)
            facts.chunked = True
        elif kind == F_CONNECTION:
            for token in value_str.split(","):
                token = token.strip().lower()
                if token and token not in ("close", "keep-alive"):
                    if nominated is None:
                        nominated = set()
                    nominated.add(token)
        elif kind == F_EXPECT:
            if value_str.lower() != "100-continue":
                raise RequestRejected("EXPECTATION_FAILED", None)
            facts.expect_continue = True
        elif kind == F_FORWARDED_FOR:
            facts.forwarded_for = value_str
    if total > max_total:
        raise RequestRejected("HEADERS_TOO_LARGE", None)
    if facts.chunked and facts.content_length >= 0:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Both Content-Length and Transfer-Encoding")
    if facts.content_length > max_body:
        raise RequestRejected("REQUEST_TOO_LARGE", None)
    # Pass 2: copy the forwardable fields into one block ("name: value\r\n" each).
    block = PyBytes_FromStringAndSize(NULL, forward_size)
    out = PyBytes_AS_STRING(block)
    for i in range(count):
        pair = <tuple>PyList_GET_ITEM(headers, i)
        name_str = <str>PyTuple_GET_ITEM(pair, 0)
        name = _latin1(name_str, &n_len)
        kind = _classify(name, n_len)
        if kind != F_FORWARD and (kind < F_AUTHORIZATION or kind > F_CACHE_CONTROL):
            continue
        if nominated is not None and name_str in nominated:
            # A field the client named in Connection is hop-by-hop too (rare).
            forward_size -= n_len + <Py_ssize_t>PyUnicode_GET_LENGTH(<str>PyTuple_GET_ITEM(pair, 1)) + 4
            continue
        value = _latin1(<str>PyTuple_GET_ITEM(pair, 1), &v_len)
        memcpy(out, name, <size_t>n_len)
        out += n_len
        out[0] = 58
        out[1] = 32
        out += 2
        memcpy(out, value, <size_t>v_len)
        out += v_len
        out[0] = 13
        out[1] = 10
        out += 2
    if nominated is not None:
        block = block[:forward_size]
    facts.forward = block
    return facts


cpdef RequestFacts scan_request(str method, str path, str query, bint absolute_form, list headers,
                                tuple limits):
    """The request line, then the head (scan_request_headers). `limits`: (max URI bytes, max header
    count, max header bytes, max field bytes, max body bytes). Mirrors fastgw/_py/request.py."""
    cdef Py_ssize_t max_uri = limits[0]
    cdef Py_ssize_t n_query = PyUnicode_GET_LENGTH(query)
    if method not in PROXIED_METHODS:
        if method == "TRACE":
            raise RequestRejected("METHOD_NOT_ALLOWED", None)
        if method == "CONNECT":
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "CONNECT is not supported")
        raise RequestRejected("NOT_IMPLEMENTED", "Unknown method")
    # request line: METHOD SP target SP HTTP/1.1
    if PyUnicode_GET_LENGTH(method) + PyUnicode_GET_LENGTH(path) + n_query + (1 if n_query else 0) + 11 > max_uri:
        raise RequestRejected("URI_TOO_LONG", None)
    if absolute_form:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Absolute-form request targets are not supported")
    if PyUnicode_GET_LENGTH(path) == 0 or PyUnicode_READ_CHAR(path, 0) != 47:
        # asterisk-form (OPTIONS *) and the authority form are not proxied.
        if method == "OPTIONS" and path == "*":
            raise RequestRejected("METHOD_NOT_ALLOWED", None)
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid request target")
    return scan_request_headers(headers, limits[1], limits[2], limits[3], limits[4])


PROXIED_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


cpdef list latin1_headers(list raw):
    """ASGI's (bytes, bytes) header pairs as (str, str), byte for byte (latin-1)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(raw)
    cdef list out = PyList_New(n)
    cdef tuple pair, item
    cdef bytes name, value
    for i in range(n):
        pair = <tuple>PyList_GET_ITEM(raw, i)
        name = <bytes>PyTuple_GET_ITEM(pair, 0)
        value = <bytes>PyTuple_GET_ITEM(pair, 1)
        item = (PyUnicode_DecodeLatin1(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), NULL),
                PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL))
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return out


cpdef list bytes_headers(list headers):
    """(str, str) header pairs as ASGI's (bytes, bytes), byte for byte (latin-1)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(headers)
    cdef list out = PyList_New(n)
    cdef tuple pair, item
    cdef Py_ssize_t size
    cdef const char* data
    for i in range(n):
        pair = <tuple>PyList_GET_ITEM(headers, i)
        data = _latin1(<str>PyTuple_GET_ITEM(pair, 0), &size)
        name = PyBytes_FromStringAndSize(data, size)
        data = _latin1(<str>PyTuple_GET_ITEM(pair, 1), &size)
        item = (name, PyBytes_FromStringAndSize(data, size))
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return out


@cython.final
cdef inline const char* _latin1_part(str text, Py_ssize_t* size) except NULL:
    """The bytes of a str that must encode as latin-1 (UnicodeEncodeError otherwise, as str.encode)."""
    if PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND:
        text.encode("latin-1")  # a str of a wider kind has a character above U+00FF: this raises
    size[0] = PyUnicode_GET_LENGTH(text)
    return <const char*>PyUnicode_1BYTE_DATA(text)


cdef inline Py_ssize_t _put(char* out, Py_ssize_t at, const char* data, Py_ssize_t size):
    memcpy(out + at, data, <size_t>size)
    return at + size


cdef Py_ssize_t _peer_span(str address, Py_ssize_t* start) except -2:
    """Where the host is in a client address: "host:port" and "[v6]:port" (RSGI) lose the port and
    brackets; a bare host (ASGI gives one, v4 or v6: more than one colon) is kept whole. Sets
    `start`, returns the end."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(address), close, colon
    start[0] = 0
    if n and PyUnicode_READ_CHAR(address, 0) == 91:  # "["
        close = PyUnicode_FindChar(address, 93, 1, n, 1)  # "]"
        if close >= 0:
            start[0] = 1
            return close
        return n
    colon = PyUnicode_FindChar(address, 58, 0, n, 1)  # ":"
    if colon >= 0 and PyUnicode_FindChar(address, 58, colon + 1, n, 1) == -1:
        return colon
    return n


cpdef str peer_host(str address):
    """The client's host from the address the server gives (see _peer_span). Mirrors
    fastgw/_py/request.py."""
    cdef Py_ssize_t start, end = _peer_span(address, &start)
    if start == 0 and end == PyUnicode_GET_LENGTH(address):
        return address
    return PyUnicode_Substring(address, start, end)


cpdef bytes upstream_request_head(str method, str target, str host, bytes forward, str peer, str prior_hops,
                                  str scheme, str forwarded_host, str framing):
    """The head of a request to the upstream: request line, Host, the forwardable client fields
    (`forward`, serialised by scan_request_headers), X-Forwarded-For (the trusted `prior_hops`, if
    any, then the host of `peer`, the client's address as the server gives it), X-Forwarded-Proto,
    X-Forwarded-Host when the client sent a Host, then `framing` (the body's framing field and the
    blank line), in one allocation. Mirrors fastgw/_py/request.py; the pipeline calls it once per
    proxied request."""
    cdef Py_ssize_t n_method, n_target, n_host, n_peer, n_prior, n_scheme, n_fhost, n_framing, total, at
    cdef Py_ssize_t peer_start, peer_end
    cdef const char* p_method = _latin1_part(method, &n_method)
    cdef const char* p_target = _latin1_part(target, &n_target)
    cdef const char* p_host = _latin1_part(host, &n_host)
    cdef const char* p_peer = _latin1_part(peer, &n_peer)
    cdef const char* p_prior = _latin1_part(prior_hops, &n_prior)
    cdef const char* p_scheme = _latin1_part(scheme, &n_scheme)
    cdef const char* p_fhost = _latin1_part(forwarded_host, &n_fhost)
    cdef const char* p_framing = _latin1_part(framing, &n_framing)
    cdef Py_ssize_t n_forward = PyBytes_GET_SIZE(forward)
    peer_end = _peer_span(peer, &peer_start)
    n_peer = peer_end - peer_start
    total = (n_method + 1 + n_target + 17 + n_host + 2 + n_forward + 17 + (n_prior + 2 if n_prior else 0)
             + n_peer + 21 + n_scheme + 2 + (18 + n_fhost + 2 if n_fhost else 0) + n_framing)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* o = PyBytes_AS_STRING(out)
    at = _put(o, 0, p_method, n_method)
    at = _put(o, at, b" ", 1)
    at = _put(o, at, p_target, n_target)
    at = _put(o, at, b" HTTP/1.1\r\nhost: ", 17)
    at = _put(o, at, p_host, n_host)
    at = _put(o, at, b"\r\n", 2)
    at = _put(o, at, PyBytes_AS_STRING(forward), n_forward)
    at = _put(o, at, b"x-forwarded-for: ", 17)
    if n_prior:
        at = _put(o, at, p_prior, n_prior)
        at = _put(o, at, b", ", 2)
    at = _put(o, at, p_peer + peer_start, n_peer)
    at = _put(o, at, b"\r\nx-forwarded-proto: ", 21)
    at = _put(o, at, p_scheme, n_scheme)
    at = _put(o, at, b"\r\n", 2)
    if n_fhost:
        at = _put(o, at, b"x-forwarded-host: ", 18)
        at = _put(o, at, p_fhost, n_fhost)
        at = _put(o, at, b"\r\n", 2)
    _put(o, at, p_framing, n_framing)
    return out


cdef class RequestIds:
    """AWS-shaped request ids (the UUID layout) without a uuid4 per request: a prefix of 24
    characters chosen once per worker ("xxxxxxxx-xxxx-xxxx-xxxx-"), then a counter as 12 hex digits.
    Mirrors fastgw/_py/request.py RequestIds."""
    # its fields: fastgw/_core.pxd

    def __init__(self, str prefix):
        cdef Py_ssize_t size
        cdef const char* data = _latin1(prefix, &size)
        if size != 24:
            raise ValueError("a request id prefix has 24 characters")
        memcpy(self.text, data, 24)
        self.counter = 0

    cpdef str next(self):
        cdef unsigned long long n
        cdef int i
        self.counter += 1
        n = self.counter
        for i in range(35, 23, -1):  # the last 12 hex digits of the counter (it never gets that far)
            self.text[i] = b"0123456789abcdef"[n & 15]
            n >>= 4
        return PyUnicode_DecodeLatin1(self.text, 36, NULL)
