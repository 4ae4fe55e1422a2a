"""The admin API's canary endpoints (fastgw/canary.py makes the change; every worker follows it).

    GET  /canary                                 every stage's deployment and canary
    POST /canary/{api}/{stage}/set       {percentTraffic?, deployment?, stageVariableOverrides?,
                                          useStageCache?, copyVariables?}
    POST /canary/{api}/{stage}/promote   {copyVariables?}   (or no body)
    POST /canary/{api}/{stage}/rollback  {copyVariables?}   (or no body)
    POST /canary/{api}/{stage}/reset     drop the stage's stored change: the config file's stage applies
    POST /canary/reset                   the same for every stage with a stored change

A body that is not a JSON object, or has a mistyped or unknown field, is a 400 naming it
(fastgw/admin/http.py's body reader).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from .. import runtime
from ..canary import CanaryError, change_canary, describe, reset_canary, stored_changes
from ..openapi import source
from .http import BOOLEAN, NUMBER, STRING, STRING_MAP, BadRequest, Endpoint, Request

log = logging.getLogger("fastgw.deployments")


SET_FIELDS = {"percentTraffic": NUMBER, "deployment": STRING, "stageVariableOverrides": STRING_MAP,
              "useStageCache": BOOLEAN, "copyVariables": BOOLEAN}


def show(request: Request) -> tuple[int, Any]:
    assert runtime.RUNTIME is not None
    changes = stored_changes(runtime.RUNTIME.config_path, source.DEFAULT_OPTIONS)
    return 200, {"items": describe(runtime.RUNTIME.plan, changes)}


def change(request: Request) -> tuple[int, Any]:
    current = runtime.RUNTIME
    assert current is not None
    _, api, stage, op = request.parts
    if op not in ("set", "promote", "rollback"):
        return 404, {"message": f"unknown canary operation '{op}' (set, promote, rollback)"}
    fields = SET_FIELDS if op == "set" else {"copyVariables": BOOLEAN}
    spec = request.json_body(optional=fields)
    percent = spec.get("percentTraffic")
    if percent is not None and not 0.0 <= percent <= 100.0:
        raise BadRequest(f"field 'percentTraffic' must be between 0.0 and 100.0, not {percent}", "percentTraffic")
    copy_variables = spec.pop("copyVariables", True)
    try:
        plan = change_canary(current.config_path, source.DEFAULT_OPTIONS, api, stage, op, spec, copy_variables)
    except CanaryError as exc:
        return exc.status, {"message": str(exc), "problems": exc.problems}
    generation, workers = runtime.install(plan)
    entry = next((e for e in describe(plan) if (e["api"], e["stage"]) == (api, stage)), None)
    log.warning("canary %s on %s/%s: now %s", op, api, stage, orjson.dumps(entry).decode())
    return 200, {"stage": entry, "generation": generation, "workers": workers}


def reset(request: Request) -> tuple[int, Any]:
    """POST /canary/{api}/{stage}/reset or POST /canary/reset (every stage)."""
    current = runtime.RUNTIME
    assert current is not None
    api, stage = (request.parts[1], request.parts[2]) if len(request.parts) == 4 else (None, None)
    try:
        plan, stages = reset_canary(current.config_path, source.DEFAULT_OPTIONS, api, stage)
    except CanaryError as exc:
        return exc.status, {"message": str(exc), "problems": exc.problems}
    generation, workers = runtime.install(plan)
    changes = stored_changes(current.config_path, source.DEFAULT_OPTIONS)
    items = describe(plan, changes)
    entry = next((e for e in items if (e["api"], e["stage"]) == (api, stage)), None)
    return 200, {"reset": stages, "stage": entry, "items": items, "generation": generation, "workers": workers}


ENDPOINTS = (
    Endpoint("GET", "/canary", show),
    Endpoint("POST", "/canary/reset", reset),
    Endpoint("POST", "/canary/*/*/reset", reset),
    Endpoint("POST", "/canary/*/*/*", change),
)
