# GcraTable: GCRA over int64 TATs in a (possibly shared) buffer. Mirrors fastgw/_py/limiter.py,
# except that here each update is a compare-and-swap, so processes sharing an mmap agree.

cdef extern from *:
    """
    #include <stdint.h>
    static inline int64_t fastgw_load_i64(int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void fastgw_store_i64(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    /* On failure *expected receives the current value, ready for the next attempt. */
    static inline int fastgw_cas_i64(int64_t *p, int64_t *expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    """
    int64_t fastgw_load_i64(int64_t *p) nogil
    void fastgw_store_i64(int64_t *p, int64_t v) nogil
    bint fastgw_cas_i64(int64_t *p, int64_t *expected, int64_t desired) nogil

# ~36 years in ns: clamping every span to this keeps TAT far from int64 overflow for any input.
cdef int64_t MAX_SPAN = (<int64_t>1) << 60
cdef int64_t DENIED_RETRY_NS = 1000000000
cdef tuple _DENIED = (False, DENIED_RETRY_NS, 0)


cdef inline int64_t _emission_interval(double rate) noexcept nogil:
    # T rounded down to whole ns (>= 1) so that all later arithmetic is exact integer arithmetic.
    cdef double t = 1e9 / rate
    if t >= <double>MAX_SPAN:
        return MAX_SPAN
    if t < 1.0:
        return 1
    return <int64_t>t


cdef inline int64_t _as_i64(object x) except? -1:
    # Strict like operator.index(): a typed int64_t argument would silently truncate 1.5 to 1.
    if not PyLong_Check(x):
        x = PyNumber_Index(x)
    return PyLong_AsLongLong(x)


@cython.cdivision(True)
cdef inline int64_t _span(int64_t interval, int64_t count) noexcept nogil:
    return MAX_SPAN if count > MAX_SPAN // interval else interval * count


@cython.final
@cython.binding(False)  # plain method descriptors: ~10 ns less per call
cdef class GcraTable:
    """``nslots`` GCRA states (int64 TAT, ns) in a writable buffer of >= 8*nslots bytes."""

    cdef Py_buffer _buf
    cdef bint _has_buf
    cdef int64_t* _tat
    cdef readonly Py_ssize_t nslots

    def __cinit__(self, object buffer, Py_ssize_t nslots):
        if nslots < 0:
            raise ValueError("nslots must be >= 0")
        PyObject_GetBuffer(buffer, &self._buf, PyBUF_WRITABLE)
        self._has_buf = True
        if self._buf.len < 8 * nslots:
            raise ValueError(f"buffer too small: {nslots} slots need {8 * nslots} bytes")
        # Atomics need natural alignment; bytearray and mmap memory always has it.
        if (<uintptr_t>self._buf.buf) % 8 != 0:
            raise ValueError("buffer must be 8-byte aligned")
        self._tat = <int64_t*>self._buf.buf
        self.nslots = nslots

    def __dealloc__(self):
        if self._has_buf:
            PyBuffer_Release(&self._buf)

    @cython.cdivision(True)
    cpdef tuple acquire(self, Py_ssize_t slot, object now_ns, double rate, object burst, object cost=1):
        cdef int64_t interval, tolerance, inc, tat, new_tat, diff
        cdef int64_t* p
        cdef int64_t now, burst_n, cost_n
        if slot < 0 or slot >= self.nslots:
            raise IndexError(f"slot {slot} out of range (nslots={self.nslots})")
        now = _as_i64(now_ns)
        burst_n = _as_i64(burst)
        cost_n = _as_i64(cost)
        if cost_n < 0:
            raise ValueError("cost must be >= 0")
        if not (rate > 0) or burst_n <= 0:
            return _DENIED
        interval = _emission_interval(rate)
        tolerance = _span(interval, burst_n)
        inc = _span(interval, cost_n)
        p = self._tat + slot
        tat = fastgw_load_i64(p)
        while True:
            new_tat = (tat if tat > now else now) + inc
            diff = new_tat - now
            if diff > tolerance:
                return (False, diff - tolerance, 0)
            if fastgw_cas_i64(p, &tat, new_tat):
                return (True, 0, (tolerance - diff) // interval)

    cpdef reset(self, Py_ssize_t slot):
        if slot < 0 or slot >= self.nslots:
            raise IndexError(f"slot {slot} out of range (nslots={self.nslots})")
        fastgw_store_i64(self._tat + slot, 0)
