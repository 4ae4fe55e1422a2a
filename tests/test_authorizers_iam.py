"""AWS_IAM authorization (issue 15): SigV4 (service execute-api) by the credentials the gateway trusts.

The client is botocore's own signer (SigV4Auth, SigV4QueryAuth); httpx sends exactly what it signed to
a real gateway (`fastgw serve`) in front of a real upstream. The canonicalisation is also compared with
botocore's for a sample of awkward paths and queries."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from support.gateway import GatewayProcess
from support.upstream import RecordingUpstream

from fastgw.config.loader import Problem
from fastgw.errors import GatewayError
from fastgw.policies.authorizers import iam
from fastgw.policies.authorizers.base import Authorization, NeedsBody

TESTS = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": str(TESTS)}

ALICE = Credentials("AKIAALICE00000000001", "alice/Secret+Key0000000000000000000000")
TEMP = Credentials("ASIATEMP000000000001", "temp-secret-0000000000000000000000000000",
                   "FwoGZXIvYXdzEJr//////////wEaDAbc+/token==")
UNKNOWN = Credentials("AKIANOBODY0000000001", "nobody-secret")
CREDENTIALS = f"""
[alice]
aws_access_key_id = {ALICE.access_key}
aws_secret_access_key = {ALICE.secret_key}
arn = arn:aws:iam::111122223333:user/alice
user_id = AIDAALICE0000000000

[temp]
aws_access_key_id = {TEMP.access_key}
aws_secret_access_key = {TEMP.secret_key}
aws_session_token = {TEMP.token}
arn = arn:aws:sts::111122223333:assumed-role/Reader/session1
"""

CONFIG = """
server:
  iam: {credentialsFile: creds.ini, region: us-east-1}
functions:
  echo: handlers.lambdas:echo
apis:
  - name: shop
    type: REST
    stages:
      prod: {}
    routes:
      - route: ANY /items/{proxy+}
        authorizationType: AWS_IAM
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/{proxy}"}
      - route: GET /open
        integration: {type: HTTP_PROXY, uri: "http://UPSTREAM/open"}
      - route: GET /whoami
        authorizationType: AWS_IAM
        integration:
          type: MOCK
          requestTemplates:
            application/json: '{"statusCode": 200}'
          responses:
            default:
              statusCode: "200"
              responseTemplates:
                application/json: |
                  {"userArn": "$context.identity.userArn", "accessKey": "$context.identity.accessKey",
                   "accountId": "$context.identity.accountId", "caller": "$context.identity.caller",
                   "user": "$context.identity.user", "principalId": "$context.authorizer.principalId"}
      - route: ANY /fn
        authorizationType: AWS_IAM
        integration: {type: FUNCTION, uri: echo}
  - name: web
    type: HTTP
    stages:
      $default: {}
    routes:
      - route: ANY /v2/fn
        authorizationType: AWS_IAM
        integration: {type: FUNCTION, uri: echo}
"""


# -- the client: botocore signs, httpx sends exactly that ------------------------------------------------------
def sign(method: str, url: str, credentials: Credentials = ALICE, body: bytes = b"",
         headers: dict[str, str] | None = None, region: str = "us-east-1", service: str = "execute-api",
         unsigned_payload: bool = False, at: datetime.datetime | None = None,
         presign: int | None = None) -> tuple[str, str, dict[str, str], bytes]:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    if unsigned_payload:
        request.context["payload_signing_enabled"] = False
    signer = SigV4QueryAuth(credentials, service, region, expires=presign) if presign is not None \
        else SigV4Auth(credentials, service, region)
    when = at or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    # what goes on the wire is what botocore signed
    wire = httpx.URL(request.url)
    split = urlsplit(request.url)
    assert wire.raw_path.decode() == split.path + (f"?{split.query}" if split.query else "")
    return request.method, request.url, dict(request.headers.items()), body


def send(signed: tuple[str, str, dict[str, str], bytes], **changes) -> httpx.Response:
    method, url, headers, body = signed
    headers = {**headers, **changes.pop("headers", {})}
    return httpx.request(method, changes.pop("url", url), headers=headers, content=changes.pop("content", body),
                         timeout=10, **changes)


def refused(response: httpx.Response, message: str, error_type: str = "InvalidSignatureException") -> None:
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-errortype"] == error_type
    assert response.json()["message"].startswith(message), response.json()["message"]


def ago(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(seconds=seconds)


# -- one gateway for the request tests -----------------------------------------------------------------------
def rsgi(config: str) -> str:
    """The config served by granian's RSGI interface, which hands over paths percent-decoded."""
    config = config.replace("server:\n", "server:\n  interface: rsgi\n")
    return config.replace("    type: REST\n", "    type: REST\n    encodedSlashes: DECODE\n").replace(
        "    type: HTTP\n", "    type: HTTP\n    encodedSlashes: DECODE\n")


# ASGI (the default for AWS_IAM routes: SigV4 signs the raw path) and RSGI differ in what they hand over.
@pytest.fixture(scope="module", params=["asgi", "rsgi"])
def served(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    directory = tmp_path_factory.mktemp("iam")
    (directory / "creds.ini").write_text(CREDENTIALS)
    upstream = RecordingUpstream().start()
    config = CONFIG.replace("UPSTREAM", upstream.address)
    gateway = GatewayProcess(rsgi(config) if request.param == "rsgi" else config, directory, env=ENV)
    try:
        gateway.start()
        yield SimpleNamespace(gateway=gateway, upstream=upstream, url=gateway.url, interface=request.param)
    finally:
        gateway.stop()
        upstream.stop()


@pytest.fixture
def gw(served, request: pytest.FixtureRequest):
    request.node.fastgw_gateways = [served.gateway]  # a failure shows the gateway's log (conftest.py)
    return served


def test_a_signed_get_reaches_the_upstream_and_nothing_unsigned_does(gw):
    before = len(gw.upstream.requests)
    response = send(sign("GET", f"{gw.url}/prod/items/a"))
    assert response.status_code == 200, response.text
    assert gw.upstream.requests[-1].target == "/a"
    response = httpx.get(f"{gw.url}/prod/items/a", timeout=10)
    refused(response, "Missing Authentication Token", "MissingAuthenticationTokenException")
    assert response.json() == {"message": "Missing Authentication Token"}
    assert httpx.get(f"{gw.url}/prod/open", timeout=10).status_code == 200  # a route without AWS_IAM
    refused(httpx.get(f"{gw.url}/prod/items/a", headers={"authorization": "Bearer abc"}, timeout=10),
            "Authorization header requires 'Credential' parameter.")
    assert len(gw.upstream.requests) == before + 2


def test_a_body_is_signed_by_its_hash_and_reaches_the_upstream_whole(gw):
    body = json.dumps({"n": list(range(3000))}).encode()  # larger than one read
    signed = sign("POST", f"{gw.url}/prod/items/orders", body=body, headers={"Content-Type": "application/json"})
    response = send(signed)
    assert response.status_code == 200, response.text
    assert gw.upstream.requests[-1].body == body
    # chunked on the wire: the same bytes, the same signature
    response = send(signed, content=iter([body[:100], body[100:]]))
    assert response.status_code == 200, response.text
    assert gw.upstream.requests[-1].body == body
    # the body changed after signing
    refused(send(signed, content=body.replace(b"2999", b"9999")), iam.MISMATCH)


def test_unsigned_payload_and_a_declared_payload_hash(gw):
    body = b'{"a": 1}'
    response = send(sign("PUT", f"{gw.url}/prod/items/u", body=body, unsigned_payload=True))
    assert response.status_code == 200, response.text
    assert gw.upstream.requests[-1].body == body
    declared = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    signed = sign("PUT", f"{gw.url}/prod/items/d", body=body, headers=declared)
    assert send(signed).status_code == 200
    assert gw.upstream.requests[-1].body == body
    refused(send(signed, content=b'{"a": 2}'), "The provided 'x-amz-content-sha256' header does not match")
    # a declared hash can't be swapped for UNSIGNED-PAYLOAD: the header is part of what was signed
    refused(send(signed, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, content=b'{"a": 2}'), iam.MISMATCH)


def test_queries_with_special_characters_and_repeated_keys(gw):
    url = (f"{gw.url}/prod/items/q?b=2&a=%2F%20x&a=1&c=%7E&d=&e=a%2Bb&f=%2A&g=caf%C3%A9&h=x%3Dy%26z"
           "&empty=&sp=a%20b")
    signed = sign("GET", url)
    response = send(signed)
    assert response.status_code == 200, response.text
    refused(send(signed, url=url.replace("a=1", "a=2")), iam.MISMATCH)
    refused(send(signed, url=url + "&extra=1"), iam.MISMATCH)
    refused(send(signed, url=url.replace("&a=1", "")), iam.MISMATCH)


# Encoded minimally (what must be) or strictly (all but A-Za-z0-9-_.~): either way, on both interfaces.
PATHS = ["/prod/items/a%20b/c%3Ad", "/prod/items/x:y@z,w", "/prod/items/t%25", "/prod/items/%2541",
         "/prod/items/caf%C3%A9/%E2%82%AC", "/prod/items/%28a%29%21"]
# Encoded neither way: only the raw path (ASGI) says what was signed.
MIXED = ["/prod/items/caf%C3%A9/%7Euser", "/prod/items/a%2Bb/(1)!'*"]


@pytest.mark.parametrize("path", PATHS + MIXED)
def test_paths_with_encoded_characters(gw, path):
    signed = sign("GET", gw.url + path)
    response = send(signed)
    if gw.interface == "rsgi" and path in MIXED:
        # RSGI hands over the path decoded: fastgw signs it encoded minimally and strictly, and this
        # client did neither (the interface AWS_IAM APIs get by default is ASGI, docs/DESIGN.md)
        refused(response, iam.MISMATCH)
        return
    assert response.status_code == 200, (path, response.text)
    refused(send(signed, url=gw.url + path.replace("/items/", "/items/z")), iam.MISMATCH)


def test_an_encoded_slash(gw):
    signed = sign("GET", gw.url + "/prod/items/a%2Fb")
    response = send(signed)
    if gw.interface == "asgi":
        # ASGI checks the signature against the raw path, which is what was signed; encodedSlashes DECODE
        # (the default) then takes %2F as a separator
        assert response.status_code == 200
        assert gw.upstream.requests[-1].target == "/a/b"
    else:
        # RSGI hands over the path decoded: /a%2Fb arrives as /a/b, which is not what was signed
        refused(response, iam.MISMATCH)


def test_presigned_urls(gw):
    url = f"{gw.url}/prod/items/p?x=1&y=a%20b"
    _, presigned, headers, _ = sign("GET", url, presign=300)
    assert "X-Amz-Signature=" in presigned and "authorization" not in {k.lower() for k in headers}
    response = httpx.get(presigned, timeout=10)
    assert response.status_code == 200, response.text
    assert "X-Amz-Credential" in gw.upstream.requests[-1].target
    refused(httpx.get(presigned.replace("x=1", "x=2"), timeout=10), iam.MISMATCH)
    _, expired, _, _ = sign("GET", url, presign=60, at=ago(120))
    refused(httpx.get(expired, timeout=10), "Signature expired:")
    _, long_ago_but_valid, _, _ = sign("GET", url, presign=3600, at=ago(1800))
    assert httpx.get(long_ago_but_valid, timeout=10).status_code == 200
    _, temp, _, _ = sign("GET", url, credentials=TEMP, presign=300)
    assert "X-Amz-Security-Token" in temp
    assert httpx.get(temp, timeout=10).status_code == 200


def test_session_tokens(gw):
    url = f"{gw.url}/prod/items/t"
    signed = sign("GET", url, credentials=TEMP)
    assert send(signed).status_code == 200
    without = Credentials(TEMP.access_key, TEMP.secret_key)  # the right key, no token
    refused(send(sign("GET", url, credentials=without)), iam.INVALID_TOKEN)
    wrong = Credentials(TEMP.access_key, TEMP.secret_key, TEMP.token[:-3] + "xx=")
    refused(send(sign("GET", url, credentials=wrong)), iam.INVALID_TOKEN)
    # a long-term key with a token it never had
    refused(send(sign("GET", url, credentials=Credentials(ALICE.access_key, ALICE.secret_key, "t"))),
            iam.INVALID_TOKEN)


def test_wrong_secret_unknown_key_and_tampered_headers(gw):
    url = f"{gw.url}/prod/items/k"
    refused(send(sign("GET", url, credentials=Credentials(ALICE.access_key, "not-the-secret"))), iam.MISMATCH)
    refused(send(sign("GET", url, credentials=UNKNOWN)), iam.INVALID_TOKEN)
    signed = sign("GET", url, headers={"X-Tenant": "blue   team", "Accept": "application/json"})
    assert send(signed).status_code == 200
    refused(send(signed, headers={"X-Tenant": "red team"}), iam.MISMATCH)
    assert send(signed, headers={"X-Unsigned": "anything"}).status_code == 200  # not signed, not checked
    method, _, headers, body = signed
    refused(send(("DELETE", url, headers, body)), iam.MISMATCH)
    signature = re.search(r"Signature=([0-9a-f]+)", headers["Authorization"]).group(1)
    forged = headers["Authorization"].replace(signature, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    refused(send(signed, headers={"Authorization": forged}), iam.MISMATCH)


def test_clock_skew_region_and_service(gw):
    url = f"{gw.url}/prod/items/c"
    refused(send(sign("GET", url, at=ago(6 * 60))), "Signature expired:")
    refused(send(sign("GET", url, at=ago(-6 * 60))), "Signature not yet current:")
    assert send(sign("GET", url, at=ago(4 * 60))).status_code == 200
    refused(send(sign("GET", url, region="eu-west-1")), "Credential should be scoped to a valid region")
    refused(send(sign("GET", url, service="lambda")), "Credential should be scoped to correct service")


def test_the_principal_fills_context_identity(gw):
    response = send(sign("GET", f"{gw.url}/prod/whoami"))
    assert response.status_code == 200, response.text
    assert response.json() == {"userArn": "arn:aws:iam::111122223333:user/alice", "accessKey": ALICE.access_key,
                               "accountId": "111122223333", "caller": "AIDAALICE0000000000",
                               "user": "AIDAALICE0000000000", "principalId": "arn:aws:iam::111122223333:user/alice"}
    body = b'{"hello": "lambda"}'
    response = send(sign("POST", f"{gw.url}/prod/fn", credentials=TEMP, body=body))
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    assert event["body"] == body.decode()
    identity = event["requestContext"]["identity"]
    assert identity["userArn"] == "arn:aws:sts::111122223333:assumed-role/Reader/session1"
    assert (identity["accessKey"], identity["accountId"], identity["user"]) == (TEMP.access_key, "111122223333",
                                                                                "temp")
    response = send(sign("POST", f"{gw.url}/v2/fn", body=body))
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    assert event["body"] == body.decode()
    assert event["requestContext"]["authorizer"]["iam"]["userArn"] == "arn:aws:iam::111122223333:user/alice"
    assert event["requestContext"]["authorizer"]["iam"]["accessKey"] == ALICE.access_key
    refused(httpx.post(f"{gw.url}/v2/fn", content=body, timeout=10), "Missing Authentication Token",
            "MissingAuthenticationTokenException")


def test_decisions_are_counted(gw):
    send(sign("GET", f"{gw.url}/prod/items/m", credentials=Credentials(ALICE.access_key, "wrong-secret")))
    send(sign("GET", f"{gw.url}/prod/items/m", credentials=UNKNOWN))
    send(sign("GET", f"{gw.url}/prod/items/m"))
    httpx.get(f"{gw.url}/prod/items/m", timeout=10)
    scrape = httpx.get(f"{gw.gateway.admin}/metrics", timeout=10).text
    counts = dict(re.findall(r'fastgw_authorizer_decisions_total\{[^}]*authorizer="AWS_IAM"[^}]*decision="(\w+)"'
                             r"[^}]*\} (\S+)", scrape))
    assert float(counts["allowed"]) >= 1 and float(counts["invalid"]) >= 1, counts
    assert float(counts["missing"]) >= 1 and float(counts["unauthorized"]) >= 1, counts


# -- loading: fail closed, the config fields, the flag -----------------------------------------------------------
def validate(tmp_path: Path, config: str, *args: str, name: str = "gw.yaml") -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(config)
    return subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path), *args], capture_output=True,
                          text=True, env={**__import__("os").environ, **ENV}, timeout=60)


def test_an_aws_iam_route_without_trusted_credentials_does_not_load(tmp_path):
    config = CONFIG.replace("  iam: {credentialsFile: creds.ini, region: us-east-1}\n", "  port: 8080\n")
    result = validate(tmp_path, config)
    assert result.returncode == 2, result.stdout
    assert "apis[0].routes[0]" in result.stderr and "trusts no IAM credentials" in result.stderr
    assert "apis[0].routes[2]" in result.stderr and "apis[1].routes[0]" in result.stderr
    (tmp_path / "elsewhere.ini").write_text(CREDENTIALS)
    result = validate(tmp_path, config, "--iam-credentials", str(tmp_path / "elsewhere.ini"))
    assert result.returncode == 0, result.stderr


def test_aws_iam_apis_get_the_raw_path_by_default(tmp_path):
    (tmp_path / "creds.ini").write_text(CREDENTIALS)
    decoded = rsgi(CONFIG).replace("  interface: rsgi\n", "")
    result = validate(tmp_path, decoded)
    assert result.returncode == 0 and "interface asgi" in result.stdout, result.stdout + result.stderr
    without_iam = re.sub(r" *authorizationType: AWS_IAM\n", "", decoded)
    result = validate(tmp_path, without_iam)
    assert result.returncode == 0 and "interface rsgi" in result.stdout, result.stdout + result.stderr


def test_bad_iam_settings_are_config_errors(tmp_path):
    result = validate(tmp_path, CONFIG.replace("region: us-east-1", "region: Mars"))
    assert result.returncode == 2 and "server.iam.region" in result.stderr and "Mars" in result.stderr
    result = validate(tmp_path, CONFIG)  # creds.ini is relative to the config file, which has none
    assert result.returncode == 2 and "cannot read the IAM credentials file" in result.stderr
    (tmp_path / "creds.ini").write_text("[broken]\naws_access_key_id = AKIABROKEN000001\n")
    result = validate(tmp_path, CONFIG)
    assert result.returncode == 2 and "[broken] needs aws_access_key_id and aws_secret_access_key" in result.stderr
    (tmp_path / "creds.ini").write_text(CREDENTIALS)
    assert validate(tmp_path, CONFIG).returncode == 0


OPENAPI = """
openapi: 3.0.1
info: {title: signed, version: "1"}
components:
  securitySchemes:
    sigv4: {type: apiKey, name: Authorization, in: header, x-amazon-apigateway-authtype: awsSigv4}
paths:
  /by-extension:
    get:
      x-amazon-apigateway-auth: {type: AWS_IAM}
      x-amazon-apigateway-integration: {type: http_proxy, httpMethod: GET, uri: "http://UPSTREAM/x"}
  /by-scheme:
    get:
      security: [{sigv4: []}]
      x-amazon-apigateway-integration: {type: http_proxy, httpMethod: GET, uri: "http://UPSTREAM/y"}
  /open:
    get:
      x-amazon-apigateway-integration: {type: http_proxy, httpMethod: GET, uri: "http://UPSTREAM/z"}
"""


def test_openapi_routes_served_with_the_command_line_flag(tmp_path, start_gateway, upstream):
    document = OPENAPI.replace("UPSTREAM", upstream.address)
    result = validate(tmp_path, document, name="api.yaml")
    assert result.returncode == 2
    assert "paths./by-extension" in result.stderr and "paths./by-scheme" in result.stderr, result.stderr
    (tmp_path / "trusted.ini").write_text(CREDENTIALS)
    gateway = start_gateway(document, args=("--iam-credentials", str(tmp_path / "trusted.ini")))
    for path in ("/prod/by-extension", "/prod/by-scheme"):
        refused(httpx.get(gateway.url + path, timeout=10), "Missing Authentication Token",
                "MissingAuthenticationTokenException")
        assert send(sign("GET", gateway.url + path)).status_code == 200
    assert httpx.get(gateway.url + "/prod/open", timeout=10).status_code == 200


def test_changed_credentials_are_trusted_after_a_watched_reload(tmp_path, start_gateway, upstream):
    creds = tmp_path / "creds.ini"
    creds.write_text(CREDENTIALS)
    config = CONFIG.replace("UPSTREAM", upstream.address)
    gateway = start_gateway(config, workers=2, args=("--watch",), env=ENV)
    url = f"{gateway.url}/prod/items/w"

    def until(check, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.1)
        return False

    refused(send(sign("GET", url, credentials=UNKNOWN)), iam.INVALID_TOKEN)
    creds.write_text(CREDENTIALS + f"\n[nobody]\naws_access_key_id = {UNKNOWN.access_key}\n"
                     f"aws_secret_access_key = {UNKNOWN.secret_key}\n")
    # every worker (two) trusts the new key, and still the others
    assert until(lambda: all(send(sign("GET", url, credentials=UNKNOWN)).status_code == 200 for _ in range(6)))
    assert send(sign("GET", url)).status_code == 200
    creds.write_text(CREDENTIALS.replace(ALICE.secret_key, "rotated-secret"))  # rotated: the old one stops working
    assert until(lambda: all(send(sign("GET", url)).status_code == 403 for _ in range(6)))
    creds.write_text("[broken]\n")  # a broken file is rejected; the last good one keeps serving
    assert until(lambda: "config reload rejected" in gateway.stderr())
    rotated = Credentials(ALICE.access_key, "rotated-secret")
    assert send(sign("GET", url, credentials=rotated)).status_code == 200


# -- units: the canonicalisation is botocore's -------------------------------------------------------------------
TRICKY_URLS = [
    "http://h/prod/a%20b/c:d/./e/../f//g?z=1&a=2&a=1&b=%2F&c=a+b&d&e=",
    "http://h:8080/prod/%7Euser/x%2Fy?q=%7e&Q=1",
    "http://h/",
    "http://h/prod/caf%C3%A9/%E2%82%AC?x=%C3%A9",
    "http://h/prod/a/../../b/?x=1&&y=2",
    "http://h/prod/!$&'()*+,;=:@?k=!$'()*,;:@/?",
    "http://h/prod/%2e%2E/x?%41=%61",
    "http://h/prod/x?a=b=c&a=b&a=",
]


def _fake(request: AWSRequest, body: bytes = b"") -> tuple[SimpleNamespace, SimpleNamespace]:
    split = urlsplit(request.url)
    headers = [(k.lower(), v) for k, v in request.headers.items()]
    host = split.netloc
    down = SimpleNamespace(method=request.method, path=split.path or "/", query=split.query,
                           headers=[("host", host), *headers])
    head = SimpleNamespace(host=host, chunked=False, content_length=len(body))
    return down, head


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_canonical_uri_and_query_match_botocore(url):
    request = AWSRequest(method="GET", url=url)
    signer = SigV4Auth(ALICE, "execute-api", "us-east-1")
    request.context["timestamp"] = "20240101T000000Z"
    signer._modify_request_before_signing(request)
    _, uri, query, *_ = signer.canonical_request(request).split("\n")
    split = urlsplit(request.url)
    assert uri in iam.canonical_uris(split.path)
    assert query in iam.canonical_queries(split.query)


def _authorizer() -> iam.IamAuthorizer:
    alice = iam.Principal("alice", ALICE.access_key, ALICE.secret_key, None, "arn:aws:iam::111122223333:user/alice",
                          "111122223333", "alice")
    return iam.IamAuthorizer("api", "prod", "us-east-1", {ALICE.access_key: alice})


@pytest.mark.parametrize("url", TRICKY_URLS)
@pytest.mark.parametrize("presign", [None, 900])
def test_the_verifier_accepts_what_botocore_signs(url, presign):
    authorizer = _authorizer()
    request = AWSRequest(method="GET", url=url, headers={"X-Multi": " a  b ", "Content-Type": "text/plain"})
    signer = SigV4QueryAuth(ALICE, "execute-api", "us-east-1", expires=presign) if presign \
        else SigV4Auth(ALICE, "execute-api", "us-east-1")
    signer.add_auth(request)
    down, head = _fake(request)
    found = authorizer.verify(down, head)
    assert isinstance(found, Authorization) and found.identity["userArn"].endswith(":user/alice")
    down.method = "POST"
    with pytest.raises(iam.Refused):
        authorizer.verify(down, head)


class HostlessSigner(SigV4Auth):
    """A signer that leaves Host out of what it signs (AWS refuses that: the request could go anywhere)."""

    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def test_host_must_be_signed_and_a_date_header_may_stand_for_x_amz_date():
    authorizer = _authorizer()
    request = AWSRequest(method="GET", url="http://h/prod/x", headers={"X-Amz-Meta": "1"})
    HostlessSigner(ALICE, "execute-api", "us-east-1").add_auth(request)
    assert "host" not in request.headers["Authorization"]
    with pytest.raises(iam.Refused, match="'Host' or ':authority' must be a 'SignedHeader'"):
        authorizer.verify(*_fake(request))
    request = AWSRequest(method="GET", url="http://h/prod/x", headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"})
    SigV4Auth(ALICE, "execute-api", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers  # botocore signed with the Date header
    assert isinstance(authorizer.verify(*_fake(request)), Authorization)


def test_the_verifier_waits_for_a_body_it_must_hash():
    authorizer = _authorizer()
    body = b"x" * 100
    request = AWSRequest(method="POST", url="http://h/prod/b?x=1", data=body)
    SigV4Auth(ALICE, "execute-api", "us-east-1").add_auth(request)
    down, head = _fake(request, body)
    found = authorizer.verify(down, head)
    assert isinstance(found, NeedsBody)
    assert isinstance(found.finish(body), Authorization)
    with pytest.raises(GatewayError) as refused_body:
        authorizer.verify(down, head).finish(body + b"!")
    assert refused_body.value.kind == "INVALID_SIGNATURE" and refused_body.value.message == iam.MISMATCH


def test_a_refusal_is_logged_with_its_reason_and_no_secret(caplog):
    route = _authorizer().for_route(None, None)
    tokened = Credentials(ALICE.access_key, "wrong-secret", "a-session-token")
    for credentials in (Credentials(ALICE.access_key, "wrong-secret"), tokened, UNKNOWN):
        request = AWSRequest(method="GET", url="http://h/prod/x")
        SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
        down, head = _fake(request)
        with caplog.at_level("DEBUG", logger="fastgw.authorizers"), pytest.raises(GatewayError):
            route.check(down, head, None, None, "/x", {}, "id")
    text = caplog.text
    assert "AWS_IAM api/prod refused a request: access key AKIAALICE00000000001: signature mismatch" in text
    assert "access key AKIAALICE00000000001 has no session token, but the request carries one" in text
    assert "unknown access key AKIANOBODY0000000001" in text
    for secret in (ALICE.secret_key, "wrong-secret", "a-session-token", "nobody-secret"):
        assert secret not in text
    assert not re.search(r"[0-9a-f]{64}", text)  # no signature, no hash


def test_credentials_files_are_read_strictly(tmp_path):
    def read(text: str) -> tuple[dict | None, list[str]]:
        path = tmp_path / "c.ini"
        path.write_text(text)
        problems: list[Problem] = []
        return iam.read_credentials(str(path), "server.iam.credentialsFile", problems), [p.message for p in problems]

    principals, problems = read(CREDENTIALS)
    assert problems == [] and set(principals) == {ALICE.access_key, TEMP.access_key}
    assert principals[TEMP.access_key].token == TEMP.token
    principals, problems = read("[bob]\naws_access_key_id=AKIABOB000000001\naws_secret_access_key=s\n")
    assert problems == [] and principals["AKIABOB000000001"].arn == "arn:aws:iam::123456789012:user/bob"
    _, problems = read("")
    assert problems and "holds no profile" in problems[0]
    _, problems = read("[a]\naws_access_key_id=AKIAA00000000001\naws_secret_access_key=s\n"
                       "[b]\naws_access_key_id=AKIAA00000000001\naws_secret_access_key=t\n")
    assert problems and "is also profile [a]" in problems[0]
    _, problems = read("[a]\naws_access_key_id=AKIAA00000000001\naws_secret_access_key=s\narn=nope\n")
    assert problems and "arn must be" in problems[0]
    _, problems = read("[a]\naws_access_key_id=AKIAA00000000001\naws_secret_access_key=s\naccount=1\n")
    assert problems and "12-digit" in problems[0]
    _, problems = read("not an ini file")
    assert problems and "not an AWS shared-credentials file" in problems[0]
