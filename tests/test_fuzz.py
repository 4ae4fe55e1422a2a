"""Fuzzing with Hypothesis (issue #20): fastgw's own parsers on hostile input.

* the request scanner and the router: the compiled kernels against their pure-Python twins
  (fastgw/_py), which are the reference;
* the HTTP/1 response parser: the compiled kernel against its httptools-based twin, on mutated
  responses cut at random places;
* the VTL parser and renderer: no exception other than the documented TemplateError/RenderError;
* the config and OpenAPI loaders: either a Plan or a ConfigError whose every problem names a place.

A short run by default (seconds: the `fuzz-ci` profile). `FASTGW_FUZZ_LONG=1` selects `fuzz-long`,
whose budgets add up to more than a million inputs; the count of inputs each target ran is printed
at the end of the module (`-s`) and recorded in docs/RELIABILITY.md. Every crash found becomes a
regression case in REGRESSIONS below or in the target's own test file.
"""
from __future__ import annotations

import copy
import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastgw import _py
from fastgw._py.http1 import ResponseParser as PyResponseParser
from fastgw.compile import load_plan
from fastgw.config.loader import ConfigError, parse_text
from fastgw.vtl import UTIL, Input, RenderError, TemplateError, compile_template

NO_EXTENSIONS = bool(os.environ.get("FASTGW_NO_EXTENSIONS"))
if not NO_EXTENSIONS:
    from fastgw._core import ResponseParser as CoreResponseParser

    from fastgw import _core

LONG = os.environ.get("FASTGW_FUZZ_LONG") == "1"
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.function_scoped_fixture]
settings.register_profile("fuzz-ci", max_examples=150, deadline=None, database=None, suppress_health_check=_QUIET)
settings.register_profile("fuzz-long", max_examples=1000, deadline=None, database=None,
                          suppress_health_check=_QUIET, print_blob=True)
PROFILE = settings.get_profile("fuzz-long" if LONG else "fuzz-ci")


def budget(ci: int, long: int) -> settings:
    """The number of inputs of a target: `ci` in the short run, `long` under FASTGW_FUZZ_LONG=1."""
    return settings(PROFILE, max_examples=long if LONG else ci)


COUNTS: Counter[str] = Counter()
PROGRESS_EVERY = 5000


def count(target: str) -> None:
    """One more input for `target`; under FASTGW_FUZZ_LOG a progress line every PROGRESS_EVERY."""
    COUNTS[target] += 1
    log = os.environ.get("FASTGW_FUZZ_LOG")
    if log and COUNTS[target] % PROGRESS_EVERY == 0:
        with open(log, "a") as out:
            out.write(json.dumps({"progress": target, "inputs": COUNTS[target], "at": time.strftime("%H:%M:%S")})
                      + "\n")
compiled_only = pytest.mark.skipif(NO_EXTENSIONS, reason="FASTGW_NO_EXTENSIONS: no compiled kernel to compare")


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    yield
    total = sum(v for k, v in COUNTS.items() if "divergence" not in k)
    print(f"\nfuzz inputs ({'long' if LONG else 'short'} run): {dict(COUNTS)}; total {total}")


@pytest.fixture(autouse=True)
def log_counts(request: pytest.FixtureRequest) -> Iterator[None]:
    """FASTGW_FUZZ_LOG=<file>: one line per target as it ends, so a long run that is cut short
    still leaves its figures."""
    started = time.monotonic()
    yield
    log = os.environ.get("FASTGW_FUZZ_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps({"test": request.node.name, "counts": dict(COUNTS),
                                  "seconds": round(time.monotonic() - started, 1)}) + "\n")


# -- request scanner: compiled vs twin ---------------------------------------------------------------
HEADER_NAMES = st.one_of(
    st.sampled_from(["host", "content-length", "transfer-encoding", "connection", "expect", "te", "upgrade",
                     "x-forwarded-for", "authorization", "x-api-key", "content-type", "cache-control",
                     "x-fastgw-cache-token", "x-fastgw-user", "keep-alive", "forwarded", "x_under", ""]),
    st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=12),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(["chunked", "gzip, chunked", "chunked, chunked", " chunked", "CHUNKED", "chunked,", "5", "05",
                     "+5", "-1", "0x10", "1_0", "99999999999999999999", "", "close, host, x-api-key",
                     "100-continue", "100-CONTINUE", "keep-alive, upgrade"]),
    st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=24),
)
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
                                     "get", "FOO", ""]), st.text(max_size=8))
PATHS = st.one_of(st.sampled_from(["/", "*", "/a/b", "a", "//", "/%2F", "/..", "http://h/p"]),
                  st.text(alphabet="/a.%2e*:?#\x00 é", max_size=40))


def scan_outcome(module, method, path, query, absolute, headers, limits):
    try:
        facts = module.scan_request(method, path, query, absolute, headers, limits)
    except Exception as exc:  # noqa: BLE001 - both builds' RequestRejected
        assert type(exc).__name__ == "RequestRejected", repr(exc)
        return ("rejected", exc.kind, exc.message)
    return (facts.host, facts.content_length, facts.chunked, facts.expect_continue, facts.forward,
            facts.forwarded_for, facts.cache_fields, facts.api_key)


@compiled_only
@budget(300, 300_000)
@given(METHODS, PATHS, st.text(max_size=10), st.booleans(),
       st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=14),
       st.tuples(st.integers(10, 200), st.integers(0, 16), st.integers(0, 400), st.integers(0, 60),
                 st.integers(0, 1 << 62)))
def test_request_scanner_agrees_with_its_twin(method, path, query, absolute, headers, limits):
    count("scan_request")
    assert scan_outcome(_core, method, path, query, absolute, headers, limits) == \
        scan_outcome(_py, method, path, query, absolute, headers, limits)


# -- router: compiled vs twin --------------------------------------------------------------------------
SEGMENT = st.one_of(st.sampled_from(["a", "b", "items", "{id}", "{name}", "{proxy+}", "{x+}", "", "{}", "{a",
                                     "a}", "{bad name}", "%2F", "é"]),
                    st.text(alphabet="ab{}+%/.", max_size=5))
TEMPLATES = st.lists(SEGMENT, max_size=4).map(lambda segs: "/" + "/".join(segs))
ROUTE_METHODS = st.sampled_from(["GET", "POST", "ANY", "get", "B@D", ""])
REQUEST_PATHS = st.one_of(st.lists(st.sampled_from(["a", "b", "items", "1", "", "%2F", "é", "..", "."]),
                                   max_size=6).map(lambda segs: "/" + "/".join(segs)),
                          st.text(alphabet="/ab1%.é", max_size=20))


def build(module, routes):
    router = module.Router()
    outcomes = []
    for method, template in routes:
        try:
            router.add(method, template, (method, template))
            outcomes.append("ok")
        except (ValueError, TypeError) as exc:
            outcomes.append(type(exc).__name__)
    return router, outcomes


def match(router, method, path):
    try:
        return router.match(method, path)
    except (ValueError, TypeError) as exc:
        return type(exc).__name__


@compiled_only
@budget(200, 200_000)
@given(st.lists(st.tuples(ROUTE_METHODS, TEMPLATES), max_size=8),
       st.lists(st.tuples(st.sampled_from(["GET", "POST", "PUT", "get"]), REQUEST_PATHS), min_size=1, max_size=6))
def test_router_agrees_with_its_twin(routes, requests):
    count("router")
    compiled, compiled_added = build(_core, routes)
    twin, twin_added = build(_py, routes)
    assert compiled_added == twin_added
    for method, path in requests:
        assert match(compiled, method, path) == match(twin, method, path), (method, path)


# -- HTTP/1 response parser: compiled vs the httptools twin --------------------------------------------
def parse(parser_cls, data: bytes, cuts: list[int], head: bool):
    parser = parser_cls()
    parser.reset(head)
    body = b""
    start = 0
    try:
        for cut in sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]:
            parser.feed(data[start:cut])
            body += parser.take_body()
            start = cut
        if not parser.complete:
            parser.eof()  # the upstream closed: whatever is pending must now be decided
    except Exception as exc:  # noqa: BLE001 - either build's ResponseError
        assert type(exc).__name__ == "ResponseError", repr(exc)
        return "error"
    body += parser.take_body()
    return parser.status, parser.headers, body, parser.keep_alive, parser.complete


RESPONSE_SEEDS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\nT: x\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nuntil close",
    b"HTTP/1.1 204 No Content\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
]
GADGETS = [b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\t", b":", b",", b"0", b"-", b"f", b"\xff", b"Content-Length: 3\r\n",
           b"Transfer-Encoding: chunked\r\n", b"HTTP/1.1 200 OK\r\n", b"chunked", b";", b"ffffffffffffffff"]


@st.composite
def mutated_responses(draw):
    data = bytearray(draw(st.sampled_from(RESPONSE_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(GADGETS), st.binary(min_size=1, max_size=4)))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    cuts = draw(st.lists(st.integers(1, max(1, len(data))), max_size=5))
    return bytes(data), cuts, draw(st.booleans())


INTERIM_THEN_EMPTY_LINE = re.compile(rb"HTTP/1\.[01] 1[0-9][0-9][^\n]*\n(?:[^\n]+\n)*?\r?\n[\r\n]")
FRAMING_TRAILER = re.compile(rb"\n0+(?:;[^\n]*)?\r\n(?:[^\n]+\n)*?(?i:transfer-encoding|host|content-length)[ \t]*:")
CHUNK_EXTENSION_EMPTY = re.compile(rb"\n[0-9A-Fa-f]+(?=;)[^\n]*?(;=|;;|=;|=\r|;\r)")


def known_divergence(data: bytes, head: bool, compiled, reference) -> str | None:
    """The known places where the compiled parser and httptools (llhttp) differ, each safe: the
    compiled parser refuses (a 502, never a desync) what llhttp lets through, does not reuse a
    connection llhttp would, or keeps a HEAD response's connection that llhttp would close (a HEAD
    response has no body: RFC 9112 §6.3)."""
    # the first line, and any later one that starts a response (the final one after a 1xx)
    lines = data.split(b"\n")
    status_lines = [lines[0]] + [line for line in lines[1:] if line.startswith(b"HTTP/")]
    if compiled == "error" and data.startswith((b"\r", b"\n")):
        return "empty lines before the status line (llhttp skips them)"
    if compiled == "error" and INTERIM_THEN_EMPTY_LINE.match(data):
        return "empty lines (or a stray CR) before the status line after a 1xx response (llhttp skips them)"
    if compiled == "error" and any(c < 32 and c != 13 or c == 127 for line in status_lines for c in line):
        return "a control character in a status line (llhttp accepts it in the reason phrase)"
    if compiled == "error" and reference != "error" and FRAMING_TRAILER.search(data):
        return "a framing field among the trailers (RFC 9110 §6.5.1; llhttp lets Transfer-Encoding and Host through)"
    if compiled == "error" and reference != "error" and CHUNK_EXTENSION_EMPTY.search(data):
        return "a chunk extension with an empty name or value (RFC 9112 §7.1.1 has neither; llhttp accepts them)"
    if compiled == "error" and reference != "error" and reference[0] < 100:
        return "a status code below 100 (RFC 9110 §15: invalid; llhttp accepts any three digits)"
    if (head and compiled != "error" and reference != "error" and compiled[:3] == reference[:3]
            and compiled[4] == reference[4] and compiled[3] and not reference[3]):
        return "HEAD response without framing: kept alive (llhttp closes)"
    if (compiled != "error" and reference != "error" and compiled[:3] == reference[:3] and compiled[4] == reference[4]
            and not compiled[3] and reference[3]):
        return "bytes after a complete response: the connection is not reused (llhttp would reuse it)"
    return None


@compiled_only
@budget(400, 400_000)
@given(mutated_responses())
def test_response_parser_agrees_with_httptools(case):
    count("http1_response")
    data, cuts, head = case
    compiled, reference = parse(CoreResponseParser, data, cuts, head), parse(PyResponseParser, data, cuts, head)
    if compiled != reference:
        assert known_divergence(data, head, compiled, reference), (compiled, reference)
        count("http1_response_known_divergence")


# -- VTL: only the documented errors ---------------------------------------------------------------
VTL_PIECES = st.sampled_from([
    "$input.json('$')", "$input.json('$.a')", "$input.path('$.a')", "$input.body", "$input.params()",
    "$input.params('x')", "$util.escapeJavaScript($x)", "$util.parseJson('{')", "$util.urlEncode($x)",
    "$util.base64Decode('@@')", "#set($x = 1)", "#set($x = $x + 1)", "#if($x == '')", "#if($x)", "#elseif(!$x)",
    "#else", "#end", "#foreach($i in $input.path('$.items'))", "#foreach($i in [1..3])", "$i", "$foreach.hasNext",
    "$context.requestId", "$stageVariables.v", "$x.length()", "$x.substring(5)", "${x}", "$!x", "\\$x", "#{end}",
    "#break", "#stop", "## comment\n", "#* c *#", "{", "}", "(", ")", "[", "]", "\"", "'", "$", "#", ",", "\n",
    "$x.size()", "$x.get(0)", "$x.a.b", "#macro(m)", "$input.path('$..')", "$input.json('x')", " == ", " && ",
    "null", "1.5e309", "-1", "$util.parseJson($input.body).a",
])
VTL_TEXT = st.one_of(st.lists(VTL_PIECES, max_size=12).map("".join),
                     st.text(alphabet="$#(){}[]'\"!.=<>&|+-*/%,: \nabcijx0123@\\", max_size=60))
BODIES = st.one_of(st.sampled_from(['{"a": 1, "items": [1, 2]}', "not json", "", "[", '{"a": null}', "null",
                                    '"s"', "1e999", '{"a": "' + "x" * 50 + '"}']), st.text(max_size=30))


@budget(300, 150_000)
@given(VTL_TEXT, BODIES)
def test_vtl_raises_only_documented_errors(text, body):
    count("vtl")
    try:
        template = compile_template(text)
    except TemplateError as exc:
        assert exc.line >= 1 and exc.column >= 1
        return
    variables = {"input": Input(body, {"id": "1"}, {"x": "y"}, {"h": "v"}),
                 "context": {"requestId": "r", "stage": "prod"}, "stageVariables": {"v": "s"}, "util": UTIL}
    try:
        out = template.render(variables)
    except RenderError:
        return
    assert isinstance(out, str)


# -- config and OpenAPI loaders: a Plan, or a ConfigError naming a place ----------------------------
BASE_CONFIG = """\
server: {workers: 1, limits: {maxBodyBytes: 1048576}}
state: {backend: local, path: state}
apis:
  - name: shop
    type: REST
    awsCompat: true
    stages:
      prod:
        variables: {backend: "127.0.0.1:9"}
        throttle: {rateLimit: 10, burstLimit: 5}
        cache: {ttlInSeconds: 60}
    routes:
      - route: GET /items/{id}
        apiKeyRequired: true
        integration: {type: HTTP_PROXY, uri: "http://${stageVariables.backend}/items/{id}", timeoutInMillis: 1000}
      - route: POST /calc
        integration:
          type: MOCK
          requestTemplates: {application/json: '{"statusCode": 200}'}
          responses:
            default: {statusCode: "200", responseTemplates: {application/json: '$input.json("$")'}}
      - route: ANY /{proxy+}
        integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/{proxy}"}
usagePlans:
  - name: basic
    apiStages: [{api: shop, stage: prod}]
    quota: {limit: 100, period: DAY}
apiKeys:
  - {name: alice, value: "alice-key-0123456789abcdefghij", usagePlans: [basic]}
"""
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
                       st.text(max_size=12), st.sampled_from(["{", "${env:NOPE}", "GET /{a}/{a}", "http://", "-1", "",
                                                              "ANY /{x+}/y", "${stageVariables.missing}"]),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                            max_size=2))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _mutate(data, draw):
    data = copy.deepcopy(data)
    paths = [p for p in _paths(data) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(ODD_VALUES)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation changed the shape: fine, the document is odd either way
    return data


def check_loads(text: str, source: str = "fuzz.yaml", options=None) -> None:
    try:
        document = parse_text(text, source)
        load_plan(document, options)
    except ConfigError as exc:
        assert exc.problems, exc
        for problem in exc.problems:
            assert problem.path or problem.line or "line" in problem.message, f"a problem without a place: {problem}"


@st.composite
def configs(draw):
    data = yaml.safe_load(BASE_CONFIG)
    return yaml.safe_dump(_mutate(data, draw), sort_keys=False)


@budget(60, 25_000)
@given(configs())
def test_config_loader_gives_a_plan_or_located_errors(tmp_path_factory, text):
    count("config")
    check_loads(text, str(tmp_path_factory.getbasetemp() / "fuzz.yaml"))


@budget(40, 20_000)
@given(st.integers(0, len(BASE_CONFIG)), st.integers(0, 20), st.text(alphabet=":{}[]-,'\"\n #&*!|>%@`", max_size=4))
def test_config_loader_survives_broken_yaml(tmp_path_factory, at, cut, junk):
    count("config_text")
    check_loads(BASE_CONFIG[:at] + junk + BASE_CONFIG[at + cut:], str(tmp_path_factory.getbasetemp() / "fuzz.yaml"))


OPENAPI_DOCS = sorted((SHARED / "conformance" / "openapi").glob("*.json")) if SHARED.exists() else []


@pytest.mark.skipif(not OPENAPI_DOCS, reason="shared/conformance is not laid out beside the clone")
@budget(40, 20_000)
@given(st.data())
def test_openapi_loader_gives_a_plan_or_located_errors(tmp_path_factory, data):
    count("openapi")
    doc_path = data.draw(st.sampled_from(OPENAPI_DOCS))
    doc = json.loads(Path(doc_path).read_text())
    text = json.dumps(_mutate(doc, data.draw))
    check_loads(text, str(tmp_path_factory.getbasetemp() / Path(doc_path).name))


# -- regressions: inputs that once broke a target ---------------------------------------------------------
@compiled_only
@pytest.mark.parametrize("trailer", [b"T:\x00x", b"T: a\rb", b"T: \x7f", b"Content-Length: 3",
                                     b"transfer-encoding: chunked"])
def test_regression_a_control_character_in_a_trailer_value_is_refused(trailer):
    """Found by the long run (2026-12-07): trailer values were not read (trailers are dropped), so a NUL
    passed, and so did framing fields; llhttp refuses both. Checked now like a header value, and a
    framing field among trailers is refused (RFC 9110 §6.5.1)."""
    data = TRAILERS % trailer
    assert parse(CoreResponseParser, data, [], False) == "error"
    if not trailer.startswith(b"transfer-encoding"):  # llhttp lets that one through
        assert parse(PyResponseParser, data, [], False) == "error"


TRAILERS = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n%s\r\n\r\n"


@compiled_only
@pytest.mark.parametrize("trailer", [b": x", b"\rT: x", b"no colon", b"a b: c"])
def test_regression_malformed_trailers_are_refused_by_both_parsers(trailer):
    """Found by test_response_parser_agrees_with_httptools: the compiled parser dropped malformed
    trailer lines where llhttp refuses the response; both now refuse."""
    data = TRAILERS % trailer
    assert parse(CoreResponseParser, data, [], False) == "error"
    if not trailer.startswith(b"transfer-encoding"):  # llhttp lets that one through
        assert parse(PyResponseParser, data, [], False) == "error"


@compiled_only
@compiled_only
@pytest.mark.parametrize("status", [b"000", b"099"])
def test_regression_a_status_code_outside_the_range_is_refused(status):
    """Found by a whole-suite run (2026-12-07): `HTTP/1.1 000` is refused by the compiled parser (a 502),
    accepted by llhttp; the safe side, now a known divergence. (600-999 pass both, as RFC 9110 §15 lets a
    recipient treat them as a 5xx.)"""
    data = b"HTTP/1.1 " + status + b" OK\r\nContent-Length: 5\r\n\r\nhello"
    compiled, reference = parse(CoreResponseParser, data, [], False), parse(PyResponseParser, data, [], False)
    assert compiled == "error"
    assert reference == "error" or known_divergence(data, False, compiled, reference)


@compiled_only
@pytest.mark.parametrize("extension", [b";\x00=1", b";\rx=1", b";x=\x7f", b";x\x01", b"; x=1", b";x =1", b";x=\"a",
                                       b";=1", b";x=", b";;x=1", b";x;"])
def test_regression_a_control_character_in_a_chunk_extension_is_refused(extension):
    """Found by the long run (2026-12-07): the compiled parser let a NUL or a bare CR through in a chunk
    extension (it skipped extensions unread); llhttp refuses them, and whitespace around `;` and `=`.
    A bare CR there is how some parsers disagree on where a chunk line ends: the compiled parser now
    reads extensions as llhttp does (a token, `=`, a token or a quoted string)."""
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3" + extension + b"\r\nabc\r\n0\r\n\r\n"
    compiled, reference = parse(CoreResponseParser, data, [], False), parse(PyResponseParser, data, [], False)
    assert compiled == "error"
    assert reference == "error" or known_divergence(data, False, compiled, reference)  # llhttp: `;=1`, `;x=`
    tab = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"a\tb\"\r\nabc\r\n0\r\n\r\n"
    assert parse(CoreResponseParser, tab, [], False)[2] == b"abc"
    many = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;a;b=c;d=\"e\\\"f\"\r\nabc\r\n0\r\n\r\n"
    assert parse(CoreResponseParser, many, [], False) == parse(PyResponseParser, many, [], False)


@compiled_only
def test_regression_an_interim_response_in_http10_is_refused():
    """Found by the long run (2026-12-07): `HTTP/1.0 100 Continue` then a final response passed the
    compiled parser; llhttp refuses it (HTTP/1.0 has no 1xx responses, RFC 9110 §15.2)."""
    data = b"HTTP/1.0 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    assert parse(CoreResponseParser, data, [], False) == "error" == parse(PyResponseParser, data, [], False)


@compiled_only
def test_regression_a_control_character_in_the_status_line_after_a_100_is_refused():
    """Found by the long run (2026-12-07): the compiled parser refuses (502) a NUL in the final status
    line that follows a 100 Continue, as it does in a first status line; llhttp lets it through. The
    oracle only looked at the first line."""
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 \x00reated\r\nContent-Length: 2\r\n\r\nok"
    compiled, reference = parse(CoreResponseParser, data, [], False), parse(PyResponseParser, data, [], False)
    assert compiled == "error" and reference == (201, [], b"ok", True, True)
    assert known_divergence(data, False, compiled, reference)


def test_regression_a_wide_character_is_refused_before_any_limit():
    """Found by test_request_scanner_agrees_with_its_twin: the twin checked sizes first and the
    compiled scan the characters first; both now refuse a character above U+00FF first."""
    args = ("GET", "/", "", False, [("host", "\u0100")], (15, 1, 0, 0, 0))
    assert scan_outcome(_core, *args) == scan_outcome(_py, *args) == (
        "rejected", "BAD_REQUEST_PARAMETERS", "Invalid header field")


@pytest.mark.skipif(not OPENAPI_DOCS, reason="shared/conformance is not laid out beside the clone")
def test_regression_a_ref_outside_the_bmp_is_a_located_error(tmp_path):
    """Found by the whole-suite run (2026-12-07): a `$ref` to '𐀀' in a JSON document reached the file
    system as two UTF-16 surrogates (YAML does not join JSON's escaped pairs) and raised
    UnicodeEncodeError. The pair is now joined into its character, and a name no file can have is a
    located problem."""
    doc = json.loads(next(p for p in OPENAPI_DOCS if "petstore.oas30" in p.name).read_text())
    doc["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] = "𐀀"
    with pytest.raises(ConfigError) as caught:
        load_plan(parse_text(json.dumps(doc), str(tmp_path / "doc.json")))
    assert any("𐀀" in problem.message and problem.path for problem in caught.value.problems)
    doc["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] = "a\x00b"
    check_loads(json.dumps(doc), str(tmp_path / "doc.json"))


def test_regression_escaped_pairs_are_joined_and_lone_surrogates_refused():
    assert parse_text('{"a": "\\ud800\\udc00"}', "x.json").data == {"a": "𐀀"}
    assert parse_text('{"\\ud83d\\ude00": 1}', "x.json").data == {"😀": 1}
    with pytest.raises(ConfigError) as caught:
        parse_text('{"apis": ["\\udcff"]}', "x.json")
    (problem,) = caught.value.problems
    assert problem.path == "apis[0]" and problem.line == 1 and "surrogate" in problem.message


def test_regression_an_unknown_yaml_tag_is_a_located_error():
    """Found by the long run (2026-12-07): `awsCompat: !true` raised yaml's ConstructorError."""
    with pytest.raises(ConfigError) as caught:
        parse_text("apis:\n  - name: a\n    awsCompat: !true\n", "x.yaml")
    (problem,) = caught.value.problems
    assert (problem.path, problem.line) == ("apis[0].awsCompat", 3) and "!true" in problem.message


@pytest.mark.skipif(not OPENAPI_DOCS, reason="shared/conformance is not laid out beside the clone")
def test_regression_security_scopes_that_are_not_a_list_are_a_located_error(tmp_path):
    """Found by the long run (2026-12-07): a security requirement's scopes set to `true` raised TypeError."""
    path = next(p for p in OPENAPI_DOCS if "cognito-auth" in p.name)
    doc = json.loads(path.read_text())
    doc["paths"]["/default-no-scope"]["get"]["security"][0]["cognito-test-identity-source"] = True
    with pytest.raises(ConfigError) as caught:
        load_plan(parse_text(json.dumps(doc), str(tmp_path / path.name)))
    assert any("scopes" in problem.message and problem.path for problem in caught.value.problems)


@pytest.mark.skipif(not OPENAPI_DOCS, reason="shared/conformance is not laid out beside the clone")
def test_regression_a_parameter_location_that_is_not_text_is_a_located_error(tmp_path):
    """Found by the long run (2026-12-07): a parameter's `in` set to a list raised TypeError."""
    path = next(p for p in OPENAPI_DOCS if "request-validation-sample" in p.name)
    doc = json.loads(path.read_text())
    doc["paths"]["/validation"]["post"]["parameters"][1]["in"] = []
    with pytest.raises(ConfigError) as caught:
        load_plan(parse_text(json.dumps(doc), str(tmp_path / path.name)))
    assert any(problem.path.endswith("parameters[1].in") for problem in caught.value.problems)


@pytest.mark.skipif(not OPENAPI_DOCS, reason="shared/conformance is not laid out beside the clone")
def test_regression_a_security_scheme_that_is_not_an_object_is_a_located_error(tmp_path):
    """Found by the long run (2026-12-07): a security scheme replaced by `true` raised AttributeError."""
    path = next(p for p in OPENAPI_DOCS if "global-auth" in p.name)
    doc = json.loads(path.read_text())
    doc["components"]["securitySchemes"]["GatewayAuthorizer"] = True
    with pytest.raises(ConfigError) as caught:
        load_plan(parse_text(json.dumps(doc), str(tmp_path / path.name)))
    assert any(problem.path.endswith("securitySchemes.GatewayAuthorizer") for problem in caught.value.problems)
