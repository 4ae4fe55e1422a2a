"""The request-head scan kernel against its pure-Python twin (the reference)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._py import request as py

IMPLS = [pytest.param(py, id="py")]
if not os.environ.get("FASTGW_NO_EXTENSIONS"):
    from fastgw import _core

    IMPLS.insert(0, pytest.param(_core, id="c"))

LIMITS = (100, 61440, 16384, 10 << 20)


def scan(mod, headers, limits=LIMITS):
    try:
        facts = mod.scan_request_headers(headers, *limits)
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "RequestRejected", exc
        return ("rejected", exc.kind)
    return (facts.host, facts.content_length, facts.chunked, facts.expect_continue, facts.forward,
            facts.forwarded_for)


@pytest.mark.parametrize("mod", IMPLS)
def test_forwardable_block_and_framing(mod):
    headers = [("host", "api.example.com"), ("user-agent", "t"), ("connection", "keep-alive, x-drop"),
               ("x-drop", "1"), ("keep-alive", "5"), ("te", "trailers"), ("x-forwarded-for", "6.6.6.6"),
               ("authorization", "Bearer x"), ("content-length", "010"), ("x-api-key", "k")]
    assert scan(mod, headers) == ("api.example.com", 10, False, False,
                                  b"user-agent: t\r\nauthorization: Bearer x\r\nx-api-key: k\r\n", "6.6.6.6")


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize(("headers", "kind"), [
    ([("host", "a"), ("host", "b")], "BAD_REQUEST_PARAMETERS"),
    ([("authorization", "a"), ("authorization", "b")], "BAD_REQUEST_PARAMETERS"),
    ([("x_api_key", "k")], "BAD_REQUEST_PARAMETERS"),
    ([("content-length", "+5")], "BAD_REQUEST_PARAMETERS"),
    ([("content-length", "5"), ("transfer-encoding", "chunked")], "BAD_REQUEST_PARAMETERS"),
    ([("transfer-encoding", "chunked, chunked")], "BAD_REQUEST_PARAMETERS"),
    ([("transfer-encoding", "gzip")], "BAD_REQUEST_PARAMETERS"),
    ([("transfer-encoding", "gzip, chunked")], "NOT_IMPLEMENTED"),
    ([("expect", "foo")], "EXPECTATION_FAILED"),
    ([("content-length", "20000000")], "REQUEST_TOO_LARGE"),
    ([("x", "v" * 16400)], "HEADERS_TOO_LARGE"),
    ([(f"x-{i}", "v") for i in range(101)], "HEADERS_TOO_LARGE"),
    ([("x", "\u0100")], "BAD_REQUEST_PARAMETERS"),
])
def test_rejections(mod, headers, kind):
    assert scan(mod, headers) == ("rejected", kind)


names = st.sampled_from(["host", "content-length", "transfer-encoding", "connection", "expect", "te", "upgrade",
                         "x-forwarded-for", "x-forwarded-host", "authorization", "x-api-key", "content-type",
                         "accept", "x-custom", "x_under", "keep-alive", "forwarded", "cookie", "x-fastgw-user",
                         "x-fastgw-cache-token", "x-fastgw-", "x-fastgwx", "x-fastgw"])
values = st.one_of(st.sampled_from(["chunked", "gzip, chunked", "5", "007", "", "close, x-custom", "100-continue",
                                    "keep-alive"]), st.text(alphabet=st.characters(max_codepoint=255), max_size=20))


# ---- the reference: the documented rules, one at a time, written apart from the kernels' one pass

# RFC 9110 §7.6.1 hop-by-hop fields, what the gateway computes itself (framing, Host, forwarding
# fields) and Expect (the server answered any 100-continue): never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade"}
GATEWAY_COMPUTED = {"content-length", "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                    "forwarded", "x-real-ip", "expect"}
ONCE_ONLY = {"host", "authorization", "x-api-key", "content-length", "content-type"}


def reference_scan(headers: list[tuple[str, str]], max_count: int, max_total: int, max_field: int,
                   max_body: int) -> tuple[set[str], tuple | None]:
    """(the gateway response types of every rule the head breaks, the facts when it breaks none)."""
    broken: set[str] = set()
    names = [n for n, _ in headers]
    values = {n: v for n, v in headers}  # the last of each (only once-only ones are read)
    if len(headers) > max_count or any(len(n) + len(v) > max_field for n, v in headers) \
            or sum(len(n) + len(v) + 4 for n, v in headers) > max_total:
        broken.add("HEADERS_TOO_LARGE")
    if any("_" in n for n in names) or any(names.count(n) > 1 for n in ONCE_ONLY):
        broken.add("BAD_REQUEST_PARAMETERS")
    length = values.get("content-length")
    if length is not None and not re.fullmatch(r"[0-9]{1,18}", length):
        broken.add("BAD_REQUEST_PARAMETERS")
    fields = [[c.strip().lower() for c in v.split(",")] for n, v in headers if n == "transfer-encoding"]
    for index, codings in enumerate(fields):  # chunked once, last, in one field; other codings: 501
        if codings.count("chunked") != 1 or codings[-1] != "chunked" or index > 0:
            broken.add("BAD_REQUEST_PARAMETERS")
        elif len(codings) > 1:
            broken.add("NOT_IMPLEMENTED")
    chunked = bool(fields)
    if chunked and length is not None:
        broken.add("BAD_REQUEST_PARAMETERS")
    if length is not None and re.fullmatch(r"[0-9]{1,18}", length) and int(length) > max_body:
        broken.add("REQUEST_TOO_LARGE")
    if any(n == "expect" and v.lower() != "100-continue" for n, v in headers):
        broken.add("EXPECTATION_FAILED")
    nominated = {t.strip().lower() for n, v in headers if n == "connection" for t in v.split(",")}
    kept = [(n, v) for n, v in headers if n not in HOP_BY_HOP | GATEWAY_COMPUTED | (nominated - {"close"})
            and not n.startswith("x-fastgw-")]
    if any(ord(ch) > 255 for n, v in headers for ch in n + v):
        broken.add("BAD_REQUEST_PARAMETERS")  # no wire byte decodes to it (latin-1)
    if broken:
        return broken, None
    forward = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in kept)
    xff = [v for n, v in headers if n == "x-forwarded-for"]
    return broken, (values.get("host", ""), int(length) if length is not None else -1, chunked, "expect" in names,
                    forward, xff[-1] if xff else "")


def check_against_reference(mod, headers, limits=LIMITS) -> None:
    broken, facts = reference_scan(headers, *limits)
    got = scan(mod, headers, limits)
    if facts is None:
        assert got[0] == "rejected" and got[1] in broken, (got, broken)
    else:
        assert got == facts


@pytest.mark.parametrize("mod", IMPLS)
@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(names, values | st.text(max_size=6)), max_size=12),
       st.sampled_from([LIMITS, (6, 120, 30, 5)]))
def test_scan_agrees_with_the_reference(mod, headers, limits):
    check_against_reference(mod, headers, limits)


@pytest.mark.parametrize("mod", IMPLS)
def test_asgi_header_conversion_round_trips_bytes(mod):
    raw = [(b"host", b"a"), (b"x-bin", bytes(range(32, 256))), (b"empty", b"")]
    text = mod.latin1_headers(raw)
    assert text == [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    assert mod.bytes_headers(text) == raw


LINE_LIMITS = (64, *LIMITS)


def scan_line(mod, method, path, query="", absolute_form=False):
    try:
        facts = mod.scan_request(method, path, query, absolute_form, [("host", "h")], LINE_LIMITS)
    except Exception as exc:  # noqa: BLE001
        assert type(exc).__name__ == "RequestRejected", exc
        return ("rejected", exc.kind, exc.message)
    return facts.host


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize(("line", "expected"), [
    (("GET", "/a"), "h"),
    (("OPTIONS", "/a", "x=1"), "h"),
    (("TRACE", "/a"), ("rejected", "METHOD_NOT_ALLOWED", None)),
    (("CONNECT", "/a"), ("rejected", "BAD_REQUEST_PARAMETERS", "CONNECT is not supported")),
    (("BREW", "/a"), ("rejected", "NOT_IMPLEMENTED", "Unknown method")),
    (("GET", "/" + "a" * 49), "h"),  # 3 + 50 + 11 = 64: the limit itself is allowed
    (("GET", "/" + "a" * 50), ("rejected", "URI_TOO_LONG", None)),
    (("GET", "/" + "a" * 48, "q"), ("rejected", "URI_TOO_LONG", None)),  # "?q" counts
    (("GET", "/a", "", True), ("rejected", "BAD_REQUEST_PARAMETERS",
                               "Absolute-form request targets are not supported")),
    (("OPTIONS", "*"), ("rejected", "METHOD_NOT_ALLOWED", None)),
    (("GET", "a"), ("rejected", "BAD_REQUEST_PARAMETERS", "Invalid request target")),
    (("GET", ""), ("rejected", "BAD_REQUEST_PARAMETERS", "Invalid request target")),
])
def test_request_line(mod, line, expected):
    assert scan_line(mod, *line) == expected


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize(("headers", "cache_fields"), [
    ([("accept", "*/*")], False),
    ([("authorization", "Bearer x")], True),
    ([("cache-control", "max-age=0"), ("cache-control", "no-cache")], True),  # repeatable, not a duplicate
    ([("x-fastgw-cache-token", "t")], True),
    ([("x-cache-control", "1"), ("authorization-hint", "2")], False),
])
def test_cache_fields(mod, headers, cache_fields):
    facts = mod.scan_request_headers(headers, *LIMITS)
    assert facts.cache_fields is cache_fields
    sent = [(k, v) for k, v in headers if not k.startswith("x-fastgw-")]  # the token is the gateway's
    assert facts.forward == "".join(f"{k}: {v}\r\n" for k, v in sent).encode()


@pytest.mark.parametrize("mod", IMPLS)
def test_gateway_fields_are_never_taken_from_the_client(mod):
    """X-Fastgw-* fields are what the gateway asserts to the upstream (issue 23): a client's are
    dropped from the forwarded block, whatever their case or length; look-alikes are forwarded."""
    headers = [("host", "h"), ("x-fastgw-user", "admin"), ("x-fastgw-", "x"), ("x-fastgw-cache-token", "t"),
               ("x-fastgw-authorized", "true"), ("x-fastgwx", "kept"), ("x-fastg", "kept"), ("a-fastgw-b", "kept"),
               ("y-fastgw-user", "kept"), ("accept", "*/*")]
    facts = mod.scan_request_headers(headers, *LIMITS)
    assert facts.forward == b"x-fastgwx: kept\r\nx-fastg: kept\r\na-fastgw-b: kept\r\ny-fastgw-user: kept\r\n" \
                            b"accept: */*\r\n"
    assert facts.cache_fields is True  # the cache token still tells the stage cache to look closer
    # nominated by Connection or not, in any position, several of them
    facts = mod.scan_request_headers([("x-fastgw-a", "1"), ("connection", "x-other"), ("x-other", "2"),
                                      ("x-fastgw-b", "3"), ("x-keep", "4")], *LIMITS)
    assert facts.forward == b"x-keep: 4\r\n"


@pytest.mark.parametrize("mod", IMPLS)
def test_request_ids(mod):
    ids = mod.RequestIds("0123abcd-4567-89ef-0123-")
    first = [ids.next() for _ in range(20)]
    assert first[0] == "0123abcd-4567-89ef-0123-000000000001"
    assert first[15] == "0123abcd-4567-89ef-0123-000000000010"
    assert len(set(first)) == 20
    with pytest.raises(ValueError):
        mod.RequestIds("short")


@pytest.mark.parametrize("mod", IMPLS)
@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=5000))
def test_request_ids_count_in_hex(mod, n):
    ids = mod.RequestIds("ffffffff-0000-1111-2222-")
    for _ in range(n):
        ids.next()
    assert ids.next() == "ffffffff-0000-1111-2222-" + format(n + 1, "012x")


@pytest.mark.parametrize("mod", IMPLS)
def test_api_key_is_read_and_still_forwarded(mod):
    facts = mod.scan_request_headers([("host", "h"), ("x-api-key", "k-123")], *LIMITS)
    assert facts.api_key == "k-123"
    assert facts.forward == b"x-api-key: k-123\r\n"
    assert mod.scan_request_headers([("host", "h")], *LIMITS).api_key == ""
    assert scan(mod, [("x-api-key", "a"), ("x-api-key", "b")]) == ("rejected", "BAD_REQUEST_PARAMETERS")


@pytest.mark.parametrize("mod", IMPLS)
def test_upstream_request_head(mod):
    head = mod.upstream_request_head("POST", "/orders/7?x=1", "orders.internal:8080",
                                     b"user-agent: t\r\naccept: */*\r\n", "10.0.0.1:50412", "6.6.6.6", "https",
                                     "api.example.com", "content-length: 2\r\n\r\n")
    assert head == (b"POST /orders/7?x=1 HTTP/1.1\r\nhost: orders.internal:8080\r\n"
                    b"user-agent: t\r\naccept: */*\r\n"
                    b"x-forwarded-for: 6.6.6.6, 10.0.0.1\r\nx-forwarded-proto: https\r\n"
                    b"x-forwarded-host: api.example.com\r\ncontent-length: 2\r\n\r\n")
    # No Host from the client: no X-Forwarded-Host; no trusted hops: the peer alone
    assert mod.upstream_request_head("GET", "/", "u", b"", "1.2.3.4", "", "http", "", "\r\n") == (
        b"GET / HTTP/1.1\r\nhost: u\r\nx-forwarded-for: 1.2.3.4\r\nx-forwarded-proto: http\r\n\r\n")
    assert b"x-forwarded-for: ::1\r\n" in mod.upstream_request_head("GET", "/", "u", b"", "[::1]:443", "", "http",
                                                                    "", "\r\n")


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize(("address", "host"), [
    ("127.0.0.1:50412", "127.0.0.1"),  # RSGI, v4
    ("[::1]:50412", "::1"),  # RSGI, v6
    ("[2001:db8::7]:8", "2001:db8::7"),
    ("203.0.113.9", "203.0.113.9"),  # ASGI gives the bare host
    ("2001:db8::7", "2001:db8::7"),  # ... which may be v6: more than one colon, kept whole
    ("::1", "::1"),
    ("", ""),
    ("[unclosed", "[unclosed"),
])
def test_peer_host(mod, address, host):
    assert mod.peer_host(address) == host
    assert mod.upstream_request_head("GET", "/", "u", b"", address, "", "http", "", "\r\n") == (
        f"GET / HTTP/1.1\r\nhost: u\r\nx-forwarded-for: {host}\r\nx-forwarded-proto: http\r\n\r\n".encode())


@pytest.mark.parametrize("mod", IMPLS)
def test_upstream_request_head_refuses_what_latin1_cannot_carry(mod):
    assert mod.upstream_request_head("GET", "/caf\u00e9", "u", b"", "", "", "http", "", "\r\n").startswith(
        b"GET /caf\xe9 HTTP/1.1\r\n")
    with pytest.raises(UnicodeEncodeError):
        mod.upstream_request_head("GET", "/\u20ac", "u", b"", "", "", "http", "", "\r\n")


def reference_peer_host(address: str) -> str:
    bracketed = re.match(r"\[([^\]]*)\]", address)
    if bracketed:
        return bracketed.group(1)
    if address.startswith("["):
        return address  # an unclosed bracket is no "[v6]:port": kept whole, as any other odd address
    return address.split(":")[0] if address.count(":") == 1 else address


def reference_head(method, target, host, forward, peer, prior_hops, scheme, forwarded_host, framing) -> bytes:
    client = reference_peer_host(peer)
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    tail = [f"x-forwarded-for: {prior_hops + ', ' + client if prior_hops else client}",
            f"x-forwarded-proto: {scheme}"] + ([f"x-forwarded-host: {forwarded_host}"] if forwarded_host else [])
    return (("\r\n".join(lines) + "\r\n").encode("latin-1") + forward
            + ("".join(x + "\r\n" for x in tail) + framing).encode("latin-1"))


@pytest.mark.parametrize("mod", IMPLS)
@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(max_codepoint=255), max_size=40), min_size=7, max_size=7),
       st.binary(max_size=200), st.text(st.sampled_from("[]:.0123456789abcdef"), max_size=24))
def test_upstream_request_head_agrees_with_the_reference(mod, parts, forward, peer):
    method, target, host, prior_hops, scheme, forwarded_host, framing = parts
    args = (method, target, host, forward, peer, prior_hops, scheme, forwarded_host, framing)
    assert mod.upstream_request_head(*args) == reference_head(*args)
    assert mod.peer_host(peer) == reference_peer_host(peer)


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
field_value = st.text(alphabet="abcXYZ 0123456789,;=/.-_*", max_size=20).map(str.strip)


@pytest.mark.parametrize("mod", IMPLS)
@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["GET", "POST", "DELETE"]), token.map(lambda t: "/" + t), token,
       st.lists(st.tuples(token, field_value), max_size=6), st.sampled_from(["", "6.6.6.6", "6.6.6.6, 7.7.7.7"]),
       st.sampled_from(["127.0.0.1:5000", "[::1]:443", "10.0.0.1"]), st.sampled_from(["", "api.example.com"]),
       st.sampled_from(["\r\n", "content-length: 3\r\n\r\n", "transfer-encoding: chunked\r\n\r\n"]))
def test_upstream_request_head_parses_as_the_request_meant(mod, method, target, host, fields, prior, peer,
                                                           forwarded_host, framing):
    """Read back by an independent HTTP/1.1 parser (httptools, llhttp): one request, with the request
    line, Host first, the client's fields in order, the forwarding fields and the framing."""
    import httptools

    forward = "".join(f"{n}: {v}\r\n" for n, v in fields).encode()
    head = mod.upstream_request_head(method, target, host, forward, peer, prior, "https", forwarded_host, framing)
    seen: dict = {"headers": []}

    class Recorder:
        def on_url(self, url: bytes) -> None:
            seen["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            seen["headers"].append((name.decode(), value.decode()))

        def on_headers_complete(self) -> None:
            seen["complete"] = True

    parser = httptools.HttpRequestParser(Recorder())
    parser.feed_data(head)
    assert seen.get("complete") and parser.get_method().decode() == method and seen["url"] == target.encode()
    client = peer.rsplit(":", 1)[0].strip("[]") if peer.count(":") != 2 else peer
    expected = [("host", host), *fields, ("x-forwarded-for", f"{prior}, {client}" if prior else client),
                ("x-forwarded-proto", "https")]
    if forwarded_host:
        expected.append(("x-forwarded-host", forwarded_host))
    if framing != "\r\n":
        expected.append(tuple(framing.strip().split(": ")))
    assert seen["headers"] == expected
