# Cython declarations of the kernels' classes that fastgw/lane.py (compiled as fastgw._lane) reads and calls
# in C (`cimport` through fastgw/_lane.pxd). Their attributes are declared here, not in src_ext/*.pxi.

cimport cython
from libc.stdint cimport int64_t


@cython.final
cdef class RequestFacts:
    cdef readonly str host
    cdef readonly long long content_length   # -1: none
    cdef readonly bint chunked
    cdef readonly bint expect_continue
    cdef readonly bytes forward              # b"name: value\r\n" for each forwardable field
    cdef readonly str forwarded_for          # the client's X-Forwarded-For ("" if none)
    cdef readonly bint cache_fields          # Authorization, Cache-Control or the cache token is present
    cdef readonly str api_key                # the X-API-Key field ("" if none)


@cython.final
cdef class ResponseParser:
    cdef readonly int status
    cdef readonly list headers
    cdef readonly bint keep_alive
    cdef readonly Py_ssize_t buffered
    cdef readonly bint complete
    cdef readonly long long content_length  # the response's Content-Length; -1: none (chunked, close)
    # A fault that does not make the response invalid but rules out reusing the connection (None if
    # none): "after_response" (bytes after the end of the message), "body_not_allowed" (a 204 that
    # announces a body, a 304 with Transfer-Encoding). keep_alive is False then.
    cdef readonly object fault
    cdef list chunks
    cdef bytes pending        # unparsed bytes (a partial head, chunk-size line, ...)
    cdef int state
    cdef long long remaining  # body bytes still expected (length or current chunk)
    cdef bint head_request
    cdef bint nominated       # Connection named other fields: filter them after the head
    cdef list connection_tokens
    cdef Py_ssize_t max_header_bytes
    cdef Py_ssize_t max_header_count

    cpdef reset(self, bint head_request)
    cpdef bytes take_body(self)
    cpdef int eof(self) except -1
    cpdef int feed(self, bytes data) except -1
    cdef void _finish(self, Py_ssize_t pos, Py_ssize_t n)
    cdef void _append(self, bytes buf, Py_ssize_t start, Py_ssize_t length)
    cdef Py_ssize_t _take(self, bytes buf, Py_ssize_t pos, Py_ssize_t n)
    cdef Py_ssize_t _chunk_size(self, bytes buf, Py_ssize_t pos, Py_ssize_t n) except -2
    cdef Py_ssize_t _trailers(self, bytes buf, Py_ssize_t pos, Py_ssize_t n) except -2
    cdef Py_ssize_t _parse_head(self, bytes buf, Py_ssize_t start) except -2
    cdef void _connection(self, const char* value, const char* end, bint* close, bint* keep)
    cdef list _drop_nominated(self, list headers)


@cython.final
cdef class UpstreamConnection:
    cdef public object pool
    cdef public object transport
    cdef public ResponseParser parser
    cdef public bint closed
    cdef public object waiter          # resolved when the response (or its head) is in
    cdef public object body_waiter     # resolved when more body (or the end) is in
    cdef public object drain_waiter
    cdef public object error
    cdef public double deadline
    cdef public double idle_since
    cdef public bint paused_reading
    cdef public bint write_paused
    cdef public bint got_bytes
    # Connection safety (issue 22): see src_ext/_upstream.pxi
    cdef public bint exchanging
    cdef public bint request_done
    cdef public bint request_body
    cdef public bint head_seen
    cdef public bint early
    cdef public bint reusable
    cdef public Py_ssize_t buffer_response_bytes
    cdef public Py_ssize_t body_high_water
    cdef public double body_idle_seconds

    cpdef object send(self, bytes data, bint head_request, double timeout, int body=*)
    cpdef bint settle(self, double now)
    cdef _head_in(self)
    cdef _fault(self, kind)
    cdef _fail(self, exc)


cdef enum:
    MAX_BUCKETS = 32
    STATUS_SLOTS = 500   # statuses 100..599


@cython.final
cdef class Tally:
    cdef readonly tuple labels
    cdef double bounds[MAX_BUCKETS]
    cdef int nbounds
    cdef long long durations[MAX_BUCKETS + 1]   # per bucket (not cumulative); the last is +Inf
    cdef long long integrations[MAX_BUCKETS + 1]
    cdef double duration_sum
    cdef double integration_sum
    cdef long long integration_count
    cdef long long statuses[STATUS_SLOTS]

    cdef void _clear(self)
    cdef int _bucket(self, double value)
    cpdef record(self, int status, double elapsed, double integration)
    cpdef tuple drain(self)


cdef class RequestIds:
    cdef char text[36]
    cdef unsigned long long counter

    cpdef str next(self)


@cython.final
cdef class SlotTable:
    cdef Py_buffer _buf
    cdef bint _has_buf
    cdef int64_t* _idents
    cdef int64_t* _values
    cdef readonly Py_ssize_t nslots

    cdef void _check(self, Py_ssize_t slot) except *
    cdef Py_ssize_t _probe(self, int64_t ident, bint insert) except -2
    cpdef Py_ssize_t find(self, int64_t ident) except -2
    cpdef Py_ssize_t lookup(self, int64_t ident) except -2
    cpdef tuple count_acquire(self, Py_ssize_t slot, int64_t period, int64_t limit, int64_t cost=*,
                              int64_t initial=*)
    cpdef count_release(self, Py_ssize_t slot, int64_t period, int64_t cost=*)
    cpdef tuple count_get(self, Py_ssize_t slot)
    cpdef count_set(self, Py_ssize_t slot, int64_t period, int64_t count)
    cpdef tuple count_take(self, Py_ssize_t slot)
    cpdef gcra_refund(self, Py_ssize_t slot, double rate, int64_t cost=*)
    cpdef tuple admit(self, int64_t now_ns, tuple levels, Py_ssize_t quota_slot=*, int64_t period=*,
                      int64_t limit=*, int64_t initial=*)
    cdef void _untake(self, tuple levels, Py_ssize_t upto) except *
    cpdef Py_ssize_t occupied(self)


cdef struct _LineBuf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


@cython.final
cdef class LineBuffer:
    cdef _LineBuf b
    cdef Py_ssize_t flush_bytes
    cdef long long second  # the second `time_text` shows
    cdef char time_text[32]
    cdef Py_ssize_t time_len
    cdef readonly long long lines  # lines in the buffer

    cdef void _set_time(self, long long second)
    cpdef bint line(self, str request_id, object down, object line_format, long long status, long long length,
                    double elapsed, double integration_latency, double now=*) except -1
    cpdef bint line_of(self, str request_id, str client, str method, str path, str protocol, bytes fixed,
                       long long status, long long length, double elapsed, double integration_latency,
                       bint with_principal=*, object principal=*, double now=*) except -1
    cpdef bint raw(self, bytes data) except -1
    cpdef bytes take(self)
