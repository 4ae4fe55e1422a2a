# LruTtlCache: dict + intrusive doubly-linked list. Mirrors fastgw/_py/cache.py (which explains
# the byte accounting and ENTRY_OVERHEAD).

cdef Py_ssize_t _ENTRY_OVERHEAD = 128  # see fastgw/_py/cache.py


@cython.final
cdef class _Entry:
    cdef object key
    cdef object value
    cdef Py_ssize_t size
    cdef double expires
    cdef _Entry prev       # towards the most recently used end
    cdef _Entry next       # towards the least recently used end


cdef inline _check_key(object key):
    if not (PyUnicode_Check(key) or PyBytes_Check(key)):
        raise TypeError(f"cache key must be str or bytes, not {type(key).__name__}")


@cython.final
@cython.binding(False)  # plain method descriptors: ~10 ns less per call
cdef class LruTtlCache:
    """See docs/DESIGN.md. A circular list through a sentinel: head.next is the most recent."""

    ENTRY_OVERHEAD = _ENTRY_OVERHEAD

    cdef dict _map         # key -> _Entry
    cdef _Entry _head
    cdef Py_ssize_t _max_bytes
    cdef Py_ssize_t _bytes

    def __cinit__(self, Py_ssize_t max_bytes):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._max_bytes = max_bytes
        self._bytes = 0
        self._map = {}
        self._head = _Entry.__new__(_Entry)
        self._head.prev = self._head
        self._head.next = self._head

    @property
    def max_bytes(self):
        return self._max_bytes

    @property
    def bytes_used(self):
        return self._bytes

    def __len__(self):
        return len(self._map)

    cdef inline void _unlink(self, _Entry e):
        e.prev.next = e.next
        e.next.prev = e.prev

    cdef inline void _push_front(self, _Entry e):
        e.prev = self._head
        e.next = self._head.next
        self._head.next.prev = e
        self._head.next = e

    cdef _remove(self, _Entry e):
        self._unlink(e)
        e.prev = e.next = None
        PyDict_DelItem(self._map, e.key)
        self._bytes -= e.size

    cpdef object get(self, object key, double now):
        cdef PyObject* found
        cdef _Entry e
        _check_key(key)
        found = PyDict_GetItemWithError(self._map, key)
        if found is NULL:
            return None
        e = <_Entry>found
        if now >= e.expires:
            self._remove(e)
            return None
        if e.prev is not self._head:
            self._unlink(e)
            self._push_front(e)
        return e.value

    cpdef bint put(self, object key, object value, Py_ssize_t nbytes, double ttl, double now) except -1:
        cdef _Entry e
        cdef Py_ssize_t size
        _check_key(key)
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        self.delete(key)
        size = nbytes + len(key) + _ENTRY_OVERHEAD
        if size > self._max_bytes or not (ttl > 0):
            return False
        e = _Entry.__new__(_Entry)
        e.key = key
        e.value = value
        e.size = size
        e.expires = now + ttl
        self._map[key] = e
        self._push_front(e)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._remove(self._head.prev)
        return True

    cpdef bint delete(self, object key) except -1:
        cdef PyObject* found
        _check_key(key)
        found = PyDict_GetItemWithError(self._map, key)
        if found is NULL:
            return False
        self._remove(<_Entry>found)
        return True

    cpdef clear(self):
        cdef _Entry e = self._head.next
        cdef _Entry nxt
        # Break the links so the entries are freed by refcounting, not left to the cycle collector.
        while e is not self._head:
            nxt = e.next
            e.prev = e.next = None
            e = nxt
        self._head.prev = self._head.next = self._head
        self._map.clear()
        self._bytes = 0

    def __dealloc__(self):
        if self._head is not None:
            self.clear()
            self._head.prev = self._head.next = None
