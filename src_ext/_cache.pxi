# LruTtlCache: dict + intrusive doubly-linked list. Mirrors fastgw/_py/cache.py (which explains
# the byte accounting and ENTRY_OVERHEAD).

cdef Py_ssize_t _ENTRY_OVERHEAD = 128  # see fastgw/_py/cache.py


# The recency list is plain C: moving an entry to the front is four pointer writes, with no
# reference counting. The dict holds the only strong reference to each entry, and an entry always
# leaves the list before it leaves the dict, so no link ever points at a freed entry.
cdef struct _Link:
    _Link* prev            # towards the most recently used end
    _Link* next            # towards the least recently used end
    PyObject* entry        # the _Entry that embeds this link (borrowed)


cdef inline void _unlink(_Link* link) noexcept nogil:
    link.prev.next = link.next
    link.next.prev = link.prev


cdef inline void _push_front(_Link* head, _Link* link) noexcept nogil:
    link.prev = head
    link.next = head.next
    head.next.prev = link
    head.next = link


@cython.final
@cython.freelist(64)  # a put that evicts frees one entry and allocates another: recycle them
cdef class _Entry:
    cdef object key
    cdef object value
    cdef Py_ssize_t size
    cdef double expires
    cdef _Link link


cdef inline _check_key(object key):
    if not (PyUnicode_Check(key) or PyBytes_Check(key)):
        raise TypeError(f"cache key must be str or bytes, not {type(key).__name__}")


@cython.final
@cython.binding(False)  # plain method descriptors: ~10 ns less per call
cdef class LruTtlCache:
    """See docs/DESIGN.md. A circular list through a sentinel: head.next is the most recent."""

    ENTRY_OVERHEAD = _ENTRY_OVERHEAD

    cdef dict _map         # key -> _Entry
    cdef _Link _head       # sentinel; lives inside this object, so its address is stable
    cdef Py_ssize_t _max_bytes
    cdef Py_ssize_t _bytes

    def __cinit__(self, Py_ssize_t max_bytes):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._max_bytes = max_bytes
        self._bytes = 0
        self._map = {}
        self._head.prev = &self._head
        self._head.next = &self._head
        self._head.entry = NULL

    @property
    def max_bytes(self):
        return self._max_bytes

    @property
    def bytes_used(self):
        return self._bytes

    def __len__(self):
        return len(self._map)

    cdef _remove(self, _Entry e):
        # e is a strong local reference, so it outlives the dict's reference dropped here.
        _unlink(&e.link)
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
        if e.link.prev is not &self._head:
            _unlink(&e.link)
            _push_front(&self._head, &e.link)
        return e.value

    cpdef bint put(self, object key, object value, Py_ssize_t nbytes, double ttl, double now) except -1:
        cdef _Entry e, old
        cdef PyObject* existing
        cdef Py_ssize_t size
        _check_key(key)
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        size = nbytes + len(key) + _ENTRY_OVERHEAD
        if size > self._max_bytes or not (ttl > 0):
            self.delete(key)  # the caller's newer value is not kept, so neither is the stale one
            return False
        e = _Entry.__new__(_Entry)
        e.key = key
        e.value = value
        e.size = size
        e.expires = now + ttl
        e.link.entry = <PyObject*>e
        # One probe inserts a new key; an existing key's entry is returned and replaced.
        existing = PyDict_SetDefault(self._map, key, e)
        if existing is not <PyObject*>e:
            old = <_Entry>existing
            _unlink(&old.link)
            self._bytes -= old.size
            self._map[key] = e
        _push_front(&self._head, &e.link)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._remove(<_Entry>self._head.prev.entry)
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
        self._head.prev = &self._head
        self._head.next = &self._head
        self._map.clear()
        self._bytes = 0
