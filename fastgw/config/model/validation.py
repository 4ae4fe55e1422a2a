"""Request validation (issue 7): a route's method request settings, read into its Route."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .reader import _join, _Reader

if TYPE_CHECKING:
    from .api import Route

ROUTE_VALIDATION = ("requestValidator", "requestParameters", "requestModels")
METHOD_REQUEST_PARAMETER = re.compile(r"^method\.request\.(querystring|header|path)\.([^\s.][^\s]*)$")
MEDIA_TYPE = re.compile(r"^(\$default|[\w.+-]+/[\w.+*-]+)$")
# (validate body, validate parameters) of fastgw's short names and of the AWS console's three validators.
BUILTIN_VALIDATORS: dict[str, tuple[bool, bool]] = {
    "body": (True, False),
    "params": (False, True),
    "all": (True, True),
    "none": (False, False),
    "Validate body": (True, False),
    "Validate query string parameters and headers": (False, True),
    "Validate body, query string parameters, and headers": (True, True),
}


def _read_route_validation(r: _Reader, obj: dict[str, Any], path: str, route: Route) -> None:
    """AWS's method request settings: the validator's name, the parameters (true: required) and the
    body models by media type (a model name, or a JSON Schema written in place)."""
    route.requestValidator = r.string(obj, "requestValidator", path)
    raw = obj.get("requestParameters")
    where = _join(path, "requestParameters")
    if raw is not None and not isinstance(raw, dict):
        r.error(where, 'must map "method.request.querystring|header|path.NAME" to true (required) or false')
    elif raw:
        for key, required in raw.items():
            at = _join(where, str(key))
            if not METHOD_REQUEST_PARAMETER.match(str(key)):
                r.error(at, "must be method.request.querystring.NAME, method.request.header.NAME or "
                        "method.request.path.NAME")
                continue
            if isinstance(required, str) and required.lower() in ("true", "false"):
                required = required.lower() == "true"
            if not isinstance(required, bool):
                r.error(at, "must be true (required) or false")
                continue
            route.requestParameters[str(key)] = required
    raw = obj.get("requestModels")
    where = _join(path, "requestModels")
    if raw is not None and not isinstance(raw, dict):
        r.error(where, "must map media types (application/json, $default) to a model name or a JSON Schema")
    elif raw:
        for media, model in raw.items():
            at = _join(where, str(media))
            if not MEDIA_TYPE.match(str(media)):
                r.error(at, "must be a media type like application/json, or $default")
            elif not isinstance(model, str | dict) or not model:
                r.error(at, "must be a model name (from the API's models) or a JSON Schema")
            else:
                route.requestModels[str(media)] = model
