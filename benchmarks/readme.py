"""README.md's first configuration example, as a new user copies it, for the `default` scenarios
(`python -m benchmarks --only fastgw-default`, `python -m benchmarks.inproc default`).

Only what ties it to a machine changes: the upstream (`stageVariables.backend`), the ports and the
worker count; every other line (access log, interface, CPU policy, encodedSlashes...) stays as
written. A README edit that removes one of those lines fails here loudly, not silently.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
# The example reads its admin token from the environment.
ENV = {"ADMIN_TOKEN": "bench-admin-token"}
REQUEST_PATH = "/prod/items/42"  # its `GET /items/{id}` route: the upstream gets /items/42


def first_example() -> str:
    text = README.read_text()
    start = text.index("## Configuration")
    found = re.search(r"```yaml\n(.*?)```", text[start:], re.S)
    if found is None:
        raise SystemExit("README.md has no ```yaml example under ## Configuration")
    return found.group(1)


def default_config(upstream: str, port: int = 8080, admin_port: int = 9901, workers: int = 1) -> str:
    """The example with `upstream` (host:port) as its backend."""
    text = first_example()
    for old, new in (('backend: "127.0.0.1:9001"', f'backend: "{upstream}"'),
                     ("port: 8080", f"port: {port}"),
                     ("adminPort: 9901", f"adminPort: {admin_port}"),
                     ("workers: 2 ", f"workers: {workers} ")):
        if old not in text:
            raise SystemExit(f"README.md's first example no longer has {old!r}: update benchmarks/readme.py")
        text = text.replace(old, new, 1)
    return text
