"""The access-log line kernels (`access_line`, `LineBuffer`) against their pure-Python twins, and the twin against
JSON."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw._py import logline as py

IMPLS = [pytest.param(py, id="py")]
if not os.environ.get("FASTGW_NO_EXTENSIONS"):
    from fastgw import _core

    IMPLS.insert(0, pytest.param(_core, id="c"))

FIXED = b'"resourcePath":"/items/{id}","routeKey":"GET /items/{id}","apiName":"shop","stage":"prod",' \
        b'"isCanaryRequest":false'


@pytest.mark.parametrize("mod", IMPLS)
def test_a_line(mod):
    line = mod.access_line("id-1", "127.0.0.1", "07/Dec/2026:00:00:01 +0000", 1796601601.2345, "GET",
                           "/prod/items/42", FIXED, 200, "HTTP/1.1", 13, 0.0021236, -1.0, False, None)
    assert line == (b'{"requestId":"id-1","ip":"127.0.0.1","requestTime":"07/Dec/2026:00:00:01 +0000",'
                    b'"requestTimeEpoch":1796601601234,"httpMethod":"GET","path":"/prod/items/42",' + FIXED
                    + b',"status":200,"protocol":"HTTP/1.1","responseLength":13,"responseLatency":2.124,'
                    b'"integrationLatency":null}\n')


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize(("with_principal", "principal", "tail"), [
    (True, None, b',"authorizerPrincipalId":null}\n'),
    (True, 'u"1\n', b',"authorizerPrincipalId":"u\\"1\\n"}\n'),
    (False, "ignored", b'}\n'),
])
def test_the_principal(mod, with_principal, principal, tail):
    line = mod.access_line("i", "", "t", 0.0, "GET", "/", FIXED, 403, "HTTP/2", 0, 1.5, 0.0, with_principal, principal)
    assert line.endswith(b'"responseLatency":1500.000,"integrationLatency":0.000' + tail)


@pytest.mark.skipif(len(IMPLS) < 2, reason="FASTGW_NO_EXTENSIONS: no compiled kernel to compare")
@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=5, max_size=5), st.floats(0, 4e9), st.integers(0, 999),
       st.integers(0, 1 << 40), st.floats(0, 1e5), st.floats(-1, 1e5), st.booleans(), st.none() | st.text(max_size=20))
def test_compiled_access_line_agrees_with_the_twin(texts, now, status, length, elapsed, integration, with_principal,
                                                   principal):
    request_id, client, method, path, protocol = texts
    args = (request_id, client, "07/Dec/2026:00:00:01 +0000", now, method, path, FIXED, status, protocol, length,
            elapsed, integration, with_principal, principal)
    line = _core.access_line(*args)
    assert line == py.access_line(*args)
    record = json.loads(line)  # valid JSON, whatever the strings held
    assert (record["requestId"], record["ip"], record["httpMethod"], record["path"], record["protocol"]) == (
        request_id, client, method, path, protocol)
    assert abs(record["responseLatency"] - elapsed * 1000) <= 0.0005 + elapsed * 1e-9


class _Down:
    def __init__(self, client: str, method: str, path: str, protocol: str, auth=None):
        self.client, self.method, self.path, self.protocol, self.auth = client, method, path, protocol, auth


class _Format:
    def __init__(self, fixed: bytes, principal: bool):
        self.fixed, self.principal = fixed, principal


class _Auth:
    def __init__(self, principal_id):
        self.principal_id = principal_id


@pytest.mark.parametrize("mod", IMPLS)
def test_the_buffer_holds_whole_lines_until_taken(mod):
    buffer = mod.LineBuffer()
    down = _Down("127.0.0.1", "GET", "/prod/items/42", "HTTP/1.1")
    assert not buffer.line("id-1", down, _Format(FIXED, False), 200, 13, 0.0021236, -1.0, 1796601601.2345)
    assert not buffer.raw(b'{"custom":1}\n')
    lines, size = buffer.lines, buffer.size
    data = buffer.take()
    assert (lines, len(data)) == (2, size)
    assert data.splitlines()[0] + b"\n" == py.access_line(
        "id-1", "127.0.0.1", "07/Dec/2026:00:00:01 +0000", 1796601601.2345, "GET", "/prod/items/42", FIXED, 200,
        "HTTP/1.1", 13, 0.0021236, -1.0, False, None)
    assert data.endswith(b'\n{"custom":1}\n')
    assert (buffer.lines, buffer.size, buffer.take()) == (0, 0, b"")


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize("with_principal, principal", [(False, None), (True, None), (True, "user-1")])
def test_line_of_writes_what_line_writes(mod, with_principal, principal):
    """The plain lane's call (the request's fields given) and the pipeline's (read from its Downstream)."""
    down = _Down("::1", "POST", "/prod/a%2Fb", "HTTP/2", _Auth(principal))
    by_object, by_fields = mod.LineBuffer(), mod.LineBuffer()
    by_object.line("id-9", down, _Format(FIXED, with_principal), 502, 0, 0.25, 0.125, 1796601601.5)
    by_fields.line_of("id-9", "::1", "POST", "/prod/a%2Fb", "HTTP/2", FIXED, 502, 0, 0.25, 0.125, with_principal,
                      principal, 1796601601.5)
    assert by_object.take() == by_fields.take() != b""


@pytest.mark.skipif(len(IMPLS) < 2, reason="FASTGW_NO_EXTENSIONS: no compiled kernel to compare")
@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=5, max_size=5), st.floats(0, 4.1e9), st.integers(0, 999),
       st.floats(-1, 1e5), st.booleans(), st.none() | st.integers() | st.text(max_size=20), st.booleans())
def test_compiled_buffer_agrees_with_the_twin(texts, now, status, integration, with_principal, principal, refused):
    """The same lines from both, the request time included (the kernel formats it in C, once a second)."""
    request_id, client, method, path, protocol = texts
    down = _Down(client, method, path, protocol, None if refused else _Auth(principal))
    lines = []
    for mod in (_core, py):
        buffer = mod.LineBuffer(1000)
        full = [buffer.line(request_id, down, _Format(FIXED, with_principal), status, 7, 0.5, integration, now + later)
                for later in (0.0, 0.4, 1.0, 86400.5)]  # the same second, then others
        assert full[-1] == (buffer.size >= 1000) and full == sorted(full)  # True once past flush_bytes
        lines.append(buffer.take())
    assert lines[0] == lines[1]
    assert json.loads(lines[0].splitlines()[0])["requestTime"] == py.clf_time(int(now))
