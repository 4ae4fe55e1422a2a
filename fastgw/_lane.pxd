# Cython declarations that turn lane.py's classes into extension types when setup.py builds it as
# fastgw._lane (an "augmenting" .pxd: Cython finds it by the module's name). lane.py itself stays plain
# Python; this file is read by Cython only.

from fastgw._core cimport LineBuffer, RequestFacts, RequestIds, ResponseParser, Tally, UpstreamConnection
from fastgw.policies.usage._stage cimport UsageStage

cdef class PlainRoute:
    cdef public object stage, route, integration, tracing, usage, method, path, upstream_path, target, host_header
    cdef public object pool, timeout, framing, worker_metrics, overload, limits, access_log
    cdef public UsageStage usage_stage
    cdef public LineBuffer log_buffer
    cdef public bytes line_fixed
    cdef public Tally tally
    cdef public RequestIds ids
    cdef public bint head_request, idempotent, trusted_hops

cdef class RsgiEntry:
    cdef object gateway, other, adapter

cpdef object plain_route(object gateway, object scope)
