"""Canary releases changed at run time: AWS's semantics (reference/aws.md c.12).

    set       the stage's canary: deployment, percentTraffic, stageVariableOverrides, useStageCache
              (given fields replace the current ones)
    promote   the stage's deployment becomes the canary's; the canary's stage variable overrides
              are copied into the stage's variables (unless --keep-variables); percentTraffic 0.
              The canary settings stay, as in AWS (disable them with rollback)
    rollback  the canary is removed: every request goes to the stage's own deployment
    reset     the stored change is dropped: the stage is again what the config file says

Stored changes win over the config file (an edit of the stage's deployment, variables or canary in
the file does not apply while one is stored): loading warns about each, `describe` marks such stages
(`storedState`: the fields that come from the store), and `reset` gives the file back its say.

A change is validated by compiling the whole config with it, and refused with the problems when
it does not compile; it is stored (fastgw/state/canary.py) and made live in every worker
(fastgw/runtime.py install).
"""

from __future__ import annotations

import logging
from typing import Any

from .compile import load_plan
from .config.overlay import apply_changes
from .openapi.source import expand
from .state.canary import open_store
from .state.redisconn import ERRORS

log = logging.getLogger("fastgw.deployments")


CANARY_FIELDS = ("deployment", "percentTraffic", "stageVariableOverrides", "useStageCache")


class CanaryError(Exception):
    def __init__(self, message: str, status: int = 400, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


def _stage_spec(data: Any, api: str, stage: str) -> dict[str, Any]:
    for entry in data.get("apis") or []:
        if isinstance(entry, dict) and entry.get("name") == api:
            stages = entry.get("stages") or {}
            if stage not in stages:
                raise CanaryError(f"API '{api}' has no stage '{stage}' (stages: {', '.join(stages)})", 404)
            return dict(stages[stage] or {})
    raise CanaryError(f"no API named '{api}'", 404)


def next_change(current: dict[str, Any], spec: dict[str, Any], op: str, fields: dict[str, Any],
                copy_variables: bool = True) -> dict[str, Any] | None:
    """The stored change after `op` on a stage whose effective settings are `spec`; None: no change left."""
    change = dict(current)
    canary = spec.get("canary")
    if op == "set":
        merged = dict(canary or {})
        for key, value in fields.items():
            if key not in CANARY_FIELDS:
                raise CanaryError(f"unknown canary field '{key}' (one of {', '.join(CANARY_FIELDS)})")
            if value is not None:
                merged[key] = value
        merged.setdefault("percentTraffic", 0.0)
        change["canary"] = merged
    elif op == "promote":
        if not canary:
            raise CanaryError("the stage has no canary to promote", 409)
        change["deployment"] = canary.get("deployment") or "current"
        if copy_variables and canary.get("stageVariableOverrides"):
            change["variables"] = {**(spec.get("variables") or {}), **canary["stageVariableOverrides"]}
        change["canary"] = {**canary, "percentTraffic": 0.0}
    elif op == "rollback":
        change["canary"] = None
    else:
        raise CanaryError(f"unknown operation '{op}' (set, promote, rollback)")
    return change


def describe(plan: Any, changes: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every stage's deployment and canary, as `GET /canary` and `fastgw canary show` print them;
    `changes`: the stored ones (a stage they change gets `storedState`: the fields they set)."""
    out = []
    for stage in plan.stages:
        if stage.is_canary:
            continue
        entry: dict[str, Any] = {"api": stage.api.name, "stage": stage.name, "deployment": stage.deployment,
                                 "variables": stage.variables}
        if stage.canary is not None:
            entry["canary"] = {"deployment": stage.canary.deployment, "percentTraffic": stage.canary_percent,
                               "variables": stage.canary.variables}
        change = (changes or {}).get((stage.api.name, stage.name))
        if change:
            entry["storedState"] = sorted(change)
        out.append(entry)
    return out


def change_canary(config_path: str, options: Any, api: str, stage: str, op: str, fields: dict[str, Any],
                  copy_variables: bool = True) -> Any:
    """Validate and store one canary change; returns the plan compiled with it (ConfigError -> CanaryError)."""
    from .config.loader import ConfigError, load_document
    expanded = expand(load_document(config_path), options)
    data = expanded.data
    if not isinstance(data, dict) or "apis" not in data:
        raise CanaryError("canaries need a native config (an OpenAPI document has one deployment)")
    store = open_store(data, expanded.source)
    assert store is not None
    try:
        changes = store.changes()
        effective = apply_changes(data, changes)
        spec = _stage_spec(effective, api, stage)
        change = next_change(changes.get((api, stage), {}), spec, op, fields, copy_variables)
        trial = dict(changes)
        trial[(api, stage)] = change
        expanded.data = apply_changes(data, trial)
        expanded.overlaid = True
        try:
            plan = load_plan(expanded)
        except ConfigError as exc:
            raise CanaryError("the change does not compile", 400, [str(p) for p in exc.problems]) from None
        store.put(api, stage, change)
        return plan
    except ERRORS as exc:
        raise CanaryError(f"the canary changes are kept in Redis, which did not answer: {exc}", 503) from None
    finally:
        store.close()




def stored_changes(config_path: str, options: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The canary changes stored for a config (none when it has no state yet)."""
    from .config.loader import load_document
    expanded = expand(load_document(config_path), options)
    store = open_store(expanded.data, expanded.source, create=False)
    if store is None:
        return {}
    try:
        return store.changes()
    except ERRORS as exc:
        log.warning("canary: the stored changes are kept in Redis, which did not answer: %s", exc)
        return {}
    finally:
        store.close()


def reset_canary(config_path: str, options: Any, api: str | None, stage: str | None) -> tuple[Any, list[str]]:
    """Drop the stored change of one API stage (api and stage None: every one), after checking that the
    config compiles without it; returns (the plan compiled from the file and what is left stored, the
    stages reset as "API/STAGE")."""
    from .config.loader import ConfigError, load_document
    expanded = expand(load_document(config_path), options)
    data = expanded.data
    store = open_store(data, expanded.source, create=False) if isinstance(data, dict) else None
    try:
        changes = store.changes() if store is not None else {}
    except ERRORS as exc:
        if store is not None:
            store.close()
        raise CanaryError(f"the canary changes are kept in Redis, which did not answer: {exc}", 503) from None
    try:
        if api is None:
            targets = list(changes)
        elif (api, stage) in changes:
            targets = [(api, stage)]
        else:
            stored = ", ".join(f"{a}/{s}" for a, s in changes) or "none"
            raise CanaryError(f"no stored canary state for {api}/{stage} (stored: {stored})", 404)
        left = {key: change for key, change in changes.items() if key not in targets}
        expanded.data = apply_changes(data, left)
        expanded.overlaid = True
        try:
            plan = load_plan(expanded)
        except ConfigError as exc:
            raise CanaryError("the config does not compile without the stored state", 400,
                              [str(p) for p in exc.problems]) from None
        if store is not None:
            store.drop(targets)
        for a, s in targets:
            log.warning("canary reset on %s/%s: the stored state is dropped; the config file's stage applies", a, s)
        return plan, [f"{a}/{s}" for a, s in targets]
    except ERRORS as exc:
        raise CanaryError(f"the canary changes are kept in Redis, which did not answer: {exc}", 503) from None
    finally:
        if store is not None:
            store.close()
