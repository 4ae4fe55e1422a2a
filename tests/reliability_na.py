"""Reviewed exceptions for docs/RELIABILITY-STATUS.md (tests/support/reliability_report.py).

NOT_APPLICABLE: catalogue rows that do not apply to fastgw, each with the reason a reviewer accepted.
A row listed here but also named by a test is reported from the test.
PENDING: rows whose tests land with another issue; they stay `fail: no test` until then, the note
only says where the test will come from. When the tests land (with their `reliability` marks),
delete the entry.
"""
from __future__ import annotations

NOT_APPLICABLE: dict[str, str] = {}

PENDING: dict[str, str] = {
    **{row: "#16 WebSocket APIs (branch ws-api, tests/test_websocket*.py)"
       for row in ("WS-01", "WS-02", "WS-03", "WS-04", "WS-05", "WS-07", "WS-08", "UP-02")},
}
