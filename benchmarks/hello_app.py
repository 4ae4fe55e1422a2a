"""The bare granian RSGI app: answers from memory, no upstream, no gateway logic.

It is the ceiling of anything served by granian on one core. It also defines the bodies the upstream
serves, so the ceiling answers the same bytes: 13 B text at `/`, 1 KiB JSON at `/json`, 64 KiB at `/big`.
Run as `granian --interface rsgi --working-dir benchmarks hello_app:app`. Standard library only.
"""

from __future__ import annotations

import json
from typing import Any

BODY_13 = b"Hello, World!"


def json_1k() -> bytes:
    """A realistic JSON document of exactly 1024 bytes."""
    items: list[dict[str, Any]] = []
    while True:
        item = {"id": len(items), "name": f"item-{len(items):04d}", "price": 1000 + len(items), "tags": ["a", "b"]}
        if len(json.dumps({"items": [*items, item], "pad": ""}, separators=(",", ":"))) > 1024:
            break
        items.append(item)
    base = len(json.dumps({"items": items, "pad": ""}, separators=(",", ":")))
    text = json.dumps({"items": items, "pad": "x" * (1024 - base)}, separators=(",", ":"))
    assert len(text) == 1024
    return text.encode()


BODY_1K = json_1k()
BODY_64K = b"0123456789abcdef" * 4096

_ROUTES = {
    "/json": (BODY_1K, [("content-type", "application/json")]),
    "/big": (BODY_64K, [("content-type", "application/octet-stream")]),
}
_DEFAULT = (BODY_13, [("content-type", "text/plain")])


async def app(scope: Any, proto: Any) -> None:
    if scope.proto != "http":
        return
    body, headers = _ROUTES.get(scope.path, _DEFAULT)
    proto.response_bytes(200, headers, body)
