"""HTTP API parameter mapping (reference/aws.md c.15): change the request before it goes to an
HTTP_PROXY integration, and the response before it goes back, without templates.

    request    `append|overwrite|remove:header.NAME`, `append|overwrite|remove:querystring.NAME`,
               `overwrite:path`
    response   keyed by the integration's status code ("200".."599"):
               `append|overwrite|remove:header.NAME`, `overwrite:statuscode`
    values     `$request.header.X`, `$request.querystring.X` (several values comma-joined),
               `$request.body` / `$request.body.JSONPATH` (the first 100 KB), `$request.path`,
               `$request.path.X`, `$context.X`, `$stageVariables.X`, on the response side
               `$response.header.X` / `$response.body[.JSONPATH]`, static text, or several of them
               as `${request.path.a}-${request.path.b}`

Every value is computed from the request as it arrived; then removes apply, then overwrites, then
appends, so the result does not depend on the order of the keys. A value whose only variable is
missing is not applied (AWS sends no empty header for an absent one). Headers AWS reserves cannot
be mapped (a config error).

REST APIs' HTTP_PROXY integrations map too (`compile_rest_mapping`), as AWS does: `integration.request.
header.X` overwrites the client's header X, `integration.request.querystring.X` is added to the
client's query string, from `method.request.{path,querystring,multivaluequerystring,header,
multivalueheader}.Y`, `method.request.body[.JSONPATH]`, `context.Y` (authorizer values included),
`stageVariables.Y` or `'static'`; the header rules of fastgw/integrations/headers.py apply (a mapping
AWS refuses at call time answers 500 under awsCompat, and is a config error without it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from ..config.loader import Problem
from ..context import build_context, json_field, lookup
from ..errors import GatewayError
from ..httpsyntax import header, safe_field
from ..upstream import exchange, read_whole_response
from .headers import FAIL, OK, PLAIN_RULES, ResponseRules, client_headers, forwardable, request_rule, response_rules
from .target import IDEMPOTENT, length_framing

BODY_PREFIX_BYTES = 100 * 1024  # AWS applies body JSONPaths to the first 100 KB
ACTIONS = ("remove", "overwrite", "append")  # the order they apply in
REQUEST_KEY = re.compile(r"^(append|overwrite|remove):(header|querystring)\.(.+)$")
RESPONSE_KEY = re.compile(r"^(append|overwrite|remove):(header)\.(.+)$")
BRACED = re.compile(r"\$\{([^{}]*)\}")
VARIABLE = re.compile(
    r"^(request\.(?:header|querystring|path)\.[^.\s][^\s]*|request\.path|request\.body(?:[.\[].*)?"
    r"|response\.header\.[^\s]+|response\.body(?:[.\[].*)?|context\.[A-Za-z0-9_.]+|stageVariables\.[A-Za-z0-9_]+)$")
RESERVED = frozenset((
    "authorization", "connection", "content-encoding", "content-length", "content-location", "forwarded",
    "keep-alive", "origin", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding",
    "upgrade", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "via", "host",
))
RESERVED_PREFIXES = ("access-control-", "apigw-", "x-amz-", "x-amzn-")


@dataclass(slots=True)
class Value:
    """A mapping value compiled once: static text and variables, in order."""

    parts: tuple[tuple[bool, str], ...]  # (is_variable, text or variable name)

    def render(self, lookup_variable: Any) -> str | None:
        out = []
        found = False
        for is_variable, text in self.parts:
            if not is_variable:
                out.append(text)
                continue
            value = lookup_variable(text)
            if value is not None:
                found = True
                out.append(value)
        if not found and any(is_variable for is_variable, _ in self.parts):
            return None
        return "".join(out)


REST_SOURCE = re.compile(r"^method\.request\.(path|querystring|multivaluequerystring|header|multivalueheader)\.(.+)$")


@dataclass(slots=True)
class Op:
    action: str  # remove | overwrite | append | fail (a REST mapping AWS refuses when it has a value: 500)
    where: str  # header | querystring | path | statuscode
    name: str  # lower-case for headers
    value: Value


@dataclass(slots=True)
class ParamMapping:
    request: tuple[Op, ...]  # removes, then overwrites, then appends
    responses: dict[int, tuple[Op, ...]]  # status -> ops
    needs_context: bool
    needs_response_body: frozenset[int]  # statuses whose mapping reads the response body
    rest_compat: bool = False  # an awsCompat REST API: AWS's request header rules (fastgw/integrations/headers.py)
    rules: ResponseRules = PLAIN_RULES  # what response headers may reach the client


@dataclass(slots=True)
class MappedProxyPlan:
    """An HTTP_PROXY integration with parameter mapping (HTTP APIs), or of an awsCompat REST API or with
    REST request parameters."""

    proxy: Any  # HttpProxyPlan
    mapping: ParamMapping
    uri: str = ""


def compile_value(text: str, where: str, problems: list[Problem], response: bool) -> Value | None:
    text = str(text)
    names: list[tuple[bool, str]] = []
    if text.startswith("$") and not text.startswith("${"):
        names.append((True, text[1:]))
    else:
        last = 0
        for match in BRACED.finditer(text):
            if match.start() > last:
                names.append((False, text[last:match.start()]))
            names.append((True, match.group(1).strip()))
            last = match.end()
        if last < len(text):
            names.append((False, text[last:]))
    for is_variable, name in names:
        if not is_variable:
            continue
        if not VARIABLE.match(name) or (name.startswith("response.") and not response):
            side = "$request.*, $response.*" if response else "$request.*"
            problems.append(Problem(where, f"unknown variable '${name}' (one of {side}, $context.*, "
                                    "$stageVariables.*)"))
            return None
    return Value(tuple(names))


def _header_ok(name: str, where: str, problems: list[Problem]) -> bool:
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        problems.append(Problem(where, f"the header '{name}' is reserved by API Gateway and cannot be mapped"))
        return False
    return True


def _sorted(ops: list[Op]) -> tuple[Op, ...]:
    return tuple(sorted(ops, key=lambda op: ACTIONS.index(op.action)))


def _compile_ops(entries: dict[str, Any], place: str, problems: list[Problem], response: bool) -> tuple[Op, ...]:
    """One side's mappings: the request's (header, querystring, path) or one status's response
    mappings (header, statuscode)."""
    if response:
        whole, whole_kind, pattern = "overwrite:statuscode", "statuscode", RESPONSE_KEY
        expected = "append|overwrite|remove:header.NAME or overwrite:statuscode"
    else:
        whole, whole_kind, pattern = "overwrite:path", "path", REQUEST_KEY
        expected = "append|overwrite|remove:header.NAME, append|overwrite|remove:querystring.NAME or overwrite:path"
    ops: list[Op] = []
    for key, source in entries.items():
        at = f"{place}.{key}"
        if key == whole:
            value = compile_value(source, at, problems, response)
            if value is not None:
                ops.append(Op("overwrite", whole_kind, "", value))
            continue
        match = pattern.match(key)
        if match is None:
            problems.append(Problem(at, f"must be {expected}"))
            continue
        action, kind, name = match.groups()
        if kind == "header":
            name = name.lower()
            if not _header_ok(name, at, problems):
                continue
        value = compile_value(source, at, problems, response)
        if value is not None:
            ops.append(Op(action, kind, name, value))
    return _sorted(ops)


def compile_mapping(request_parameters: dict[str, str], response_parameters: dict[str, Any], where: str,
                    problems: list[Problem]) -> ParamMapping | None:
    """None when there is nothing to map (the route stays a plain HTTP_PROXY)."""
    request = _compile_ops(request_parameters, f"{where}.requestParameters", problems, False)
    responses: dict[int, tuple[Op, ...]] = {}
    for code, mapping in (response_parameters or {}).items():
        place = f"{where}.responseParameters.{code}"
        try:
            status = int(str(code))
        except ValueError:
            status = 0
        if not 200 <= status <= 599:
            problems.append(Problem(place, "must be an HTTP status code from 200 to 599"))
            continue
        if not isinstance(mapping, dict):
            problems.append(Problem(place, "must be a mapping of response parameters"))
            continue
        responses[status] = _compile_ops(mapping, place, problems, True)
    if not request and not responses:
        return None
    variables = [name for op in (*request, *(o for ops in responses.values() for o in ops))
                 for is_variable, name in op.value.parts if is_variable]
    return ParamMapping(
        request=request,
        responses=responses,
        needs_context=any(name.startswith("context.") for name in variables),
        needs_response_body=frozenset(status for status, ops in responses.items()
                                      if any(is_variable and name.startswith("response.body")
                                             for op in ops for is_variable, name in op.value.parts)),
    )


def rest_source_ok(source: str) -> bool:
    """A REST request parameter mapping's source (AWS's method request, context, stage variables, static)."""
    return bool(REST_SOURCE.match(source)) or _static(source) or source.startswith(
        ("stageVariables.", "context.")) or source == "method.request.body" or source.startswith(
        ("method.request.body.", "method.request.body["))


def _static(source: str) -> bool:
    return len(source) >= 2 and source[0] == source[-1] == "'"


def compile_rest_mapping(request_parameters: dict[str, str], where: str, aws_compat: bool,
                         problems: list[Problem]) -> ParamMapping | None:
    """A REST API HTTP_PROXY integration's `requestParameters` (headers and query strings; path
    mappings are applied to the URI template when it is compiled) as mapping ops. None when there is
    nothing to do: no mapping, and no AWS header rule to apply (not awsCompat)."""
    ops: list[Op] = []
    for target, source in request_parameters.items():
        at = f"{where}.requestParameters.{target}"
        source = str(source)
        if target.startswith("integration.request.path."):
            continue
        if target.startswith("integration.request.header."):
            kind, name = "header", target[len("integration.request.header."):].lower()
        elif target.startswith("integration.request.querystring."):
            kind, name = "querystring", target[len("integration.request.querystring."):]
        else:
            problems.append(Problem(at, "must be integration.request.path|querystring|header.NAME"))
            continue
        if not rest_source_ok(source):
            problems.append(Problem(at, f"unsupported source '{source}' (method.request.path|querystring|header."
                                    "NAME, method.request.body[.PATH], 'static', stageVariables.NAME or context.NAME)"))
            continue
        value = Value(((False, source[1:-1]),)) if _static(source) else Value(((True, source),))
        if kind == "querystring":
            ops.append(Op("append", kind, name, value))  # added to the client's query string (AWS)
            continue
        verdict, message = request_rule(name, "HTTP_PROXY", aws_compat)
        if message is not None:
            problems.append(Problem(at, message))
        elif verdict == FAIL:
            ops.append(Op("fail", kind, name, value))
        elif verdict == OK:
            ops.append(Op("overwrite", kind, name, value))  # DROP: AWS drops or overwrites it after mapping
    if not ops and not aws_compat:
        return None
    return ParamMapping(
        request=_sorted([op for op in ops if op.action != "fail"]) + tuple(op for op in ops if op.action == "fail"),
        responses={},
        needs_context=any(name.startswith("context.") for op in ops for is_variable, name in op.value.parts
                          if is_variable),
        needs_response_body=frozenset(),
        rest_compat=aws_compat,
        rules=response_rules("REST", aws_compat, "HTTP_PROXY"),
    )


# -- run time ------------------------------------------------------------------------------------------
class _Request:
    """The variables of one request, computed on demand."""

    def __init__(self, down: Any, head: Any, stage: Any, route: Any, route_path: str,
                 params: dict[str, str], body: bytes, request_id: str, needs_context: bool, rest_compat: bool = False):
        self.down = down
        self.headers = client_headers(down.headers, rest_compat)  # as AWS's engine sees them
        self.stage = stage
        self.route_path = route_path
        self.params = params
        self.body = body
        self._query: list[tuple[str, str]] | None = None
        self.context = build_context(down, head.host, stage, route, route_path, request_id) if needs_context else {}
        self.response_headers: list[tuple[str, str]] = []
        self.response_body = b""

    @property
    def query(self) -> list[tuple[str, str]]:
        """The client's query string, parsed when a mapping first reads it."""
        if self._query is None:
            self._query = parse_qsl(self.down.query, keep_blank_values=True)
        return self._query

    def __call__(self, name: str) -> str | None:
        kind, _, rest = name.partition(".")
        if kind == "method":
            return self.method_request(name)
        if kind == "request":
            where, _, key = rest.partition(".")
            if where == "header":
                return header(self.headers, key.lower())
            if where == "querystring":
                values = [v for k, v in self.query if k == key]
                return ",".join(values) if values else None
            if where == "path":
                if not key:
                    return self.route_path
                value = self.params.get(key)
                return value
            if rest == "body":
                return self.body.decode("utf-8", "replace")
            return json_field(self.body[:BODY_PREFIX_BYTES], rest[len("body"):])
        if kind == "response":
            where, _, key = rest.partition(".")
            if where == "header":
                key = key.lower()
                values = [v for k, v in self.response_headers if k.lower() == key]
                return ",".join(values) if values else None
            if rest == "body":
                return self.response_body.decode("utf-8", "replace")
            return json_field(self.response_body[:BODY_PREFIX_BYTES], rest[len("body"):])
        if kind == "context":
            value = lookup(self.context, rest)
            if value is None:
                return None
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        if kind == "stageVariables":
            return self.stage.variables.get(rest)
        return None

    def method_request(self, source: str) -> str | None:
        """A REST source `method.request.*`: the last value of a repeated header or query string
        parameter (the multivalue forms: all of them, comma-joined), a path parameter, the body."""
        if source.startswith("method.request.body"):
            return json_field(self.body, source[len("method.request.body"):])
        match = REST_SOURCE.match(source)
        if match is None:
            return None
        where, name = match.groups()
        if where == "path":
            value = self.params.get(name)
            return None if value is None else unquote(value)
        if where.endswith("querystring"):
            values = [v for k, v in self.query if k == name]
        else:
            lowered = name.lower()
            values = [v for k, v in self.headers if k == lowered]
        if not values:
            return None
        return ",".join(values) if where.startswith("multi") else values[-1]


def _apply_headers(ops: tuple[Op, ...], lines: list[tuple[str, str]], variables: _Request) -> list[tuple[str, str]]:
    """The header ops applied to `lines`; the values are checked by the caller (safe_field for a
    request, ResponseRules.finish for a response, which counts what it drops)."""
    for op in ops:
        if op.where != "header":
            continue
        if op.action == "remove":
            lines = [(k, v) for k, v in lines if k.lower() != op.name]
            continue
        value = op.value.render(variables)
        if value is None:
            continue  # missing
        if op.action == "fail":
            # AWS: "Execution failed due to configuration error: <name> header already present"
            raise GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
        if op.action == "overwrite":
            lines = [(k, v) for k, v in lines if k.lower() != op.name]
        lines.append((op.name, value))
    return lines


async def run_mapped_proxy(gateway: Any, down: Any, head: Any, plan: MappedProxyPlan, stage: Any, route: Any,
                           route_path: str, params: dict[str, str], request_id: str,
                           fill: Any = None) -> tuple[int, int]:
    proxy = plan.proxy
    mapping = plan.mapping
    body = await gateway.read_whole_body(down, head)
    variables = _Request(down, head, stage, route, route_path, params, body, request_id, mapping.needs_context,
                         mapping.rest_compat)
    # request: path, query string, headers
    path = proxy.path_template.render(params) if proxy.path_template is not None else proxy.static_path
    forward: list[tuple[str, str]] = []
    for line in head.forward.decode("latin-1").split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            forward.append((name, value))
    forward = forwardable(forward, mapping.rest_compat)
    query: list[tuple[str, str]] | None = None  # the query string when a mapping changes it
    for op in mapping.request:
        if op.where == "path":
            value = op.value.render(variables)
            if value is not None:
                path = value if value.startswith("/") else "/" + value
        elif op.where == "querystring":
            if query is None:
                query = list(variables.query)
            if op.action == "remove":
                query = [(k, v) for k, v in query if k != op.name]
                continue
            value = op.value.render(variables)
            if value is None:
                continue
            if op.action == "overwrite":
                query = [(k, v) for k, v in query if k != op.name]
            query.append((op.name, value))
    forward = [(k, v) for k, v in _apply_headers(mapping.request, forward, variables) if safe_field(k, v)]
    query_text = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query) if query is not None \
        else down.query
    query_text = proxy.query(query_text)
    target = quote(path, safe="/%:@!$&'()*+,;=-._~") + (f"?{query_text}" if query_text else "")
    method = proxy.method or down.method
    framing = length_framing(method, len(body))
    forward_bytes = "".join(f"{k}: {v}\r\n" for k, v in forward).encode("latin-1", "replace")
    request_head = gateway.request_head(down, head, method, target, proxy.host_header, framing, forward_bytes)
    conn = await exchange(proxy.pool, request_head, body, method == "HEAD", method in IDEMPOTENT, proxy.timeout)
    # response
    status = conn.parser.status
    ops = mapping.responses.get(status)
    rules = mapping.rules
    if ops is None:
        if rules is not PLAIN_RULES:  # (the parser already dropped framing fields and refused bad syntax)
            conn.parser.headers[:] = rules.finish(conn.parser.headers, stage.api.name)
        return await gateway.relay_response(down, conn, request_id, fill)
    headers = list(conn.parser.headers)
    variables.response_headers = headers
    if status in mapping.needs_response_body:
        variables.response_body = await read_whole_response(conn)
        status, headers = _mapped_head(ops, status, headers, variables)
        return await gateway.answer(down, status, rules.finish(headers, stage.api.name), variables.response_body,
                                    request_id, fill)
    try:
        new_status, new_headers = _mapped_head(ops, status, headers, variables)
    except BaseException:
        conn.pool.discard(conn)  # the response is not read: the connection cannot be reused
        raise
    conn.parser.headers[:] = rules.finish(new_headers, stage.api.name)
    return await gateway.relay_response(down, conn, request_id, fill, new_status)


def _mapped_head(ops: tuple[Op, ...], status: int, headers: list[tuple[str, str]],
                 variables: _Request) -> tuple[int, list[tuple[str, str]]]:
    for op in ops:
        if op.where == "statuscode":
            value = op.value.render(variables)
            if value is not None:
                try:
                    code = int(value.strip())
                except ValueError:
                    raise GatewayError("INTEGRATION_FAILURE", "Internal server error") from None
                if not 100 <= code <= 599:
                    raise GatewayError("INTEGRATION_FAILURE", "Internal server error")
                status = code
    return status, _apply_headers(ops, headers, variables)
