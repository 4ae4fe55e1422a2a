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
    "WS-02": f"{_GRANIAN} and answers a bad Sec-WebSocket-Version with 400, not 426 (missing key and a "
             "body: 400 as asked); tests/test_websocket_api.py::test_ws02_bad_handshakes",
    "WS-03": f"{_GRANIAN} and reads a whole message (up to its 64 MiB cap) before fastgw sees it: over the limit "
             "closes 1009 and runs $disconnect, but the message was buffered; test_ws03_message_over_the_limit_"
             "closes_1009",
    "WS-04": f"{_GRANIAN}: an unmasked frame closes the connection, never routed, but with a close frame "
             "without a code (not 1002); test_ws04_ws05_protocol_violations_close_the_connection",
    "WS-05": f"{_GRANIAN}: invalid UTF-8 closes the connection, never routed, but without a code (not 1007); "
             "test_ws04_ws05_protocol_violations_close_the_connection",
    "WS-07": f"{_GRANIAN} and answers pings itself; an app cannot send pings, so no pong-timeout close 1011 "
             "(a ping flood keeps memory flat: test_ws07_ping_flood_without_reading_pongs)",
    "UP-02": f"{_GRANIAN} and answers Sec-WebSocket-Version: 777 with 400, not 426; an upstream's non-101 is "
             "never tunnelled (tests/test_ws_passthrough.py::test_an_upstream_refusal_is_answered_over_http)",
}
