"""The admin API's key and usage endpoints (served by server.AdminHandler in the main process).

    GET    /keys                                   list keys (never values)
    POST   /keys        {name, usagePlans, value?, enabled?}   create; the value is in this answer only
    POST   /keys/{idOrName}/enable | /disable
    DELETE /keys/{idOrName}
    GET    /usage?keyId=&startDate=&endDate=[&usagePlanId=]   AWS GetUsage (one answer per plan)
    PATCH  /usage       {keyId, usagePlanId, remaining}        AWS UpdateUsage (replace /remaining)
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from .persist import MainState
from .service import UsageError, UsageService

_services: dict[int, UsageService] = {}
_lock = threading.Lock()


def _service(state: MainState) -> UsageService:
    setup = state.get_setup()
    if setup is None:
        raise UsageError("this gateway's config has no usage plans, keys or throttles", 404)
    with _lock:
        service = _services.get(id(setup))
        if service is None or service.setup is not setup:
            service = UsageService.open(setup, state.persister)
            _services.clear()
            _services[id(setup)] = service
        return service


def handles(path: str) -> bool:
    return path == "/keys" or path.startswith("/keys/") or path == "/usage"


def handle(state: MainState | None, method: str, path: str, query: str, body: bytes) -> tuple[int, bytes]:
    try:
        if state is None:
            raise UsageError("this gateway's config has no usage plans, keys or throttles", 404)
        result = _dispatch(_service(state), method, path, parse_qs(query), body)
        status, payload = result if isinstance(result, tuple) else (200, result)
        return status, orjson.dumps(payload)
    except UsageError as exc:
        return exc.status, orjson.dumps({"message": str(exc)})
    except (ValueError, TypeError, KeyError) as exc:
        return 400, orjson.dumps({"message": f"bad request: {exc}"})


def _dispatch(service: UsageService, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Any:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[0] == "keys":
        if len(parts) == 1 and method == "GET":
            return {"items": [r.public() for r in service.list_keys()]}
        if len(parts) == 1 and method == "POST":
            spec = orjson.loads(body or b"{}")
            record, value = service.create_key(str(spec["name"]), [str(p) for p in spec.get("usagePlans", [])],
                                               spec.get("value"), bool(spec.get("enabled", True)))
            return 201, {**record.public(), "value": value}
        if len(parts) == 2 and method == "GET":
            return service.find_key(parts[1]).public()
        if len(parts) == 2 and method == "DELETE":
            return service.delete_key(parts[1]).public()
        if len(parts) == 3 and method == "POST" and parts[2] in ("enable", "disable"):
            return service.set_enabled(parts[1], parts[2] == "enable").public()
    elif parts[0] == "usage":
        if method == "GET":
            def one(name: str) -> str | None:
                values = query.get(name)
                return values[0] if values else None

            key, start, end = one("keyId"), one("startDate"), one("endDate")
            if not (key and start and end):
                raise UsageError("keyId, startDate and endDate are required")
            return {"items": service.get_usage(key, start, end, one("usagePlanId"))}
        if method in ("PATCH", "POST"):
            spec = orjson.loads(body or b"{}")
            return service.update_usage(str(spec["keyId"]), str(spec["usagePlanId"]), int(spec["remaining"]))
    raise UsageError(f"no {method} {path}", 404)
