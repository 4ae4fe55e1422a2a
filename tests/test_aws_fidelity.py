"""AWS fidelity under `awsCompat: true`, checked against behaviour recorded on AWS (issue #20).

The expectations come from LocalStack's AWS-validated snapshot files (Apache-2.0; source, commit and
recording date in each tests/data/*.json file): only the few fields compared here were copied.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.gateway import GatewayProcess
from support.rawclient import send_raw

DATA = Path(__file__).resolve().parent / "data"
TESTS = Path(__file__).resolve().parent
ECHO = "arn:aws:lambda:us-east-1:123456789012:function:echo"

PATHS = json.loads((DATA / "aws_lambda_proxy_paths.json").read_text())

REST_LAMBDA = f"""
functions:
  echo: handlers.lambdas:echo
apis:
  - name: fidelity
    type: REST
    awsCompat: true
    stages:
      {PATHS["stage"]}: {{}}
    routes:
      - route: ANY /{{proxy+}}
        integration: {{type: FUNCTION, uri: "{ECHO}"}}
      - route: GET /hardcoded
        integration: {{type: FUNCTION, uri: "{ECHO}"}}
"""


@pytest.fixture(scope="module")
def rest_lambda(tmp_path_factory):
    gateway = GatewayProcess(REST_LAMBDA, tmp_path_factory.mktemp("fidelity"), env={"PYTHONPATH": str(TESTS)})
    gateway.start()
    yield gateway
    gateway.stop()


def event_for(gateway: GatewayProcess, path: str) -> dict:
    """The Lambda proxy event the handler received for a GET of `path`, sent verbatim."""
    result = send_raw(gateway.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                      wait_close=5.0)
    assert result.statuses == [200], (path, result.statuses, result.data[:500])
    return json.loads(result.responses[0].body)["event"]


@pytest.mark.parametrize("case", PATHS["cases"], ids=[c["name"] for c in PATHS["cases"]])
def test_lambda_proxy_paths_as_aws_delivers_them(rest_lambda, case):
    event = event_for(rest_lambda, case["request_path"])
    seen = {"path": event["path"], "resource": event["resource"], "pathParameters": event["pathParameters"],
            "requestContext.path": event["requestContext"]["path"],
            "requestContext.resourcePath": event["requestContext"]["resourcePath"]}
    assert seen == case["expected"]
