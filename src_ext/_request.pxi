# Request-head scan for the proxy path. Mirrors fastgw/_py/request.py; keep the two in step.
#
# One pass over the header list that granian hands over (names lower-cased, values str): enforce
# the header limits, read the framing fields, refuse ambiguous ones, and serialise the fields that
# may be forwarded upstream into one bytes block, so that building the upstream request later is
# a single concatenation.

from cpython.bytes cimport PyBytes_AS_STRING
from cpython.unicode cimport PyUnicode_AsLatin1String


class RequestRejected(Exception):
    """The request head breaks a limit or a rule; `kind` is the gateway response type."""

    def __init__(self, kind, message=None):
        super().__init__(message or kind)
        self.kind = kind
        self.message = message


# Fields never forwarded as they are: hop-by-hop (RFC 9110 §7.6.1), the ones the gateway computes
# (framing, Host) and the forwarding ones it sets from the real peer.
cdef frozenset _NOT_FORWARDED = frozenset((
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "content-length", "host",
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip",
))
# Two of these in one request are ambiguous (which one did the authorizer see?).
cdef frozenset _SINGLETON = frozenset(("host", "authorization", "x-api-key", "content-length", "content-type"))


@cython.final
cdef class RequestFacts:
    cdef readonly str host
    cdef readonly long long content_length   # -1: none
    cdef readonly bint chunked
    cdef readonly bint expect_continue
    cdef readonly bytes forward              # b"name: value\r\n" for each forwardable field
    cdef readonly str forwarded_for          # the client's X-Forwarded-For ("" if none)


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


cpdef RequestFacts scan_request_headers(list headers, Py_ssize_t max_count, Py_ssize_t max_total,
                                        Py_ssize_t max_field, long long max_body):
    cdef RequestFacts facts = RequestFacts.__new__(RequestFacts)
    cdef Py_ssize_t count = PyList_GET_SIZE(headers)
    cdef Py_ssize_t i, size, total = 0
    cdef tuple pair
    cdef str name, value
    cdef set seen = None
    cdef set nominated = None
    cdef list parts = []
    cdef bint nominated_any = False
    facts.host = ""
    facts.content_length = -1
    facts.chunked = False
    facts.expect_continue = False
    facts.forwarded_for = ""
    if count > max_count:
        raise RequestRejected("HEADERS_TOO_LARGE", "Too many request header fields")
    for i in range(count):
        pair = <tuple>PyList_GET_ITEM(headers, i)
        name = <str>PyTuple_GET_ITEM(pair, 0)
        value = <str>PyTuple_GET_ITEM(pair, 1)
        size = PyUnicode_GET_LENGTH(name) + PyUnicode_GET_LENGTH(value)
        total += size + 4
        if size > max_field:
            raise RequestRejected("HEADERS_TOO_LARGE", "Request header field too large")
        if "_" in name:
            # Legal token characters, but X_Api_Key may or may not mean X-Api-Key depending on who
            # reads it (Envoy's edge guidance: reject).
            raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field name")
        if name in _SINGLETON:
            if seen is None:
                seen = set()
            elif name in seen:
                raise RequestRejected("BAD_REQUEST_PARAMETERS", f"Duplicate {name} header")
            seen.add(name)
            if name == "host":
                facts.host = value
            elif name == "content-length":
                if not _is_digits(value):
                    raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid Content-Length")
                facts.content_length = int(value)
        elif name == "transfer-encoding":
            _check_transfer_encoding(value, facts.chunked)
            facts.chunked = True
        elif name == "connection":
            for token in value.split(","):
                token = token.strip().lower()
                if token and token not in ("close", "keep-alive"):
                    if nominated is None:
                        nominated = set()
                    nominated.add(token)
        elif name == "expect":
            if value.lower() != "100-continue":
                raise RequestRejected("EXPECTATION_FAILED", None)
            facts.expect_continue = True
        elif name == "x-forwarded-for":
            facts.forwarded_for = value
        if name not in _NOT_FORWARDED:
            parts.append(name)
            parts.append(": ")
            parts.append(value)
            parts.append("\r\n")
    if total > max_total:
        raise RequestRejected("HEADERS_TOO_LARGE", None)
    if facts.chunked and facts.content_length >= 0:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Both Content-Length and Transfer-Encoding")
    if facts.content_length > max_body:
        raise RequestRejected("REQUEST_TOO_LARGE", None)
    if nominated is not None:
        # Fields the client named in Connection are hop-by-hop too (rare: a second pass).
        parts = []
        for i in range(count):
            pair = <tuple>PyList_GET_ITEM(headers, i)
            name = <str>PyTuple_GET_ITEM(pair, 0)
            if name not in _NOT_FORWARDED and name not in nominated:
                parts.append(name)
                parts.append(": ")
                parts.append(<str>PyTuple_GET_ITEM(pair, 1))
                parts.append("\r\n")
    try:
        facts.forward = PyUnicode_AsLatin1String("".join(parts))
    except UnicodeEncodeError:
        raise RequestRejected("BAD_REQUEST_PARAMETERS", "Invalid header field value") from None
    return facts
