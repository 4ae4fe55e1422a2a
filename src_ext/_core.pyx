# cython: language_level=3
"""fastgw._core: the compiled kernels (router, template, GCRA limiter, LRU/TTL cache, HTTP/1 response parser,
the upstream connection).

Same interface and behaviour as the pure-Python twins in fastgw/_py, which are the reference;
see docs/DESIGN.md. Only fastgw._accel imports this module; the compiled plain lane (fastgw._lane)
cimports the classes fastgw/_core.pxd declares.
"""

cimport cython
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_Check
from cpython.dict cimport PyDict_CheckExact, PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetDefault
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong, PyLong_Check
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport (
    PyUnicode_Check,
    PyUnicode_CheckExact,
    PyUnicode_CopyCharacters,
    PyUnicode_DATA,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
    PyUnicode_New,
    PyUnicode_READ_CHAR,
)
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memcpy

import re as _re
from sys import intern as _intern

include "_router.pxi"
include "_template.pxi"
include "_limiter.pxi"
include "_slots.pxi"
include "_cache.pxi"
include "_http1.pxi"
include "_request.pxi"
include "_tally.pxi"
include "_upstream.pxi"
include "_logline.pxi"
