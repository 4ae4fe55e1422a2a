"""Deployments, stages and canaries (reference/aws.md c.12): the random split, stage variable
overrides, $context.isCanaryRequest in the access log and the `canary` metrics label, and live
changes (set / promote / rollback) in every worker, kept in the state directory across restarts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from support.waiting import wait_for, wait_metric

WORKERS = 2


def config(upstream: str, percent: float = 10.0, canary: bool = True) -> str:
    canary_block = (f"        canary: {{deployment: v2, percentTraffic: {percent}, "
                    "stageVariableOverrides: {flavour: canary}}\n") if canary else ""
    return f"""
apis:
  - name: shop
    type: REST
    deployments:
      v1:
        routes:
          - route: GET /items/{{id}}
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v1/${{stageVariables.flavour}}/{{id}}"}}
      v2:
        description: the new release
        routes:
          - route: GET /items/{{id}}
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v2/${{stageVariables.flavour}}/{{id}}"}}
          - route: GET /new
            integration: {{type: HTTP_PROXY, uri: "http://{upstream}/v2/new"}}
    stages:
      prod:
        deployment: v1
        variables: {{flavour: stable}}
{canary_block}"""


def fetch_many(url: str, n: int, connections: int = 32) -> list[tuple[str, str]]:
    """(upstream target, request id) of n GETs spread over many connections (so both workers serve)."""

    async def run() -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        semaphore = asyncio.Semaphore(connections)

        async def one(client: httpx.AsyncClient) -> None:
            async with semaphore:
                response = await client.get(url)
                assert response.status_code == 200, response.text
                out.append((response.json()["target"], response.headers["x-amzn-requestid"]))

        clients = [httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) for _ in range(connections)]
        try:
            await asyncio.gather(*(one(clients[i % connections]) for i in range(n)))
        finally:
            for client in clients:
                await client.aclose()
        return out

    return asyncio.run(run())


def metric(gateway, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gateway.admin}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_canary_split_is_ten_percent_across_both_workers(start_gateway, upstream):
    """Acceptance: over 2,000 requests the canary share is 10 +- 3 %, both workers counted."""
    gateway = start_gateway(config(upstream.address), workers=WORKERS)
    results = fetch_many(f"{gateway.url}/prod/items/1", 2000)
    canary = [target for target, _ in results if target.startswith("/v2/")]
    share = len(canary) / len(results) * 100
    print(f"\ncanary share over {len(results)} requests: {share:.1f} %")
    assert 7.0 <= share <= 13.0
    # Canary requests carry the canary's stage variable overrides; the others the stage's variables.
    assert set(canary) == {"/v2/canary/1"}
    assert {t for t, _ in results if not t.startswith("/v2/")} == {"/v1/stable/1"}
    # Both workers served (request ids carry a per-worker prefix) and both drew canaries.
    workers = {rid.rsplit("-", 1)[0] for _, rid in results}
    assert len(workers) == WORKERS
    by_worker = {w: sum(1 for t, rid in results if rid.startswith(w) and t.startswith("/v2/")) for w in workers}
    assert all(n > 0 for n in by_worker.values()), by_worker
    # The metrics count canary requests apart, summed over the workers.
    wait_metric(gateway.admin, "fastgw_requests_total", len(canary), stage="prod", canary="true")
    wait_metric(gateway.admin, "fastgw_requests_total", len(results) - len(canary), stage="prod", canary="false")

    # ... and so does the access log ($context.isCanaryRequest), once every line is written.
    def log_lines() -> list[dict]:
        return [json.loads(line) for line in gateway.stdout().splitlines() if line.startswith("{")]

    wait_for(lambda: len(log_lines()) >= len(results), what="an access log line per request")
    assert sum(1 for line in log_lines() if line["isCanaryRequest"]) == len(canary)


def _all_go_to(gateway, prefix: str, n: int = 60) -> bool:
    return all(target.startswith(prefix) for target, _ in fetch_many(f"{gateway.url}/prod/items/2", n, 8))


def _canary_cli(gateway, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "fastgw", "canary", *args, "-c", str(gateway.config_path),
                             "--admin-port", str(gateway.admin_port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_promote_moves_all_traffic_without_restart_and_survives_one(start_gateway, upstream):
    gateway = start_gateway(config(upstream.address), workers=WORKERS)
    pid = gateway.proc.pid
    answer = _canary_cli(gateway, "promote", "--api", "shop", "--stage", "prod")
    assert answer["workers"] == WORKERS  # every worker runs the new plan when the command returns
    assert answer["stage"]["deployment"] == "v2" and answer["stage"]["canary"]["percentTraffic"] == 0.0
    # AWS copies the canary's overrides into the stage's variables on promote.
    assert answer["stage"]["variables"] == {"flavour": "canary"}
    targets = {t for t, _ in fetch_many(f"{gateway.url}/prod/items/2", 300)}
    assert targets == {"/v2/canary/2"}
    assert httpx.get(f"{gateway.url}/prod/new").status_code == 200  # a route only v2 has
    assert gateway.proc.pid == pid and gateway.proc.poll() is None
    # A restart keeps it (the change is in the state directory).
    gateway.stop()
    gateway.start()
    assert {t for t, _ in fetch_many(f"{gateway.url}/prod/items/3", 200)} == {"/v2/canary/3"}
    shown = _canary_cli(gateway, "show")["items"]
    assert shown[0]["deployment"] == "v2"
    # Rollback removes the canary; the promoted deployment stays.
    answer = _canary_cli(gateway, "rollback", "--api", "shop", "--stage", "prod")
    assert "canary" not in answer["stage"] and answer["stage"]["deployment"] == "v2"


def test_set_live_through_the_admin_api_and_refused_changes(start_gateway, upstream):
    gateway = start_gateway(config(upstream.address, canary=False), workers=WORKERS)
    assert _all_go_to(gateway, "/v1/")
    response = httpx.post(f"{gateway.admin}/canary/shop/prod/set", json={"deployment": "v2", "percentTraffic": 100},
                          timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["workers"] == WORKERS
    assert _all_go_to(gateway, "/v2/stable/")  # no overrides: the stage's variables
    response = httpx.post(f"{gateway.admin}/canary/shop/prod/set", json={"deployment": "v9"}, timeout=30)
    assert response.status_code == 400
    assert any("no deployment 'v9'" in p for p in response.json()["problems"])
    assert _all_go_to(gateway, "/v2/")  # the refused change changed nothing
    assert httpx.post(f"{gateway.admin}/canary/shop/nope/set", json={}).status_code == 404
    assert httpx.post(f"{gateway.admin}/canary/shop/prod/rollback", timeout=30).status_code == 200
    assert _all_go_to(gateway, "/v1/stable/")
    listing = httpx.get(f"{gateway.admin}/canary").json()["items"]
    # The rollback is stored (it wins over a canary added to the file later): `storedState` says so.
    assert listing == [{"api": "shop", "stage": "prod", "deployment": "v1", "variables": {"flavour": "stable"},
                        "storedState": ["canary"]}]


def test_canary_set_while_stopped_applies_at_the_next_start(tmp_path, start_gateway, upstream):
    path = tmp_path / "offline.yaml"
    path.write_text(config(upstream.address, canary=False))
    result = subprocess.run([sys.executable, "-m", "fastgw", "canary", "set", "-c", str(path), "--api", "shop",
                             "--stage", "prod", "--deployment", "v2", "--percent", "100", "--override", "flavour=x",
                             "--admin-port", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["running"] is False
    gateway = start_gateway(path.read_text(), name="offline")
    assert _all_go_to(gateway, "/v2/x/", 20)


@pytest.mark.parametrize("percent", [0.0, 100.0])
def test_zero_and_full_canary(start_gateway, upstream, percent):
    gateway = start_gateway(config(upstream.address, percent=percent))
    prefix = "/v2/" if percent else "/v1/"
    assert _all_go_to(gateway, prefix, 40)


def test_deployment_config_errors(tmp_path):
    from fastgw.compile import load_plan
    from fastgw.config.loader import ConfigError, parse_text

    text = config("127.0.0.1:9").replace("deployment: v1", "deployment: v7").replace("deployment: v2,",
                                                                                       "deployment: v8,")
    with pytest.raises(ConfigError) as info:
        load_plan(parse_text(text, str(tmp_path / "gw.yaml")))
    message = str(info.value)
    assert "apis[0].stages.prod.deployment" in message and "no deployment 'v7' (known: v1, v2)" in message
    assert "apis[0].stages.prod.canary.deployment" in message
    text = config("127.0.0.1:9").replace("        deployment: v1\n", "").replace("percentTraffic: 10.0",
                                                                              "percentTraffic: 120")
    with pytest.raises(ConfigError) as info:
        load_plan(parse_text(text, str(tmp_path / "gw.yaml")))
    message = str(info.value)
    assert "apis[0].stages.prod.deployment" in message
    assert "is required: the API has no routes of its own (deployments: v1, v2)" in message
    assert "must be between 0.0 and 100.0" in message


def test_routes_of_deployments_keep_their_api_key_requirement(tmp_path):
    from fastgw.compile import load_plan
    from fastgw.config.loader import parse_text

    text = config("127.0.0.1:9").replace("          - route: GET /new\n",
                                         "          - route: GET /new\n            apiKeyRequired: true\n")
    plan = load_plan(parse_text(text, str(tmp_path / "gw.yaml")))
    canary = plan.stages[0].canary
    new = next(r for r in canary.routes if r.key == "GET /new")
    assert new.usage is not None and new.usage.key_required
