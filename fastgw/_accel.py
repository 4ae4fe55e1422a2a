"""Kernel chooser: every compiled module of fastgw, or its pure-Python twin.

This is the only place that decides between a compiled module and its twin: the core kernels
(fastgw._core, twins in fastgw._py) here, the VTL renderer (fastgw.vtl._render, twin
fastgw/vtl/render.py) through `compiled()` from fastgw/vtl, and the plain lane (fastgw._lane, twin
fastgw/lane.py) through `compiled()` from fastgw/pipeline.py. Everything else imports kernels from
here. FASTGW_NO_EXTENSIONS=<anything non-empty> selects the twins. Without it the compiled modules
are used, falling back to the twins when they were not built. `KERNELS` records each choice ("c" or
"py"), `IMPL` is the core's and `impl()` all of them ("mixed" when they differ), so that a silently
missing build is visible (tests/test_build.py fails on it, metrics export it).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from ._py import GcraTable as PyGcraTable
from ._py import LruTtlCache as PyLruTtlCache
from ._py import Router as PyRouter
from ._py import SlotTable as PySlotTable
from ._py import Template as PyTemplate
from ._py.http1 import ResponseError as PyResponseError
from ._py.http1 import ResponseParser as PyResponseParser
from ._py.limiter import emission_interval, span  # plain Python helpers of the GCRA, used at compile time
from ._py.logline import LineBuffer as PyLineBuffer
from ._py.logline import access_line as py_access_line
from ._py.logline import clf_time  # a helper of both, no compiled twin
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
KERNELS: dict[str, str] = {}  # compiled module name -> "c" (it runs) or "py" (its twin runs)


def compiled(name: str) -> ModuleType | None:
    """The compiled module `name`, or None when its twin must run (FASTGW_NO_EXTENSIONS, or not built)."""
    module = None
    if not NO_EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # not built (e.g. a source checkout without build_ext)
            module = None
    KERNELS[name] = "py" if module is None else "c"
    return module


def impl() -> str:
    """"c" when every compiled module runs, "py" when every twin does, else "mixed"."""
    kinds = set(KERNELS.values())
    return kinds.pop() if len(kinds) == 1 else "mixed"


# The twins first; the compiled core replaces every one of them when it is built.
Router, Template, GcraTable, LruTtlCache, SlotTable = PyRouter, PyTemplate, PyGcraTable, PyLruTtlCache, PySlotTable
ResponseParser, ResponseError = PyResponseParser, PyResponseError
RequestFacts, RequestRejected, scan_request_headers = PyRequestFacts, PyRequestRejected, py_scan_request_headers
RequestIds, scan_request, upstream_request_head = PyRequestIds, py_scan_request, py_upstream_request_head
peer_host = py_peer_host
access_line, LineBuffer = py_access_line, PyLineBuffer
latin1_headers, bytes_headers = py_latin1_headers, py_bytes_headers
Tally = PyTally
UpstreamConnection, UpstreamError = PyUpstreamConnection, PyUpstreamError
IMPL = "py"

_core = compiled("fastgw._core")
if _core is not None:
    GcraTable = _core.GcraTable
    LruTtlCache = _core.LruTtlCache
    RequestFacts = _core.RequestFacts
    RequestIds = _core.RequestIds
    RequestRejected = _core.RequestRejected
    ResponseError = _core.ResponseError
    ResponseParser = _core.ResponseParser
    Router = _core.Router
    SlotTable = _core.SlotTable
    Tally = _core.Tally
    Template = _core.Template
    UpstreamConnection = _core.UpstreamConnection
    UpstreamError = _core.UpstreamError
    bytes_headers = _core.bytes_headers
    latin1_headers = _core.latin1_headers
    peer_host = _core.peer_host
    access_line = _core.access_line
    LineBuffer = _core.LineBuffer
    scan_request = _core.scan_request
    scan_request_headers = _core.scan_request_headers
    upstream_request_head = _core.upstream_request_head
    IMPL = "c"

__all__ = [
    "IMPL",
    "access_line",
    "py_access_line",
    "LineBuffer",
    "clf_time",
    "PyLineBuffer",
    "KERNELS",
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
    "compiled",
    "emission_interval",
    "impl",
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
    "span",
    "upstream_request_head",
]
