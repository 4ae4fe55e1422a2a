"""The admin API's key and usage endpoints (AWS's API key and usage-plan calls, on this host's state).

    GET    /keys                                   list keys (never values)
    POST   /keys        {name, usagePlans?, value?, enabled?}  create; the value is in this answer only
    GET    /keys/{idOrName}
    POST   /keys/{idOrName}/enable | /disable
    DELETE /keys/{idOrName}
    GET    /usage?keyId=&startDate=&endDate=[&usagePlanId=]   AWS GetUsage (one answer per plan)
    PATCH  /usage       {keyId, usagePlanId, remaining}        AWS UpdateUsage (replace /remaining)

Bodies and query strings are checked by the admin API's readers (fastgw/admin/http.py): a missing,
mistyped or unknown field is a 400 naming it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..policies.usage import persist
from ..policies.usage.service import UsageError, UsageService
from .http import BOOLEAN, INTEGER, STRING, STRINGS, Endpoint, Request

_services: dict[int, UsageService] = {}
_lock = threading.Lock()


def service() -> UsageService:
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
            result = handler(service(), request)
        except UsageError as exc:
            return exc.status, {"message": str(exc)}
        return result if isinstance(result, tuple) else (200, result)

    return endpoint


def list_keys(service: UsageService, request: Request) -> Any:
    return {"items": [r.public() for r in service.list_keys()]}


def create_key(service: UsageService, request: Request) -> Any:
    spec = request.json_body(required={"name": STRING},
                             optional={"usagePlans": STRINGS, "value": STRING, "enabled": BOOLEAN})
    record, value = service.create_key(spec["name"], spec.get("usagePlans", []), spec.get("value"),
                                       spec.get("enabled", True))
    return 201, {**record.public(), "value": value}


def get_key(service: UsageService, request: Request) -> Any:
    return service.find_key(request.parts[1]).public()


def delete_key(service: UsageService, request: Request) -> Any:
    return service.delete_key(request.parts[1]).public()


def enable_key(service: UsageService, request: Request) -> Any:
    return service.set_enabled(request.parts[1], request.parts[2] == "enable").public()


def get_usage(service: UsageService, request: Request) -> Any:
    args = request.args(("keyId", "startDate", "endDate"), ("usagePlanId",))
    return {"items": service.get_usage(args["keyId"], args["startDate"], args["endDate"], args["usagePlanId"])}


def update_usage(service: UsageService, request: Request) -> Any:
    spec = request.json_body(required={"keyId": STRING, "usagePlanId": STRING, "remaining": INTEGER})
    return service.update_usage(spec["keyId"], spec["usagePlanId"], spec["remaining"])


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
