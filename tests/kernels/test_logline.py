"""The access-log line kernel (`access_line`) against its pure-Python twin, and the twin against JSON."""

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
