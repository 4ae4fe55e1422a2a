#!/usr/bin/env python3
"""The mutation sample of docs/TESTING.md: for each README capability row, break one behaviour on
purpose and show that at least one test fails. Each mutation is applied to the working tree, its
tests run, and the file is put back (from a copy kept in memory) before the next one, whatever
happens. Run from a clean checkout: `.venv/bin/python scripts/mutation-sample.py [ROW-NUMBER...]`.
Nothing here is a test of the suite; it is how the suite's tests were shown able to fail.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")

# (README row, file, text to replace (exactly once), replacement, pytest arguments)
MUTATIONS: list[tuple[str, str, str, str, list[str]]] = [
    ("config: validation with file locations", "fastgw/config/loader.py",
     'where = f"{self.path} (line {self.line})" if self.line else self.path', "where = self.path",
     ["tests/test_server.py::test_serve_refuses_an_invalid_config_with_locations"]),
    ("REST/HTTP APIs, stages, stage variables (a canary's overrides)", "fastgw/config/stagevars.py",
     "    values = stage.variables if variables is None else variables", "    values = stage.variables",
     ["tests/test_canary.py::test_canary_split_is_ten_percent_across_both_workers"]),
    ("router: 404/405 with Allow", "fastgw/pipeline.py", '(("allow", ", ".join(value)),)', '(("allow", ""),)',
     ["tests/test_proxy.py::test_wrong_method_is_405_with_allow"]),
    ("HTTP_PROXY: keep-alive pool", "fastgw/upstream.py",
     "if not conn.reusable or conn.closed or not parser.keep_alive",
     "if True or not conn.reusable or conn.closed or not parser.keep_alive",
     ["tests/test_proxy.py::test_upstream_connections_are_kept_alive_and_reused"]),
    ("typed gateway responses (AWS's 21 types)", "fastgw/errors.py",
     '"QUOTA_EXCEEDED": (429, "LimitExceededException"', '"QUOTA_EXCEEDED": (429, "TooManyRequestsException"',
     ["tests/test_gateway_response_types.py"]),
    ("request limits, path normalisation, encoded-slash policy", "fastgw/pipeline.py",
     '    if "%2F" not in path or rule == "PASS":', '    if "%2F" not in path or rule != "DECODE":',
     ["tests/test_proxy.py", "-k", "encoded_slash_rejected"]),
    ("admin API; SIGHUP reload", "fastgw/server.py",
     '        runtime.reload_config("SIGHUP")', "        pass",
     ["tests/test_server.py::test_sighup_reloads_a_valid_config_and_keeps_serving_on_an_invalid_one"]),
    ("Prometheus metrics across workers", "fastgw/metrics.py",
     "                REQUESTS.labels(*labels, str(status)).inc(n)",
     "                REQUESTS.labels(*labels, str(status)).inc(n + (n > 3))",
     ["tests/test_proxy.py::test_metrics_count_every_request_across_two_workers"]),
    ("API keys, usage plans, throttling, quotas", "fastgw/policies/usage/stage.py",
     "            chain = usage.chains[0]\n            index, retry_ns = self.slots.admit(_monotonic_ns(), chain)\n",
     "            chain = usage.chains[0]\n            index, retry_ns = -1, 0\n",
     ["tests/test_usage.py::test_levels_apply_in_aws_order_and_rejected_requests_consume_nothing"]),
    ("response cache", "fastgw/policies/cache/stage.py",
     "        sc.lru.put(fill.key, (hit, fill.now), size, fill.ttl, fill.now)",
     "        sc.lru.put(fill.key, (hit, fill.now), size, fill.ttl * 100, fill.now)",
     ["tests/test_cache.py::test_repeated_gets_miss_then_hit_until_the_ttl_and_metrics_agree_with_the_upstream"]),
    ("AWS API definitions: OpenAPI import", "fastgw/openapi/reader.py",
     "                routes.append(route)\n            for key in item:",
     "                if routes:\n                    routes.append(route)\n            for key in item:",
     ["tests/test_openapi.py", "-x"]),
    ("FUNCTION integrations, proxy events 2.0", "fastgw/events.py", '        "rawPath": call.path,',
     '        "rawPath": call.path.rstrip("/") + "/",', ["tests/test_functions.py", "-x"]),
    ("canaries", "fastgw/pipeline.py", "random() * 100.0 < stage.canary_percent",
     "random() * 50.0 < stage.canary_percent",
     ["tests/test_canary.py::test_canary_split_is_ten_percent_across_both_workers"]),
    ("request validation (REST)", "fastgw/policies/validation.py",
     'raise GatewayError("BAD_REQUEST_PARAMETERS", f"Missing required request parameters: [{\', \'.join(missing)}]")',
     "pass", ["tests/test_validation.py", "-x"]),
    ("mapping templates (VTL)", "fastgw/vtl/render.py", '_SCOPE_PROPS = {"hasNext": 1,',
     '_SCOPE_PROPS = {"hasNext": 5,', ["tests/test_vtl.py", "-x", "-k", "py"]),
    ("HTTP API parameter mapping", "fastgw/integrations/parammap.py",
     '        if op.action == "overwrite":\n            lines = [(k, v) for k, v in lines if k.lower() != op.name]\n',
     '        if op.action == "overwrite":\n            pass\n', ["tests/test_param_mapping.py", "-x"]),
    ("REST requestParameters, awsCompat headers", "fastgw/integrations/headers.py",
     'REMAPPED_PREFIX = "x-amzn-Remapped-"', 'REMAPPED_PREFIX = "x-amzn-remapped-"',
     ["tests/test_headers.py", "-x"]),
    ("authorizers (JWT)", "fastgw/policies/authorizers/jwt.py",
     "                    raise Refused(\"aud is not one of the audiences\")", "                    pass",
     ["tests/test_authorizers_jwt.py", "-x"]),
    ("CORS", "fastgw/policies/cors.py",
     "    def allow_origin(self, origin: str) -> str:\n        return \"*\" if",
     "    def allow_origin(self, origin: str) -> str:\n        return \"*\" if True or",
     ["tests/test_openapi_cors.py", "-x"]),
    ("benchmark harness (--strict)", "benchmarks/run.py",
     'ROUTES = (("GET /", "/"),', 'ROUTES = (("GET /gone", "/"),',
     ["BENCH"]),
    ("upstream limits: a saturated upstream answers 503 at once", "fastgw/upstream.py",
     "        self.max_requests = settings.maxRequests", "        self.max_requests = 1 << 30",
     ["tests/test_upstream_limits.py", "-k", "server-upstream"]),
    ("upstream names: a moved host name is followed, old connections drained", "fastgw/upstream.py",
     "        if old:\n            log.info(", "        if False:\n            log.info(",
     ["tests/test_upstream_limits.py", "-k", "f30"]),
    ("overload: shedding load per worker", "fastgw/pipeline.py",
     "if self.metrics.inflight > self.overload.limit:", "if False:",
     ["tests/test_overload.py", "-k", "in_flight"]),
]


def run_one(index: int) -> tuple[str, str, str]:
    row, name, old, new, args = MUTATIONS[index]
    source = (ROOT / name).read_text()
    if source.count(old) != 1:
        return row, f"the text to replace is found {source.count(old)} times in {name}", ""
    new_source = source.replace(old, new)
    path = ROOT / name
    try:
        path.write_text(new_source)
        if args == ["BENCH"]:
            command = [PY, "-m", "benchmarks", "--quick", "--strict", "--no-install", "--no-chart",
                       "--only", "nginx,fastgw-plain"]
            test = "python -m benchmarks --quick --strict --only nginx,fastgw-plain"
        else:
            command = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
            test = " ".join(args)
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        took = time.monotonic() - started
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        if result.returncode == 0:
            outcome = "still PASSES: the tests cannot see this break"
        elif result.returncode == 1:  # pytest: some test failed; the harness: --strict found a problem
            outcome = f"FAILS as it should ({', '.join(f.split()[1].split('::')[-1] for f in failed[:2]) or 'exit 1'})"
        else:  # no test collected, a usage error: nothing was shown
            outcome = f"could NOT RUN (exit {result.returncode}): {result.stdout.strip()[-200:]}"
        return row, f"{outcome}, {took:.0f}s", test
    finally:
        path.write_text(source)


def main() -> int:
    picked = [int(a) for a in sys.argv[1:]] or range(len(MUTATIONS))
    survived = 0
    for index in picked:
        row, outcome, test = run_one(index)
        survived += "PASSES" in outcome or "NOT RUN" in outcome
        print(f"{index:2d} {row}: {outcome}  [{test}]", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
