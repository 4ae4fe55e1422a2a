# SlotTable: a lock-free hash table of int64 idents -> slot numbers, plus packed period counters,
# in a (possibly shared, memory-mapped) buffer. Mirrors fastgw/_py/slots.py.
#
# Layout: idents int64[nslots] (0 = free), then values int64[nslots]. A value is either a GCRA TAT
# (driven by GcraTable over the values region; this class only refunds it) or a counter packed as
# (period << 40) | count, so that "reset on a new period, then add if under the limit" is one CAS.
# Idents are only ever inserted, never removed, so a slot found once stays valid for the life of
# the buffer and callers may cache it.

from cpython.long cimport PyLong_AsLongLong as _slots_as_i64
from cpython.long cimport PyLong_AsSsize_t
from libc.stdint cimport uint64_t

cdef int64_t COUNT_BITS = 40
cdef int64_t COUNT_MASK = ((<int64_t>1) << 40) - 1
cdef int64_t PERIOD_LIMIT = (<int64_t>1) << 23
cdef tuple _ADMITTED = (-1, 0)


@cython.final
cdef class SlotTable:
    """``nslots`` idents and values in a writable buffer of >= 16*nslots bytes (fields: fastgw/_core.pxd)."""

    def __cinit__(self, object buffer, Py_ssize_t nslots):
        if nslots <= 0:
            raise ValueError("nslots must be > 0")
        PyObject_GetBuffer(buffer, &self._buf, PyBUF_WRITABLE)
        self._has_buf = True
        if self._buf.len < 16 * nslots:
            raise ValueError(f"buffer too small: {nslots} slots need {16 * nslots} bytes")
        if (<uintptr_t>self._buf.buf) % 8 != 0:
            raise ValueError("buffer must be 8-byte aligned")
        self._idents = <int64_t*>self._buf.buf
        self._values = self._idents + nslots
        self.nslots = nslots

    def __dealloc__(self):
        if self._has_buf:
            PyBuffer_Release(&self._buf)

    cdef void _check(self, Py_ssize_t slot) except *:
        if slot < 0 or slot >= self.nslots:
            raise IndexError(f"slot {slot} out of range (nslots={self.nslots})")

    @cython.cdivision(True)
    cdef Py_ssize_t _probe(self, int64_t ident, bint insert) except -2:
        cdef Py_ssize_t start, i, n
        cdef int64_t seen
        if ident == 0:
            raise ValueError("ident 0 is reserved for free slots")
        n = self.nslots
        start = <Py_ssize_t>((<uint64_t>ident) % (<uint64_t>n))
        i = start
        while True:
            seen = fastgw_load_i64(self._idents + i)
            if seen == ident:
                return i
            if seen == 0:
                if not insert:
                    return -1
                # Claim the free slot; losing the race to the same ident is as good as winning.
                if fastgw_cas_i64(self._idents + i, &seen, ident) or seen == ident:
                    return i
                continue  # another ident took it: look at this slot again (now occupied)
            i += 1
            if i == n:
                i = 0
            if i == start:
                return -1

    cpdef Py_ssize_t find(self, int64_t ident) except -2:
        """The slot of ``ident``, inserting it if absent; -1 when the table is full."""
        return self._probe(ident, True)

    cpdef Py_ssize_t lookup(self, int64_t ident) except -2:
        """The slot of ``ident``, or -1 when it was never inserted."""
        return self._probe(ident, False)

    cpdef tuple count_acquire(self, Py_ssize_t slot, int64_t period, int64_t limit, int64_t cost=1,
                              int64_t initial=0):
        """Add ``cost`` to the counter of ``period`` unless that would pass ``limit`` (< 0: none).

        A counter of another period counts as 0; a never-used counter starts at ``initial``.
        Returns (allowed, count): the count after adding, or the current one when refused.
        """
        cdef int64_t word, base, new_count
        cdef int64_t* p
        self._check(slot)
        if period <= 0 or period >= PERIOD_LIMIT:
            raise ValueError("period out of range")
        if cost < 0 or initial < 0:
            raise ValueError("cost and initial must be >= 0")
        p = self._values + slot
        word = fastgw_load_i64(p)
        while True:
            if word == 0:
                base = initial
            elif (word >> COUNT_BITS) == period:
                base = word & COUNT_MASK
            else:
                base = 0
            new_count = base + cost
            if (limit >= 0 and new_count > limit) or new_count > COUNT_MASK:
                return (False, base)
            if fastgw_cas_i64(p, &word, (period << COUNT_BITS) | new_count):
                return (True, new_count)

    cpdef count_release(self, Py_ssize_t slot, int64_t period, int64_t cost=1):
        """Give back ``cost`` taken from the counter of ``period`` (nothing if the period moved on)."""
        cdef int64_t word, count
        cdef int64_t* p
        self._check(slot)
        p = self._values + slot
        word = fastgw_load_i64(p)
        while True:
            if word == 0 or (word >> COUNT_BITS) != period:
                return
            count = word & COUNT_MASK
            count = count - cost if count > cost else 0
            if fastgw_cas_i64(p, &word, (period << COUNT_BITS) | count):
                return

    cpdef tuple count_get(self, Py_ssize_t slot):
        """(period, count); (0, 0) for a counter never used."""
        cdef int64_t word
        self._check(slot)
        word = fastgw_load_i64(self._values + slot)
        return (word >> COUNT_BITS, word & COUNT_MASK)

    cpdef count_set(self, Py_ssize_t slot, int64_t period, int64_t count):
        self._check(slot)
        if period <= 0 or period >= PERIOD_LIMIT or count < 0 or count > COUNT_MASK:
            raise ValueError("period or count out of range")
        fastgw_store_i64(self._values + slot, (period << COUNT_BITS) | count)

    cpdef tuple count_take(self, Py_ssize_t slot):
        """Atomically read the counter and set its count to 0 (the period stays): (period, count)."""
        cdef int64_t word
        cdef int64_t* p
        self._check(slot)
        p = self._values + slot
        word = fastgw_load_i64(p)
        while True:
            if (word & COUNT_MASK) == 0:
                return (word >> COUNT_BITS, 0)
            if fastgw_cas_i64(p, &word, word & ~COUNT_MASK):
                return (word >> COUNT_BITS, word & COUNT_MASK)

    cpdef gcra_refund(self, Py_ssize_t slot, double rate, int64_t cost=1):
        """Undo a GcraTable.acquire(slot, now, rate, burst, cost) that was allowed: move the TAT back
        by exactly the increment that acquire added (same rounding)."""
        cdef int64_t tat, new_tat, inc
        cdef int64_t* p
        self._check(slot)
        if cost <= 0 or not (rate > 0):
            return
        inc = _span(_emission_interval(rate), cost)
        p = self._values + slot
        tat = fastgw_load_i64(p)
        while True:
            if tat == 0:
                return
            new_tat = tat - inc
            if new_tat < 1:
                new_tat = 1  # still "used", and in the past: a full bucket
            if fastgw_cas_i64(p, &tat, new_tat):
                return

    cpdef tuple admit(self, int64_t now_ns, tuple levels, Py_ssize_t quota_slot=-1, int64_t period=0,
                      int64_t limit=-1, int64_t initial=0):
        """A whole usage check in one call: GCRA on each level in order, then the quota counter.

        ``levels`` holds (slot, interval_ns, tolerance_ns) triples, precomputed with GcraTable's
        rounding (interval = emission interval, tolerance = interval * burst; a tolerance < 0
        always refuses, like a zero rate or burst). A refusal takes back what the earlier levels
        took, so a rejected request consumes nothing. ``quota_slot`` < 0: no counter.
        Returns (-1, count) when admitted (count: the counter after adding, 0 without one),
        (i, retry_ns) when level i refused, (len(levels), count) when the quota did.
        """
        cdef Py_ssize_t n = PyTuple_GET_SIZE(levels)
        cdef Py_ssize_t i, j, slot
        cdef int64_t interval, tolerance, tat, new_tat, diff
        cdef int64_t* p
        cdef object spec
        cdef tuple result
        for i in range(n):
            spec = <object>PyTuple_GET_ITEM(levels, i)
            slot = PyLong_AsSsize_t(<object>PyTuple_GET_ITEM(spec, 0))
            interval = _slots_as_i64(<object>PyTuple_GET_ITEM(spec, 1))
            tolerance = _slots_as_i64(<object>PyTuple_GET_ITEM(spec, 2))
            self._check(slot)
            if tolerance < 0:
                self._untake(levels, i)
                return (i, DENIED_RETRY_NS)
            p = self._values + slot
            tat = fastgw_load_i64(p)
            while True:
                new_tat = (tat if tat > now_ns else now_ns) + interval
                diff = new_tat - now_ns
                if diff > tolerance:
                    self._untake(levels, i)
                    return (i, diff - tolerance)
                if fastgw_cas_i64(p, &tat, new_tat):
                    break
        if quota_slot < 0:
            return _ADMITTED
        result = self.count_acquire(quota_slot, period, limit, 1, initial)
        if result[0]:
            return (-1, result[1])
        self._untake(levels, n)
        return (n, result[1])

    cdef void _untake(self, tuple levels, Py_ssize_t upto) except *:
        cdef Py_ssize_t i, slot
        cdef int64_t inc, tat, new_tat
        cdef int64_t* p
        cdef object spec
        for i in range(upto):
            spec = <object>PyTuple_GET_ITEM(levels, i)
            slot = PyLong_AsSsize_t(<object>PyTuple_GET_ITEM(spec, 0))
            inc = _slots_as_i64(<object>PyTuple_GET_ITEM(spec, 1))
            p = self._values + slot
            tat = fastgw_load_i64(p)
            while tat != 0:
                new_tat = tat - inc
                if new_tat < 1:
                    new_tat = 1
                if fastgw_cas_i64(p, &tat, new_tat):
                    break

    cpdef Py_ssize_t occupied(self):
        cdef Py_ssize_t i, n = 0
        for i in range(self.nslots):
            if fastgw_load_i64(self._idents + i) != 0:
                n += 1
        return n
