"""JWT authorizers (HTTP APIs, `type: jwt`) and Cognito user pool authorizers (REST, `cognito_user_pools`).

Per request:

    token       the identity source's value (default the Authorization header), with or without
                `Bearer `; none -> 401 (`WWW-Authenticate: Bearer`, RFC 6750 §3.1)
    remembered  a token this worker verified before is answered from memory until it expires (a
                bounded LRU keyed by the token): no signature check, no coroutine
    keys        the issuer's JWKS by OIDC discovery (`{issuer}/.well-known/openid-configuration` ->
                `jwks_uri`, unless `jwksUri` is given), fetched in a thread (urllib, 1.5 s, 150 000 B:
                AWS's limits), one fetch in flight per key set. An unknown `kid` refetches at most once
                per 10 s; the last good JWKS keeps serving while the issuer is down, for at most 2 h;
                no JWKS at all -> 401 (never served open)
    signature   PyJWT (cryptography) with the one key the `kid` names; the header's `alg` must be in the
                authorizer's allow-list (never `none` or HMAC) and fit the key's type (and the key's own
                `alg`); the header's `jku`, `x5u`, `jwk`, `x5c` are never read
    claims      iss; aud (or, with `token_use: access`, client_id) among the audiences (Cognito with no
                audience configured: any client of the pool, as AWS); exp required; nbf and iat not in
                the future; 60 s leeway. Cognito: token_use `id` or `access`
    scopes      `scope` (space-separated) or `scp` (a list); a route's authorizationScopes need an access
                token holding one of them: an ID token -> 401, none of them -> 403 insufficient_scope
    refusals    401 {"message":"Unauthorized"} with `WWW-Authenticate: Bearer error="invalid_token"`;
                a debug log line says why (never the token)

The Authorization asserts kind "jwt", the claims, the scopes and principal_id = `sub`; nothing from the
token reaches the upstream except through the mappings the config writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import re
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

import jwt as pyjwt
from jwt.api_jwk import PyJWK

from ... import metrics
from ...config.loader import Problem
from ...config.model import Api, AuthorizerConfig, GatewayConfig
from ...context import DEFAULT_ACCOUNT, DEFAULT_REGION
from ...errors import GatewayError
from .base import Authorization, Counted, compile_sources, unauthorized

log = logging.getLogger("fastgw.authorizers")

LEEWAY = 60.0  # seconds, for exp, nbf and iat
REMEMBERED_ENTRIES = 10_000  # verified tokens per authorizer and worker
REMEMBERED_TOKEN_BYTES = 16_384  # longer tokens are verified every time rather than held
FETCH_TIMEOUT = 1.5  # seconds per HTTP request (AWS: 1500 ms)
FETCH_MAX_BYTES = 150_000  # AWS's JWKS size limit
REFETCH_INTERVAL = 10.0  # at most one fetch per key set per 10 s after a good one (unknown kids)
RETRY_INTERVAL = 1.0  # ... and per 1 s after a failed one
REFRESH_AFTER = 3600.0  # a JWKS older than this is refreshed in the background
STALE_LIMIT = 7200.0  # a JWKS older than this (issuer down) no longer serves

INVALID = 'Bearer error="invalid_token"'
MISSING = "Bearer"

# The key type (and curve) each algorithm needs: the token's alg must fit the key the kid names.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
_JWS = pyjwt.PyJWS()
_now = time.time


class Refused(Exception):
    """Why a token is refused (logged at debug level, never sent)."""


class KeysUnavailable(Exception):
    """No JWKS to verify with: the issuer could not be reached."""


# -- the key sets (one per JWKS source and worker, kept across reloads) --------------------------------------------
class KeySet:
    """One issuer's keys in this worker: fetched lazily, refetched sparingly, served stale while the
    issuer is down (bounded)."""

    def __init__(self, issuer: str, jwks_uri: str | None):
        self.issuer = issuer
        self.jwks_uri = jwks_uri  # None: by discovery
        self.keys: dict[str, dict[str, Any]] | None = None  # kid -> JWK (the raw key object)
        self.prepared: dict[tuple[str, str], Any] = {}  # (kid, alg) -> cryptography key
        self.fetched_at = -math.inf  # monotonic time of the last good fetch
        self.attempted_at = -math.inf  # ... of the last fetch started
        self.failed = False  # the last fetch failed
        self.inflight: asyncio.Future[None] | None = None
        self.fetches = 0  # fetches started (tests, debugging)
        self.fetcher: Callable[[str], bytes] = fetch_url

    # The synchronous look-up: the key for (kid, alg), or None when a fetch is needed first.
    def key_now(self, kid: str, alg: str) -> Any:
        keys = self.keys
        if keys is None:
            return None
        now = time.monotonic()
        if now - self.fetched_at > STALE_LIMIT:
            return None
        jwk = keys.get(kid)
        if jwk is None:
            return None
        if now - self.fetched_at > REFRESH_AFTER and self.may_fetch(now):
            self.start_fetch()  # in the background; the known key serves meanwhile
        return self.prepare(kid, alg, jwk)

    def prepare(self, kid: str, alg: str, jwk: dict[str, Any]) -> Any:
        found = self.prepared.get((kid, alg))
        if found is not None:
            return found
        kty, crv = KEY_TYPES[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise Refused(f"alg {alg} does not fit key {kid!r} ({jwk.get('kty')} {jwk.get('crv') or ''})".rstrip())
        if jwk.get("alg") not in (None, alg):
            raise Refused(f"key {kid!r} is for {jwk.get('alg')}, not {alg}")
        if jwk.get("use") not in (None, "sig"):
            raise Refused(f"key {kid!r} is not a signing key (use {jwk.get('use')})")
        if kty == "OKP" and jwk.get("crv") not in ("Ed25519", "Ed448"):
            raise Refused(f"key {kid!r} is not an EdDSA key")
        try:
            key = PyJWK(jwk, alg).key
        except Exception as exc:  # noqa: BLE001 - a JWK PyJWT cannot read verifies nothing
            raise Refused(f"key {kid!r} cannot be used: {type(exc).__name__}") from None
        if len(self.prepared) > 256:
            self.prepared.clear()
        self.prepared[(kid, alg)] = key
        return key

    def may_fetch(self, now: float) -> bool:
        if self.inflight is not None:
            return False
        return now - self.attempted_at >= (RETRY_INTERVAL if self.failed else REFETCH_INTERVAL)

    def start_fetch(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self.attempted_at = time.monotonic()
        self.fetches += 1
        future: asyncio.Future[None] = loop.create_future()
        self.inflight = future

        def done(task: asyncio.Future[dict[str, dict[str, Any]]]) -> None:
            self.inflight = None
            exc = task.exception()
            if exc is None:
                self.keys = task.result()
                self.prepared = {}
                self.fetched_at = time.monotonic()
                self.failed = False
            else:
                self.failed = True
                log.warning("JWKS of %s could not be fetched: %s", self.issuer, exc)
            if not future.done():
                future.set_result(None)

        loop.run_in_executor(_executor(), self.fetch).add_done_callback(done)
        return future

    async def key(self, kid: str, alg: str) -> Any:
        """The key for (kid, alg), fetching the JWKS when it is unknown (within the rate limit)."""
        key = self.key_now(kid, alg)
        if key is not None:
            return key
        if self.inflight is not None:
            await asyncio.shield(self.inflight)
        elif self.may_fetch(time.monotonic()):
            await asyncio.shield(self.start_fetch())
        if self.keys is None or time.monotonic() - self.fetched_at > STALE_LIMIT:
            raise KeysUnavailable(f"no JWKS from {self.issuer}")
        jwk = self.keys.get(kid)
        if jwk is None:
            raise Refused(f"unknown kid {kid[:64]!r}")
        return self.prepare(kid, alg, jwk)

    # In a thread: discovery, then the JWKS.
    def fetch(self) -> dict[str, dict[str, Any]]:
        jwks_uri = self.jwks_uri
        if jwks_uri is None:
            discovery = _json(self.fetcher(self.issuer.rstrip("/") + "/.well-known/openid-configuration"))
            jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ValueError("the OpenID configuration has no http(s) jwks_uri")
        document = _json(self.fetcher(jwks_uri))
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("the JWKS has no keys list")
        keys = {}
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("kid"), str) and \
                    entry.get("kty") in ("RSA", "EC", "OKP"):
                keys[entry["kid"]] = entry
        if not keys:
            raise ValueError("the JWKS has no usable key with a kid")
        return keys


_EXECUTOR: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """This worker's key fetching threads (its own: a busy handler pool never delays a fetch)."""
    global _EXECUTOR
    if _EXECUTOR is None or _EXECUTOR[0] != os.getpid():
        _EXECUTOR = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastgw-jwks"))
    return _EXECUTOR[1]


def fetch_url(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"accept": "application/json", "user-agent": "fastgw"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310 - http(s) only
        if response.status != 200:
            raise ValueError(f"{url} answered {response.status}")
        body = response.read(FETCH_MAX_BYTES + 1)
    if len(body) > FETCH_MAX_BYTES:
        raise ValueError(f"{url} is larger than {FETCH_MAX_BYTES} bytes")
    return body


def _json(body: bytes) -> Any:
    return json.loads(body)


KEY_SETS: dict[tuple[str, str | None], KeySet] = {}  # (issuer, jwksUri) -> this worker's keys


def key_set(issuer: str, jwks_uri: str | None) -> KeySet:
    found = KEY_SETS.get((issuer, jwks_uri))
    if found is None:
        found = KEY_SETS[(issuer, jwks_uri)] = KeySet(issuer, jwks_uri)
    return found


# -- the authorizer ------------------------------------------------------------------------------------------------
class Verified:
    """A token this worker verified: what it asserts, until when."""

    __slots__ = ("auth", "expires", "id_token", "scopes")

    def __init__(self, auth: Authorization, expires: float, scopes: frozenset[str], id_token: bool):
        self.auth = auth
        self.expires = expires
        self.scopes = scopes
        self.id_token = id_token


class JwtAuthorizer:
    """One JWT or Cognito authorizer of one API stage (shared by the stage's routes)."""

    def __init__(self, config: AuthorizerConfig, api: Api, stage_name: str, issuer: str, source: Any):
        self.config = config
        self.name = config.name
        self.cognito = config.type == "COGNITO_USER_POOLS"
        self.api_name = api.name
        self.stage_name = stage_name
        self.issuer = issuer
        self.audiences = frozenset(config.audience)
        self.algorithms = frozenset(config.algorithms)
        self.source = source  # the one IdentitySource
        self.header_name = source.name if source.where == "header" else None
        self.keys = key_set(issuer, config.jwksUri)
        self.remembered: OrderedDict[str, Verified] = OrderedDict()
        self.labels = (api.name, stage_name, config.name)

    def for_route(self, route_plan: Any, route_auth: Any) -> JwtRoute:
        scopes = tuple(route_auth.authorizationScopes) if route_auth is not None else ()
        return JwtRoute(self, scopes)

    def token(self, down: Any) -> str | None:
        """The identity source's value without `Bearer `; None: none. Two values give "," (never a
        token: a smuggled second one is never chosen)."""
        name = self.header_name
        found = None
        if name is not None:
            for key, value in down.headers:
                if key == name:
                    if found is not None:
                        return ","
                    found = value
        else:
            values = [v for k, v in parse_qsl(down.query, keep_blank_values=True) if k == self.source.name]
            found = values[0] if len(values) == 1 else ("," if values else None)
        if found is None:
            return None
        prefix = found[:7]
        if prefix == "Bearer " or prefix.lower() == "bearer ":
            found = found[7:]
        found = found.strip()  # a token has no spaces: what is left is refused
        return found or None

    # -- verification ---------------------------------------------------------------------------------------------
    def header_of(self, token: str) -> tuple[str, str]:
        """(kid, alg) of a token's header, checked against the allow-list."""
        if token.count(".") != 2:
            raise Refused("not a JWS compact token (three parts)")
        try:
            header = _JWS.get_unverified_header(token)
        except pyjwt.PyJWTError as exc:
            raise Refused(f"unreadable header: {type(exc).__name__}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms or alg not in KEY_TYPES:
            raise Refused(f"alg {str(alg)[:32]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Refused("no usable kid")
        return kid, alg

    def verify(self, token: str, key: Any, alg: str) -> Verified:
        try:
            payload = _JWS.decode(token, key, algorithms=[alg])
        except pyjwt.PyJWTError as exc:
            raise Refused(f"signature: {type(exc).__name__}") from None
        try:
            claims = json.loads(payload)
        except ValueError:
            raise Refused("the payload is not JSON") from None
        if not isinstance(claims, dict):
            raise Refused("the payload is not a JSON object")
        return self.check_claims(claims)

    def check_claims(self, claims: dict[str, Any]) -> Verified:
        now = time.time()
        if claims.get("iss") != self.issuer:
            raise Refused("iss does not match")
        exp = _number(claims, "exp")
        if exp is None:
            raise Refused("no exp")
        if exp + LEEWAY <= now:
            raise Refused("expired")
        for name in ("nbf", "iat"):
            value = _number(claims, name)
            if value is None and name in claims:
                raise Refused(f"{name} is not a number")
            if value is not None and value > now + LEEWAY:
                raise Refused(f"{name} is in the future")
        token_use = claims.get("token_use")
        if self.cognito and token_use not in ("id", "access"):
            raise Refused("token_use is neither id nor access")
        if self.audiences or not self.cognito:
            aud = claims.get("aud")
            if aud is not None:
                ok = (aud in self.audiences) if isinstance(aud, str) else (
                    isinstance(aud, list) and any(isinstance(a, str) and a in self.audiences for a in aud))
                if not ok:
                    raise Refused("aud is not one of the audiences")
            elif token_use == "access" and isinstance(claims.get("client_id"), str):
                if claims["client_id"] not in self.audiences:
                    raise Refused("client_id is not one of the audiences")
            else:
                raise Refused("no aud (nor client_id of an access token)")
        scope = claims.get("scope")
        scp = claims.get("scp")
        scopes: list[str] | None = None
        if isinstance(scope, str):
            scopes = scope.split()
        elif isinstance(scp, list):
            scopes = [s for s in scp if isinstance(s, str)]
        elif isinstance(scp, str):
            scopes = scp.split()
        sub = claims.get("sub")
        auth = Authorization("jwt", principal_id=sub if isinstance(sub, str) else None, claims=claims,
                             scopes=scopes)
        return Verified(auth, exp + LEEWAY, frozenset(scopes or ()), token_use == "id")

    def remember(self, token: str, verified: Verified) -> None:
        if len(token) > REMEMBERED_TOKEN_BYTES:
            return
        self.remembered[token] = verified
        if len(self.remembered) > REMEMBERED_ENTRIES:
            self.remembered.popitem(last=False)


class JwtRoute(Counted):
    """A JWT authorizer as one route uses it (its authorizationScopes)."""

    __slots__ = ("authorizer", "scopes", "wanted")

    def __init__(self, authorizer: JwtAuthorizer, scopes: tuple[str, ...]):
        super().__init__(authorizer.labels)
        self.authorizer = authorizer
        self.scopes = scopes
        self.wanted = frozenset(scopes)

    def check(self, down: Any, head: Any, stage: Any, route: Any, route_path: str, params: dict[str, str],
              request_id: str) -> Any:
        a = self.authorizer
        token = a.token(down)
        if token is None:
            self.count("missing")
            log.debug("authorizer %s: no token", a.name)
            raise unauthorized(challenge=MISSING)
        remembered = a.remembered
        verified = remembered.get(token)
        if verified is not None:
            if verified.expires > _now():
                remembered.move_to_end(token)
                hits = self.hits.counts
                hits[None] = hits.get(None, 0) + 1
                if not self.scopes or (not verified.id_token and not self.wanted.isdisjoint(verified.scopes)):
                    counts = self.decisions.counts
                    counts["allowed"] = counts.get("allowed", 0) + 1
                    return verified.auth
                return self.grant(verified)  # refuses
            del remembered[token]
        try:
            kid, alg = a.header_of(token)
            key = a.keys.key_now(kid, alg)
            if key is None:
                return self.fetch_and_verify(token, kid, alg)
            verified = a.verify(token, key, alg)
        except Refused as exc:
            self.refuse(str(exc))
        a.remember(token, verified)
        return self.grant(verified)

    async def fetch_and_verify(self, token: str, kid: str, alg: str) -> Authorization:
        a = self.authorizer
        started = time.perf_counter()
        try:
            key = await a.keys.key(kid, alg)
            verified = a.verify(token, key, alg)
        except Refused as exc:
            self.refuse(str(exc))
        except KeysUnavailable as exc:
            self.count("error")
            log.warning("authorizer %s refused a token: %s", a.name, exc)
            raise unauthorized(challenge=INVALID) from None
        finally:
            metrics.AUTHORIZER_DURATION.labels(*a.labels).observe(time.perf_counter() - started)
        a.remember(token, verified)
        return self.grant(verified)

    def refuse(self, why: str) -> None:
        self.count("unauthorized")
        log.debug("authorizer %s refused a token: %s", self.authorizer.name, why)
        raise unauthorized(challenge=INVALID)

    def grant(self, verified: Verified) -> Authorization:
        if self.scopes:
            if verified.id_token:
                self.refuse("an ID token where scopes are required (an access token is)")
            if self.wanted.isdisjoint(verified.scopes):
                self.count("denied")
                log.debug("authorizer %s: the token has none of the scopes %s", self.authorizer.name, self.scopes)
                challenge = f'Bearer scope="{" ".join(self.scopes)}" error="insufficient_scope"'
                raise GatewayError("ACCESS_DENIED", headers=(("www-authenticate", challenge),))
        self.count("allowed")
        return verified.auth


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def cognito_issuer(arn: str) -> str | None:
    """arn:aws:cognito-idp:{region}:{account}:userpool/{poolId} -> https://cognito-idp.{region}.amazonaws.com/{poolId}"""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "cognito-idp" or not parts[5].startswith("userpool/"):
        return None
    pool = parts[5][len("userpool/"):]
    if not parts[3] or not pool or "/" in pool:
        return None
    return f"https://cognito-idp.{parts[3]}.amazonaws.com/{pool}"


PARAMETER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_:.\-]*)\}")


def _with_parameters(text: str | None, parameters: dict[str, Any], where: str, problems: list[Problem]) -> str | None:
    """`${name}` in an imported document's authorizer (a pool ARN, an issuer): the config's parameters
    (--param)."""
    if text is None or "${" not in text:
        return text
    missing = [name for name in PARAMETER.findall(text) if name not in parameters]
    if missing:
        problems.append(Problem(where, f"needs the value of '{missing[0]}': give it with --param {missing[0]}=VALUE "
                                f"(or parameters: {{{missing[0]}: VALUE}} in the config)"))
        return None
    return PARAMETER.sub(lambda match: str(parameters[match.group(1)]), text)


def compile_jwt(config: GatewayConfig, authorizer: AuthorizerConfig, api: Api, stage_plan: Any,
                problems: list[Problem]) -> JwtAuthorizer | None:
    path = authorizer.path
    parameters = {"AWS::Region": DEFAULT_REGION, "AWS::AccountId": DEFAULT_ACCOUNT, **(config.parameters or {})}
    found: list[Problem] = []
    arns = [_with_parameters(arn, parameters, f"{path}.providerARNs", found) for arn in authorizer.providerARNs]
    audience = [_with_parameters(a, parameters, f"{path}.jwtConfiguration.audience", found)
                for a in authorizer.audience]
    substituted = dataclasses.replace(
        authorizer, providerARNs=arns, audience=audience,
        issuer=_with_parameters(authorizer.issuer, parameters, f"{path}.jwtConfiguration.issuer", found),
        jwksUri=_with_parameters(authorizer.jwksUri, parameters, f"{path}.jwksUri", found))
    if found:
        problems.extend(found[:1])
        return None
    authorizer = substituted
    sources = compile_sources(authorizer.identitySource, f"{path}.identitySource", problems)
    if sources is None:
        return None
    if len(sources) != 1 or sources[0].where not in ("header", "querystring"):
        problems.append(Problem(f"{path}.identitySource", "a JWT authorizer reads its token from one header or "
                                "query string parameter"))
        return None
    issuer = authorizer.issuer
    if issuer is None:
        issuers = {cognito_issuer(arn) for arn in authorizer.providerARNs}
        if None in issuers:
            problems.append(Problem(f"{path}.providerARNs", "must be Cognito user pool ARNs "
                                    "(arn:aws:cognito-idp:REGION:ACCOUNT:userpool/POOL_ID)"))
            return None
        if len(issuers) != 1:
            problems.append(Problem(f"{path}.providerARNs", "fastgw verifies tokens of one user pool per authorizer"))
            return None
        issuer = issuers.pop()
    if issuer is None or not issuer.startswith(("https://", "http://")):
        problems.append(Problem(f"{path}.jwtConfiguration.issuer", "must be an https:// (or http://) URL"))
        return None
    if authorizer.jwksUri is not None and not authorizer.jwksUri.startswith(("https://", "http://")):
        problems.append(Problem(f"{path}.jwksUri", "must be an https:// (or http://) URL"))
        return None
    if authorizer.type == "JWT" and not authorizer.audience:
        problems.append(Problem(f"{path}.jwtConfiguration.audience", "is required"))
        return None
    return JwtAuthorizer(authorizer, api, stage_plan.name, issuer, sources[0])
