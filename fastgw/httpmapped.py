"""HTTP integrations (REST `http`, non-proxy) without mapping templates, as AWS runs them.

Unlike HTTP_PROXY, a non-proxy integration sends only what its `requestParameters` map, and answers
with the integration response its `responses` select:

    request    method: the integration's httpMethod; path: the URI with mapped path parameters;
               query string and headers: only `integration.request.querystring.X` /
               `integration.request.header.X`, from `method.request.{path,querystring,header}.Y`,
               `'static values'`, `stageVariables.Y` or `context.requestId`; the body passes through
               (passthroughBehavior WHEN_NO_MATCH / WHEN_NO_TEMPLATES; NEVER refuses bodies: 415)
    response   the integration response whose selection pattern (a regex) matches the status
               code, else `default`; its statusCode; headers from its `responseParameters`
               (`method.response.header.X` <- `'static'` or `integration.response.header.Y`);
               the body passes through; Content-Type application/json unless mapped.

With mapping templates the integration answers 501 until the mapping-template issue lands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote

from .config.loader import Problem
from .config.model import Route
from .errors import GatewayError
from .upstream import exchange

if TYPE_CHECKING:
    from .config.compile import HttpProxyPlan

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE"))
SOURCE = re.compile(r"^method\.request\.(path|querystring|multivaluequerystring|header|multivalueheader)\.(.+)$")


@dataclass(slots=True)
class ResponseRule:
    pattern: re.Pattern[str] | None  # None: default
    status: int
    headers: tuple[tuple[str, str], ...]  # (name, source)


@dataclass(slots=True)
class HttpMappedPlan:
    proxy: HttpProxyPlan
    method: str | None  # None: the client's (httpMethod ANY)
    query: tuple[tuple[str, str], ...]  # (name, source)
    headers: tuple[tuple[str, str], ...]
    rules: tuple[ResponseRule, ...]
    never: bool  # passthroughBehavior NEVER
    uri: str = ""


def _source_ok(source: str) -> bool:
    return bool(SOURCE.match(source)) or (len(source) >= 2 and source[0] == source[-1] == "'") or \
        source.startswith("stageVariables.") or source == "context.requestId"


def compile_http(route: Route, proxy: HttpProxyPlan, problems: list[Problem]) -> HttpMappedPlan | None:
    integration = route.integration
    assert integration is not None
    query: list[tuple[str, str]] = []
    headers: list[tuple[str, str]] = []
    for target, source in integration.requestParameters.items():
        where = f"{integration.path}.requestParameters.{target}"
        if target.startswith("integration.request.path."):
            continue  # applied to the URI template when it was compiled
        if not _source_ok(source):
            problems.append(Problem(where, f"unsupported source '{source}' (method.request.path|querystring|"
                                    "header.NAME, 'static', stageVariables.NAME or context.requestId)"))
            continue
        if target.startswith("integration.request.querystring."):
            query.append((target[len("integration.request.querystring."):], source))
        elif target.startswith("integration.request.header."):
            headers.append((target[len("integration.request.header."):].lower(), source))
        else:
            problems.append(Problem(where, "must be integration.request.path|querystring|header.NAME"))
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
            if not target.startswith("method.response.header."):
                problems.append(Problem(f"{where}.responseParameters.{target}", "must be method.response.header.NAME"))
                continue
            mapped.append((target[len("method.response.header."):], str(source)))
        selection = spec.get("selectionPattern", pattern)
        try:
            compiled = None if selection in ("default", "") else re.compile(str(selection))
        except re.error as exc:
            problems.append(Problem(where, f"bad selection pattern: {exc}"))
            continue
        rule = ResponseRule(compiled, status, tuple(mapped))
        if compiled is None:
            default = rule
        else:
            rules.append(rule)
    if default is None:
        # No default integration response: AWS passes the status through.
        default = ResponseRule(None, 0, ())
    rules.append(default)
    method = integration.httpMethod if integration.httpMethod not in (None, "ANY") else None
    return HttpMappedPlan(proxy, method, tuple(query), tuple(headers), tuple(rules),
                          integration.passthroughBehavior == "NEVER", proxy.uri)


def _value(source: str, params: dict[str, str], query: dict[str, list[str]], headers: dict[str, list[str]],
           variables: dict[str, str], request_id: str) -> list[str]:
    if source[0] == "'":
        return [source[1:-1]]
    if source.startswith("stageVariables."):
        value = variables.get(source[len("stageVariables."):])
        return [value] if value is not None else []
    if source == "context.requestId":
        return [request_id]
    match = SOURCE.match(source)
    assert match is not None
    kind, name = match.groups()
    if kind == "path":
        return [unquote(params[name])] if name in params else []
    if kind in ("querystring", "multivaluequerystring"):
        values = query.get(name, [])
        return values if kind.startswith("multi") else values[-1:]
    values = headers.get(name.lower(), [])
    return values if kind.startswith("multi") else values[-1:]


async def run_http(gateway: Any, down: Any, head: Any, plan: HttpMappedPlan, params: dict[str, str],
                   variables: dict[str, str], request_id: str) -> tuple[int, int]:
    proxy = plan.proxy
    body = await gateway.read_whole_body(down, head)
    if body and plan.never:
        raise GatewayError("UNSUPPORTED_MEDIA_TYPE")
    query_in: dict[str, list[str]] = {}
    for name, value in parse_qsl(down.query, keep_blank_values=True):
        query_in.setdefault(name, []).append(value)
    headers_in: dict[str, list[str]] = {}
    for name, value in down.headers:
        headers_in.setdefault(name, []).append(value)
    target = proxy.path_template.render(params) if proxy.path_template is not None else proxy.static_path
    pairs = []
    for name, source in plan.query:
        for value in _value(source, params, query_in, headers_in, variables, request_id):
            pairs.append(f"{quote(name, safe='')}={quote(value, safe='')}")
    query = "&".join(pairs)
    if proxy.uri_query:
        query = f"{proxy.uri_query}&{query}" if query else proxy.uri_query
    if query:
        target = f"{target}?{query}"
    method = plan.method or down.method
    lines = [f"{method} {target} HTTP/1.1", f"host: {proxy.host_header}"]
    sent_names = set()
    for name, source in plan.headers:
        for value in _value(source, params, query_in, headers_in, variables, request_id):
            lines.append(f"{name}: {value}")
            sent_names.add(name)
    if "accept" not in sent_names:
        lines.append("accept: application/json")
    if body and "content-type" not in sent_names and headers_in.get("content-type"):
        lines.append(f"content-type: {headers_in['content-type'][-1]}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    request_head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    conn = await exchange(proxy.pool, request_head, body, method == "HEAD", method in IDEMPOTENT, proxy.timeout)
    pool = conn.pool
    parser = conn.parser
    status_in = parser.status
    upstream_headers = list(parser.headers)
    try:
        chunks = []
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                break
            chunks.append(chunk)
    except BaseException:
        pool.discard(conn)
        raise
    pool.release(conn)
    response_body = b"".join(chunks)
    code = str(status_in)
    rule = next(r for r in plan.rules if r.pattern is None or r.pattern.fullmatch(code))
    status = rule.status or status_in
    upstream: dict[str, str] = {}
    for name, value in upstream_headers:
        upstream[name.lower()] = value
    headers: list[tuple[str, str]] = []
    for name, source in rule.headers:
        if source.startswith("'") and source.endswith("'") and len(source) >= 2:
            headers.append((name, source[1:-1]))
        elif source.startswith("integration.response.header."):
            value = upstream.get(source[len("integration.response.header."):].lower())
            if value is not None:
                headers.append((name, value))
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    headers.append(("x-amzn-requestid", request_id))
    pending = down.respond(status, headers, response_body)
    if pending is not None:
        await pending
    return status, len(response_body)


# -- MOCK integrations without mapping logic (imported documents) -----------------------------------------
@dataclass(slots=True)
class MockPlan:
    """A MOCK integration whose templates are static (no VTL): what AWS's CORS OPTIONS methods and
    similar fixed answers are. Templates with VTL wait for the mapping-template issue (501)."""

    statuses: dict[str, int]  # request content type -> the statusCode its template gives
    rules: tuple[ResponseRule, ...]
    bodies: tuple[tuple[str, str], ...]  # per rule, (content type, body)
    never: bool
    uri: str = ""


def _static(text: str) -> bool:
    return "$" not in text and "#" not in text


def compile_static_mock(route: Route, problems: list[Problem]) -> MockPlan | None:
    """None when a template needs VTL (the caller answers 501 then)."""
    import orjson

    integration = route.integration
    assert integration is not None
    statuses: dict[str, int] = {}
    for content_type, template in integration.requestTemplates.items():
        text = template.strip()
        if not text:
            statuses[content_type.lower()] = 200
            continue
        if not _static(text):
            return None
        try:
            value = orjson.loads(text)
            statuses[content_type.lower()] = int(value.get("statusCode", 200)) if isinstance(value, dict) else 200
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
    rules: list[ResponseRule] = []
    bodies: list[tuple[str, str]] = []
    default: tuple[ResponseRule, tuple[str, str]] | None = None
    for pattern, spec in integration.responses.items():
        if not isinstance(spec, dict):
            return None
        parameters = spec.get("responseParameters") or {}
        if not all(len(str(v)) >= 2 and str(v)[0] == str(v)[-1] == "'" for v in parameters.values()):
            return None
        templates = spec.get("responseTemplates") or {}
        if not all(_static(str(t)) for t in templates.values()):
            return None
        try:
            status = int(str(spec.get("statusCode", "200")))
            selection = spec.get("selectionPattern", pattern)
            compiled = None if selection in ("default", "") else re.compile(str(selection))
        except (ValueError, re.error):
            return None
        headers = tuple((k[len("method.response.header."):], str(v)) for k, v in parameters.items()
                        if k.startswith("method.response.header."))
        content_type = "application/json" if "application/json" in templates or not templates else next(iter(templates))
        body = (content_type, str(templates.get(content_type, "")))
        rule = ResponseRule(compiled, status, headers)
        if compiled is None:
            default = (rule, body)
        else:
            rules.append(rule)
            bodies.append(body)
    if default is None:
        default = (ResponseRule(None, 0, ()), ("application/json", ""))
    rules.append(default[0])
    bodies.append(default[1])
    return MockPlan(statuses, tuple(rules), tuple(bodies), integration.passthroughBehavior == "NEVER")


def answer_mock(plan: MockPlan, down: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    content_type = ""
    for name, value in down.headers:
        if name == "content-type":
            content_type = value.split(";", 1)[0].strip().lower()
    status = plan.statuses.get(content_type or "application/json")
    if status is None:
        if plan.never and plan.statuses:
            raise GatewayError("UNSUPPORTED_MEDIA_TYPE")
        status = 200
    code = str(status)
    for rule, (body_type, body) in zip(plan.rules, plan.bodies, strict=True):
        if rule.pattern is None or rule.pattern.fullmatch(code):
            headers = [(name, source[1:-1]) for name, source in rule.headers]
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers.append(("content-type", body_type))
            return rule.status or status, headers, body.encode()
    raise GatewayError("API_CONFIGURATION_ERROR")
