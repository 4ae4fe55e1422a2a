"""Integrations: what a route does with a request once the policies let it through.

One module per integration type, each with its plan, its compile step and its run step, registered
in INTEGRATIONS below (the one table the compiler and the pipeline read). A new integration type is a
new module here and one line in that table. Siblings never import each other (an import-linter
independence contract); what several types share lives in `target.py` (an HTTP upstream target),
`parammap.py` (parameter mapping) and `headers.py` (AWS's header rules), and below this package in
fastgw/handlers.py (Python Lambda handlers), fastgw/context.py ($context) and fastgw/upstream.py (the
connection pool).
"""

from __future__ import annotations

from typing import Any

from .aws import AWS
from .base import IntegrationType, MisconfiguredPlan, Run, run_misconfigured
from .connections import RUN as CONNECTIONS_RUN
from .function import FUNCTION
from .http_proxy import HTTP_PROXY
from .nonproxy import FUNCTION_CUSTOM, HTTP, MOCK

INTEGRATIONS: dict[str, IntegrationType] = {kind.name: kind for kind in (
    HTTP_PROXY,       # an HTTP upstream, proxied (HTTP APIs may map parameters)
    FUNCTION,         # a Python Lambda handler, proxy event (AWS_PROXY)
    HTTP,             # REST non-proxy: an HTTP upstream through mapping templates
    FUNCTION_CUSTOM,  # REST non-proxy: a Python Lambda handler through mapping templates (AWS)
    MOCK,             # REST non-proxy: templates only
    AWS,              # AWS service integrations: 501
)}

# plan class -> run step, for the pipeline
RUNS: dict[type, Run] = {plan: run for kind in INTEGRATIONS.values() for plan, run in kind.runs}
RUNS[CONNECTIONS_RUN[0]] = CONNECTIONS_RUN[1]  # a WebSocket API's @connections routes (not a config type)
RUNS[MisconfiguredPlan] = run_misconfigured


def target_of(plan: Any) -> Any:
    """The HTTP target (HttpProxyPlan) a compiled integration sends to, or None."""
    target = getattr(plan, "proxy", plan)  # NonProxyPlan and MappedProxyPlan wrap one
    return target if getattr(target, "pool", None) is not None else None


__all__ = ["INTEGRATIONS", "RUNS", "IntegrationType", "MisconfiguredPlan", "target_of"]
