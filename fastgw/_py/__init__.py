"""Pure-Python twins of the compiled kernels in fastgw._core (same interface, the reference).

Use fastgw._accel rather than importing this package directly.
"""

from .cache import LruTtlCache
from .limiter import GcraTable
from .router import Router
from .slots import SlotTable
from .template import Template

__all__ = ["GcraTable", "LruTtlCache", "Router", "SlotTable", "Template"]
