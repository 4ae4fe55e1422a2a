"""The HTTP/1.1 response parser: the Cython kernel against its httptools twin (the oracle)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._py.http1 import ResponseError as PyResponseError
from fastgw._py.http1 import ResponseParser as PyResponseParser

if os.environ.get("FASTGW_NO_EXTENSIONS"):
    IMPLS = [pytest.param((PyResponseParser, PyResponseError), id="py")]
    CoreParser = None
else:
    from fastgw._core import ResponseError as CoreError
    from fastgw._core import ResponseParser as CoreParser

    IMPLS = [pytest.param((CoreParser, CoreError), id="c"), pytest.param((PyResponseParser, PyResponseError), id="py")]


def run(parser_cls, data: bytes, splits: list[int], head: bool = False, eof: bool = True):
    """Feed `data` in pieces; return (status, headers, body, keep_alive, complete) or 'error'."""
    parser = parser_cls()
    parser.reset(head)
    body = b""
    cuts = sorted({c for c in splits if 0 < c < len(data)}) + [len(data)]
    start = 0
    try:
        for cut in cuts:
            parser.feed(data[start:cut])
            body += parser.take_body()
            start = cut
        if eof and not parser.complete and parser.status:
            parser.eof()
    except Exception as exc:  # noqa: BLE001 - either implementation's ResponseError
        assert type(exc).__name__ == "ResponseError", exc
        return "error"
    body += parser.take_body()
    return parser.status, parser.headers, body, parser.keep_alive, parser.complete


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


CASES = {
    "length": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
               (200, [("Content-Type", "text/plain")], b"hello", True, True)),
    "chunked+trailers": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=1\r\nabc\r\n"
                         b"0\r\nT: x\r\n\r\n", (200, [], b"helloabc", True, True)),
    "interim 100": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                    (201, [], b"ok", True, True)),
    "http/1.0 close-delimited": (b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nuntil close",
                                 (200, [("A", "b")], b"until close", False, True)),
    "204 + nominated hop-by-hop": (b"HTTP/1.1 204 No Content\r\nConnection: close, X-Secret\r\n"
                                   b"X-Secret: s\r\nY: 1\r\n\r\n",
                                   (204, [("Y", "1")], b"", False, True)),
    "no reason phrase": (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", (200, [], b"", True, True)),
    "keep-alive on 1.0": (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
                          (200, [], b"x", True, True)),
    "ows trimmed": (b"HTTP/1.1 200 OK\r\nX-A:   spaced \t\r\nContent-Length: 0\r\n\r\n",
                    (200, [("X-A", "spaced")], b"", True, True)),
    "extra bytes after": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n",
                          (200, [], b"x", False, True)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_known_responses(impl, name):
    parser_cls, _ = impl
    data, expected = CASES[name]
    for step in (len(data), 1, 3, 7, 20):
        assert run(parser_cls, data, list(range(step, len(data), step))) == expected, step


# name -> (response, the fault kind both builds give it: fastgw_upstream_framing_errors_total{kind})
BAD = {
    "garbage": (b"garbage, not http\r\n\r\n", "status_line"),
    "HTTP/2 status line": (b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", "status_line"),
    "HTTP/1.2 status line": (b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n", "status_line"),
    "ICY status line": (b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n", "status_line"),
    "two-digit status": (b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "status_line"),
    "bare LF in the status line": (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "status_line"),
    "CL and TE": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                  "transfer_encoding"),
    "CL not digits": (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "content_length"),
    "CL signed": (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "content_length"),
    "CL list": (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx", "content_length"),
    "TE chunked twice": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
                         "transfer_encoding"),
    "TE gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer_encoding"),
    "TE gzip, chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                         "transfer_encoding"),
    "TE chunked, gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "transfer_encoding"),
    "TE twice": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", "transfer_encoding"),
    "bad chunk size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", "chunk"),
    "chunk longer than size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                               "chunk"),
    "differing CLs": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "content_length"),
    "duplicate CLs": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "content_length"),
    "obs-fold": (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n", "obs_fold"),
    "obs-fold with a tab": (b"HTTP/1.1 200 OK\r\nX: a\r\n\tfolded\r\nContent-Length: 0\r\n\r\n", "obs_fold"),
    "bare LF": (b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\nContent-Length: 0\r\n\r\n", "bare_cr_lf"),
    "bare CR": (b"HTTP/1.1 200 OK\r\nX: a\rY: b\r\nContent-Length: 0\r\n\r\n", "bare_cr_lf"),
    "NUL in a value": (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n", "header_syntax"),
    "101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "switching_protocols"),
    "101 after a 100": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
                        "switching_protocols"),
    "space before colon": (b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "header_syntax"),
    "truncated body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "truncated"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_invalid_responses_are_refused(impl, name):
    parser_cls, _ = impl
    assert run(parser_cls, BAD[name][0], []) == "error"


@pytest.mark.parametrize("name", list(BAD))
def test_each_fault_has_the_same_kind_in_both_builds(impl, name):
    parser_cls, _ = impl
    data, kind = BAD[name]
    parser = parser_cls()
    parser.reset(False)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - either build's ResponseError
        parser.feed(data)
        parser.eof()
    assert type(raised.value).__name__ == "ResponseError"
    assert raised.value.kind == kind, raised.value


# Responses that are whole but leave the connection's next message boundary unknown: relayed, with
# keep_alive False and `fault` naming why (the connection closes; counted as a framing fault).
NOT_REUSABLE = {
    "bytes after the body": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxGET /smuggled HTTP/1.1\r\n\r\n",
                             False, (200, b"x"), "after_response"),
    "a second response": (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n\r\n",
                          False, (200, b"x"), "after_response"),
    "bytes after a chunked body": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nzz",
                                   False, (200, b"x"), "after_response"),
    "a body on a 204": (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", False, (204, b""),
                        "body_not_allowed"),
    "204 announcing a body": (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", False, (204, b""),
                              "body_not_allowed"),
    "chunked 204": (b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", False, (204, b""),
                    "body_not_allowed"),
    "chunked 304": (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False,
                    (304, b""), "body_not_allowed"),
    "a body on a 304": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello", False, (304, b""),
                        "after_response"),
    "a body on a HEAD response": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True, (200, b""),
                                  "after_response"),
    "a body on a HEAD response after a 100": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                                              b"Content-Length: 5\r\n\r\nhello", True, (200, b""),
                                              "after_response"),
}


@pytest.mark.parametrize("name", list(NOT_REUSABLE))
@pytest.mark.parametrize("split", [0, 1, 7])
def test_whole_responses_that_rule_out_reuse(impl, name, split):
    parser_cls, _ = impl
    data, head, (status, body), fault = NOT_REUSABLE[name]
    parser = parser_cls()
    parser.reset(head)
    cuts = list(range(split, len(data), split)) if split else []
    got = b""
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        parser.feed(data[start:end])
        got += parser.take_body()
    assert (parser.status, got, parser.complete) == (status, body, True)
    assert parser.keep_alive is False and parser.fault == fault


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",  # the length of the representation
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
])
def test_responses_that_leave_the_connection_reusable(impl, data):
    parser_cls, _ = impl
    parser = parser_cls()
    parser.reset(False)
    assert parser.feed(data) == 2
    assert parser.keep_alive is True and parser.fault is None and parser.complete


def test_head_response_has_no_body(impl):
    parser_cls, _ = impl
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX: y\r\n\r\n"
    assert run(parser_cls, data, [], head=True) == (200, [("X", "y")], b"", True, True)


def test_header_limits(impl):
    parser_cls, _ = impl
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"Content-Length: 0\r\n\r\n"
    assert run(parser_cls, many, []) == "error"
    huge = b"HTTP/1.1 200 OK\r\nX: " + b"v" * (70 * 1024) + b"\r\nContent-Length: 0\r\n\r\n"
    assert run(parser_cls, huge, [100, 5000]) == "error"


# -- differential: random valid responses, random splits, both parsers agree ----------------------
token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=12)
value = st.text(alphabet="".join(chr(c) for c in range(33, 127)) + " \t", max_size=30).map(str.strip)


@st.composite
def responses(draw):
    status = draw(st.sampled_from([200, 201, 202, 203, 204, 206, 301, 302, 304, 400, 404, 418, 500, 502, 503]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    names = draw(st.lists(token, max_size=8))
    headers = [(n, draw(value)) for n in names if n.lower() not in (
        "content-length", "transfer-encoding", "connection")]
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    connection = draw(st.sampled_from([None, "close", "keep-alive"]))
    interim = draw(st.booleans())
    head = [f"{name}: {val}".encode() for name, val in headers]
    if connection:
        head.append(f"Connection: {connection}".encode())
    if status in (204, 304):
        payload = b""
        if framing == "length":
            head.append(b"Content-Length: 0")
    elif framing == "length":
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked" and version == b"HTTP/1.1":
        head.append(b"Transfer-Encoding: chunked")
        pieces = draw(st.lists(st.integers(1, 50), max_size=6))
        payload, rest = b"", body
        for size in pieces:
            if not rest:
                break
            part, rest = rest[:size], rest[size:]
            payload += b"%x\r\n%s\r\n" % (len(part), part)
        if rest:
            payload += b"%x\r\n%s\r\n" % (len(rest), rest)
        payload += b"0\r\n\r\n"
    else:
        payload = body
    prefix = b"HTTP/1.1 100 Continue\r\n\r\n" if interim and version == b"HTTP/1.1" else b""
    data = prefix + version + b" %d X\r\n" % status + b"".join(h + b"\r\n" for h in head) + b"\r\n" + payload
    splits = draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))
    return data, splits


@pytest.mark.skipif(CoreParser is None, reason="FASTGW_NO_EXTENSIONS: no compiled parser to compare")
@settings(max_examples=400, deadline=None)
@given(responses())
def test_compiled_parser_agrees_with_httptools(case):
    data, splits = case
    assert run(CoreParser, data, splits) == run(PyResponseParser, data, splits)


@pytest.mark.parametrize(("head", "content_length"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n", 1024),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", -1),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", -1),
])
def test_content_length_is_known_once_the_head_is_in(impl, head, content_length):
    # The upstream pool reads a response whole when its Content-Length is small (fastgw/upstream.py).
    parser_cls, _ = impl
    parser = parser_cls()
    parser.reset(False)
    assert parser.content_length == -1
    assert parser.feed(head) in (1, 2)
    assert parser.content_length == content_length
    parser.reset(False)
    assert parser.content_length == -1


# Ways to break a valid response's framing or syntax (RFC 9112): each takes the response's bytes and
# returns broken ones. Both parsers must refuse what either refuses, with the same fault kind, and
# agree on everything else (some breaks leave a valid response, e.g. a chunk size in upper case).
def _replace_framing(data: bytes, field: bytes) -> bytes:
    head, sep, rest = data.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith((b"content-length:",
                                                                                  b"transfer-encoding:"))]
    return b"\r\n".join(lines + [field]) + sep + rest


BREAKS = {
    "second CL": lambda d, n: _insert_field(d, b"Content-Length: %d" % (n + 1)),
    "CL and TE": lambda d, n: _insert_field(d, b"Transfer-Encoding: chunked"),
    "CL with sign": lambda d, n: _replace_framing(d, b"Content-Length: -%d" % n),
    "CL hex": lambda d, n: _replace_framing(d, b"Content-Length: 0x%x" % n),
    "CL overflow": lambda d, n: _replace_framing(d, b"Content-Length: 99999999999999999999999"),
    "TE identity": lambda d, n: _replace_framing(d, b"Transfer-Encoding: identity"),
    "TE chunked then other": lambda d, n: _replace_framing(d, b"Transfer-Encoding: chunked, br"),
    "chunk size garbage": lambda d, n: _replace_framing(d, b"Transfer-Encoding: chunked")
    .replace(b"\r\n\r\n", b"\r\n\r\nq\r\n", 1),
    "chunk size overflow": lambda d, n: _replace_framing(d, b"Transfer-Encoding: chunked")
    .replace(b"\r\n\r\n", b"\r\n\r\nffffffffffffffffffff\r\n", 1),
    "chunk without CRLF": lambda d, n: _replace_framing(d, b"Transfer-Encoding: chunked")
    .replace(b"\r\n\r\n", b"\r\n\r\n3\r\nabcd0\r\n\r\n", 1),
    "bare LF": lambda d, n: d.replace(b"\r\n", b"\n", 2)[: d.find(b"\r\n\r\n") + 4] + d[d.find(b"\r\n\r\n") + 4:],
    "obs-fold": lambda d, n: _insert_field(d, b"X-Fold: a\r\n b"),
    "NUL": lambda d, n: _insert_field(d, b"X-Nul: a\x00b"),
    "space before colon": lambda d, n: _insert_field(d, b"X-Sp : a"),
    "no colon": lambda d, n: _insert_field(d, b"X-NoColon"),
    "status letters": lambda d, n: d[:9] + b"2x0" + d[12:],
    "status 4 digits": lambda d, n: d[:9] + b"2000" + d[12:],
    "version lower": lambda d, n: b"http" + d[4:],
    "truncated": lambda d, n: d[: max(0, len(d) - 1 - n // 2)],
}


def _insert_field(data: bytes, field: bytes) -> bytes:
    head, sep, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n" + field + sep + rest


def run_kind(parser_cls, data: bytes, splits: list[int]):
    """As run(), but an error is ("error", its kind)."""
    parser = parser_cls()
    parser.reset(False)
    body = b""
    cuts = sorted({c for c in splits if 0 < c < len(data)}) + [len(data)]
    start = 0
    try:
        for cut in cuts:
            parser.feed(data[start:cut])
            body += parser.take_body()
            start = cut
        if not parser.complete:
            parser.eof()  # the upstream closed here: a response that is not whole is refused
    except Exception as exc:  # noqa: BLE001 - either implementation's ResponseError
        assert type(exc).__name__ == "ResponseError", exc
        return ("error", exc.kind)
    body += parser.take_body()
    return parser.status, parser.headers, body, parser.keep_alive, parser.complete


@pytest.mark.skipif(CoreParser is None, reason="FASTGW_NO_EXTENSIONS: no compiled parser to compare")
@settings(max_examples=400, deadline=None)
@given(responses(), st.sampled_from(sorted(BREAKS)), st.integers(0, 40))
def test_compiled_parser_agrees_with_httptools_on_broken_framing(case, name, n):
    data, splits = case
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    prefix = interim if data.startswith(interim) else b""  # the break goes into the final response
    broken = prefix + BREAKS[name](data[len(prefix):], n)
    splits = [s for s in splits if s < len(broken)]
    core, ref = run_kind(CoreParser, broken, splits), run_kind(PyResponseParser, broken, splits)
    assert _agree(core, ref), (name, broken, core, ref)


def _agree(core, ref) -> bool:
    """The same result, or both refused with the same kind. One known difference of kind, not of
    outcome: bytes cut off by the end of the stream before a line or head is whole are "truncated"
    for the kernel (it checks a line once it is whole) while llhttp, which checks each character as
    it comes, may already have named the fault. Either way the response is refused (502)."""
    if core == ref:
        return True
    return core[0] == ref[0] == "error" and "truncated" in (core[1], ref[1])


def test_broken_framing_is_refused_by_both() -> None:
    """The breaks that always make a response invalid are refused, with the same kind, by both."""
    always = {"second CL": "content_length", "CL and TE": "transfer_encoding", "CL with sign": "content_length",
              "TE identity": "transfer_encoding", "obs-fold": "obs_fold", "NUL": "header_syntax",
              "space before colon": "header_syntax", "status letters": "status_line",
              "chunk size garbage": "chunk"}
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    parsers = [p for p in (CoreParser, PyResponseParser) if p is not None]
    for name, kind in always.items():
        for parser in parsers:
            assert run_kind(parser, BREAKS[name](data, 5), []) == ("error", kind), (name, parser)
