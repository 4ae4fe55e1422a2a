"""AWS_IAM authorization: SigV4 signatures (service `execute-api`) by the credentials the gateway trusts.

The principals are an AWS shared-credentials file (`server.iam.credentialsFile`, relative to the config
file, or `fastgw serve --iam-credentials FILE`); each profile is one principal:

    [alice]
    aws_access_key_id = AKIA...
    aws_secret_access_key = ...
    aws_session_token = ...     optional: requests must then carry it (X-Amz-Security-Token)
    arn = arn:aws:iam::111122223333:user/alice   optional; default arn:aws:iam::ACCOUNT:user/PROFILE
    account = 111122223333      optional; default the ARN's account, else 123456789012
    user_id = AIDA...           optional; $context.identity.user and .caller (default: the profile name)

A route that requires AWS_IAM while the gateway trusts no credentials is a config error (fail closed).

Per request, as AWS verifies SigV4 (the Authorization header, or a presigned URL's X-Amz-* query
parameters; the header wins when both are present):

    scope       ACCESS_KEY/YYYYMMDD/REGION/execute-api/aws4_request, the date that of X-Amz-Date (or
                Date), the region server.iam.region
    principal   the access key must be trusted; a profile with a session token requires exactly that
                X-Amz-Security-Token, one without refuses any
    time        X-Amz-Date within 5 minutes of now (header form); presigned: not more than 5 minutes in
                the future, and X-Amz-Expires (1..604800 s) not yet past
    payload     x-amz-content-sha256 when sent (UNSIGNED-PAYLOAD: the body is not signed; a hash: the body
                must have it, checked after the signature), else the SHA-256 of the body. The body is read
                only when its hash is needed (NeedsBody: the pipeline reads it within its limits and gives
                the integration the body again). Presigned URLs without the header: UNSIGNED-PAYLOAD or the
                body's hash
    signature   HMAC-SHA256 over the canonical request, compared in constant time. The canonical URI is
                the path with dot segments and empty segments removed, URI-encoded once more than the
                path as sent (every service but S3 encodes twice, as botocore does); the canonical query
                sorts the pairs. Clients differ in how they encode what they sign, so fastgw accepts the
                path and query as they arrived (botocore signs a URL's query as it is written) and in
                AWS's strict form (each part decoded, then encoded RFC 3986 style): both stand for the
                request fastgw serves

Refusals are 403s with AWS's messages: MISSING_AUTHENTICATION_TOKEN when nothing is signed, else
INVALID_SIGNATURE ("Signature expired: ...", "The security token included in the request is invalid.",
the signature mismatch, a malformed Authorization header or scope). A debug log line says why; it never
holds a secret, a token or a signature.
"""

from __future__ import annotations

import calendar
import configparser
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_tz
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from ... import metrics
from ...config.loader import Problem
from ...config.model import Api, AuthorizerConfig, GatewayConfig
from ...context import DEFAULT_ACCOUNT
from ...errors import GatewayError
from ...httpsyntax import header
from .base import Authorization, NeedsBody

log = logging.getLogger("fastgw.authorizers")

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = 300  # seconds either way (AWS)
MAX_EXPIRES = 604_800  # a presigned URL lives at most 7 days (AWS)
LABEL = "AWS_IAM"  # the authorizer label of the metrics

MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")
INVALID_TOKEN = "The security token included in the request is invalid."
QUERY_AUTH = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
QUERY_REQUIRED = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders",
                  "X-Amz-Expires")
AMZ_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")
ACCOUNT = re.compile(r"^\d{12}$")
ARN = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):\S+$")
PROFILE_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_security_token", "arn",
                "account", "user_id")


# -- the principals ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class Principal:
    profile: str
    access_key: str
    secret: str
    token: str | None
    arn: str
    account: str
    user: str
    keys: dict[str, bytes] = field(default_factory=dict)  # signing key by scope date (one region)

    def signing_key(self, date: str, region: str) -> bytes:
        key = self.keys.get(date)
        if key is None:
            key = _hmac(("AWS4" + self.secret).encode(), date)
            for part in (region, SERVICE, TERMINATOR):
                key = _hmac(key, part)
            if len(self.keys) >= 4:
                self.keys.clear()
            self.keys[date] = key
        return key

    def identity(self) -> dict[str, Any]:
        """$context.identity.* (and the Lambda events' identity) of a request this principal signed."""
        return {"accessKey": self.access_key, "accountId": self.account, "caller": self.user, "user": self.user,
                "userArn": self.arn}


def read_credentials(path: str, where: str, problems: list[Problem]) -> dict[str, Principal] | None:
    """The principals of an AWS shared-credentials file, by access key id; None (and problems) when
    the file cannot be trusted as a whole."""
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00", strict=True)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except OSError as exc:
        problems.append(Problem(where, f"cannot read the IAM credentials file {path}: {exc.strerror or exc}"))
        return None
    except (configparser.Error, UnicodeDecodeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(Problem(where, f"{path} is not an AWS shared-credentials file: {text}"))
        return None
    found = len(problems)
    principals: dict[str, Principal] = {}
    for profile in parser.sections():
        section = parser[profile]
        label = f"{path} [{profile}]"
        key = (section.get("aws_access_key_id") or "").strip()
        secret = (section.get("aws_secret_access_key") or "").strip()
        if not key or not secret:
            problems.append(Problem(where, f"{label} needs aws_access_key_id and aws_secret_access_key"))
            continue
        if not re.fullmatch(r"[A-Za-z0-9]{8,128}", key):
            problems.append(Problem(where, f"{label}: aws_access_key_id is not an access key id"))
            continue
        if key in principals:
            problems.append(Problem(where, f"{label}: access key {key} is also profile "
                                    f"[{principals[key].profile}]"))
            continue
        token = (section.get("aws_session_token") or section.get("aws_security_token") or "").strip() or None
        arn = (section.get("arn") or "").strip() or None
        account = (section.get("account") or "").strip() or None
        if account is not None and not ACCOUNT.match(account):
            problems.append(Problem(where, f"{label}: account must be a 12-digit AWS account id"))
            continue
        if arn is not None:
            match = ARN.match(arn)
            if match is None:
                problems.append(Problem(where, f"{label}: arn must be an IAM or STS ARN "
                                        "(arn:aws:iam::ACCOUNT:user/NAME, arn:aws:sts::ACCOUNT:assumed-role/...)"))
                continue
            if account is not None and account != match.group(1):
                problems.append(Problem(where, f"{label}: account {account} is not the ARN's ({match.group(1)})"))
                continue
            account = match.group(1)
        account = account or DEFAULT_ACCOUNT
        arn = arn or f"arn:aws:iam::{account}:user/{profile}"
        user = (section.get("user_id") or "").strip() or profile
        principals[key] = Principal(profile, key, secret, token, arn, account, user)
    if len(problems) > found:
        return None
    if not principals:
        problems.append(Problem(where, f"{path} holds no profile (aws_access_key_id, aws_secret_access_key)"))
        return None
    return principals


# -- canonicalisation (what the signer signed) -------------------------------------------------------------
def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, and empty segments dropped, as AWS's SigV4 signers normalise a path."""
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and output else ""
    return first + "/".join(output) + last


def _strict(text: str) -> str:
    """Decoded, then URI-encoded as SigV4 wants: everything but A-Z a-z 0-9 - _ . ~"""
    return quote(unquote_to_bytes(text), safe="-_.~")


def canonical_uris(path: str) -> list[str]:
    """The canonical URIs a signer may have used for `path` (as it arrived): the path as sent
    encoded once more, and its strict form encoded twice; the same text once when they agree."""
    normalized = remove_dot_segments(path)
    as_sent = quote(normalized, safe="/~")
    strict = "/".join(quote(_strict(segment), safe="-_.~") for segment in normalized.split("/"))
    return [as_sent] if strict == as_sent else [as_sent, strict]


def canonical_queries(query: str, presigned: bool = False) -> list[str]:
    """The canonical query strings a signer may have used: the pairs as sent, sorted (botocore signs
    a URL's query as written), and the strict form (each key and value decoded and encoded again).
    `presigned`: X-Amz-Signature is not part of what was signed."""
    if not query:
        return [""]
    raw: list[tuple[str, str]] = []
    strict: list[tuple[str, str]] = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if presigned and unquote(key) == "X-Amz-Signature":
            continue
        raw.append((key, value))
        if pair:
            strict.append((_strict(key), _strict(value)))
    as_sent = "&".join(f"{k}={v}" for k, v in sorted(raw))
    normal = "&".join(f"{k}={v}" for k, v in sorted(strict))
    return [as_sent] if normal == as_sent else [as_sent, normal]


def canonical_headers(headers: Any, signed: list[str], host: str) -> str | None:
    """`name:value` lines of the signed headers (several values comma-joined, runs of white space as
    one space), each line ended; None when a signed header is absent."""
    wanted = set(signed)
    values: dict[str, list[str]] = {}
    for name, value in headers:
        if name in wanted:
            values.setdefault(name, []).append(value)
    if "host" in wanted and "host" not in values and host:
        values["host"] = [host]  # HTTP/2: :authority
    lines = []
    for name in signed:
        found = values.get(name)
        if found is None:
            return None
        lines.append(name + ":" + ",".join(" ".join(_utf8(v).split()) for v in found) + "\n")
    return "".join(lines)


def _utf8(value: str) -> str:
    """A header value as the client wrote it: the server hands over its bytes as latin-1 text, signers
    sign their text's UTF-8 bytes."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _iso(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


class Refused(Exception):
    """A request the authorizer refuses: its metric decision, gateway response and the log's reason."""

    def __init__(self, decision: str, kind: str, message: str | None, reason: str):
        super().__init__(reason)
        self.decision = decision
        self.kind = kind
        self.message = message
        self.reason = reason


def _invalid(message: str, reason: str | None = None) -> Refused:
    return Refused("invalid", "INVALID_SIGNATURE", message, reason or message)


# -- the signed request --------------------------------------------------------------------------------------
@dataclass(slots=True)
class Signed:
    """What a request says it was signed with."""

    presigned: bool
    credential: str
    signed_headers: str
    signature: str
    amz_date: str
    token: str | None
    expires: int = 0


HEADER_PARTS = ("Credential", "Signature", "SignedHeaders")


def parse_authorization(value: str, headers: Any) -> Signed:
    algorithm, _, rest = value.strip().partition(" ")
    parts: dict[str, str] = {}
    if algorithm == ALGORITHM:
        for item in rest.split(","):
            item = item.strip()
            if not item:
                continue
            name, equal, text = item.partition("=")
            if not equal:
                raise _invalid("Invalid key=value pair (missing equal-sign) in Authorization header")
            parts[name.strip()] = text.strip()
    amz_date = header(headers, "x-amz-date")
    date_header = header(headers, "date") if amz_date is None else None
    missing = [f"Authorization header requires '{name}' parameter." for name in HEADER_PARTS if not parts.get(name)]
    if amz_date is None and date_header is None:
        missing.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
    if missing:
        reason = "not a SigV4 Authorization header" if algorithm != ALGORITHM else "incomplete Authorization header"
        raise _invalid(" ".join(missing), reason)
    if amz_date is None:
        parsed = parsedate_tz(date_header or "")
        if parsed is None:
            raise _invalid("Date must be in RFC 1123 format, or give X-Amz-Date in ISO-8601 basic format")
        amz_date = _iso(calendar.timegm(parsed[:9]) - (parsed[9] or 0))
    return Signed(False, parts["Credential"], parts["SignedHeaders"], parts["Signature"], amz_date.strip(),
                  header(headers, "x-amz-security-token"))


def parse_presigned(query: str) -> Signed | None:
    """The X-Amz-* parameters of a presigned URL; None when the query holds none."""
    params: dict[str, str] = {}
    repeated = False
    for pair in query.split("&"):
        if not pair.startswith("X-Amz-"):
            continue
        key, _, value = pair.partition("=")
        key = unquote(key)
        if key in params:
            repeated = True
        params[key] = unquote(value)
    if not any(name in params for name in QUERY_AUTH):
        return None
    missing = [name for name in QUERY_REQUIRED if not params.get(name)]
    if missing or repeated:
        raise _invalid("AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
                       "'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', 'X-Amz-Expires' (once each). "
                       "Re-examine the query-string parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _invalid(f"X-Amz-Algorithm only supports \"{ALGORITHM}\"")
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_EXPIRES:
        raise _invalid(f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES} (a week)")
    return Signed(True, params["X-Amz-Credential"], params["X-Amz-SignedHeaders"], params["X-Amz-Signature"],
                  params["X-Amz-Date"], params.get("X-Amz-Security-Token"), int(expires))


# -- the authorizer ------------------------------------------------------------------------------------------
class IamAuthorizer:
    """AWS_IAM for one API stage (shared by its routes)."""

    def __init__(self, api_name: str, stage_name: str, region: str, principals: dict[str, Principal]):
        self.region = region
        self.principals = principals
        self.labels = (api_name, stage_name, LABEL)

    def for_route(self, route_plan: Any, route_auth: Any) -> IamRoute:
        return IamRoute(self)

    def verify(self, down: Any, head: Any) -> Authorization | NeedsBody:
        """The principal that signed the request, or NeedsBody; raises Refused."""
        authorization = header(down.headers, "authorization")
        if authorization is not None:
            signed = parse_authorization(authorization, down.headers)
        else:
            found = parse_presigned(down.query) if "X-Amz-" in down.query else None
            if found is None:
                raise Refused("missing", "MISSING_AUTHENTICATION_TOKEN", None, "no Authorization header and no "
                              "presigned X-Amz-* query parameters")
            signed = found
        principal, scope = self.scope_of(signed)
        self.check_time(signed)
        names = signed.signed_headers.split(";")
        if "host" not in names:
            raise _invalid("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        block = canonical_headers(down.headers, names, head.host)
        if block is None:
            raise _invalid(MISMATCH, "a signed header is absent from the request")
        prefix = [f"{down.method}\n{uri}\n{query}\n{block}\n{signed.signed_headers}\n"
                  for uri in canonical_uris(down.path) for query in canonical_queries(down.query, signed.presigned)]
        content_sha = header(down.headers, "x-amz-content-sha256")
        has_body = head.chunked or head.content_length > 0
        if content_sha is not None:
            # The signature covers the header's value: check it first, then that the body has that hash.
            self.check_signature(principal, signed, scope, prefix, (content_sha,))
            if content_sha == UNSIGNED_PAYLOAD:
                return self.allow(principal)
            if has_body:
                return NeedsBody(lambda body: self.finish_hash(principal, content_sha, body))
            return self.finish_hash(principal, content_sha, b"")
        if not has_body:
            payloads: tuple[str, ...] = (EMPTY_SHA256, UNSIGNED_PAYLOAD) if signed.presigned else (EMPTY_SHA256,)
            self.check_signature(principal, signed, scope, prefix, payloads)
            return self.allow(principal)
        if signed.presigned and self.matches(principal, signed, scope, prefix, (UNSIGNED_PAYLOAD,)):
            return self.allow(principal)
        return NeedsBody(lambda body: self.finish_body(principal, signed, scope, prefix, body))

    def scope_of(self, signed: Signed) -> tuple[Principal, str]:
        parts = signed.credential.split("/")
        if len(parts) != 5:
            raise _invalid("Credential must have exactly 5 slash-delimited elements, e.g. "
                           f"keyid/date/region/service/term, got '{signed.credential}'")
        key, date, region, service, term = parts
        if not AMZ_DATE.match(signed.amz_date):
            raise _invalid("X-Amz-Date must be in ISO-8601 basic format (YYYYMMDD'T'HHMMSS'Z')")
        if term != TERMINATOR:
            raise _invalid(f"Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{term}'. ")
        if date != signed.amz_date[:8]:
            raise _invalid("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                           f"HTTP: '{date}' != '{signed.amz_date[:8]}', from '{signed.amz_date}'.")
        if region != self.region:
            raise _invalid(f"Credential should be scoped to a valid region, not '{region}'. ")
        if service != SERVICE:
            raise _invalid(f"Credential should be scoped to correct service: '{SERVICE}'. ")
        principal = self.principals.get(key)
        if principal is None:
            raise Refused("unauthorized", "INVALID_SIGNATURE", INVALID_TOKEN, f"unknown access key {key}")
        if principal.token is None:
            if signed.token is not None:
                raise Refused("unauthorized", "INVALID_SIGNATURE", INVALID_TOKEN,
                              f"access key {key} has no session token, but the request carries one")
        elif signed.token is None or not hmac.compare_digest(signed.token.encode("utf-8", "replace"),
                                                             principal.token.encode("utf-8")):
            raise Refused("unauthorized", "INVALID_SIGNATURE", INVALID_TOKEN,
                          f"access key {key}: the session token is {'missing' if signed.token is None else 'wrong'}")
        return principal, f"{date}/{region}/{SERVICE}/{TERMINATOR}"

    def check_time(self, signed: Signed) -> None:
        try:
            signed_at = calendar.timegm(time.strptime(signed.amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise _invalid("X-Amz-Date must be in ISO-8601 basic format (YYYYMMDD'T'HHMMSS'Z')") from None
        now = int(time.time())
        if signed_at > now + MAX_SKEW:
            raise _invalid(f"Signature not yet current: {signed.amz_date} is still later than "
                           f"{_iso(now + MAX_SKEW)} ({_iso(now)} + 5 min.)")
        if signed.presigned:
            if now > signed_at + signed.expires:
                raise _invalid(f"Signature expired: {signed.amz_date} is now earlier than "
                               f"{_iso(now - signed.expires)} ({_iso(now)} - {signed.expires} sec.)")
        elif signed_at < now - MAX_SKEW:
            raise _invalid(f"Signature expired: {signed.amz_date} is now earlier than {_iso(now - MAX_SKEW)} "
                           f"({_iso(now)} - 5 min.)")

    def matches(self, principal: Principal, signed: Signed, scope: str, prefix: list[str],
                payloads: tuple[str, ...]) -> bool:
        key = principal.signing_key(scope[:8], self.region)
        given = signed.signature.encode("utf-8", "replace")
        found = False
        for start in prefix:
            for payload in payloads:
                text = string_to_sign(signed.amz_date, scope, start + payload)
                expected = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest().encode()
                found |= hmac.compare_digest(expected, given)
        return found

    def check_signature(self, principal: Principal, signed: Signed, scope: str, prefix: list[str],
                        payloads: tuple[str, ...]) -> None:
        if not self.matches(principal, signed, scope, prefix, payloads):
            raise _invalid(MISMATCH, f"access key {principal.access_key}: signature mismatch")

    def finish_hash(self, principal: Principal, content_sha: str, body: bytes) -> Authorization:
        if hashlib.sha256(body).hexdigest() != content_sha.lower():
            raise self.refuse(_invalid("The provided 'x-amz-content-sha256' header does not match what was "
                                         "computed.", f"access key {principal.access_key}: the body is not the "
                                         "one x-amz-content-sha256 names"))
        return self.allow(principal)

    def finish_body(self, principal: Principal, signed: Signed, scope: str, prefix: list[str],
                    body: bytes) -> Authorization:
        if not self.matches(principal, signed, scope, prefix, (hashlib.sha256(body).hexdigest(),)):
            raise self.refuse(_invalid(MISMATCH, f"access key {principal.access_key}: signature mismatch "
                                       "(with the body's hash)"))
        return self.allow(principal)

    def allow(self, principal: Principal) -> Authorization:
        metrics.AUTHORIZER_DECISIONS.labels(*self.labels, "allowed").inc()
        return Authorization("iam", principal_id=principal.arn, identity=principal.identity())

    def refuse(self, refusal: Refused) -> GatewayError:
        """Counted and logged (the reason, never a secret, token or signature): the error to raise."""
        metrics.AUTHORIZER_DECISIONS.labels(*self.labels, refusal.decision).inc()
        log.debug("AWS_IAM %s/%s refused a request: %s", self.labels[0], self.labels[1], refusal.reason)
        return GatewayError(refusal.kind, refusal.message)


class IamRoute:
    """AWS_IAM as one route uses it."""

    __slots__ = ("authorizer",)

    def __init__(self, authorizer: IamAuthorizer):
        self.authorizer = authorizer

    def check(self, down: Any, head: Any, stage: Any, route: Any, route_path: str, params: dict[str, str],
              request_id: str) -> Authorization | NeedsBody:
        try:
            return self.authorizer.verify(down, head)
        except Refused as refusal:
            raise self.authorizer.refuse(refusal) from None


# -- compile -------------------------------------------------------------------------------------------------
def _iam_routes(authorizer: AuthorizerConfig, stage: Any) -> list[str]:
    """Where each route of the stage that requires this AWS_IAM authorizer is written."""
    out = []
    for route_plan in stage.routes:
        auth = route_plan.model.auth if route_plan.model is not None else None
        if auth is None:
            continue
        if auth.authorizationType == "AWS_IAM" or (authorizer.name != LABEL and auth.authorizer == authorizer.name):
            out.append(auth.path)
    return out


def compile_iam(config: GatewayConfig, authorizer: AuthorizerConfig, api: Api, stage: Any,
                problems: list[Problem]) -> IamAuthorizer | None:
    iam = config.server.iam
    if iam.credentialsFile is None:
        for where in _iam_routes(authorizer, stage) or [authorizer.path or api.path]:
            problems.append(Problem(where, "requires AWS_IAM authorization, but the gateway trusts no IAM credentials "
                                    "(give server.iam.credentialsFile, or fastgw serve --iam-credentials FILE); the "
                                    "route is not served"))
        return None
    principals = read_credentials(iam.credentialsFile, "server.iam.credentialsFile", problems)
    if principals is None:
        return None
    return IamAuthorizer(api.name, stage.name, iam.region, principals)
