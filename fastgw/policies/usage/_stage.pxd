# Cython declarations that turn stage.py's classes into extension types when setup.py builds it as
# fastgw.policies.usage._stage (an "augmenting" .pxd, as fastgw/_lane.pxd is for lane.py). stage.py itself
# stays plain Python; this file is read by Cython only. PERF: the check's reads of these classes' fields
# become struct reads, and SlotTable.admit a C call (fastgw/_core.pxd declares it).

cimport cython

from fastgw._core cimport SlotTable


@cython.final
cdef class Binding:
    cdef public str key_id, period_kind, redis_tag
    cdef public object plan, methods
    cdef public long long quota_limit, quota_offset
    cdef public Py_ssize_t plan_slot, quota_slot, seen_slot, version_slot
    cdef public dict chains, fallback_chains


@cython.final
cdef class KeyEntry:
    cdef public str id, name
    cdef public bytes digest
    cdef public bint enabled
    cdef public dict stages


@cython.final
cdef class Periods:
    cdef public dict current, ends
    cdef public long long until_ns


@cython.final
cdef class UsageStage:
    cdef public object setup, table, gcra, store, keys_version, remote, _timer, _loop
    cdef public dict keys, verified, throttled, exceeded, rejected
    cdef public SlotTable slots
    cdef public Periods periods
    cdef public Py_ssize_t _local_divisor

    cpdef object check(self, object usage, str api_key, str identity_key=*)
