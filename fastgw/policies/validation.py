"""Request validation, as AWS API Gateway's REST API request validators do it.

A route's validator (`requestValidator` on the route, else the API's default; an OpenAPI document's
x-amazon-apigateway-request-validator(s)) says what to check:

    parameters  every `requestParameters` entry marked true (method.request.querystring|header|path.NAME)
                must be present and not blank, else 400 BAD_REQUEST_PARAMETERS
                {"message": "Missing required request parameters: [a, b]"} (names sorted by their key,
                as AWS lists them: headers, then path, then query string)
    body        the body must match the JSON Schema (draft 4) model of its Content-Type (a missing
                Content-Type is application/json; `$default` is the model for any other type; no model
                for the type: no check), else 400 BAD_REQUEST_BODY {"message": "Invalid request body"},
                the details in $context.error.validationErrorString

Models are compiled once, when the config is loaded, with fastjsonschema (Python code generated from
the schema); a model that is not valid draft-4 JSON Schema is a config problem at its place in the
file. A route without a validator compiles to None: the pipeline pays one `if` for it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import fastjsonschema
import orjson

from ..config.loader import Problem
from ..config.model import BUILTIN_VALIDATORS
from ..config.model import METHOD_REQUEST_PARAMETER as PARAMETER
from ..errors import ErrorMessage, GatewayError

DRAFT4 = "http://json-schema.org/draft-04/schema#"
# Models refer to each other through this base (a name that never resolves on the network); the
# resolver below answers it from the API's models and refuses everything else.
MODEL_BASE = "https://models.fastgw.invalid/"
AWS_MODEL_URL = re.compile(r"^https?://apigateway\.[^/]*amazonaws\.com/restapis/[^/]+/models/([^/#]+)$")
DEFAULT_MAX_VALIDATED_BODY = 1 << 20

# The JSON Schema draft-04 meta-schema (json-schema.org), which every model must satisfy.
DRAFT4_META: dict[str, Any] = {
    "$schema": DRAFT4,
    "definitions": {
        "schemaArray": {"type": "array", "minItems": 1, "items": {"$ref": "#"}},
        "positiveInteger": {"type": "integer", "minimum": 0},
        "positiveIntegerDefault0": {"allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]},
        "simpleTypes": {"enum": ["array", "boolean", "integer", "null", "number", "object", "string"]},
        "stringArray": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
    },
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "$schema": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "default": {},
        "multipleOf": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        "maximum": {"type": "number"},
        "exclusiveMaximum": {"type": "boolean", "default": False},
        "minimum": {"type": "number"},
        "exclusiveMinimum": {"type": "boolean", "default": False},
        "maxLength": {"$ref": "#/definitions/positiveInteger"},
        "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "pattern": {"type": "string"},
        "additionalItems": {"anyOf": [{"type": "boolean"}, {"$ref": "#"}], "default": {}},
        "items": {"anyOf": [{"$ref": "#"}, {"$ref": "#/definitions/schemaArray"}], "default": {}},
        "maxItems": {"$ref": "#/definitions/positiveInteger"},
        "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "uniqueItems": {"type": "boolean", "default": False},
        "maxProperties": {"$ref": "#/definitions/positiveInteger"},
        "minProperties": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "required": {"$ref": "#/definitions/stringArray"},
        "additionalProperties": {"anyOf": [{"type": "boolean"}, {"$ref": "#"}], "default": {}},
        "definitions": {"type": "object", "additionalProperties": {"$ref": "#"}, "default": {}},
        "properties": {"type": "object", "additionalProperties": {"$ref": "#"}, "default": {}},
        "patternProperties": {"type": "object", "additionalProperties": {"$ref": "#"}, "default": {}},
        "dependencies": {"type": "object", "additionalProperties": {
            "anyOf": [{"$ref": "#"}, {"$ref": "#/definitions/stringArray"}]}},
        "enum": {"type": "array", "minItems": 1, "uniqueItems": True},
        "type": {"anyOf": [
            {"$ref": "#/definitions/simpleTypes"},
            {"type": "array", "items": {"$ref": "#/definitions/simpleTypes"}, "minItems": 1, "uniqueItems": True},
        ]},
        "format": {"type": "string"},
        "allOf": {"$ref": "#/definitions/schemaArray"},
        "anyOf": {"$ref": "#/definitions/schemaArray"},
        "oneOf": {"$ref": "#/definitions/schemaArray"},
        "not": {"$ref": "#"},
    },
    "dependencies": {"exclusiveMaximum": ["maximum"], "exclusiveMinimum": ["minimum"]},
    "default": {},
}
_meta_check: Callable[[Any], Any] | None = None


def _compile(schema: dict[str, Any], handler: Callable[[str], Any] | None = None) -> Callable[[Any], Any]:
    """fastjsonschema, draft 4 (the `$schema` of the document), no defaults written into the data,
    `format` not checked (AWS does not check it), and no reference ever fetched from the network."""
    handlers = {"https": handler or _refuse, "http": _refuse, "file": _refuse, "ftp": _refuse}
    return fastjsonschema.compile(schema, handlers=handlers, use_default=False, use_formats=False)


def _refuse(uri: str) -> Any:
    raise ValueError(f"$ref '{uri}' is not a model of this API")


def meta_check(schema: Any) -> str | None:
    """None when `schema` is a valid draft-4 JSON Schema; else where and why it is not."""
    global _meta_check
    if _meta_check is None:
        _meta_check = _compile(DRAFT4_META)
    try:
        _meta_check(schema)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = exc.name[4:].lstrip(".") if exc.name and exc.name.startswith("data") else ""
        return f"{where + ': ' if where else ''}{exc.message.replace(exc.name or '', 'value', 1)}"
    return None


# -- the compiled form ----------------------------------------------------------------------------------
@dataclass(slots=True)
class BodyModel:
    name: str  # the model's name, or "" for a schema written in the route
    check: Callable[[Any], Any]  # raises fastjsonschema.JsonSchemaValueException


@dataclass(slots=True, eq=False)
class RequestValidator:
    """The checks of one route. `query` / `headers`: required names; `absent`: required path parameters
    the route's path does not define (always missing, as in AWS); `order`: every required name with
    its key, in AWS's order. `models`: media type (lower case, or "$default") -> model; empty when the
    body is not validated."""

    query: frozenset[str]
    headers: frozenset[str]
    absent: frozenset[str]
    order: tuple[tuple[str, str], ...]  # (kind, name), sorted by "method.request.KIND.NAME"
    models: dict[str, BodyModel]
    max_body: int

    async def check(self, gateway: Any, down: Any, head: Any) -> Any:
        """Raise the AWS error for a request that fails; return the downstream to use from here on
        (one that replays the body when the body was read for the check)."""
        if self.order:
            self.check_parameters(down.query, down.headers)
        if not self.models:
            return down
        model = self.model_for(down.headers)
        if model is None:
            return down
        body = await gateway.read_whole_body(down, head, self.max_body)
        check_body(model, body)
        return ReplayedBody(down, body)

    def check_parameters(self, query: str, headers: list[tuple[str, str]]) -> None:
        present_query: set[str] = set()
        if self.query and query:
            for pair in query.split("&"):
                name, _, value = pair.partition("=")
                if value and unquote_plus(value).strip():
                    present_query.add(unquote_plus(name))
        present_headers = {name.lower() for name, value in headers if value.strip()} if self.headers else set()
        missing = [name for kind, name in self.order
                   if (kind == "querystring" and name not in present_query)
                   or (kind == "header" and name.lower() not in present_headers)
                   or (kind == "path" and name in self.absent)]
        if missing:
            raise GatewayError("BAD_REQUEST_PARAMETERS", f"Missing required request parameters: [{', '.join(missing)}]")

    def model_for(self, headers: list[tuple[str, str]]) -> BodyModel | None:
        media = "application/json"  # AWS's reading of a request without Content-Type
        for name, value in headers:
            if name.lower() == "content-type":
                media = value.split(";", 1)[0].strip().lower() or media
                break
        models = self.models
        return models.get(media) or models.get("$default")


class ReplayedBody:
    """The client side of a request whose body was already read: the integrations get it again."""

    __slots__ = ("_down", "_body")

    def __init__(self, down: Any, body: bytes):
        self._down = down
        self._body = body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._down, name)

    async def read_body(self) -> bytes:
        return self._body

    def body_chunks(self) -> Any:
        return _once(self._body)


async def _once(body: bytes) -> Any:
    if body:
        yield body


def check_body(model: BodyModel, body: bytes) -> None:
    """Raise BAD_REQUEST_BODY unless `body` is JSON that `model` accepts. An empty body is read as {}
    (as LocalStack does; AWS answers 400 for an empty body against a model with required fields)."""
    try:
        # orjson refuses nesting deeper than 1024 at once (RELIABILITY.md SZ-07).
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"Invalid JSON in the request body: {exc}") from None
    try:
        model.check(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _invalid(describe(exc)) from None
    except RecursionError:
        raise _invalid("instance is nested too deeply to validate") from None


def _invalid(detail: str) -> GatewayError:
    return GatewayError("BAD_REQUEST_BODY", ErrorMessage("Invalid request body", f"[{detail}]"))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def describe(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """A validation failure in the words of the validator AWS runs (json-schema-validator), which is
    what AWS puts in $context.error.validationErrorString: `object has missing required properties
    (["name"])`. fastjsonschema stops at the first failure, so one message is given."""
    rule, value, limit, schema = exc.rule, exc.value, exc.rule_definition, exc.definition or {}
    try:
        if rule == "required" and isinstance(value, dict):
            return f"object has missing required properties ({_json(sorted(k for k in limit if k not in value))})"
        if rule == "type":
            allowed = limit if isinstance(limit, list) else [limit]
            return (f"instance type ({_type_name(value)}) does not match any allowed primitive type "
                    f"(allowed: {_json(sorted(allowed))})")
        if rule == "enum":
            return f"instance value ({_json(value)}) not found in enum (possible values: {_json(limit)})"
        if rule == "minLength":
            return f"string {_json(value)} is too short (length: {len(value)}, required minimum: {limit})"
        if rule == "maxLength":
            return f"string {_json(value)} is too long (length: {len(value)}, maximum allowed: {limit})"
        if rule == "minimum":
            if schema.get("exclusiveMinimum") is True:
                return f"numeric instance is not strictly greater than the required minimum {limit}"
            return f"numeric instance is lower than the required minimum (minimum: {limit}, found: {value})"
        if rule == "maximum":
            if schema.get("exclusiveMaximum") is True:
                return f"numeric instance is not strictly lower than the required maximum {limit}"
            return f"numeric instance is greater than the required maximum (maximum: {limit}, found: {value})"
        if rule == "pattern":
            return f"ECMA 262 regex {_json(limit)} does not match input string {_json(value)}"
        if rule == "additionalProperties" and isinstance(value, dict):
            known = set(schema.get("properties") or {})
            patterns = [re.compile(p) for p in schema.get("patternProperties") or {}]
            extra = sorted(k for k in value if k not in known and not any(p.search(k) for p in patterns))
            return f"object instance has properties which are not allowed by the schema: {_json(extra)}"
        if rule == "minItems":
            return (f"array is too short: must have at least {limit} elements but instance has {len(value)} "
                    "elements")
        if rule == "maxItems":
            return f"array is too long: must have at most {limit} elements but instance has {len(value)} elements"
        if rule == "uniqueItems":
            return "array must not contain duplicate elements"
        if rule == "multipleOf":
            return f"remainder of division is not zero ({value} / {limit})"
        if rule == "minProperties":
            return f"object has too few properties (found {len(value)} but schema requires at least {limit})"
        if rule == "maxProperties":
            return f"object has too many properties (found {len(value)} but schema requires at most {limit})"
        if rule == "oneOf":
            return f"instance failed to match exactly one schema (of {len(limit)})"
        if rule == "anyOf":
            return f"instance failed to match at least one required schema among {len(limit)}"
        if rule == "not":
            return "instance matched a schema which it should not have"
        if rule == "additionalItems":
            return "array instance has more elements than the schema allows"
        if rule == "dependencies":
            return "object has missing property dependencies"
    except (TypeError, ValueError):
        pass
    return exc.message


# -- compiling -------------------------------------------------------------------------------------------
class _ApiModels:
    """One API's models and validators, each compiled (and checked) once."""

    def __init__(self, api: Any, problems: list[Problem]):
        self.api = api
        self.problems = problems
        self.models: dict[str, Any] = api.aws.models if isinstance(api.aws.models, dict) else {}
        self.models_path = f"{api.path}.models"
        self.compiled: dict[str, BodyModel | None] = {}
        self.prepared: dict[str, dict[str, Any] | None] = {}
        self.validators = self._validators()

    def _validators(self) -> dict[str, tuple[bool, bool]]:
        found: dict[str, tuple[bool, bool]] = {}
        where = f"{self.api.path}.requestValidators"
        for name, spec in (self.api.aws.requestValidators or {}).items():
            at = f"{where}.{name}"
            if not isinstance(spec, dict):
                self.problems.append(Problem(at, "must be a mapping {validateRequestBody, validateRequestParameters}"))
                continue
            flags = []
            for key in ("validateRequestBody", "validateRequestParameters"):
                value = spec.get(key, False)
                if isinstance(value, str) and value.lower() in ("true", "false"):
                    value = value.lower() == "true"
                if not isinstance(value, bool):
                    self.problems.append(Problem(f"{at}.{key}", "must be true or false"))
                    value = False
                flags.append(value)
            for key in spec:
                if key not in ("validateRequestBody", "validateRequestParameters", "name"):
                    self.problems.append(Problem(f"{at}.{key}", "unknown field (validateRequestBody, "
                                                 "validateRequestParameters)"))
            found[str(name)] = (flags[0], flags[1])
        return found

    def validator(self, name: str) -> tuple[bool, bool] | None:
        return self.validators.get(name) or BUILTIN_VALIDATORS.get(name)

    def known_validators(self) -> str:
        return ", ".join([*self.validators, "body", "params", "all", "none"])

    # models
    def model(self, name: str, where: str) -> BodyModel | None:
        if name not in self.models:
            known = ", ".join(self.models) or "none"
            self.problems.append(Problem(where, f"no model '{name}' in the API's models (known: {known})"))
            return None
        if name not in self.compiled:
            self.compiled[name] = None
            prepared = self.prepare(name)
            if prepared is not None:
                self.compiled[name] = self.compile(prepared, name, f"{self.models_path}.{name}")
        return self.compiled[name]

    def prepare(self, name: str) -> dict[str, Any] | None:
        """A model ready to compile: checked against the meta-schema, references rewritten."""
        if name in self.prepared:
            return self.prepared[name]
        self.prepared[name] = None
        schema = self.models.get(name)
        where = f"{self.models_path}.{name}"
        self.prepared[name] = self.rewrite(schema, where)
        return self.prepared[name]

    def rewrite(self, schema: Any, where: str) -> dict[str, Any] | None:
        if not isinstance(schema, dict):
            self.problems.append(Problem(where, "a model is a JSON Schema (draft 4) object"))
            return None
        problem = meta_check(schema)
        if problem is not None:
            self.problems.append(Problem(where, f"not a valid JSON Schema (draft 4): {problem}"))
            return None
        local = schema.get("definitions") if isinstance(schema.get("definitions"), dict) else {}
        bad: list[str] = []

        def walk(node: Any) -> Any:
            if isinstance(node, dict):
                out = {k: walk(v) for k, v in node.items() if k != "$ref"}
                ref = node.get("$ref")
                if isinstance(ref, str):
                    out["$ref"] = self.target(ref, local, bad)
                return out
            if isinstance(node, list):
                return [walk(v) for v in node]
            return node

        rewritten = walk(copy.deepcopy(schema))
        rewritten["$schema"] = DRAFT4
        for ref in bad:
            self.problems.append(Problem(where, f"$ref '{ref}' is not supported: refer to another model as "
                                         "#/definitions/NAME, #/components/schemas/NAME or AWS's model URL"))
        return rewritten if not bad else None

    def target(self, ref: str, local: dict[str, Any], bad: list[str]) -> str:
        name = None
        if ref.startswith("#/components/schemas/"):
            name = ref[len("#/components/schemas/"):]
        elif ref.startswith("#/definitions/"):
            rest = ref[len("#/definitions/"):]
            if rest.split("/", 1)[0].replace("~1", "/").replace("~0", "~") in local:
                return ref  # the schema's own definitions
            name = rest
        elif ref.startswith("#"):
            return ref
        else:
            match = AWS_MODEL_URL.match(ref)
            if match is not None:
                name = match.group(1)
        if name is None or "/" in name:
            bad.append(ref)
            return ref
        return MODEL_BASE + unquote_plus(name.replace("~1", "/").replace("~0", "~")).replace(" ", "%20")

    def resolve(self, uri: str) -> Any:
        if not uri.startswith(MODEL_BASE):
            return _refuse(uri)
        name = uri[len(MODEL_BASE):].split("#", 1)[0].replace("%20", " ")
        if name not in self.models:
            raise ValueError(f"the API has no model '{name}'")
        prepared = self.prepare(name)
        if prepared is None:
            raise ValueError(f"model '{name}' is not valid")
        return prepared

    def compile(self, prepared: dict[str, Any], name: str, where: str) -> BodyModel | None:
        try:
            return BodyModel(name, _compile(prepared, self.resolve))
        except Exception as exc:  # noqa: BLE001 - fastjsonschema reports bad schemas with several types
            self.problems.append(Problem(where, f"cannot compile the model: {exc}"))
            return None

    def inline(self, schema: Any, where: str) -> BodyModel | None:
        prepared = self.rewrite(schema, where)
        return self.compile(prepared, "", where) if prepared is not None else None


def compile_route_validator(api: Any, models: _ApiModels, route: Any, max_body: int,
                            problems: list[Problem]) -> RequestValidator | None:
    """The validator of one route of the config (None: nothing to check)."""
    name = route.requestValidator
    where = f"{route.path}.requestValidator"
    if name is None:
        name = api.aws.requestValidator
        where = f"{api.path}.requestValidator"
    if api.type != "REST":
        if route.requestValidator is not None or route.requestModels or route.requestParameters:
            problems.append(Problem(route.path, "request validation (requestValidator, requestParameters, "
                                    "requestModels) exists only in REST APIs, as in AWS"))
        return None
    if name is None:
        return None
    flags = models.validator(name)
    if flags is None:
        problems.append(Problem(where, f"no request validator '{name}' (known: {models.known_validators()})"))
        return None
    validate_body, validate_params = flags
    order: list[tuple[str, str, str]] = []
    if validate_params:
        for key, required in route.requestParameters.items():
            match = PARAMETER.match(key)
            if required and match is not None:
                order.append((key, match.group(1), match.group(2)))
    order.sort()
    compiled: dict[str, BodyModel] = {}
    if validate_body:
        for media, spec in route.requestModels.items():
            at = f"{route.path}.requestModels.{media}"
            model = models.model(spec, at) if isinstance(spec, str) else models.inline(spec, at)
            if model is not None:
                compiled[media.lower()] = model
    if not order and not compiled:
        return None
    template_params = set(re.findall(r"\{([^{}+]+)\+?\}", route.template or ""))
    return RequestValidator(
        query=frozenset(n for _, kind, n in order if kind == "querystring"),
        headers=frozenset(n.lower() for _, kind, n in order if kind == "header"),
        absent=frozenset(n for _, kind, n in order if kind == "path" and n not in template_params),
        order=tuple((kind, n) for _, kind, n in order),
        models=compiled,
        max_body=max_body,
    )


def compile_validation(config: Any, stages: list[Any]) -> list[Problem]:
    """Compile every route's validator (reporting problems once per route of the config) and give each
    compiled route its own. Models of a native config are all checked; an imported document's only
    when a validating route uses them (OpenAPI schemas need not be draft 4 otherwise)."""
    problems: list[Problem] = []
    max_body = getattr(config.server.limits, "maxValidatedBodyBytes", DEFAULT_MAX_VALIDATED_BODY)
    by_route: dict[int, RequestValidator | None] = {}
    for api in config.apis:
        models = _ApiModels(api, problems)
        if api.aws.source is None and api.type == "REST":
            for name in models.models:
                models.model(name, f"{models.models_path}.{name}")
        routes = list(api.routes)
        for deployment in api.deployments.values():
            routes.extend(deployment.routes)
        for route in routes:
            by_route[id(route)] = compile_route_validator(api, models, route, max_body, problems)
    for stage in stages:
        for route in stage.routes:
            if route.model is not None:
                route.validator = by_route.get(id(route.model))
    return problems
