"""Run-time stage changes (canaries, promotions) laid over a native config's data, and where a
config's state directory is. Pure data: the changes themselves are stored by fastgw/state/canary.py."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("fastgw.deployments")


def resolve_state_dir(path: str, source: str) -> str:
    """A state directory as the config gives it, made absolute against the config file's folder."""
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source)), path))


def state_dir_of(data: Any, source: str) -> str:
    """The state directory of (native) config data: state.path (default .fastgw) relative to the config file."""
    path = ".fastgw"
    if isinstance(data, dict) and isinstance(data.get("state"), dict):
        path = str(data["state"].get("path") or path)
    return resolve_state_dir(path, source)


def apply_changes(data: Any, changes: dict[tuple[str, str], dict[str, Any]]) -> Any:
    """The native config data with the run-time stage changes laid over it (a copy when anything
    changes). A change for an API stage the config no longer has is ignored (and logged)."""
    if not changes or not isinstance(data, dict) or not isinstance(data.get("apis"), list):
        return data
    data = dict(data)
    data["apis"] = list(data["apis"])
    for (api_name, stage_name), change in changes.items():
        for i, api in enumerate(data["apis"]):
            if not isinstance(api, dict) or api.get("name") != api_name:
                continue
            stages = api.get("stages")
            if not isinstance(stages, dict) or stage_name not in stages:
                break
            api = data["apis"][i] = dict(api)
            api["stages"] = stages = dict(stages)
            spec = dict(stages[stage_name] or {})
            if "deployment" in change:
                spec["deployment"] = change["deployment"]
            if "variables" in change:
                spec["variables"] = change["variables"]
            if "canary" in change:
                if change["canary"] is None:
                    spec.pop("canary", None)
                else:
                    spec["canary"] = change["canary"]
            stages[stage_name] = spec
            break
        else:
            log.warning("a canary change for %s/%s is kept but the config has no such API", api_name, stage_name)
    return data


def overridden(data: Any, changes: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """What each stored change overrides of the config file's stages: for every API stage, the fields
    (deployment, variables, canary) whose stored value differs from the file's, described
    ("deployment 'v1' -> 'v2'")."""
    out: dict[tuple[str, str], list[str]] = {}
    if not changes or not isinstance(data, dict) or not isinstance(data.get("apis"), list):
        return out
    for (api_name, stage_name), change in changes.items():
        api = next((a for a in data["apis"] if isinstance(a, dict) and a.get("name") == api_name), None)
        stages = api.get("stages") if isinstance(api, dict) else None
        if not isinstance(stages, dict) or stage_name not in stages:
            continue
        spec = stages[stage_name] or {}
        found = []
        for key in ("deployment", "variables", "canary"):
            if key not in change:
                continue
            mine, stored = spec.get(key), change[key]
            if mine == stored:
                continue
            if key == "deployment":
                found.append(f"deployment '{mine}' -> '{stored}'")
            elif key == "canary" and stored is None:
                found.append("canary (removed by a rollback)")
            else:
                found.append(key)
        if found:
            out[(api_name, stage_name)] = found
    return out
