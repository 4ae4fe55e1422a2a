"""Kernel chooser: the compiled fastgw._core, or the pure-Python twins in fastgw._py.

This is the only module that imports fastgw._core; everything else imports kernels from here.
FASTGW_NO_EXTENSIONS=<anything non-empty> selects the twins. Without it the compiled core is used,
falling back to the twins when it was not built; IMPL ("c" or "py") says which one won, so that
a silently missing build is visible (tests/test_build.py fails on it, metrics export it).
"""

from __future__ import annotations

import os

from ._py import GcraTable as PyGcraTable
from ._py import LruTtlCache as PyLruTtlCache
from ._py import Router as PyRouter
from ._py import SlotTable as PySlotTable
from ._py import Template as PyTemplate
from ._py.http1 import ResponseError as PyResponseError
from ._py.http1 import ResponseParser as PyResponseParser
from ._py.request import RequestFacts as PyRequestFacts
from ._py.request import RequestIds as PyRequestIds
from ._py.request import RequestRejected as PyRequestRejected
from ._py.request import bytes_headers as py_bytes_headers
from ._py.request import latin1_headers as py_latin1_headers
from ._py.request import peer_host as py_peer_host
from ._py.request import scan_request as py_scan_request
from ._py.request import scan_request_headers as py_scan_request_headers
from ._py.request import upstream_request_head as py_upstream_request_head
from ._py.tally import Tally as PyTally
from ._py.upstream import UpstreamConnection as PyUpstreamConnection
from ._py.upstream import UpstreamError as PyUpstreamError

NO_EXTENSIONS: bool = bool(os.environ.get("FASTGW_NO_EXTENSIONS"))

# The twins first; the compiled core replaces every one of them when it is built (a `from ... import`
# of several names binds all of them or none).
Router, Template, GcraTable, LruTtlCache, SlotTable = PyRouter, PyTemplate, PyGcraTable, PyLruTtlCache, PySlotTable
ResponseParser, ResponseError = PyResponseParser, PyResponseError
RequestFacts, RequestRejected, scan_request_headers = PyRequestFacts, PyRequestRejected, py_scan_request_headers
RequestIds, scan_request, upstream_request_head = PyRequestIds, py_scan_request, py_upstream_request_head
peer_host = py_peer_host
latin1_headers, bytes_headers = py_latin1_headers, py_bytes_headers
Tally = PyTally
UpstreamConnection, UpstreamError = PyUpstreamConnection, PyUpstreamError
IMPL = "py"

if not NO_EXTENSIONS:
    try:
        from ._core import (  # type: ignore[assignment]
            GcraTable,
            LruTtlCache,
            RequestFacts,
            RequestIds,
            RequestRejected,
            ResponseError,
            ResponseParser,
            Router,
            SlotTable,
            Tally,
            Template,
            UpstreamConnection,
            UpstreamError,
            bytes_headers,
            latin1_headers,
            peer_host,
            scan_request,
            scan_request_headers,
            upstream_request_head,
        )

        IMPL = "c"
    except ImportError:  # not built (e.g. a source checkout without build_ext)
        pass

__all__ = [
    "IMPL",
    "NO_EXTENSIONS",
    "GcraTable",
    "LruTtlCache",
    "PyGcraTable",
    "PyLruTtlCache",
    "PyRequestFacts",
    "PyRequestIds",
    "PyRequestRejected",
    "PyResponseError",
    "PyResponseParser",
    "PyRouter",
    "PySlotTable",
    "PyTally",
    "PyTemplate",
    "PyUpstreamConnection",
    "PyUpstreamError",
    "RequestFacts",
    "RequestIds",
    "RequestRejected",
    "ResponseError",
    "ResponseParser",
    "Router",
    "SlotTable",
    "Tally",
    "Template",
    "UpstreamConnection",
    "UpstreamError",
    "bytes_headers",
    "latin1_headers",
    "peer_host",
    "py_bytes_headers",
    "py_latin1_headers",
    "py_peer_host",
    "py_scan_request",
    "py_scan_request_headers",
    "py_upstream_request_head",
    "scan_request",
    "scan_request_headers",
    "upstream_request_head",
]
