"""Pure-Python twins of the compiled kernels in fastgw._core (same interface, the reference).

Use fastgw._accel rather than importing this package directly.
"""

from .cache import LruTtlCache
from .http1 import ResponseError, ResponseParser
from .limiter import GcraTable
from .logline import LineBuffer, access_line
from .request import (
    RequestFacts,
    RequestIds,
    RequestRejected,
    peer_host,
    scan_request,
    scan_request_headers,
    upstream_request_head,
)
from .router import Router
from .slots import SlotTable
from .tally import Tally
from .template import Template

__all__ = [
    "GcraTable", "LruTtlCache", "RequestFacts", "RequestIds", "RequestRejected", "ResponseError", "ResponseParser",
    "Router", "SlotTable", "Tally", "Template", "peer_host", "scan_request", "scan_request_headers",
    "upstream_request_head", "access_line", "LineBuffer",
]
