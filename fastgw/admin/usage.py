"""The admin API's key and usage endpoints (AWS's API key and usage-plan calls, on this host's state).

    GET    /keys                                   list keys (never values)
    POST   /keys        {name, usagePlans, value?, enabled?}   create; the value is in this answer only
    GET    /keys/{idOrName}
    POST   /keys/{idOrName}/enable | /disable
    DELETE /keys/{idOrName}
    GET    /usage?keyId=&startDate=&endDate=[&usagePlanId=]   AWS GetUsage (one answer per plan)
    PATCH  /usage       {keyId, usagePlanId, remaining}        AWS UpdateUsage (replace /remaining)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson

from ..policies.usage import persist
from ..policies.usage.service import UsageError, UsageService
from .http import Endpoint, Request

_services: dict[int, UsageService] = {}
_lock = threading.Lock()


def _service() -> UsageService:
    state = persist.CURRENT
    setup = state.get_setup() if state is not None else None
    if state is None or setup is None:
        raise UsageError("this gateway's config has no usage plans, keys or throttles", 404)
    with _lock:
        service = _services.get(id(setup))
        if service is None or service.setup is not setup:
            service = UsageService.open(setup, state.persister)
            _services.clear()
            _services[id(setup)] = service
        return service


def _errors(handler: Callable[[UsageService, Request], Any]) -> Callable[[Request], tuple[int, Any]]:
    """The usage service's errors as answers."""

    def endpoint(request: Request) -> tuple[int, Any]:
        try:
            result = handler(_service(), request)
        except UsageError as exc:
            return exc.status, {"message": str(exc)}
        except (ValueError, TypeError, KeyError) as exc:
            return 400, {"message": f"bad request: {exc}"}
        return result if isinstance(result, tuple) else (200, result)

    return endpoint


def list_keys(service: UsageService, request: Request) -> Any:
    return {"items": [r.public() for r in service.list_keys()]}


def create_key(service: UsageService, request: Request) -> Any:
    spec = orjson.loads(request.body or b"{}")
    record, value = service.create_key(str(spec["name"]), [str(p) for p in spec.get("usagePlans", [])],
                                       spec.get("value"), bool(spec.get("enabled", True)))
    return 201, {**record.public(), "value": value}


def get_key(service: UsageService, request: Request) -> Any:
    return service.find_key(request.parts[1]).public()


def delete_key(service: UsageService, request: Request) -> Any:
    return service.delete_key(request.parts[1]).public()


def enable_key(service: UsageService, request: Request) -> Any:
    return service.set_enabled(request.parts[1], request.parts[2] == "enable").public()


def get_usage(service: UsageService, request: Request) -> Any:
    key, start, end = request.arg("keyId"), request.arg("startDate"), request.arg("endDate")
    if not (key and start and end):
        raise UsageError("keyId, startDate and endDate are required")
    return {"items": service.get_usage(key, start, end, request.arg("usagePlanId"))}


def update_usage(service: UsageService, request: Request) -> Any:
    spec = orjson.loads(request.body or b"{}")
    return service.update_usage(str(spec["keyId"]), str(spec["usagePlanId"]), int(spec["remaining"]))


ENDPOINTS = (
    Endpoint("GET", "/keys", _errors(list_keys)),
    Endpoint("POST", "/keys", _errors(create_key)),
    Endpoint("GET", "/keys/*", _errors(get_key)),
    Endpoint("DELETE", "/keys/*", _errors(delete_key)),
    Endpoint("POST", "/keys/*/enable", _errors(enable_key)),
    Endpoint("POST", "/keys/*/disable", _errors(enable_key)),
    Endpoint("GET", "/usage", _errors(get_usage)),
    Endpoint("PATCH", "/usage", _errors(update_usage)),
    Endpoint("POST", "/usage", _errors(update_usage)),
)
