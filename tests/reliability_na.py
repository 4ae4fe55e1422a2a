"""Reviewed exceptions for docs/RELIABILITY-STATUS.md (tests/support/reliability_report.py).

NOT_APPLICABLE: catalogue rows that do not apply to fastgw, each with the reason a reviewer accepted.
A row listed here but also named by a test is reported from the test.
PENDING: rows whose tests land with another issue; they stay `fail: no test` until then, the note
only says where the test will come from. When the tests land (with their `reliability` marks),
delete the entry.
"""
from __future__ import annotations

NOT_APPLICABLE: dict[str, str] = {}

PENDING: dict[str, str] = {}

# Rows fastgw fails as the catalogue words them, though a test pins what it does instead: reported
# `fail` with the reason, whatever that test's outcome (it proves the behaviour, not the row).
_GRANIAN = "granian 2.8.7 (tungstenite) terminates the client's WebSocket"
KNOWN_FAILING: dict[str, str] = {
    "UP-02": f"{_GRANIAN} and answers Sec-WebSocket-Version: 777 with 400, not 426; an upstream's non-101 is "
             "never tunnelled (tests/test_ws_passthrough.py::test_an_upstream_refusal_is_answered_over_http)",
}
