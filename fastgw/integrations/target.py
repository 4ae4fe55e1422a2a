"""An HTTP integration's target: the upstream (scheme, host, port), its pool, the Host header and the
path template, compiled from the integration URI of one route in one stage. HTTP_PROXY and the REST
HTTP (non-proxy) integration share it; so does the upstream request head they send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .._accel import Template
from ..config.loader import Problem
from ..config.model import GatewayConfig, Route, Stage, UpstreamGroup, UpstreamSettings
from ..config.stagevars import substitute_stage_variables
from ..upstream import UpstreamPool
from ..upstream_groups import GroupPool

ROUTE_PARAM = re.compile(r"\{([^{}]+?)\+?\}")
# Methods whose request may be sent again on a fresh connection when a pooled one turns out dead.
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE"))
BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))  # an empty body is still framed (Content-Length: 0)


def length_framing(method: str, length: int) -> str:
    """The end of an upstream request head whose body is sent whole: its Content-Length (when there is
    a body, or the method expects one) and the blank line."""
    return f"content-length: {length}\r\n\r\n" if length or method in BODY_METHODS else "\r\n"


@dataclass(slots=True)
class HttpProxyPlan:
    """An HTTP_PROXY integration of one route in one stage."""

    pool: UpstreamPool | GroupPool
    host_header: str
    path_template: Template | None  # None when the path has no placeholders
    static_path: str  # the path (and fixed query) when there is no template
    uri_query: str  # query string written in the URI itself, sent before the client's
    timeout: float
    uri: str  # for display
    method: str | None = None  # the integration's httpMethod when it differs from the client's (AWS)

    def query(self, query: str) -> str:
        """The upstream query string: the URI's own query, then the request's (either may be empty)."""
        uri_query = self.uri_query
        if uri_query:
            return f"{uri_query}&{query}" if query else uri_query
        return query

    def path(self, params: dict[str, str]) -> str:
        """The upstream path: the URI's path with the route's parameters."""
        template = self.path_template
        return template.render(params) if template is not None else self.static_path

    def target(self, params: dict[str, str], query: str) -> str:
        """The upstream request target: the URI's path with the route's parameters, and `query`."""
        template = self.path_template  # PERF: `path` and `target_at` inline (every proxied request)
        path = template.render(params) if template is not None else self.static_path
        query = self.query(query)
        return f"{path}?{query}" if query else path

    def target_at(self, path: str, query: str) -> str:
        """The upstream request target for an upstream `path` (see `path`) and the request's `query`."""
        query = self.query(query)
        return f"{path}?{query}" if query else path


def _pool_for(plan_pools: dict[tuple[str, str, int], Any], scheme: str, host: str, port: int,
              connect_timeout: float, group: UpstreamGroup | None,
              settings: UpstreamSettings) -> UpstreamPool | GroupPool:
    pool: UpstreamPool | GroupPool = GroupPool(group, scheme, connect_timeout, settings) if group is not None else \
        UpstreamPool(scheme, host, port, connect_timeout, settings)
    kept = plan_pools.get(pool.key)
    if kept is None:
        plan_pools[pool.key] = pool
        return pool
    kept.connect_timeout = min(kept.connect_timeout, connect_timeout)
    return kept


def rewrite_upstream(uri: str, upstreams: dict[str, str]) -> str:
    """`upstreams:` / --upstream FROM=TO: the longest matching prefix of the URI is replaced."""
    best = ""
    for prefix in upstreams:
        if uri.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return upstreams[best] + uri[len(best):] if best else uri


def mapped_path_parameters(template: str, request_parameters: dict[str, str]) -> str:
    """REST `integration.request.path.X: method.request.path.Y` renames `{X}` in the URI to `{Y}`."""
    for target, source in request_parameters.items():
        if target.startswith("integration.request.path.") and source.startswith("method.request.path."):
            name = target[len("integration.request.path."):]
            value = source[len("method.request.path."):]
            if name != value:
                template = template.replace("{" + name + "}", "{" + value + "}").replace(
                    "{" + name + "+}", "{" + value + "+}")
    return template


def compile_target(route: Route, stage: Stage, pools: dict, problems: list[Problem], config: GatewayConfig | None,
                   variables: dict[str, str] | None = None) -> HttpProxyPlan | None:
    """The route's upstream target; `config` gives the URI rewrites (`upstreams`), the upstream groups
    and the pools' settings (`server.upstream`)."""
    upstreams = config.upstreams if config is not None else {}
    groups = config.upstreamGroups if config is not None else {}
    settings = config.server.upstream if config is not None else UpstreamSettings()
    integration = route.integration
    assert integration is not None
    where = f"{integration.path}.uri"
    uri = substitute_stage_variables(integration.uri, stage, where, problems, variables)
    if uri is None:
        return None
    if upstreams:
        uri = rewrite_upstream(uri, upstreams)
    if integration.requestParameters:
        uri = mapped_path_parameters(uri, integration.requestParameters)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        problems.append(Problem(where, f"not a valid URI '{uri}': {exc}"))
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(Problem(where, f"must be an absolute http:// or https:// URI; got '{uri}'"))
        return None
    if "{" in parts.netloc or "}" in parts.netloc:
        problems.append(Problem(where, "route parameters may appear only in the path and query of the URI"))
        return None
    if parts.username or parts.password:
        problems.append(Problem(where, "credentials in the URI are not supported; use a header mapping"))
        return None
    host = parts.hostname
    # An upstream group (`upstreamGroups:`) is named by the URI's host, without a port; the Host header
    # the targets see is the group's name, as nginx sends an upstream block's name.
    group = (groups or {}).get(parts.netloc) if port is None else None
    port = port or (443 if parts.scheme == "https" else 80)
    default_port = 443 if parts.scheme == "https" else 80
    host_in_header = f"[{host}]" if ":" in host else host
    host_header = host_in_header if port == default_port else f"{host_in_header}:{port}"

    path = parts.path or "/"
    route_params = {m.group(1) for m in ROUTE_PARAM.finditer(route.template)}
    try:
        template = Template(path)
    except ValueError as exc:
        problems.append(Problem(where, f"bad placeholder in the URI path: {exc}"))
        return None
    unknown = [n for n in template.names if n not in route_params]
    if unknown:
        problems.append(Problem(where, f"the URI uses {', '.join('{' + n + '}' for n in unknown)}, "
                                f"which the route '{route.key}' does not define"))
        return None
    if "{" in parts.query:
        problems.append(Problem(where, "route parameters in the URI query are not supported yet"))
        return None
    pool = _pool_for(pools, parts.scheme, host, port, integration.connectTimeoutInMillis / 1000, group, settings)
    return HttpProxyPlan(
        pool=pool,
        host_header=host_header,
        path_template=template if template.names else None,
        static_path=path,
        uri_query=parts.query,
        timeout=integration.timeoutInMillis / 1000,
        uri=uri,
        method=integration.httpMethod if integration.httpMethod not in (None, "ANY", route.method) else None,
    )
