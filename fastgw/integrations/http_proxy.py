"""HTTP_PROXY: the request forwarded to an HTTP upstream, the response relayed back as it is.

The forwarding itself (request head, body streaming, the pooled exchange, the relay) is the
pipeline's own path (Gateway.http_proxy in fastgw/pipeline.py): it is the hot path, and the pipeline
calls it without this module's indirection. HTTP APIs may map parameters (fastgw/integrations/
parammap.py): such a route compiles to a MappedProxyPlan instead.
"""

from __future__ import annotations

from typing import Any

from ..config.loader import Problem
from ..config.model import Api, GatewayConfig, Route, Stage
from .base import IntegrationType
from .parammap import MappedProxyPlan, compile_mapping, run_mapped_proxy
from .target import HttpProxyPlan, compile_target


def compile_http_proxy(api: Api, route: Route, stage: Stage, variables: dict[str, str], pools: dict,
                       problems: list[Problem], config: GatewayConfig | None) -> HttpProxyPlan | MappedProxyPlan | None:
    integration = route.integration
    assert integration is not None
    proxy = compile_target(route, stage, pools, problems, config.upstreams if config is not None else {}, variables)
    if proxy is not None and api.type == "HTTP" and (integration.requestParameters or
                                                     integration.responseParameters):
        mapping = compile_mapping(integration.requestParameters, integration.responseParameters,
                                  integration.path, problems)
        if mapping is not None:
            return MappedProxyPlan(proxy, mapping, proxy.uri)
    return proxy


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
