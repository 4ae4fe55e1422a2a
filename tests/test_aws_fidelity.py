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


# -- a stage variable missing at run time --------------------------------------------------------------
MISSING_VARIABLE = """
functions:
  echo: handlers.lambdas:echo
apis:
  - name: vars
    type: REST
    awsCompat: {compat}
    stages:
      prod: {{variables: {{fname: echo}}}}
      beta: {{}}
    routes:
      - route: GET /fn
        integration: {{type: FUNCTION, uri: "${{stageVariables.fname}}"}}
      - route: GET /http/{{id}}
        integration: {{type: HTTP_PROXY, uri: "http://${{stageVariables.backend}}/items/{{id}}"}}
"""


def test_a_stage_variable_missing_at_run_time_answers_500_as_aws(start_gateway):
    """AWS deploys a stage whose integration URI names a stage variable the stage does not define,
    and answers each call 500 ("Execution failed due to configuration error"). Under awsCompat
    fastgw serves the config and answers those routes 500; the stage that defines the variable works."""
    gateway = start_gateway(MISSING_VARIABLE.format(compat="true"), env={"PYTHONPATH": str(TESTS)})
    for path in ("/beta/fn", "/beta/http/1", "/prod/http/1"):
        result = send_raw(gateway.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                          wait_close=5.0)
        assert result.statuses == [500], (path, result.data[:300])
        response = result.responses[0]
        assert json.loads(response.body) == {"message": "Internal server error"}
        assert response.header("x-amzn-errortype") == "ApiConfigurationException"
    assert event_for(gateway, "/prod/fn")["stageVariables"] == {"fname": "echo"}
    assert "has no variable 'backend'" in gateway.stderr() and "answering 500 as AWS does" in gateway.stderr()


def test_a_missing_stage_variable_stays_a_config_error_without_aws_compat(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "gw.yaml"
    path.write_text(MISSING_VARIABLE.format(compat="false"))
    run = subprocess.run([sys.executable, "-m", "fastgw", "validate", str(path)], capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(TESTS)} | dict(__import__("os").environ))
    assert run.returncode != 0
    assert "stage 'beta' has no variable 'fname'" in run.stderr + run.stdout


# -- VTL: $input.path results and null/empty comparisons ---------------------------------------------
VTL = json.loads((DATA / "aws_vtl_input_path.json").read_text())


@pytest.mark.parametrize("case", VTL["cases"], ids=[c["name"] for c in VTL["cases"]])
def test_input_path_and_null_comparisons_as_aws_renders_them(case):
    from fastgw.vtl import UTIL, Input, compile_template

    body = json.dumps({"args": {}, "json": case["echoed_json"], "url": "https://echo.example/post"})
    template = compile_template(VTL["templates"][case["template"]])
    out = template.render({"input": Input(body, {}, {}, {}), "context": {}, "stageVariables": {}, "util": UTIL})
    assert out == case["expected"]
