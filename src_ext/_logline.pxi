# The access log's default line (twin: fastgw/_py/logline.py access_line). Included by _core.pyx.
# PERF: formatting a line in Python cost ~30k instructions (float rounding and repr through dtoa, a dict
# or an f-string, orjson); here it is one buffer filled in C.

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    bytes PyBytes_FromStringAndSize(const char* v, Py_ssize_t len)

from libc.stdlib cimport free, malloc, realloc

cdef struct _LineBuf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap

cdef const char* _HEX = b"0123456789abcdef"


cdef int _lb_room(_LineBuf* b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    if b.size + need <= b.cap:
        return 0
    cap = b.cap * 2
    if cap < b.size + need:
        cap = b.size + need + 256
    grown = <char*>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0


cdef int _lb_raw(_LineBuf* b, const char* text, Py_ssize_t n) except -1:
    _lb_room(b, n)
    memcpy(b.data + b.size, text, n)
    b.size += n
    return 0


cdef int _lb_json(_LineBuf* b, str value) except -1:
    """A JSON string literal, escaped as orjson does: \\" \\\\ \\b \\f \\n \\r \\t, \\u00XX for the other
    control characters; everything else (UTF-8 included) as is."""
    cdef Py_ssize_t n, i
    cdef const unsigned char* s = <const unsigned char*>PyUnicode_AsUTF8AndSize(value, &n)
    cdef unsigned char c
    cdef char* out
    _lb_room(b, n * 6 + 2)
    out = b.data + b.size
    out[0] = 34  # "
    out += 1
    for i in range(n):
        c = s[i]
        if c >= 32 and c != 34 and c != 92:
            out[0] = c
            out += 1
            continue
        out[0] = 92  # backslash
        if c == 34 or c == 92:
            out[1] = c
            out += 2
        elif c == 8:
            out[1] = 98  # b
            out += 2
        elif c == 12:
            out[1] = 102  # f
            out += 2
        elif c == 10:
            out[1] = 110  # n
            out += 2
        elif c == 13:
            out[1] = 114  # r
            out += 2
        elif c == 9:
            out[1] = 116  # t
            out += 2
        else:
            out[1] = 117  # u
            out[2] = 48
            out[3] = 48
            out[4] = _HEX[c >> 4]
            out[5] = _HEX[c & 15]
            out += 6
    out[0] = 34
    out += 1
    b.size = out - b.data
    return 0


cdef int _lb_int(_LineBuf* b, long long value) except -1:
    """Decimal digits (snprintf cost ~1.5k instructions a number)."""
    cdef char digits[24]
    cdef int n = 0
    cdef unsigned long long v
    _lb_room(b, 24)
    if value < 0:
        b.data[b.size] = 45  # -
        b.size += 1
        v = <unsigned long long>(-(value + 1)) + 1
    else:
        v = <unsigned long long>value
    while True:
        digits[n] = 48 + <char>(v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n > 0:
        n -= 1
        b.data[b.size] = digits[n]
        b.size += 1
    return 0


cdef int _lb_millis(_LineBuf* b, double seconds) except -1:
    cdef long long micros = <long long>(seconds * 1e6 + 0.5)
    cdef long long frac = micros % 1000
    _lb_int(b, micros // 1000)
    _lb_room(b, 4)
    b.data[b.size] = 46  # .
    b.data[b.size + 1] = 48 + <char>(frac // 100)
    b.data[b.size + 2] = 48 + <char>(frac // 10 % 10)
    b.data[b.size + 3] = 48 + <char>(frac % 10)
    b.size += 4
    return 0


cpdef bytes access_line(str request_id, str client, str request_time, double now, str method, str path, bytes fixed,
                        long long status, str protocol, long long length, double elapsed,
                        double integration_latency, bint with_principal, object principal):
    """One JSON line of the access log (see the twin for the arguments)."""
    cdef _LineBuf b
    b.data = <char*>malloc(512)
    if b.data == NULL:
        raise MemoryError()
    b.size = 0
    b.cap = 512
    try:
        _lb_raw(&b, b'{"requestId":', 13)
        _lb_json(&b, request_id)
        _lb_raw(&b, b',"ip":', 6)
        _lb_json(&b, client)
        _lb_raw(&b, b',"requestTime":', 15)
        _lb_json(&b, request_time)
        _lb_raw(&b, b',"requestTimeEpoch":', 20)
        _lb_int(&b, <long long>(now * 1000))
        _lb_raw(&b, b',"httpMethod":', 14)
        _lb_json(&b, method)
        _lb_raw(&b, b',"path":', 8)
        _lb_json(&b, path)
        _lb_raw(&b, b',', 1)
        _lb_raw(&b, fixed, len(fixed))
        _lb_raw(&b, b',"status":', 10)
        _lb_int(&b, status)
        _lb_raw(&b, b',"protocol":', 12)
        _lb_json(&b, protocol)
        _lb_raw(&b, b',"responseLength":', 18)
        _lb_int(&b, length)
        _lb_raw(&b, b',"responseLatency":', 19)
        _lb_millis(&b, elapsed)
        _lb_raw(&b, b',"integrationLatency":', 22)
        if integration_latency >= 0:
            _lb_millis(&b, integration_latency)
        else:
            _lb_raw(&b, b'null', 4)
        if with_principal:
            _lb_raw(&b, b',"authorizerPrincipalId":', 25)
            if principal is None:
                _lb_raw(&b, b'null', 4)
            else:
                _lb_json(&b, <str?>principal)
        _lb_raw(&b, b'}\n', 2)
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        free(b.data)
