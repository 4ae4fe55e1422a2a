"""The admin API (main process, admin port): an endpoint table (endpoints.py) served by http.py."""

from .endpoints import ENDPOINTS
from .http import AdminServer, start_admin

__all__ = ["ENDPOINTS", "AdminServer", "start_admin"]
