"""The whole config document: `read_config(data)` reads every section with its module's reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..loader import Problem
from .api import Api, ApiMapping, FunctionSpec, _read_api, _read_functions, _read_mappings, _read_upstreams
from .reader import _Reader
from .server import ServerConfig, _read_server
from .upstreams import UpstreamGroup, read_upstream_groups
from .usage import (
    ApiKeyConfig,
    StateConfig,
    Throttle,
    UsagePlan,
    _read_api_keys,
    _read_state,
    _read_throttle,
    _read_usage_plans,
)


@dataclass(slots=True)
class GatewayConfig:
    server: ServerConfig
    apis: list[Api]
    apiMappings: list[ApiMapping]
    state: StateConfig = field(default_factory=lambda: StateConfig())
    throttle: Throttle | None = None  # gateway-wide (AWS's account level)
    usagePlans: list[UsagePlan] = field(default_factory=list)
    apiKeys: list[ApiKeyConfig] = field(default_factory=list)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)  # Lambda name/ARN -> Python handler
    parameters: dict[str, str] = field(default_factory=dict)  # CloudFormation values for imported documents
    upstreams: dict[str, str] = field(default_factory=dict)  # integration URI prefix -> replacement
    upstreamGroups: dict[str, UpstreamGroup] = field(default_factory=dict)  # URI host -> targets (issue 17)


def read_config(data: Any) -> tuple[GatewayConfig, list[Problem]]:
    r = _Reader()
    root = r.mapping(data, "", ("version", "server", "apis", "apiMappings", "state", "throttle", "usagePlans",
                                "apiKeys", "functions", "parameters", "upstreams", "upstreamGroups"))
    if data is None:
        r.error("", "the file is empty")
    version = root.get("version", 1)
    if version != 1:
        r.error("version", f"unsupported config format version {version!r} (this fastgw reads version 1)")
    server = _read_server(r, root.get("server"))
    apis: list[Api] = []
    raw_apis = root.get("apis")
    if not isinstance(raw_apis, list) or not raw_apis:
        if data is not None:
            r.error("apis", "must be a non-empty list of APIs")
    else:
        for i, item in enumerate(raw_apis):
            api = _read_api(r, item, f"apis[{i}]")
            if api is not None:
                apis.append(api)
    mappings = _read_mappings(r, root.get("apiMappings"))
    config = GatewayConfig(
        server, apis, mappings,
        state=_read_state(r, root.get("state")),
        throttle=_read_throttle(r, root.get("throttle"), "throttle"),
        usagePlans=_read_usage_plans(r, root.get("usagePlans")),
        apiKeys=_read_api_keys(r, root.get("apiKeys")),
        functions=_read_functions(r, root.get("functions")),
        parameters=r.string_map(root, "parameters", ""),
        upstreams=_read_upstreams(r, root, "upstreams"),
        upstreamGroups=read_upstream_groups(r, root, "upstreamGroups"),
    )
    # The config is returned even with problems, so that compiling can report its own ones too.
    return config, r.problems
