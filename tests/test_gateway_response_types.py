"""fastgw's gateway response types against AWS's list (../shared/reference/aws.md c.9, read here,
never copied): every AWS type exists with AWS's default status and x-amzn-ErrorType, and each can be
overridden in `gatewayResponses`."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import SHARED

from fastgw.errors import RESPONSE_TYPES

# Where fastgw answers otherwise on purpose (README "Errors"): an upstream that refuses, resets or
# answers garbage is a 502 Bad Gateway, as nginx and HAProxy answer, not AWS's 504; its timeout
# (INTEGRATION_TIMEOUT) stays 504.
DELIBERATE = {"INTEGRATION_FAILURE": 502}


def aws_types() -> dict[str, tuple[int | None, str | None]]:
    text = (SHARED / "reference" / "aws.md").read_text()
    section = text[text.index("### c.9 Gateway response types"):text.index("### c.10")]
    rows = re.findall(r"^\| `([A-Z_0-9]+)` \| (\w+) \| ([^|]+?) \|", section, re.MULTILINE)
    return {name: (int(status) if status.isdigit() else None, None if kind.strip() in ("–", "-") else kind.strip())
            for name, status, kind in rows}


def test_every_aws_type_with_its_status_and_error_type() -> None:
    aws = aws_types()
    assert len(aws) == 21, sorted(aws)  # the README's "AWS's 21 types"
    for name, (status, kind) in aws.items():
        assert name in RESPONSE_TYPES, f"{name} is an AWS gateway response type fastgw does not have"
        ours_status, ours_kind, _ = RESPONSE_TYPES[name]
        if status is not None:  # DEFAULT_4XX / DEFAULT_5XX have none in AWS: fastgw's fallbacks are 400 / 500
            assert ours_status == DELIBERATE.get(name, status), name
        if kind is not None:
            assert ours_kind == kind, name


def test_every_aws_type_can_be_overridden_and_an_unknown_one_is_refused(tmp_path) -> None:
    overrides = "\n".join(f"      {name}: {{statusCode: 418, headers: {{x-type: {name}}}}}" for name in aws_types())
    path = tmp_path / "gw.yaml"
    base = """apis:
  - name: a
    type: REST
    stages: {prod: {}}
    routes:
      - {route: GET /x, integration: {type: HTTP_PROXY, uri: "http://127.0.0.1:9/x"}}
    gatewayResponses:
"""
    path.write_text(base + overrides + "\n")
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    path.write_text(base + "      NOT_A_TYPE: {statusCode: 418}\n")
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True)
    assert run.returncode == 2 and "gatewayResponses" in run.stderr and "NOT_A_TYPE" in run.stderr, run.stderr
