# The access log's default line (twin: fastgw/_py/logline.py access_line). Included by _core.pyx.
# PERF: formatting a line in Python cost ~30k instructions (float rounding and repr through dtoa, a dict
# or an f-string, orjson); here it is one buffer filled in C.

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    bytes PyBytes_FromStringAndSize(const char* v, Py_ssize_t len)

from libc.stdlib cimport free, malloc, realloc

# cdef struct _LineBuf (data, size, cap): declared in fastgw/_core.pxd

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


cdef int _line_tail(_LineBuf* b, double now, str method, str path, bytes fixed, long long status, str protocol,
                    long long length, double elapsed, double integration_latency, bint with_principal,
                    object principal) except -1:
    """Everything after "requestTime"'s value, to the newline."""
    _lb_raw(b, b',"requestTimeEpoch":', 20)
    _lb_int(b, <long long>(now * 1000))
    _lb_raw(b, b',"httpMethod":', 14)
    _lb_json(b, method)
    _lb_raw(b, b',"path":', 8)
    _lb_json(b, path)
    _lb_raw(b, b',', 1)
    _lb_raw(b, fixed, len(fixed))
    _lb_raw(b, b',"status":', 10)
    _lb_int(b, status)
    _lb_raw(b, b',"protocol":', 12)
    _lb_json(b, protocol)
    _lb_raw(b, b',"responseLength":', 18)
    _lb_int(b, length)
    _lb_raw(b, b',"responseLatency":', 19)
    _lb_millis(b, elapsed)
    _lb_raw(b, b',"integrationLatency":', 22)
    if integration_latency >= 0:
        _lb_millis(b, integration_latency)
    else:
        _lb_raw(b, b'null', 4)
    if with_principal:
        _lb_raw(b, b',"authorizerPrincipalId":', 25)
        if principal is None:
            _lb_raw(b, b'null', 4)
        else:
            _lb_json(b, <str?>principal)
    _lb_raw(b, b'}\n', 2)
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
        _line_tail(&b, now, method, path, fixed, status, protocol, length, elapsed, integration_latency,
                   with_principal, principal)
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        free(b.data)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct tm:
        int tm_sec
        int tm_min
        int tm_hour
        int tm_mday
        int tm_mon
        int tm_year
    tm* gmtime_r(const time_t* timep, tm* result)

cdef const char* _MONTHS = b"JanFebMarAprMayJunJulAugSepOctNovDec"
cdef enum:
    _KEEP_BYTES = 1048576  # a buffer grown past this by a burst is given back when emptied


cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec* tp)
    enum: CLOCK_REALTIME


@cython.final
cdef class LineBuffer:
    """The access log's pending output (twin: fastgw/_py/logline.py LineBuffer). A request's JSON line is
    formatted into it as the request ends, reading the request's fields from `down` (client, method, path,
    protocol, auth) and the route's from its `LineFormat` (fixed, principal), so nothing of the request is
    kept alive until the flush; `take` hands the whole batch to one write.
    PERF: a tuple per request formatted at the flush, each line a bytes object joined, cost ~13k
    instructions a request; this ~6k, the Python call included (docs/PERF.md)."""

    # (fields: fastgw/_core.pxd, where the compiled plain lane reads them)

    def __cinit__(self, Py_ssize_t flush_bytes=65536):
        self.b.data = <char*>malloc(4096)
        if self.b.data == NULL:
            raise MemoryError()
        self.b.size = 0
        self.b.cap = 4096
        self.flush_bytes = flush_bytes
        self.second = -1
        self.time_len = 0
        self.lines = 0

    def __dealloc__(self):
        free(self.b.data)

    cdef void _set_time(self, long long second):
        # AWS's $context.requestTime: 25/Nov/2026:09:05:28 +0000 (the twin's clf_time)
        cdef time_t t = <time_t>second
        cdef tm parts
        cdef char* out = self.time_text
        cdef int year
        gmtime_r(&t, &parts)
        year = parts.tm_year + 1900
        out[0] = 48 + parts.tm_mday // 10
        out[1] = 48 + parts.tm_mday % 10
        out[2] = 47  # /
        memcpy(out + 3, _MONTHS + 3 * parts.tm_mon, 3)
        out[6] = 47
        out[7] = 48 + year // 1000 % 10
        out[8] = 48 + year // 100 % 10
        out[9] = 48 + year // 10 % 10
        out[10] = 48 + year % 10
        out[11] = 58  # :
        out[12] = 48 + parts.tm_hour // 10
        out[13] = 48 + parts.tm_hour % 10
        out[14] = 58
        out[15] = 48 + parts.tm_min // 10
        out[16] = 48 + parts.tm_min % 10
        out[17] = 58
        out[18] = 48 + parts.tm_sec // 10
        out[19] = 48 + parts.tm_sec % 10
        memcpy(out + 20, b" +0000", 6)
        self.time_len = 26
        self.second = second

    cpdef bint line(self, str request_id, object down, object line_format, long long status, long long length,
                    double elapsed, double integration_latency, double now=-1.0) except -1:
        """fastgw's JSON line for one request (access_line's fields; `now` < 0: the clock's time). True when
        the buffer holds `flush_bytes` or more."""
        cdef bint with_principal = line_format.principal
        cdef object principal = None
        cdef object auth
        if with_principal:  # $context.authorizer.principalId (None: the request was refused)
            auth = getattr(down, "auth", None)
            if auth is not None:
                principal = auth.principal_id
                if principal is not None and type(principal) is not str:
                    principal = str(principal)
        return self.line_of(request_id, <str?>down.client, <str?>down.method, <str?>down.path, <str?>down.protocol,
                            <bytes?>line_format.fixed, status, length, elapsed, integration_latency, with_principal,
                            principal, now)

    cpdef bint line_of(self, str request_id, str client, str method, str path, str protocol, bytes fixed,
                       long long status, long long length, double elapsed, double integration_latency,
                       bint with_principal=False, object principal=None, double now=-1.0) except -1:
        """`line` with the request's fields given (the compiled plain lane calls it in C, with no request
        object); `principal`: a str or None."""
        cdef timespec clock
        cdef long long second
        if now < 0:
            clock_gettime(CLOCK_REALTIME, &clock)
            now = <double>clock.tv_sec + <double>clock.tv_nsec * 1e-9
        second = <long long>now
        if second != self.second:
            self._set_time(second)
        _lb_raw(&self.b, b'{"requestId":', 13)
        _lb_json(&self.b, request_id)
        _lb_raw(&self.b, b',"ip":', 6)
        _lb_json(&self.b, client)
        _lb_raw(&self.b, b',"requestTime":"', 16)
        _lb_raw(&self.b, self.time_text, self.time_len)
        _lb_raw(&self.b, b'"', 1)
        _line_tail(&self.b, now, method, path, fixed, status, protocol, length, elapsed, integration_latency,
                   with_principal, principal)
        self.lines += 1
        return self.b.size >= self.flush_bytes

    cpdef bint raw(self, bytes data) except -1:
        """Lines formatted elsewhere (a stage's own format, WebSocket events): whole lines, newline included.
        True when the buffer holds `flush_bytes` or more."""
        _lb_raw(&self.b, data, len(data))
        self.lines += data.count(b"\n")
        return self.b.size >= self.flush_bytes

    @property
    def size(self):
        """Bytes waiting."""
        return self.b.size

    cpdef bytes take(self):
        """Everything waiting, and an empty buffer."""
        cdef bytes out = PyBytes_FromStringAndSize(self.b.data, self.b.size)
        cdef char* smaller
        self.b.size = 0
        self.lines = 0
        if self.b.cap > _KEEP_BYTES:
            smaller = <char*>realloc(self.b.data, 4096)
            if smaller != NULL:
                self.b.data = smaller
                self.b.cap = 4096
        return out
