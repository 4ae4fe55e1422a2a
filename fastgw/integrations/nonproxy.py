"""REST non-proxy integrations, as AWS runs them: HTTP (`http`), Lambda non-proxy (`aws`,
FUNCTION_CUSTOM) and MOCK, with mapping templates (fastgw/vtl), parameter mappings and
integration responses (reference/aws.md c.7, c.8).

    request    the template for the request's Content-Type (application/json when there is none)
               renders the integration request body; with no template for it,
               passthroughBehavior decides: WHEN_NO_MATCH passes the body through,
               WHEN_NO_TEMPLATES passes it only when no template is defined, NEVER refuses (415).
               `requestParameters` map `integration.request.{path,querystring,header}.X` from
               `method.request.{path,querystring,header,multivalue...}.Y`, `method.request.body[.JSONPATH]`,
               `'static'`, `stageVariables.Y` or `context.Y`; a template's
               `$context.requestOverride.{header,querystring,path}.X` has the last word.
    call       HTTP: the integration's method and URI; FUNCTION_CUSTOM: the rendered body is the
               function's event (JSON), an exception is Lambda's error object
               ({errorMessage, errorType, stackTrace}); MOCK: the rendered body's `statusCode`
    response   the integration response whose selectionPattern (a Java-style full-match regex)
               matches the status code (HTTP, MOCK) or the function's errorMessage (FUNCTION_CUSTOM;
               a success takes the default), else `default`; its statusCode (none: the
               integration's), headers from its `responseParameters`
               (`method.response.header.X` <- `'static'`, `integration.response.header.Y`,
               `integration.response.body[.JSONPATH]`, `stageVariables.Y`, `context.Y`), its body from
               the response template chosen by the request's Accept header (else application/json,
               else the first), or the integration's body passed through; a template's
               `$context.responseOverride.{status,header.X}` has the last word.

Templates are compiled once with the config (a template that does not parse is a config error
with its line and column); rendering runs no parser. A render error is a 500
(API_CONFIGURATION_ERROR), as in AWS. Bodies fed to templates are capped (TEMPLATE_BODY_LIMIT, 413).

Headers follow AWS's rules (fastgw/integrations/headers.py): templates and mappings see the client's
headers without the ones AWS drops; a header mapping AWS refuses answers 500 (awsCompat) or is a
config error (without it); response headers are remapped to x-amzn-Remapped-<Name> or dropped as AWS
does (awsCompat), framing fields are never sent from a mapping, and invalid values are dropped.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import orjson

from ..codings import decode
from ..config.loader import Problem
from ..config.model import Api, GatewayConfig, Route, Stage
from ..context import build_context, json_field, lookup
from ..errors import GatewayError
from ..handlers import FunctionFailed, FunctionPlan, compile_function, invoke
from ..httpsyntax import header, media_type, safe_field
from ..upstream import exchange, read_whole_response
from ..vtl import UTIL, Input, RenderError, TemplateError, compile_template
from .base import Compile, IntegrationType
from .headers import FAIL, FRAMING, OK, client_headers, request_rule, response_rules
from .parammap import rest_source_ok
from .target import IDEMPOTENT, HttpProxyPlan, compile_target, length_framing

log = logging.getLogger("fastgw.templates")
TEMPLATE_BODY_LIMIT = 1024 * 1024  # bytes fed to a mapping template (AWS: 10 MB payloads; templates ~ 300 KB)
REQUEST_SOURCE = re.compile(r"^method\.request\.(path|querystring|multivaluequerystring|header|multivalueheader)"
                            r"\.(.+)$")


@dataclass(slots=True)
class ResponseRule:
    pattern: re.Pattern[str] | None  # None: the default response
    status: int  # 0: the integration's own status
    headers: tuple[tuple[str, str], ...]  # (name, source)
    templates: dict[str, Any] = field(default_factory=dict)  # content type -> compiled template
    content_handling: str | None = None


@dataclass(slots=True)
class NonProxyPlan:
    kind: str  # HTTP | FUNCTION_CUSTOM | MOCK
    proxy: HttpProxyPlan | None
    function: FunctionPlan | None
    method: str | None  # HTTP: the integration's method (None: the client's)
    query: tuple[tuple[str, str], ...]  # integration.request.querystring.X <- source
    headers: tuple[tuple[str, str], ...]  # integration.request.header.X <- source
    failing: tuple[tuple[str, str], ...]  # header mappings AWS refuses when they have a value (500)
    aws_compat: bool
    templates: dict[str, Any]  # request templates by content type
    passthrough: str  # WHEN_NO_MATCH | WHEN_NO_TEMPLATES | NEVER
    content_handling: str | None
    rules: tuple[ResponseRule, ...]
    uri: str = ""


# -- compile time ----------------------------------------------------------------------------------------
def _static(source: str) -> bool:
    return len(source) >= 2 and source[0] == source[-1] == "'"


def _compile_templates(templates: dict[str, Any], where: str, problems: list[Problem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(templates, dict):
        problems.append(Problem(where, "must be a mapping of content type to mapping template"))
        return out
    for content_type, text in templates.items():
        try:
            out[str(content_type).lower()] = compile_template("" if text is None else str(text))
        except TemplateError as exc:
            problems.append(Problem(f"{where}.{content_type}", f"mapping template: {exc}"))
    return out


def _selection(spec: dict[str, Any], pattern: str, where: str,
               problems: list[Problem]) -> re.Pattern[str] | None | bool:
    selection = spec.get("selectionPattern", pattern)
    if selection in (None, "default", ""):
        return None
    try:
        return re.compile(str(selection), re.DOTALL)
    except re.error as exc:
        problems.append(Problem(where, f"bad selection pattern: {exc}"))
        return False


def compile_nonproxy(route: Route, kind: str, proxy: HttpProxyPlan | None, function: FunctionPlan | None,
                     problems: list[Problem], aws_compat: bool = False) -> NonProxyPlan | None:
    integration = route.integration
    assert integration is not None
    start = len(problems)
    query: list[tuple[str, str]] = []
    headers: list[tuple[str, str]] = []
    failing: list[tuple[str, str]] = []
    for target, source in integration.requestParameters.items():
        where = f"{integration.path}.requestParameters.{target}"
        if target.startswith("integration.request.path."):
            continue  # applied to the URI template when it was compiled
        if not rest_source_ok(source):
            problems.append(Problem(where, f"unsupported source '{source}' (method.request.path|querystring|"
                                    "header.NAME, method.request.body[.PATH], 'static', stageVariables.NAME "
                                    "or context.NAME)"))
            continue
        if target.startswith("integration.request.querystring."):
            query.append((target[len("integration.request.querystring."):], source))
        elif target.startswith("integration.request.header."):
            name = target[len("integration.request.header."):].lower()
            verdict, message = request_rule(name, kind, aws_compat)
            if message is not None:
                problems.append(Problem(where, message))
            elif verdict == FAIL:
                failing.append((name, source))
            elif verdict == OK:
                headers.append((name, source))  # DROP: AWS drops or overwrites it after mapping
        else:
            problems.append(Problem(where, "must be integration.request.path|querystring|header.NAME"))
    templates = _compile_templates(integration.requestTemplates, f"{integration.path}.requestTemplates", problems)
    rules: list[ResponseRule] = []
    default: ResponseRule | None = None
    for pattern, spec in integration.responses.items():
        where = f"{integration.path}.responses.{pattern}"
        if not isinstance(spec, dict):
            problems.append(Problem(where, "must be a mapping with statusCode"))
            continue
        try:
            status = int(str(spec.get("statusCode", "200")))
        except ValueError:
            problems.append(Problem(f"{where}.statusCode", "must be a number"))
            continue
        mapped = []
        for target, source in (spec.get("responseParameters") or {}).items():
            at = f"{where}.responseParameters.{target}"
            source = str(source)
            if not target.startswith("method.response.header."):
                problems.append(Problem(at, "must be method.response.header.NAME"))
                continue
            if not aws_compat and target[len("method.response.header."):].lower() in FRAMING:
                problems.append(Problem(at, f"the header '{target[len('method.response.header.'):]}' frames the "
                                        "response and is computed by the gateway: it cannot be mapped (with "
                                        "awsCompat: true it is renamed x-amzn-Remapped-<Name> or dropped, as by AWS)"))
                continue
            if not (_static(source) or source.startswith(("integration.response.header.",
                                                          "integration.response.multivalueheader.",
                                                          "integration.response.body", "stageVariables.",
                                                          "context."))):
                problems.append(Problem(at, f"unsupported source '{source}' ('static', integration.response."
                                        "header.NAME, integration.response.body[.PATH], stageVariables.NAME or "
                                        "context.NAME)"))
                continue
            mapped.append((target[len("method.response.header."):], source))
        compiled = _selection(spec, pattern, where, problems)
        if compiled is False:
            continue
        handling = spec.get("contentHandling")
        rule = ResponseRule(compiled, status, tuple(mapped),  # type: ignore[arg-type]
                            _compile_templates(spec.get("responseTemplates") or {}, f"{where}.responseTemplates",
                                               problems),
                            str(handling).upper() if handling else None)
        if compiled is None:
            default = rule
        else:
            rules.append(rule)
    if default is None:
        # No default integration response: AWS passes the status through (and the body).
        default = ResponseRule(None, 0, ())
    rules.append(default)
    if len(problems) > start:
        return None
    method = integration.httpMethod if integration.httpMethod not in (None, "ANY") else None
    return NonProxyPlan(kind, proxy, function, method, tuple(query), tuple(headers), tuple(failing), aws_compat,
                        templates,
                        integration.passthroughBehavior or "WHEN_NO_MATCH", integration.contentHandling,
                        tuple(rules), proxy.uri if proxy is not None else (function.uri if function else "mock"))


# -- run time -------------------------------------------------------------------------------------------
class Call:
    """One request through a non-proxy integration: what templates and mappings read. The query
    string and `$context` are made when first read (a route without templates may need neither)."""

    def __init__(self, down: Any, host: str, stage: Any, route: Any, route_path: str, params: dict[str, str],
                 body: bytes, request_id: str, aws_compat: bool = False):
        self.down = down
        self.headers = client_headers(down.headers, aws_compat)  # what AWS's engine sees of them
        self.host = host
        self.stage = stage
        self.route = route
        self.route_path = route_path
        self.request_id = request_id
        self.raw_params = params
        self.params = {name: unquote(value) for name, value in params.items()}
        self.body = body
        self._query_pairs: list[tuple[str, str]] | None = None
        self._context: dict[str, Any] | None = None

    @property
    def query_pairs(self) -> list[tuple[str, str]]:
        if self._query_pairs is None:
            self._query_pairs = parse_qsl(self.down.query, keep_blank_values=True)
        return self._query_pairs

    @property
    def context(self) -> dict[str, Any]:
        if self._context is None:
            self._context = build_context(self.down, self.host, self.stage, self.route, self.route_path,
                                          self.request_id)
        return self._context

    def overrides(self, which: str) -> dict[str, Any]:
        """A template's `$context.requestOverride` / `responseOverride` (empty when no template ran)."""
        return (self._context or {}).get(which) or {}

    def variables(self, body: bytes) -> dict[str, Any]:
        query = dict(self.query_pairs)  # the last value of a repeated name, as AWS's $input.params()
        header = dict(self.headers)  # without the reserved fields AWS hides
        return {
            "input": Input(body.decode("utf-8", "replace"), self.params, query, header),
            "context": self.context,
            "stageVariables": self.stage.variables,
            "util": UTIL,
        }

    def request_values(self, source: str) -> list[str]:
        if _static(source):
            return [source[1:-1]]
        if source.startswith("stageVariables."):
            value = self.stage.variables.get(source[len("stageVariables."):])
            return [value] if value is not None else []
        if source.startswith("context."):
            value = lookup(self.context, source[len("context."):])
            return [] if value is None else [_text(value)]
        if source.startswith("method.request.body"):
            value = json_field(self.body, source[len("method.request.body"):])
            return [] if value is None else [value]
        match = REQUEST_SOURCE.match(source)
        assert match is not None
        kind, name = match.groups()
        if kind == "path":
            return [self.params[name]] if name in self.params else []
        if kind in ("querystring", "multivaluequerystring"):
            values = [v for k, v in self.query_pairs if k == name]
            return values if kind.startswith("multi") else values[-1:]
        values = [v for k, v in self.headers if k == name.lower()]
        return values if kind.startswith("multi") else values[-1:]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _render(template: Any, variables: dict[str, Any]) -> str:
    try:
        return template.render(variables)
    except RenderError as exc:
        log.error("mapping template failed: %s", exc)
        raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None


def _convert(body: bytes, handling: str | None) -> bytes:
    if handling == "CONVERT_TO_TEXT":
        try:
            body.decode("utf-8")
            return body
        except UnicodeDecodeError:
            return base64.b64encode(body)
    if handling == "CONVERT_TO_BINARY":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None
    return body


async def run_nonproxy(gateway: Any, down: Any, head: Any, plan: NonProxyPlan, stage: Any, route: Any,
                       route_path: str, params: dict[str, str], request_id: str,
                       fill: Any = None) -> tuple[int, int]:
    # request template: chosen by Content-Type before the body is read (its limit depends on it)
    content_type = ""
    for name, value in down.headers:
        if name == "content-type":
            content_type = media_type(value)
    template = plan.templates.get(content_type or "application/json")
    if template is None:
        has_body = head.chunked or head.content_length > 0
        if plan.passthrough == "NEVER" and (plan.templates or has_body):
            raise GatewayError("UNSUPPORTED_MEDIA_TYPE")
        if plan.passthrough == "WHEN_NO_TEMPLATES" and plan.templates:
            raise GatewayError("UNSUPPORTED_MEDIA_TYPE")
    body = await gateway.read_whole_body(down, head, TEMPLATE_BODY_LIMIT if template is not None else 0)
    if template is not None and (coding := header(down.headers, "content-encoding")) is not None:
        # AWS decompresses a gzip/deflate request body before the mapping template reads it; what comes
        # out is bounded like a plain body (a small zip bomb is refused after the limit, 413).
        body = decode(body, coding, min(TEMPLATE_BODY_LIMIT, gateway.max_body))
    call = Call(down, head.host, stage, route, route_path, params, body, request_id, plan.aws_compat)
    for name, source in plan.failing:
        if call.request_values(source):
            # AWS: "Execution failed due to configuration error: <name> header already present"
            log.error("the mapping of the request header %s is refused (AWS reserves it): 500", name)
            raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
    sent_type = content_type
    if template is None:
        payload = _convert(body, plan.content_handling)
    else:
        payload = _render(template, call.variables(body)).encode("utf-8")
        sent_type = content_type or "application/json"
    # call
    error_message: str | None = None
    if plan.kind == "HTTP":
        status_in, headers_in, body_in = await _call_http(plan, call, down, payload, sent_type)
    elif plan.kind == "FUNCTION_CUSTOM":
        status_in, headers_in, body_in, error_message = await _call_function(plan, payload)
    else:
        status_in, headers_in, body_in = _call_mock(payload)
    # integration response
    if plan.kind == "FUNCTION_CUSTOM":
        subject = error_message
    else:
        subject = str(status_in)
    rule = plan.rules[-1]
    if subject is not None:
        for candidate in plan.rules:
            if candidate.pattern is not None and candidate.pattern.fullmatch(subject):
                rule = candidate
                break
    status = rule.status or status_in
    headers: list[tuple[str, str]] = []
    upstream = {name.lower(): value for name, value in headers_in} if rule.headers else {}
    for name, source in rule.headers:
        value = _response_value(source, upstream, headers_in, body_in, call)
        if value is not None:
            headers.append((name, value))
    response_template = _pick_template(rule.templates, down.headers)
    if response_template is not None:
        chosen_type, template = response_template
        if len(body_in) > TEMPLATE_BODY_LIMIT:
            raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
        out = _render(template, call.variables(body_in)).encode("utf-8")
    else:
        chosen_type, out = "application/json", body_in
    out = _convert(out, rule.content_handling)
    overrides = call.overrides("responseOverride")
    override_status = overrides.get("status")
    if override_status not in (None, ""):
        try:
            status = int(str(override_status))
        except ValueError:
            raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None
        if not 100 <= status <= 599:
            raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
    for name, value in (overrides.get("header") or {}).items():
        if value is None:
            continue
        headers = [(k, v) for k, v in headers if k.lower() != str(name).lower()]
        headers.append((str(name), _text(value)))
    # AWS's remapped and dropped headers (awsCompat), never a framing field, never an invalid one
    headers = response_rules(stage.api.type, stage.api.aws_compat, plan.kind).finish(headers, stage.api.name)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", chosen_type))
    return await gateway.answer(down, status, headers, out, request_id, fill)


def _pick_template(templates: dict[str, Any], headers: list[tuple[str, str]]) -> tuple[str, Any] | None:
    """AWS picks the response template by the request's Accept header, else application/json, else
    the first one."""
    if not templates:
        return None
    for name, value in headers:
        if name == "accept":
            for part in value.split(","):
                wanted = media_type(part)
                if wanted in templates:
                    return wanted, templates[wanted]
    if "application/json" in templates:
        return "application/json", templates["application/json"]
    first = next(iter(templates))
    return first, templates[first]


def _response_value(source: str, upstream: dict[str, str], headers_in: list[tuple[str, str]], body: bytes,
                    call: Call) -> str | None:
    if _static(source):
        return source[1:-1]
    if source.startswith("integration.response.header."):
        return upstream.get(source[len("integration.response.header."):].lower())
    if source.startswith("integration.response.multivalueheader."):
        name = source[len("integration.response.multivalueheader."):].lower()
        values = [v for k, v in headers_in if k.lower() == name]
        return ",".join(values) if values else None
    if source.startswith("integration.response.body"):
        return json_field(body, source[len("integration.response.body"):])
    values = call.request_values(source)
    return values[-1] if values else None


async def _call_http(plan: NonProxyPlan, call: Call, down: Any, payload: bytes,
                     content_type: str) -> tuple[int, list[tuple[str, str]], bytes]:
    proxy = plan.proxy
    assert proxy is not None
    overrides = call.overrides("requestOverride")
    path_params = dict(call.raw_params)  # as the client sent them (a greedy {proxy+} keeps its slashes)
    for name, value in (overrides.get("path") or {}).items():
        if value is not None:
            path_params[str(name)] = quote(_text(value), safe="")
    if proxy.path_template is not None:
        target = proxy.path_template.render(path_params)
    else:
        target = proxy.static_path
    query: list[tuple[str, str]] = []
    for name, source in plan.query:
        for value in call.request_values(source):
            query.append((name, value))
    for name, value in (overrides.get("querystring") or {}).items():
        if value is not None:
            query = [(k, v) for k, v in query if k != name]
            query.append((str(name), _text(value)))
    text = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    text = proxy.query(text)
    if text:
        target = f"{target}?{text}"
    method = plan.method or down.method
    headers: list[tuple[str, str]] = []
    for name, source in plan.headers:
        for value in call.request_values(source):
            headers.append((name, value))
    for name, value in (overrides.get("header") or {}).items():
        if value is not None:
            lowered = str(name).lower()
            verdict, message = request_rule(lowered, "HTTP", True)
            if verdict == FAIL:
                log.error("the template's request override of the header %s is refused (AWS reserves it): 500",
                          lowered)
                raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
            if verdict != OK:
                log.warning("the template's request override of the header %s is not sent: the gateway sets it",
                            lowered)
                continue
            headers = [(k, v) for k, v in headers if k != lowered]
            headers.append((lowered, _text(value)))
    names = {name for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1", f"host: {proxy.host_header}"]
    for name, value in headers:
        if safe_field(name, value):
            lines.append(f"{name}: {value}")
        else:
            log.error("the request header %r is not sent: a mapping or template produced an invalid value", name)
    if (trace := getattr(down, "trace", None)) is not None:  # traced stage (fastgw/tracing.py)
        lines.extend(f"{name}: {value}" for name, value in trace.upstream_fields())
    if "accept" not in names:
        lines.append("accept: application/json")
    if payload and "content-type" not in names and content_type:
        lines.append(f"content-type: {content_type}")
    # AWS sends a non-proxy HTTP integration only the mapped headers, not the client's: this head is
    # built here, not by the proxy path's Gateway.request_head.
    request_head = ("\r\n".join(lines) + "\r\n" + length_framing(method, len(payload))).encode("latin-1", "replace")
    conn = await exchange(proxy.pool, request_head, payload, method == "HEAD", method in IDEMPOTENT, proxy.timeout)
    status = conn.parser.status
    upstream_headers = list(conn.parser.headers)
    return status, upstream_headers, await read_whole_response(conn)


async def _call_function(plan: NonProxyPlan, payload: bytes) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
    """Lambda's Invoke: the payload is the event; an exception is Lambda's error object."""
    function = plan.function
    assert function is not None
    try:
        event = orjson.loads(payload) if payload.strip() else {}
    except orjson.JSONDecodeError:
        # Lambda refuses a payload that is not JSON (InvalidRequestContentException): AWS answers 500.
        raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None
    result = await invoke(function, event, capture_errors=True)
    if isinstance(result, FunctionFailed):
        exc = result.exc
        error = {"errorMessage": str(exc), "errorType": type(exc).__name__,
                 "stackTrace": traceback.format_tb(exc.__traceback__)}
        return 200, [], orjson.dumps(error), str(exc)
    try:
        body = orjson.dumps(result)
    except TypeError:
        raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from None
    return 200, [], body, None


def _call_mock(payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """MOCK: the request template's output names the status code; there is no integration body."""
    text = payload.strip()
    if not text:
        return 200, [], b""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None
    status = value.get("statusCode", 200) if isinstance(value, dict) else 200
    try:
        return int(status), [], b""
    except (TypeError, ValueError):
        raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error") from None


def _compile(kind: str) -> Compile:
    def compile_kind(api: Api, route: Route, stage: Stage, variables: dict[str, str], pools: dict,
                     problems: list[Problem], config: GatewayConfig | None) -> NonProxyPlan | None:
        proxy = function = None
        if kind == "HTTP":
            proxy = compile_target(route, stage, pools, problems, config, variables)
            if proxy is None:
                return None
        elif kind == "FUNCTION_CUSTOM":
            function = compile_function(api, route, stage, variables, config.functions if config is not None
                                        else {}, problems, config.parameters if config is not None else {})
            if function is None:
                return None
        return compile_nonproxy(route, kind, proxy, function, problems, api.type == "REST" and api.awsCompat)

    return compile_kind


async def _run(gateway: Any, down: Any, head: Any, stage: Any, route: Any, route_path: str, plan: NonProxyPlan,
               params: dict[str, str], request_id: str, fill: Any = None) -> tuple[int, int]:
    return await run_nonproxy(gateway, down, head, plan, stage, route, route_path, params, request_id, fill)


HTTP = IntegrationType("HTTP", _compile("HTTP"), ((NonProxyPlan, _run),))
FUNCTION_CUSTOM = IntegrationType("FUNCTION_CUSTOM", _compile("FUNCTION_CUSTOM"), ((NonProxyPlan, _run),))
MOCK = IntegrationType("MOCK", _compile("MOCK"), ((NonProxyPlan, _run),))
