"""HTTP_PROXY: the request forwarded to an HTTP upstream, the response relayed back as it is.

The forwarding itself (request head, body streaming, the pooled exchange, the relay) is the
pipeline's own path (Gateway.http_proxy in fastgw/pipeline.py): it is the hot path, and the pipeline
calls it without this module's indirection. A route that maps parameters (HTTP APIs' parameter
mapping, REST APIs' `requestParameters` headers and query strings) or belongs to an awsCompat REST
API (AWS's reserved and remapped headers: fastgw/integrations/headers.py) compiles to a
MappedProxyPlan instead (fastgw/integrations/parammap.py).
"""

from __future__ import annotations

from typing import Any

from ..config.loader import Problem
from ..config.model import Api, GatewayConfig, Route, Stage
from .base import IntegrationType
from .parammap import MappedProxyPlan, compile_mapping, compile_rest_mapping, run_mapped_proxy
from .target import HttpProxyPlan, compile_target


def compile_http_proxy(api: Api, route: Route, stage: Stage, variables: dict[str, str], pools: dict,
                       problems: list[Problem], config: GatewayConfig | None) -> HttpProxyPlan | MappedProxyPlan | None:
    integration = route.integration
    assert integration is not None
    proxy = compile_target(route, stage, pools, problems, config, variables)
    if proxy is None:
        return None
    if api.type == "HTTP":
        if not (integration.requestParameters or integration.responseParameters):
            return proxy
        mapping = compile_mapping(integration.requestParameters, integration.responseParameters,
                                  integration.path, problems)
    else:
        mapping = compile_rest_mapping(integration.requestParameters, integration.path, api.awsCompat, problems)
    return MappedProxyPlan(proxy, mapping, proxy.uri) if mapping is not None else proxy


async def run_http_proxy(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                         plan: HttpProxyPlan, params: dict[str, str], request_id: str,
                         fill: Any = None) -> tuple[int, int]:
    return await gateway.http_proxy(down, head, plan, params, request_id, fill)


async def run_mapped(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                     plan: MappedProxyPlan, params: dict[str, str], request_id: str,
                     fill: Any = None) -> tuple[int, int]:
    return await run_mapped_proxy(gateway, down, head, plan, stage, route, route_path, params, request_id, fill)


HTTP_PROXY = IntegrationType("HTTP_PROXY", compile_http_proxy,
                             ((HttpProxyPlan, run_http_proxy), (MappedProxyPlan, run_mapped)))
