"""Typed gateway responses (AWS's gateway response types) and the errors that raise them.

Every error the gateway itself answers is one of these types, so an operator can override status,
headers and body per API (`gatewayResponses`) with the DEFAULT_4XX / DEFAULT_5XX fallbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

# type -> (default status, x-amzn-ErrorType, default message)
RESPONSE_TYPES: dict[str, tuple[int, str, str]] = {
    "ACCESS_DENIED": (403, "AccessDeniedException", "Forbidden"),
    "API_CONFIGURATION_ERROR": (500, "ApiConfigurationException", "Internal server error"),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, "AuthorizerConfigurationException", "Internal server error"),
    "AUTHORIZER_FAILURE": (500, "AuthorizerFailureException", "Internal server error"),
    "BAD_REQUEST_PARAMETERS": (400, "BadRequestException", "Bad Request"),
    "BAD_REQUEST_BODY": (400, "BadRequestException", "Invalid request body"),
    "DEFAULT_4XX": (400, "BadRequestException", "Bad Request"),
    "DEFAULT_5XX": (500, "InternalServerErrorException", "Internal server error"),
    "EXPIRED_TOKEN": (403, "ExpiredTokenException", "The security token included in the request is expired"),
    "INTEGRATION_FAILURE": (502, "InternalServerErrorException", "Bad Gateway"),
    "INTEGRATION_TIMEOUT": (504, "InternalServerErrorException", "Endpoint request timed out"),
    "INVALID_API_KEY": (403, "ForbiddenException", "Forbidden"),
    "INVALID_SIGNATURE": (403, "InvalidSignatureException", "Invalid signature"),
    "MISSING_AUTHENTICATION_TOKEN": (403, "MissingAuthenticationTokenException", "Missing Authentication Token"),
    "QUOTA_EXCEEDED": (429, "LimitExceededException", "Limit Exceeded"),
    "REQUEST_TOO_LARGE": (413, "RequestTooLargeException", "Request Too Large"),
    "RESOURCE_NOT_FOUND": (404, "ResourceNotFoundException", "Not Found"),
    "THROTTLED": (429, "TooManyRequestsException", "Too Many Requests"),
    "UNAUTHORIZED": (401, "UnauthorizedException", "Unauthorized"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "BadRequestException", "Unsupported Media Type"),
    "WAF_FILTERED": (403, "WafFilteredException", "Forbidden"),
    # fastgw's own types: HTTP statuses AWS has no gateway response type for. They fall back to
    # DEFAULT_4XX / DEFAULT_5XX overrides like the AWS types do.
    "METHOD_NOT_ALLOWED": (405, "MethodNotAllowedException", "Method Not Allowed"),
    "REQUEST_TIMEOUT": (408, "RequestTimeoutException", "Request Timeout"),
    "URI_TOO_LONG": (414, "UriTooLongException", "Request-URI Too Long"),
    "HEADERS_TOO_LARGE": (431, "RequestHeaderFieldsTooLargeException", "Request Header Fields Too Large"),
    "EXPECTATION_FAILED": (417, "ExpectationFailedException", "Expectation Failed"),
    "NOT_IMPLEMENTED": (501, "NotImplementedException", "Not Implemented"),
    "SERVICE_UNAVAILABLE": (503, "ServiceUnavailableException", "Service Unavailable"),
}
# The HTTP-API flavour of "no route" is a plain 404.
HTTP_NOT_FOUND = "RESOURCE_NOT_FOUND"


class ErrorMessage(str):
    """A gateway response message that also carries AWS's `$context.error.validationErrorString` (the
    details of a failed request validation, fastgw/policies/validation.py)."""

    validation: str

    def __new__(cls, message: str, validation: str = "") -> ErrorMessage:
        self = super().__new__(cls, message)
        self.validation = validation
        return self


class ClientDisconnected(Exception):
    """The client went away while its response was being streamed: nothing more can reach it, so
    the upstream exchange is dropped (not read to its end for nobody). Counted and logged as 499
    (nginx's "client closed request"); no gateway response, no traceback."""


class ClientStalled(ClientDisconnected):
    """The client took nothing of a streamed response for limits.sendIdleTimeoutMs: the response
    is aborted (and the upstream exchange dropped) rather than held open for it."""


CLIENT_CLOSED_REQUEST = 499


class GatewayError(Exception):
    """Raised by a pipeline stage; answered with the API's gateway response of `kind`."""

    def __init__(self, kind: str, message: str | None = None, headers: tuple[tuple[str, str], ...] = (),
                 close: bool = False):
        super().__init__(message or RESPONSE_TYPES[kind][2])
        self.kind = kind
        self.message = message or RESPONSE_TYPES[kind][2]
        self.headers = headers
        # Close the client connection after answering: what follows on it cannot be trusted to be
        # framed the way the gateway understood the request.
        self.close = close


@dataclass(frozen=True, slots=True)
class GatewayResponseOverride:
    """One `gatewayResponses` entry of the config, compiled."""

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None  # `$context.error.message` / `.messageString` / `.responseType` are substituted


@dataclass(slots=True)
class GatewayResponses:
    """The gateway responses of one API: defaults merged with the API's overrides."""

    overrides: dict[str, GatewayResponseOverride] = field(default_factory=dict)

    def render(self, kind: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
        status, error_type, _ = RESPONSE_TYPES[kind]
        fallback = self.overrides.get("DEFAULT_4XX" if status < 500 else "DEFAULT_5XX")
        own = self.overrides.get(kind)
        headers = [("content-type", "application/json"), ("x-amzn-errortype", error_type)]
        body_template = None
        for override in (fallback, own):
            if override is None:
                continue
            # As in AWS, a status set on DEFAULT_4XX/5XX applies to every type of that class
            # that does not set its own.
            if override.status is not None:
                status = override.status
            headers.extend(override.headers)
            if override.body is not None:
                body_template = override.body
        if body_template is None:
            body = orjson.dumps({"message": message})
        else:
            quoted = orjson.dumps(str(message)).decode()
            # JSON-escaped, so that it can stand inside a JSON string of the template
            validation = orjson.dumps(getattr(message, "validation", "")).decode()[1:-1]
            body = (
                body_template.replace("$context.error.validationErrorString", validation)
                .replace("$context.error.messageString", quoted)
                .replace("$context.error.message", message)
                .replace("$context.error.responseType", kind)
                .encode()
            )
        return status, headers, body


DEFAULT_RESPONSES = GatewayResponses()


class GatewayAnswered(Exception):
    """A stage answered the request itself (a CORS preflight), with an empty body."""

    def __init__(self, status: int, headers: list[tuple[str, str]]):
        super().__init__(status)
        self.status = status
        self.headers = headers
