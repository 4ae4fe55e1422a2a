"""Headers as AWS handles them, shared by every integration type (issue 23).

Three places where a header crosses the gateway, and what each may let through:

    client -> integration   what a backend, a mapping template (`$input.params()`) or a Lambda event
                            sees of the client's headers (`client_headers`): hop-by-hop fields and the
                            gateway's own `X-Fastgw-*` fields never (the request scan already keeps
                            them out of the forwarded block); REST APIs under `awsCompat` also hide
                            what AWS drops when it parses a request (Content-MD5, Max-Forwards,
                            Server, WWW-Authenticate, ...)
    mapping -> integration  a request parameter mapping that targets a header (`request_rule`): AWS
                            refuses some at call time (500 Internal server error; `awsCompat`) and
                            drops others; without `awsCompat` every header the gateway computes
                            itself (framing, Host) is a config error at load
    integration -> client   the response headers a function, a template, a mapping or a backend gave
                            (`ResponseRules.finish`): a field that is not valid HTTP field syntax is
                            dropped and counted; framing fields (Content-Length, Transfer-Encoding,
                            Connection, ...) the gateway did not compute are renamed to
                            `x-amzn-Remapped-<Name>` or dropped, as AWS does (`awsCompat` REST APIs),
                            or dropped (any other API): a mapping can never break the response's framing

Sources: AWS's developer guide ("Amazon API Gateway important notes for REST APIs": the table of
headers dropped, remapped and overwritten per integration type; HTTP API "Reserved headers"), and
LocalStack's AWS-validated model of it (next_gen/execute_api/header_utils.py, integration_request.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import metrics
from ..httpsyntax import safe_field

log = logging.getLogger("fastgw.headers")

GATEWAY_PREFIX = "x-fastgw-"  # fields the gateway itself asserts; never taken from a client
REMAPPED_PREFIX = "x-amzn-Remapped-"

# Fields that frame a message or manage its connection: the gateway computes them itself, and never
# sends one a template, a mapping, a function or a backend gave.
FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer",
                     "trailers", "proxy-connection"))
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
                        "transfer-encoding", "upgrade", "expect"))

# -- client -> integration ------------------------------------------------------------------------
# What a REST API drops while parsing a request: never in a Lambda event, a template's
# $input.params() or a backend request (AWS; LocalStack's DROPPED_FROM_REQUEST_COMMON).
REST_HIDDEN = HOP_BY_HOP | frozenset(("content-length", "content-md5", "max-forwards", "proxy-authenticate", "server",
                                      "www-authenticate"))
# ... and also from what an HTTP/HTTP_PROXY backend receives (the AWS table: Via is dropped)
REST_NOT_FORWARDED = REST_HIDDEN | frozenset(("via",))


def client_headers(headers: list[tuple[str, str]], rest_compat: bool) -> list[tuple[str, str]]:
    """The client's headers as an integration sees them (names lower-case, as the server gives them)."""
    hidden = REST_HIDDEN if rest_compat else HOP_BY_HOP
    return [(k, v) for k, v in headers if k not in hidden and not k.startswith(GATEWAY_PREFIX)]


def forwardable(fields: list[tuple[str, str]], rest_compat: bool) -> list[tuple[str, str]]:
    """The forwarded block's fields (already free of hop-by-hop and gateway fields, by the request
    scan) as an awsCompat REST API's HTTP backend gets them."""
    if not rest_compat:
        return fields
    return [(k, v) for k, v in fields if k.lower() not in REST_NOT_FORWARDED]


# -- mapping -> integration -----------------------------------------------------------------------
OK, FAIL, DROP = "ok", "fail", "drop"
# Header mappings AWS refuses when a request runs ("Execution failed due to configuration error:
# ... header already present": 500 Internal server error), for every REST integration type ...
ILLEGAL_COMMON = frozenset(("content-length", "transfer-encoding", "x-amzn-trace-id", "x-amzn-apigateway-api-id"))
# ... and for Lambda ones (AWS, AWS_PROXY: FUNCTION_CUSTOM, FUNCTION)
ILLEGAL_LAMBDA = ILLEGAL_COMMON | frozenset(("authorization", "connection", "expect", "proxy-authenticate", "te"))
# What AWS drops (Expect, TE, Proxy-Authenticate), overwrites (Host) or fastgw must own (the upstream
# connection's framing and keep-alive) after mappings applied: never sent upstream from a mapping.
NOT_MAPPED_UPSTREAM = FRAMING | frozenset(("host", "expect", "proxy-authenticate"))
LAMBDA_KINDS = frozenset(("FUNCTION", "FUNCTION_CUSTOM"))


def request_rule(name: str, kind: str, aws_compat: bool) -> tuple[str, str | None]:
    """What happens to a REST request parameter mapping onto header `name` (lower-case) of an
    integration of type `kind`: (OK | FAIL | DROP, a config error's message or None).

    FAIL: AWS answers the request 500 Internal server error (awsCompat); DROP: the mapped value is
    not sent (AWS drops or overwrites it, or it is the upstream connection's own); a message: the
    mapping is refused at load (without awsCompat, for everything AWS would fail or drop)."""
    illegal = name in (ILLEGAL_LAMBDA if kind in LAMBDA_KINDS else ILLEGAL_COMMON)
    dropped = kind not in LAMBDA_KINDS and name in NOT_MAPPED_UPSTREAM
    if not illegal and not dropped:
        return OK, None
    if aws_compat:
        return (FAIL if illegal else DROP), None
    why = ("AWS refuses to map it (the call fails with 500)" if illegal else
           "the gateway computes it itself (message framing, the upstream connection or Host)")
    return OK, (f"the header '{name}' cannot be mapped: {why}; with awsCompat: true the mapping is kept and "
                "behaves as on AWS")


# -- integration -> client ------------------------------------------------------------------------
CANONICAL = {name.lower(): name for name in (
    "Authorization", "Connection", "Content-Length", "Content-MD5", "Date", "Expect", "Host", "Max-Forwards",
    "Proxy-Authenticate", "Server", "Trailer", "Upgrade", "User-Agent", "WWW-Authenticate")}
# AWS's table: renamed to x-amzn-Remapped-<Name> for every REST integration type ...
REMAPPED_ALL = frozenset(("authorization", "connection", "content-length", "content-md5", "date", "max-forwards",
                          "server", "user-agent", "www-authenticate"))
# ... and also for non-proxy ones (HTTP, AWS Lambda; LocalStack's REMAPPED_..._NON_PROXY), where
# the proxy types drop them
REMAPPED_NON_PROXY = REMAPPED_ALL | frozenset(("expect", "host", "proxy-authenticate", "trailer", "upgrade"))
DROPPED_ALL = frozenset(("transfer-encoding", "te", "keep-alive", "proxy-connection", "trailers"))
DROPPED_PROXY = DROPPED_ALL | frozenset(("expect", "proxy-authenticate", "trailer", "upgrade"))
NON_PROXY = frozenset(("HTTP", "FUNCTION_CUSTOM", "MOCK"))


@dataclass(frozen=True, slots=True)
class ResponseRules:
    """What may go to the client of the response headers an integration produced."""

    remap: frozenset[str]  # renamed to x-amzn-Remapped-<Name>
    drop: frozenset[str]  # never sent

    def finish(self, headers: list[tuple[str, str]], api: str) -> list[tuple[str, str]]:
        """The headers that may be sent: invalid fields dropped (and counted), framing fields remapped
        or dropped (and counted), values without surrounding whitespace."""
        out: list[tuple[str, str]] = []
        for name, value in headers:
            if not safe_field(name, value):
                metrics.RESPONSE_HEADERS_DROPPED.labels(api, "invalid").inc()
                log.error("response header %r dropped: not a valid HTTP field (a control character, CR, LF or "
                          "NUL, or a character latin-1 cannot carry)", name[:100])
                continue
            lower = name.lower()
            if lower in self.remap:
                name = REMAPPED_PREFIX + CANONICAL.get(lower, name)
            elif lower in self.drop:
                if lower in FRAMING:
                    metrics.RESPONSE_HEADERS_DROPPED.labels(api, "framing").inc()
                    log.warning("response header %r dropped: the gateway frames the response itself", name)
                continue
            out.append((name, value.strip(" \t")))
        return out


AWS_PROXY_RULES = ResponseRules(REMAPPED_ALL, DROPPED_PROXY)
AWS_HTTP_PROXY_RULES = ResponseRules(REMAPPED_ALL, DROPPED_PROXY | frozenset(("via", "host")))
AWS_NON_PROXY_RULES = ResponseRules(REMAPPED_NON_PROXY, DROPPED_ALL)
PLAIN_RULES = ResponseRules(frozenset(), FRAMING)


def response_rules(api_type: str, aws_compat: bool, kind: str) -> ResponseRules:
    """The rules for responses of an integration type (HTTP_PROXY, FUNCTION, HTTP, ...) of an API."""
    if api_type != "REST" or not aws_compat:
        return PLAIN_RULES
    if kind in NON_PROXY:
        return AWS_NON_PROXY_RULES
    return AWS_HTTP_PROXY_RULES if kind == "HTTP_PROXY" else AWS_PROXY_RULES
